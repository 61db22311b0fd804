// Metrics of a pass (loss, top-1, top-5, summed over ranks) and the
// progress line with images/s and ETA.
#pragma once

#include <unistd.h>

#include <chrono>
#include <string>

#include <torch/types.h>

#include "engine/context.h"

namespace mpq::engine {

using Clock = std::chrono::steady_clock;

struct Meter {
  double loss_sum = 0, correct1 = 0, correct5 = 0, count = 0;
  // One batch's logits [N, K], labels [N] and mean loss (a scalar tensor);
  // returns the loss. One copy to the host for all three: on a GPU, one
  // synchronisation per batch.
  double add(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& loss);
  // Sums over the ranks of the group (a no-op without one).
  void reduce(Context& ctx);
  double loss() const { return count > 0 ? loss_sum / count : 0; }
  double top1() const { return count > 0 ? 100 * correct1 / count : 0; }
  double top5() const { return count > 0 ? 100 * correct5 / count : 0; }
};

// Seconds as m:ss, or h:mm:ss from an hour.
std::string fmt_duration(double s);

// Progress on stderr: a live line on a terminal, a log line every
// `print_freq` steps otherwise.
class Progress {
 public:
  // `top1`: the steps have a top-1 to show (the joint step scores only its loss).
  Progress(bool enabled, int print_freq, int64_t total_steps, bool top1)
      : on_(enabled), tty_(enabled && ::isatty(2)), top1_(top1), freq_(print_freq), total_(total_steps),
        start_(Clock::now()) {}
  // One step done (`images` of them, all ranks); shows it every print_freq steps.
  void step(int epoch, int epochs, int64_t batch, int64_t batches, const Meter& m, double lr, double images);
  // Clears a live line before something else is printed.
  void clear();

 private:
  bool on_, tty_, top1_;
  int freq_;
  int64_t total_, done_ = 0;
  double images_ = 0;
  Clock::time_point start_;
};

}  // namespace mpq::engine
