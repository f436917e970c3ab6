#pragma once
#include <cstdint>

#include "trainer/config.h"

namespace shoestring::optim {

// Learning rate for optimizer step `step` (0-based) of `total_steps`: linear warmup to lr, then
//  cosine:   min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2   (Loshchilov & Hutter 2017)
//  wsd:      lr held, then a linear decay to min_lr over the last decay_fraction of the steps
//            (warmup-stable-decay, Hu et al. 2024, MiniCPM §4)
//  constant: lr.
double lr_at(const OptimConfig& c, int64_t step, int64_t total_steps);

}  // namespace shoestring::optim
