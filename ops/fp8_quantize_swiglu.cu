// The SwiGLU output quantized in one pass (quantize_swiglu_1x128, ops/fp8_quantize.h): a vector
// kernel for 16-byte aligned rows of a multiple of 8 elements, else one warp per 1x128 tile. Both
// read h1 and h3, form p = silu(h1) * h3 in registers exactly as ATen's CUDA kernels do (silu in
// float as x / (1 + expf(-x)) and rounded to the input dtype, then the product in float rounded to
// the input dtype), and write the tile's codes and scale. The unfused path writes silu(h1) and p to
// memory and reads them back: 2 writes and 3 reads of [M, H] where this has 2 reads (plus the
// 1-byte codes both write).
//
// Against the CPU reference the codes can differ where the device's expf and ATen's CPU exp round
// differently in the last bit (tests/ops/test_fp8_gpu.cpp measures and bounds it); the encode and
// the scale are fp8_quantize.cu's (encode_e4m3, fp8_tile_scale).
#include <ATen/ATen.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_quantize.h"
#include "ops/fp8_quantize_tile.cuh"

namespace shoestring::ops {

namespace {

using cuda_detail::check_cuda;
using cuda_detail::current_stream;

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }

// p for one element from floats holding the input dtype's values exactly (bf16 widened), rounded
// as ATen rounds each of the two ops' outputs.
template <typename T>
__device__ __forceinline__ float swiglu_p(float a, float b) {
  if constexpr (sizeof(T) == 2) {
    const float s = __bfloat162float(__float2bfloat16_rn(silu_f(a)));
    return __bfloat162float(__float2bfloat16_rn(s * b));
  } else {
    return silu_f(a) * b;
  }
}
__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

// Four consecutive elements of h1 and h3 at `at` as floats, in one 8-byte (bf16) or 16-byte (float)
// load each when `vec` (the caller checked alignment), else element by element up to C.
__device__ __forceinline__ void load4(const __nv_bfloat16* p, int64_t at, bool vec, int n, __nv_bfloat16 (&out)[4]) {
  if (vec) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p + at);
    const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
    const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
    out[0] = lo.x, out[1] = lo.y, out[2] = hi.x, out[3] = hi.y;
    return;
  }
  for (int i = 0; i < 4; ++i) out[i] = i < n ? p[at + i] : __float2bfloat16_rn(0.0f);
}
__device__ __forceinline__ void load4(const float* p, int64_t at, bool vec, int n, float (&out)[4]) {
  if (vec) {
    const float4 v = *reinterpret_cast<const float4*>(p + at);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
    return;
  }
  for (int i = 0; i < 4; ++i) out[i] = i < n ? p[at + i] : 0.0f;
}

// One warp per 1x128 tile; lane l owns columns c0 + 4l .. 4l+3 (one 32-bit store of codes). `vec`:
// both inputs are aligned to 4 elements and C % 4 == 0, so each lane's four elements are one load.
template <typename T>
__global__ void quant_swiglu_1x128_kernel(const T* __restrict__ h1, const T* __restrict__ h3,
                                          std::uint8_t* __restrict__ codes, float* __restrict__ scales, int64_t R,
                                          int64_t C, int64_t KB, bool vec) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= R * KB) return;
  const int64_t r = warp / KB, kb = warp % KB;
  const int64_t c0 = kb * 128 + lane * 4;
  const int n = c0 >= C ? 0 : (C - c0 < 4 ? int(C - c0) : 4);  // elements of this lane inside the row
  T a[4], b[4];
  load4(h1, r * C + c0, vec && n == 4, n, a);
  load4(h3, r * C + c0, vec && n == 4, n, b);
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = i < n ? swiglu_p<T>(widen(a[i]), widen(b[i])) : 0.0f;
  cuda_detail::store_1x128_lane(v, lane, c0, C, codes + r * C, scales + r * KB + kb);
}

// The vector form, for 16-byte aligned rows of a multiple of 8 elements: one block per 128x128
// region, laid out as fp8_quantize.cu's vector tile kernels (thread t owns the 8 columns 8(t % 16)..
// of tile rows 4(t / 16) + i + 64h, i < 4, h < 2), so that every thread has its 8 units of h1 and
// of h3 in flight before the first use. The warp-per-tile kernel above has one 8-byte load of each
// per thread and reached 48-51% of copy bandwidth on an H100 (2026-11-27), where the plain 1x128
// quantizer in this layout reached 89%. Same p, amax (max is order-free; NaNs ignored by fmaxf as
// there), scale and encoder: the same codes and scales.
// Resident blocks per SM: both inputs' units are held at once (64 KB of loads in flight per bf16
// block, 128 KB per float block), twice the plain quantizer's registers; fewer blocks keep ptxas
// from spilling (it spilled 68-104 bytes at the plain quantizer's 3 and 2).
template <typename T>
constexpr int kSwigluTileMinBlocks = sizeof(T) == 2 ? 2 : 1;

template <typename T>
__global__ void __launch_bounds__(cuda_detail::kTileThreads, kSwigluTileMinBlocks<T>)
    quant_swiglu_tile_kernel(const T* __restrict__ h1, const T* __restrict__ h3, std::uint8_t* __restrict__ codes,
                             float* __restrict__ scales, int64_t R, int64_t C) {
  constexpr int kLoads = sizeof(T) / 2;  // 16-byte loads per 8-element unit
  const int64_t KB = (C + 127) / 128;
  const int tid = threadIdx.x, cu = tid % 16, rg = tid / 16;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 128 + cu * 8;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * 128 + 4 * rg;
  auto unit_row = [&](int u) { return row0 + u % 4 + 64 * (u / 4); };
  auto unit_in = [&](int u) { return col < C && unit_row(u) < R; };

  uint4 ra[8][kLoads], rb[8][kLoads];
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const int64_t at = unit_row(u) * C + col;
    const uint4* pa = reinterpret_cast<const uint4*>(h1 + at);
    const uint4* pb = reinterpret_cast<const uint4*>(h3 + at);
#pragma unroll
    for (int l = 0; l < kLoads; ++l) {
      ra[u][l] = unit_in(u) ? __ldg(pa + l) : make_uint4(0, 0, 0, 0);
      rb[u][l] = unit_in(u) ? __ldg(pb + l) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    float a[8], b[8], v[8];
    cuda_detail::unit_to_float<T>(ra[u], a);
    cuda_detail::unit_to_float<T>(rb[u], b);
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = swiglu_p<T>(a[e], b[e]);  // zero padding: p(0, 0) = 0
      amax = fmaxf(amax, fabsf(v[e]));
    }
    // A tile row's 128 elements live in the 16 lanes of one half-warp.
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const Fp8TileScale s = fp8_tile_scale(amax);
    if (unit_row(u) < R && cu == 0) scales[unit_row(u) * KB + blockIdx.x] = s.scale;
    if (unit_in(u))
      *reinterpret_cast<uint2*>(codes + unit_row(u) * C + col) =
          make_uint2(cuda_detail::encode4_e4m3(v[0] * s.inv, v[1] * s.inv, v[2] * s.inv, v[3] * s.inv),
                     cuda_detail::encode4_e4m3(v[4] * s.inv, v[5] * s.inv, v[6] * s.inv, v[7] * s.inv));
  }
}

}  // namespace

Fp8Tensor quantize_swiglu_1x128_cuda(const at::Tensor& h1_in, const at::Tensor& h3_in) {
  const char* what = "quantize_swiglu_1x128_cuda";
  cuda_detail::require_cuda(h1_in, what, "h1");
  cuda_detail::require_cuda(h3_in, what, "h3");
  if (h1_in.dim() != 2 || h1_in.sizes() != h3_in.sizes() || h1_in.scalar_type() != h3_in.scalar_type())
    throw std::invalid_argument(std::string(what) + ": h1 and h3 must be 2-D of one shape and dtype");
  if (h1_in.scalar_type() != at::kFloat && h1_in.scalar_type() != at::kBFloat16)
    throw std::invalid_argument(std::string(what) + ": expected float or bfloat16, got " +
                                std::string(c10::toString(h1_in.scalar_type())));
  const at::Tensor h1 = h1_in.contiguous(), h3 = h3_in.contiguous();
  const int64_t R = h1.size(0), C = h1.size(1), KB = ceil_div(C, kFp8Block);
  Fp8Tensor q;
  q.block_rows = 1;
  q.data = at::empty({R, C}, h1.options().dtype(at::kFloat8_e4m3fn));
  q.scale = at::empty({R, KB}, h1.options().dtype(at::kFloat));
  if (R * C == 0) return q;
  auto* codes = static_cast<std::uint8_t*>(q.data.data_ptr());
  if (cuda_detail::vector_path_ok(h1) && cuda_detail::vector_path_ok(h3)) {
    const dim3 grid(static_cast<unsigned>(KB), static_cast<unsigned>(ceil_div(R, kFp8Block)));
    if (h1.scalar_type() == at::kBFloat16)
      quant_swiglu_tile_kernel<<<grid, cuda_detail::kTileThreads, 0, current_stream()>>>(
          reinterpret_cast<const __nv_bfloat16*>(h1.data_ptr()), reinterpret_cast<const __nv_bfloat16*>(h3.data_ptr()),
          codes, q.scale.data_ptr<float>(), R, C);
    else
      quant_swiglu_tile_kernel<<<grid, cuda_detail::kTileThreads, 0, current_stream()>>>(
          h1.data_ptr<float>(), h3.data_ptr<float>(), codes, q.scale.data_ptr<float>(), R, C);
    check_cuda(cudaGetLastError(), "quantize_swiglu_1x128_cuda launch");
    return q;
  }
  const auto blocks = static_cast<unsigned>(ceil_div(R * KB * 32, 256));
  const auto aligned = [&](const at::Tensor& t) {
    return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % (4 * t.element_size()) == 0;
  };
  const bool vec = C % 4 == 0 && aligned(h1) && aligned(h3);
  if (h1.scalar_type() == at::kBFloat16) {
    quant_swiglu_1x128_kernel<<<blocks, 256, 0, current_stream()>>>(
        reinterpret_cast<const __nv_bfloat16*>(h1.data_ptr()), reinterpret_cast<const __nv_bfloat16*>(h3.data_ptr()),
        codes, q.scale.data_ptr<float>(), R, C, KB, vec);
  } else {
    quant_swiglu_1x128_kernel<<<blocks, 256, 0, current_stream()>>>(h1.data_ptr<float>(), h3.data_ptr<float>(), codes,
                                                                    q.scale.data_ptr<float>(), R, C, KB, vec);
  }
  check_cuda(cudaGetLastError(), "quantize_swiglu_1x128_cuda launch");
  return q;
}

}  // namespace shoestring::ops
