#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"

using namespace shoestring;

namespace {

OptimConfig schedule(const std::string& kind) {
  OptimConfig c;
  c.schedule = kind;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.warmup_steps = 4;
  c.decay_fraction = 0.25;
  return c;
}

TEST(LrSchedule, WarmupIsLinearFromZero) {
  const auto c = schedule("cosine");
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 0, 100), 0.25);
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 3, 100), 1.0);
}

TEST(LrSchedule, CosineEndsAtMinLr) {
  const auto c = schedule("cosine");
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 4, 100), 1.0);
  EXPECT_NEAR(optim::lr_at(c, 99, 100), 0.1, 1e-15);
  // Half-way through the decay the cosine is at the mean of lr and min_lr.
  const int64_t mid = 4 + 95 / 2;
  const double expect = 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * (mid - 4) / 95.0));
  EXPECT_DOUBLE_EQ(optim::lr_at(c, mid, 100), expect);
}

TEST(LrSchedule, WarmupStableDecay) {
  const auto c = schedule("wsd");
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 50, 100), 1.0);   // stable
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 74, 100), 1.0);   // last stable step
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 75, 100), 1.0 - 0.9 / 25);
  EXPECT_DOUBLE_EQ(optim::lr_at(c, 99, 100), 0.1);   // decayed fully on the last step
}

TEST(LrSchedule, Constant) { EXPECT_DOUBLE_EQ(optim::lr_at(schedule("constant"), 90, 100), 1.0); }

TEST(AdamW, OneStepMatchesTheFormula) {
  OptimConfig c;
  c.beta1 = 0.9;
  c.beta2 = 0.99;
  c.eps = 1e-8;
  c.weight_decay = 0.5;
  at::Tensor w = at::tensor({1.0, -2.0}, at::kDouble).requires_grad_();
  at::Tensor n = at::tensor({3.0}, at::kDouble).requires_grad_();
  optim::AdamW opt({{"w", w, true}, {"n", n, false}}, c);
  opt.step(0.1, {at::tensor({0.5, 0.25}, at::kDouble), at::tensor({-1.0}, at::kDouble)});
  // After one step m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps).
  EXPECT_NEAR(w[0].item<double>(), 1.0 * (1 - 0.1 * 0.5) - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
  EXPECT_NEAR(w[1].item<double>(), -2.0 * (1 - 0.1 * 0.5) - 0.1 * 0.25 / (0.25 + 1e-8), 1e-15);
  EXPECT_NEAR(n[0].item<double>(), 3.0 + 0.1 * 1.0 / (1.0 + 1e-8), 1e-15);  // not decayed
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(AdamW, DecayGroupsFollowConfig) {
  OptimConfig c;
  c.no_decay = {"norm", "embedding"};
  EXPECT_FALSE(optim::decays(c, "norm"));
  EXPECT_FALSE(optim::decays(c, "embedding"));
  EXPECT_TRUE(optim::decays(c, "head"));
  EXPECT_TRUE(optim::decays(c, "weight"));
}

TEST(AdamW, UndefinedGradientLeavesTheSlotAlone) {
  OptimConfig c;
  at::Tensor w = at::tensor({1.0, -2.0}, at::kDouble);
  at::Tensor n = at::tensor({3.0}, at::kDouble);
  optim::AdamW opt({{"w", w, true}, {"n", n, true}}, c);
  opt.step(0.1, {at::Tensor(), at::tensor({1.0}, at::kDouble)});
  EXPECT_EQ(w[1].item<double>(), -2.0);
  EXPECT_NE(n[0].item<double>(), 3.0);
  EXPECT_EQ(opt.state_bytes(), 2 * 3 * 8);
  EXPECT_THROW(opt.step(0.1, {at::Tensor()}), std::invalid_argument);
}

TEST(GradClip, ScaleBringsTheNormToMaxNorm) {
  EXPECT_EQ(optim::clip_scale(5.0, 0.0), 1.0);  // 0 disables clipping
  EXPECT_EQ(optim::clip_scale(0.5, 1.0), 1.0);  // already inside
  EXPECT_NEAR(5.0 * optim::clip_scale(5.0, 1.0), 1.0, 1e-6);
}

}  // namespace
