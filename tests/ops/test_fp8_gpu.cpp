// Every FP8 CUDA kernel against its CPU reference (label gpu). Skips with cuda_status()'s reason
// when this binary or machine has no usable GPU, so it is safe to run everywhere.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/SequenceNumber.h>

#include <algorithm>
#include <array>
#include <optional>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "ops/calc_diff.h"
#include "ops/cuda_runtime.h"
#include "tests/gpu_skip.h"
#include "ops/fp8_blas_baseline.h"
#include "ops/fp8_gemm.h"
#include "ops/fp8_linear.h"
#include "ops/fp8_rows.h"
#include "ops/weight_grad_slot.h"

#ifdef SHOESTRING_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using namespace shoestring::ops;

class Fp8Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    SHOESTRING_SKIP_WITHOUT_GPU();
  }
  static at::Tensor cuda(const at::Tensor& t) { return t.to(at::Device(at::kCUDA, 0)); }
  static Fp8Tensor to_cpu(const Fp8Tensor& q) { return {q.data.cpu(), q.scale.cpu(), q.block_rows}; }
  static Fp8Tensor to_cuda(const Fp8Tensor& q) { return {cuda(q.data), cuda(q.scale), q.block_rows}; }
  // linear(x, w) and its gradients for the loss sum(y * probe), computed on CUDA and on the CPU
  // from the same inputs; returns calc_diff of y, dx and dw between the two, after printing them.
  // The quantized operands are bit-identical on both sides, so only the GEMMs' accumulation differs.
  template <typename Linear>
  static std::array<double, 3> cuda_vs_cpu(const char* what, const at::Tensor& x, const at::Tensor& w,
                                           const at::Tensor& probe, Linear linear, at::Tensor* dw_cuda = nullptr) {
    std::array<at::Tensor, 3> out[2];
    for (int on_gpu = 0; on_gpu < 2; ++on_gpu) {
      // Fresh leaves on both sides: requires_grad_ on x itself would make cuda(x) a non-leaf.
      const at::Tensor xi = (on_gpu ? cuda(x) : x.clone()).requires_grad_(),
                       wi = (on_gpu ? cuda(w) : w.clone()).requires_grad_();
      const at::Tensor y = linear(xi, wi);
      (y * (on_gpu ? cuda(probe) : probe)).sum().backward();
      out[on_gpu] = {y.detach().cpu(), xi.grad().cpu(), wi.grad().cpu()};
    }
    if (dw_cuda != nullptr) *dw_cuda = out[1][2];
    std::array<double, 3> d{};
    for (size_t i = 0; i < 3; ++i) d[i] = calc_diff(out[1][i], out[0][i]);
    std::cout << "[measured] " << what << " CUDA vs CPU: calc_diff y " << d[0] << " dx " << d[1] << " dw " << d[2] << "\n";
    return d;
  }
  static bool same_bits(const Fp8Tensor& gpu, const Fp8Tensor& cpu) {
    const Fp8Tensor g = to_cpu(gpu);
    return g.block_rows == cpu.block_rows && g.data.sizes() == cpu.data.sizes() &&
           g.scale.sizes() == cpu.scale.sizes() && at::equal(g.data.view(at::kByte), cpu.data.view(at::kByte)) &&
           at::equal(g.scale, cpu.scale);
  }
};

#ifdef SHOESTRING_WITH_CUDA
int device_sm() {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  return prop.major * 10 + prop.minor;
}
#else
int device_sm() { return 0; }
#endif

// The tensor-core kernels this device can run: mma.sync from sm_89, WGMMA (built sm_90a) on sm_90.
// The persistent WGMMA candidates run twice: on their own grid (one block per SM, which the small
// test shapes rarely exceed) and on 3 blocks, so that every block walks many tiles and the pipeline's
// stages and barrier phases carry over from one tile to the next at odd offsets. The multicast ones
// run in pairs of blocks (3 blocks make one pair), so they also run on 5: two pairs taking turns.
struct KernelRun {
  Fp8GemmKernel kernel;
  int blocks;  // SHOESTRING_FP8_GEMM_BLOCKS for this run; 0: unset
  std::string name() const {
    return std::string(fp8_gemm_kernel_name(kernel)) + (blocks > 0 ? " on " + std::to_string(blocks) + " blocks" : "");
  }
};
// SHOESTRING_FP8_TEST_KERNELS (kernel names, comma-separated) limits the runs to those kernels, so
// bench/gpu/run.sh can test untried candidates in processes of their own.
std::vector<KernelRun> tensor_core_runs() {
  std::vector<KernelRun> runs;
  if (device_sm() >= 89) runs.push_back({Fp8GemmKernel::kMma, 0});
  if (device_sm() == 90) {
    runs.push_back({Fp8GemmKernel::kWgmmaTma, 0});
    for (Fp8GemmKernel k : {Fp8GemmKernel::kWgmmaPersistent, Fp8GemmKernel::kWgmmaN160, Fp8GemmKernel::kWgmmaN192,
                            Fp8GemmKernel::kWgmmaN192Multicast, Fp8GemmKernel::kWgmmaBanded,
                            Fp8GemmKernel::kWgmmaStaged, Fp8GemmKernel::kWgmmaStore, Fp8GemmKernel::kWgmmaMulticast})
      for (int blocks : {0, 3}) runs.push_back({k, blocks});
    runs.push_back({Fp8GemmKernel::kWgmmaN192Multicast, 5});
    runs.push_back({Fp8GemmKernel::kWgmmaMulticast, 5});
  }
  if (const char* only = std::getenv("SHOESTRING_FP8_TEST_KERNELS"))
    std::erase_if(runs, [&](const KernelRun& r) { return !fp8_gemm_kernel_listed(only, r.kernel); });
  return runs;
}
// Sets SHOESTRING_FP8_GEMM_BLOCKS (read by every launch) for one scope.
class BlocksEnv {
 public:
  explicit BlocksEnv(int blocks) {
    if (blocks > 0) setenv("SHOESTRING_FP8_GEMM_BLOCKS", std::to_string(blocks).c_str(), 1);
  }
  ~BlocksEnv() { unsetenv("SHOESTRING_FP8_GEMM_BLOCKS"); }
  BlocksEnv(const BlocksEnv&) = delete;
  BlocksEnv& operator=(const BlocksEnv&) = delete;
};

TEST_F(Fp8Gpu, QuantizersAreBitIdenticalToCpu) {
  at::manual_seed(21);
  for (auto [R, C] : {std::pair<int64_t, int64_t>{256, 512}, {77, 300}, {1, 128}, {130, 129}}) {
    const at::Tensor x = at::randn({R, C}) * at::exp(at::randn({R, 1}) * 2);
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      const at::Tensor xd = x.to(dt);  // the CPU reference sees the same (rounded) values
      SCOPED_TRACE(std::to_string(R) + "x" + std::to_string(C) + " " + c10::toString(dt));
      EXPECT_TRUE(same_bits(quantize_1x128_cuda(cuda(xd)), quantize_1x128(xd)));
      EXPECT_TRUE(same_bits(quantize_1x128_transposed_cuda(cuda(xd)), quantize_1x128_transposed(xd)));
      EXPECT_TRUE(same_bits(quantize_128x128_cuda(cuda(xd)), quantize_128x128(xd)));
      EXPECT_TRUE(same_bits(quantize_128x128_transposed_cuda(cuda(xd)), quantize_128x128_transposed(xd)));
    }
  }
  const at::Tensor w = at::randn({3, 256, 384});
  EXPECT_TRUE(same_bits(quantize_128x128_cuda(cuda(w)), quantize_128x128(w)));
  EXPECT_TRUE(same_bits(quantize_1x128_cuda(cuda(at::zeros({4, 256}))), quantize_1x128(at::zeros({4, 256}))));
}

// The kernels take a vectorised path (16-byte loads) when the input pointer is 16-byte aligned and
// C % 8 == 0, else a scalar one. These cases put each path through partial tiles, partial 16-row
// chunks of the transposed output (R % 16 != 0), storage offsets and grouped bf16 weights.
TEST_F(Fp8Gpu, QuantizersAreBitIdenticalToCpuOnEdgeShapesAndOffsets) {
  at::manual_seed(27);
  auto check_all = [&](const at::Tensor& xd_gpu, const at::Tensor& xd_cpu, const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_TRUE(same_bits(quantize_1x128_cuda(xd_gpu), quantize_1x128(xd_cpu)));
    EXPECT_TRUE(same_bits(quantize_1x128_transposed_cuda(xd_gpu), quantize_1x128_transposed(xd_cpu)));
    EXPECT_TRUE(same_bits(quantize_128x128_cuda(xd_gpu), quantize_128x128(xd_cpu)));
    EXPECT_TRUE(same_bits(quantize_128x128_transposed_cuda(xd_gpu), quantize_128x128_transposed(xd_cpu)));
  };
  for (auto [R, C] : {std::pair<int64_t, int64_t>{200, 264}, {144, 136}, {3, 8}, {384, 1024}, {129, 1032},
                      {40, 12}, {257, 250}}) {
    const at::Tensor x = at::randn({R, C}) * at::exp(at::randn({R, 1}) * 2);
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      const at::Tensor xd = x.to(dt);
      const std::string name = std::to_string(R) + "x" + std::to_string(C) + " " + c10::toString(dt);
      check_all(cuda(xd), xd, name);
      // Same values at a storage offset of 1 element (unaligned: scalar path) and of 16 bytes.
      for (int64_t off : {int64_t(1), int64_t(16) / static_cast<int64_t>(c10::elementSize(dt))}) {
        const at::Tensor flat = at::zeros({off + R * C}, xd.options().device(at::kCUDA));
        flat.narrow(0, off, R * C).copy_(cuda(xd).reshape({-1}));
        const at::Tensor view = flat.narrow(0, off, R * C).view({R, C});
        ASSERT_TRUE(view.is_contiguous());
        ASSERT_EQ(view.storage_offset(), off);
        check_all(view, xd, name + " storage offset " + std::to_string(off));
      }
    }
  }
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    const at::Tensor w = (at::randn({3, 200, 264}) * at::exp(at::randn({3, 1, 1}))).to(dt);
    EXPECT_TRUE(same_bits(quantize_128x128_cuda(cuda(w)), quantize_128x128(w))) << c10::toString(dt);
  }
}

// With a tile's amax exactly 448 the multiplier is 448/448 = 1, so the encoder sees the values
// themselves: every sign, every float exponent that encodes to a non-zero code (and a few that
// underflow), the seven mantissa bits below the kept ones in all combinations (all rounding ties
// of normal and subnormal codes) and several patterns of the bits below them (exact ties, just
// above, just below). The GPU encoder must agree with encode_e4m3 on each.
TEST_F(Fp8Gpu, QuantizerEncoderMatchesCpuOnEveryRoundingBoundary) {
  std::vector<float> vals;
  for (std::uint32_t sign : {0u, 0x80000000u})
    for (int fexp = -14; fexp <= 8; ++fexp)
      for (std::uint32_t hi = 0; hi < 128; ++hi)
        for (std::uint32_t lo : {0u, 1u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
          const std::uint32_t bits = sign | (static_cast<std::uint32_t>(fexp + 127) << 23) | (hi << 16) | lo;
          float v;
          std::memcpy(&v, &bits, sizeof v);
          if (std::fabs(v) <= 448.0f) vals.push_back(v);
        }
  for (float v : {0.0f, -0.0f, 1e-40f, -1e-40f, 448.0f, -448.0f, 447.99997f, -447.99997f}) vals.push_back(v);
  const int64_t per_tile = 127, tiles = (static_cast<int64_t>(vals.size()) + per_tile - 1) / per_tile;
  at::Tensor x = at::zeros({tiles, 128});
  float* p = x.data_ptr<float>();
  for (int64_t t = 0; t < tiles; ++t) {
    p[t * 128] = 448.0f;  // the tile's amax
    for (int64_t j = 0; j < per_tile && t * per_tile + j < static_cast<int64_t>(vals.size()); ++j)
      p[t * 128 + 1 + j] = vals[t * per_tile + j];
  }
  EXPECT_TRUE(same_bits(quantize_1x128_cuda(cuda(x)), quantize_1x128(x)));
  EXPECT_TRUE(same_bits(quantize_128x128_cuda(cuda(x)), quantize_128x128(x)));
  const at::Tensor xt = x.t().contiguous();  // the same tiles as columns
  EXPECT_TRUE(same_bits(quantize_1x128_transposed_cuda(cuda(xt)), quantize_1x128_transposed(xt)));
  EXPECT_TRUE(same_bits(quantize_128x128_transposed_cuda(cuda(xt)), quantize_128x128_transposed(xt)));
}

TEST_F(Fp8Gpu, PackedFp8RowsAreBitIdenticalToCpu) {
  // The expert-parallel FP8 dispatch packs on the GPU and unpacks with ATen ops there: both must
  // give the CPU bytes and values exactly (bf16 rows, the training dtype; float for the reference).
  at::manual_seed(22);
  for (int64_t d : {int64_t(128), int64_t(130), int64_t(7168)}) {
    const at::Tensor x = at::randn({33, d}) * at::exp(at::randn({33, 1}) * 2);
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      SCOPED_TRACE(std::to_string(d) + " " + c10::toString(dt));
      const at::Tensor xd = x.to(dt);
      const at::Tensor gpu = pack_fp8_rows(cuda(xd)), cpu = pack_fp8_rows(xd);
      EXPECT_TRUE(gpu.is_cuda());
      EXPECT_TRUE(at::equal(gpu.cpu(), cpu));
      EXPECT_TRUE(at::equal(unpack_fp8_rows(gpu, d, at::kFloat).cpu(), unpack_fp8_rows(cpu, d, at::kFloat)));
    }
  }
  EXPECT_EQ(pack_fp8_rows(cuda(at::zeros({0, 130}))).sizes(), at::IntArrayRef({0, 138}));
}

struct GemmCase {
  int64_t M, N, K;
  bool wgrad;  // B with 1x128 scales
};

TEST_F(Fp8Gpu, DenseGemmKernelsMatchReference) {
  at::manual_seed(22);
  for (const GemmCase& gc : {GemmCase{256, 384, 512, false}, GemmCase{77, 130, 256, false},
                             GemmCase{1, 128, 128, false}, GemmCase{320, 256, 1024, false},
                             GemmCase{192, 96, 384, true}, GemmCase{300, 520, 2048, false},
                             GemmCase{129, 257, 640, false}, GemmCase{256, 200, 512, true},
                             // 10 rows of tiles: wgmma-banded's bands of 8 and a shorter last band.
                             GemmCase{1200, 300, 256, false}}) {
    SCOPED_TRACE("M=" + std::to_string(gc.M) + " N=" + std::to_string(gc.N) + " K=" + std::to_string(gc.K));
    const at::Tensor x = at::randn({gc.M, gc.K}), w = at::randn({gc.N, gc.K}) * 0.05;
    const Fp8Tensor qa = quantize_1x128(x), qb = gc.wgrad ? quantize_1x128(w) : quantize_128x128(w);
    const at::Tensor ref = fp8_gemm_reference(qa, qb);
    const at::Tensor simt = fp8_gemm_cuda(to_cuda(qa), to_cuda(qb), Fp8GemmKernel::kSimt).cpu();
    const double d_simt = calc_diff(simt, ref);
    EXPECT_LE(d_simt, kFp8Tol.gpu_simt_vs_reference);
    EXPECT_TRUE(at::equal(simt, ref)) << "SIMT kernel must be bit-identical, calc_diff " << d_simt;
    for (const KernelRun& run : tensor_core_runs()) {
      const BlocksEnv env(run.blocks);
      const Fp8GemmKernel k = run.kernel;
      // Poison: a freed NaN block of C's size is what the caching allocator hands the GEMM next, so
      // an element the kernel never writes shows up as NaN.
      at::full({gc.M, gc.N}, std::nanf(""), at::TensorOptions().device(at::kCUDA, 0));
      const at::Tensor c = fp8_gemm_cuda(to_cuda(qa), to_cuda(qb), k).cpu();
      const double d = calc_diff(c, ref);
      std::cout << "[measured] " << run.name() << " vs reference M=" << gc.M << " N=" << gc.N
                << " K=" << gc.K << (gc.wgrad ? " (B 1x128)" : "") << ": calc_diff " << d << "\n";
      EXPECT_FALSE(c.isnan().any().item<bool>()) << run.name();
      EXPECT_LT(d, kFp8Tol.gpu_mma_vs_reference) << run.name();
    }
  }
}

TEST_F(Fp8Gpu, GroupedGemmKernelsMatchReference) {
  at::manual_seed(23);
  // The MoE layer's layout (an empty group, ragged groups), and one with whole 128-row tiles of
  // padding in the middle and at the end (allowed by check_grouped_layout), which every kernel
  // must skip (the persistent ones without losing count of their pipeline stages), at N = 384 where
  // the 160- and 192-wide tiles straddle two weight-scale blocks inside a group.
  const at::Tensor base = make_contiguous_group_layout({100, 0, 250, 128});
  at::Tensor gapped = at::full({768}, -1, at::kInt);  // tiles: group 0, padding, group 2, group 3, padding
  gapped.narrow(0, 0, 100).fill_(0);
  gapped.narrow(0, 256, 250).fill_(2);
  gapped.narrow(0, 512, 128).fill_(3);
  check_grouped_layout(gapped, 4, 768);
  for (const auto& [layout, N] : {std::pair{base, int64_t(256)}, std::pair{gapped, int64_t(384)}}) {
    const int64_t M = layout.size(0), K = 384;
    SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N));
    const Fp8Tensor qa = quantize_1x128(at::randn({M, K})), qb = quantize_128x128(at::randn({4, N, K}) * 0.05);
    const at::Tensor ref = fp8_grouped_gemm_reference(qa, qb, layout);
    const at::Tensor simt =
        fp8_grouped_gemm_cuda(to_cuda(qa), to_cuda(qb), cuda(layout), Fp8GemmKernel::kSimt).cpu();
    EXPECT_TRUE(at::equal(simt, ref)) << "calc_diff " << calc_diff(simt, ref);
    for (const KernelRun& run : tensor_core_runs()) {
      const BlocksEnv env(run.blocks);
      const Fp8GemmKernel k = run.kernel;
      at::full({M, N}, std::nanf(""), at::TensorOptions().device(at::kCUDA, 0));  // poison, as above
      const at::Tensor c = fp8_grouped_gemm_cuda(to_cuda(qa), to_cuda(qb), cuda(layout), k).cpu();
      EXPECT_FALSE(c.isnan().any().item<bool>()) << run.name();
      const double d = calc_diff(c, ref);
      std::cout << "[measured] grouped M=" << M << " N=" << N << " " << run.name() << " vs reference: calc_diff " << d
                << "\n";
      EXPECT_LT(d, kFp8Tol.gpu_mma_vs_reference) << run.name();
      // Padding rows are exactly zero.
      EXPECT_EQ(c.index({layout < 0}).abs().max().item<float>(), 0.0f) << run.name();
    }
  }
}

TEST_F(Fp8Gpu, KGroupedGemmKernelsMatchReference) {
  // The grouped Wgrad: empty groups (first, middle, last), a group longer than the WGMMA kernel's 5
  // pipeline stages (its barrier phases wrap inside one group) and ragged M and N; N = 132 is a
  // multiple of 4, so wgmma-store writes C by TMA (rows past M = 200 of each group clipped), N = 130
  // takes its fallback.
  at::manual_seed(29);
  const std::vector<int64_t> k_rows = {0, 256, 0, 128, 896, 0};
  const int64_t M = 200, K = 1280;
  for (const int64_t N : {132, 130}) {
    SCOPED_TRACE("N=" + std::to_string(N));
    const Fp8Tensor qa = quantize_1x128(at::randn({M, K})), qb = quantize_1x128(at::randn({N, K}) * 0.1);
    const at::Tensor ref = fp8_k_grouped_gemm_reference(qa, qb, k_rows);
    // Poison before each call, as in DenseGemmKernelsMatchReference: a freed NaN block of C's size is
    // what the caching allocator hands the kernel next, so a tile or an empty group the kernel never
    // writes shows up as NaN instead of the previous kernel's correct values.
    const auto poison = [&] { at::full({6, M, N}, std::nanf(""), at::TensorOptions().device(at::kCUDA, 0)); };
    poison();
    const at::Tensor simt = fp8_k_grouped_gemm_cuda(to_cuda(qa), to_cuda(qb), k_rows, Fp8GemmKernel::kSimt).cpu();
    EXPECT_TRUE(at::equal(simt, ref)) << "calc_diff " << calc_diff(simt, ref);
    for (const KernelRun& run : tensor_core_runs()) {
      const BlocksEnv env(run.blocks);
      const Fp8GemmKernel k = run.kernel;
      poison();
      const at::Tensor c = fp8_k_grouped_gemm_cuda(to_cuda(qa), to_cuda(qb), k_rows, k).cpu();
      EXPECT_FALSE(c.isnan().any().item<bool>()) << run.name();
      for (size_t g = 0; g < k_rows.size(); ++g) {
        const auto i = int64_t(g);
        if (k_rows[g] == 0) {
          EXPECT_TRUE(at::equal(c[i], at::zeros({M, N}))) << run.name() << " empty group " << g;
          continue;
        }
        const double d = calc_diff(c[i], ref[i]);
        std::cout << "[measured] k-grouped N=" << N << " " << run.name() << " group " << g
                  << " vs reference: calc_diff " << d << "\n";
        EXPECT_LT(d, kFp8Tol.gpu_mma_vs_reference) << run.name() << " group " << g;
      }
    }
  }
  const int64_t N = 130;
  const Fp8Tensor qa = quantize_1x128(at::randn({M, K})), qb = quantize_1x128(at::randn({N, K}) * 0.1);
  EXPECT_THROW(fp8_k_grouped_gemm_cuda(to_cuda(qa), to_cuda(qb), {1216, 64}), std::invalid_argument);  // 64: unpadded
  // Every group empty (K = 0): zeros without a launch, on the default kernel choice.
  const Fp8Tensor ea = quantize_1x128(at::zeros({M, 0})), eb = quantize_1x128(at::zeros({N, 0}));
  at::full({2, M, N}, std::nanf(""), at::TensorOptions().device(at::kCUDA, 0));  // poison, as above
  EXPECT_TRUE(at::equal(fp8_k_grouped_gemm_cuda(to_cuda(ea), to_cuda(eb), {0, 0}).cpu(), at::zeros({2, M, N})));
}

TEST_F(Fp8Gpu, GroupedLinearMatchesTheCpuPathForwardAndBackward) {
  // One grouped GEMM per Fprop and Dgrad on CUDA against the CPU path's per-segment emulation.
  at::manual_seed(27);
  const std::vector<int64_t> counts{0, 100, 300, 1};
  const at::Tensor x = at::randn({401, 256}), w = at::randn({4, 384, 256}) * 0.05, probe = at::randn({401, 384});
  at::Tensor dwg;
  const auto grouped = [&](const at::Tensor& a, const at::Tensor& b) { return fp8_grouped_linear(a, b, counts); };
  const auto d = cuda_vs_cpu("fp8_grouped_linear", x, w, probe, grouped, &dwg);
  for (double v : d) EXPECT_LT(v, kFp8Tol.gpu_mma_vs_reference);
  EXPECT_TRUE(at::equal(dwg[0], at::zeros({384, 256}))) << "an idle group's gradient is zero";
}

// The FP8 expert MLP (up-projection pair, fused SwiGLU down projection) under a weight-gradient
// slot (ops/weight_grad_slot.h): on CUDA the slot's nodes get device tokens, so autograd runs them
// on the device's queue; they must run after a branch created after the slot and give the
// weights the same gradients, bit for bit, as without a slot.
TEST_F(Fp8Gpu, ExpertWeightGradsAtASlotOnTheDevice) {
  at::manual_seed(29);
  const std::vector<int64_t> counts{0, 100, 300, 1};
  const at::Tensor x = cuda(at::randn({401, 256})).to(at::kBFloat16), probe = cuda(at::randn({401, 256}));
  const at::Tensor w1 = cuda(at::randn({4, 384, 256}) * 0.05), w3 = cuda(at::randn({4, 384, 256}) * 0.05),
                   w2 = cuda(at::randn({4, 256, 384}) * 0.05);
  std::vector<at::Tensor> want;
  for (const bool slot : {false, true}) {
    const at::Tensor rows = x.clone().requires_grad_(), a = w1.clone().requires_grad_(),
                     b = w3.clone().requires_grad_(), c = w2.clone().requires_grad_();
    const at::Tensor other = cuda(at::randn({4})).requires_grad_();
    at::Tensor loss;
    {
      const WeightGradSlot at_slot(slot ? std::optional<uint64_t>(at::sequence_number::get_and_increment())
                                        : std::nullopt);
      const at::Tensor branch = (other * 2).sum();
      const auto [h1, h3] = fp8_grouped_linear_pair(rows, a, b, counts);
      loss = (fp8_grouped_swiglu_linear(h1, h3, c, counts).to(at::kFloat) * probe).sum() + branch;
    }
    std::vector<std::string> order;
    other.register_hook([&order](const at::Tensor&) { order.push_back("branch"); });
    c.register_hook([&order](const at::Tensor&) { order.push_back("w2"); });
    a.register_hook([&order](const at::Tensor&) { order.push_back("w1"); });
    loss.backward();
    ASSERT_EQ(order.size(), 3u);
    const auto pos = [&order](const char* what) { return std::find(order.begin(), order.end(), what) - order.begin(); };
    if (slot) {
      EXPECT_LT(pos("branch"), pos("w1"));
      EXPECT_LT(pos("branch"), pos("w2"));
    }
    const std::vector<at::Tensor> got{rows.grad().cpu(), a.grad().cpu(), b.grad().cpu(), c.grad().cpu()};
    if (!slot) {
      want = got;
      continue;
    }
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(at::equal(got[i], want[i])) << "gradient " << i;
  }
}

TEST_F(Fp8Gpu, EmptyKGivesZeros) {
  // A weight gradient over zero tokens: the sum is empty, whatever memory C was allocated from.
  const Fp8Tensor qa = quantize_1x128(at::zeros({64, 0})), qb = quantize_1x128(at::zeros({32, 0}));
  for (const KernelRun& run : tensor_core_runs()) {
    const BlocksEnv env(run.blocks);
    const Fp8GemmKernel k = run.kernel;
    at::full({64, 32}, std::nanf(""), at::TensorOptions().device(at::kCUDA, 0));
    const at::Tensor c = fp8_gemm_cuda(to_cuda(qa), to_cuda(qb), k).cpu();
    EXPECT_TRUE(at::equal(c, at::zeros({64, 32}))) << run.name();
  }
}

TEST_F(Fp8Gpu, GpuGemmRejectsRaggedK) {
  const Fp8Tensor qa = to_cuda(quantize_1x128(at::randn({4, 200}))), qb = to_cuda(quantize_128x128(at::randn({8, 200})));
  try {
    fp8_gemm_cuda(qa, qb);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("K = 200"), std::string::npos) << e.what();
  }
}

TEST_F(Fp8Gpu, CublasLtBlockScaledMatchesReference) {
  at::manual_seed(24);
  const int64_t M = 256, N = 384, K = 1024;
  const Fp8Tensor qa = quantize_1x128(at::randn({M, K})), qb = quantize_128x128(at::randn({N, K}) * 0.05);
  const at::Tensor ref = fp8_gemm_reference(qa, qb);
  for (at::ScalarType out : {at::kFloat, at::kBFloat16}) {
    try {
      const at::Tensor c = fp8_gemm_cublaslt(to_cuda(qa), to_cuda(qb), out).cpu();
      const double d = calc_diff(c, ref);
      std::cout << "[measured] cuBLASLt (" << c10::toString(out) << " out) vs reference: calc_diff " << d << "\n";
      EXPECT_LT(d, out == at::kFloat ? kFp8Tol.gpu_mma_vs_reference : kFp8Tol.gpu_bf16_out_vs_reference);
    } catch (const std::runtime_error& e) {
      std::cout << "[measured] cuBLASLt (" << c10::toString(out) << " out) unavailable: " << e.what() << "\n";
      if (out == at::kBFloat16) ADD_FAILURE() << e.what();  // BF16 output is the documented combination
    }
  }
}

TEST_F(Fp8Gpu, CublasBf16Gemm) {
  at::manual_seed(25);
  const at::Tensor a = at::randn({256, 512}).to(at::kBFloat16), b = at::randn({384, 512}).to(at::kBFloat16);
  const at::Tensor c = bf16_gemm_cublas(cuda(a), cuda(b)).cpu();
  const double d = calc_diff(c, at::matmul(a.to(at::kFloat), b.to(at::kFloat).t()));
  std::cout << "[measured] cuBLAS bf16 vs float GEMM of the same bf16 inputs: calc_diff " << d << "\n";
  EXPECT_LT(d, kFp8Tol.bf16_vs_float);
}

TEST_F(Fp8Gpu, Fp8LinearMatchesTheCpuPathForwardAndBackward) {
  // CUDA quantizers + GEMM against the CPU reference quantizers + emulated GEMM.
  at::manual_seed(26);
  const at::Tensor x = at::randn({2, 128, 512}), w = at::randn({384, 512}), probe = at::randn({2, 128, 384});
  const auto linear = [](const at::Tensor& a, const at::Tensor& b) { return fp8_linear(a, b); };
  const auto d = cuda_vs_cpu("fp8_linear", x, w, probe, linear);
  for (double v : d) EXPECT_LT(v, kFp8Tol.gpu_mma_vs_reference);
}

TEST_F(Fp8Gpu, FusedSwigluQuantizerMatchesTheCpuReference) {
  at::manual_seed(28);
  const std::vector<std::array<int64_t, 2>> shapes{
      {300, 384}, {7, 200}, {129, 1000},  // rows of a multiple of 8: the vector kernel
      {5, 100}, {3, 30}};                 // the warp-per-tile kernel, with 4-element loads and without
  for (at::ScalarType dtype : {at::kBFloat16, at::kFloat})
    for (const auto& [M, H] : shapes) {
      const at::Tensor h1 = (at::randn({M, H}) * 3).to(dtype), h3 = at::randn({M, H}).to(dtype);
      const Fp8Tensor g = to_cpu(quantize_swiglu_1x128_cuda(cuda(h1), cuda(h3))), c = quantize_swiglu_1x128(h1, h3);
      ASSERT_EQ(g.data.sizes(), c.data.sizes());
      ASSERT_EQ(g.scale.sizes(), c.scale.sizes());
      const int64_t differ = g.data.view(at::kByte).ne(c.data.view(at::kByte)).sum().item<int64_t>();
      const double scale_rel = ((g.scale - c.scale).abs() / c.scale).max().item<double>();
      const double d = calc_diff(dequantize(g), dequantize(c));
      // The unfused CUDA path (ATen's silu and product, then our quantizer) for comparison only.
      const Fp8Tensor u = to_cpu(quantize_1x128_cuda(at::silu(cuda(h1)) * cuda(h3)));
      const int64_t differ_unfused = g.data.view(at::kByte).ne(u.data.view(at::kByte)).sum().item<int64_t>();
      std::cout << "[measured] fused SwiGLU quantizer " << c10::toString(dtype) << " [" << M << ", " << H
                << "] vs CPU: " << differ << " of " << M * H << " codes differ, scale rel diff " << scale_rel
                << ", calc_diff " << d << "; vs the CUDA unfused path: " << differ_unfused << " codes differ\n";
      EXPECT_LE(double(differ), 1e-3 * double(M * H));
      EXPECT_LE(scale_rel, 1.0 / 128);
      EXPECT_LT(d, kFp8Tol.gpu_fused_swiglu_vs_reference);
      // The two kernels compute the same function: the same inputs at an address that is not 16-byte
      // aligned (8 bytes off) take the warp-per-tile kernel, and its codes and scales must be the
      // vector kernel's bit for bit.
      const int64_t off = 8 / int64_t(c10::elementSize(dtype));
      const auto unaligned = [&](const at::Tensor& t) {
        return at::empty({M * H + off}, t.options().device(at::kCUDA, 0)).narrow(0, off, M * H).view({M, H}).copy_(cuda(t));
      };
      const Fp8Tensor w = to_cpu(quantize_swiglu_1x128_cuda(unaligned(h1), unaligned(h3)));
      EXPECT_TRUE(at::equal(w.data.view(at::kByte), g.data.view(at::kByte))) << "codes, [" << M << ", " << H << "]";
      EXPECT_TRUE(at::equal(w.scale, g.scale)) << "scales, [" << M << ", " << H << "]";
    }
}

TEST_F(Fp8Gpu, FusedSwigluLinearsMatchTheCpuPathForwardAndBackward) {
  at::manual_seed(29);
  const std::vector<int64_t> counts{0, 100, 283, 1};  // M = 384: the dense Wgrad's K on the GPU
  const int64_t M = 384, H = 256, N = 384;
  const at::Tensor h1 = at::randn({M, H}) * 3, h3 = at::randn({M, H}), probe = at::randn({M, N});
  for (const bool grouped : {false, true}) {
    const at::Tensor w = grouped ? at::randn({4, N, H}) * 0.05 : at::randn({N, H}) * 0.05;
    std::array<at::Tensor, 4> out[2];
    for (int on_gpu = 0; on_gpu < 2; ++on_gpu) {
      auto dev = [&](const at::Tensor& t) { return (on_gpu ? cuda(t) : t.clone()).requires_grad_(); };
      const at::Tensor a = dev(h1), b = dev(h3), wi = dev(w);
      const at::Tensor y = grouped ? fp8_grouped_swiglu_linear(a, b, wi, counts) : fp8_swiglu_linear(a, b, wi);
      (y * (on_gpu ? cuda(probe) : probe)).sum().backward();
      out[on_gpu] = {y.detach().cpu(), a.grad().cpu(), b.grad().cpu(), wi.grad().cpu()};
    }
    std::cout << "[measured] fp8_" << (grouped ? "grouped_" : "") << "swiglu_linear CUDA vs CPU: calc_diff";
    for (size_t i = 0; i < 4; ++i) {
      const double d = calc_diff(out[1][i], out[0][i]);
      std::cout << " " << d;
      EXPECT_LT(d, kFp8Tol.gpu_fused_swiglu_vs_reference) << (grouped ? "grouped " : "dense ") << "tensor " << i;
    }
    std::cout << "\n";
  }
}

TEST_F(Fp8Gpu, LinearPairsMatchTheCpuPathForwardAndBackward) {
  // The SwiGLU up projections with one quantization of the input, on CUDA against the CPU path.
  at::manual_seed(30);
  const std::vector<int64_t> counts{0, 100, 283, 1};
  const int64_t M = 384, K = 256, N = 384;
  const at::Tensor x = at::randn({M, K}), pa = at::randn({M, N}), pb = at::randn({M, N});
  for (const bool grouped : {false, true}) {
    const at::Tensor wa = grouped ? at::randn({4, N, K}) * 0.05 : at::randn({N, K}) * 0.05;
    const at::Tensor wb = grouped ? at::randn({4, N, K}) * 0.05 : at::randn({N, K}) * 0.05;
    std::array<at::Tensor, 5> out[2];
    for (int on_gpu = 0; on_gpu < 2; ++on_gpu) {
      auto dev = [&](const at::Tensor& t) { return (on_gpu ? cuda(t) : t.clone()).requires_grad_(); };
      const at::Tensor xi = dev(x), ai = dev(wa), bi = dev(wb);
      const auto [ya, yb] = grouped ? fp8_grouped_linear_pair(xi, ai, bi, counts) : fp8_linear_pair(xi, ai, bi);
      ((ya * (on_gpu ? cuda(pa) : pa)).sum() + (yb * (on_gpu ? cuda(pb) : pb)).sum()).backward();
      out[on_gpu] = {ya.detach().cpu(), yb.detach().cpu(), xi.grad().cpu(), ai.grad().cpu(), bi.grad().cpu()};
    }
    std::cout << "[measured] fp8_" << (grouped ? "grouped_" : "") << "linear_pair CUDA vs CPU: calc_diff";
    for (size_t i = 0; i < 5; ++i) {
      const double d = calc_diff(out[1][i], out[0][i]);
      std::cout << " " << d;
      EXPECT_LT(d, kFp8Tol.gpu_mma_vs_reference) << (grouped ? "grouped " : "dense ") << "tensor " << i;
    }
    std::cout << "\n";
  }
}

}  // namespace
