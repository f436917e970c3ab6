#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/model/rms_norm.h"
#include "trainer/model/rope.h"
#include "tests/trainer/small_models.h"
#include "trainer/model/transformer.h"

using namespace shoestring;

namespace {

ModelConfig small_model() { return shoestring::testing::small_gqa_model(); }

model::Transformer double_model(const ModelConfig& m) {
  at::manual_seed(0);
  model::Transformer net(m, at::kDouble);
  net->to(at::kDouble);
  return net;
}

TEST(Model, LogitShapeAndParameterCount) {
  ModelConfig m = small_model();
  at::manual_seed(0);
  model::Transformer net(m);
  const at::Tensor tokens = at::randint(m.vocab_size, {3, 7}, at::kLong);
  const at::Tensor logits = net->forward(tokens);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 7, m.vocab_size}));
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  // Per layer: q (8x8) + k, v (4x8 each: 1 kv head of size 4) + o (8x8) + 3 ffn mats (12x8) + 2 norms.
  const int64_t per_layer = 64 + 32 + 32 + 64 + 3 * 96 + 2 * 8;
  EXPECT_EQ(net->parameter_count(), 2 * per_layer + 8 /*final norm*/ + 2 * 11 * 8 /*embed + head*/);
  m.tie_embeddings = true;
  model::Transformer tied(m);
  EXPECT_EQ(tied->parameter_count(), net->parameter_count() - 11 * 8);
}

TEST(Model, CausalityFutureTokensDoNotChangeEarlierLogits) {
  auto net = double_model(small_model());
  at::Tensor a = at::randint(11, {2, 10}, at::kLong);
  at::Tensor b = a.clone();
  b.select(1, 6).fill_(0);
  a.select(1, 6).fill_(1);
  const at::Tensor la = net->forward(a), lb = net->forward(b);
  EXPECT_TRUE(at::equal(la.narrow(1, 0, 6), lb.narrow(1, 0, 6)));
  EXPECT_FALSE(at::allclose(la.narrow(1, 6, 4), lb.narrow(1, 6, 4)));  // the change is visible later
}

// fp32 takes the fused kernel with its hand-written backward; the fp64 op-by-op form is the
// reference. 37 columns: not a multiple of the kernel's 16 lanes.
TEST(Model, Fp32RMSNormMatchesTheFp64FormulaForwardAndBackward) {
  at::manual_seed(0);
  model::RMSNorm norm(37, /*eps=*/1e-6);
  norm->weight.data().uniform_(0.5, 1.5);
  const at::Tensor x = (at::randn({3, 5, 37}) * 3.0).requires_grad_();
  const at::Tensor g = at::randn({3, 5, 37});
  const at::Tensor y = norm->forward(x);
  (y * g).sum().backward();
  const at::Tensor xd = x.detach().to(at::kDouble).requires_grad_();
  const at::Tensor wd = norm->weight.detach().to(at::kDouble).requires_grad_();
  const at::Tensor yd = xd * at::rsqrt(xd.pow(2).mean(-1, /*keepdim=*/true) + 1e-6) * wd;
  (yd * g.to(at::kDouble)).sum().backward();
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(y.to(at::kDouble), yd, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(x.grad().to(at::kDouble), xd.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(norm->weight.grad().to(at::kDouble), wd.grad(), 1e-5, 1e-5));
  at::Tensor a = norm->forward(x), b = norm->forward(x);  // deterministic
  EXPECT_TRUE(at::equal(a, b));
}

TEST(Model, RMSNormMatchesHandComputedValues) {
  model::RMSNorm norm(4, /*eps=*/0.0);
  const at::Tensor x = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble);
  const at::Tensor y = norm->forward(x);
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i].item<double>(), (i + 1) / rms, 1e-15);
  norm->weight.data().fill_(2.0);
  EXPECT_NEAR(norm->forward(x)[3].item<double>(), 8.0 / rms, 1e-15);
}

TEST(Model, RotaryMatchesHandComputedValues) {
  // head_dim 4, theta 10000: pair 0 turns by p rad, pair 1 by p * 10000^(-1/2) = p / 100 rad.
  const auto tables = model::rotary_tables(4, 3, 10000.0);
  const at::Tensor x = at::tensor({1.0, 0.0, 0.0, 1.0}, at::kDouble).repeat({3, 1}).view({1, 1, 3, 4});
  const at::Tensor y = model::apply_rotary(x, tables);
  for (int p = 0; p < 3; ++p) {
    const at::Tensor r = y[0][0][p];
    EXPECT_NEAR(r[0].item<double>(), std::cos(p), 1e-15);
    EXPECT_NEAR(r[1].item<double>(), std::sin(p), 1e-15);
    EXPECT_NEAR(r[2].item<double>(), -std::sin(p / 100.0), 1e-15);
    EXPECT_NEAR(r[3].item<double>(), std::cos(p / 100.0), 1e-15);
  }
  // A rotation keeps the norm of every pair.
  EXPECT_TRUE(at::allclose(y.norm(2, -1), x.norm(2, -1), 0, 1e-14));
}

TEST(Model, GradientsMatchFloat64FiniteDifferences) {
  auto net = double_model(small_model());
  const at::Tensor tokens = at::randint(11, {2, 6}, at::kLong);
  const at::Tensor targets = at::randint(11, {2, 6}, at::kLong);
  net->loss(tokens, targets).backward();
  const double h = 1e-6;
  int checked = 0;
  for (const auto& item : net->named_parameters()) {
    at::Tensor p = item.value();
    const at::Tensor flat = p.data().view({-1});
    const at::Tensor grad = p.grad().view({-1});
    for (int64_t idx : {int64_t(0), flat.numel() / 2, flat.numel() - 1}) {
      const double orig = flat[idx].item<double>();
      at::NoGradGuard no_grad;
      flat[idx] = orig + h;
      const double up = net->loss(tokens, targets).item<double>();
      flat[idx] = orig - h;
      const double down = net->loss(tokens, targets).item<double>();
      flat[idx] = orig;
      const double numeric = (up - down) / (2 * h), analytic = grad[idx].item<double>();
      // Central differences in float64 are accurate to ~h^2 * f''' + eps/h ~ 1e-9 here.
      EXPECT_NEAR(analytic, numeric, 1e-7 + 1e-6 * std::fabs(numeric)) << item.key() << "[" << idx << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

TEST(Model, Bf16ComputeStaysCloseToFp32) {
  ModelConfig m = small_model();
  at::manual_seed(0);
  model::Transformer net(m);
  const at::Tensor tokens = at::randint(11, {2, 8}, at::kLong);
  const at::Tensor ref = net->forward(tokens);
  net->set_compute_dtype(at::kBFloat16);
  const at::Tensor low = net->forward(tokens);
  EXPECT_EQ(low.scalar_type(), at::kFloat);  // logits come back in fp32 for the loss
  // bf16 keeps 8 bits of mantissa: relative error per op ~4e-3, a few ops deep.
  const double rel = ((low - ref).norm() / ref.norm()).item<double>();
  EXPECT_LT(rel, 3e-2);
  EXPECT_GT(rel, 0.0);  // and it really ran in lower precision
}

TEST(Model, ParameterKindsForWeightDecay) {
  EXPECT_EQ(model::parameter_kind("blocks.0.attn_norm.weight"), "norm");
  EXPECT_EQ(model::parameter_kind("final_norm.weight"), "norm");
  EXPECT_EQ(model::parameter_kind("tok_embed"), "embedding");
  EXPECT_EQ(model::parameter_kind("head"), "head");
  EXPECT_EQ(model::parameter_kind("blocks.1.mlp.w1"), "weight");
  EXPECT_EQ(model::parameter_kind("x.bias"), "bias");
}

}  // namespace
