// kWgmmaPersistent, kWgmmaN160, kWgmmaN192, kWgmmaN192Multicast, kWgmmaBanded, kWgmmaStaged,
// kWgmmaStore and kWgmmaMulticast: the Hopper FP8 GEMM of
// fp8_gemm_wgmma.cu (same numerics: each 128-wide K block's partial sum promoted into FP32 with its
// two scales; the same producer warp, consumer warpgroups and setmaxnreg split) on a persistent
// grid, with a choice of tile width. What the one-block-per-tile kernel cannot do:
//
//  * Overlap a tile's end with the next tile's start. Each block walks tiles t = blockIdx.x,
//    blockIdx.x + gridDim.x, ...; the producer and the consumers number K blocks across tiles, so
//    the producer fills the pipeline for the next tile while the consumers still promote and store
//    this one (64 KB of FP32 C at 128 x 128), and no block pays barrier set-up or a cold pipeline per
//    tile. At K = 1536 a tile is only 12 K blocks, and that shape measured the lowest ratio to
//    cuBLASLt (0.54x, H100, docs/fp8.md).
//  * Walk the tiles in bands of rows (kWgmmaBanded; fp8_tile_order.h), so that a wave's operand
//    tiles are shared by more of its blocks while they sit in L2.
//  * Wider tiles. A 128 x 128 tile reads 32 KB of operands per K block for 4.2 MFLOP: about 6.7 TB/s
//    out of L2 at the 864 TFLOPS measured; the H100 profile (docs/fp8.md, 2026-11-27) put the
//    one-tile kernel's L2 throughput at 83% of peak. 128 x 160 reads 10% fewer bytes per FLOP, 128 x 192 17% fewer, and 128 x 192 in
//    pairs of blocks that share each B tile through TMA multicast (kCluster below) 32% fewer.
//
// Registers: two-level accumulation keeps BN / 2 partial and BN / 2 promoted floats per consumer
// thread, 192 at BN = 192, inside setmaxnreg's 232 (ptxas allocates the consumer branch against
// it: the one-tile kernel spills at 168, not at 184). The 1x128-scaled B (Wgrad) is its own
// instantiation, so the block-scaled one carries none of its per-column work.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "ops/fp8_cuda_common.cuh"
#include "ops/fp8_gemm_config.h"
#include "ops/fp8_tile_order.h"
#include "ops/fp8_wgmma.cuh"

namespace shoestring::ops::gemm_detail {

namespace {

constexpr int kBM = 128;
constexpr int kStages = 5;
constexpr int kATileBytes = kBM * 128;
constexpr int kThreads = 384;  // warpgroup 0: the producer; 1 and 2: consumers, 64 rows of C each
template <int BN, bool kStaged = false, bool kTmaStore = false>
struct Tiles {
  static constexpr int kStageBytes = kATileBytes + BN * 128;  // a multiple of 1024: tiles stay aligned
  // kTmaStore: each consumer warpgroup's 64 x 128 FP32 slice of C, after the stages (1024-aligned).
  static constexpr int kCBytes = kTmaStore ? 2 * 64 * 128 * 4 : 0;
  // kStaged: each stage's scales after the tiles: 128 of A (one per row), then BN of B (one per
  // column with 1x128 scales, else the tile's one or two 128x128 blocks).
  static constexpr int kScaleStageBytes = kStaged ? (kBM + BN) * 4 : 0;
  static constexpr int kSmemBytes = kStages * (kStageBytes + kScaleStageBytes) + kCBytes + 1024 + 2 * kStages * 8;
  static_assert(kStageBytes % 1024 == 0 && kSmemBytes <= 227 * 1024);
};

#ifdef SHOESTRING_HAS_WGMMA
// Unit t's first row and column of C and its k-group, in p.tile_band's order (fp8_tile_order.h).
struct TileCoord {
  int m0, n0, z;
};
__device__ __forceinline__ TileCoord tile_coord(int t, int tiles_n, int tiles_m, int bn, int band) {
  const TileIndex i = tile_order(t, tiles_n, tiles_m, band);
  return {i.row * kBM, i.col * bn, i.group};
}
// With 128x128 scales on B: the tile's first scale block, where in the tile the next one starts,
// and whether the tile reaches it (never with 1x128 scales, which are read per column). The scale
// warp and the consumers must agree on it.
struct BScaleBlocks {
  int nb0, split;
  bool second;
};
template <int BN, bool kColumnScales>
__device__ __forceinline__ BScaleBlocks b_scale_blocks(int n0, int N) {
  const int nb0 = n0 / 128, split = 128 - n0 % 128;
  return {nb0, split, !kColumnScales && split < BN && (nb0 + 1) * 128 < N};
}
#endif

// kColumnScales: B has 1x128 scales (the Wgrad), read per column; else 128x128 blocks.
// kStaged: a second warp of the producer warpgroup gathers each stage's scales (128 of A, and B's)
// from global memory into shared memory with cp.async, counted on the stage's "full" barrier, so the
// consumers read them from shared memory instead of each thread issuing its own global loads per K
// block (2 at 128x128 scales, 2 + 32 with B's per-column scales, whose loads wait behind the MMAs).
// kTmaStore: each consumer warpgroup writes its slice of C into shared memory and one thread stores
// it with TMA (store_slice_tma), so the consumers go on to the next tile while the copy engine
// writes C, instead of issuing 32 8-byte global stores per thread. Needs N % 4 == 0 (the launcher
// falls back otherwise).
// kCluster 2: blocks work in pairs on vertically adjacent tiles (rows m0 and m0 + 128, the same
// columns), which need the same B tile: each block loads half of it and the copy engine writes that
// half into both blocks (TMA multicast), so B is read from L2 once per pair. Dense and k-grouped
// GEMMs only (in the M-grouped layout two adjacent tiles may belong to different experts).
template <int BN, bool kColumnScales, int kCluster, bool kStaged, bool kTmaStore>
__global__ void __launch_bounds__(kThreads, 1)
    fp8_gemm_wgmma_persistent_kernel(const __grid_constant__ CUtensorMap map_a,
                                     const __grid_constant__ CUtensorMap map_b,
                                     const __grid_constant__ CUtensorMap map_c, GemmArgs p, int tiles_n, int units_m,
                                     int units) {
#ifdef SHOESTRING_HAS_WGMMA
  using T = Tiles<BN, kStaged, kTmaStore>;
  static_assert(kCluster == 1 || kCluster == 2);
  static_assert(!(kStaged || kTmaStore) || (kCluster == 1 && BN == 128), "staged scales, TMA stores: 128-wide, no cluster");
  constexpr int kBHalfRows = BN / kCluster;  // B rows this block loads per stage (a multiple of 8)
  static_assert((kBHalfRows * 128) % 1024 == 0, "each block's share of B must start on a swizzle period");
  extern __shared__ __align__(1024) std::uint8_t smem_raw[];
  const std::uint32_t raw = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem_raw));
  const std::uint32_t base = (raw + 1023u) & ~1023u;
  const std::uint32_t cbuf0 = base + kStages * T::kStageBytes, scales0 = cbuf0 + T::kCBytes;
  const std::uint32_t full0 = scales0 + kStages * T::kScaleStageBytes, empty0 = full0 + kStages * 8;
  const int tid = threadIdx.x, lane = tid % 32;
  const int rank = kCluster > 1 ? static_cast<int>(cluster_rank()) : 0;
  // Work units: a tile, or a pair of tiles for a cluster (units_m of them per column of tiles).
  const int unit0 = static_cast<int>(blockIdx.x) / kCluster, units_step = static_cast<int>(gridDim.x) / kCluster;
  if (tid == 0) init_stage_barriers(full0, empty0, kStages, kCluster, kStaged ? 32 : 0);
  if constexpr (kCluster > 1) cluster_sync();  // the peer's barriers exist before anything reaches them
  else __syncthreads();

  // Both roles walk the same units and number their K blocks across them (`it`): stage it % kStages,
  // barrier parity (it / kStages) & 1. A tile without work (all padding rows) is skipped by both
  // without counting; an empty k-group has no K blocks to count. A pair's second tile may lie past
  // M: it computes on the copy engine's zero rows and stores nothing, so its peer still gets its
  // half of B.
  if (tid < 128) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid < 32) {  // one producer warp
      int it = 0;
      for (int u = unit0; u < units; u += units_step) {
        TileCoord tc = tile_coord(u, tiles_n, units_m, BN, p.tile_band);
        tc.m0 = tc.m0 * kCluster + rank * kBM;
        const int grp = warp_tile_group(p, tc.m0, lane);
        if (grp < 0) continue;
        const KSpan span = k_span(p, tc.z);
        const int b_row0 = grp * p.N + tc.n0;  // B is mapped as [G * N, K]
        // The whole warp walks the loop (it stays converged for warp_tile_group); lane 0 issues.
        for (int kb = span.begin; kb < span.end; ++kb, ++it) {
          const int s = it % kStages, use = it / kStages;
          // Consumers (of both blocks, with a peer) released its last use.
          if (use > 0) mbar_wait(empty0 + 8 * s, (use - 1) & 1);
          if (lane == 0) {
            const std::uint32_t a_s = base + s * T::kStageBytes, full = full0 + 8 * s;
            mbar_expect_bytes(full, T::kStageBytes);  // A, and all of B (this block's half and the peer's)
            tma_load(a_s, map_a, kb * 128, tc.m0, full);
            const std::uint32_t b_s = a_s + kATileBytes + rank * kBHalfRows * 128;
            if constexpr (kCluster > 1) tma_load_multicast(b_s, map_b, kb * 128, b_row0 + rank * kBHalfRows, full, 0x3);
            else tma_load(b_s, map_b, kb * 128, b_row0, full);
          }
          __syncwarp();
        }
      }
    } else if (kStaged && tid < 64) {  // the scale warp: the producer's walk, loading scales
      int it = 0;
      for (int u = unit0; u < units; u += units_step) {
        const TileCoord tc = tile_coord(u, tiles_n, units_m, BN, p.tile_band);
        const int grp = warp_tile_group(p, tc.m0, lane);
        if (grp < 0) continue;
        const KSpan span = k_span(p, tc.z);
        const float* SB = p.sb + grp * p.sb_group_stride;
        const auto [nb0, split, second] = b_scale_blocks<BN, kColumnScales>(tc.n0, p.N);
        for (int kb = span.begin; kb < span.end; ++kb, ++it) {
          const int s = it % kStages, use = it / kStages;
          if (use > 0) mbar_wait(empty0 + 8 * s, (use - 1) & 1);
          const std::uint32_t sa_s = scales0 + s * T::kScaleStageBytes, sb_s = sa_s + kBM * 4;
          // Not unrolled: this warpgroup runs on 40 registers (setmaxnreg), and the unrolled
          // addresses spilled.
#pragma unroll 1
          for (int i = 0; i < kBM / 32; ++i) {
            const int r = tc.m0 + lane + 32 * i;
            cp_async_4(sa_s + 4 * (lane + 32 * i), p.sa + (r < p.M ? int64_t(r) * p.KB + kb : 0), r < p.M);
          }
          if constexpr (kColumnScales) {
#pragma unroll 1
            for (int i = 0; i < BN / 32; ++i) {
              const int n = tc.n0 + lane + 32 * i;
              cp_async_4(sb_s + 4 * (lane + 32 * i), SB + (n < p.N ? int64_t(n) * p.KB + kb : 0), n < p.N);
            }
          } else if (lane < 2) {
            const bool valid = lane == 0 || second;
            cp_async_4(sb_s + 4 * lane, SB + (valid ? int64_t(nb0 + lane) * p.KB + kb : 0), valid);
          }
          cp_async_arrive(full0 + 8 * s);
        }
      }
      asm volatile("cp.async.wait_all;\n" ::: "memory");  // no copy outlives its issuing thread
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int cw = tid / 128 - 1, warp = (tid % 128) / 32;
    int it = 0;
    for (int u = unit0; u < units; u += units_step) {
      TileCoord tc = tile_coord(u, tiles_n, units_m, BN, p.tile_band);
      tc.m0 = tc.m0 * kCluster + rank * kBM;
      const int grp = warp_tile_group(p, tc.m0, lane);
      const KSpan span = k_span(p, tc.z);
      const int r_lo = tc.m0 + cw * 64 + warp * 16 + lane / 4, r_hi = r_lo + 8;
      float acc[BN / 2];
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
      if (grp >= 0) {
        const float* SB = p.sb + grp * p.sb_group_stride;
        const auto [nb0, split, second] = b_scale_blocks<BN, kColumnScales>(tc.n0, p.N);
        float part[BN / 2];
        for (int kb = span.begin; kb < span.end; ++kb, ++it) {
          const int s = it % kStages;
          mbar_wait(full0 + 8 * s, (it / kStages) & 1);
          const std::uint32_t a_addr = base + s * T::kStageBytes + cw * 64 * 128,
                              b_addr = base + s * T::kStageBytes + kATileBytes;
          mma_k_block(part, a_addr, b_addr);
          // Scales fetched while the tensor core works (staged: from this stage's shared memory,
          // which the stage's release below hands back).
          float sa_lo, sa_hi, sb0 = 0.0f, sb1 = 0.0f;
          [[maybe_unused]] float sbc[kStaged && kColumnScales ? BN / 4 : 1];
          if constexpr (kStaged) {
            const std::uint32_t sa_s = scales0 + s * T::kScaleStageBytes, sb_s = sa_s + kBM * 4;
            const int row = cw * 64 + warp * 16 + lane / 4;
            sa_lo = ld_shared(sa_s + 4 * row);
            sa_hi = ld_shared(sa_s + 4 * (row + 8));
            if constexpr (kColumnScales) {
#pragma unroll
              for (int j = 0; j < BN / 8; ++j) {
                const float2 v = ld_shared2(sb_s + 4 * (8 * j + 2 * (lane % 4)));
                sbc[2 * j] = v.x;
                sbc[2 * j + 1] = v.y;
              }
            } else {
              sb0 = ld_shared(sb_s);
              sb1 = ld_shared(sb_s + 4);
            }
          } else {
            sa_lo = r_lo < p.M ? p.sa[int64_t(r_lo) * p.KB + kb] : 0.0f;
            sa_hi = r_hi < p.M ? p.sa[int64_t(r_hi) * p.KB + kb] : 0.0f;
            if constexpr (!kColumnScales) sb0 = SB[int64_t(nb0) * p.KB + kb];
            sb1 = second ? SB[int64_t(nb0 + 1) * p.KB + kb] : 0.0f;
          }
          asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
          __syncwarp();
          if (lane == 0) {
            mbar_arrive(empty0 + 8 * s);
            // The peer's copies wrote into this stage too: its producer waits for these consumers as well.
            if constexpr (kCluster > 1) mbar_arrive_remote(cluster_address(empty0 + 8 * s, rank ^ 1));
          }
          if constexpr (kStaged && kColumnScales) promote_staged_columns<BN>(acc, part, sbc, sa_lo, sa_hi);
          else if constexpr (kColumnScales) promote_column_scales<BN>(acc, part, p, SB, tc.n0, kb, lane, sa_lo, sa_hi);
          else promote_block_scales<BN>(acc, part, split, sa_lo, sa_hi, sb0, sb1);
        }
      }
      if constexpr (kTmaStore)
        store_slice_tma(acc, p, map_c, cbuf0 + cw * (T::kCBytes / 2), tc.m0 + cw * 64, tc.n0, tc.z,
                        warp * 16 + lane / 4, lane, 1 + cw, tid % 128 == 0);
      else store_slice<BN>(acc, p, span.c, r_lo, tc.n0, lane);
    }
    if constexpr (kTmaStore)
      if (tid % 128 == 0) bulk_wait();  // the shared memory the stores read lives until they are done
  }
  // No block may leave while its peer can still arrive on its barriers.
  if constexpr (kCluster > 1) cluster_sync();
#else
  __trap();  // launched only on sm_90 (choose_fp8_gemm_config), built for sm_90a
#endif
}

template <int BN, bool kColumnScales, int kCluster, bool kStaged = false, bool kTmaStore = false>
void launch_tiles(const GemmArgs& p, int64_t b_groups, int k_groups, int max_blocks, cudaStream_t stream) {
  const CUtensorMap map_a = make_tma_map(p.a, p.M, p.K, kBM),
                    map_b = make_tma_map(p.b, b_groups * p.N, p.K, BN / kCluster),
                    map_c = kTmaStore ? make_tma_map_c(p.c, k_groups, p.M, p.N) : CUtensorMap{};
  const auto kernel = fp8_gemm_wgmma_persistent_kernel<BN, kColumnScales, kCluster, kStaged, kTmaStore>;
  constexpr int smem_bytes = Tiles<BN, kStaged, kTmaStore>::kSmemBytes;
  cuda_detail::check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes),
      "cudaFuncSetAttribute(fp8_gemm_wgmma_persistent_kernel)");
  const int64_t tiles_n = (int64_t(p.N) + BN - 1) / BN, tiles_m = (int64_t(p.M) + kBM - 1) / kBM;
  const int64_t units_m = (tiles_m + kCluster - 1) / kCluster;
  const int64_t units = tiles_n * units_m * k_groups;
  // Half of int32: a block's next unit index (u + gridDim.x) must not overflow either.
  if (units > INT32_MAX / 2) throw std::invalid_argument("fp8 GEMM (wgmma-persistent): more than 2^30 tiles");
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attr{};
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  int64_t clusters = max_blocks > 0 ? std::max<int64_t>(1, max_blocks / kCluster) : units;
  if constexpr (kCluster > 1) {
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = kCluster;
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    config.attrs = &attr;
    config.numAttrs = 1;
    // Pairs must sit in one GPC: fewer of them fit at once than SMs / 2. A persistent grid larger
    // than what fits would run a second, serial wave. Asked once per process (one kind of GPU).
    config.gridDim = dim3(static_cast<unsigned>(kCluster * std::min(clusters, units)));
    static const int fit = [&] {
      int n = 0;
      cuda_detail::check_cuda(cudaOccupancyMaxActiveClusters(&n, kernel, &config),
                              "cudaOccupancyMaxActiveClusters(fp8_gemm_wgmma_persistent_kernel)");
      return n;
    }();
    if (fit < 1) return launch_tiles<BN, kColumnScales, 1>(p, b_groups, k_groups, max_blocks, stream);  // unpaired
    if (max_blocks > 0) clusters = std::min<int64_t>(clusters, fit);
  }
  config.gridDim = dim3(static_cast<unsigned>(kCluster * std::min(clusters, units)));
  cuda_detail::check_cuda(cudaLaunchKernelEx(&config, kernel, map_a, map_b, map_c, p, static_cast<int>(tiles_n),
                                             static_cast<int>(units_m), static_cast<int>(units)),
                          "fp8_gemm_wgmma_persistent_kernel");
}

}  // namespace

void launch_fp8_gemm_wgmma_persistent(const GemmArgs& p, int64_t b_groups, int k_groups, const Fp8GemmConfig& cfg,
                                      int max_blocks, cudaStream_t stream) {
  const bool columns = p.b_block_rows == 1;
  const int block_n = cfg.block_n;
  const bool multicast = cfg.multicast;
  if (cfg.staged_scales || cfg.tma_store) {
    if (block_n != 128 || multicast || (cfg.staged_scales && cfg.tma_store))
      throw std::invalid_argument(
          "fp8 GEMM (wgmma-persistent): staged scales or TMA stores (not both) need 128-wide tiles without multicast");
    // TMA writes rows of C whose strides are multiples of 16 bytes.
    const bool store = cfg.tma_store && p.N % 4 == 0 && reinterpret_cast<std::uintptr_t>(p.c) % 16 == 0;
    if (cfg.staged_scales && columns) launch_tiles<128, true, 1, true>(p, b_groups, k_groups, max_blocks, stream);
    else if (cfg.staged_scales) launch_tiles<128, false, 1, true>(p, b_groups, k_groups, max_blocks, stream);
    else if (store && columns) launch_tiles<128, true, 1, false, true>(p, b_groups, k_groups, max_blocks, stream);
    else if (store) launch_tiles<128, false, 1, false, true>(p, b_groups, k_groups, max_blocks, stream);
    else if (columns) launch_tiles<128, true, 1>(p, b_groups, k_groups, max_blocks, stream);
    else launch_tiles<128, false, 1>(p, b_groups, k_groups, max_blocks, stream);
    return;
  }
  // The M-grouped layout never pairs tiles: two adjacent ones may need different experts' B. Nor
  // does a single row of tiles (M <= 128, the split-K shapes), whose pairs would be half zeros.
  if (multicast && p.group_of_row == nullptr && block_n == 192 && p.M > kBM) {
    if (columns) launch_tiles<192, true, 2>(p, b_groups, k_groups, max_blocks, stream);
    else launch_tiles<192, false, 2>(p, b_groups, k_groups, max_blocks, stream);
  } else if (multicast && p.group_of_row == nullptr && block_n == 128 && p.M > kBM) {
    if (columns) launch_tiles<128, true, 2>(p, b_groups, k_groups, max_blocks, stream);
    else launch_tiles<128, false, 2>(p, b_groups, k_groups, max_blocks, stream);
  } else if (block_n == 128 && columns) launch_tiles<128, true, 1>(p, b_groups, k_groups, max_blocks, stream);
  else if (block_n == 128) launch_tiles<128, false, 1>(p, b_groups, k_groups, max_blocks, stream);
  else if (block_n == 160 && columns) launch_tiles<160, true, 1>(p, b_groups, k_groups, max_blocks, stream);
  else if (block_n == 160) launch_tiles<160, false, 1>(p, b_groups, k_groups, max_blocks, stream);
  else if (block_n == 192 && columns) launch_tiles<192, true, 1>(p, b_groups, k_groups, max_blocks, stream);
  else if (block_n == 192) launch_tiles<192, false, 1>(p, b_groups, k_groups, max_blocks, stream);
  else throw std::invalid_argument("fp8 GEMM (wgmma-persistent): block_n must be 128, 160 or 192, got " +
                                   std::to_string(block_n));
}

}  // namespace shoestring::ops::gemm_detail
