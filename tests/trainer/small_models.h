#pragma once
// Small model configs shared by the model tests: large enough init that every path carries signal
// in a float64 gradient check, small enough that the checks take milliseconds.
#include "trainer/config.h"

namespace shoestring::testing {

inline ModelConfig small_gqa_model() {
  ModelConfig m;
  m.vocab_size = 11;
  m.d_model = 8;
  m.n_layers = 2;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.intermediate_size = 12;
  m.max_seq_len = 16;
  m.init_std = 0.3;
  return m;
}

inline ModelConfig small_mla_model(int64_t q_lora_rank = 0) {
  ModelConfig m;
  m.attention = "mla";
  m.d_model = 12;
  m.n_layers = 2;
  m.n_heads = 3;
  m.q_lora_rank = q_lora_rank;
  m.kv_lora_rank = 5;
  m.qk_nope_head_dim = 4;
  m.qk_rope_head_dim = 2;
  m.v_head_dim = 3;
  m.max_seq_len = 16;
  m.init_std = 0.4;
  return m;
}

}  // namespace shoestring::testing
