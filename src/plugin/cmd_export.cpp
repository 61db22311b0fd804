// mpq export: a finetune config, or a finetune checkpoint with the config
// and policy it records, into the engine's ONNX export.
#include <string>
#include <vector>

#include "engine/trainer.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/config/config.h"
#include "mpq/io/file_util.h"
#include "mpq/io/pickle.h"
#include "plugin/commands.h"
#include "torchio/checkpoint.h"

namespace mpq::plugin {

namespace {

std::vector<int> int_list(const pickle::Value* v, const std::string& what) {
  MPQ_CHECK(v && (v->kind() == pickle::Value::Kind::kList || v->kind() == pickle::Value::Kind::kTuple), what,
            " is missing or not a list");
  std::vector<int> out;
  for (const auto& x : v->items()) {
    MPQ_CHECK(x.kind() == pickle::Value::Kind::kInt && x.as_int() >= 2 && x.as_int() <= 16, what, " holds ", x.repr(),
              ", not a bit-width from 2 to 16");
    out.push_back(static_cast<int>(x.as_int()));
  }
  return out;
}

// The config a finetune checkpoint was written under, with its recorded policy.
config::Config config_of_checkpoint(const std::string& path, const std::vector<std::string>& sets, int& input_side) {
  const torchio::Checkpoint ck = torchio::read_checkpoint(path);
  const pickle::Value* fmt = ck.root.find("format");
  MPQ_CHECK(fmt && fmt->kind() == pickle::Value::Kind::kStr && fmt->as_str() == "mpq-checkpoint-1", path,
            ": not a checkpoint of `mpq finetune` (it records no policy); export takes best.pt or last.pt of a "
            "finetune run, or that run's config");
  const pickle::Value* mode = ck.root.find("mode");
  const std::string m = mode && mode->kind() == pickle::Value::Kind::kStr ? mode->as_str() : "?";
  MPQ_CHECK(m != "fp", path, ": a full-precision checkpoint; export takes one of `mpq finetune` (a searched policy, "
            "finetuned)");
  MPQ_CHECK(m == "finetune", path, ": a checkpoint of mpq ", m,
            " (indicators for every candidate, no policy); search a policy and finetune it, then export that");
  const pickle::Value* text = ck.root.find("config");
  MPQ_CHECK(text && text->kind() == pickle::Value::Kind::kStr, path, ": records no config; export that run's config "
            "instead");
  config::Config c = config::load_config_text(text->as_str(), path + " (its config)", sets);
  if (const pickle::Value* p = ck.root.find("policy")) {
    MPQ_CHECK(p->kind() == pickle::Value::Kind::kDict, path, ": 'policy' is not a dict");
    const pickle::Value* layers = p->find("layers");
    MPQ_CHECK(layers && layers->kind() == pickle::Value::Kind::kList, path, ": policy.layers is missing or not a list");
    c.weight_bits = int_list(p->find("weight_bits"), path + ": policy.weight_bits");
    c.act_bits = int_list(p->find("act_bits"), path + ": policy.act_bits");
    MPQ_CHECK(c.weight_bits.size() == layers->items().size() && c.act_bits.size() == layers->items().size(), path,
              ": policy has ", layers->items().size(), " layers, ", c.weight_bits.size(), " weight_bits and ",
              c.act_bits.size(), " act_bits");
    c.policy.clear();
  } else {
    // Written before checkpoints recorded their policy: the config's lists, or its policy file.
    MPQ_CHECK(!c.weight_bits.empty() || !c.policy.empty(), path, ": records no policy");
  }
  if (const pickle::Value* s = ck.root.find("input_size"); s && s->kind() == pickle::Value::Kind::kInt &&
                                                           s->as_int() > 0 && s->as_int() <= 4096)
    input_side = static_cast<int>(s->as_int());
  c.pre_trained = path;
  c.resume_path.clear();
  return c;
}

}  // namespace

void run_export(const ExportRequest& r) {
  engine::ExportOptions o;
  o.output = r.output;
  o.opset = r.opset;
  o.reference_dir = r.reference_dir;
  o.source = r.source;
  if (r.run) {
    engine::export_onnx(*r.run, o);
    return;
  }
  // A checkpoint: the config it records, parsed here (mpq cannot read checkpoints).
  MPQ_ASSERT(io::looks_like_checkpoint(r.source), "export: a config source comes translated");
  const config::Config c = config_of_checkpoint(r.source, r.sets, o.input_side);
  for (const std::string& n : c.notices) log::warn("{}: {}", c.source, n);
  o.recalibrate = false;  // the checkpoint's BatchNorm as it is
  engine::export_onnx(config::translate(c), o);
}

}  // namespace mpq::plugin
