// The expert layout's CUDA row kernels (ops/moe_permute.cu), through the autograd functions of
// trainer/model/moe_rows.h, against the CPU row kernels (which test_moe checks against naive loops):
// the same summation order and rounding, so outputs and row gradients must match bit for bit; the
// gate gradient's dot product is reduced in a tree on the GPU and in sequence on the CPU, so it
// gets a rounding bound. Label gpu: skips without a usable GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "ops/cuda_runtime.h"
#include "tests/gpu_skip.h"
#include "ops/moe_permute.h"
#include "parallel/buffer_pool.h"
#include "trainer/model/expert_dispatch.h"
#include "trainer/model/moe_rows.h"

using namespace shoestring;

namespace {

const at::Device kGpu(at::kCUDA, 0);

// The bits of t (on the CPU), so NaNs compare equal to themselves.
at::Tensor bits(const at::Tensor& t) {
  const at::Tensor c = t.detach().cpu().contiguous();
  switch (c.element_size()) {
    case 2: return c.view(at::kShort);
    case 4: return c.view(at::kInt);
    default: return c.view(at::kLong);
  }
}

void expect_same_bits(const at::Tensor& gpu, const at::Tensor& cpu, const std::string& what) {
  ASSERT_EQ(gpu.sizes(), cpu.sizes()) << what;
  EXPECT_TRUE(gpu.is_cuda()) << what;
  const at::Tensor differ = bits(gpu) != bits(cpu);
  EXPECT_EQ(differ.sum().item<int64_t>(), 0) << what << ": first differing element of " << differ.numel() << " at "
                                             << (differ.numel() ? differ.reshape({-1}).nonzero().min().item<int64_t>() : -1);
}

// Fan-in 0..5 per output, members not adjacent.
std::vector<int64_t> shuffled_map(int64_t outputs) {
  std::vector<int64_t> row_of, out;
  for (int64_t o = 0; o < outputs; ++o)
    for (int64_t k = 0; k < o % 6; ++k) row_of.push_back(o);
  for (size_t i = 0; i < row_of.size(); i += 3) out.push_back(row_of[i]);
  for (size_t i = 1; i < row_of.size(); i += 3) out.push_back(row_of[i]);
  for (size_t i = 2; i < row_of.size(); i += 3) out.push_back(row_of[i]);
  return out;
}

// (dtype, row width, rows start 16-byte aligned)
class MoeRowsGpu : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t, bool>> {
 protected:
  void SetUp() override { SHOESTRING_SKIP_WITHOUT_GPU(); }
};

TEST_P(MoeRowsGpu, ForwardAndRowGradientsMatchTheCpuBitForBit) {
  const auto [dtype, d, aligned] = GetParam();
  at::manual_seed(3);
  const int64_t outputs = 29;
  const std::vector<int64_t> row_of = shuffled_map(outputs);
  const auto rows = int64_t(row_of.size());
  at::Tensor src = (at::randn({rows, d}, at::kDouble) * 3).to(dtype);
  if (dtype == at::kBFloat16 || dtype == at::kHalf) {
    // Values whose rounding and special cases matter: overflow to inf in the sum, NaN, subnormals.
    const double big = dtype == at::kHalf ? 6e4 : 3e38;
    src[0][0] = big, src[1][0] = big, src[2][1] = std::numeric_limits<double>::quiet_NaN();
    src[3][2] = dtype == at::kHalf ? 3e-7 : 1e-39;
  }
  const at::Tensor w = at::rand({rows}, at::kDouble).to(dtype);
  const at::Tensor probe = at::randn({outputs, d}, at::kDouble).to(dtype);
  const at::Tensor gather_probe = at::randn({rows, d}, at::kDouble).to(dtype);
  auto pool = std::make_shared<parallel::BufferPool>();

  // On the GPU; a misaligned copy (one element in) sends every kernel down its scalar path.
  const auto on_gpu = [&](const at::Tensor& t) {
    if (aligned) return t.to(kGpu, /*non_blocking=*/false, /*copy=*/true);
    at::Tensor big = at::empty({t.numel() + 1}, t.options().device(kGpu));
    at::Tensor view = big.narrow(0, 1, t.numel()).view(t.sizes());
    view.copy_(t);
    return view.detach();
  };
  const RowMap cpu_map = make_row_map(row_of, outputs), gpu_map = make_row_map(row_of, outputs, kGpu);
  ASSERT_TRUE(gpu_map.members.is_cuda());

  const std::string name = std::string(c10::toString(dtype)) + " d=" + std::to_string(d) + (aligned ? "" : " misaligned");
  {  // Weighted sum and its backward.
    const at::Tensor s1 = src.clone().requires_grad_(), w1 = w.clone().requires_grad_();
    const at::Tensor y1 = weighted_sum_rows(s1, w1, cpu_map, pool);
    (y1 * probe).sum().backward();
    const at::Tensor s2 = on_gpu(src).requires_grad_(), w2 = on_gpu(w).requires_grad_();
    const at::Tensor y2 = weighted_sum_rows(s2, w2, gpu_map, pool);
    (y2 * probe.to(kGpu)).sum().backward();
    expect_same_bits(y2, y1, name + " weighted_sum_rows");
    expect_same_bits(s2.grad(), s1.grad(), name + " weighted_sum_rows d/dsrc");
    // grad_w[i] = <src[i], g[row_of[i]]>: the two sides reduce in different orders, each rounding
    // at most n * eps * sum |terms| (n = d terms, eps of the sum's type), then the result is
    // rounded to the dtype (half an ulp each side).
    const bool wide = dtype == at::kDouble;
    const double eps_sum = wide ? 0x1p-53 : 0x1p-24;
    const double eps_out = dtype == at::kBFloat16 ? 0x1p-8 : dtype == at::kHalf ? 0x1p-11 : eps_sum;
    const at::Tensor s64 = src.to(at::kDouble), g64 = probe.to(at::kDouble).index_select(0, cpu_map.row_of);
    const at::Tensor terms = (s64 * g64).abs().sum(1);
    const at::Tensor ref = w1.grad().to(at::kDouble), got = w2.grad().cpu().to(at::kDouble);
    const at::Tensor bound = 2 * double(d) * eps_sum * terms + 2 * eps_out * ref.abs() + 1e-300;
    const at::Tensor finite = at::isfinite(ref) & at::isfinite(got);
    EXPECT_TRUE(at::equal(at::isnan(ref), at::isnan(got))) << name;
    EXPECT_TRUE(((got - ref).abs().le(bound) | ~finite).all().item<bool>())
        << name << " d/dw: worst |diff| / bound " << ((got - ref).abs() / bound).masked_select(finite).max().item<double>();
  }
  {  // Unweighted sum (the expert-parallel combine) and its backward, a gather.
    const at::Tensor s1 = src.clone().requires_grad_();
    const at::Tensor y1 = sum_rows(s1, cpu_map, pool);
    (y1 * probe).sum().backward();
    const at::Tensor s2 = on_gpu(src).requires_grad_();
    const at::Tensor y2 = sum_rows(s2, gpu_map, pool);
    (y2 * probe.to(kGpu)).sum().backward();
    expect_same_bits(y2, y1, name + " sum_rows");
    expect_same_bits(s2.grad(), s1.grad(), name + " sum_rows d/dsrc");
  }
  {  // Gather (the permute) and its backward, an unweighted sum.
    const at::Tensor from = src.narrow(0, 0, outputs).clone();
    const at::Tensor f1 = from.clone().requires_grad_();
    const at::Tensor y1 = gather_rows(f1, cpu_map, pool);
    (y1 * gather_probe).sum().backward();
    const at::Tensor f2 = on_gpu(from).requires_grad_();
    const at::Tensor y2 = gather_rows(f2, gpu_map, pool);
    (y2 * gather_probe.to(kGpu)).sum().backward();
    expect_same_bits(y2, y1, name + " gather_rows");
    expect_same_bits(f2.grad(), f1.grad(), name + " gather_rows d/dsrc");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MoeRowsGpu,
                         ::testing::Combine(::testing::Values(at::kDouble, at::kFloat, at::kBFloat16, at::kHalf),
                                            ::testing::Values(int64_t{131}, int64_t{256}), ::testing::Bool()));

class MoeRowsGpuLarge : public ::testing::Test {
 protected:
  void SetUp() override { SHOESTRING_SKIP_WITHOUT_GPU(); }
};

// A DeepSeek-like fan-in (8 experts per token) at a size where ATen's index_add, with its atomics,
// is not reproducible: ours gives the same bits twice and the CPU's bits.
TEST_F(MoeRowsGpuLarge, WeightedSumIsReproducibleAndEqualsTheCpu) {
  at::manual_seed(5);
  const int64_t tokens = 2048, k = 8, d = 1024, experts = 64;
  const at::Tensor ids = std::get<1>(at::rand({tokens, experts}).topk(k, -1));
  const ops::Permutation perm = ops::plan_permutation(ids, experts);
  const at::Tensor& row_of = perm.source_token_host;
  const at::Tensor rows = at::randn({row_of.numel(), d}).to(at::kBFloat16), w = at::rand({row_of.numel()}).to(at::kBFloat16);
  const RowMap gpu_map = make_row_map(row_of, tokens, kGpu);
  const at::Tensor a = ops::sum_rows_cuda(rows.to(kGpu), w.to(kGpu), gpu_map.ptr, gpu_map.members);
  const at::Tensor b = ops::sum_rows_cuda(rows.to(kGpu), w.to(kGpu), gpu_map.ptr, gpu_map.members);
  expect_same_bits(a, b.cpu().to(kGpu), "run to run");
  const RowMap cpu_map = make_row_map(row_of, tokens);
  expect_same_bits(a, weighted_sum_rows(rows, w, cpu_map, std::make_shared<parallel::BufferPool>()), "against the CPU");
}

// The single-process dispatcher on CUDA (row kernels, map built from the plan's host copy) equals
// the same dispatcher on the CPU: outputs and token gradients bit for bit, gate gradients to the
// dot product's rounding.
TEST_F(MoeRowsGpuLarge, LocalDispatcherOnCudaEqualsTheCpu) {
  at::manual_seed(13);
  const int64_t n = 300, d = 128, experts = 16, k = 4;
  const at::Tensor ids = std::get<1>(at::rand({n, experts}).topk(k, -1));
  const model::LocalExperts all{0, experts, experts, [](const at::Tensor& rows, const std::vector<int64_t>&) {
                                  return rows * 2 + 1;  // exact on both devices
                                }};
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor x = at::randn({n, d}).to(dtype), g = at::rand({n, k}).to(dtype), probe = at::randn({n, d}).to(dtype);
    model::LocalDispatcher local;
    const ops::Permutation p_cpu = ops::plan_permutation(ids, experts);
    const at::Tensor x1 = x.clone().requires_grad_(), g1 = g.clone().requires_grad_();
    const at::Tensor y1 = local.run(x1, g1, p_cpu, all);
    (y1 * probe).sum().backward();
    const ops::Permutation p_gpu = ops::plan_permutation(ids.to(kGpu), experts);
    const at::Tensor x2 = x.to(kGpu).requires_grad_(), g2 = g.to(kGpu).requires_grad_();
    const at::Tensor y2 = local.run(x2, g2, p_gpu, all);
    (y2 * probe.to(kGpu)).sum().backward();
    const std::string name = c10::toString(dtype);
    expect_same_bits(y2, y1, name + " output");
    expect_same_bits(x2.grad(), x1.grad(), name + " d/dx");
    // Another summation order of a 128-term dot product, then (bfloat16) one rounding each side.
    const double rel = dtype == at::kFloat ? 1e-5 : 0x1p-7;
    const at::Tensor ref = g1.grad().to(at::kDouble), got = g2.grad().cpu().to(at::kDouble);
    EXPECT_TRUE((got - ref).abs().le(rel * ref.abs() + 1e-4).all().item<bool>())
        << name << " d/dgates: max diff " << (got - ref).abs().max().item<double>();
  }
}

}  // namespace
