// mpq export: the config's finetuned network, its BatchNorm as mpq eval
// leaves it, the graph written and read back, the reference set, the report.
#include "engine/trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include <torch/torch.h>

#include "engine/context.h"
#include "engine/evaluation.h"
#include "engine/export.h"
#include "engine/model_setup.h"
#include "engine/sources.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/io/file_util.h"

namespace mpq::engine {

namespace fs = std::filesystem;

namespace {

// The image side of a dataset at its usual size, for an export without data.
int default_side(const std::string& dataset) {
  if (dataset == "cifar10") return 32;
  if (dataset == "imagenet") return 224;
  return 28;
}

}  // namespace

void export_onnx(const config::RunOptions& run, const ExportOptions& o) {
  namespace ox = onnx_export;
  const config::EvalOptions& c = run.evaluation;
  MPQ_CHECK(!run.fp_model, run.source, ": fp_model: true is a full-precision model; export takes a finetuned "
            "mixed-precision one (its config, or best.pt of `mpq finetune`)");
  const std::string weights = run.loop.resume_path.empty() ? run.model.pre_trained : run.loop.resume_path;
  MPQ_CHECK(!weights.empty(), run.source, ": export needs the finetuned weights: pre_trained (best.pt or last.pt of "
            "`mpq finetune`)");
  config::ModelOptions mo = run.model;
  mo.pre_trained = weights;
  mo.dtype = "float32";  // the graph's type; the layout stays the config's, as mpq eval runs it
  Context ctx = make_context(run.process);
  MPQ_CHECK(!ctx.env.distributed(), "export runs in one process; start it without torchrun");
  Model m = make_net(mo, Mode::kFinetune, input_channels(run.data), /*load_pretrained=*/true);
  MPQ_CHECK(m.loaded_quantized, weights, ": holds no quantizer scales (a full-precision checkpoint?); export takes a "
            "finetuned one (best.pt or last.pt of `mpq finetune`)");
  const bool recalibrate = o.recalibrate && c.bn_calib_images > 0;
  const bool need_data = recalibrate || !o.reference_dir.empty();
  std::optional<Data> data;
  int height = o.input_side > 0 ? o.input_side : default_side(run.data.dataset), width = height;
  if (need_data) {
    data = make_data(run.data, 0, 1);
    height = data->height;
    width = data->width;
  }
  attach(ctx, m, false);
  if (recalibrate) recalibrate_bn(ctx, m, *data->calib, c.bn_calib_images);
  m.q.net->eval();
  m.q.net->to(torch::kCPU);
  torch::NoGradGuard no_grad;
  // A probe batch: validation images where they are loaded, else seeded noise.
  torch::Tensor probe;
  if (data) {
    data->val->set_epoch(0);
    probe = m.input(data->val->batch(0).images, torch::kCPU);
  } else {
    probe = torch::randn({4, m.channels, height, width}, torch::TensorOptions().dtype(torch::kFloat));
  }
  const OnnxBuild b = build_onnx_graph(*m.q.net, run.model.arch, o.opset, probe);
  // The replay uses the graph's integers and scales; it must give the
  // fake-quantized network's logits (up to rounding ties).
  const torch::Tensor ref = m.q.net->forward(probe);
  const double diff = (b.replay_logits - ref).abs().max().item<double>();
  const double tol = 1e-3 * std::max(1.0, ref.abs().max().item<double>());
  MPQ_CHECK_T(RuntimeError, diff <= tol, "export: the graph's arithmetic replayed in torch differs from the model by ",
              diff, " (more than ", tol, "); please report this");
  ox::Graph g = b.graph;
  g.metadata.emplace_back("mpq.source", o.source);
  g.metadata.emplace_back("mpq.batchnorm", recalibrate ? "recalibrated on " + std::to_string(c.bn_calib_images) +
                                                             " training images, as mpq eval does"
                                                       : "as the checkpoint holds it");
  ox::write_model(g, o.output);
  const ox::GraphSummary s = ox::summarize_model(o.output);
  const search::Report want = size_report(m, height, width);
  const auto same = [](double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::fabs(b)); };
  if (!same(s.report.gbitops, want.gbitops) || !same(s.report.size_mb, want.size_mb) ||
      s.searchable != m.q.names) {
    std::error_code ec;
    fs::remove(o.output, ec);
    throw RuntimeError(detail::concat("export: the written graph counts ", s.report.gbitops, " GBitOPs and ",
                                      s.report.size_mb, " MB, the policy ", want.gbitops, " and ", want.size_mb,
                                      "; removed ", o.output, "; please report this"));
  }
  if (!o.reference_dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.reference_dir, ec);
    MPQ_CHECK_T(RuntimeError, !ec, o.reference_dir, ": cannot create (", ec.message(), ")");
    std::vector<torch::Tensor> xs, ys, ls;
    data->val->set_epoch(0);
    for (int64_t i = 0; i < data->val->num_batches(); ++i) {
      data::Batch batch = data->val->batch(i);
      const torch::Tensor x = m.input(batch.images, torch::kCPU);
      xs.push_back(x);
      ys.push_back(m.q.net->forward(x));
      ls.push_back(batch.labels.to(torch::kLong));
    }
    write_npy(o.reference_dir + "/inputs.npy", torch::cat(xs));
    write_npy(o.reference_dir + "/logits.npy", torch::cat(ys));
    write_npy(o.reference_dir + "/labels.npy", torch::cat(ls));
  }
  int64_t packed = 0, stored = 0;
  for (const auto& l : s.layers) {
    packed += l.packed_bytes;
    stored += l.stored_bytes;
  }
  std::string out = mpq::log::format(
      "onnx: {}\nsource: {}\narch: {}\nopset: {}\nir_version: {}\ninput: [batch, {}, {}, {}]\nbatchnorm: {}\n"
      "file_bytes: {}\nweight_bytes_stored: {}\nweight_bytes_packed: {}\n",
      o.output, o.source, run.model.arch, s.opset, s.ir_version, m.channels, height, width,
      recalibrate ? "recalibrated" : "as stored", s.file_bytes, stored, packed);
  out += "layers:\n";
  for (const auto& l : s.layers)
    out += mpq::log::format("  - {{name: {}, op: {}, weight_bits: {}, weight_container: {}, act_bits: {}, act_container: {}, "
                       "params: {}}}\n",
                       l.name, l.op, l.weight_bits, ox::type_name(l.weight_container), l.act_bits,
                       l.act_container ? ox::type_name(l.act_container) : "float", l.params);
  out += mpq::log::format(
      "from_graph: {{gbitops: {:.6f}, size_mb: {:.6f}, compression_ratio: {:.4f}, avg_weight_bits: {:.4f}, "
      "avg_act_bits: {:.4f}}}\npolicy: {{gbitops: {:.6f}, size_mb: {:.6f}}}\nmatches_policy: true\n"
      "replay_max_abs_diff: {:.3g}\n",
      s.report.gbitops, s.report.size_mb, s.report.compression_ratio, s.report.avg_weight_bits, s.report.avg_act_bits,
      want.gbitops, want.size_mb, diff);
  if (!o.reference_dir.empty()) out += mpq::log::format("reference: {}\n", o.reference_dir);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

}  // namespace mpq::engine
