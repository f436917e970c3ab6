#pragma once
// The Hopper pieces our WGMMA GEMM kernels share (fp8_gemm_wgmma.cu: cp.async loads;
// fp8_gemm_wgmma_tma.cu: TMA loads, warp-specialised): the shared-memory descriptor, the
// m64n128k32 e4m3 instruction, and the promotion and store of a warpgroup's 64 x 128 slice of C.
// Operands are K-major with the 128-byte swizzle: a 128-wide K block of a row is exactly one
// 128-byte swizzle row, whose 16-byte chunk c sits at chunk c ^ (row % 8); tiles start 1024-aligned.
#include "ops/fp8_gemm_common.cuh"

namespace shoestring::ops::gemm_detail {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SHOESTRING_HAS_WGMMA 1

// Shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): start address >> 4 in bits
// 0-13, leading-dimension byte offset >> 4 in 16-29 (unused by swizzled K-major operands; 1 by
// convention), stride-dimension byte offset >> 4 in 32-45 (1024: the next group of 8 rows), swizzle
// mode in 62-63 (1 = 128 bytes).
__device__ __forceinline__ std::uint64_t smem_desc(std::uint32_t addr) {
  return std::uint64_t((addr & 0x3FFFF) >> 4) | (std::uint64_t(1) << 16) | (std::uint64_t(1024 >> 4) << 32) |
         (std::uint64_t(1) << 62);
}

// d (+)= A[64 x 32] . B[128 x 32]^T; accumulate == 0 overwrites d. Accumulator layout: thread t of the
// warpgroup holds rows 16 (t / 32) + (t % 32) / 4 (+ 8) and columns 8 j + 2 (t % 4) (+ 1):
// d[4j + 2h + e] is row (+ 8h), column 8j + 2(t % 4) + e.
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], std::uint64_t da, std::uint64_t db, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]),
        "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]),
        "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(accumulate));
}

// Promotion (DeepSeek-V3 §3.3.2): acc += part * scale_a[row] * scale_b[column's block], for the
// rows r_lo, r_lo + 8 and the 32 columns this thread holds in a warpgroup's 64 x 128 slice at n0.
// sb_block is the B scale of the whole tile when B has 128x128 blocks; with 1x128 scales on B
// (Wgrad) each column reads its own.
__device__ __forceinline__ void promote(float (&acc)[64], const float (&part)[64], const GemmArgs& p, const float* SB,
                                        int n0, int kb, int lane, float sa_lo, float sa_hi, float sb_block) {
  if (p.b_block_rows == 128) {
    const float s_lo = sa_lo * sb_block, s_hi = sa_hi * sb_block;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      acc[4 * j + 0] += part[4 * j + 0] * s_lo;
      acc[4 * j + 1] += part[4 * j + 1] * s_lo;
      acc[4 * j + 2] += part[4 * j + 2] * s_hi;
      acc[4 * j + 3] += part[4 * j + 3] * s_hi;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int n = n0 + 8 * j + 2 * (lane % 4) + e;
        const float sb = n < p.N ? SB[int64_t(n) * p.KB + kb] : 0.0f;
        acc[4 * j + e] += part[4 * j + e] * (sa_lo * sb);
        acc[4 * j + 2 + e] += part[4 * j + 2 + e] * (sa_hi * sb);
      }
  }
}

// Writes the slice whose first row this thread holds is r_lo (rows r_lo, r_lo + 8); padding rows of
// the grouped layout get zeros.
__device__ __forceinline__ void store_slice(const float (&acc)[64], const GemmArgs& p, int r_lo, int n0, int lane) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int m = r_lo + 8 * h;
    if (m >= p.M) continue;
    const bool live = row_live(p, m);
    float* row = p.c + int64_t(m) * p.N;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int n = n0 + 8 * j + 2 * (lane % 4);
      const float v0 = live ? acc[4 * j + 2 * h] : 0.0f, v1 = live ? acc[4 * j + 2 * h + 1] : 0.0f;
      if (n + 1 < p.N && (p.N % 2) == 0) {
        *reinterpret_cast<float2*>(row + n) = make_float2(v0, v1);
      } else {
        if (n < p.N) row[n] = v0;
        if (n + 1 < p.N) row[n + 1] = v1;
      }
    }
  }
}
#endif

}  // namespace shoestring::ops::gemm_detail
