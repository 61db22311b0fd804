#include "engine/evaluation.h"

#include <algorithm>
#include <cstdio>
#include <optional>

#include <torch/torch.h>

#include "engine/joint.h"
#include "mpq/common/error.h"
#include "mpq/search/geometry.h"

namespace mpq::engine {

Meter validate(Context& ctx, Model& m, Loader& val, double smoothing) {
  torch::NoGradGuard no_grad;
  m.q.net->eval();
  Meter meter;
  val.set_epoch(0);
  const auto pf = prefetch(val, 0, val.num_batches(), ctx.device.is_cuda());
  while (!pf->done()) {
    const data::Batch b = pf->next();
    const torch::Tensor x = m.input(b.images, ctx.device), y = b.labels.to(ctx.device, /*non_blocking=*/true);
    const torch::Tensor out = m.q.net->forward(x);
    meter.add(out, y, label_smoothing_ce(out, y, smoothing));
  }
  report_skipped(val, "validation");
  meter.reduce(ctx);
  m.q.net->train();
  return meter;
}

// METHOD.md §5: reset running statistics, cumulative average, training-mode
// forwards without gradients over about `images` training images (each rank
// its share). With synchronised BatchNorm the statistics are the global
// batch's already; otherwise they are averaged over ranks afterwards.
void recalibrate_bn(Context& ctx, Model& m, Loader& calib, int images) {
  if (images <= 0) return;
  torch::NoGradGuard no_grad;
  auto bns = batchnorms(*m.q.net);
  std::vector<std::optional<double>> momenta;
  for (auto* b : bns) {
    momenta.push_back(b->options.momentum());
    b->reset_running_stats();
    b->options.momentum(std::nullopt);
  }
  m.q.net->train();
  calib.set_epoch(0);
  // This rank's share, in whole batches (all but the last are full): no
  // batch is made that is not used.
  const int64_t share = (images + ctx.env.world_size - 1) / ctx.env.world_size;
  const int64_t batches = std::min(calib.num_batches(), (share + calib.batch_size() - 1) / calib.batch_size());
  const auto pf = prefetch(calib, 0, batches, ctx.device.is_cuda());
  while (!pf->done()) m.q.net->forward(m.input(pf->next().images, ctx.device));
  for (size_t k = 0; k < bns.size(); ++k) bns[k]->options.momentum(momenta[k]);
  if (!models::batchnorm_sync_enabled()) average_bn_stats(ctx, *m.q.net);
}

search::Report size_report(const Model& m, int height, int width) {
  const search::ModelGeometry g = search::zoo_geometry(m.arch, {height, width, m.channels, m.num_classes});
  if (m.mode == Mode::kFinetune) return search::policy_report(g, m.weight_bits, m.act_bits);
  // Full precision: every layer at 32 bits.
  double macs = 0;
  for (const auto& l : g.layers) macs += static_cast<double>(l.original_macs);
  search::Report r;
  r.avg_weight_bits = r.avg_act_bits = 32;
  r.compression_ratio = 1;
  r.fp_size_mb = r.size_mb = 32.0 * static_cast<double>(g.total_params()) / (1024.0 * 1024.0 * 8.0);
  r.gbitops = macs * 32 * 32 / 1e9;
  return r;
}

// ------------------------------------------------------------------ mpq eval

void evaluate(const config::RunOptions& run) {
  const config::EvalOptions& c = run.evaluation;
  Context ctx = make_context(run.process);
  const Mode mode = run.fp_model ? Mode::kFullPrecision : Mode::kFinetune;
  const std::string weights = run.loop.resume_path.empty() ? run.model.pre_trained : run.loop.resume_path;
  MPQ_CHECK(!weights.empty(), run.source, ": eval needs weights: pre_trained (a checkpoint, e.g. best.pt of a finetune run)");
  config::ModelOptions mo = run.model;
  mo.pre_trained = weights;
  Model m = make_net(mo, mode, input_channels(run.data), /*load_pretrained=*/true);
  Data data = make_data(run.data, ctx.env.rank, ctx.env.world_size);
  attach(ctx, m, false);
  const auto t0 = Clock::now();
  const bool quantized = mode == Mode::kFinetune;
  if (quantized) recalibrate_bn(ctx, m, *data.calib, c.bn_calib_images);
  const Meter v = validate(ctx, m, *data.val, c.smoothing);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const search::Report r = size_report(m, data.height, data.width);
  if (!ctx.rank0()) return;
  std::printf("model: %s\nweights: %s\nimages: %ld\nbn_recalibrated: %s\ntop1: %.4f\ntop5: %.4f\nloss: %.6f\n"
              "avg_weight_bits: %.4f\navg_act_bits: %.4f\nsize_mb: %.6f\nfp_size_mb: %.6f\ncompression_ratio: %.4f\n"
              "gbitops: %.6f\nseconds: %.2f\n",
              run.model.arch.c_str(), weights.c_str(), static_cast<long>(v.count), quantized ? "true" : "false", v.top1(),
              v.top5(), v.loss(), r.avg_weight_bits, r.avg_act_bits, r.size_mb, r.fp_size_mb, r.compression_ratio,
              r.gbitops, secs);
  std::fflush(stdout);
}

}  // namespace mpq::engine
