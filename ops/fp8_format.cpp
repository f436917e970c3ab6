#include "ops/fp8_format.h"

#include <algorithm>
#include <array>

namespace shoestring::ops {

std::uint8_t fp8_encode(Fp8Kind kind, float x) {
  return kind == Fp8Kind::kE4M3 ? encode_e4m3(x) : encode_e5m2(x);
}

float fp8_decode(Fp8Kind kind, std::uint8_t code) {
  return kind == Fp8Kind::kE4M3 ? decode_e4m3(code) : decode_e5m2(code);
}

const Fp8Spec& fp8_spec(Fp8Kind kind) { return kind == Fp8Kind::kE4M3 ? kE4M3Spec : kE5M2Spec; }

const char* fp8_name(Fp8Kind kind) { return kind == Fp8Kind::kE4M3 ? "e4m3" : "e5m2"; }

bool fp8_is_nan(Fp8Kind kind, std::uint8_t code) {
  const std::uint8_t mag = code & 0x7F;
  return kind == Fp8Kind::kE4M3 ? mag == 0x7F : mag > 0x7C;
}

// Signed 32-bit lanes throughout: baseline x86-64 (SSE2) has signed compares only, and the
// magnitudes (bits & 0x7FFFFFFF) are non-negative as int32.
void encode_e4m3_scaled(const float* x, float inv, std::uint8_t* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i] * inv;
    const auto u = static_cast<std::int32_t>(detail::float_bits(v));
    const std::int32_t a = u & 0x7FFFFFFF;
    // Both arms are computed for every lane, so each reads a clamped magnitude: no signed overflow
    // (NaN bits) and no out-of-range float-to-int conversion (large values); the select below
    // discards the arm that does not apply.
    const std::int32_t an = std::min(a, 0x43E00000);
    // Normal codes (|v| >= 2^-6): encode_generic's round-to-nearest-even shift by 20, as one add
    // (the tie goes up only when the kept field is odd), then rebias the exponent from 127 to 7.
    const std::int32_t normal = ((an + 0x7FFFF + ((an >> 20) & 1)) >> 20) - (120 << 3);
    // Subnormal codes: |v| / 2^-9 rounded to an integer (8 = the smallest normal code). The
    // product is exact (a power of two, result < 8) and adding 2^23 rounds it to the nearest
    // integer, ties to even, in the default rounding mode.
    const float scaled = detail::bits_float(static_cast<std::uint32_t>(std::min(a, 0x3C800000))) * 512.0f;
    const auto sub = static_cast<std::int32_t>((scaled + 8388608.0f) - 8388608.0f);
    std::int32_t code = a >= 0x3C800000 ? normal : sub;
    code = a >= 0x43E00000 ? 0x7E : code;  // saturate at 448, infinity included
    code = a > 0x7F800000 ? 0x7F : code;   // NaN
    out[i] = static_cast<std::uint8_t>(((u >> 24) & 0x80) | code);
  }
}

namespace {

std::int32_t abs_bits_ignoring_nan(float x) {
  const std::int32_t a = static_cast<std::int32_t>(detail::float_bits(x)) & 0x7FFFFFFF;
  return a > 0x7F800000 ? 0 : a;
}

}  // namespace

float abs_max(const float* x, std::int64_t stride, std::int64_t n) {
  // Non-negative floats order as their bit patterns do, so the maximum is an integer one, which
  // vectorises exactly (a float max reduction would need -ffinite-math-only). NaN counts as 0.
  std::int32_t m = 0;
  if (stride == 1) {  // the loop the compiler vectorises
    for (std::int64_t i = 0; i < n; ++i) m = std::max(m, abs_bits_ignoring_nan(x[i]));
  } else {
    for (std::int64_t i = 0; i < n; ++i) m = std::max(m, abs_bits_ignoring_nan(x[i * stride]));
  }
  return detail::bits_float(static_cast<std::uint32_t>(m));
}

const float* e4m3_decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = decode_e4m3(static_cast<std::uint8_t>(c));
    return t;
  }();
  return table.data();
}

}  // namespace shoestring::ops
