// The CPU block-scaled GEMM reference: against a float64 GEMM of the dequantized inputs (only float
// rounding may separate them) and against the unquantized GEMM (DeepGEMM's calc_diff bar).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <iostream>

#include "ops/calc_diff.h"
#include "ops/fp8_gemm.h"

namespace {

using namespace shoestring::ops;

struct Shape {
  int64_t M, N, K;
};

class Fp8GemmReference : public ::testing::TestWithParam<Shape> {};

TEST_P(Fp8GemmReference, AgreesWithFloat64OfDequantizedAndWithUnquantized) {
  const auto [M, N, K] = GetParam();
  at::manual_seed(M * 7 + N * 3 + K);
  const at::Tensor x = at::randn({M, K}), w = at::randn({N, K}) * 0.05;
  const Fp8Tensor qa = quantize_1x128(x), qb = quantize_128x128(w);
  const at::Tensor c = fp8_gemm_reference(qa, qb);
  ASSERT_EQ(c.sizes(), at::IntArrayRef({M, N}));

  const at::Tensor exact = at::matmul(dequantize(qa).to(at::kDouble), dequantize(qb).to(at::kDouble).t());
  const double d_exact = calc_diff(c, exact);
  const double max_rel = ((c.to(at::kDouble) - exact).abs().max() / exact.abs().max()).item<double>();
  const at::Tensor fp32 = at::matmul(x, w.t());
  const double d_fp32 = calc_diff(c, fp32);
  std::cout << "[measured] M=" << M << " N=" << N << " K=" << K << ": reference vs float64(dequantized) calc_diff "
            << d_exact << " (max |err|/max|C| " << max_rel << "), vs unquantized float calc_diff " << d_fp32 << "\n";
  EXPECT_LT(d_exact, kFp8Tol.reference_vs_float64);
  EXPECT_LT(max_rel, 1e-5);  // float partial sums of <= 128 terms
  EXPECT_LT(d_fp32, kFp8Tol.gemm_vs_unquantized);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Fp8GemmReference,
                         ::testing::Values(Shape{128, 256, 1024}, Shape{256, 384, 512}, Shape{77, 130, 300},
                                           Shape{1, 128, 128}));

TEST(Fp8GemmReference, WgradStyleBothOperands1x128) {
  at::manual_seed(11);
  const at::Tensor dy = at::randn({384, 96}), x = at::randn({384, 160});  // dW[96,160] = dy^T x
  const Fp8Tensor qa = quantize_1x128_transposed(dy), qb = quantize_1x128_transposed(x);
  const at::Tensor c = fp8_gemm_reference(qa, qb);
  const at::Tensor exact = at::matmul(dequantize(qa).to(at::kDouble), dequantize(qb).to(at::kDouble).t());
  EXPECT_LT(calc_diff(c, exact), kFp8Tol.reference_vs_float64);
  EXPECT_LT(calc_diff(c, at::matmul(dy.t(), x)), kFp8Tol.gemm_vs_unquantized);
}

TEST(Fp8GemmReference, PromotionAppliesEachBlocksScales) {
  // Two K blocks whose scales differ by 1000x: each partial sum must be multiplied by its own
  // block's scales before it joins the accumulator.
  at::Tensor x = at::ones({1, 256});
  x.narrow(1, 128, 128).fill_(1e-3);
  const at::Tensor w = at::ones({128, 256});
  const at::Tensor c = fp8_gemm_reference(quantize_1x128(x), quantize_128x128(w));
  EXPECT_NEAR(c[0][0].item<double>(), 128.128, 1e-4);
}

TEST(Fp8GemmReference, GroupedContiguousMatchesPerGroupGemms) {
  at::manual_seed(12);
  const std::vector<int64_t> rows{100, 0, 250};
  const at::Tensor layout = make_contiguous_group_layout(rows);
  ASSERT_EQ(layout.size(0), 128 + 0 + 256);
  const int64_t M = layout.size(0), N = 256, K = 384;
  const at::Tensor x = at::randn({M, K}), w = at::randn({3, N, K}) * 0.05;
  const Fp8Tensor qa = quantize_1x128(x), qb = quantize_128x128(w);
  const at::Tensor c = fp8_grouped_gemm_reference(qa, qb, layout);
  const int32_t* g = layout.data_ptr<int32_t>();
  for (int64_t m = 0; m < M; ++m) {
    if (g[m] < 0) {
      EXPECT_EQ(c[m].abs().max().item<float>(), 0.0f) << "padding row " << m;
      continue;
    }
  }
  // Group 2 occupies rows [128, 378): same as a dense GEMM of those rows with group 2's weight.
  const Fp8Tensor qb2 = quantize_128x128(w[2]);
  Fp8Tensor qa2{qa.data.narrow(0, 128, 250).contiguous(), qa.scale.narrow(0, 128, 250).contiguous(), 1};
  EXPECT_TRUE(at::equal(c.narrow(0, 128, 250), fp8_gemm_reference(qa2, qb2)));
  EXPECT_LT(calc_diff(c.narrow(0, 0, 100), at::matmul(x.narrow(0, 0, 100), w[0].t())), kFp8Tol.gemm_vs_unquantized);
}

TEST(Fp8GemmReference, GroupedLayoutErrorsNameTheTile) {
  at::Tensor layout = make_contiguous_group_layout({128, 128});
  layout[127] = 1;  // tile 0 now mixes groups 0 and 1
  try {
    check_grouped_layout(layout, 2, 256);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tile 0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_grouped_layout(make_contiguous_group_layout({128}), 0, 128), std::invalid_argument);
}

// The grouped Wgrad's operands are quantized once for all groups; each group's slice of them must be
// exactly what quantizing that group alone gives, and C[g] exactly fp8_gemm_reference of that group.
TEST(Fp8GemmReference, KGroupedEqualsPerGroupGemmsOnOneQuantization) {
  at::manual_seed(11);
  const std::vector<int64_t> k_rows = {256, 0, 128, 384, 0};
  const int64_t M = 70, N = 50, K = 768;
  const at::Tensor a = at::randn({M, K}), b = at::randn({N, K}) * 0.1;
  const at::Tensor c = fp8_k_grouped_gemm_reference(quantize_1x128(a), quantize_1x128(b), k_rows);
  ASSERT_EQ(c.sizes(), at::IntArrayRef({5, M, N}));
  int64_t start = 0;
  for (size_t g = 0; g < k_rows.size(); ++g) {
    const at::Tensor cg = c[int64_t(g)];
    if (k_rows[g] == 0) {
      EXPECT_TRUE(at::equal(cg, at::zeros({M, N}))) << "group " << g;
      continue;
    }
    const at::Tensor ag = a.narrow(1, start, k_rows[g]), bg = b.narrow(1, start, k_rows[g]);
    EXPECT_TRUE(at::equal(cg, fp8_gemm_reference(quantize_1x128(ag), quantize_1x128(bg)))) << "group " << g;
    EXPECT_LT(calc_diff(cg, at::matmul(ag, bg.t())), kFp8Tol.gemm_vs_unquantized) << "group " << g;
    start += k_rows[g];
  }
}

TEST(Fp8GemmReference, KGroupedLayoutErrorsNameTheGroup) {
  const Fp8Tensor q = quantize_1x128(at::randn({8, 256}));
  try {
    fp8_k_grouped_gemm_reference(q, q, {128, 64, 64});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("group 1 has 64 K rows"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fp8_k_grouped_gemm_reference(q, q, {128}), std::invalid_argument);       // sums to 128, K is 256
  EXPECT_THROW(fp8_k_grouped_gemm_reference(q, quantize_128x128(at::randn({8, 256})), {256}),
               std::invalid_argument);  // B must be 1x128
}

TEST(Fp8GemmReference, RejectsMismatchedK) {
  const Fp8Tensor qa = quantize_1x128(at::randn({4, 256})), qb = quantize_128x128(at::randn({8, 128}));
  EXPECT_THROW(fp8_gemm_reference(qa, qb), std::invalid_argument);
  EXPECT_THROW(fp8_gemm_reference(qb, qb), std::invalid_argument);  // A must be 1x128
}

}  // namespace
