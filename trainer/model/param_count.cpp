#include "trainer/model/param_count.h"

namespace shoestring::model {

int64_t attention_params(const ModelConfig& m) {
  const int64_t d = m.d_model, h = m.n_heads;
  if (m.attention == "gqa") {
    const int64_t hd = d / h;
    return 2 * h * hd * d + 2 * m.n_kv_heads * hd * d;  // wq, wo, wk, wv
  }
  const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim, c = m.kv_lora_rank;
  const int64_t q = m.q_lora_rank == 0 ? h * (dn + dr) * d : m.q_lora_rank * d + m.q_lora_rank + h * (dn + dr) * m.q_lora_rank;
  return q + (c + dr) * d + c + h * (dn + dv) * c + d * h * dv;
}

// (total, activated) of one block's feed-forward.
std::pair<int64_t, int64_t> ffn_params(const ModelConfig& m, bool moe) {
  const int64_t d = m.d_model;
  if (!moe) return {3 * d * m.intermediate_size, 3 * d * m.intermediate_size};
  const int64_t expert = 3 * d * m.moe_intermediate_size;
  const int64_t common = m.n_routed_experts * d + m.n_shared_experts * expert;  // router + shared
  return {common + m.n_routed_experts * expert, common + m.n_activated_experts * expert};
}

ParamCount count_parameters(const ModelConfig& m) {
  const int64_t d = m.d_model;
  ParamCount c;
  c.embedding = m.vocab_size * d * (m.tie_embeddings ? 1 : 2);
  c.total = c.activated = c.embedding + d;  // + final norm
  for (int64_t layer = 0; layer < m.n_layers; ++layer) {
    const bool moe = m.n_routed_experts > 0 && layer >= m.n_dense_layers;
    const auto [ffn_total, ffn_active] = ffn_params(m, moe);
    c.total += 2 * d + attention_params(m) + ffn_total;
    c.activated += 2 * d + attention_params(m) + ffn_active;
  }
  // Each MTP module: two norms, the [2d -> d] projection and one block (MoE when the model has experts).
  const int64_t mtp_block = 2 * d + attention_params(m) + ffn_params(m, m.n_routed_experts > 0).first;
  c.total += m.mtp_depth * (2 * d + 2 * d * d + mtp_block);
  return c;
}

}  // namespace shoestring::model
