// CUDA quantization kernels. They evaluate the same expressions as the CPU reference
// (fp8_quantize.cpp) with the same header-only encoder (fp8_format.h), so codes and scales are
// bit-identical: amax is a max (order-free), the scale is an IEEE division (nvcc's default
// -prec-div=true), and x * inv is a single rounding. tests/ops/test_fp8_gpu.cpp checks this.
#include <ATen/ATen.h>
#include <cuda_bf16.h>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_quantize.h"

namespace shoestring::ops {

namespace {

using cuda_detail::check_cuda;
using cuda_detail::current_stream;

template <typename T>
__device__ __forceinline__ float load_f(const T* p, int64_t i);
template <>
__device__ __forceinline__ float load_f<float>(const float* p, int64_t i) { return p[i]; }
template <>
__device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// 1x128 along rows: one warp per tile, lane l owns columns c0 + 4l .. 4l+3 (one 32-bit store of codes).
template <typename T>
__global__ void quant_1x128_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ codes,
                                   float* __restrict__ scales, int64_t R, int64_t C, int64_t KB) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= R * KB) return;
  const int64_t r = warp / KB, kb = warp % KB;
  const int64_t c0 = kb * 128 + lane * 4;
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = c0 + i < C ? load_f(x, r * C + c0 + i) : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = warp_max(amax);
  const Fp8TileScale s = fp8_tile_scale(amax);
  if (lane == 0) scales[r * KB + kb] = s.scale;
  std::uint8_t q[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) q[i] = encode_e4m3(v[i] * s.inv);
  std::uint8_t* out = codes + r * C + c0;
  if (c0 + 4 <= C && (C % 4) == 0) {
    *reinterpret_cast<std::uint32_t*>(out) =
        q[0] | (q[1] << 8) | (q[2] << 16) | (static_cast<std::uint32_t>(q[3]) << 24);
  } else {
    for (int i = 0; i < 4; ++i)
      if (c0 + i < C) out[i] = q[i];
  }
}

// 1x128 of x^T: output row c (input column), groups of 128 input rows. A block stages a 128 x 32
// input tile in shared memory (coalesced reads along the row), then each warp quantizes 4 output rows.
template <typename T>
__global__ void quant_1x128_t_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ codes,
                                     float* __restrict__ scales, int64_t R, int64_t C) {
  __shared__ float tile[128][33];
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 128, c0 = static_cast<int64_t>(blockIdx.x) * 32;
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;  // 8 warps
  for (int rr = ty; rr < 128; rr += 8) {
    const int64_t r = r0 + rr, c = c0 + tx;
    tile[rr][tx] = (r < R && c < C) ? load_f(x, r * C + c) : 0.0f;
  }
  __syncthreads();
  const int64_t RB = (R + 127) / 128;  // groups per output row
  for (int cc = ty; cc < 32; cc += 8) {
    const int64_t c = c0 + cc;
    if (c >= C) break;  // uniform per warp
    float v[4], amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[i] = tile[tx * 4 + i][cc];
      amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = warp_max(amax);
    const Fp8TileScale s = fp8_tile_scale(amax);
    if (tx == 0) scales[c * RB + blockIdx.y] = s.scale;
    std::uint8_t* out = codes + c * R;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t r = r0 + tx * 4 + i;
      if (r < R) out[r] = encode_e4m3(v[i] * s.inv);
    }
  }
}

// 128x128 blocks (optionally writing the transposed codes). One 256-thread block per weight block:
// pass 1 reduces amax over the block, pass 2 re-reads (from L2) and encodes. Batched over gridDim.z.
template <typename T>
__global__ void quant_128x128_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ codes,
                                     float* __restrict__ scales, int64_t R, int64_t C, bool transpose) {
  __shared__ float red[8];
  __shared__ std::uint8_t tcodes[128][129];  // used only when transposing
  const int64_t g = blockIdx.z;
  x += g * R * C;
  codes += g * R * C;
  const int64_t RB = (R + 127) / 128, KB = (C + 127) / 128;
  scales += g * RB * KB;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 128, c0 = static_cast<int64_t>(blockIdx.x) * 128;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float amax = 0.0f;
  for (int i = tid; i < 128 * 128; i += 256) {
    const int64_t r = r0 + i / 128, c = c0 + i % 128;
    if (r < R && c < C) amax = fmaxf(amax, fabsf(load_f(x, r * C + c)));
  }
  amax = warp_max(amax);
  if (lane == 0) red[warp] = amax;
  __syncthreads();
  amax = red[0];
  for (int w = 1; w < 8; ++w) amax = fmaxf(amax, red[w]);
  const Fp8TileScale s = fp8_tile_scale(amax);
  if (tid == 0) scales[transpose ? blockIdx.x * RB + blockIdx.y : blockIdx.y * KB + blockIdx.x] = s.scale;
  for (int i = tid; i < 128 * 128; i += 256) {
    const int rr = i / 128, cc = i % 128;
    const int64_t r = r0 + rr, c = c0 + cc;
    if (r < R && c < C) {
      const std::uint8_t q = encode_e4m3(load_f(x, r * C + c) * s.inv);
      if (transpose) tcodes[cc][rr] = q;
      else codes[r * C + c] = q;
    }
  }
  if (!transpose) return;
  __syncthreads();
  for (int i = tid; i < 128 * 128; i += 256) {  // output row c0+cc holds input column cc
    const int cc = i / 128, rr = i % 128;
    const int64_t r = r0 + rr, c = c0 + cc;
    if (r < R && c < C) codes[c * R + r] = tcodes[cc][rr];
  }
}

at::Tensor prepare_input(const at::Tensor& x, const char* what, int64_t min_dim, int64_t max_dim) {
  cuda_detail::require_cuda(x, what, "input");
  if (x.dim() < min_dim || x.dim() > max_dim)
    throw std::invalid_argument(std::string(what) + ": expected " + std::to_string(min_dim) + "-" +
                                std::to_string(max_dim) + " dims, got " + std::to_string(x.dim()));
  if (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) return x.contiguous();
  if (at::isFloatingType(x.scalar_type()) && x.element_size() > 1) return x.to(at::kFloat).contiguous();
  throw std::invalid_argument(std::string(what) + ": expected a float/bf16/half tensor, got " +
                              std::string(c10::toString(x.scalar_type())));
}

Fp8Tensor alloc(const at::Tensor& like, std::vector<int64_t> data_shape, std::vector<int64_t> scale_shape,
                int64_t block_rows) {
  Fp8Tensor q;
  q.block_rows = block_rows;
  q.data = at::empty(data_shape, like.options().dtype(at::kFloat8_e4m3fn));
  q.scale = at::empty(scale_shape, like.options().dtype(at::kFloat));
  return q;
}

template <typename F>
void dispatch(const at::Tensor& x, F&& f) {
  if (x.scalar_type() == at::kBFloat16) f(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr()));
  else f(x.data_ptr<float>());
}

std::uint8_t* codes_ptr(const Fp8Tensor& q) { return static_cast<std::uint8_t*>(q.data.data_ptr()); }

}  // namespace

Fp8Tensor quantize_1x128_cuda(const at::Tensor& x_in) {
  const at::Tensor x = prepare_input(x_in, "quantize_1x128_cuda", 2, 2);
  const int64_t R = x.size(0), C = x.size(1), KB = ceil_div(C, kFp8Block);
  Fp8Tensor q = alloc(x, {R, C}, {R, KB}, 1);
  if (R * C == 0) return q;
  const int64_t warps = R * KB;
  const int64_t blocks = ceil_div(warps * 32, 256);
  dispatch(x, [&](auto* p) {
    quant_1x128_kernel<<<static_cast<unsigned>(blocks), 256, 0, current_stream()>>>(p, codes_ptr(q),
                                                                                    q.scale.data_ptr<float>(), R, C, KB);
  });
  check_cuda(cudaGetLastError(), "quantize_1x128_cuda launch");
  return q;
}

Fp8Tensor quantize_1x128_transposed_cuda(const at::Tensor& x_in) {
  const at::Tensor x = prepare_input(x_in, "quantize_1x128_transposed_cuda", 2, 2);
  const int64_t R = x.size(0), C = x.size(1);
  Fp8Tensor q = alloc(x, {C, R}, {C, ceil_div(R, kFp8Block)}, 1);
  if (R * C == 0) return q;
  const dim3 grid(static_cast<unsigned>(ceil_div(C, 32)), static_cast<unsigned>(ceil_div(R, 128)));
  dispatch(x, [&](auto* p) {
    quant_1x128_t_kernel<<<grid, 256, 0, current_stream()>>>(p, codes_ptr(q), q.scale.data_ptr<float>(), R, C);
  });
  check_cuda(cudaGetLastError(), "quantize_1x128_transposed_cuda launch");
  return q;
}

namespace {
Fp8Tensor quantize_blocks_cuda(const at::Tensor& x, bool transpose) {
  const bool grouped = x.dim() == 3;
  const int64_t G = grouped ? x.size(0) : 1, R = x.size(-2), C = x.size(-1);
  const int64_t RB = ceil_div(R, kFp8Block), KB = ceil_div(C, kFp8Block);
  Fp8Tensor q = grouped ? alloc(x, {G, R, C}, {G, RB, KB}, kFp8Block)
                        : (transpose ? alloc(x, {C, R}, {KB, RB}, kFp8Block) : alloc(x, {R, C}, {RB, KB}, kFp8Block));
  if (G * R * C == 0) return q;
  const dim3 grid(static_cast<unsigned>(KB), static_cast<unsigned>(RB), static_cast<unsigned>(G));
  dispatch(x, [&](auto* p) {
    quant_128x128_kernel<<<grid, 256, 0, current_stream()>>>(p, codes_ptr(q), q.scale.data_ptr<float>(), R, C,
                                                             transpose);
  });
  check_cuda(cudaGetLastError(), "quantize_128x128_cuda launch");
  return q;
}
}  // namespace

Fp8Tensor quantize_128x128_cuda(const at::Tensor& w) {
  return quantize_blocks_cuda(prepare_input(w, "quantize_128x128_cuda", 2, 3), false);
}

Fp8Tensor quantize_128x128_transposed_cuda(const at::Tensor& w) {
  return quantize_blocks_cuda(prepare_input(w, "quantize_128x128_transposed_cuda", 2, 2), true);
}

}  // namespace shoestring::ops
