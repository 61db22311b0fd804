#include "engine/run_state.h"

#include <limits>
#include <map>

#include <torch/torch.h>

#include "mpq/common/error.h"
#include "mpq/io/pickle.h"
#include "torchio/checkpoint.h"

namespace mpq::engine {

namespace {

// The optimizer state is keyed by the parameter's TensorImpl.
void* param_key(const torch::Tensor& p) { return p.unsafeGetTensorImpl(); }

}  // namespace

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kJoint: return "pretrain";
    case Mode::kFinetune: return "finetune";
    default: return "fp";
  }
}

void save(const std::string& path, const std::string& config_yaml, Model& m, torch::optim::SGD& opt,
          const Position& pos) {
  c10::Dict<std::string, torch::Tensor> state, momentum;
  for (const auto& kv : m.q.net->named_parameters()) state.insert(kv.key(), kv.value().detach().cpu().contiguous());
  for (const auto& kv : m.q.net->named_buffers()) state.insert(kv.key(), kv.value().detach().cpu().contiguous());
  auto& st = opt.state();
  for (const auto& kv : m.q.net->named_parameters()) {
    auto it = st.find(param_key(kv.value()));
    if (it == st.end()) continue;
    const auto& s = static_cast<const torch::optim::SGDParamState&>(*it->second);
    if (s.momentum_buffer().defined()) momentum.insert(kv.key(), s.momentum_buffer().detach().cpu().contiguous());
  }
  c10::List<int64_t> bits;
  for (int b : m.q.candidates) bits.push_back(b);
  c10::List<double> meter({pos.meter.loss_sum, pos.meter.correct1, pos.meter.correct5, pos.meter.count});
  std::vector<std::pair<std::string, c10::IValue>> meta = {
      {"format", std::string("mpq-checkpoint-1")},
      {"arch", m.arch},
      {"mode", std::string(mode_name(m.mode))},
      {"epoch", static_cast<int64_t>(pos.epoch)},
      {"batch", pos.batch},
      {"global_batch", pos.global_batch},
      {"world_size", static_cast<int64_t>(pos.world_size)},
      {"step", pos.step},
      {"best_top1", pos.best_top1},
      {"best_epoch", static_cast<int64_t>(pos.best_epoch)},
      {"meter", meter},
      {"rng", pos.rng},
      {"config", config_yaml},
      {"input_size", m.input_size},
      {"state_dict", state},
      {"optimizer", momentum}};
  if (m.mode == Mode::kJoint) meta.emplace_back("candidate_bits", bits);
  if (m.mode == Mode::kFinetune) {
    // The policy itself, so that the checkpoint alone says what it is (mpq export).
    c10::impl::GenericDict policy(c10::StringType::get(), c10::AnyType::get());
    c10::List<std::string> names(m.q.names);
    c10::List<int64_t> wb, ab;
    for (size_t i = 0; i < m.weight_bits.size(); ++i) {
      wb.push_back(m.weight_bits[i]);
      ab.push_back(m.act_bits[i]);
    }
    policy.insert("layers", names);
    policy.insert("weight_bits", wb);
    policy.insert("act_bits", ab);
    meta.emplace_back("policy", policy);
  }
  torchio::save_checkpoint(path, {}, meta);
}

Position restore(const std::string& path, Model& m, torch::optim::SGD& opt, int epochs, int64_t train_images) {
  const torchio::Checkpoint ck = torchio::read_checkpoint(path);
  const pickle::Value* fmt = ck.root.find("format");
  MPQ_CHECK(fmt && fmt->kind() == pickle::Value::Kind::kStr && fmt->as_str() == "mpq-checkpoint-1", path,
            ": not an mpq training checkpoint (resume.path takes last.pt or best.pt of an mpq run; for weights, use "
            "pre_trained)");
  const pickle::Value* mode = ck.root.find("mode");
  const bool named = mode && mode->kind() == pickle::Value::Kind::kStr;
  MPQ_CHECK(named && mode->as_str() == mode_name(m.mode), path, ": a checkpoint of an mpq ",
            named ? mode->as_str() : "?", " run, but this run is ", mode_name(m.mode));
  torchio::load_state_dict(*m.q.net, ck.state, /*strict=*/true, path);
  // Every position field is checked here: a value out of range would trip
  // an internal check in the loader or train on from a wrong place.
  const auto bad = [&](const char* k, const std::string& what) {
    return InputError(detail::concat(path, ": '", k, "' ", what,
                                     " (a damaged or hand-edited checkpoint; resume from another one, or start anew "
                                     "with resume.path unset)"));
  };
  const auto get_int = [&](const char* k, int64_t lo, int64_t hi) {
    const pickle::Value* v = ck.root.find(k);
    if (!v || v->kind() != pickle::Value::Kind::kInt) throw bad(k, "is missing or not an integer");
    const int64_t x = v->as_int();
    if (x < lo || x > hi) throw bad(k, detail::concat("is ", x, ", outside [", lo, ", ", hi, "]"));
    return x;
  };
  const auto get_real = [&](const pickle::Value* v, const char* k, double lo, double hi) {
    if (v->kind() != pickle::Value::Kind::kFloat && v->kind() != pickle::Value::Kind::kInt)
      throw bad(k, "is not a number");
    const double x = v->as_double();
    if (!(x >= lo && x <= hi)) throw bad(k, detail::concat("is ", x, ", outside [", lo, ", ", hi, "]"));
    return x;
  };
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max(), kMax64 = std::numeric_limits<int64_t>::max();
  Position pos;
  pos.epoch = static_cast<int>(get_int("epoch", 0, kMaxInt));
  MPQ_CHECK(pos.epoch <= epochs, path, ": written at epoch ", pos.epoch, " of its run, but this run has ", epochs,
            " epochs in all (epochs + cooldown_epochs); raise epochs to continue it");
  pos.global_batch = get_int("global_batch", 1, kMaxInt);
  pos.world_size = static_cast<int>(get_int("world_size", 1, kMaxInt));
  // The batch counts global batches of the run that wrote it; at most an epoch of them.
  pos.batch = get_int("batch", 0, (train_images + pos.global_batch - 1) / pos.global_batch);
  pos.step = get_int("step", 0, kMax64);
  pos.best_epoch = static_cast<int>(get_int("best_epoch", -1, pos.epoch - 1));
  if (const pickle::Value* v = ck.root.find("best_top1")) pos.best_top1 = get_real(v, "best_top1", -1, 100);
  if (const pickle::Value* v = ck.root.find("rng")) {
    if (v->kind() != pickle::Value::Kind::kStr) throw bad("rng", "is not a string");
    pos.rng = v->as_str();
  }
  if (const pickle::Value* v = ck.root.find("meter")) {
    if ((v->kind() != pickle::Value::Kind::kList && v->kind() != pickle::Value::Kind::kTuple) || v->items().size() != 4)
      throw bad("meter", "is not a list of 4 numbers");
    const double inf = std::numeric_limits<double>::max();
    pos.meter.count = get_real(&v->items()[3], "meter", 0, inf);
    pos.meter.loss_sum = get_real(&v->items()[0], "meter", 0, inf);
    pos.meter.correct1 = get_real(&v->items()[1], "meter", 0, pos.meter.count);
    pos.meter.correct5 = get_real(&v->items()[2], "meter", pos.meter.correct1, pos.meter.count);
  }
  std::map<std::string, torch::Tensor> momentum;
  if (const pickle::Value* o = ck.root.find("optimizer"); o && o->kind() == pickle::Value::Kind::kDict)
    for (const auto& [k, v] : o->dict_items()) momentum[k.as_str()] = torchio::as_tensor(v, path + ": optimizer." + k.as_str());
  auto& st = opt.state();
  st.clear();
  for (const auto& kv : m.q.net->named_parameters()) {
    auto it = momentum.find(kv.key());
    if (it == momentum.end()) continue;
    MPQ_CHECK(it->second.sizes() == kv.value().sizes() && it->second.scalar_type() == kv.value().scalar_type(), path,
              ": optimizer state of ", kv.key(), " has the wrong shape or type");
    auto s = std::make_unique<torch::optim::SGDParamState>();
    s->momentum_buffer(torch::empty_like(kv.value()).copy_(it->second));  // the parameter's device, dtype, layout
    st[param_key(kv.value())] = std::move(s);
  }
  return pos;
}

}  // namespace mpq::engine
