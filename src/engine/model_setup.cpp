#include "engine/model_setup.h"

#include <algorithm>
#include <optional>

#include "models/bn_relu.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/search/policy.h"

namespace mpq::engine {

namespace {

void load_into(torch::nn::Module& m, const torchio::Checkpoint& ck, bool strict, const std::string& path) {
  const torchio::LoadReport r = torchio::load_state_dict(m, ck.state, strict, path);
  if (!r.clean()) mpq::log::warn("{}: loaded with differences: {}", path, r.summary());
}

// The finetune policy: `policy` file or the weight_bits/act_bits lists.
void policy_bits(const config::ModelOptions& c, const std::vector<std::string>& model_layers, std::vector<std::string>& names,
                 std::vector<int>& wb, std::vector<int>& ab) {
  if (!c.policy.empty()) {
    const search::PolicyBits p = search::load_policy(c.policy);
    MPQ_CHECK(p.model.empty() || p.model == c.arch || p.model == "custom", c.policy, ": a policy for model '", p.model,
              "' but arch is '", c.arch, "'");
    names = p.layers;
    wb = p.weight_bits;
    ab = p.act_bits;
    return;
  }
  MPQ_CHECK(!c.weight_bits.empty(), c.source, ": finetuning needs bit-widths: policy (the file `mpq search -o` wrote) or "
            "weight_bits/act_bits lists with one entry per searchable layer (", model_layers.size(), " for ", c.arch, ")");
  names = model_layers;
  wb = c.weight_bits;
  ab = c.act_bits;
}

}  // namespace

bool is_quantized_checkpoint(const torchio::StateDict& s) {
  return std::any_of(s.begin(), s.end(), [](const auto& kv) { return kv.first.find(".quan_") != std::string::npos; });
}

Model make_net(const config::ModelOptions& c, Mode mode, int channels, bool load_pretrained) {
  Model m;
  m.mode = mode;
  m.arch = c.arch;
  m.channels = channels;
  m.num_classes = c.num_classes;
  models::Net net = models::make_model(c.arch, {c.num_classes, channels});
  std::optional<torchio::Checkpoint> ck;
  bool quantized_ck = false;
  if (load_pretrained && !c.pre_trained.empty()) {
    ck = torchio::read_checkpoint(c.pre_trained);
    quantized_ck = is_quantized_checkpoint(ck->state);
    MPQ_CHECK(!quantized_ck || mode == Mode::kFinetune, c.pre_trained,
              ": holds quantizer scales; start ", mode == Mode::kJoint ? "indicator training" : "full-precision training",
              " from a full-precision checkpoint");
    if (!quantized_ck) load_into(*net, *ck, c.pre_trained_strict, c.pre_trained);
  }
  std::vector<std::string> searchable;
  const auto slots = net->slots();
  for (size_t i = 1; i < slots.size(); ++i)
    if (!slots[i].is_linear) searchable.push_back(slots[i].name);
  if (mode == Mode::kJoint) {
    MPQ_CHECK(!c.target_bits.empty(), c.source, ": target_bits must list the candidate bit-widths, e.g. [6, 5, 4, 3, 2]");
    m.q = quant::quantize_for_indicators(net, c.target_bits);
  } else if (mode == Mode::kFinetune) {
    std::vector<std::string> names;
    policy_bits(c, searchable, names, m.weight_bits, m.act_bits);
    m.q = quant::quantize_for_finetune(net, names, m.weight_bits, m.act_bits);
    if (quantized_ck) {
      load_into(*net, *ck, c.pre_trained_strict, c.pre_trained);
      // Weights from a run whose fc collapsed evaluate and export without an error: one class for every input.
      const std::string why = quant::sat_collapse(*net);
      if (!why.empty()) mpq::log::warn("{}: {}: every class gets the same logit", c.pre_trained, why);
    }
    m.loaded_quantized = quantized_ck;
  } else {
    m.q.net = net;
  }
  if (c.dtype == "float64") {
    m.dtype = torch::kDouble;
    m.q.net->to(torch::kDouble);
  }
  if (c.channels_last) m.q.net->to_channels_last();  // before any optimizer state exists
  models::set_bn_relu_fusion(c.fused_bn);             // the process's one network
  return m;
}

std::vector<quant::LsqQuantizerImpl*> quantizers(torch::nn::Module& net) {
  std::vector<quant::LsqQuantizerImpl*> out;
  for (const auto& mod : net.modules(/*include_self=*/false))
    if (auto* q = dynamic_cast<quant::LsqQuantizerImpl*>(mod.get())) out.push_back(q);
  return out;
}

std::vector<models::BatchNormImpl*> batchnorms(torch::nn::Module& net) {
  std::vector<models::BatchNormImpl*> out;
  for (const auto& mod : net.modules(false))
    if (auto* b = dynamic_cast<models::BatchNormImpl*>(mod.get())) out.push_back(b);
  return out;
}

}  // namespace mpq::engine
