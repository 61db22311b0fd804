// mpq importance: a baseline importance that needs no joint training. For
// every searchable layer and candidate bit-width b, the squared error of
// rounding to b bits at the LSQ initial step size (METHOD.md §1):
//   weight:     sum over the weight's elements of (Q_b(W) - W)^2, the step
//               size max(|mean - 3 std|, |mean + 3 std|) / 2^(b-1);
//   activation: the same sum over the layer's input, per image, averaged over
//               the calibration batches; the step size 2 mean|x| / sqrt(2^b - 1)
//               of each batch (what LSQ starts from).
// This is the perturbation term ||Q(W) - W||^2 that HAWQ-V2/V3 weight by the
// Hessian's trace, here unweighted and applied to activations as well. The
// network runs in full precision, so every layer sees its float input.
#include <cmath>
#include <map>

#include <torch/torch.h>

#include "engine/model_setup.h"
#include "engine/sources.h"
#include "quant/lsq.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/io/indicators.h"
#include "plugin/commands.h"

namespace mpq::plugin {

void run_importance(const ImportanceRequest& r) {
  const config::ModelOptions& c = r.run.model;
  MPQ_CHECK(!c.pre_trained.empty(), c.source, ": pre_trained is empty; the importance is measured on trained "
            "full-precision weights (set pre_trained to a checkpoint of `mpq finetune` with fp_model: true)");
  MPQ_CHECK(!c.target_bits.empty(), c.source, ": target_bits must list the candidate bit-widths, e.g. [6, 5, 4, 3, 2]");
  torch::NoGradGuard no_grad;
  engine::Data d = engine::make_data(r.run.data, 0, 1);
  engine::Model m = engine::make_net(c, engine::Mode::kJoint, d.channels, /*load_pretrained=*/true);
  quant::QuantizedNet& q = m.q;
  q.net->eval();
  const std::vector<int>& bits = q.candidates;
  const size_t L = q.convs.size(), K = bits.size();
  std::vector<std::vector<double>> err_w(L, std::vector<double>(K)), err_a(L, std::vector<double>(K));
  for (size_t l = 0; l < L; ++l) {
    quant::QConv2dImpl& conv = *q.convs[l];
    conv.set_bits(32, 32);  // the float network: every layer reads its float input
    // Squared error of `x` rounded by the training's own LSQ op at step size `s`.
    const auto error = [](const torch::Tensor& x, const torch::Tensor& s, const quant::Thresholds& t) {
      return (quant::lsq_quantize(x, s, t, 1.0, /*clamp_scale=*/false) - x).to(torch::kDouble).pow(2).sum().item<double>();
    };
    const torch::Tensor w = conv.weight.detach();
    for (size_t k = 0; k < K; ++k)
      err_w[l][k] = error(w, conv.quan_w_fn->s.detach().narrow(0, static_cast<int64_t>(k), 1),
                          quant::thresholds(bits[k], false, false));
    conv.input_probe = [&err_a, &bits, l, K, error](const torch::Tensor& x) {
      const double mean_abs = x.detach().abs().to(torch::kDouble).mean().item<double>();
      for (size_t k = 0; k < K; ++k) {
        const quant::Thresholds t = quant::thresholds(bits[k], true, false);
        const torch::Tensor s = torch::full({1}, std::max(2 * mean_abs / std::sqrt(t.pos), 1e-12), x.options());
        err_a[l][k] += error(x.detach(), s, t);
      }
    };
  }
  const int64_t batches = std::min<int64_t>(r.batches, d.calib->num_batches());
  MPQ_CHECK(batches > 0, c.source, ": the training split holds no batch to measure activations on");
  int64_t images = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const data::Batch b = d.calib->batch(i);
    images += b.images.size(0);
    (void)q.net->forward(m.input(b.images, torch::kCPU));
    log::info("importance: batch {}/{}", i + 1, batches);
  }
  io::Indicators ind;
  for (size_t l = 0; l < L; ++l) {
    q.convs[l]->input_probe = nullptr;
    std::map<int, double> wt, at;
    for (size_t k = 0; k < K; ++k) {
      // A zero error (a layer whose weights are all equal) would read as a missing indicator.
      wt[bits[k]] = std::max(err_w[l][k], 1e-30);
      at[bits[k]] = std::max(err_a[l][k] / static_cast<double>(images), 1e-30);
    }
    ind.layer_names.push_back(q.names[l]);
    ind.weight.push_back(std::move(wt));
    ind.act.push_back(std::move(at));
  }
  io::save_indicators(r.output, ind, /*module_prefix=*/true);
  log::info("importance: quantization error of {} layers x {} bit-widths on {} images written to {}", L, K, images,
            r.output);
  print_indicator_table(ind, bits);
}

}  // namespace mpq::plugin
