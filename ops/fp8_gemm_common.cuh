#pragma once
// What the block-scaled FP8 GEMM kernels (fp8_gemm.cu, fp8_gemm_wgmma.cu) share: the launch
// arguments and the group of a tile in the contiguous grouped layout.
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/fp8_gemm_config.h"

namespace shoestring::ops::gemm_detail {

struct GemmArgs {
  const std::uint8_t* a;
  const float* sa;  // [M, KB]
  const std::uint8_t* b;
  const float* sb;  // [NB, KB] (block_rows 128) or [N, KB] (block_rows 1), per group
  float* c;
  int M, N, K, KB;
  int b_block_rows;
  const int* group_of_row;  // nullptr: dense
  int64_t b_group_stride, sb_group_stride;
  // K-grouped (fp8_k_grouped_gemm_cuda): group blockIdx.z sums K blocks [k_block_begin[z],
  // k_block_begin[z + 1]) and writes C + z * c_group_stride. nullptr: all KB blocks, one C.
  const int* k_block_begin;
  int64_t c_group_stride;
  int tile_band;  // the persistent kernels' tile order (fp8_tile_order.h); 1: row by row
};

// The K blocks this block sums and where its C starts (see GemmArgs::k_block_begin).
struct KSpan {
  int begin, end;
  float* c;
};
__device__ inline KSpan k_span(const GemmArgs& p, int z) {
  if (p.k_block_begin == nullptr) return {0, p.KB, p.c};
  return {p.k_block_begin[z], p.k_block_begin[z + 1], p.c + int64_t(z) * p.c_group_stride};
}
// Kernels with one block per tile take the group from grid z.
__device__ inline KSpan k_span(const GemmArgs& p) { return k_span(p, static_cast<int>(blockIdx.z)); }

// The group of the block's rows [m0, m0 + bm): the largest id among them (one group plus -1 padding
// rows, by the layout contract). -1 when the whole tile is padding.
__device__ inline int tile_group(const GemmArgs& p, int m0, int bm) {
  if (p.group_of_row == nullptr) return 0;
  __shared__ int grp;
  if (threadIdx.x == 0) grp = -1;
  __syncthreads();
  for (int r = threadIdx.x; r < bm; r += blockDim.x)
    if (m0 + r < p.M) atomicMax(&grp, p.group_of_row[m0 + r]);
  __syncthreads();
  return grp;
}

__device__ __forceinline__ bool row_live(const GemmArgs& p, int m) {
  return m < p.M && (p.group_of_row == nullptr || p.group_of_row[m] >= 0);
}

// fp8_gemm_wgmma.cu: 128 x 128 tiles, one thread block each, sm_90a only (the caller checks the
// device); B holds b_groups matrices of [N, K] back to back; k_groups is grid z (1 unless k-grouped).
void launch_fp8_gemm_wgmma_tma(const GemmArgs& p, int64_t b_groups, int k_groups, cudaStream_t stream);

// fp8_gemm_wgmma_persistent.cu: the same GEMM in 128 x block_n tiles (block_n 128, 160 or 192) walked
// by at most max_blocks thread blocks (0: one per tile). multicast (block_n 192, not M-grouped, M >
// 128): blocks in pairs share each B tile through TMA multicast. staged_scales (block_n 128, no
// multicast): the scales reach the consumers through shared memory, loaded by a warp of their own.
// tma_store (block_n 128, no multicast): C is written through shared memory by TMA stores.
void launch_fp8_gemm_wgmma_persistent(const GemmArgs& p, int64_t b_groups, int k_groups, const Fp8GemmConfig& cfg,
                                      int max_blocks, cudaStream_t stream);

}  // namespace shoestring::ops::gemm_detail
