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
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_gemm_common.cuh"

namespace shoestring::ops::gemm_detail {

namespace {

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
__device__ __forceinline__ void store_slice(const float (&acc)[64], const GemmArgs& p, float* c, int r_lo, int n0,
                                            int lane) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int m = r_lo + 8 * h;
    if (m >= p.M) continue;
    const bool live = row_live(p, m);
    float* row = c + int64_t(m) * p.N;
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

constexpr int kBM = 128, kBN = 128;
constexpr int kStages = 5;
constexpr int kTileBytes = 128 * 128;
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kThreads = 384;  // warpgroup 0: producer; 1 and 2: consumers
constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;  // tiles, alignment, barriers

#ifdef SHOESTRING_HAS_WGMMA
__device__ __forceinline__ void mbar_init(std::uint32_t bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect_bytes(std::uint32_t bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Returns once the barrier's phase with this parity has completed.
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
#endif

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
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);     // the producer's expect_tx arrival (+ the copy's bytes)
      mbar_init(empty0 + 8 * s, 8);    // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");  // visible to the copy engine
  }
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
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int k = 0; k < 4; ++k) wgmma_m64n128k32(part, smem_desc(a_addr + k * 32), smem_desc(b_addr + k * 32), k);
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        // Scales fetched while the tensor core works.
        const float sa_lo = r_lo < p.M ? p.sa[int64_t(r_lo) * p.KB + kb] : 0.0f;
        const float sa_hi = r_hi < p.M ? p.sa[int64_t(r_hi) * p.KB + kb] : 0.0f;
        const float sb_block = p.b_block_rows == 128 ? SB[int64_t(n0 / 128) * p.KB + kb] : 0.0f;
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        __syncwarp();
        if (lane == 0) mbar_arrive(empty0 + 8 * s);
        promote(acc, part, p, SB, n0, kb, lane, sa_lo, sa_hi, sb_block);
      }
    }
    store_slice(acc, p, span.c, r_lo, n0, lane);
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

// A [rows, K] uint8 matrix read in 128 x 128-byte boxes with the 128-byte swizzle; out-of-range
// rows read as zeros.
CUtensorMap make_map(const void* ptr, int64_t rows, int64_t K) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(K), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(K)};
  const cuuint32_t box[2] = {128, 128}, steps[2] = {1, 1};
  const CUresult r = encode_fn()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(ptr), dims, strides, box, steps,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw std::runtime_error("fp8 GEMM (wgmma-tma): cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)) +
                             " for a [" + std::to_string(rows) + ", " + std::to_string(K) + "] operand");
  return map;
}

}  // namespace

void launch_fp8_gemm_wgmma_tma(const GemmArgs& p, int64_t b_groups, int k_groups, cudaStream_t stream) {
  const CUtensorMap map_a = make_map(p.a, p.M, p.K), map_b = make_map(p.b, b_groups * p.N, p.K);
  cuda_detail::check_cuda(
      cudaFuncSetAttribute(fp8_gemm_wgmma_tma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
      "cudaFuncSetAttribute(fp8_gemm_wgmma_tma_kernel)");
  const dim3 grid(static_cast<unsigned>((p.N + kBN - 1) / kBN), static_cast<unsigned>((p.M + kBM - 1) / kBM),
                  static_cast<unsigned>(k_groups));
  fp8_gemm_wgmma_tma_kernel<<<grid, kThreads, kSmemBytes, stream>>>(map_a, map_b, p);
}

}  // namespace shoestring::ops::gemm_detail
