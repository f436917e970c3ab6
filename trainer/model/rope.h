#pragma once
#include <ATen/core/Tensor.h>

namespace shoestring::model {

// Rotary position embedding (Su et al. 2021, RoFormer eq. 34) on interleaved pairs
// (x[2i], x[2i+1]) as in DeepSeek-V3's and Llama's reference code: pair i at position p is
// rotated by the angle p * theta^(-2i/head_dim).
struct RotaryTables {
  at::Tensor cos;  // [max_seq_len, head_dim / 2]
  at::Tensor sin;
};

RotaryTables rotary_tables(int64_t head_dim, int64_t max_seq_len, double theta);

// x: [batch, heads, seq, head_dim]; uses the first `seq` rows of the tables.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

}  // namespace shoestring::model
