// E4M3 / E5M2 codes: every code both ways, every rounding tie, saturation, subnormals. Expected
// values are computed here from the OCP spec's bit layout (ldexp in double), not by our decoder.
#include <gtest/gtest.h>

#include <c10/util/Float8_e4m3fn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "ops/fp8_format.h"

namespace {

using shoestring::ops::Fp8Kind;
using shoestring::ops::fp8_decode;
using shoestring::ops::fp8_encode;

struct Layout {
  Fp8Kind kind;
  int e, m, bias;
};
constexpr Layout kE4M3{Fp8Kind::kE4M3, 4, 3, 7};
constexpr Layout kE5M2{Fp8Kind::kE5M2, 5, 2, 15};

bool spec_is_nan(const Layout& L, int code) {
  const int ef = (code >> L.m) & ((1 << L.e) - 1), mf = code & ((1 << L.m) - 1);
  if (L.kind == Fp8Kind::kE4M3) return ef == 15 && mf == 7;
  return ef == 31 && mf != 0;
}
bool spec_is_inf(const Layout& L, int code) {
  return L.kind == Fp8Kind::kE5M2 && ((code >> 2) & 31) == 31 && (code & 3) == 0;
}
double spec_value(const Layout& L, int code) {
  const int s = code >> 7, ef = (code >> L.m) & ((1 << L.e) - 1), mf = code & ((1 << L.m) - 1);
  const double mag = ef == 0 ? std::ldexp(mf, 1 - L.bias - L.m) : std::ldexp(1.0 + std::ldexp(mf, -L.m), ef - L.bias);
  return s ? -mag : mag;
}
// Positive finite codes in increasing order of value (the code order itself for sign-magnitude).
std::vector<int> positive_finite_codes(const Layout& L) {
  std::vector<int> codes;
  for (int c = 0; c < 128; ++c)
    if (!spec_is_nan(L, c) && !spec_is_inf(L, c)) codes.push_back(c);
  return codes;
}

class Fp8Format : public ::testing::TestWithParam<Layout> {};

TEST_P(Fp8Format, AllCodesDecodeAndReencode) {
  const Layout L = GetParam();
  for (int c = 0; c < 256; ++c) {
    const float v = fp8_decode(L.kind, static_cast<uint8_t>(c));
    if (spec_is_nan(L, c)) {
      EXPECT_TRUE(std::isnan(v)) << "code " << c;
      EXPECT_TRUE(shoestring::ops::fp8_is_nan(L.kind, fp8_encode(L.kind, v))) << "code " << c;
      continue;
    }
    if (spec_is_inf(L, c)) {
      EXPECT_TRUE(std::isinf(v) && std::signbit(v) == (c >= 128)) << "code " << c;
      // Saturating encode: inf -> +-max finite (cvt.rn.satfinite semantics).
      EXPECT_EQ(fp8_encode(L.kind, v), (c & 0x80) | 0x7B) << "code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(v), spec_value(L, c)) << "code " << c;
    EXPECT_EQ(std::signbit(v), c >= 128) << "code " << c;  // -0 keeps its sign
    EXPECT_EQ(fp8_encode(L.kind, v), c) << "code " << c << " value " << v;
  }
}

TEST_P(Fp8Format, EveryTieRoundsToEvenMantissa) {
  const Layout L = GetParam();
  const std::vector<int> codes = positive_finite_codes(L);
  for (size_t i = 0; i + 1 < codes.size(); ++i) {
    const int lo = codes[i], hi = codes[i + 1];
    const double mid = 0.5 * (spec_value(L, lo) + spec_value(L, hi));
    const float fmid = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(fmid), mid) << "midpoint must be exact in float";
    const int even = (lo & 1) == 0 ? lo : hi;
    for (int sign : {0, 0x80}) {
      const float s = sign ? -1.0f : 1.0f;
      EXPECT_EQ(fp8_encode(L.kind, s * fmid), sign | even) << "tie between codes " << lo << " and " << hi;
      EXPECT_EQ(fp8_encode(L.kind, s * std::nextafter(fmid, 0.0f)), sign | lo) << "just below tie " << lo;
      EXPECT_EQ(fp8_encode(L.kind, s * std::nextafter(fmid, 1e30f)), sign | hi) << "just above tie " << hi;
    }
  }
}

TEST_P(Fp8Format, SaturatesAndKeepsNaN) {
  const Layout L = GetParam();
  const std::vector<int> codes = positive_finite_codes(L);
  const int max_code = codes.back();
  const float max_value = static_cast<float>(spec_value(L, max_code));
  EXPECT_EQ(max_value, L.kind == Fp8Kind::kE4M3 ? 448.0f : 57344.0f);
  for (float x : {max_value, std::nextafter(max_value, 1e30f), max_value * 1.0625f, max_value * 1.2f, 1e30f,
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(fp8_encode(L.kind, x), max_code) << x;
    EXPECT_EQ(fp8_encode(L.kind, -x), 0x80 | max_code) << -x;
  }
  EXPECT_TRUE(shoestring::ops::fp8_is_nan(L.kind, fp8_encode(L.kind, std::nanf(""))));
  EXPECT_TRUE(shoestring::ops::fp8_is_nan(L.kind, fp8_encode(L.kind, -std::nanf(""))));
}

TEST_P(Fp8Format, Subnormals) {
  const Layout L = GetParam();
  const double q = std::ldexp(1.0, 1 - L.bias - L.m);  // smallest subnormal
  auto enc = [&](double v) { return static_cast<int>(fp8_encode(L.kind, static_cast<float>(v))); };
  EXPECT_EQ(enc(q), 1);
  EXPECT_EQ(enc(0.5 * q), 0);       // tie -> even (0)
  EXPECT_EQ(enc(0.75 * q), 1);
  EXPECT_EQ(enc(1.5 * q), 2);       // tie between 1 and 2 -> 2
  EXPECT_EQ(enc(2.5 * q), 2);       // tie between 2 and 3 -> 2
  const int top = (1 << L.m) - 1;   // largest subnormal mantissa (odd)
  EXPECT_EQ(enc((top + 0.5) * q), 1 << L.m);  // tie to the smallest normal (even mantissa 0)
  EXPECT_EQ(enc(1e-30), 0);
  EXPECT_EQ(enc(-1e-30), 0x80);
  EXPECT_EQ(enc(std::numeric_limits<float>::denorm_min()), 0);
  EXPECT_EQ(fp8_decode(L.kind, 1), static_cast<float>(q));
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8Format, ::testing::Values(kE4M3, kE5M2),
                         [](const auto& info) { return std::string(shoestring::ops::fp8_name(info.param.kind)); });

// c10's Float8_e4m3fn is an independent RNE implementation; inside the finite range it must agree
// with ours. (Outside, c10 returns NaN where we saturate, by design.)
TEST(Fp8FormatCrossCheck, MatchesC10WithinRange) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> expo(-12.0f, 8.7f);
  for (int i = 0; i < 200000; ++i) {
    float x = std::ldexp(1.0f, 0) * std::exp2(expo(gen));
    if (i % 2) x = -x;
    if (std::fabs(x) > 448.0f) continue;
    const c10::Float8_e4m3fn ref(x);
    EXPECT_EQ(shoestring::ops::encode_e4m3(x), ref.x) << x;
    if (::testing::Test::HasFailure()) break;
  }
}

// The quantizers' branch-free batch encoder against the scalar one. At inv = 1 the encoder sees the
// values themselves: both signs, every float exponent from float subnormals to infinity, the seven
// mantissa bits below the implicit one in all combinations (every rounding tie of normal and
// subnormal codes) with several patterns of the bits below them (exact ties, just above, just
// below), and NaNs. Then random values times random multipliers, as a tile's scale makes them.
// (Run once over all 2^32 floats at inv = 1 on 2026-11-27: no difference; too slow for every run.)
TEST(Fp8FormatBatch, EncodeMatchesTheScalarEncoderOnEveryRoundingBoundary) {
  std::vector<float> vals;
  for (std::uint32_t sign : {0u, 0x80000000u})
    for (std::uint32_t field = 0; field <= 255; ++field) {
      if (field > 20 && field < 110) continue;  // far below the smallest code: all flush to 0 alike
      for (std::uint32_t hi = 0; hi < 128; ++hi)
        for (std::uint32_t lo : {0u, 1u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
          const std::uint32_t bits = sign | (field << 23) | (hi << 16) | lo;
          float v;
          std::memcpy(&v, &bits, sizeof v);
          vals.push_back(v);
        }
    }
  std::vector<std::uint8_t> got(vals.size());
  shoestring::ops::encode_e4m3_scaled(vals.data(), 1.0f, got.data(), static_cast<std::int64_t>(vals.size()));
  for (size_t i = 0; i < vals.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &vals[i], sizeof bits);
    ASSERT_EQ(got[i], shoestring::ops::encode_e4m3(vals[i])) << "x = " << vals[i] << " (bits 0x" << std::hex << bits << ")";
  }

  std::mt19937 gen(11);
  std::uniform_real_distribution<float> expo(-30.0f, 30.0f);
  std::vector<float> x(4099);  // not a multiple of any vector width
  for (int round = 0; round < 200; ++round) {
    for (float& v : x) v = std::exp2(expo(gen)) * (gen() % 2 ? 1.0f : -1.0f);
    const float inv = std::exp2(expo(gen) / 3.0f);
    got.resize(x.size());
    shoestring::ops::encode_e4m3_scaled(x.data(), inv, got.data(), static_cast<std::int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(got[i], shoestring::ops::encode_e4m3(x[i] * inv)) << x[i] << " * " << inv;
  }
}

TEST(Fp8FormatBatch, AbsMaxIsFmaxOfAbsIgnoringNaN) {
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int round = 0; round < 300; ++round) {
    const std::int64_t n = round % 131, stride = 1 + round % 3;
    std::vector<float> x(static_cast<size_t>(n * stride));
    for (float& v : x) v = normal(gen);
    if (n > 0 && round % 5 == 1) x[static_cast<size_t>((round % n) * stride)] = round % 2 ? nan : -nan;
    if (n > 0 && round % 17 == 3) x[0] = -inf;
    if (round % 7 == 2) std::fill(x.begin(), x.end(), nan);  // all NaN: 0, as fmax from 0 gives
    float want = 0.0f;
    for (std::int64_t i = 0; i < n; ++i) want = std::fmax(want, std::fabs(x[static_cast<size_t>(i * stride)]));
    const float got = shoestring::ops::abs_max(x.data(), stride, n);
    ASSERT_EQ(std::memcmp(&got, &want, sizeof got), 0) << "round " << round << ": " << got << " vs " << want;
  }
}

}  // namespace
