// Multi-head latent attention against a plain matrix-form reference, and the MTP loss against a
// hand-assembled reference, in float64.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "trainer/model/mla.h"
#include "tests/trainer/small_models.h"
#include "trainer/model/transformer.h"

using namespace shoestring;
using namespace shoestring::model;

namespace {

ModelConfig mla_config(int64_t q_lora_rank) { return shoestring::testing::small_mla_model(q_lora_rank); }

// Rotary by hand: pair i of a row at position p turns by p * theta^(-2i/dim).
at::Tensor rope_rows(const at::Tensor& x, double theta) {  // x: [T, dim]
  std::vector<at::Tensor> rows;
  const int64_t dim = x.size(1);
  for (int64_t p = 0; p < x.size(0); ++p) {
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double a = double(p) * std::pow(theta, -2.0 * double(i) / double(dim));
      const at::Tensor x0 = x[p][2 * i], x1 = x[p][2 * i + 1];
      parts.push_back((x0 * std::cos(a) - x1 * std::sin(a)).view({1}));
      parts.push_back((x0 * std::sin(a) + x1 * std::cos(a)).view({1}));
    }
    rows.push_back(at::cat(parts));
  }
  return at::stack(rows);
}

at::Tensor rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt(x.pow(2).mean(-1, true) + eps) * w;
}

// One sequence x: [T, d] through MLA written as DeepSeek-V2 §2.1 states it, head by head.
at::Tensor mla_reference(const ModelConfig& m, MLAImpl& a, const at::Tensor& x) {
  const int64_t t = x.size(0), dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim, c = m.kv_lora_rank;
  const at::Tensor q_all = a.wq.defined() ? x.matmul(a.wq.t())
                                          : rms(x.matmul(a.wq_a.t()), a.q_norm->weight, m.norm_eps).matmul(a.wq_b.t());
  const at::Tensor ckv_full = x.matmul(a.wkv_a.t());
  const at::Tensor ckv = rms(ckv_full.narrow(1, 0, c), a.kv_norm->weight, m.norm_eps);  // compressed latent
  const at::Tensor k_rope = rope_rows(ckv_full.narrow(1, c, dr), m.rope_theta);     // shared by all heads
  const at::Tensor kv = ckv.matmul(a.wkv_b.t());
  at::Tensor mask = at::zeros({t, t}, at::kDouble);
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = i + 1; j < t; ++j) mask[i][j] = -std::numeric_limits<double>::infinity();
  std::vector<at::Tensor> heads;
  for (int64_t h = 0; h < m.n_heads; ++h) {
    const at::Tensor qh = q_all.narrow(1, h * (dn + dr), dn + dr);
    const at::Tensor q = at::cat({qh.narrow(1, 0, dn), rope_rows(qh.narrow(1, dn, dr), m.rope_theta)}, 1);
    const at::Tensor kvh = kv.narrow(1, h * (dn + dv), dn + dv);
    const at::Tensor k = at::cat({kvh.narrow(1, 0, dn), k_rope}, 1);
    const at::Tensor v = kvh.narrow(1, dn, dv);
    const at::Tensor p = at::softmax(q.matmul(k.t()) / std::sqrt(double(dn + dr)) + mask, -1);
    heads.push_back(p.matmul(v));
  }
  return at::cat(heads, 1).matmul(a.wo.t());
}

void check_mla(int64_t q_lora_rank) {
  const ModelConfig m = mla_config(q_lora_rank);
  at::manual_seed(7);
  MLA a(m);
  a->to(at::kDouble);
  const auto tables = rotary_tables(m.qk_rope_head_dim, m.max_seq_len, m.rope_theta);
  const at::Tensor x = at::randn({2, 6, 12}, at::kDouble).requires_grad_();
  const at::Tensor probe = at::randn({2, 6, 12}, at::kDouble);
  const at::Tensor y = a->forward(x, tables);
  (y * probe).sum().backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : a->named_parameters()) grads[p.key()] = p.value().grad().clone(), p.value().mutable_grad() = at::Tensor();

  const at::Tensor xr = x.detach().clone().requires_grad_();
  const at::Tensor yr = at::stack({mla_reference(m, *a, xr[0]), mla_reference(m, *a, xr[1])});
  EXPECT_TRUE(at::allclose(y, yr, 1e-12, 1e-12));
  (yr * probe).sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), xr.grad(), 1e-12, 1e-12));
  for (const auto& p : a->named_parameters())
    EXPECT_TRUE(at::allclose(grads[p.key()], p.value().grad(), 1e-12, 1e-12)) << p.key();
}

TEST(MLA, MatchesMatrixFormReference) { check_mla(0); }
TEST(MLA, MatchesMatrixFormReferenceWithQueryCompression) { check_mla(4); }

TEST(MLA, IsCausal) {
  ModelConfig m = mla_config(0);
  m.vocab_size = 11;
  at::manual_seed(8);
  Transformer net(m, at::kDouble);
  net->to(at::kDouble);
  at::Tensor a = at::randint(11, {1, 9}, at::kLong), b = a.clone();
  a[0][5] = 1;
  b[0][5] = 2;
  EXPECT_TRUE(at::equal(net->forward(a).narrow(1, 0, 5), net->forward(b).narrow(1, 0, 5)));
  EXPECT_FALSE(at::allclose(net->forward(a).narrow(1, 5, 4), net->forward(b).narrow(1, 5, 4)));
}

TEST(MTP, LossMatchesHandAssembledReference) {
  ModelConfig m = mla_config(0);
  m.vocab_size = 13;
  m.n_routed_experts = 4;
  m.n_activated_experts = 2;
  m.n_dense_layers = 1;
  m.moe_intermediate_size = 6;
  m.mtp_depth = 1;
  at::manual_seed(9);
  Transformer net(m, at::kDouble);
  net->to(at::kDouble);
  const at::Tensor tokens = at::randint(13, {2, 8}, at::kLong), targets = at::randint(13, {2, 8}, at::kLong);
  const LossBreakdown out = net->losses(tokens, targets, {/*mtp_lambda=*/0.3, /*balance_alpha=*/0.0});

  std::map<std::string, at::Tensor> p;
  for (const auto& item : net->named_parameters()) p[item.key()] = item.value();
  const auto head = [&](const at::Tensor& h) { return rms(h, p["final_norm.weight"], m.norm_eps).matmul(p["head"].t()); };
  const auto ce = [](const at::Tensor& logits, const at::Tensor& y) {
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
  };
  const at::Tensor h = net->hidden(tokens);
  const at::Tensor main = ce(head(h), targets);
  // Depth 1: position i combines h_i with the embedding of t_{i+1} and predicts t_{i+2} = targets[i+1].
  const at::Tensor emb = at::embedding(p["tok_embed"], tokens.narrow(1, 1, 7));
  const at::Tensor joined = at::cat({rms(h.narrow(1, 0, 7), p["mtp.0.h_norm.weight"], m.norm_eps),
                                     rms(emb, p["mtp.0.e_norm.weight"], m.norm_eps)}, -1).matmul(p["mtp.0.proj"].t());
  auto block = std::dynamic_pointer_cast<BlockImpl>(net->named_modules()["mtp.0.block"]);
  ASSERT_TRUE(block);
  const at::Tensor h1 = block->forward(joined, rotary_tables(m.qk_rope_head_dim, m.max_seq_len, m.rope_theta), nullptr);
  const at::Tensor mtp = ce(head(h1), targets.narrow(1, 1, 7));

  EXPECT_NEAR(out.main.item<double>(), main.item<double>(), 1e-13);
  EXPECT_NEAR(out.mtp.item<double>(), mtp.item<double>(), 1e-13);
  EXPECT_NEAR(out.total.item<double>(), main.item<double>() + 0.3 * mtp.item<double>(), 1e-13);
  EXPECT_EQ(out.moe.size(), 2u);  // one MoE layer in the trunk, one in the MTP module
  // Inference (forward) ignores the MTP module and activated counts leave it out.
  EXPECT_TRUE(at::allclose(net->forward(tokens), head(h).to(at::kDouble)));
}

TEST(ParameterCounts, ActivatedCountsOnlyChosenExperts) {
  ModelConfig m = mla_config(0);
  m.n_routed_experts = 4;
  m.n_activated_experts = 1;
  m.n_dense_layers = 1;
  m.moe_intermediate_size = 6;
  Transformer net(m);
  const int64_t expert = 3 * 12 * 6;  // w1, w3, w2 of one expert
  EXPECT_EQ(net->parameter_count() - net->activated_parameter_count(), 3 * expert);  // 1 MoE layer, 3 idle experts
}

}  // namespace
