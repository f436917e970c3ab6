#include "ops/fp8_gemm_config.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

namespace shoestring::ops {

const char* fp8_gemm_kernel_name(Fp8GemmKernel k) {
  switch (k) {
    case Fp8GemmKernel::kAuto: return "auto";
    case Fp8GemmKernel::kSimt: return "simt";
    case Fp8GemmKernel::kMma: return "mma";
    case Fp8GemmKernel::kWgmmaTma: return "wgmma-tma";
    case Fp8GemmKernel::kWgmmaPersistent: return "wgmma-persistent";
    case Fp8GemmKernel::kWgmmaN160: return "wgmma-n160";
    case Fp8GemmKernel::kWgmmaN192: return "wgmma-n192";
    case Fp8GemmKernel::kWgmmaN192Multicast: return "wgmma-n192-mc";
    case Fp8GemmKernel::kWgmmaBanded: return "wgmma-banded";
    case Fp8GemmKernel::kWgmmaStaged: return "wgmma-staged";
    case Fp8GemmKernel::kWgmmaStore: return "wgmma-store";
    case Fp8GemmKernel::kWgmmaMulticast: return "wgmma-mc";
  }
  return "?";
}

Fp8GemmKernel fp8_gemm_kernel_from_name(const std::string& name) {
  std::string names;
  for (Fp8GemmKernel k : kAllFp8GemmKernels) {
    if (name == fp8_gemm_kernel_name(k)) return k;
    names += std::string(names.empty() ? "" : ", ") + fp8_gemm_kernel_name(k);
  }
  throw std::invalid_argument("unknown FP8 GEMM kernel '" + name + "' (expected one of " + names + ")");
}

bool fp8_gemm_kernel_listed(const std::string& comma_separated, Fp8GemmKernel k) {
  return ("," + comma_separated + ",").find("," + std::string(fp8_gemm_kernel_name(k)) + ",") != std::string::npos;
}

Fp8GemmKernel fp8_gemm_kernel_from_env() {
  static const Fp8GemmKernel k = [] {
    const char* v = std::getenv("SHOESTRING_FP8_GEMM_KERNEL");
    if (v == nullptr || *v == 0) return Fp8GemmKernel::kAuto;
    try {
      return fp8_gemm_kernel_from_name(v);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("SHOESTRING_FP8_GEMM_KERNEL: ") + e.what());
    }
  }();
  return k;
}

std::string Fp8GemmConfig::describe() const {
  return std::string(fp8_gemm_kernel_name(kernel)) + " " + std::to_string(block_m) + "x" + std::to_string(block_n) +
         " (" + std::to_string(threads) + " threads" + (persistent ? ", persistent" : "") +
         (multicast ? ", B multicast to pairs unless M-grouped or M <= 128" : "") +
         (k_splits > 1 ? ", split-K " + std::to_string(k_splits) : "") +
         (tile_band > 1 ? ", tiles in bands of " + std::to_string(tile_band) + " rows" : "") +
         (staged_scales ? ", scales staged in shared memory" : "") +
         (tma_store ? ", C stored by TMA where N % 4 == 0" : "") + ")";
}

Fp8GemmConfig choose_fp8_gemm_config(int64_t M, int64_t N, int64_t K, const Fp8DeviceInfo& dev,
                                     Fp8GemmKernel requested) {
  if (M <= 0 || N <= 0 || K <= 0)
    throw std::invalid_argument("choose_fp8_gemm_config: empty GEMM (M=" + std::to_string(M) + ", N=" +
                                std::to_string(N) + ", K=" + std::to_string(K) + ")");
  Fp8GemmKernel kernel = requested;
  if (kernel == Fp8GemmKernel::kAuto) {
    // On Hopper the persistent 128x128 kernel where its tiles fill the GPU, the one-tile-per-block
    // kernel where they would not: there the persistent one splits K, which won on 2 of the 4 split
    // shapes measured and lost on 2, once by 4x (docs/fp8.md, H100 2026-11-27).
    const int64_t tiles_128 = ((M + 127) / 128) * ((N + 127) / 128);
    kernel = dev.sm == 90 ? (2 * tiles_128 >= dev.num_sms ? Fp8GemmKernel::kWgmmaPersistent : Fp8GemmKernel::kWgmmaTma)
             : dev.sm >= 89 ? Fp8GemmKernel::kMma
                            : Fp8GemmKernel::kSimt;
  }
  const bool wgmma = is_wgmma_kernel(kernel);
  if (wgmma && dev.sm != 90)
    throw std::invalid_argument("choose_fp8_gemm_config: the WGMMA kernel is built for sm_90a and runs on sm_90 only, device is sm_" +
                                std::to_string(dev.sm));
  if (kernel == Fp8GemmKernel::kMma && dev.sm < 89)
    throw std::invalid_argument("choose_fp8_gemm_config: the FP8 tensor-core kernel needs sm_89 or newer, device is sm_" +
                                std::to_string(dev.sm));
  Fp8GemmConfig c;
  c.kernel = kernel;
  c.threads = 256;
  if (kernel == Fp8GemmKernel::kSimt) {
    c.block_m = 64;
    c.block_n = 64;
    return c;
  }
  c.block_n = 128;
  if (wgmma) {
    c.block_m = 128;
    c.multicast = kernel == Fp8GemmKernel::kWgmmaN192Multicast || kernel == Fp8GemmKernel::kWgmmaMulticast;
    c.block_n = kernel == Fp8GemmKernel::kWgmmaN192 || kernel == Fp8GemmKernel::kWgmmaN192Multicast ? 192
                : kernel == Fp8GemmKernel::kWgmmaN160                ? 160
                                                                     : 128;
    c.threads = 384;
    c.persistent = kernel != Fp8GemmKernel::kWgmmaTma;
    if (kernel == Fp8GemmKernel::kWgmmaBanded || kernel == Fp8GemmKernel::kWgmmaStaged ||
        kernel == Fp8GemmKernel::kWgmmaStore)
      c.tile_band = 8;
    if (kernel == Fp8GemmKernel::kWgmmaMulticast) c.tile_band = 4;  // bands of 4 pairs: 8 rows of tiles
    c.staged_scales = kernel == Fp8GemmKernel::kWgmmaStaged;
    c.tma_store = kernel == Fp8GemmKernel::kWgmmaStore;
    if (c.persistent) {
      const int64_t tiles = ((M + 127) / 128) * ((N + c.block_n - 1) / c.block_n), kb = (K + 127) / 128;
      if (2 * tiles < dev.num_sms)
        c.k_splits = static_cast<int>(std::max<int64_t>(1, std::min(dev.num_sms / tiles, kb / 4)));
    }
    return c;
  }
  const int64_t blocks_128 = ((M + 127) / 128) * ((N + 127) / 128);
  c.block_m = blocks_128 >= dev.num_sms ? 128 : 64;
  return c;
}

}  // namespace shoestring::ops
