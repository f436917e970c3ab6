// 1x128 and 128x128 quantizers against a naive float reference written here, plus the layout
// identities the backward pass relies on (transposed variants) and the ragged-shape rule.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <iostream>

#include "ops/calc_diff.h"
#include "ops/fp8_quantize.h"
#include "ops/fp8_rows.h"

namespace {

using namespace shoestring::ops;

const uint8_t* codes(const Fp8Tensor& q) { return static_cast<const uint8_t*>(q.data.data_ptr()); }

bool same_bits(const Fp8Tensor& a, const Fp8Tensor& b) {
  return a.data.sizes() == b.data.sizes() && a.scale.sizes() == b.scale.sizes() &&
         at::equal(a.data.view(at::kByte), b.data.view(at::kByte)) && at::equal(a.scale, b.scale);
}

// Naive reference: for tile (r0.., c0..) of size tr x 128, scale = max(amax, 1e-4)/448 and every
// element is x * (448 / max(amax, 1e-4)) rounded by encode_e4m3 (tested in test_fp8_format).
void expect_matches_naive(const at::Tensor& x, const Fp8Tensor& q, int64_t tr) {
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t R = xf.size(0), C = xf.size(1);
  const float* p = xf.data_ptr<float>();
  const float* s = q.scale.data_ptr<float>();
  const int64_t KB = (C + 127) / 128;
  ASSERT_EQ(q.scale.size(0), (R + tr - 1) / tr);
  ASSERT_EQ(q.scale.size(1), KB);
  for (int64_t r0 = 0; r0 < R; r0 += tr)
    for (int64_t kb = 0; kb < KB; ++kb) {
      float amax = 0.0f;
      int64_t arg = -1;
      for (int64_t r = r0; r < std::min(R, r0 + tr); ++r)
        for (int64_t c = kb * 128; c < std::min(C, kb * 128 + 128); ++c)
          if (std::fabs(p[r * C + c]) > amax) amax = std::fabs(p[r * C + c]), arg = r * C + c;
      const float clamped = std::max(amax, 1e-4f);
      ASSERT_EQ(s[(r0 / tr) * KB + kb], clamped / 448.0f);
      for (int64_t r = r0; r < std::min(R, r0 + tr); ++r)
        for (int64_t c = kb * 128; c < std::min(C, kb * 128 + 128); ++c) {
          const uint8_t want = encode_e4m3(p[r * C + c] * (448.0f / clamped));
          ASSERT_EQ(codes(q)[r * C + c], want) << "element (" << r << "," << c << ")";
          // Independent bound: E4M3 keeps 3 mantissa bits, so |deq - x| <= 2^-4 |x| for normals,
          // plus half the smallest subnormal (2^-10 * scale) for tiny values.
          const float deq = decode_e4m3(codes(q)[r * C + c]) * s[(r0 / tr) * KB + kb];
          ASSERT_LE(std::fabs(deq - p[r * C + c]),
                    std::ldexp(std::fabs(p[r * C + c]), -4) + std::ldexp(clamped / 448.0f, -10) * 1.0001f);
        }
      if (arg >= 0 && amax >= 1e-4f) {  // the tile's largest element maps to +-448 exactly
        EXPECT_EQ(codes(q)[arg] & 0x7F, 0x7E) << "tile amax must use the top code";
      }
    }
}

TEST(Fp8Quantize, Tile1x128MatchesNaive) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({64, 512}) * at::exp(at::randn({64, 1}) * 3);  // rows of very different scale
  const Fp8Tensor q = quantize_1x128(x);
  EXPECT_EQ(q.block_rows, 1);
  EXPECT_EQ(q.data.scalar_type(), at::kFloat8_e4m3fn);
  expect_matches_naive(x, q, 1);
}

TEST(Fp8Quantize, Block128x128MatchesNaive) {
  at::manual_seed(2);
  const at::Tensor w = at::randn({384, 256}) * 0.02;
  const Fp8Tensor q = quantize_128x128(w);
  EXPECT_EQ(q.block_rows, 128);
  expect_matches_naive(w, q, 128);
}

TEST(Fp8Quantize, RaggedShapesAreImplicitlyZeroPadded) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({5, 200});
  const Fp8Tensor q = quantize_1x128(x);
  EXPECT_EQ(q.scale.sizes(), at::IntArrayRef({5, 2}));
  expect_matches_naive(x, q, 1);
  // Same as quantizing the explicitly zero-padded tensor, then cropping.
  const Fp8Tensor qp = quantize_1x128(at::constant_pad_nd(x, {0, 56}));
  EXPECT_TRUE(at::equal(qp.data.view(at::kByte).narrow(1, 0, 200), q.data.view(at::kByte)));
  EXPECT_TRUE(at::equal(qp.scale, q.scale));

  const at::Tensor w = at::randn({130, 300});
  const Fp8Tensor qw = quantize_128x128(w);
  EXPECT_EQ(qw.scale.sizes(), at::IntArrayRef({2, 3}));
  expect_matches_naive(w, qw, 128);
}

TEST(Fp8Quantize, ZeroTileUsesEpsilon) {
  const Fp8Tensor q = quantize_1x128(at::zeros({2, 128}));
  EXPECT_EQ(q.scale[0][0].item<float>(), 1e-4f / 448.0f);
  EXPECT_EQ(at::count_nonzero(q.data.view(at::kByte)).item<int64_t>(), 0);
}

TEST(Fp8Quantize, TransposedVariantsAreTheTransposeOfTheTensor) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({200, 300});
  EXPECT_TRUE(same_bits(quantize_1x128_transposed(x), quantize_1x128(x.t().contiguous())));
  const Fp8Tensor qt = quantize_128x128_transposed(x), q = quantize_128x128(x);
  EXPECT_TRUE(same_bits(qt, quantize_128x128(x.t().contiguous())));
  // A 128x128 block of x^T is a transposed block of x: same codes, same scales, transposed.
  EXPECT_TRUE(at::equal(qt.data.view(at::kByte), q.data.view(at::kByte).t()));
  EXPECT_TRUE(at::equal(qt.scale, q.scale.t()));
}

TEST(Fp8Quantize, GroupedWeightsBlockEachGroup) {
  at::manual_seed(5);
  const at::Tensor w = at::randn({3, 256, 384});
  const Fp8Tensor q = quantize_128x128(w);
  EXPECT_EQ(q.scale.sizes(), at::IntArrayRef({3, 2, 3}));
  for (int64_t g = 0; g < 3; ++g) {
    const Fp8Tensor qg = quantize_128x128(w[g]);
    EXPECT_TRUE(at::equal(q.data.view(at::kByte)[g], qg.data.view(at::kByte)));
    EXPECT_TRUE(at::equal(q.scale[g], qg.scale));
  }
  EXPECT_NO_THROW(check_fp8_tensor(q, "grouped"));
}

TEST(Fp8Quantize, RoundTripAccuracy) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({256, 1024});
  const double d1 = calc_diff(dequantize(quantize_1x128(x)), x);
  const double d2 = calc_diff(dequantize(quantize_128x128(x)), x);
  std::cout << "[measured] quantize_roundtrip calc_diff: 1x128 " << d1 << ", 128x128 " << d2 << "\n";
  EXPECT_LT(d1, kFp8Tol.quantize_roundtrip);
  EXPECT_LT(d2, kFp8Tol.quantize_roundtrip);
}

TEST(Fp8Rows, PackedRowsHoldCodesThenScalesAndDecodeAsDequantize) {
  // The wire format of the FP8 expert dispatch: per row the quantize_1x128 codes, then the fp32
  // scales' bytes; unpacking gives dequantize's values exactly, in the requested dtype.
  at::manual_seed(5);
  for (int64_t d : {int64_t(16), int64_t(128), int64_t(130), int64_t(300)}) {
    SCOPED_TRACE(d);
    const at::Tensor x = at::randn({9, d}, at::kDouble) * at::exp(at::randn({9, 1}, at::kDouble) * 2);
    const Fp8Tensor q = quantize_1x128(x);
    const at::Tensor packed = pack_fp8_rows(x);
    const int64_t kb = (d + 127) / 128;
    ASSERT_EQ(packed.scalar_type(), at::kByte);
    ASSERT_EQ(packed.sizes(), at::IntArrayRef({9, d + 4 * kb}));
    EXPECT_EQ(fp8_row_bytes(d), d + 4 * kb);
    EXPECT_TRUE(at::equal(packed.narrow(1, 0, d), q.data.view(at::kByte)));
    for (int64_t r = 0; r < 9; ++r)
      for (int64_t t = 0; t < kb; ++t) {
        float s;
        std::memcpy(&s, packed[r].narrow(0, d + 4 * t, 4).contiguous().data_ptr<uint8_t>(), 4);
        EXPECT_EQ(s, q.scale[r][t].item<float>());
      }
    const at::Tensor dq = dequantize(q);
    EXPECT_TRUE(at::equal(unpack_fp8_rows(packed, d, at::kFloat), dq));
    EXPECT_TRUE(at::equal(unpack_fp8_rows(packed, d, at::kDouble), dq.to(at::kDouble)));
    EXPECT_TRUE(at::equal(unpack_fp8_rows(packed, d, at::kBFloat16), dq.to(at::kBFloat16)));
    EXPECT_LT(calc_diff(unpack_fp8_rows(packed, d, at::kDouble), x), kFp8Tol.quantize_roundtrip);
  }
  // One row: its scale bytes sit at the unaligned offset 130 of the only row.
  const at::Tensor one = at::randn({1, 130});
  EXPECT_TRUE(at::equal(unpack_fp8_rows(pack_fp8_rows(one), 130, at::kFloat), dequantize(quantize_1x128(one))));
  const at::Tensor none = pack_fp8_rows(at::zeros({0, 130}));
  EXPECT_EQ(none.sizes(), at::IntArrayRef({0, 138}));
  EXPECT_EQ(unpack_fp8_rows(none, 130, at::kFloat).sizes(), at::IntArrayRef({0, 130}));
  EXPECT_THROW(unpack_fp8_rows(at::zeros({2, 137}, at::kByte), 130, at::kFloat), std::invalid_argument);
  EXPECT_THROW(pack_fp8_rows(at::zeros({130})), std::invalid_argument);
}

TEST(Fp8Quantize, RejectsBadInputsWithTheShape) {
  try {
    quantize_1x128(at::randn({4, 4, 4}));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 4, 4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_128x128(at::ones({4, 4}, at::kInt)), std::invalid_argument);
  Fp8Tensor bad = quantize_1x128(at::randn({4, 256}));
  bad.scale = at::ones({4, 3});
  EXPECT_THROW(check_fp8_tensor(bad, "bad"), std::invalid_argument);
}

}  // namespace
