#pragma once
// What the Hopper block-scaled FP8 GEMM kernels share (fp8_gemm_wgmma.cu: one block per tile;
// fp8_gemm_wgmma_persistent.cu: a persistent grid): the warpgroup MMA, the FP32 promotion, the C
// store, the mbarrier and tensor-memory-accelerator copies, and the tensor maps of the operands.
// Device code exists only when compiling for sm_90a (SHOESTRING_HAS_WGMMA); other passes see the
// host declarations and kernels that trap.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/fp8_gemm_common.cuh"

namespace shoestring::ops::gemm_detail {

// A [rows, K] uint8 matrix read in box_rows x 128-byte boxes with the 128-byte swizzle; out-of-range
// rows read as zeros (fp8_gemm_wgmma.cu).
CUtensorMap make_tma_map(const void* ptr, int64_t rows, int64_t K, int box_rows);
// The FP32 output C, [groups, M, N] (groups 1 unless k-grouped), written in 64-row x 32-column
// boxes (128 bytes: one swizzle row) with the 128-byte swizzle; rows past M and columns past N are
// not written. Needs N % 4 == 0 (row strides are multiples of 16 bytes) and a 16-byte aligned c.
CUtensorMap make_tma_map_c(float* c, int64_t groups, int64_t M, int64_t N);

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

// d (+)= A[64 x 32] . B[BN x 32]^T for BN = 2 x the size of d (128, 160 or 192); accumulate == 0
// overwrites d. Accumulator layout: thread t of the warpgroup holds rows 16 (t / 32) + (t % 32) / 4
// (+ 8) and columns 8 j + 2 (t % 4) (+ 1): d[4j + 2h + e] is row (+ 8h), column 8j + 2(t % 4) + e.
__device__ __forceinline__ void wgmma_tile(float (&d)[64], std::uint64_t da, std::uint64_t db, int accumulate) {
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

__device__ __forceinline__ void wgmma_tile(float (&d)[80], std::uint64_t da, std::uint64_t db, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %82, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n160k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79}, %80, %81, p, 1, 1;\n}\n"
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
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]),
        "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]),
        "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79])
      : "l"(da), "l"(db), "r"(accumulate));
}

__device__ __forceinline__ void wgmma_tile(float (&d)[96], std::uint64_t da, std::uint64_t db, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, %96, %97, p, 1, 1;\n}\n"
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
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]),
        "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]),
        "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]),
        "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
      : "l"(da), "l"(db), "r"(accumulate));
}

// The four MMAs of one 128-wide K block (exactly one promotion interval; the first overwrites part),
// committed as one group: the caller fetches its scales, then waits for the group.
template <int N>
__device__ __forceinline__ void mma_k_block(float (&part)[N], std::uint32_t a_addr, std::uint32_t b_addr) {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
  for (int k = 0; k < 4; ++k) wgmma_tile(part, smem_desc(a_addr + k * 32), smem_desc(b_addr + k * 32), k);
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// Promotion (DeepSeek-V3 §3.3.2): acc += part * scale_a[row] * scale_b[column's block], for the
// rows r_lo, r_lo + 8 and the BN / 4 columns this thread holds in a warpgroup's 64 x BN slice at n0.
// With 128x128 blocks on B, columns before n0 + split take the scale sb0 of block n0 / 128 and the
// rest sb1 of the next block: a tile wider than 128, or one not starting on a multiple of 128, can
// straddle two blocks (never three: BN <= 192 and n0 % 128 + BN <= 256 for the widths launched);
// split is a multiple of 8, so each thread's group of 8 columns lies in one block.
template <int BN>
__device__ __forceinline__ void promote_block_scales(float (&acc)[BN / 2], const float (&part)[BN / 2], int split,
                                                     float sa_lo, float sa_hi, float sb0, float sb1) {
  const float s_lo0 = sa_lo * sb0, s_hi0 = sa_hi * sb0, s_lo1 = sa_lo * sb1, s_hi1 = sa_hi * sb1;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const bool first = BN <= 128 || 8 * j < split;
    const float s_lo = first ? s_lo0 : s_lo1, s_hi = first ? s_hi0 : s_hi1;
    acc[4 * j + 0] += part[4 * j + 0] * s_lo;
    acc[4 * j + 1] += part[4 * j + 1] * s_lo;
    acc[4 * j + 2] += part[4 * j + 2] * s_hi;
    acc[4 * j + 3] += part[4 * j + 3] * s_hi;
  }
}

// With 1x128 scales on B (the Wgrad) each column reads its own.
template <int BN>
__device__ __forceinline__ void promote_column_scales(float (&acc)[BN / 2], const float (&part)[BN / 2],
                                                      const GemmArgs& p, const float* SB, int n0, int kb, int lane,
                                                      float sa_lo, float sa_hi) {
  // Opaque to the compiler: otherwise it hoists the BN / 4 column-scale addresses out of the K loop
  // and keeps them in registers that the accumulators need (ptxas spilled 164-1048 bytes).
  asm volatile("" : "+r"(n0));
#pragma unroll
  for (int j = 0; j < BN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int n = n0 + 8 * j + 2 * (lane % 4) + e;
      const float sb = n < p.N ? SB[int64_t(n) * p.KB + kb] : 0.0f;
      acc[4 * j + e] += part[4 * j + e] * (sa_lo * sb);
      acc[4 * j + 2 + e] += part[4 * j + 2 + e] * (sa_hi * sb);
    }
}

// promote_column_scales with this thread's column scales already read (sb[2 j + e]: column
// n0 + 8 j + 2 (lane % 4) + e, 0 past N): the same products in the same order.
template <int BN>
__device__ __forceinline__ void promote_staged_columns(float (&acc)[BN / 2], const float (&part)[BN / 2],
                                                       const float (&sb)[BN / 4], float sa_lo, float sa_hi) {
#pragma unroll
  for (int j = 0; j < BN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      acc[4 * j + e] += part[4 * j + e] * (sa_lo * sb[2 * j + e]);
      acc[4 * j + 2 + e] += part[4 * j + 2 + e] * (sa_hi * sb[2 * j + e]);
    }
}

// Either, by B's scale layout (the one-tile kernel; the persistent one picks at compile time).
template <int BN>
__device__ __forceinline__ void promote(float (&acc)[BN / 2], const float (&part)[BN / 2], const GemmArgs& p,
                                        const float* SB, int n0, int split, int kb, int lane, float sa_lo, float sa_hi,
                                        float sb0, float sb1) {
  if (p.b_block_rows == 128) promote_block_scales<BN>(acc, part, split, sa_lo, sa_hi, sb0, sb1);
  else promote_column_scales<BN>(acc, part, p, SB, n0, kb, lane, sa_lo, sa_hi);
}

// Writes the slice whose first row this thread holds is r_lo (rows r_lo, r_lo + 8); padding rows of
// the grouped layout get zeros.
template <int BN>
__device__ __forceinline__ void store_slice(const float (&acc)[BN / 2], const GemmArgs& p, float* c, int r_lo, int n0,
                                            int lane) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int m = r_lo + 8 * h;
    if (m >= p.M) continue;
    const bool live = row_live(p, m);
    float* row = c + int64_t(m) * p.N;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
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

// tile_group (fp8_gemm_common.cuh) for one warp, without a block barrier: the producer and the
// consumers each find a tile's group on their own, tile after tile.
__device__ __forceinline__ int warp_tile_group(const GemmArgs& p, int m0, int lane) {
  if (p.group_of_row == nullptr) return 0;
  int g = -1;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + lane + 32 * i;
    if (m < p.M) g = max(g, p.group_of_row[m]);
  }
  return __reduce_max_sync(0xffffffffu, g);
}
__device__ __forceinline__ void mbar_init(std::uint32_t bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect_bytes(std::uint32_t bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// The stage ring's barriers, set up by one thread before the block's first __syncthreads: for each
// of `stages` stages (8 bytes apart from full0 and empty0), "full" takes the producer's expect_tx
// arrival (then the copy's bytes) plus `extra_full` arrivals (the lanes of a warp that stages the
// scales with cp.async), and "empty" one arrival per consumer warp (2 warpgroups) of each of the
// `blocks` blocks whose loads write into this one's stages (2 with a multicast peer).
__device__ __forceinline__ void init_stage_barriers(std::uint32_t full0, std::uint32_t empty0, int stages,
                                                    unsigned blocks = 1, unsigned extra_full = 0) {
  for (int s = 0; s < stages; ++s) {
    mbar_init(full0 + 8 * s, 1 + extra_full);
    mbar_init(empty0 + 8 * s, 8 * blocks);
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");  // visible to the copy engine
}
// Returns once the barrier's phase with this parity has completed (acquire, CTA scope: also for the
// multicast kernel's "empty" barriers that the peer block arrives on, as CUTLASS's ClusterBarrier
// and DeepGEMM wait on theirs).
__device__ __forceinline__ void mbar_wait(std::uint32_t bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// One 128 x 128-byte box at (column x, row y) of a 2-D tensor map into shared memory at dst.
__device__ __forceinline__ void tma_load(std::uint32_t dst, const CUtensorMap& map, int x, int y, std::uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<std::uint64_t>(&map)), "r"(x), "r"(y), "r"(bar)
      : "memory");
}

// 4 bytes from global src into shared dst with cp.async, or 4 zero bytes when !valid (src is then
// not read but must still be a valid address).
__device__ __forceinline__ void cp_async_4(std::uint32_t dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
// One arrival on bar once every cp.async this thread has issued so far has landed (counted in the
// barrier's expected arrivals: .noinc).
__device__ __forceinline__ void cp_async_arrive(std::uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ float ld_shared(std::uint32_t addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ float2 ld_shared2(std::uint32_t addr) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr) : "memory");
  return v;
}

// ---- The C tile written through shared memory by TMA stores (the persistent kernel's kTmaStore) ----
// A consumer warpgroup's own barrier (ids 1 and 2; 0 is __syncthreads'): its 128 threads only.
__device__ __forceinline__ void warpgroup_sync(int id) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory");
}
// Makes this thread's shared-memory writes visible to the copy engine (the async proxy).
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// One 32 x 64 box of a 3-D tensor map from shared memory at src to (column x, row y, group z).
__device__ __forceinline__ void tma_store_3d(const CUtensorMap& map, std::uint32_t src, int x, int y, int z) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%1, %2, %3}], [%4];\n" ::"l"(
                   reinterpret_cast<std::uint64_t>(&map)),
               "r"(x), "r"(y), "r"(z), "r"(src)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Until this thread's committed stores have read their shared memory (it can be written again).
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// Until this thread's committed stores are done.
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ void st_shared2(std::uint32_t addr, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(x), "f"(y) : "memory");
}

// store_slice through shared memory: the warpgroup's 64 x 128 slice (rows m0..m0 + 63 of group z,
// columns n0..n0 + 127) goes into its 32 KB at cbuf as four 64 x 32 boxes in the 128-byte swizzle
// (16-byte chunk c of a box row r sits at chunk c ^ (r % 8): a warp's 8-byte writes hit every bank
// twice, the fewest possible), then one thread stores the boxes with TMA. The previous tile's
// stores must have read cbuf first; they run on while the consumers start the next tile.
// wg_row: the thread's first row within the slice (16 warp + lane / 4); padding rows get zeros.
__device__ __forceinline__ void store_slice_tma(const float (&acc)[64], const GemmArgs& p, const CUtensorMap& map_c,
                                                std::uint32_t cbuf, int m0, int n0, int z, int wg_row, int lane,
                                                int barrier_id, bool leader) {
  if (leader) bulk_wait_read();
  warpgroup_sync(barrier_id);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wg_row + 8 * h;
    const bool live = row_live(p, m0 + r);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int byte = 32 * (j % 4) + 8 * (lane % 4);  // within the box row
      const std::uint32_t addr = cbuf + (j / 4) * 8192 + r * 128 + ((((byte / 16) ^ (r % 8)) * 16) | (byte % 16));
      st_shared2(addr, live ? acc[4 * j + 2 * h] : 0.0f, live ? acc[4 * j + 2 * h + 1] : 0.0f);
    }
  }
  fence_async_shared();
  warpgroup_sync(barrier_id);
  if (leader) {
#pragma unroll
    for (int b = 0; b < 4; ++b) tma_store_3d(map_c, cbuf + b * 8192, n0 + 32 * b, m0, z);
    bulk_commit();
  }
}

// ---- Clusters of 2 blocks sharing one operand tile through TMA multicast ----
__device__ __forceinline__ unsigned cluster_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
// Every thread of both blocks: orders the barriers' set-up before a peer's first copy or arrival,
// and at the end keeps a block's shared memory alive until its peer stops arriving on it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The address of this block's shared-memory location addr in block `rank` of the cluster.
__device__ __forceinline__ std::uint32_t cluster_address(std::uint32_t addr, unsigned rank) {
  std::uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
  return remote;
}
// One arrival on a barrier of another block of the cluster (its cluster_address), with the default
// semantics (release, CTA scope) as CUTLASS's ClusterBarrier::arrive(cta_id) and DeepGEMM's empty
// barriers: the arriving warp's reads of the stage (by its MMAs) are complete once wgmma.wait_group
// returned. The release.cluster form used before profiled at 12.1 cycles per issued instruction
// against the unpaired kernel's 4.7 (H100, 2026-11-27); whether it was the cause is for the next run.
__device__ __forceinline__ void mbar_arrive_remote(std::uint32_t remote_bar) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote_bar) : "memory");
}
// tma_load into dst's offset in every block of `mask`; each one's barrier at bar's offset gets the bytes.
__device__ __forceinline__ void tma_load_multicast(std::uint32_t dst, const CUtensorMap& map, int x, int y,
                                                   std::uint32_t bar, std::uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<std::uint64_t>(&map)), "r"(x), "r"(y), "r"(bar), "h"(mask)
      : "memory");
}
#endif  // SHOESTRING_HAS_WGMMA

}  // namespace shoestring::ops::gemm_detail
