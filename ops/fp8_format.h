#pragma once
// The two OCP 8-bit floating-point formats (OCP "8-bit Floating Point Specification (OFP8)" 1.0):
//   E4M3 ("e4m3fn"): 1 sign, 4 exponent (bias 7), 3 mantissa bits. No infinity; S.1111.111 is NaN,
//                    so the largest finite value is S.1111.110 = 1.75 * 2^8 = 448.
//   E5M2:            1 sign, 5 exponent (bias 15), 2 mantissa bits. IEEE-like: S.11111.00 is
//                    +-inf, S.11111.{01,10,11} are NaN; the largest finite value is 1.75 * 2^15 = 57344.
// DeepSeek-V3 uses E4M3 for every tensor (§3.3.1: "we adopt the E4M3 format on all tensors for
// higher precision", made possible by the fine-grained scales); E5M2 is here for experiments.
//
// Encoding is round-to-nearest-even and *saturating* ("satfinite"): any finite or infinite value of
// magnitude above the largest finite value becomes +-max, NaN stays NaN. This is what the GPU's
// cvt.rn.satfinite.{e4m3,e5m2}x2.f32 does, and what a quantizer wants (a scale computed as amax/448
// may put x/scale a rounding error above 448; that must not become NaN). Note that c10::Float8_*
// casts differ: they map overflow to NaN (e4m3fn) or inf (e5m2).
//
// The functions are header-only and __host__ __device__ so that the CPU reference and the CUDA
// kernels run literally the same integer code: GPU quantization is bit-identical by construction.
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SHOESTRING_HD __host__ __device__ __forceinline__
#else
#define SHOESTRING_HD inline
#endif

namespace shoestring::ops {

enum class Fp8Kind : int { kE4M3 = 0, kE5M2 = 1 };

// Bit layout parameters of one FP8 format.
struct Fp8Spec {
  int exp_bits;
  int man_bits;
  int bias;
  bool has_inf;          // E5M2: exponent all ones + mantissa 0 is inf; E4M3: only NaN
  std::uint8_t max_code; // largest finite magnitude (sign bit clear)
  std::uint8_t nan_code; // the NaN we produce (sign bit clear); decode accepts every NaN pattern
  float max_value;       // decode(max_code)
};

inline constexpr Fp8Spec kE4M3Spec{4, 3, 7, false, 0x7E, 0x7F, 448.0f};
inline constexpr Fp8Spec kE5M2Spec{5, 2, 15, true, 0x7B, 0x7F, 57344.0f};

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

namespace detail {

SHOESTRING_HD std::uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

SHOESTRING_HD float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// Round-to-nearest-even right shift of a non-negative integer (shift >= 1).
SHOESTRING_HD std::uint32_t rne_shift(std::uint32_t v, int shift) {
  if (shift >= 32) return 0;
  const std::uint32_t q = v >> shift;
  const std::uint32_t rem = v & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
}

// Generic saturating RNE encoder for a format with E exponent bits, M mantissa bits and bias B.
template <int E, int M, int B>
SHOESTRING_HD std::uint8_t encode_generic(float x, std::uint8_t max_code, std::uint8_t nan_code,
                                          std::uint32_t max_bits) {
  const std::uint32_t u = float_bits(x);
  const std::uint8_t sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<std::uint8_t>(sign | nan_code);  // NaN (any payload)
  if (a >= max_bits) return static_cast<std::uint8_t>(sign | max_code);    // saturate, incl. inf
  const int fexp = static_cast<int>(a >> 23) - 127;  // unbiased float exponent (-127 for subnormals)
  constexpr int kEmin = 1 - B;                       // smallest normal exponent of the FP8 format
  if (fexp >= kEmin) {
    // Normal in FP8: drop 23-M mantissa bits with RNE on the whole (exponent|mantissa) field, so a
    // mantissa carry rolls into the exponent; then rebias from 127 to B. a < max_bits guarantees the
    // rounded value is at most max (max is representable and the nearest to anything below it).
    const std::uint32_t r = rne_shift(a, 23 - M);
    return static_cast<std::uint8_t>(sign | (r - (static_cast<std::uint32_t>(127 - B) << M)));
  }
  // Subnormal (or zero) in FP8: value = q * 2^(kEmin - M) with integer q = RNE(a / 2^(kEmin-M)).
  // With the implicit bit, a = m24 * 2^(fexp - 23); q = m24 >> (23 + kEmin - M - fexp). A carry to
  // q = 2^M is exactly the smallest normal code (exponent field 1, mantissa 0).
  const std::uint32_t m24 = fexp == -127 ? (a & 0x7FFFFFu) : ((a & 0x7FFFFFu) | 0x800000u);
  const int shift = 23 + kEmin - M - (fexp == -127 ? -126 : fexp);
  return static_cast<std::uint8_t>(sign | rne_shift(m24, shift));
}

template <int E, int M, int B, bool HasInf>
SHOESTRING_HD float decode_generic(std::uint8_t c) {
  const std::uint32_t sign = static_cast<std::uint32_t>(c & 0x80u) << 24;
  const int ef = (c >> M) & ((1 << E) - 1);
  const std::uint32_t mf = c & ((1u << M) - 1u);
  constexpr int kEmax = (1 << E) - 1;
  if (ef == kEmax) {
    if (HasInf) return bits_float(sign | (mf == 0 ? 0x7F800000u : 0x7FC00000u));
    if (mf == (1u << M) - 1u) return bits_float(sign | 0x7FC00000u);  // E4M3: only S.1111.111
  }
  if (ef == 0) {
    // Subnormal: mf * 2^(1 - B - M); the float product is exact (a small integer times 2^k).
    const float v = static_cast<float>(mf) * bits_float(static_cast<std::uint32_t>(127 + 1 - B - M) << 23);
    return bits_float(sign | float_bits(v));
  }
  return bits_float(sign | (static_cast<std::uint32_t>(ef - B + 127) << 23) | (mf << (23 - M)));
}

}  // namespace detail

// float -> E4M3 code, RNE, saturating to +-448, NaN -> 0x7F/0xFF.
SHOESTRING_HD std::uint8_t encode_e4m3(float x) {
  return detail::encode_generic<4, 3, 7>(x, 0x7E, 0x7F, 0x43E00000u /* 448.0f */);
}
// float -> E5M2 code, RNE, saturating to +-57344 (inf included), NaN -> 0x7F/0xFF.
SHOESTRING_HD std::uint8_t encode_e5m2(float x) {
  return detail::encode_generic<5, 2, 15>(x, 0x7B, 0x7F, 0x47600000u /* 57344.0f */);
}
SHOESTRING_HD float decode_e4m3(std::uint8_t c) { return detail::decode_generic<4, 3, 7, false>(c); }
SHOESTRING_HD float decode_e5m2(std::uint8_t c) { return detail::decode_generic<5, 2, 15, true>(c); }

// CPU batch forms for the quantizers (ops/fp8_quantize.cpp), written without branches so that the
// compiler vectorises them; each equals the scalar code above element for element (every rounding
// boundary is checked in test_fp8_format).
// out[i] = encode_e4m3(x[i] * inv), the product rounded to float first, as the scalar quantizer does.
void encode_e4m3_scaled(const float* x, float inv, std::uint8_t* out, std::int64_t n);
// max |x[i * stride]| over i < n, NaN ignored (std::fmax's rule), 0 for n = 0.
float abs_max(const float* x, std::int64_t stride, std::int64_t n);

// Run-time dispatch, for tests and tools.
std::uint8_t fp8_encode(Fp8Kind kind, float x);
float fp8_decode(Fp8Kind kind, std::uint8_t code);
const Fp8Spec& fp8_spec(Fp8Kind kind);
const char* fp8_name(Fp8Kind kind);
bool fp8_is_nan(Fp8Kind kind, std::uint8_t code);

// All 256 decoded E4M3 values, indexed by code (the CPU GEMM reference decodes through it).
const float* e4m3_decode_table();

}  // namespace shoestring::ops
