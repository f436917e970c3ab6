// kWgmma: the Hopper (sm_90a) block-scaled FP8 GEMM. Same contract and numerics as kMma
// (fp8_gemm.cu): C = sum over 128-wide K blocks of (A_q . B_q^T) * scale_a * scale_b, the partial sum
// of each K block in the tensor core's accumulators and promoted into separate FP32 registers
// (DeepSeek-V3 §3.3.2). What makes it Hopper-native:
//
//  * wgmma.mma_async m64n128k32 e4m3: a warpgroup (4 warps) multiplies a 64 x 128 x 32 slab with both
//    operands read by the tensor core straight from shared memory (no register fragments, no ldmatrix).
//    Two warpgroups cover a 128 x 128 tile of C; 4 instructions cover one 128-wide K block, exactly one
//    promotion interval, so the "scale-d = 0" form of the first one also zeroes the partial sums.
//  * Operands stored K-major with the 128-byte swizzle the instruction reads: a 128-wide K block of a
//    row is exactly one 128-byte swizzle row, so the 16-byte chunk c of row r lives at chunk c ^ (r % 8).
//    Conflict-free for the tensor core and for the cp.async writes alike.
//  * A 4-stage cp.async pipeline (32 KB per stage: 128 rows of A and of B), one K block per stage, so
//    three blocks of loads are in flight while the tensor core works on the fourth. The loads and the
//    scale reads of a block are issued after its MMAs, so they overlap the tensor core's work.
//
// Not yet: TMA (cp.async.bulk.tensor) loads, warp specialisation with a producer warpgroup and
// setmaxnreg, and overlapping one warpgroup's promotion with the other's MMAs (DeepGEMM does all of
// these); see docs/fp8.md.
#include <cuda_runtime.h>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_gemm_common.cuh"

namespace shoestring::ops::gemm_detail {

namespace {

constexpr int kBM = 128, kBN = 128;    // C tile of a block
constexpr int kStages = 4;
constexpr int kTileBytes = 128 * 128;  // one operand of one stage: 128 rows x one 128-byte K block
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kThreads = 256;          // two warpgroups, each a 64 x 128 slice of C
constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // + room to align the tiles to 1024 bytes

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
#endif

__global__ void __launch_bounds__(kThreads, 1) fp8_gemm_wgmma_kernel(GemmArgs p) {
#ifdef SHOESTRING_HAS_WGMMA
  extern __shared__ __align__(1024) std::uint8_t smem_raw[];
  // The 128-byte swizzle pattern repeats every 1024 bytes and the descriptors assume tiles start on
  // such a boundary; the dynamic segment follows tile_group's static word, so align by hand.
  const std::uint32_t raw = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem_raw));
  const std::uint32_t base = (raw + 1023u) & ~1023u;
  std::uint8_t* smem = smem_raw + (base - raw);

  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int grp = tile_group(p, m0, kBM);
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  if (grp >= 0) {
    const std::uint8_t* B = p.b + grp * p.b_group_stride;
    const float* SB = p.sb + grp * p.sb_group_stride;
    auto load_stage = [&](int slot, int kb) {
      std::uint8_t* a_s = smem + slot * kStageBytes;
      std::uint8_t* b_s = a_s + kTileBytes;
      const int64_t k0 = int64_t(kb) * 128;
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // 1024 chunks of 16 bytes per operand, 8 per row
        const int i = tid + j * kThreads, r = i / 8, c = i % 8;
        const int at = r * 128 + ((c ^ (r & 7)) << 4);
        const int m = m0 + r, n = n0 + r;
        cp_async16(a_s + at, p.a + int64_t(m < p.M ? m : p.M - 1) * p.K + k0 + c * 16, m < p.M);
        cp_async16(b_s + at, B + int64_t(n < p.N ? n : p.N - 1) * p.K + k0 + c * 16, n < p.N);
      }
    };
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < p.KB) load_stage(s, s);
      asm volatile("cp.async.commit_group;\n" ::);  // empty groups keep the wait count uniform
    }

    const int r_lo = m0 + wg * 64 + warp * 16 + lane / 4, r_hi = r_lo + 8;
    float part[64] = {};  // written by the first MMA of each K block (accumulate = 0)
    for (int kb = 0; kb < p.KB; ++kb) {
      asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 2));
      // cp.async wrote through the generic proxy; the tensor core reads through the async proxy.
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();  // stage kb visible to all; every warpgroup is done with stage kb - 1

      const std::uint32_t a_addr = base + (kb % kStages) * kStageBytes + wg * 64 * 128;
      const std::uint32_t b_addr = base + (kb % kStages) * kStageBytes + kTileBytes;
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int k = 0; k < 4; ++k) wgmma_m64n128k32(part, smem_desc(a_addr + k * 32), smem_desc(b_addr + k * 32), k);
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");

      // While the tensor core works: refill the slot stage kb - 1 used, and fetch this block's
      // scales, whose global-memory latency would otherwise stall every promotion.
      const int next = kb + kStages - 1;
      if (next < p.KB) load_stage(next % kStages, next);
      asm volatile("cp.async.commit_group;\n" ::);
      const float sa_lo = r_lo < p.M ? p.sa[int64_t(r_lo) * p.KB + kb] : 0.0f;
      const float sa_hi = r_hi < p.M ? p.sa[int64_t(r_hi) * p.KB + kb] : 0.0f;
      const float sb_block = p.b_block_rows == 128 ? SB[int64_t(n0 / 128) * p.KB + kb] : 0.0f;
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");

      // Promotion (DeepSeek-V3 §3.3.2): acc += partial * scale_a[row] * scale_b[column's block].
      if (p.b_block_rows == 128) {  // the tile is one weight block: one scale
        const float s_lo = sa_lo * sb_block, s_hi = sa_hi * sb_block;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          acc[4 * j + 0] += part[4 * j + 0] * s_lo;
          acc[4 * j + 1] += part[4 * j + 1] * s_lo;
          acc[4 * j + 2] += part[4 * j + 2] * s_hi;
          acc[4 * j + 3] += part[4 * j + 3] * s_hi;
        }
      } else {  // 1x128 scales on B (Wgrad): one per column
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
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int m = m0 + wg * 64 + warp * 16 + lane / 4 + 8 * h;
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
#else
  __trap();  // the host launches this only on sm_90 (choose_fp8_gemm_config), built for sm_90a
#endif
}

}  // namespace

void launch_fp8_gemm_wgmma(const GemmArgs& p, cudaStream_t stream) {
  cuda_detail::check_cuda(
      cudaFuncSetAttribute(fp8_gemm_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
      "cudaFuncSetAttribute(fp8_gemm_wgmma_kernel)");
  const dim3 grid(static_cast<unsigned>((p.N + kBN - 1) / kBN), static_cast<unsigned>((p.M + kBM - 1) / kBM));
  fp8_gemm_wgmma_kernel<<<grid, kThreads, kSmemBytes, stream>>>(p);
}

}  // namespace shoestring::ops::gemm_detail
