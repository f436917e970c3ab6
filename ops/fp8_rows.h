#pragma once
// FP8 rows on the wire: one byte row per tensor row, holding the row's E4M3 codes and then its fp32
// 1x128 tile scales (quantize_1x128, ops/fp8_quantize.h). The expert-parallel dispatch sends token
// rows this way (DeepSeek-V3 §3.3.3, "Low-Precision Communication": activations are quantized to
// FP8 before the dispatch); one self-contained byte row keeps codes and scales in one exchange
// with the same per-rank row counts as the unquantized rows.
//
// A row of width d takes d + 4 * ceil(d/128) bytes: 1.03 bytes per element for d a multiple of
// 128, against 2 (bf16), 4 (fp32) or 8 (fp64). A ragged last tile is implicitly zero-padded, as in
// the quantizer: it is not sent, and its scale covers the remaining elements only.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "ops/fp8_quantize.h"

namespace shoestring::ops {

inline int64_t fp8_row_bytes(int64_t d) { return d + 4 * ceil_div(d, kFp8Block); }

// rows [n, d] (float64/float32/bf16/half, CPU or CUDA) -> uint8 [n, fp8_row_bytes(d)] on the same
// device: per row, the quantize_1x128 codes, then its ceil(d/128) scales as fp32 bytes (native
// byte order: sender and receiver are one machine type). CUDA input uses quantize_1x128_cuda,
// bit-identical to the CPU reference. Not differentiable (rows is read detached).
at::Tensor pack_fp8_rows(const at::Tensor& rows);

// packed [n, fp8_row_bytes(d)] uint8 -> [n, d] of `dtype`: decode(code) * scale in fp32 (exactly
// ops::dequantize's product), then cast to `dtype`. Runs on packed's device with ATen ops.
at::Tensor unpack_fp8_rows(const at::Tensor& packed, int64_t d, at::ScalarType dtype);

}  // namespace shoestring::ops
