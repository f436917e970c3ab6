#pragma once
// Device pieces shared by the 1x128 quantization kernels (fp8_quantize.cu's scalar path and
// fp8_quantize_swiglu.cu): one warp per 1x128 tile, lane l holding the tile's elements 4l .. 4l+3.
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

}  // namespace shoestring::ops::cuda_detail
