#include "trainer/model/param_count.h"

#include <algorithm>
#include <stdexcept>

namespace shoestring::model {

namespace {

// Counts of absurd configs (a typo's extra zeros) would wrap around int64 and print negative: say so.
[[noreturn]] void too_large() {
  throw std::overflow_error("the model's parameter count exceeds 2^63 (shrink model.d_model, model.n_layers, "
                            "model.vocab_size, the feed-forward or the experts)");
}
int64_t mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) too_large();
  return r;
}
int64_t add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) too_large();
  return r;
}
int64_t mul(int64_t a, int64_t b, int64_t c) { return mul(mul(a, b), c); }

}  // namespace

int64_t attention_params(const ModelConfig& m) {
  const int64_t d = m.d_model, h = m.n_heads;
  if (m.attention == "gqa") {
    const int64_t hd = d / h;
    return add(mul(mul(2, h), hd, d), mul(mul(2, m.n_kv_heads), hd, d));  // wq, wo, wk, wv
  }
  const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim, c = m.kv_lora_rank;
  const int64_t qk = add(dn, dr);
  const int64_t q = m.q_lora_rank == 0 ? mul(h, qk, d)
                                       : add(add(mul(m.q_lora_rank, d), m.q_lora_rank), mul(h, qk, m.q_lora_rank));
  return add(add(add(q, mul(add(c, dr), d)), c), add(mul(h, add(dn, dv), c), mul(d, h, dv)));
}

// (total, activated) of one block's feed-forward.
std::pair<int64_t, int64_t> ffn_params(const ModelConfig& m, bool moe) {
  const int64_t d = m.d_model;
  if (!moe) return {mul(3, d, m.intermediate_size), mul(3, d, m.intermediate_size)};
  const int64_t expert = mul(3, d, m.moe_intermediate_size);
  const int64_t common = add(mul(m.n_routed_experts, d), mul(m.n_shared_experts, expert));  // router + shared
  return {add(common, mul(m.n_routed_experts, expert)), add(common, mul(m.n_activated_experts, expert))};
}

ParamCount count_parameters(const ModelConfig& m) {
  const int64_t d = m.d_model;
  ParamCount c;
  c.embedding = mul(m.vocab_size, d, m.tie_embeddings ? 1 : 2);
  c.total = c.activated = add(c.embedding, d);  // + final norm
  // Closed form over the layers rather than a loop: n_layers may be anything a config says.
  const int64_t n_dense = m.n_routed_experts > 0 ? std::min(m.n_dense_layers, m.n_layers) : m.n_layers;
  const int64_t block = add(mul(2, d), attention_params(m));
  for (const bool moe : {false, true}) {
    const int64_t n = moe ? m.n_layers - n_dense : n_dense;
    if (n == 0) continue;
    const auto [ffn_total, ffn_active] = ffn_params(m, moe);
    c.total = add(c.total, mul(n, add(block, ffn_total)));
    c.activated = add(c.activated, mul(n, add(block, ffn_active)));
  }
  if (m.mtp_depth == 0) return c;
  // Each MTP module: two norms, the [2d -> d] projection and one block (MoE when the model has experts).
  const int64_t mtp_block = add(block, ffn_params(m, m.n_routed_experts > 0).first);
  c.total = add(c.total, mul(m.mtp_depth, add(add(mul(2, d), mul(2, d, d)), mtp_block)));
  return c;
}

}  // namespace shoestring::model
