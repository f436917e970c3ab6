// FP8 Linear (Fprop, Dgrad, Wgrad in FP8) against the fp32 linear, and the emulated CPU GEMM
// against the loop reference.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "ops/calc_diff.h"
#include "ops/fp8_gemm.h"
#include "ops/fp8_linear.h"
#include "ops/weight_grad_slot.h"
#include "ops/weight_grad_store.h"

using namespace shoestring::ops;

namespace {

TEST(Fp8GemmEmulated, MatchesTheLoopReference) {
  at::manual_seed(0);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{64, 96, 256}, {37, 150, 200}, {5, 3, 130}}) {
    const at::Tensor a = at::randn({m, k}), b = at::randn({n, k});
    const Fp8Tensor qa = quantize_1x128(a);
    for (const Fp8Tensor& qb : {quantize_128x128(b), quantize_1x128(b)}) {
      const double d = calc_diff(fp8_gemm_emulated(qa, qb), fp8_gemm_reference(qa, qb));
      EXPECT_LT(d, kFp8Tol.emulated_vs_reference) << m << "x" << n << "x" << k << " block_rows " << qb.block_rows;
    }
  }
}

TEST(Fp8Linear, ForwardAndBothGradientsMatchFp32WithinTheTable) {
  at::manual_seed(1);
  // Ragged shapes (not multiples of 128) exercise the implicit zero padding of every operand.
  const at::Tensor x = at::randn({3, 41, 200}).requires_grad_();
  const at::Tensor w = at::randn({150, 200}).requires_grad_();
  const at::Tensor probe = at::randn({3, 41, 150});
  const at::Tensor y = fp8_linear(x, w);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 41, 150}));
  (y * probe).sum().backward();

  const at::Tensor xr = x.detach().clone().requires_grad_(), wr = w.detach().clone().requires_grad_();
  const at::Tensor yr = at::linear(xr, wr);
  (yr * probe).sum().backward();
  const double dy = calc_diff(y, yr), dx = calc_diff(x.grad(), xr.grad()), dw = calc_diff(w.grad(), wr.grad());
  std::printf("[measured] fp8_linear calc_diff vs fp32: y %.3g dx %.3g dw %.3g\n", dy, dx, dw);
  EXPECT_LT(dy, kFp8Tol.linear_vs_fp32);
  EXPECT_LT(dx, kFp8Tol.linear_vs_fp32);
  EXPECT_LT(dw, kFp8Tol.linear_vs_fp32);
  EXPECT_GT(dy, 1e-6);  // it really quantized
}

// The grouped linear is fp8_linear applied to each group's rows: padding to 128-row segments adds
// zero rows, which change no amax, so codes, scales and products are the same. Only the BLAS calls
// differ (one per padded segment instead of one per group), hence a bound instead of equality.
TEST(Fp8GroupedLinear, EqualsFp8LinearPerGroupForwardAndBackward) {
  at::manual_seed(31);
  const std::vector<int64_t> counts{0, 100, 130, 1, 256};
  const int64_t M = 487, K = 200, N = 72;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor x = at::randn({M, K}).to(dtype), w = at::randn({5, N, K}) * 0.1, probe = at::randn({M, N});
    const at::Tensor xg = x.clone().requires_grad_(), wg = w.clone().requires_grad_();
    const at::Tensor yg = fp8_grouped_linear(xg, wg, counts);
    (yg.to(at::kFloat) * probe).sum().backward();
    const at::Tensor xr = x.clone().requires_grad_(), wr = w.clone().requires_grad_();
    std::vector<at::Tensor> parts;
    int64_t r0 = 0;
    for (size_t g = 0; g < counts.size(); ++g) {
      parts.push_back(fp8_linear(xr.narrow(0, r0, counts[g]), wr[int64_t(g)]));
      r0 += counts[g];
    }
    const at::Tensor yr = at::cat(parts);
    (yr.to(at::kFloat) * probe).sum().backward();
    EXPECT_EQ(yg.scalar_type(), dtype);
    EXPECT_LT(calc_diff(yg.to(at::kFloat), yr.to(at::kFloat)), 1e-12);
    EXPECT_LT(calc_diff(xg.grad().to(at::kFloat), xr.grad().to(at::kFloat)), 1e-12);
    EXPECT_LT(calc_diff(wg.grad(), wr.grad()), 1e-12);
    EXPECT_TRUE(at::equal(wg.grad()[0], at::zeros({N, K}))) << "an idle group's gradient is zero";
    EXPECT_GT(wg.grad()[1].abs().sum().item<double>(), 0.0);
    // Wgrad quantizes all groups at once (k-grouped); each group's gradient must be exactly one
    // GEMM of that group's zero-padded rows quantized alone.
    r0 = 0;
    for (size_t g = 0; g < counts.size(); ++g) {
      const int64_t rows = (counts[g] + 127) / 128 * 128;
      auto padded = [&](const at::Tensor& t) {
        return at::cat({t.narrow(0, r0, counts[g]), at::zeros({rows - counts[g], t.size(1)}, t.options())});
      };
      if (counts[g] > 0) {
        const at::Tensor dw = fp8_gemm_emulated(quantize_1x128_transposed(padded(probe.to(dtype))),
                                                quantize_1x128_transposed(padded(x)));
        EXPECT_TRUE(at::equal(wg.grad()[int64_t(g)], dw)) << "group " << g;
      }
      r0 += counts[g];
    }
  }
  // A rank whose experts received no tokens (expert parallelism): empty output, zero gradients.
  const at::Tensor w0 = at::randn({2, N, K}).requires_grad_();
  const at::Tensor y0 = fp8_grouped_linear(at::zeros({0, K}), w0, {0, 0});
  EXPECT_EQ(y0.sizes(), at::IntArrayRef({0, N}));
  y0.sum().backward();
  EXPECT_TRUE(at::equal(w0.grad(), at::zeros({2, N, K})));
  EXPECT_THROW(fp8_grouped_linear(at::randn({3, K}), at::randn({2, N, K}), {1, 1}), std::invalid_argument);
  EXPECT_THROW(fp8_grouped_linear(at::randn({3, K}), at::randn({2, N, K}), {4, -1}), std::invalid_argument);
}

// The fused SwiGLU down projections against the unfused composition they replace: on the CPU the
// same codes, scales, GEMMs and gradient formulas, so every output and gradient is bit for bit equal.
void expect_same_grads(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, const char* what) {
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(at::equal(a[i].grad(), b[i].grad())) << what << ": gradient " << i << " differs, calc_diff "
                                                     << calc_diff(a[i].grad().to(at::kFloat), b[i].grad().to(at::kFloat));
}

TEST(Fp8SwigluLinear, EqualsTheUnfusedCompositionBitForBit) {
  at::manual_seed(37);
  const int64_t H = 200, N = 72;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    // [2, 150, H]: leading dimensions pass through; H not a multiple of 128 (a partial last tile).
    const at::Tensor h1 = (at::randn({2, 150, H}) * 3).to(dtype), h3 = at::randn({2, 150, H}).to(dtype);
    const at::Tensor w = at::randn({N, H}) * 0.1, probe = at::randn({2, 150, N});
    std::vector<at::Tensor> f{h1.clone().requires_grad_(), h3.clone().requires_grad_(), w.clone().requires_grad_()};
    std::vector<at::Tensor> u{h1.clone().requires_grad_(), h3.clone().requires_grad_(), w.clone().requires_grad_()};
    const at::Tensor yf = fp8_swiglu_linear(f[0], f[1], f[2]);
    const at::Tensor yu = fp8_linear(at::silu(u[0]) * u[1], u[2]);
    EXPECT_EQ(yf.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(yf, yu)) << "forward, " << c10::toString(dtype);
    (yf.to(at::kFloat) * probe).sum().backward();
    (yu.to(at::kFloat) * probe).sum().backward();
    expect_same_grads(f, u, c10::toString(dtype));
  }
  EXPECT_THROW(fp8_swiglu_linear(at::randn({3, H}), at::randn({4, H}), at::randn({N, H})), std::invalid_argument);
}

TEST(Fp8GroupedSwigluLinear, EqualsTheUnfusedCompositionBitForBit) {
  at::manual_seed(41);
  const std::vector<int64_t> counts{0, 100, 130, 1, 256};
  const int64_t M = 487, H = 200, N = 72;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor h1 = (at::randn({M, H}) * 3).to(dtype), h3 = at::randn({M, H}).to(dtype);
    const at::Tensor w = at::randn({5, N, H}) * 0.1, probe = at::randn({M, N});
    std::vector<at::Tensor> f{h1.clone().requires_grad_(), h3.clone().requires_grad_(), w.clone().requires_grad_()};
    std::vector<at::Tensor> u{h1.clone().requires_grad_(), h3.clone().requires_grad_(), w.clone().requires_grad_()};
    const at::Tensor yf = fp8_grouped_swiglu_linear(f[0], f[1], f[2], counts);
    const at::Tensor yu = fp8_grouped_linear(at::silu(u[0]) * u[1], u[2], counts);
    EXPECT_TRUE(at::equal(yf, yu)) << "forward, " << c10::toString(dtype);
    (yf.to(at::kFloat) * probe).sum().backward();
    (yu.to(at::kFloat) * probe).sum().backward();
    expect_same_grads(f, u, c10::toString(dtype));
    EXPECT_TRUE(at::equal(f[2].grad()[0], at::zeros({N, H}))) << "an idle group's gradient is zero";
  }
  // No rows at all (an ep rank whose experts got no tokens).
  const at::Tensor w0 = at::randn({2, N, H}).requires_grad_();
  const at::Tensor y0 = fp8_grouped_swiglu_linear(at::zeros({0, H}), at::zeros({0, H}), w0, {0, 0});
  EXPECT_EQ(y0.sizes(), at::IntArrayRef({0, N}));
  y0.sum().backward();
  EXPECT_TRUE(at::equal(w0.grad(), at::zeros({2, N, H})));
  EXPECT_THROW(fp8_grouped_swiglu_linear(at::randn({3, H}), at::randn({3, H}), w0, {1, 1}), std::invalid_argument);
}

// The two up projections of a SwiGLU MLP through one pair (the input quantized once) against two
// separate FP8 linears: the same codes and GEMMs, and the input gradient is the same sum of the two
// Dgrads autograd forms, so everything is bit for bit equal.
TEST(Fp8LinearPair, EqualsTwoSeparateLinearsBitForBit) {
  at::manual_seed(47);
  const std::vector<int64_t> counts{0, 100, 130, 1, 256};
  const int64_t M = 487, K = 200, N = 72;
  for (const bool grouped : {false, true})
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      const at::Tensor x = at::randn({M, K}).to(dtype), pa = at::randn({M, N}), pb = at::randn({M, N});
      const at::Tensor wa = grouped ? at::randn({5, N, K}) * 0.1 : at::randn({N, K}) * 0.1;
      const at::Tensor wb = grouped ? at::randn({5, N, K}) * 0.1 : at::randn({N, K}) * 0.1;
      std::vector<at::Tensor> f{x.clone().requires_grad_(), wa.clone().requires_grad_(), wb.clone().requires_grad_()};
      std::vector<at::Tensor> u{x.clone().requires_grad_(), wa.clone().requires_grad_(), wb.clone().requires_grad_()};
      const auto [ya, yb] = grouped ? fp8_grouped_linear_pair(f[0], f[1], f[2], counts) : fp8_linear_pair(f[0], f[1], f[2]);
      const at::Tensor ua = grouped ? fp8_grouped_linear(u[0], u[1], counts) : fp8_linear(u[0], u[1]);
      const at::Tensor ub = grouped ? fp8_grouped_linear(u[0], u[2], counts) : fp8_linear(u[0], u[2]);
      const std::string what = std::string(grouped ? "grouped " : "dense ") + c10::toString(dtype);
      EXPECT_TRUE(at::equal(ya, ua) && at::equal(yb, ub)) << what;
      ((ya.to(at::kFloat) * pa).sum() + (yb.to(at::kFloat) * pb).sum()).backward();
      ((ua.to(at::kFloat) * pa).sum() + (ub.to(at::kFloat) * pb).sum()).backward();
      expect_same_grads(f, u, what.c_str());
    }
  // Only one output used: the other weight gets a zero gradient, the input the one Dgrad.
  const at::Tensor x = at::randn({130, K}).requires_grad_(), wa = at::randn({N, K}).requires_grad_(),
                   wb = at::randn({N, K}).requires_grad_();
  fp8_linear_pair(x, wa, wb)[0].sum().backward();
  EXPECT_TRUE(at::equal(wb.grad(), at::zeros({N, K})));
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}

// Under a zero-bubble capture (ops/weight_grad_store.h) every FP8 function leaves its weights'
// Wgrad to a queued closure: after the backward the inputs hold their gradients and the weights
// none; the closures then give the weights the plain backward's gradients bit for bit.
TEST(Fp8Linear, CapturedWgradIsDeferredExactly) {
  using Loss = std::function<at::Tensor(const std::vector<at::Tensor>&)>;
  struct Case {
    const char* what;
    std::vector<at::Tensor> values;
    size_t first_weight;  // values[first_weight..] are weights
    Loss loss;
  };
  at::manual_seed(53);
  const std::vector<int64_t> counts{0, 100, 130, 1, 256};
  const int64_t M = 487, K = 200, N = 72;
  const at::Tensor x = at::randn({M, K}), h1 = at::randn({M, K}), h3 = at::randn({M, K}), probe = at::randn({M, N});
  const at::Tensor w = at::randn({N, K}) * 0.1, w2 = at::randn({N, K}) * 0.1, wg = at::randn({5, N, K}) * 0.1,
                   wg2 = at::randn({5, N, K}) * 0.1;
  const std::vector<Case> cases = {
      {"fp8_linear", {x, w}, 1, [&](const auto& v) { return (fp8_linear(v[0], v[1]) * probe).sum(); }},
      {"fp8_linear_pair", {x, w, w2}, 1,
       [&](const auto& v) {
         const auto [a, b] = fp8_linear_pair(v[0], v[1], v[2]);
         return (a * probe).sum() + (b * probe * 2).sum();
       }},
      {"fp8_swiglu_linear", {h1, h3, w}, 2,
       [&](const auto& v) { return (fp8_swiglu_linear(v[0], v[1], v[2]) * probe).sum(); }},
      {"fp8_grouped_linear", {x, wg}, 1,
       [&](const auto& v) { return (fp8_grouped_linear(v[0], v[1], counts) * probe).sum(); }},
      {"fp8_grouped_linear_pair", {x, wg, wg2}, 1,
       [&](const auto& v) {
         const auto [a, b] = fp8_grouped_linear_pair(v[0], v[1], v[2], counts);
         return (a * probe).sum() + (b * probe * 2).sum();
       }},
      {"fp8_grouped_swiglu_linear", {h1, h3, wg}, 2,
       [&](const auto& v) { return (fp8_grouped_swiglu_linear(v[0], v[1], v[2], counts) * probe).sum(); }},
  };
  for (const Case& c : cases) {
    auto leaves = [&c] {
      std::vector<at::Tensor> v;
      for (const at::Tensor& t : c.values) v.push_back(t.clone().requires_grad_());
      return v;
    };
    const std::vector<at::Tensor> plain = leaves(), captured = leaves();
    c.loss(plain).backward();
    WeightGradStore::begin_capture();
    try {
      c.loss(captured).backward();
    } catch (...) {
      WeightGradStore::end_capture();
      throw;
    }
    const std::vector<WeightGradFn> fns = WeightGradStore::end_capture();
    EXPECT_EQ(fns.size(), 1u) << c.what;  // one closure per function (a pair's two Wgrads together)
    for (size_t i = 0; i < c.values.size(); ++i) {
      if (i < c.first_weight) EXPECT_TRUE(at::equal(captured[i].grad(), plain[i].grad())) << c.what << " input " << i;
      else EXPECT_FALSE(captured[i].grad().defined()) << c.what << " weight " << i << " got its gradient in I";
    }
    for (const WeightGradFn& fn : fns) fn();
    expect_same_grads(captured, plain, c.what);
  }
}

TEST(Fp8SwigluQuantize, IsTheQuantizedProduct) {
  // The reference is defined as quantize_1x128 of ATen's product; this pins the definition (a
  // product formed in float instead of bf16 would change codes) and the shape checks.
  at::manual_seed(43);
  const at::Tensor h1 = (at::randn({5, 300}) * 4).to(at::kBFloat16), h3 = at::randn({5, 300}).to(at::kBFloat16);
  const Fp8Tensor q = quantize_swiglu_1x128(h1, h3), ref = quantize_1x128(at::silu(h1) * h3);
  EXPECT_TRUE(at::equal(q.data.view(at::kByte), ref.data.view(at::kByte)));
  EXPECT_TRUE(at::equal(q.scale, ref.scale));
  const Fp8Tensor in_float = quantize_1x128(at::silu(h1.to(at::kFloat)) * h3.to(at::kFloat));
  EXPECT_FALSE(at::equal(q.data.view(at::kByte), in_float.data.view(at::kByte)))
      << "rounding the product to bf16 must matter on these inputs, or this test pins nothing";
  EXPECT_THROW(quantize_swiglu_1x128(h1, h3.to(at::kFloat)), std::invalid_argument);
  EXPECT_THROW(quantize_swiglu_1x128(h1, h3.narrow(1, 0, 299)), std::invalid_argument);
}

TEST(Fp8Linear, KeepsTheInputDtype) {
  const at::Tensor x = at::randn({4, 128}).to(at::kBFloat16).requires_grad_();
  const at::Tensor w = at::randn({64, 128}).requires_grad_();
  const at::Tensor y = fp8_linear(x, w);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  y.sum().backward();
  EXPECT_EQ(x.grad().scalar_type(), at::kBFloat16);
  EXPECT_EQ(w.grad().scalar_type(), at::kFloat);  // master-weight gradients stay fp32
}

}  // namespace
