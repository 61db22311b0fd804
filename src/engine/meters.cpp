#include "engine/meters.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <torch/torch.h>

#include "engine/host_read.h"
#include "mpq/common/log.h"

namespace mpq::engine {

double Meter::add(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& loss) {
  torch::NoGradGuard no_grad;
  const int64_t k = std::min<int64_t>(5, logits.size(1));
  const torch::Tensor top = std::get<1>(logits.topk(k, 1));
  const torch::Tensor hit = top.eq(labels.unsqueeze(1));
  const std::vector<double> v = read_scalars({loss, hit.select(1, 0).sum(), hit.any(1).sum()});
  const auto n = static_cast<double>(labels.size(0));
  correct1 += v[1];
  correct5 += v[2];
  loss_sum += v[0] * n;
  count += n;
  return v[0];
}

void Meter::reduce(Context& ctx) {
  if (!ctx.group) return;
  torch::Tensor t = torch::tensor({loss_sum, correct1, correct5, count}, torch::kDouble);
  ctx.group->all_reduce_sum(t);
  loss_sum = t[0].item<double>();
  correct1 = t[1].item<double>();
  correct5 = t[2].item<double>();
  count = t[3].item<double>();
}

std::string fmt_duration(double s) {
  const auto t = static_cast<int64_t>(std::max(0.0, s));
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", static_cast<long>(t / 3600),
                               static_cast<long>(t / 60 % 60), static_cast<long>(t % 60));
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", static_cast<long>(t / 60), static_cast<long>(t % 60));
  return buf;
}

void Progress::step(int epoch, int epochs, int64_t batch, int64_t batches, const Meter& m, double lr, double images) {
  ++done_;
  images_ += images;
  if (!on_) return;
  const bool last = batch + 1 == batches;
  if (!tty_ && (batch + 1) % freq_ != 0 && !last) return;
  const double el = std::chrono::duration<double>(Clock::now() - start_).count();
  const double ips = el > 0 ? images_ / el : 0;
  const double eta = done_ > 0 ? el / static_cast<double>(done_) * static_cast<double>(total_ - done_) : 0;
  char line[256];
  char top1[32] = "";
  if (top1_) std::snprintf(top1, sizeof top1, " top1 %.2f", m.top1());
  std::snprintf(line, sizeof line, "epoch %d/%d step %ld/%ld loss %.4f%s lr %.3g %.0f img/s ETA %s", epoch + 1, epochs,
                static_cast<long>(batch + 1), static_cast<long>(batches), m.loss(), top1, lr, ips,
                fmt_duration(eta).c_str());
  if (tty_) {
    std::fprintf(stderr, "\r%s\x1b[K%s", line, last ? "\n" : "");
    std::fflush(stderr);
  } else {
    mpq::log::info("{}", line);
  }
}

void Progress::clear() {
  if (tty_) std::fprintf(stderr, "\r\x1b[K");
}

}  // namespace mpq::engine
