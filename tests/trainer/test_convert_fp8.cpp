#include <ATen/ATen.h>
#include <array>
#include <vector>
#include <gtest/gtest.h>

#include "ops/fp8_linear.h"

#include "ops/calc_diff.h"
#include "trainer/config_loader.h"
#include "trainer/model/convert_fp8.h"
#include "trainer/model/moe.h"
#include "trainer/model/transformer.h"

using namespace shoestring;

namespace {

// A scalar of the logits and every parameter gradient of one backward, the loss first.
std::vector<at::Tensor> loss_and_gradients(model::Transformer& net, const at::Tensor& tokens) {
  net->zero_grad();
  const at::Tensor loss = net->forward(tokens).logsumexp(-1).mean();
  loss.backward();
  std::vector<at::Tensor> grads{loss.detach()};
  for (const auto& p : net->parameters())
    if (p.grad().defined()) grads.push_back(p.grad().clone());
  return grads;
}

TEST(ConvertFp8, SwapsExactlyTheEligibleLinears) {
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, {});
  at::manual_seed(0);
  model::Transformer net(c.model);
  const at::Tensor tokens = at::randint(c.model.vocab_size, {2, 16}, at::kLong);
  const at::Tensor before = net->forward(tokens);
  // tiny-moe: 3 trunk blocks + 1 MTP block, each with an MLA; block 0 dense SwiGLU; blocks 1-2 and
  // the MTP block MoE, each with a shared-expert SwiGLU: 4 MLA + 1 SwiGLU + 3 MoE + 3 shared = 11.
  EXPECT_EQ(model::convert_to_fp8(*net), 11);
  for (const auto& item : net->named_modules()) {
    const bool eligible = dynamic_cast<model::LinearUser*>(item.value().get()) != nullptr;
    if (eligible) {
      EXPECT_NE(dynamic_cast<model::LinearUser*>(item.value().get())->linear_fn(), nullptr) << item.key();
    }
    if (item.key().find("router") != std::string::npos) {
      EXPECT_FALSE(eligible) << "the gate stays high precision";
    }
  }
  const at::Tensor after = net->forward(tokens);
  const double d = ops::calc_diff(after, before);
  EXPECT_GT(d, 0.0);   // the linears now run in FP8
  EXPECT_LT(d, 1e-3);  // and the logits stay close
}

// Routed experts go through one grouped FP8 linear (one grouped GEMM for Fprop and Dgrad); it must
// compute what the per-expert FP8 linears compute: same loss and gradients on tiny-moe. Only the
// BLAS calls of the CPU emulation differ (one per 128-padded segment), hence a bound.
TEST(ConvertFp8, GroupedExpertsEqualPerExpertFp8Linears) {
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, {});
  at::manual_seed(2);
  model::Transformer net(c.model);
  model::convert_to_fp8(*net);
  const at::Tensor tokens = at::randint(c.model.vocab_size, {2, 16}, at::kLong);
  auto loss_and_grads = [&] { return loss_and_gradients(net, tokens); };
  const std::vector<at::Tensor> grouped = loss_and_grads();
  int64_t moe_layers = 0;
  for (const auto& m : net->modules(/*include_self=*/true))
    if (auto* user = dynamic_cast<model::LinearUser*>(m.get()); user && user->grouped_linear_fn()) {
      user->set_grouped_linear_fn(nullptr);
      ++moe_layers;
    }
  EXPECT_GT(moe_layers, 0);
  const std::vector<at::Tensor> per_expert = loss_and_grads();
  ASSERT_EQ(grouped.size(), per_expert.size());
  for (size_t i = 0; i < grouped.size(); ++i)
    EXPECT_LT(ops::calc_diff(grouped[i].to(at::kDouble), per_expert[i].to(at::kDouble)), 1e-12) << "tensor " << i;
}

// convert_to_fp8 runs each SwiGLU MLP (dense, shared and routed experts) as one fused FP8 MLP: the
// input quantized once for both up projections, the activation fused into the down projection's
// quantization. On the CPU that is exact: the same loss and gradients, bit for bit, as the same
// model with three separate FP8 linears and the unfused silu(h1) * h3.
TEST(ConvertFp8, FusedSwigluEqualsTheUnfusedModelBitForBit) {
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, {});
  at::manual_seed(3);
  model::Transformer net(c.model);
  model::convert_to_fp8(*net);
  const at::Tensor tokens = at::randint(c.model.vocab_size, {2, 16}, at::kLong);
  auto loss_and_grads = [&] { return loss_and_gradients(net, tokens); };
  const std::vector<at::Tensor> fused = loss_and_grads();
  int64_t moe_layers = 0;
  for (const auto& m : net->modules(/*include_self=*/true))
    if (auto* user = dynamic_cast<model::LinearUser*>(m.get())) {
      moe_layers += user->grouped_swiglu_mlp_fn() != nullptr && user->grouped_linear_fn() != nullptr &&
                    dynamic_cast<model::MoEImpl*>(user) != nullptr;
      user->set_swiglu_mlp_fns(nullptr, nullptr);
    }
  EXPECT_EQ(moe_layers, 3);  // 2 trunk MoE blocks + the MTP block
  const std::vector<at::Tensor> unfused = loss_and_grads();
  ASSERT_EQ(fused.size(), unfused.size());
  for (size_t i = 0; i < fused.size(); ++i) EXPECT_TRUE(at::equal(fused[i], unfused[i])) << "tensor " << i;
}

// The GPU GEMM needs every K a multiple of 128; MLA's wkv_a (kv_lora_rank + rope = 288 outputs in
// small-moe) and routed experts' token counts are not. Zero padding must change nothing: same
// outputs and gradients as the unpadded FP8 linear, which the CPU path computes for any shape.
TEST(ConvertFp8, PaddingToBlocksIsExact) {
  at::manual_seed(1);
  for (const auto& [m, k, n] : std::vector<std::array<int64_t, 3>>{{37, 288, 200}, {5, 256, 288}, {130, 100, 129}, {0, 128, 256}}) {
    const at::Tensor x0 = at::randn({m, k}).to(at::kBFloat16), w0 = at::randn({n, k}) * 0.05;
    const at::Tensor dy = at::randn({m, n}).to(at::kBFloat16);
    at::Tensor x1 = x0.clone().requires_grad_(), w1 = w0.clone().requires_grad_();
    at::Tensor x2 = x0.clone().requires_grad_(), w2 = w0.clone().requires_grad_();
    const at::Tensor y1 = ops::fp8_linear(x1, w1), y2 = model::fp8_linear_padded(x2, w2);
    ASSERT_EQ(y2.sizes(), y1.sizes());
    y1.backward(dy);
    y2.backward(dy);
    const std::string shape = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    EXPECT_TRUE(at::allclose(y2.to(at::kFloat), y1.to(at::kFloat), 1e-2, 1e-5)) << shape;
    EXPECT_TRUE(at::allclose(x2.grad().to(at::kFloat), x1.grad().to(at::kFloat), 1e-2, 1e-5)) << shape;
    EXPECT_TRUE(at::allclose(w2.grad(), w1.grad(), 1e-5, 1e-6)) << shape;
    // On the CPU the converted linear leaves shapes alone.
    EXPECT_TRUE(at::equal(model::fp8_linear_any_shape(x0, w0), ops::fp8_linear(x0, w0))) << shape;
  }
}

}  // namespace
