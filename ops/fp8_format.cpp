#include "ops/fp8_format.h"

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

const float* e4m3_decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = decode_e4m3(static_cast<std::uint8_t>(c));
    return t;
  }();
  return table.data();
}

}  // namespace shoestring::ops
