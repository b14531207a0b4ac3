// lowbit/format/fp8.hpp: the OCP 8-bit floating point formats E4M3 and E5M2 (OFP8, revision 1.0),
// exact decoding and round-to-nearest-even encoding from float32, saturating or not.
//
// An FP8 byte is sign, biased exponent and mantissa, like a small IEEE binary float:
//
//          bit 7   6 .. 3   2 .. 0                     bit 7   6 .. 2   1 .. 0
//   E4M3  +---+----------+--------+             E5M2  +---+----------+-------+
//         | S | E (4)    | M (3)  |                   | S | E (5)    | M (2) |
//         +---+----------+--------+                   +---+----------+-------+
//
//   value = (-1)^S * 2^(E - bias) * (1 + M / 2^m)    E > 0 (normal)
//   value = (-1)^S * 2^(1 - bias) * (M / 2^m)        E = 0 (subnormal, and +-0)
//
//                     E4M3                            E5M2
//   bias              7                               15
//   Inf               none                            S.11111.00
//   NaN               S.1111.111 (0x7F, 0xFF)         S.11111.{01,10,11}
//   max normal        S.1111.110 = 448                S.11110.11 = 57344
//   min normal        S.0001.000 = 2^-6               S.00001.00 = 2^-14
//   min subnormal     S.0000.001 = 2^-9               S.00000.01 = 2^-16
//
// E4M3 gives up Inf and all but one NaN mantissa to gain a binade: exponent field 15 holds
// normal numbers 256..448. E5M2 is IEEE-like: it is the top byte of a binary16.
//
// Decoding (to_float, decode_fp8_row) is exact: every FP8 value is a float32. NaN codes decode to a
// quiet NaN of the code's sign, E5M2 Inf to +-Inf.
//
// Encoding (to_fp8, encode_fp8_row) rounds to nearest, ties to even mantissa, as OFP8 section 5.2
// requires: the input is rounded as if the exponent range were unbounded above, and a result
// beyond the largest finite value is an overflow. Subnormal results are produced (no flushing);
// a magnitude at or below half the smallest subnormal rounds to zero of the input's sign. What an
// overflow becomes is the conversion mode, a template argument, so it is never implicit:
//
//   input                      kSaturate          kNonSaturating
//   NaN                        NaN                NaN
//   +-Inf                      +-max              E4M3: NaN    E5M2: +-Inf
//   rounds beyond +-max        +-max              E4M3: NaN    E5M2: +-Inf
//
// "Rounds beyond max" starts at the midpoint to the next value the format would have, with ties to
// even: for E4M3, 464 (between 448 = 1.110b * 2^8 and 480 = 1.111b * 2^8) rounds down to 448 and
// anything larger overflows; for E5M2, 61440 (between 57344 = 1.11b * 2^15 and 2^16) rounds up, so
// it already overflows. NaN is encoded as S.1111.111 (E4M3) and S.11111.10 (E5M2, the quiet-NaN
// pattern of the binary16 it truncates), keeping the input's sign; the payload is not kept.
//
// The rounding works on the float's bits (integer significand and exponent), so it is exact,
// independent of the FPU's rounding mode and of -ffp-contract, and never converts a NaN or an
// out-of-range float to an integer. The same core rounds the MX element formats (format/mx.hpp),
// which add a power-of-two shift.
//
// Row API, for data: encode_fp8_row rejects NaN and Inf inputs (kNonFinite, index of the first)
// before writing anything, as every lowbit quantizer does; convert special values one at a time
// with to_fp8 when a NaN must travel. decode_fp8_row decodes every byte (all 256 are valid).
//   kInvalidArgument  negative count, null pointer with count > 0
//   kShapeMismatch    output shorter than the input (index = the first value without room)
#pragma once

#include <array>
#include <cstdint>
#include <limits>

#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"

namespace lowbit {

enum class Fp8Format : std::uint8_t { kE4M3, kE5M2 };

// What a finite input beyond the largest finite value (and Inf) becomes (OFP8 section 5.2).
enum class Fp8Overflow : std::uint8_t {
  kSaturate,        // +-max; NaN stays NaN
  kNonSaturating,   // E4M3: NaN, E5M2: +-Inf
};

// Raw storage of one FP8 value.
template <Fp8Format Format>
struct Fp8 {
  std::uint8_t bits;
};
using Fp8E4M3 = Fp8<Fp8Format::kE4M3>;
using Fp8E5M2 = Fp8<Fp8Format::kE5M2>;
static_assert(sizeof(Fp8E4M3) == 1 && sizeof(Fp8E5M2) == 1, "an FP8 value is one byte");

template <Fp8Format Format>
struct Fp8Traits;

template <>
struct Fp8Traits<Fp8Format::kE4M3> {
  static constexpr int kExponentBits = 4;
  static constexpr int kMantissaBits = 3;
  static constexpr int kBias = 7;
  static constexpr std::uint8_t kMaxCode = 0x7E;       // 448, the largest finite magnitude
  static constexpr std::uint8_t kNanCode = 0x7F;       // S.1111.111, the only NaN
  static constexpr std::uint8_t kOverflowCode = 0x7F;  // no Inf: overflow is NaN
  static constexpr float kMax = 448.0f;
  static constexpr bool kHasInfinity = false;
};

template <>
struct Fp8Traits<Fp8Format::kE5M2> {
  static constexpr int kExponentBits = 5;
  static constexpr int kMantissaBits = 2;
  static constexpr int kBias = 15;
  static constexpr std::uint8_t kMaxCode = 0x7B;       // 57344
  static constexpr std::uint8_t kNanCode = 0x7E;       // S.11111.10
  static constexpr std::uint8_t kOverflowCode = 0x7C;  // S.11111.00 = Inf
  static constexpr float kMax = 57344.0f;
  static constexpr bool kHasInfinity = true;
};

namespace detail {
namespace minifloat {

// Number of significant bits of v (0 for 0).
constexpr int bit_width(std::uint32_t v) noexcept {
  int n = 0;
  while (v != 0) {
    v >>= 1;
    ++n;
  }
  return n;
}

// round(sig / 2^drop), ties to even, for sig < 2^24. drop <= 0 multiplies (callers guarantee
// drop >= -3, so the shift stays far below 32 bits).
constexpr std::uint32_t round_shift(std::uint32_t sig, int drop) noexcept {
  if (drop <= 0) return sig << -drop;
  if (drop > 25) return 0;  // sig / 2^drop < 2^-2: below one half
  const std::uint32_t kept = sig >> drop;
  const std::uint32_t rest = sig & ((1u << drop) - 1u);
  const std::uint32_t half = 1u << (drop - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u) != 0)) ? 1u : 0u);
}

// A finite float magnitude as an integer significand and the weight of its last bit:
// |x| = sig * 2^lsb, sig < 2^24.
struct Exact {
  std::uint32_t sig;
  int lsb;
};
inline Exact exact_magnitude(std::uint32_t abs_bits) noexcept {
  const std::uint32_t biased = abs_bits >> 23;
  const std::uint32_t fraction = abs_bits & 0x7FFFFFu;
  if (biased == 0) return {fraction, -149};  // subnormal float (or zero)
  return {fraction | 0x800000u, static_cast<int>(biased) - 150};
}

// Rounds |x| / 2^shift (x finite, given by its magnitude bits) to nearest, ties to even, onto a
// binary float grid with `mantissa_bits` fraction bits and smallest normal exponent `emin`, as if
// its exponent range were unbounded above. Returns the magnitude code, exponent field << m |
// mantissa, which exceeds the format's largest code exactly when the result overflows.
//
// Why one addition gives the code: with binade = max(floor(log2 v), emin), the value is rounded to
// a multiple of 2^(binade - m), q = round(v / 2^(binade - m)). Below emin (subnormal results), q
// is the code itself, 0..2^m (2^m being the smallest normal). In a normal binade, q lies in
// [2^m, 2^(m+1)] and the code is ((binade - emin + 1) << m) + (q - 2^m), the same sum; a q
// rounded up to 2^(m+1) carries into the next binade's code, which is the correct result.
inline std::uint32_t round_magnitude(std::uint32_t abs_bits, int shift, int mantissa_bits,
                                     int emin) noexcept {
  const Exact v = exact_magnitude(abs_bits);
  if (v.sig == 0) return 0;
  const int lsb = v.lsb - shift;
  const int top = lsb + bit_width(v.sig) - 1;  // floor(log2(|x| / 2^shift))
  const int binade = top > emin ? top : emin;
  // At least 1 when binade == top (the float has 24 - m more bits than the grid, or, subnormal, a
  // leading bit below emin); > 1 - m otherwise. Either way round_shift's contract holds.
  const int drop = binade - mantissa_bits - lsb;
  return (static_cast<std::uint32_t>(binade - emin) << mantissa_bits) +
         round_shift(v.sig, drop);
}

// round(|x| / 2^exponent), ties to even, for a finite x with |x| / 2^exponent < 2^24 (an integer
// grid: the MXINT8 elements).
inline std::uint32_t round_to_multiple(std::uint32_t abs_bits, int exponent) noexcept {
  const Exact v = exact_magnitude(abs_bits);
  if (v.sig == 0) return 0;
  return round_shift(v.sig, exponent - v.lsb);
}

// 2^e as a float, exactly, for -149 <= e <= 127 (constexpr: no bit casts in C++17).
constexpr float pow2(int e) noexcept {
  float r = 1.0f;
  for (; e > 0; --e) r *= 2.0f;
  for (; e < 0; ++e) r *= 0.5f;  // exact down to 2^-149: each step halves a power of two
  return r;
}

// The value of a magnitude code on the grid of round_magnitude (exact).
constexpr float magnitude_value(std::uint32_t code, int mantissa_bits, int emin) noexcept {
  const std::uint32_t exponent = code >> mantissa_bits;
  const std::uint32_t mantissa = code & ((1u << mantissa_bits) - 1u);
  if (exponent == 0) return static_cast<float>(mantissa) * pow2(emin - mantissa_bits);
  return static_cast<float>(mantissa + (1u << mantissa_bits)) *
         pow2(static_cast<int>(exponent) - 1 + emin - mantissa_bits);
}

}  // namespace minifloat

template <Fp8Format Format>
constexpr std::array<float, 256> make_fp8_values() noexcept {
  using T = Fp8Traits<Format>;
  std::array<float, 256> table{};
  for (std::uint32_t code = 0; code < 128; ++code) {
    float v = minifloat::magnitude_value(code, T::kMantissaBits, 1 - T::kBias);
    if (code > T::kMaxCode) {
      v = std::numeric_limits<float>::quiet_NaN();
      if (T::kHasInfinity && code == T::kOverflowCode) v = std::numeric_limits<float>::infinity();
    }
    table[code] = v;
    table[code + 128] = -v;
  }
  return table;
}

}  // namespace detail

// The 256 values of a format, indexed by code (NaN codes hold a NaN of the code's sign).
template <Fp8Format Format>
struct Fp8Values {
  static constexpr std::array<float, 256> kTable = detail::make_fp8_values<Format>();
};

template <Fp8Format Format>
constexpr float to_float(Fp8<Format> v) noexcept {
  return Fp8Values<Format>::kTable[v.bits];
}

template <Fp8Format Format, Fp8Overflow Overflow>
inline Fp8<Format> to_fp8(float x) noexcept {
  using T = Fp8Traits<Format>;
  const std::uint32_t u = detail::float_bits(x);
  const auto sign = static_cast<std::uint8_t>((u >> 24) & 0x80u);
  const std::uint32_t abs = u & 0x7FFFFFFFu;
  constexpr std::uint8_t kOverflow =
      Overflow == Fp8Overflow::kSaturate ? T::kMaxCode : T::kOverflowCode;
  if (abs > 0x7F800000u) return {static_cast<std::uint8_t>(sign | T::kNanCode)};
  if (abs == 0x7F800000u) return {static_cast<std::uint8_t>(sign | kOverflow)};
  const std::uint32_t magnitude =
      detail::minifloat::round_magnitude(abs, 0, T::kMantissaBits, 1 - T::kBias);
  if (magnitude > T::kMaxCode) return {static_cast<std::uint8_t>(sign | kOverflow)};
  return {static_cast<std::uint8_t>(sign | magnitude)};
}

template <Fp8Overflow Overflow>
inline Fp8E4M3 to_fp8_e4m3(float x) noexcept {
  return to_fp8<Fp8Format::kE4M3, Overflow>(x);
}
template <Fp8Overflow Overflow>
inline Fp8E5M2 to_fp8_e5m2(float x) noexcept {
  return to_fp8<Fp8Format::kE5M2, Overflow>(x);
}

// Encodes x[0..n) into out[0..n). NaN or Inf anywhere is kNonFinite and nothing is written.
template <Fp8Format Format, Fp8Overflow Overflow>
inline Status encode_fp8_row(const float* x, std::int64_t n, Fp8<Format>* out,
                             std::int64_t out_count) noexcept {
  if (n < 0 || out_count < 0) return {Errc::kInvalidArgument, "fp8 row: negative count"};
  if (n > 0 && (x == nullptr || out == nullptr))
    return {Errc::kInvalidArgument, "fp8 row: null pointer"};
  if (out_count < n) return {Errc::kShapeMismatch, "fp8 row: output shorter than input", out_count};
  for (std::int64_t i = 0; i < n; ++i) {
    if ((detail::float_bits(x[i]) & 0x7F800000u) == 0x7F800000u)
      return {Errc::kNonFinite, "input is NaN or Inf", i};
  }
  for (std::int64_t i = 0; i < n; ++i) out[i] = to_fp8<Format, Overflow>(x[i]);
  return {};
}

// Decodes in[0..n) into out[0..n).
template <Fp8Format Format>
inline Status decode_fp8_row(const Fp8<Format>* in, std::int64_t n, float* out,
                             std::int64_t out_count) noexcept {
  if (n < 0 || out_count < 0) return {Errc::kInvalidArgument, "fp8 row: negative count"};
  if (n > 0 && (in == nullptr || out == nullptr))
    return {Errc::kInvalidArgument, "fp8 row: null pointer"};
  if (out_count < n) return {Errc::kShapeMismatch, "fp8 row: output shorter than input", out_count};
  for (std::int64_t i = 0; i < n; ++i) out[i] = to_float(in[i]);
  return {};
}

}  // namespace lowbit
