#include "trainer/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace shoestring::optim {

double lr_at(const OptimConfig& c, int64_t step, int64_t total_steps) {
  if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
  if (c.schedule == "constant") return c.lr;
  if (c.schedule == "wsd") {
    const auto decay = int64_t(std::llround(c.decay_fraction * double(total_steps)));
    const int64_t start = std::max(c.warmup_steps, total_steps - decay);
    if (step < start || decay == 0) return c.lr;
    const double progress = std::min(1.0, double(step - start + 1) / double(total_steps - start));
    return c.lr + (c.min_lr - c.lr) * progress;
  }
  // cosine
  const int64_t span = std::max<int64_t>(1, total_steps - c.warmup_steps - 1);
  const double progress = std::min(1.0, double(step - c.warmup_steps) / double(span));
  return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace shoestring::optim
