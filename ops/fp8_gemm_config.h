#pragma once
// Tile configuration of our block-scaled FP8 GEMM kernels, chosen by a pure function of the shape and
// the device (DeepGEMM's launcher shape: validate -> choose config -> launch). No CUDA needed: the
// heuristic has its own CPU test (tests/ops/test_fp8_gemm_config.cpp).
#include <cstdint>
#include <string>

namespace shoestring::ops {

enum class Fp8GemmKernel {
  kAuto,  // let choose_fp8_gemm_config decide
  kSimt,  // CUDA cores: decode to float, FMA; any sm_80+ GPU; the numerically simplest kernel
  kMma,   // tensor cores: mma.sync m16n8k32 e4m3 (sm_89+), FP32 promotion every 128 of K
  kWgmmaTma,  // Hopper warpgroup MMA, TMA loads by a producer warp, two consumer warpgroups (sm_90, built sm_90a)
  // The WGMMA GEMM on a persistent grid (one block per SM walks the tiles, so the producer loads the
  // next tile while the consumers write the last one; fp8_gemm_wgmma_persistent.cu) with 128-, 160-
  // and 192-wide tiles (wider tiles read fewer operand bytes per FLOP), and 192-wide in pairs of
  // blocks sharing each B tile through TMA multicast. kAuto chooses kWgmmaPersistent where its tiles
  // fill the GPU (measured on an H100); the wider ones stay candidates.
  kWgmmaPersistent,
  kWgmmaN160,
  kWgmmaN192,
  kWgmmaN192Multicast,
  // kWgmmaPersistent walking its tiles in bands of 8 rows (fp8_tile_order.h), for L2 reuse: the
  // H100 profile of the 128x128 kernel was bound by L2 with a 68% hit rate. A candidate.
  kWgmmaBanded,
  // kWgmmaBanded with the scales staged in shared memory by a warp of the producer warpgroup
  // (cp.async, counted on each stage's "full" barrier) instead of per-thread global loads in the
  // consumers' K loop: 32 loads per thread per K block with B's 1x128 scales (the Wgrad, measured at
  // 0.43-0.53x cuBLAS BF16 against the block-scaled GEMM's 1.0-1.2x). A candidate.
  kWgmmaStaged,
  // kWgmmaBanded writing C through shared memory with TMA stores (N % 4 == 0; else as kWgmmaBanded),
  // so that the consumers start the next tile while the copy engine writes this one: at K = 1536
  // and 2048 a tile's 64 KB of FP32 C is large beside its 12-16 K blocks. A candidate.
  kWgmmaStore,
  // kWgmmaPersistent in pairs of blocks sharing each B tile through TMA multicast (as
  // kWgmmaN192Multicast, at 128 wide: 25% fewer operand bytes per FLOP out of L2 than unpaired
  // 128 x 128, with 64 + 64 accumulators per thread), pairs walked in bands of 4 (8 rows of tiles).
  // A candidate.
  kWgmmaMulticast,
};

inline constexpr Fp8GemmKernel kAllFp8GemmKernels[] = {
    Fp8GemmKernel::kAuto,     Fp8GemmKernel::kSimt,             Fp8GemmKernel::kMma,
    Fp8GemmKernel::kWgmmaTma, Fp8GemmKernel::kWgmmaPersistent, Fp8GemmKernel::kWgmmaN160,
    Fp8GemmKernel::kWgmmaN192, Fp8GemmKernel::kWgmmaN192Multicast, Fp8GemmKernel::kWgmmaBanded,
    Fp8GemmKernel::kWgmmaStaged, Fp8GemmKernel::kWgmmaStore, Fp8GemmKernel::kWgmmaMulticast};

// The Hopper WGMMA kernels (sm_90a).
inline bool is_wgmma_kernel(Fp8GemmKernel k) {
  return k == Fp8GemmKernel::kWgmmaTma || k == Fp8GemmKernel::kWgmmaPersistent || k == Fp8GemmKernel::kWgmmaN160 ||
         k == Fp8GemmKernel::kWgmmaN192 || k == Fp8GemmKernel::kWgmmaN192Multicast || k == Fp8GemmKernel::kWgmmaBanded ||
         k == Fp8GemmKernel::kWgmmaStaged || k == Fp8GemmKernel::kWgmmaStore || k == Fp8GemmKernel::kWgmmaMulticast;
}

const char* fp8_gemm_kernel_name(Fp8GemmKernel k);
// The inverse of fp8_gemm_kernel_name; throws std::invalid_argument listing the names.
Fp8GemmKernel fp8_gemm_kernel_from_name(const std::string& name);
// Whether k's name is one of the comma-separated names (the test and bench kernel filters).
bool fp8_gemm_kernel_listed(const std::string& comma_separated, Fp8GemmKernel k);

// SHOESTRING_FP8_GEMM_KERNEL (auto, simt, mma, wgmma-tma, wgmma-persistent, wgmma-n160, wgmma-n192,
// wgmma-n192-mc, wgmma-banded, wgmma-staged, wgmma-store, wgmma-mc), read once: what kAuto means for this process. A way to compare kernels in a real
// run, or to step around one; unset means auto.
Fp8GemmKernel fp8_gemm_kernel_from_env();

struct Fp8GemmConfig {
  Fp8GemmKernel kernel = Fp8GemmKernel::kSimt;
  int block_m = 64;   // rows of C per thread block
  int block_n = 64;   // columns of C per thread block (kMma: always 128 = one weight scale block)
  int threads = 256;
  bool persistent = false;  // at most one block per SM, each walking tiles (the kWgmma* candidates)
  bool multicast = false;   // blocks in pairs sharing B tiles (kWgmma*Multicast; not M-grouped, M > 128)
  // Split-K for a dense GEMM whose tiles fill less than half the GPU (M = 128 decode-like shapes):
  // K is cut into k_splits spans of whole 128-blocks (at least 4 each), each span's partial C is
  // computed as one group of the k-grouped launch, and the partials are summed in a fixed order.
  // The persistent candidates only; the launcher ignores it for grouped and k-grouped GEMMs.
  int k_splits = 1;
  int tile_band = 1;  // persistent kernels: rows of tiles per band of their walk (fp8_tile_order.h); 1: row by row
  bool staged_scales = false;  // kWgmmaStaged: scales reach the consumers through shared memory
  bool tma_store = false;      // kWgmmaStore: C written through shared memory by TMA stores
  std::string describe() const;
};

struct Fp8DeviceInfo {
  int sm = 90;         // compute capability as major*10 + minor
  int num_sms = 132;   // H100 SXM / H200
};

// requested == kAuto picks the kernel from the device and shape: on sm_90 (Hopper) kWgmmaPersistent
// when M x N has at least half as many 128x128 tiles as the GPU has SMs, else kWgmmaTma (no split-K);
// kMma on other sm >= 89, else kSimt. A forced kernel the device lacks throws std::invalid_argument (the WGMMA
// kernel's sm_90a instructions exist on sm_90 only; kMma's need sm_89).
// Tile size: kWgmmaTma, kWgmmaPersistent, kWgmmaBanded, kWgmmaStaged, kWgmmaStore (the last three in
// bands of 8 rows) and kWgmmaMulticast (pairs, bands of 4 pairs) 128x128, kWgmmaN160 128x160, kWgmmaN192(Multicast) 128x192. kMma
// uses 128x128 tiles when that already fills the GPU (>= one wave of blocks), else 64x128 to double
// the number of blocks for small M (decode-like shapes).
Fp8GemmConfig choose_fp8_gemm_config(int64_t M, int64_t N, int64_t K, const Fp8DeviceInfo& dev,
                                     Fp8GemmKernel requested = Fp8GemmKernel::kAuto);

}  // namespace shoestring::ops
