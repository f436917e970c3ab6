// The MoE row kernels (trainer/model/moe_rows.h) against naive loops written here: the same
// per-element order of summation, so every dtype must match bit for bit, bfloat16 rounding
// included (the kernels round through the bits, not through c10::BFloat16).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <bit>
#include <limits>
#include <vector>

#include "ops/moe_permute.h"
#include "trainer/model/expert_dispatch.h"
#include "trainer/model/moe_rows.h"

using namespace shoestring;

namespace {

struct Case {
  at::Tensor src, w;
  std::vector<int64_t> row_of;
  int64_t outputs;
};

// Rows mapped onto outputs with fan-in 0..4; d = 131 (not a vector-width multiple).
Case make_case(at::ScalarType dtype) {
  at::manual_seed(7);
  Case c;
  c.outputs = 23;
  for (int64_t o = 0; o < c.outputs; ++o)
    for (int64_t k = 0; k < o % 5; ++k) c.row_of.push_back(o);
  std::vector<int64_t> shuffled;  // members of one output are not adjacent
  for (size_t i = 0; i < c.row_of.size(); i += 2) shuffled.push_back(c.row_of[i]);
  for (size_t i = 1; i < c.row_of.size(); i += 2) shuffled.push_back(c.row_of[i]);
  c.row_of = shuffled;
  const int64_t rows = int64_t(c.row_of.size());
  c.src = (at::randn({rows, 131}, at::kDouble) * 3).to(dtype);
  c.w = at::rand({rows}, at::kDouble).to(dtype);
  return c;
}

// out[o] = sum over i with row_of[i] == o, ascending, of w[i] * src[i], in float for bfloat16.
at::Tensor naive_sum(const Case& c, bool weighted) {
  const at::ScalarType acc = c.src.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor s = c.src.to(acc), w = c.w.to(acc);
  at::Tensor out = at::zeros({c.outputs, c.src.size(1)}, acc);
  for (int64_t o = 0; o < c.outputs; ++o)
    for (size_t i = 0; i < c.row_of.size(); ++i)
      if (c.row_of[i] == o) out[o] += weighted ? s[int64_t(i)] * w[int64_t(i)] : s[int64_t(i)];
  return out.to(c.src.scalar_type());
}

void expect_identical(const at::Tensor& got, const at::Tensor& want, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(at::equal(got, want)) << what << ": max diff "
                                    << (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
}

class MoeRows : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(MoeRows, SumsGathersAndBackwardEqualNaiveLoops) {
  const Case c = make_case(GetParam());
  const RowMap map = make_row_map(c.row_of, c.outputs);
  auto pool = std::make_shared<parallel::BufferPool>();
  expect_identical(sum_rows(c.src, map, pool), naive_sum(c, false), "sum_rows");

  const at::Tensor src = c.src.clone().requires_grad_(true), w = c.w.clone().requires_grad_(true);
  const at::Tensor out = weighted_sum_rows(src, w, map, pool);
  expect_identical(out, naive_sum(c, true), "weighted_sum_rows");
  const at::Tensor grad = at::randn(out.sizes(), at::kDouble).to(out.scalar_type());
  out.backward(grad);
  // grad_src[i] = w[i] * grad[row_of[i]]; grad_w[i] = <src[i], grad[row_of[i]]> summed in order.
  const at::ScalarType acc = c.src.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor back = grad.to(acc).index_select(0, long_tensor(c.row_of));
  expect_identical(src.grad(), (back * c.w.to(acc).unsqueeze(1)).to(c.src.scalar_type()), "grad of src");
  at::Tensor dots = at::empty({int64_t(c.row_of.size())}, acc);
  for (int64_t i = 0; i < dots.size(0); ++i) {
    double sum = 0;  // float accumulation mirrored in the op-math type
    if (acc == at::kFloat) {
      float f = 0;
      const at::Tensor a = c.src[i].to(at::kFloat).contiguous(), b = back[i].contiguous();
      for (int64_t k = 0; k < a.size(0); ++k) f += a.data_ptr<float>()[k] * b.data_ptr<float>()[k];
      sum = f;
    } else {
      const at::Tensor a = c.src[i].contiguous(), b = back[i].contiguous();
      for (int64_t k = 0; k < a.size(0); ++k) sum += a.data_ptr<double>()[k] * b.data_ptr<double>()[k];
    }
    dots[i] = sum;
  }
  expect_identical(w.grad(), dots.to(c.src.scalar_type()), "grad of w");

  // Gathering is the adjoint of summing: gather_rows's backward is sum_rows.
  const at::Tensor from = at::randn({c.outputs, 131}, at::kDouble).to(c.src.scalar_type()).requires_grad_(true);
  const at::Tensor rows = gather_rows(from, map, pool);
  expect_identical(rows, from.detach().index_select(0, long_tensor(c.row_of)), "gather_rows");
  rows.backward(c.src);
  expect_identical(from.grad(), naive_sum(c, false), "grad of gather_rows");
}

// Sums of bfloat16 rows whose float sum lands on or beside a bfloat16 rounding boundary (the step
// at 1 is 2^-7): the stored result must round to nearest, ties to even, and keep NaN and inf.
TEST(MoeRowsBf16, SumsRoundToNearestEvenAndKeepSpecials) {
  auto pool = std::make_shared<parallel::BufferPool>();
  auto sum_of = [&](const std::vector<float>& values) -> at::Tensor {
    const at::Tensor rows = at::tensor(values, at::kFloat).to(at::kBFloat16).view({-1, 1});
    const at::Tensor exact = rows.to(at::kFloat).view(-1), given = at::tensor(values, at::kFloat);
    EXPECT_TRUE(at::equal(exact.isnan(), given.isnan()) && at::equal(exact.nan_to_num(), given.nan_to_num()))
        << "inputs not bf16-exact";
    return sum_rows(rows, make_row_map(std::vector<int64_t>(values.size(), 0), 1), pool);
  };
  auto value = [](const at::Tensor& t) { return t.to(at::kFloat).item<float>(); };
  auto bits = [](const at::Tensor& t) { return uint16_t(t.view(at::kShort).item<int16_t>()); };
  const float u = 0x1p-7f;  // one bfloat16 step at 1
  at::Tensor r;
  r = sum_of({1.0f, u / 2, 0x1p-20f});  // above the midpoint: up (truncation would give 1)
  EXPECT_EQ(value(r), 1.0f + u);
  r = sum_of({1.0f + u, u / 2});  // a tie, odd below: to the even neighbour above
  EXPECT_EQ(value(r), 1.0f + 2 * u);
  r = sum_of({1.0f, u / 2});  // a tie, even below: stays (rounding half up would not)
  EXPECT_EQ(value(r), 1.0f);
  r = sum_of({-1.0f, -u / 2, -0x1p-20f});  // the same for negative sums
  EXPECT_EQ(value(r), -1.0f - u);
  const float inf = std::numeric_limits<float>::infinity();
  r = sum_of({inf, -inf});  // NaN is stored as c10 stores it: the quiet NaN 0x7FC0
  EXPECT_EQ(bits(r), 0x7FC0);
  EXPECT_EQ(bits(r), c10::BFloat16(std::numeric_limits<float>::quiet_NaN()).x);
  const float largest = std::bit_cast<float>(0x7F7F0000u);  // the largest finite bfloat16
  r = sum_of({largest, largest});  // overflows to inf
  EXPECT_EQ(value(r), inf);
  const float tiny = std::bit_cast<float>(0x00400000u);  // a subnormal: 2^-127
  r = sum_of({tiny, tiny});  // subnormals add exactly, to the smallest normal 2^-126
  EXPECT_EQ(value(r), 0x1p-126f);
}

// Outputs of 1 MiB or more come from the buffer pool (views of a cached buffer): same values, and
// autograd through them works, as for the small unpooled outputs above.
TEST(MoeRows, PooledOutputsMatchAndBackpropagate) {
  at::manual_seed(9);
  std::vector<int64_t> row_of;
  for (int64_t i = 0; i < 900; ++i) row_of.push_back(i % 300);  // 3 sources per output
  const RowMap map = make_row_map(row_of, 300);
  auto pool = std::make_shared<parallel::BufferPool>();
  const at::Tensor src = at::randn({900, 512}, at::kDouble).requires_grad_(true);  // 3.7 MB
  const at::Tensor w = at::rand({900}, at::kDouble).requires_grad_(true);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass reuses the first's buffers
    const at::Tensor out = weighted_sum_rows(src, w, map, pool), rows = gather_rows(out, map, pool);
    const at::Tensor want = at::zeros({300, 512}, at::kDouble).index_add(0, long_tensor(row_of), src * w.unsqueeze(1));
    EXPECT_LT((out - want).abs().max().item<double>(), 1e-12);
    rows.sum().backward();
    // d/dsrc of sum(gather(out)) = w[i] * (times output o is gathered = 3).
    EXPECT_LT((src.grad() - 3 * w.detach().unsqueeze(1).expand({900, 512})).abs().max().item<double>(), 1e-12);
    src.grad().zero_();
    w.grad().zero_();
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MoeRows, ::testing::Values(at::kDouble, at::kFloat, at::kBFloat16, at::kHalf));

}  // namespace

namespace {

// The single-process dispatcher on the CPU runs these kernels; ops::permute/unpermute (index_select
// and index_add) are the independent reference: identical outputs in float32 and float64 (the same
// summation order per token), gradients to float64 rounding (the gate gradient's dot product is
// summed in another order).
TEST(MoeRows, LocalDispatcherEqualsPermuteUnpermute) {
  at::manual_seed(11);
  const int64_t n = 37, d = 40, experts = 6, k = 2;
  const at::Tensor ids = std::get<1>(at::rand({n, experts}).topk(k, -1));
  const ops::Permutation perm = ops::plan_permutation(ids, experts);
  const model::LocalExperts all{0, experts, experts, [](const at::Tensor& rows, const std::vector<int64_t>&) {
                                  return rows * 2 + 1;  // something the gradient must go through
                                }};
  for (at::ScalarType dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor x = at::randn({n, d}, dtype), g = at::rand({n, k}, dtype), probe = at::randn({n, d}, dtype);
    const at::Tensor x1 = x.clone().requires_grad_(), g1 = g.clone().requires_grad_();
    model::LocalDispatcher local;
    const at::Tensor y1 = local.run(x1, g1, perm, all);
    (y1 * probe).sum().backward();
    const at::Tensor x2 = x.clone().requires_grad_(), g2 = g.clone().requires_grad_();
    const at::Tensor y2 = ops::unpermute(all.run(ops::permute(x2, perm), perm.counts),
                                         g2.reshape({-1}).index_select(0, perm.slot), perm, n);
    (y2 * probe).sum().backward();
    EXPECT_TRUE(at::equal(y1, y2)) << c10::toString(dtype);
    const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
    EXPECT_LT((x1.grad() - x2.grad()).abs().max().item<double>(), tol) << c10::toString(dtype);
    EXPECT_LT((g1.grad() - g2.grad()).abs().max().item<double>(), tol * 10) << c10::toString(dtype);
  }
}

}  // namespace
