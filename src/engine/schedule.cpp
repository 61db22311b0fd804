// The learning-rate schedule (timm's CosineLRScheduler, stepped per epoch).
#include "engine/trainer.h"

#include <cmath>

namespace mpq::engine {

double learning_rate(const config::ScheduleOptions& c, int epoch) {
  if (epoch < c.warmup_epochs) return c.warmup_lr + epoch * (c.lr - c.warmup_lr) / c.warmup_epochs;
  if (epoch >= c.epochs) return c.min_lr;
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + std::cos(M_PI * epoch / c.epochs));
}

int total_epochs(const config::ScheduleOptions& c) { return c.epochs + c.cooldown_epochs; }

}  // namespace mpq::engine
