#pragma once
// Device pieces shared by the quantization kernels of fp8_quantize.cu and fp8_quantize_swiglu.cu:
// the scalar 1x128 layout (one warp per 1x128 tile, lane l holding the tile's elements 4l .. 4l+3)
// and the 8-element units of the vector tile kernels (fp8_quantize.cu, "Vector tile kernels").
#include <ATen/ATen.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "ops/fp8_quantize.h"

namespace shoestring::ops::cuda_detail {

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The lane's four values v (zeros past the row's end) -> the tile's amax over the warp, its scale
// written by lane 0 to *scale, and the lane's codes to row_codes[c0 ..] (c0: the lane's first
// column; C: the row length; one 32-bit store when whole and aligned).
__device__ __forceinline__ void store_1x128_lane(const float (&v)[4], int lane, int64_t c0, int64_t C,
                                                 std::uint8_t* row_codes, float* scale) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fabsf(v[i]));
  amax = warp_max(amax);
  const Fp8TileScale s = fp8_tile_scale(amax);
  if (lane == 0) *scale = s.scale;
  std::uint8_t q[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) q[i] = encode_e4m3(v[i] * s.inv);
  std::uint8_t* out = row_codes + c0;
  if (c0 + 4 <= C && (C % 4) == 0) {
    *reinterpret_cast<std::uint32_t*>(out) =
        q[0] | (q[1] << 8) | (q[2] << 16) | (static_cast<std::uint32_t>(q[3]) << 24);
  } else {
    for (int i = 0; i < 4; ++i)
      if (c0 + i < C) out[i] = q[i];
  }
}

constexpr int kTileThreads = 256;

// Whether x (rows of its last dimension) can take the vector tile kernels: 16-byte aligned, rows of
// a multiple of 8 elements, and row tiles that fit gridDim.y (at most 65535); taller inputs take the
// scalar path, whose 1x128 kernel has a 1-D grid.
inline bool vector_path_ok(const at::Tensor& x) {
  return reinterpret_cast<std::uintptr_t>(x.data_ptr()) % 16 == 0 && x.size(-1) % 8 == 0 &&
         ceil_div(x.size(-2), kFp8Block) <= 65535;
}

template <typename T>
__device__ __forceinline__ void unit_to_float(const uint4 (&raw)[sizeof(T) / 2], float (&f)[8]);
template <>
__device__ __forceinline__ void unit_to_float<__nv_bfloat16>(const uint4 (&raw)[1], float (&f)[8]) {
  const std::uint32_t w[4] = {raw[0].x, raw[0].y, raw[0].z, raw[0].w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // bf16 -> float is exact: the bf16 bits are the float's top half
    f[2 * k] = __uint_as_float(w[k] << 16);
    f[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
  }
}
template <>
__device__ __forceinline__ void unit_to_float<float>(const uint4 (&raw)[2], float (&f)[8]) {
  const std::uint32_t w[8] = {raw[0].x, raw[0].y, raw[0].z, raw[0].w, raw[1].x, raw[1].y, raw[1].z, raw[1].w};
#pragma unroll
  for (int k = 0; k < 8; ++k) f[k] = __uint_as_float(w[k]);
}

// encode_e4m3 of four values, a in the lowest byte. On sm_89+ this is the hardware conversion
// cvt.rn.satfinite.e4m3x2.f32 (two values per instruction): the integer encoder is some 60 PTX
// instructions per element, mostly on the half-rate integer pipe, which would make these kernels
// compute-bound at well under copy speed (an H100 issues about 38 instructions per element at 80%
// of copy bandwidth, 19 of them integer).
// The two are the same function: the instruction's specification is what encode_e4m3 implements
// (RNE on the whole exponent|mantissa field, subnormals, |x| above 448 and inf -> +-448, NaN ->
// sign|0x7F, underflow -> signed zero), case for case as CUDA's own software version of it
// (__nv_cvt_double_to_fp8 in cuda_fp8.hpp). tests/ops/test_fp8_gpu.cpp checks every rounding tie
// and near-tie of the encoder's input range against the CPU encoder.
__device__ __forceinline__ std::uint32_t encode4_e4m3(float a, float b, float c, float d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  unsigned short lo, hi;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %2, %1;" : "=h"(lo) : "f"(a), "f"(b));  // first operand -> high byte
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %2, %1;" : "=h"(hi) : "f"(c), "f"(d));
  return lo | (static_cast<std::uint32_t>(hi) << 16);
#else
  return encode_e4m3(a) | (encode_e4m3(b) << 8) | (encode_e4m3(c) << 16) |
         (static_cast<std::uint32_t>(encode_e4m3(d)) << 24);
#endif
}

// Resident blocks per SM asked of the register allocator: each has 32 KB (bf16) or 64 KB (float) of
// loads in flight, and 2-3 such blocks per SM cover the memory latency. Four bf16 blocks would fit
// 64 registers, but the 128x128 kernel then spills a few.
template <typename T>
constexpr int kTileMinBlocks = sizeof(T) == 2 ? 3 : 2;

}  // namespace shoestring::ops::cuda_detail
