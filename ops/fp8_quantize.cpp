// CPU reference quantizers: plain loops over tiles, written to be obviously right; each element goes
// through encode_e4m3_scaled, the vectorisable batch form of encode_e4m3 (equal to it on every
// float). The CUDA kernels (fp8_quantize.cu) must reproduce these bit for bit
// (tests/ops/test_fp8_gpu.cpp).
#include "ops/fp8_quantize.h"
#include "ops/cuda_runtime.h"
#include "ops/shape_str.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace shoestring::ops {

namespace {

at::Tensor as_float_cpu(const at::Tensor& x, const char* what, int64_t min_dim, int64_t max_dim) {
  if (!x.defined()) throw std::invalid_argument(std::string(what) + ": tensor is undefined");
  if (x.dim() < min_dim || x.dim() > max_dim)
    throw std::invalid_argument(std::string(what) + ": expected a " + std::to_string(min_dim) +
                                (min_dim == max_dim ? "" : "-" + std::to_string(max_dim)) +
                                "-D tensor, got shape " + shape_str(x));
  if (!at::isFloatingType(x.scalar_type()) || x.element_size() == 1)
    throw std::invalid_argument(std::string(what) + ": expected a float/bf16/half tensor, got " +
                                std::string(c10::toString(x.scalar_type())));
  return x.to(at::kCPU).to(at::kFloat).contiguous();
}

// Quantizes rows x cols of a row-major float matrix with tiles of tile_rows x 128.
// src: element (r, c) at src[r * rs + c * cs] (strides let the transposed variant read x^T in place).
void quantize_tiles(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t cols,
                    int64_t tile_rows, std::uint8_t* codes, float* scales) {
  const int64_t kb_count = ceil_div(cols, kFp8Block);
  float strip[kFp8Block];  // one tile row, gathered when src is strided
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t r1 = std::min(rows, r0 + tile_rows);
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const int64_t c0 = kb * kFp8Block, w = std::min(cols, c0 + kFp8Block) - c0;
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r) amax = std::max(amax, abs_max(src + r * rs + c0 * cs, cs, w));
      const Fp8TileScale s = fp8_tile_scale(amax);
      scales[(r0 / tile_rows) * kb_count + kb] = s.scale;
      for (int64_t r = r0; r < r1; ++r) {
        const float* row = src + r * rs + c0 * cs;
        if (cs != 1) {
          for (int64_t j = 0; j < w; ++j) strip[j] = row[j * cs];
          row = strip;
        }
        encode_e4m3_scaled(row, s.inv, codes + r * cols + c0, w);
      }
    }
  }
}

Fp8Tensor quantize_2d(const at::Tensor& xf, bool transpose, int64_t tile_rows) {
  const int64_t R0 = xf.size(0), C0 = xf.size(1);
  const int64_t rows = transpose ? C0 : R0, cols = transpose ? R0 : C0;
  Fp8Tensor q;
  q.block_rows = tile_rows;
  q.data = at::empty({rows, cols}, at::TensorOptions().dtype(at::kFloat8_e4m3fn));
  q.scale = at::empty({ceil_div(rows, tile_rows), ceil_div(cols, kFp8Block)}, at::kFloat);
  quantize_tiles(xf.data_ptr<float>(), transpose ? 1 : C0, transpose ? C0 : 1, rows, cols, tile_rows,
                 static_cast<std::uint8_t*>(q.data.data_ptr()), q.scale.data_ptr<float>());
  return q;
}

}  // namespace

Fp8Tensor quantize_1x128(const at::Tensor& x) {
  return quantize_2d(as_float_cpu(x, "quantize_1x128", 2, 2), /*transpose=*/false, 1);
}

Fp8Tensor quantize_1x128_transposed(const at::Tensor& x) {
  return quantize_2d(as_float_cpu(x, "quantize_1x128_transposed", 2, 2), /*transpose=*/true, 1);
}

Fp8Tensor quantize_128x128(const at::Tensor& w) {
  const at::Tensor wf = as_float_cpu(w, "quantize_128x128", 2, 3);
  if (wf.dim() == 2) return quantize_2d(wf, /*transpose=*/false, kFp8Block);
  // [G, N, K]: each group's weight is blocked on its own (DeepGEMM's grouped layout).
  const int64_t G = wf.size(0), N = wf.size(1), K = wf.size(2);
  Fp8Tensor q;
  q.block_rows = kFp8Block;
  q.data = at::empty({G, N, K}, at::TensorOptions().dtype(at::kFloat8_e4m3fn));
  q.scale = at::empty({G, ceil_div(N, kFp8Block), ceil_div(K, kFp8Block)}, at::kFloat);
  const int64_t scale_stride = q.scale.size(1) * q.scale.size(2);
  for (int64_t g = 0; g < G; ++g)
    quantize_tiles(wf.data_ptr<float>() + g * N * K, K, 1, N, K, kFp8Block,
                   static_cast<std::uint8_t*>(q.data.data_ptr()) + g * N * K,
                   q.scale.data_ptr<float>() + g * scale_stride);
  return q;
}

Fp8Tensor quantize_128x128_transposed(const at::Tensor& w) {
  return quantize_2d(as_float_cpu(w, "quantize_128x128_transposed", 2, 2), /*transpose=*/true, kFp8Block);
}

void check_fp8_tensor(const Fp8Tensor& q, const char* what) {
  const std::string w(what);
  if (!q.data.defined() || !q.scale.defined()) throw std::invalid_argument(w + ": data or scale is undefined");
  if (q.data.scalar_type() != at::kFloat8_e4m3fn)
    throw std::invalid_argument(w + ": data must be float8_e4m3fn, got " +
                                std::string(c10::toString(q.data.scalar_type())));
  if (q.scale.scalar_type() != at::kFloat)
    throw std::invalid_argument(w + ": scale must be float32, got " +
                                std::string(c10::toString(q.scale.scalar_type())));
  if (!q.data.is_contiguous() || !q.scale.is_contiguous())
    throw std::invalid_argument(w + ": data and scale must be contiguous");
  if (q.block_rows != 1 && q.block_rows != kFp8Block)
    throw std::invalid_argument(w + ": block_rows must be 1 or 128, got " + std::to_string(q.block_rows));
  if (q.data.dim() != 2 && q.data.dim() != 3)
    throw std::invalid_argument(w + ": data must be 2-D or 3-D, got " + shape_str(q.data));
  std::vector<int64_t> want(q.data.sizes().begin(), q.data.sizes().end());
  want[want.size() - 2] = ceil_div(q.rows(), q.block_rows);
  want[want.size() - 1] = ceil_div(q.cols(), kFp8Block);
  if (q.scale.sizes() != at::IntArrayRef(want))
    throw std::invalid_argument(w + ": scale shape " + shape_str(q.scale) + " does not match data shape " +
                                shape_str(q.data) + " with " + std::to_string(q.block_rows) + "x128 tiles");
}

Fp8Tensor quantize_swiglu_1x128(const at::Tensor& h1, const at::Tensor& h3) {
  if (h1.dim() != 2 || h1.sizes() != h3.sizes() || h1.scalar_type() != h3.scalar_type())
    throw std::invalid_argument("quantize_swiglu_1x128: h1 and h3 must be 2-D of one shape and dtype, got " +
                                shape_str(h1) + " " + std::string(c10::toString(h1.scalar_type())) + " and " +
                                shape_str(h3) + " " + std::string(c10::toString(h3.scalar_type())));
  return quantize_1x128(at::silu(h1.to(at::kCPU)) * h3.to(at::kCPU));
}

at::Tensor dequantize(const Fp8Tensor& q) {
  check_fp8_tensor(q, "dequantize");
  const at::Tensor data = q.data.to(at::kCPU), scale = q.scale.to(at::kCPU);
  const int64_t G = data.dim() == 3 ? data.size(0) : 1;
  const int64_t R = q.rows(), C = q.cols(), KB = scale.size(-1), RB = scale.size(-2);
  at::Tensor out = at::empty(data.sizes(), at::kFloat);
  const auto* codes = static_cast<const std::uint8_t*>(data.data_ptr());
  const float* s = scale.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c)
        o[(g * R + r) * C + c] =
            decode_e4m3(codes[(g * R + r) * C + c]) * s[(g * RB + r / q.block_rows) * KB + c / kFp8Block];
  return out;
}

at::Tensor decode_codes(const at::Tensor& data) {
  if (!data.is_cpu()) return data.view(at::kFloat8_e4m3fn).to(at::kFloat);
  const at::Tensor codes = data.contiguous();
  at::Tensor out = at::empty(codes.sizes(), at::kFloat);
  const auto* c = static_cast<const std::uint8_t*>(codes.data_ptr());
  const float* table = e4m3_decode_table();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < codes.numel(); ++i) o[i] = table[c[i]];
  return out;
}

#ifndef SHOESTRING_WITH_CUDA
Fp8Tensor quantize_1x128_cuda(const at::Tensor&) { built_without_cuda("quantize_1x128_cuda"); }
Fp8Tensor quantize_1x128_transposed_cuda(const at::Tensor&) { built_without_cuda("quantize_1x128_transposed_cuda"); }
Fp8Tensor quantize_128x128_cuda(const at::Tensor&) { built_without_cuda("quantize_128x128_cuda"); }
Fp8Tensor quantize_128x128_transposed_cuda(const at::Tensor&) { built_without_cuda("quantize_128x128_transposed_cuda"); }
Fp8Tensor quantize_swiglu_1x128_cuda(const at::Tensor&, const at::Tensor&) { built_without_cuda("quantize_swiglu_1x128_cuda"); }
#endif

}  // namespace shoestring::ops
