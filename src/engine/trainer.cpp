#include "engine/trainer.h"

#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include <torch/torch.h>

#include "data/prefetcher.h"
#include "dist/dist.h"
#include "engine/context.h"
#include "engine/evaluation.h"
#include "engine/joint.h"
#include "engine/meters.h"
#include "engine/model_setup.h"
#include "engine/run_files.h"
#include "engine/run_state.h"
#include "engine/signals.h"
#include "engine/sources.h"
#include "mpq/common/error.h"
#include "mpq/common/log.h"
#include "mpq/io/file_util.h"

namespace mpq::engine {

namespace fs = std::filesystem;

namespace {

void set_lr(torch::optim::SGD& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

}  // namespace

void train(const config::RunOptions& run, Mode mode) {
  const config::LoopOptions& c = run.loop;
  const config::DataOptions& dl = run.data;
  Context ctx = make_context(run.process);
  const int world = ctx.env.world_size;
  RunFiles files(run.files, ctx.rank0());  // written to once the inputs are checked
  const std::string last = files.dir() + "/last.pt", best = files.dir() + "/best.pt";
  std::string resume = c.resume_path;
  if (resume == "auto") resume = fs::exists(last) ? last : "";
  // The model first (cheap, and where most config mistakes show), then the data.
  Model m = make_net(run.model, mode, input_channels(dl), /*load_pretrained=*/resume.empty());
  Data data = make_data(dl, ctx.env.rank, world);
  m.input_size = data.height;
  // freeze_weights, as the original: only the quantizer scales and the
  // parameters whose names say BatchNorm ("bn") train.
  std::vector<torch::Tensor> trained;
  for (auto& kv : m.q.net->named_parameters()) {
    const bool trains = !c.freeze_weights || kv.key().find("quan_") != std::string::npos ||
                        kv.key().find("bn") != std::string::npos;
    kv.value().set_requires_grad(trains);
    if (trains) trained.push_back(kv.value());
  }
  MPQ_CHECK(!trained.empty(), run.source, ": freeze_weights: true leaves this ", mode_name(mode),
            " run nothing to train (no quantizer scales or BatchNorm)");
  auto opt = make_sgd(*m.q.net, run.schedule.lr, c.momentum, c.weight_decay);
  Position pos;
  pos.global_batch = static_cast<int64_t>(dl.batch_size) * world;
  pos.world_size = world;
  if (!resume.empty()) {
    m.q.net->to(ctx.device);
    pos = restore(resume, m, *opt, total_epochs(run.schedule), data.train_size);
    // Another world size or batch: continue at the same sample of the epoch
    // (the epoch's order does not depend on the world size).
    const int64_t global = static_cast<int64_t>(dl.batch_size) * world;
    if (pos.global_batch != global && pos.batch > 0) {
      const int64_t samples = pos.batch * pos.global_batch;
      if (samples % global != 0)
        mpq::log::warn("{}: written with a global batch of {}, now {}: the epoch continues at sample {} instead of {}",
                     resume, pos.global_batch, global, samples / global * global, samples);
      pos.batch = samples / global;
      pos.meter = Meter{};  // this epoch's running metrics restart with the new shards
    }
    MPQ_CHECK(pos.batch <= data.train->num_batches(), resume, ": continues at batch ", pos.batch + 1,
              " of an epoch, but this run's epochs have ", data.train->num_batches(), " (another dataset or fraction?)");
    // Several ranks: the saved running metrics are rank 0's share only; restart them.
    if (world > 1 || pos.world_size > 1) pos.meter = Meter{};
    pos.global_batch = global;
    pos.world_size = world;
    mpq::log::info("resumed from {}: epoch {}, batch {}, step {}", resume, pos.epoch + 1, pos.batch, pos.step);
  }
  attach(ctx, m, c.sync_bn);
  std::mt19937_64 policy_rng(static_cast<uint64_t>(c.seed) * 2654435761u + 1);
  if (!pos.rng.empty()) {
    std::istringstream in(pos.rng);
    in >> policy_rng;
    MPQ_CHECK(!in.fail(), resume, ": malformed generator state");
  }
  const int epochs = total_epochs(run.schedule);
  const int64_t nb = data.train->num_batches();
  MPQ_CHECK(nb > 0, run.source, ": no training batches");
  files.open(pos.epoch);
  mpq::log::info("{} {}: {} training images ({} per rank), {} validation images, batch {} x {} rank(s), {} epochs, "
               "device {}, {} threads",
               mode_name(mode), run.model.arch, data.train_size, data.train_size / world, data.val_size,
               dl.batch_size, world, epochs, ctx.device.str(), torch::get_num_threads());
  if (mode == Mode::kFinetune) {
    std::string bits;
    for (size_t i = 0; i < m.weight_bits.size(); ++i)
      bits += (i ? " " : "") + std::to_string(m.weight_bits[i]) + "/" + std::to_string(m.act_bits[i]);
    mpq::log::info("policy (W/A per searchable layer): {}", bits);
    // Quantized finetuning is of a trained network; from random weights the
    // SAT fc's weight step size can run away (it did in 3 of 8 seeds of a
    // small task at lr 0.02), so say so before the run is spent.
    if (resume.empty() && run.model.pre_trained.empty() && ctx.rank0())
      mpq::log::warn("{}: no pre_trained: the policy is finetuned from random weights, where the SAT-rescaled fc "
                     "can diverge; give a full-precision checkpoint as pre_trained", run.source);
  }
  SignalScope signals;
  const int64_t total_steps = static_cast<int64_t>(epochs - pos.epoch) * nb - pos.batch;
  Progress progress(ctx.rank0(), c.print_freq, std::max<int64_t>(total_steps, 1), mode != Mode::kJoint);
  // Gradients averaged over ranks while the step's last backward runs (DDP's buckets).
  std::unique_ptr<dist::GradSync> grad_sync;
  if (ctx.group)
    grad_sync = std::make_unique<dist::GradSync>(*ctx.group, trained,
                                                 static_cast<int64_t>(c.dist_bucket_mb * (1 << 20)));
  JointOptions jo;
  jo.smoothing = c.smoothing;
  jo.distill = c.distill;
  if (grad_sync) {
    jo.before_last_backward = [&] { grad_sync->arm(/*accumulated=*/true); };
    jo.after_backward = [&] { grad_sync->finish(); };
  }
  auto checkpoint = [&](const std::string& path) {
    if (!ctx.rank0()) return;
    std::ostringstream rng;
    rng << policy_rng;
    pos.rng = rng.str();
    save(path, run.files.resolved_yaml, m, *opt, pos);
  };
  while (pos.epoch < epochs) {
    const int epoch = pos.epoch;
    const double lr = learning_rate(run.schedule, epoch);
    set_lr(*opt, lr);
    data.train->set_epoch(epoch);
    m.q.net->train();
    const auto t0 = Clock::now();
    double images = 0;
    const auto pf = prefetch(*data.train, pos.batch, nb, ctx.device.is_cuda());
    while (pos.batch < nb) {
      const data::Batch b = pf->next();
      const torch::Tensor x = m.input(b.images, ctx.device), y = b.labels.to(ctx.device, /*non_blocking=*/true);
      bool finite = true;
      if (mode == Mode::kJoint) {
        const std::vector<int> mixed = sample_policy(policy_rng, m.q.candidates, m.q.convs.size());
        const std::vector<double> losses = joint_step(m.q, *opt, x, y, mixed, jo);
        for (double l : losses) finite = finite && std::isfinite(l);
        // The joint step keeps no logits: its metric is the top candidate's loss.
        pos.meter.loss_sum += losses.front() * static_cast<double>(y.size(0));
        pos.meter.count += static_cast<double>(y.size(0));
      } else {
        opt->zero_grad();
        const torch::Tensor out = m.q.net->forward(x);
        const torch::Tensor l = label_smoothing_ce(out, y, c.smoothing);
        if (grad_sync) grad_sync->arm(/*accumulated=*/false);  // zero_grad left zeros
        l.backward();
        if (grad_sync) grad_sync->finish();
        finite = std::isfinite(pos.meter.add(out.detach(), y, l));
        if (finite) opt->step();
      }
      // Agree across ranks on stopping: a signal or a non-finite loss anywhere stops everyone.
      int flags = (signal_received() ? 1 : 0) | (finite ? 0 : 2);
      if (ctx.group) {
        torch::Tensor f = torch::tensor({static_cast<double>(flags & 1), static_cast<double>(flags >> 1)}, torch::kDouble);
        ctx.group->all_reduce_sum(f);
        flags = (f[0].item<double>() > 0 ? 1 : 0) | (f[1].item<double>() > 0 ? 2 : 0);
      }
      if (flags & 2) {
        progress.clear();
        const bool have = fs::exists(last);
        const std::string cause = mode == Mode::kFinetune ? quant::sat_collapse(*m.q.net) : std::string();
        throw RuntimeError(detail::concat(
            "training diverged: non-finite loss at epoch ", epoch + 1, ", step ", pos.batch + 1, " (global step ",
            pos.step + 1, ")", cause.empty() ? "" : ": " + cause, "; ",
            have ? "the last good checkpoint is " + last : std::string("no checkpoint was written yet"),
            " (lower lr", have ? ", and resume from it with resume.path" : "", ")"));
      }
      ++pos.step;
      images += static_cast<double>(y.size(0)) * world;
      progress.step(epoch, epochs, pos.batch, nb, pos.meter, lr, static_cast<double>(y.size(0)) * world);
      ++pos.batch;  // the position a checkpoint records: the next batch
      if (flags & 1) {
        progress.clear();
        checkpoint(last);
        throw Error(detail::concat("interrupted by ", signal_received() == SIGTERM ? "SIGTERM" : "SIGINT",
                                   "; saved ", last, " (epoch ", epoch + 1, ", step ", pos.batch,
                                   "); continue with --set resume.path=auto"),
                    ExitCode::kInterrupted);
      }
      if (c.checkpoint_steps > 0 && pos.step % c.checkpoint_steps == 0 && pos.batch < nb) checkpoint(last);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    report_skipped(*data.train, "training epoch " + std::to_string(epoch + 1));
    average_bn_stats(ctx, *m.q.net);
    pos.meter.reduce(ctx);
    const Meter train_meter = pos.meter;
    std::optional<Meter> val;
    if ((epoch + 1) % c.val_cycle == 0 || epoch + 1 == epochs) {
      if (mode == Mode::kFinetune) recalibrate_bn(ctx, m, *data.calib, run.evaluation.bn_calib_images);
      if (mode == Mode::kJoint) m.q.set_uniform(m.q.candidates.front());
      val = validate(ctx, m, *data.val, run.evaluation.smoothing);
      const std::string train_top1 = mode == Mode::kJoint ? "" : mpq::log::format(" top1 {:.2f}", train_meter.top1());
      mpq::log::info("epoch {}/{}: train loss {:.4f}{} | val loss {:.4f} top1 {:.2f} top5 {:.2f} | {:.0f} img/s, {}{}",
                   epoch + 1, epochs, train_meter.loss(), train_top1, val->loss(), val->top1(), val->top5(),
                   images / secs, fmt_duration(secs), mode == Mode::kJoint ? " (all at the top candidate)" : "");
    }
    const bool is_best = val && val->top1() > pos.best_top1;
    if (is_best) {
      pos.best_top1 = val->top1();
      pos.best_epoch = epoch;
    }
    // The checkpoint of a finished epoch points at the next one.
    ++pos.epoch;
    pos.batch = 0;
    pos.meter = Meter{};
    checkpoint(last);
    // A copy of last.pt, written as every checkpoint is: a temporary file
    // renamed into place, removed where the write fails (a full disk).
    if (is_best && ctx.rank0()) io::write_file_atomic(best, io::read_file(last));
    // After the checkpoint that records the epoch, never before it.
    files.epoch(epoch, lr, train_meter, val, images / secs, secs);
  }
  ctx.bn_sync.install({});
  if (pos.best_epoch >= 0)
    mpq::log::info("done: best val top1 {:.2f} at epoch {}; checkpoints in {}", pos.best_top1, pos.best_epoch + 1,
                 files.dir());
}

}  // namespace mpq::engine
