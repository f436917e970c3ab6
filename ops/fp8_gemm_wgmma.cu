// kWgmmaTma: the Hopper (sm_90a) block-scaled FP8 GEMM. Same contract and numerics as kMma
// (fp8_gemm.cu): C = sum over 128-wide K blocks of (A_q . B_q^T) * scale_a * scale_b, the partial sum
// of each K block in the tensor core's accumulators, promoted into separate FP32 registers
// (DeepSeek-V3 §3.3.2). A 128 x 128 tile of C per block, in DeepGEMM's division of labour:
//
//  * wgmma.mma_async m64n128k32 e4m3: a warpgroup multiplies a 64 x 128 x 32 slab with both operands
//    read by the tensor core from shared memory; 4 instructions cover one 128-wide K block, exactly one
//    promotion interval, so the "scale-d = 0" form of the first also zeroes the partial sums.
//    Operands are K-major with the 128-byte swizzle: a 128-wide K block of a row is exactly one
//    128-byte swizzle row, whose 16-byte chunk c sits at chunk c ^ (row % 8); tiles start 1024-aligned.
//  * One producer thread moves each stage with the tensor memory accelerator (cp.async.bulk.tensor,
//    128 x 128-byte boxes, the 128-byte swizzle applied by the copy engine, rows past M or N filled
//    with zeros) and signals a "full" mbarrier with the byte count; no thread spends registers or
//    issue slots on addresses.
//  * Two consumer warpgroups (64 rows of C each) wait on "full", run their 4 MMAs, fetch the block's
//    scales while the tensor core works, hand the stage back through an "empty" mbarrier and promote.
//    Nothing makes the two consumers run in step, so one warpgroup's promotion overlaps the other's
//    MMAs. (A first version with every thread loading through cp.async and a __syncthreads per K
//    block reached 441-619 TFLOPS on the bench's M = 4096 shapes against this one's 542-864: H100,
//    2026-11-26, docs/fp8.md.)
//  * setmaxnreg moves registers from the producer warpgroup (40) to the consumers (232): the
//    accumulators (64 + 64 per thread) and the scales fit without spilling at 384 threads.
#include <stdexcept>
#include <string>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_wgmma.cuh"

namespace shoestring::ops::gemm_detail {

namespace {

constexpr int kBM = 128, kBN = 128;
constexpr int kStages = 5;
constexpr int kTileBytes = 128 * 128;
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kThreads = 384;  // warpgroup 0: producer; 1 and 2: consumers
constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;  // tiles, alignment, barriers

__global__ void __launch_bounds__(kThreads, 1)
    fp8_gemm_wgmma_tma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                              GemmArgs p) {
#ifdef SHOESTRING_HAS_WGMMA
  extern __shared__ __align__(1024) std::uint8_t smem_raw[];
  const std::uint32_t raw = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem_raw));
  const std::uint32_t base = (raw + 1023u) & ~1023u;
  const std::uint32_t full0 = base + kStages * kStageBytes, empty0 = full0 + kStages * 8;

  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int grp = tile_group(p, m0, kBM);
  const KSpan span = k_span(p);
  const int nkb = span.end - span.begin;  // stages and barrier phases count from the span's start
  const int tid = threadIdx.x, wg = tid / 128;
  if (tid == 0) init_stage_barriers(full0, empty0, kStages);
  __syncthreads();

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid == 0 && grp >= 0) {
      const int b_row0 = grp * p.N + n0;  // B is mapped as [G * N, K]
      for (int i = 0; i < nkb; ++i) {
        const int s = i % kStages, use = i / kStages, kb = span.begin + i;
        if (use > 0) mbar_wait(empty0 + 8 * s, (use - 1) & 1);  // consumers released its last use
        const std::uint32_t a_s = base + s * kStageBytes, full = full0 + 8 * s;
        mbar_expect_bytes(full, kStageBytes);
        tma_load(a_s, map_a, kb * 128, m0, full);
        tma_load(a_s + kTileBytes, map_b, kb * 128, b_row0, full);
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int cw = wg - 1, warp = (tid % 128) / 32, lane = tid % 32;
    const int r_lo = m0 + cw * 64 + warp * 16 + lane / 4, r_hi = r_lo + 8;
    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    if (grp >= 0) {
      const float* SB = p.sb + grp * p.sb_group_stride;
      float part[64] = {};
      for (int i = 0; i < nkb; ++i) {
        const int s = i % kStages, kb = span.begin + i;
        mbar_wait(full0 + 8 * s, (i / kStages) & 1);
        const std::uint32_t a_addr = base + s * kStageBytes + cw * 64 * 128, b_addr = base + s * kStageBytes + kTileBytes;
        mma_k_block(part, a_addr, b_addr);
        // Scales fetched while the tensor core works.
        const float sa_lo = r_lo < p.M ? p.sa[int64_t(r_lo) * p.KB + kb] : 0.0f;
        const float sa_hi = r_hi < p.M ? p.sa[int64_t(r_hi) * p.KB + kb] : 0.0f;
        const float sb_block = p.b_block_rows == 128 ? SB[int64_t(n0 / 128) * p.KB + kb] : 0.0f;
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        __syncwarp();
        if (lane == 0) mbar_arrive(empty0 + 8 * s);
        promote<kBN>(acc, part, p, SB, n0, kBN, kb, lane, sa_lo, sa_hi, sb_block, 0.0f);
      }
    }
    store_slice<kBN>(acc, p, span.c, r_lo, n0, lane);
  }
#else
  __trap();  // launched only on sm_90 (choose_fp8_gemm_config), built for sm_90a
#endif
}

// cuTensorMapEncodeTiled through the runtime's driver entry point: no link-time dependency on libcuda.
PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || f == nullptr)
      throw std::runtime_error("fp8 GEMM (wgmma-tma): cuTensorMapEncodeTiled is not available from the driver");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

}  // namespace

CUtensorMap make_tma_map(const void* ptr, int64_t rows, int64_t K, int box_rows) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(K), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(K)};
  const cuuint32_t box[2] = {128, cuuint32_t(box_rows)}, steps[2] = {1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(ptr), dims, strides, box, steps,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error("fp8 GEMM (wgmma-tma): cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)) +
                             " for a [" + std::to_string(rows) + ", " + std::to_string(K) + "] operand");
  return map;
}

CUtensorMap make_tma_map_c(float* c, int64_t groups, int64_t M, int64_t N) {
  CUtensorMap map{};
  const cuuint64_t dims[3] = {cuuint64_t(N), cuuint64_t(M), cuuint64_t(groups)};
  const cuuint64_t strides[2] = {cuuint64_t(N) * 4, cuuint64_t(M) * cuuint64_t(N) * 4};
  const cuuint32_t box[3] = {32, 64, 1}, steps[3] = {1, 1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, c, dims, strides, box, steps,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error("fp8 GEMM (wgmma): cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)) +
                             " for a [" + std::to_string(groups) + ", " + std::to_string(M) + ", " + std::to_string(N) +
                             "] output");
  return map;
}

void launch_fp8_gemm_wgmma_tma(const GemmArgs& p, int64_t b_groups, int k_groups, cudaStream_t stream) {
  const CUtensorMap map_a = make_tma_map(p.a, p.M, p.K, kBM), map_b = make_tma_map(p.b, b_groups * p.N, p.K, kBN);
  cuda_detail::check_cuda(
      cudaFuncSetAttribute(fp8_gemm_wgmma_tma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
      "cudaFuncSetAttribute(fp8_gemm_wgmma_tma_kernel)");
  const dim3 grid(static_cast<unsigned>((p.N + kBN - 1) / kBN), static_cast<unsigned>((p.M + kBM - 1) / kBM),
                  static_cast<unsigned>(k_groups));
  fp8_gemm_wgmma_tma_kernel<<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, p);
}

}  // namespace shoestring::ops::gemm_detail
