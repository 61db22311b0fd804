#include "mpq/config/options.h"

namespace mpq::config {

RunOptions translate(const Config& c) {
  RunOptions o;
  o.source = c.source;
  o.eval = c.eval;
  o.fp_model = c.fp_model;
  const DataloaderConfig& dl = c.dataloader;
  o.data = {c.source, dl.dataset, dl.path, dl.num_classes, dl.batch_size, dl.workers, dl.strict,
            dl.val_split, dl.fraction, c.seed};
  o.model = {c.source, c.arch, dl.num_classes, c.pre_trained, c.pre_trained_strict, c.target_bits,
             c.weight_bits, c.act_bits, c.policy, c.channels_last, c.dtype, c.fused_bn};
  o.schedule = {c.lr, c.min_lr, c.warmup_lr, c.epochs, c.warmup_epochs, c.cooldown_epochs};
  o.loop = {c.momentum, c.weight_decay, c.smoothing, c.distill, c.freeze_weights, c.sync_bn, c.val_cycle,
            c.print_freq, c.checkpoint_steps, c.dist_bucket_mb, c.resume_path, c.seed};
  o.evaluation = {c.bn_calib_images, c.smoothing};
  o.process = {c.training_device, c.dist_backend, c.dist_timeout, c.threads, c.seed, c.cudnn, c.tf32};
  o.files = {c.output_dir, c.name, c.num_best_scores, to_yaml(c)};
  return o;
}

namespace {

mpq_torch_bits wire(const std::vector<int>& v) { return {static_cast<int>(v.size()), v.data()}; }
std::vector<int> unwire(const mpq_torch_bits& b) {
  return b.values && b.count > 0 ? std::vector<int>(b.values, b.values + b.count) : std::vector<int>{};
}
std::string str(const char* p) { return p ? p : ""; }

}  // namespace

mpq_torch_run_options encode(const RunOptions& o) {
  mpq_torch_run_options w{};
  w.source = o.source.c_str();
  w.eval = o.eval;
  w.fp_model = o.fp_model;
  const DataOptions& d = o.data;
  w.data = {d.source.c_str(), d.dataset.c_str(), d.path.c_str(), d.num_classes, d.batch_size, d.workers, d.strict,
            d.val_split, d.fraction, d.seed};
  const ModelOptions& m = o.model;
  w.model = {m.source.c_str(), m.arch.c_str(), m.num_classes, m.pre_trained.c_str(), m.pre_trained_strict,
             wire(m.target_bits), wire(m.weight_bits), wire(m.act_bits), m.policy.c_str(), m.channels_last,
             m.dtype.c_str(), m.fused_bn};
  const ScheduleOptions& s = o.schedule;
  w.schedule = {s.lr, s.min_lr, s.warmup_lr, s.epochs, s.warmup_epochs, s.cooldown_epochs};
  const LoopOptions& l = o.loop;
  w.loop = {l.momentum, l.weight_decay, l.smoothing, l.distill, l.freeze_weights, l.sync_bn, l.val_cycle,
            l.print_freq, l.checkpoint_steps, l.dist_bucket_mb, l.resume_path.c_str(), l.seed};
  w.evaluation = {o.evaluation.bn_calib_images, o.evaluation.smoothing};
  const ProcessOptions& p = o.process;
  w.process = {p.training_device.c_str(), p.dist_backend.c_str(), p.dist_timeout_s, p.threads, p.seed, p.cudnn.c_str(),
               p.tf32};
  const RunFileOptions& f = o.files;
  w.files = {f.output_dir.c_str(), f.name.c_str(), f.num_best_scores, f.resolved_yaml.c_str()};
  return w;
}

RunOptions decode(const mpq_torch_run_options& w) {
  RunOptions o;
  o.source = str(w.source);
  o.eval = w.eval != 0;
  o.fp_model = w.fp_model != 0;
  const auto& d = w.data;
  o.data = {str(d.source), str(d.dataset), str(d.path), d.num_classes, d.batch_size, d.workers, d.strict != 0,
            d.val_split, d.fraction, d.seed};
  const auto& m = w.model;
  o.model = {str(m.source), str(m.arch), m.num_classes, str(m.pre_trained), m.pre_trained_strict != 0,
             unwire(m.target_bits), unwire(m.weight_bits), unwire(m.act_bits), str(m.policy), m.channels_last != 0,
             str(m.dtype), m.fused_bn != 0};
  const auto& s = w.schedule;
  o.schedule = {s.lr, s.min_lr, s.warmup_lr, s.epochs, s.warmup_epochs, s.cooldown_epochs};
  const auto& l = w.loop;
  o.loop = {l.momentum, l.weight_decay, l.smoothing, l.distill != 0, l.freeze_weights != 0, l.sync_bn != 0,
            l.val_cycle, l.print_freq, l.checkpoint_steps, l.dist_bucket_mb, str(l.resume_path), l.seed};
  o.evaluation = {w.evaluation.bn_calib_images, w.evaluation.smoothing};
  const auto& p = w.process;
  o.process = {str(p.training_device), str(p.dist_backend), p.dist_timeout_s, p.threads, p.seed, str(p.cudnn),
               p.tf32 != 0};
  const auto& f = w.files;
  o.files = {str(f.output_dir), str(f.name), f.num_best_scores, str(f.resolved_yaml)};
  return o;
}

}  // namespace mpq::config
