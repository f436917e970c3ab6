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
#include "ops/fp8_wgmma.cuh"

namespace shoestring::ops::gemm_detail {

namespace {

constexpr int kBM = 128, kBN = 128;    // C tile of a block
constexpr int kStages = 4;
constexpr int kTileBytes = 128 * 128;  // one operand of one stage: 128 rows x one 128-byte K block
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kThreads = 256;          // two warpgroups, each a 64 x 128 slice of C
constexpr int kSmemBytes = kStages * kStageBytes + 1024;  // + room to align the tiles to 1024 bytes


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

      promote(acc, part, p, SB, n0, kb, lane, sa_lo, sa_hi, sb_block);
    }
  }

  store_slice(acc, p, m0 + wg * 64 + warp * 16 + lane / 4, n0, lane);
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
