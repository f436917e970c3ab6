// The expert-parallel row kernels (trainer/model/moe_rows.h) against naive loops written here: the same
// per-element order of summation, so every dtype must match bit for bit, bfloat16 rounding
// included (the kernels round through the bits, not through c10::BFloat16).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>
#include <vector>

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

class EpRows : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(EpRows, SumsGathersAndBackwardEqualNaiveLoops) {
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

TEST(EpRowsBf16, RoundsToNearestEvenAndKeepsSpecials) {
  // Each value sits on or next to a bfloat16 rounding boundary; the sum of one row is the value.
  const std::vector<float> values{1.0f + 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, 1.0f + 3 * 0x1p-8f, -0x1.fep-1f,
                                  std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                                  3.3895314e38f, 1e-40f};
  const at::Tensor src = at::tensor(values, at::kFloat).view({1, -1});
  const RowMap map = make_row_map({0}, 1);
  auto pool = std::make_shared<parallel::BufferPool>();
  // Float rows in, weights 1 (exact), bfloat16 out: compare to c10's conversion of the same float.
  const at::Tensor got = weighted_sum_rows(src.to(at::kBFloat16), at::ones({1}, at::kBFloat16), map, pool);
  const at::Tensor want = src.to(at::kBFloat16);
  for (size_t k = 0; k < values.size(); ++k) {
    const float g = got[0][int64_t(k)].item<float>(), e = want[0][int64_t(k)].item<float>();
    if (e != e) EXPECT_NE(g, g) << "value " << k;
    else EXPECT_EQ(g, e) << "value " << k;
  }
  // And a sum that lands between two bfloat16 values rounds as c10 does.
  const at::Tensor two = at::tensor({1.0f, 0x1p-8f}, at::kFloat).to(at::kBFloat16).view({2, 1});
  const at::Tensor summed = sum_rows(two, make_row_map({0, 0}, 1), pool);
  EXPECT_EQ(summed.item<float>(), at::tensor({1.0f + 0x1p-8f}).to(at::kBFloat16).item<float>());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EpRows, ::testing::Values(at::kDouble, at::kFloat, at::kBFloat16, at::kHalf));

}  // namespace
