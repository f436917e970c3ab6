// CUDA quantization kernels. They evaluate the same expressions as the CPU reference
// (fp8_quantize.cpp), so codes and scales are bit-identical: amax is a max (order-free), the scale
// is the same fp8_tile_scale (an IEEE division, nvcc's default -prec-div=true), x * inv is a single
// rounding, and the code is encode_e4m3's function (the header-only encoder itself in the scalar
// kernels and before sm_89, the hardware conversion it specifies on sm_89+: see encode4_e4m3).
// tests/ops/test_fp8_gpu.cpp checks this.
//
// Two paths. The vector path (quant_tile_vec_kernel, one 128x128 input tile per block, 16-byte
// loads, the tile held in registers between the amax reduction and the encode) runs whenever the
// input is 16-byte aligned and C % 8 == 0: DeepSeek-V3's shapes, and what the bandwidth target of
// `shoestring bench fp8` is about. The scalar kernels below handle every other input (a storage
// offset that breaks alignment, C % 8 != 0).
#include <ATen/ATen.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_quantize.h"
#include "ops/fp8_quantize_tile.cuh"

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

using cuda_detail::encode4_e4m3;
using cuda_detail::kTileMinBlocks;
using cuda_detail::kTileThreads;
using cuda_detail::unit_to_float;
using cuda_detail::vector_path_ok;
using cuda_detail::warp_max;

// ---- Scalar path (unaligned input or C % 8 != 0). ----
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
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = c0 + i < C ? load_f(x, r * C + c0 + i) : 0.0f;
  cuda_detail::store_1x128_lane(v, lane, c0, C, codes + r * C, scales + r * KB + kb);
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

// ---- Vector path: one 256-thread block per 128x128 tile of the input, all four tilings. ----
// Used when the input pointer is 16-byte aligned and C % 8 == 0, so every row starts 16-byte aligned
// and an 8-element "unit" (one 16-byte load of bf16, two of float) lies wholly inside or outside
// the matrix. Thread t owns unit column cu = t % 16 (tile columns 8cu..8cu+7) in the 8 tile rows
// 4*rg + i + 64*h (rg = t / 16, i < 4, h < 2): a warp reads two 256-byte row segments per load, and
// all 8 (bf16) or 16 (float) loads of a thread are in flight before the first use. The tile is
// read from global memory once and held in registers until its codes are stored.
enum class Tiling { kRow, kRowT, kBlock, kBlockT };  // 1x128, 1x128 of x^T, 128x128, 128x128 of x^T

// Running max of |x| per element position over units. For bf16 it stays packed (one bf16x2 max per
// two elements): the max of bf16 values is one of them, so converting it afterwards gives exactly
// the float max. Like fmaxf (and the CPU's std::fmax), __hmax2 returns the other operand when one
// is NaN, and the accumulator starts at 0, so NaNs are ignored as in the reference.
template <typename T>
struct AbsMax;
template <>
struct AbsMax<__nv_bfloat16> {
  __nv_bfloat162 m[4];
  __device__ __forceinline__ AbsMax() {
#pragma unroll
    for (int k = 0; k < 4; ++k) m[k] = __floats2bfloat162_rn(0.0f, 0.0f);
  }
  __device__ __forceinline__ void add(const uint4 (&raw)[1]) {
    const std::uint32_t w[4] = {raw[0].x, raw[0].y, raw[0].z, raw[0].w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const std::uint32_t a = w[k] & 0x7FFF7FFFu;  // |x| of both halves
      m[k] = __hmax2(m[k], *reinterpret_cast<const __nv_bfloat162*>(&a));
    }
  }
  __device__ __forceinline__ float at(int e) const {
    return e % 2 ? __high2float(m[e / 2]) : __low2float(m[e / 2]);
  }
  __device__ __forceinline__ float all() const {
    const __nv_bfloat162 p = __hmax2(__hmax2(m[0], m[1]), __hmax2(m[2], m[3]));
    return fmaxf(__low2float(p), __high2float(p));
  }
};
template <>
struct AbsMax<float> {
  float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  __device__ __forceinline__ void add(const uint4 (&raw)[2]) {
    float v[8];
    unit_to_float<float>(raw, v);
#pragma unroll
    for (int e = 0; e < 8; ++e) m[e] = fmaxf(m[e], fabsf(v[e]));
  }
  __device__ __forceinline__ float at(int e) const { return m[e]; }
  __device__ __forceinline__ float all() const {
    float a = m[0];
#pragma unroll
    for (int e = 1; e < 8; ++e) a = fmaxf(a, m[e]);
    return a;
  }
};

template <typename T, Tiling kT>
__global__ void __launch_bounds__(kTileThreads, kTileMinBlocks<T>)
    quant_tile_vec_kernel(const T* __restrict__ x, std::uint8_t* __restrict__ codes, float* __restrict__ scales,
                          int64_t R, int64_t C) {
  constexpr bool kTransposed = kT == Tiling::kRowT || kT == Tiling::kBlockT;
  constexpr int kLoads = sizeof(T) / 2;  // 16-byte loads per 8-element unit
  // kRowT: per-warp column maxima; kBlock*: per-warp maxima. Transposed codes, 32 words per tile row,
  // stored with the XOR swizzle described at the transposed store below.
  __shared__ float red[kT == Tiling::kRowT ? 8 * 128 : 8];
  __shared__ std::uint32_t tcodes[kTransposed ? 128 * 32 : 1];

  const int64_t g = blockIdx.z;  // [G, N, K] weights (kBlock only; G = 1 otherwise)
  x += g * R * C;
  codes += g * R * C;
  const int64_t RB = (R + 127) / 128, KB = (C + 127) / 128;
  scales += g * RB * KB;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 128, c0 = static_cast<int64_t>(blockIdx.x) * 128;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, cu = tid % 16, rg = tid / 16;
  const int64_t col = c0 + cu * 8;
  const bool col_in = col < C;
  // Unit u lies in tile row 4*rg + u%4 + 64*(u/4); rows past R (and units past C) read as zeros,
  // the implicit zero padding.
  const int64_t row0 = r0 + 4 * rg;
  auto unit_row = [&](int u) { return row0 + u % 4 + 64 * (u / 4); };
  auto unit_in = [&](int u) { return col_in && unit_row(u) < R; };
  auto unit_codes = [&](int u) { return codes + row0 * C + col + (u % 4 + 64 * (u / 4)) * C; };

  uint4 raw[8][kLoads];
  {
    const T* xb = x + row0 * C + col;
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const uint4* p = reinterpret_cast<const uint4*>(xb + (u % 4 + 64 * (u / 4)) * C);
#pragma unroll
      for (int l = 0; l < kLoads; ++l) raw[u][l] = unit_in(u) ? __ldg(p + l) : make_uint4(0, 0, 0, 0);
    }
  }

  if constexpr (kT == Tiling::kRow) {
    // A tile row's 128 elements live in the 16 lanes of one half-warp.
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      AbsMax<T> m;
      m.add(raw[u]);
      float amax = m.all();
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const Fp8TileScale s = fp8_tile_scale(amax);
      if (unit_row(u) < R && cu == 0) scales[unit_row(u) * KB + blockIdx.x] = s.scale;
      if (unit_in(u)) {
        float v[8];
        unit_to_float<T>(raw[u], v);
        *reinterpret_cast<uint2*>(unit_codes(u)) =
            make_uint2(encode4_e4m3(v[0] * s.inv, v[1] * s.inv, v[2] * s.inv, v[3] * s.inv),
                       encode4_e4m3(v[4] * s.inv, v[5] * s.inv, v[6] * s.inv, v[7] * s.inv));
      }
    }
    return;
  }

  // Scales of this thread's 8 columns (kRowT) or of the whole block (kBlock, kBlockT).
  float inv[8];
  AbsMax<T> m;
#pragma unroll
  for (int u = 0; u < 8; ++u) m.add(raw[u]);
  if constexpr (kT == Tiling::kRowT) {
    float cmax[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) cmax[e] = fmaxf(m.at(e), __shfl_xor_sync(0xffffffffu, m.at(e), 16));
    if (lane < 16) {
      float4* dst = reinterpret_cast<float4*>(red + warp * 128 + cu * 8);
      dst[0] = make_float4(cmax[0], cmax[1], cmax[2], cmax[3]);
      dst[1] = make_float4(cmax[4], cmax[5], cmax[6], cmax[7]);
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const float4* src = reinterpret_cast<const float4*>(red + w * 128 + cu * 8);
      const float4 a = src[0], b = src[1];
      cmax[0] = fmaxf(cmax[0], a.x), cmax[1] = fmaxf(cmax[1], a.y), cmax[2] = fmaxf(cmax[2], a.z);
      cmax[3] = fmaxf(cmax[3], a.w), cmax[4] = fmaxf(cmax[4], b.x), cmax[5] = fmaxf(cmax[5], b.y);
      cmax[6] = fmaxf(cmax[6], b.z), cmax[7] = fmaxf(cmax[7], b.w);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const Fp8TileScale s = fp8_tile_scale(cmax[e]);
      inv[e] = s.inv;
      if (rg == 0 && col + e < C) scales[(col + e) * RB + blockIdx.y] = s.scale;  // scale [C, ceil(R/128)]
    }
  } else {
    float amax = warp_max(m.all());
    if (lane == 0) red[warp] = amax;
    __syncthreads();
    amax = red[0];
#pragma unroll
    for (int w = 1; w < 8; ++w) amax = fmaxf(amax, red[w]);
    const Fp8TileScale s = fp8_tile_scale(amax);
    if (tid == 0) scales[kTransposed ? blockIdx.x * RB + blockIdx.y : blockIdx.y * KB + blockIdx.x] = s.scale;
#pragma unroll
    for (int e = 0; e < 8; ++e) inv[e] = s.inv;
  }

  if constexpr (kT == Tiling::kBlock) {
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      float v[8];
      unit_to_float<T>(raw[u], v);
      if (unit_in(u))
        *reinterpret_cast<uint2*>(unit_codes(u)) =
            make_uint2(encode4_e4m3(v[0] * inv[0], v[1] * inv[1], v[2] * inv[2], v[3] * inv[3]),
                       encode4_e4m3(v[4] * inv[4], v[5] * inv[5], v[6] * inv[6], v[7] * inv[7]));
    }
  } else {
    // Transpose through shared memory. tcodes row tr = tile column, word w = tile rows 4w..4w+3
    // (this thread's units u = 4h..4h+3 fill word rg + 16h of rows 8cu..8cu+7). Stored at word
    // w ^ 4*(cu%8) ^ 2*(cu/8): within a warp cu takes 16 values and rg two (differing in bit 0), so
    // the 32 stores hit 32 distinct banks; the XOR with 4*(cu%8) moves whole 16-byte chunks and the
    // one with 2*(cu/8) swaps their halves, which the reader undoes.
    const int swz = 4 * (cu % 8) ^ 2 * (cu / 8);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float v[4][8];
#pragma unroll
      for (int i = 0; i < 4; ++i) unit_to_float<T>(raw[4 * h + i], v[i]);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        tcodes[(cu * 8 + e) * 32 + ((rg + 16 * h) ^ swz)] =
            encode4_e4m3(v[0][e] * inv[e], v[1][e] * inv[e], v[2][e] * inv[e], v[3][e] * inv[e]);
    }
    __syncthreads();
    // Output row c0 + tr (input column) gets tile rows 16q..16q+15 from chunk q; 8 lanes write one
    // 128-byte row segment.
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int idx = tid + kTileThreads * k, tr = idx / 8, q = idx % 8, wcu = tr / 8;
      uint4 got = *reinterpret_cast<const uint4*>(tcodes + tr * 32 + 4 * (q ^ (wcu % 8)));
      if (wcu / 8) got = make_uint4(got.z, got.w, got.x, got.y);
      const int64_t c = c0 + tr, rbase = r0 + 16 * q;
      if (c >= C || rbase >= R) continue;
      std::uint8_t* out = codes + c * R + rbase;
      if (R % 16 == 0) {
        *reinterpret_cast<uint4*>(out) = got;
      } else {
        const std::uint32_t w[4] = {got.x, got.y, got.z, got.w};
#pragma unroll
        for (int b = 0; b < 16; ++b)
          if (rbase + b < R) out[b] = static_cast<std::uint8_t>(w[b / 4] >> (8 * (b % 4)));
      }
    }
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

template <Tiling kT>
void launch_tile_vec(const at::Tensor& x, const Fp8Tensor& q, int64_t G, int64_t R, int64_t C) {
  const dim3 grid(static_cast<unsigned>(ceil_div(C, kFp8Block)), static_cast<unsigned>(ceil_div(R, kFp8Block)),
                  static_cast<unsigned>(G));
  dispatch(x, [&](auto* p) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(p)>>;
    quant_tile_vec_kernel<T, kT><<<grid, kTileThreads, 0, current_stream()>>>(p, codes_ptr(q),
                                                                                q.scale.data_ptr<float>(), R, C);
  });
}

}  // namespace

Fp8Tensor quantize_1x128_cuda(const at::Tensor& x_in) {
  const at::Tensor x = prepare_input(x_in, "quantize_1x128_cuda", 2, 2);
  const int64_t R = x.size(0), C = x.size(1), KB = ceil_div(C, kFp8Block);
  Fp8Tensor q = alloc(x, {R, C}, {R, KB}, 1);
  if (R * C == 0) return q;
  if (vector_path_ok(x)) {
    launch_tile_vec<Tiling::kRow>(x, q, 1, R, C);
    check_cuda(cudaGetLastError(), "quantize_1x128_cuda launch");
    return q;
  }
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
  if (vector_path_ok(x)) {
    launch_tile_vec<Tiling::kRowT>(x, q, 1, R, C);
    check_cuda(cudaGetLastError(), "quantize_1x128_transposed_cuda launch");
    return q;
  }
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
  if (vector_path_ok(x)) {
    if (transpose) launch_tile_vec<Tiling::kBlockT>(x, q, G, R, C);
    else launch_tile_vec<Tiling::kBlock>(x, q, G, R, C);
    check_cuda(cudaGetLastError(), "quantize_128x128_cuda launch");
    return q;
  }
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
