// OCP FP8 E4M3 and E5M2 (lowbit/format/fp8.hpp), exhaustively: every code decoded against the
// OFP8 definition, and encoding against an independent reference that searches all 256 decoded
// values for the nearest (ties to the even mantissa), on every float16 value, a stride through all
// float32 bit patterns, a dense sweep of the FP8 range, and every midpoint with its neighbours.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/format/fp8.hpp"
#include "lowbit/numeric.hpp"

namespace {

using lowbit::Errc;
using lowbit::Fp8Format;
using lowbit::Fp8Overflow;

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ---- The formats as the OFP8 specification defines them (sign, exponent field, mantissa field).

struct Spec {
  const char* name;
  int exponent_bits, mantissa_bits, bias;
  bool ieee_specials;  // E5M2: Inf = S.11111.00, NaN = S.11111.{01,10,11}; E4M3: NaN = S.1111.111
};
constexpr Spec kE4M3{"E4M3", 4, 3, 7, false};
constexpr Spec kE5M2{"E5M2", 5, 2, 15, true};

enum class Kind { kFinite, kInf, kNan };

Kind kind_of(const Spec& s, int code) {
  const int e = (code >> s.mantissa_bits) & ((1 << s.exponent_bits) - 1);
  const int m = code & ((1 << s.mantissa_bits) - 1);
  const int e_all_ones = (1 << s.exponent_bits) - 1;
  if (s.ieee_specials) {
    if (e == e_all_ones) return m == 0 ? Kind::kInf : Kind::kNan;
  } else if (e == e_all_ones && m == (1 << s.mantissa_bits) - 1) {
    return Kind::kNan;
  }
  return Kind::kFinite;
}

// The value of a finite code, from the definition (double arithmetic; every FP8 value is exact).
double value_of(const Spec& s, int code) {
  const int sign = (code >> 7) & 1;
  const int e = (code >> s.mantissa_bits) & ((1 << s.exponent_bits) - 1);
  const int m = code & ((1 << s.mantissa_bits) - 1);
  const double fraction = static_cast<double>(m) / static_cast<double>(1 << s.mantissa_bits);
  const double magnitude =
      e == 0 ? std::ldexp(fraction, 1 - s.bias) : std::ldexp(1.0 + fraction, e - s.bias);
  return sign ? -magnitude : magnitude;
}

template <Fp8Format F>
const Spec& spec() {
  return F == Fp8Format::kE4M3 ? kE4M3 : kE5M2;
}

// The reference encoder: the nearest of all finite non-negative codes to |x| by exhaustive
// search, plus the value the format would have next above its largest (480 for E4M3, whose code
// would be 0x7F with an odd mantissa; 2^16 for E5M2, 0x7C with an even one), so that rounding is
// done as if the exponent range were unbounded. Ties go to the code with the even mantissa.
template <Fp8Format F, Fp8Overflow O>
std::uint8_t reference_encode(float x) {
  const Spec& s = spec<F>();
  const int sign = std::signbit(x) ? 0x80 : 0;
  const int max_code = F == Fp8Format::kE4M3 ? 0x7E : 0x7B;
  const int nan_code = F == Fp8Format::kE4M3 ? 0x7F : 0x7E;
  const int overflow_code = F == Fp8Format::kE4M3 ? 0x7F : 0x7C;
  const int saturated = O == Fp8Overflow::kSaturate ? max_code : overflow_code;
  if (std::isnan(x)) return static_cast<std::uint8_t>(sign | nan_code);
  if (std::isinf(x)) return static_cast<std::uint8_t>(sign | saturated);
  const double a = std::fabs(static_cast<double>(x));
  const double beyond = F == Fp8Format::kE4M3 ? 480.0 : 65536.0;
  // At or past the value beyond the largest, nothing finite is nearer. Below it, |x| - v is exact
  // in double (both are floats within 2^17 of each other in magnitude), so ties are real ties.
  if (a >= beyond) return static_cast<std::uint8_t>(sign | saturated);
  int best = -1;
  double best_distance = 0.0;
  for (int code = 0; code <= max_code + 1; ++code) {
    if (code <= max_code && kind_of(s, code) != Kind::kFinite) continue;
    const double v = code <= max_code ? value_of(s, code) : beyond;
    const int virtual_code = code <= max_code ? code : overflow_code;
    const double d = std::fabs(a - v);
    if (best < 0 || d < best_distance || (d == best_distance && (virtual_code & 1) == 0)) {
      best = virtual_code;
      best_distance = d;
    }
  }
  if (best > max_code) return static_cast<std::uint8_t>(sign | saturated);
  return static_cast<std::uint8_t>(sign | best);
}

template <Fp8Format F, Fp8Overflow O>
void check_encode(float x, std::int64_t& failures) {
  const std::uint8_t mine = lowbit::to_fp8<F, O>(x).bits;
  const std::uint8_t expected = reference_encode<F, O>(x);
  if (mine != expected) {
    if (++failures <= 5) {
      FAIL_CHECK(std::string(spec<F>().name),
                 std::string(O == Fp8Overflow::kSaturate ? " saturating" : " non-saturating"),
                 " encode of ", x, " (bits ", bits_of(x), "): lowbit ", int(mine), " reference ",
                 int(expected));
    }
  }
}

template <class Sweep>
void for_all_modes(Sweep&& sweep) {
  sweep(std::integral_constant<Fp8Format, Fp8Format::kE4M3>{},
        std::integral_constant<Fp8Overflow, Fp8Overflow::kSaturate>{});
  sweep(std::integral_constant<Fp8Format, Fp8Format::kE4M3>{},
        std::integral_constant<Fp8Overflow, Fp8Overflow::kNonSaturating>{});
  sweep(std::integral_constant<Fp8Format, Fp8Format::kE5M2>{},
        std::integral_constant<Fp8Overflow, Fp8Overflow::kSaturate>{});
  sweep(std::integral_constant<Fp8Format, Fp8Format::kE5M2>{},
        std::integral_constant<Fp8Overflow, Fp8Overflow::kNonSaturating>{});
}

template <Fp8Format F>
void check_all_decodes() {
  const Spec& s = spec<F>();
  for (int code = 0; code < 256; ++code) {
    INFO(s.name, " code ", code);
    const float v = lowbit::to_float(lowbit::Fp8<F>{static_cast<std::uint8_t>(code)});
    switch (kind_of(s, code)) {
      case Kind::kNan:
        CHECK(std::isnan(v));
        CHECK(std::signbit(v) == (code >= 128));
        break;
      case Kind::kInf:
        CHECK(std::isinf(v));
        CHECK(std::signbit(v) == (code >= 128));
        break;
      case Kind::kFinite: {
        const double expected = value_of(s, code);
        CHECK(static_cast<double>(v) == expected);
        CHECK(std::signbit(v) == (code >= 128));  // -0 is S.0000.000
        break;
      }
    }
  }
}

TEST_CASE("fp8 decode: all 256 codes of E4M3 and E5M2 against the OFP8 definition") {
  check_all_decodes<Fp8Format::kE4M3>();
  check_all_decodes<Fp8Format::kE5M2>();
  int e4m3_nans = 0, e5m2_nans = 0, e5m2_infs = 0;
  for (int c = 0; c < 256; ++c) {
    e4m3_nans +=
        std::isnan(lowbit::to_float(lowbit::Fp8E4M3{static_cast<std::uint8_t>(c)})) ? 1 : 0;
    const float v = lowbit::to_float(lowbit::Fp8E5M2{static_cast<std::uint8_t>(c)});
    e5m2_nans += std::isnan(v) ? 1 : 0;
    e5m2_infs += std::isinf(v) ? 1 : 0;
  }
  CHECK(e4m3_nans == 2);
  CHECK(e5m2_nans == 6);
  CHECK(e5m2_infs == 2);
  // The landmarks of the specification's table.
  CHECK(lowbit::to_float(lowbit::Fp8E4M3{0x7E}) == 448.0f);
  CHECK(lowbit::to_float(lowbit::Fp8E4M3{0x08}) == std::ldexp(1.0f, -6));
  CHECK(lowbit::to_float(lowbit::Fp8E4M3{0x07}) == 0.875f * std::ldexp(1.0f, -6));
  CHECK(lowbit::to_float(lowbit::Fp8E4M3{0x01}) == std::ldexp(1.0f, -9));
  CHECK(lowbit::to_float(lowbit::Fp8E5M2{0x7B}) == 57344.0f);
  CHECK(lowbit::to_float(lowbit::Fp8E5M2{0x04}) == std::ldexp(1.0f, -14));
  CHECK(lowbit::to_float(lowbit::Fp8E5M2{0x01}) == std::ldexp(1.0f, -16));
  CHECK(lowbit::to_float(lowbit::Fp8E5M2{0xFC}) == -std::numeric_limits<float>::infinity());
  CHECK(lowbit::Fp8Traits<Fp8Format::kE4M3>::kMax == 448.0f);
  CHECK(lowbit::Fp8Traits<Fp8Format::kE5M2>::kMax == 57344.0f);
  // E5M2 is the top byte of a binary16.
  for (int c = 0; c < 256; ++c) {
    const float v = lowbit::to_float(lowbit::Fp8E5M2{static_cast<std::uint8_t>(c)});
    const float h = lowbit::to_float(lowbit::Half{static_cast<std::uint16_t>(c << 8)});
    CHECK((std::isnan(v) ? std::isnan(h) : bits_of(v) == bits_of(h)));
  }
}

TEST_CASE("fp8 encode: every float16 value, both formats, both overflow modes") {
  for_all_modes([](auto format, auto overflow) {
    std::int64_t failures = 0;
    for (std::uint32_t h = 0; h < 65536; ++h) {
      const float x = lowbit::to_float(lowbit::Half{static_cast<std::uint16_t>(h)});
      check_encode<decltype(format)::value, decltype(overflow)::value>(x, failures);
    }
    CHECK(failures == 0);
  });
}

TEST_CASE("fp8 encode: a stride through all float32 bit patterns and a dense sweep of the range") {
  for_all_modes([](auto format, auto overflow) {
    constexpr Fp8Format F = decltype(format)::value;
    constexpr Fp8Overflow O = decltype(overflow)::value;
    std::int64_t failures = 0;
    // All 2^32 patterns with a prime stride: NaNs with payloads, Infs, subnormals, huge values.
    for (std::uint64_t u = 0; u < (std::uint64_t{1} << 32); u += 16411)
      check_encode<F, O>(float_of(static_cast<std::uint32_t>(u)), failures);
    // Every binade from 2^-20 (below half the smallest subnormal of both) to 2^17 (beyond both
    // maxima): 2048 evenly spaced significands each, both signs.
    for (int e = -20; e <= 17; ++e) {
      for (std::uint32_t m = 0; m < (1u << 23); m += 4096 + 1) {
        const float x = float_of((static_cast<std::uint32_t>(e + 127) << 23) | m);
        check_encode<F, O>(x, failures);
        check_encode<F, O>(-x, failures);
      }
    }
    CHECK(failures == 0);
  });
}

TEST_CASE("fp8 encode: every midpoint between neighbouring values, and its float neighbours") {
  for_all_modes([](auto format, auto overflow) {
    constexpr Fp8Format F = decltype(format)::value;
    constexpr Fp8Overflow O = decltype(overflow)::value;
    const Spec& s = spec<F>();
    // The non-negative finite values in order, and the value past the largest.
    std::vector<double> values;
    for (int c = 0; c < 128; ++c)
      if (kind_of(s, c) == Kind::kFinite) values.push_back(value_of(s, c));
    values.push_back(F == Fp8Format::kE4M3 ? 480.0 : 65536.0);
    std::int64_t failures = 0, checked = 0;
    for (std::size_t k = 0; k + 1 < values.size(); ++k) {
      const float mid = static_cast<float>((values[k] + values[k + 1]) / 2.0);
      REQUIRE(static_cast<double>(mid) == (values[k] + values[k + 1]) / 2.0);  // exact in float
      for (const float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f),
                            static_cast<float>(values[k]), static_cast<float>(values[k + 1])}) {
        check_encode<F, O>(x, failures);
        check_encode<F, O>(-x, failures);
        checked += 2;
      }
    }
    CHECK(failures == 0);
    CHECK(checked == 10 * static_cast<std::int64_t>(values.size() - 1));
  });
  // The documented boundary cases, by hand.
  using lowbit::to_fp8_e4m3;
  using lowbit::to_fp8_e5m2;
  CHECK(to_fp8_e4m3<Fp8Overflow::kNonSaturating>(464.0f).bits == 0x7E);  // tie to even: 448
  CHECK(to_fp8_e4m3<Fp8Overflow::kNonSaturating>(std::nextafter(464.0f, 1e9f)).bits == 0x7F);
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(std::nextafter(464.0f, 1e9f)).bits == 0x7E);
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(-1e30f).bits == 0xFE);
  CHECK(to_fp8_e5m2<Fp8Overflow::kNonSaturating>(61440.0f).bits == 0x7C);  // tie to even: 2^16
  CHECK(to_fp8_e5m2<Fp8Overflow::kNonSaturating>(std::nextafter(61440.0f, 0.0f)).bits == 0x7B);
  CHECK(to_fp8_e5m2<Fp8Overflow::kSaturate>(61440.0f).bits == 0x7B);
  CHECK(to_fp8_e5m2<Fp8Overflow::kNonSaturating>(-std::numeric_limits<float>::infinity()).bits ==
        0xFC);
  CHECK(to_fp8_e4m3<Fp8Overflow::kNonSaturating>(-std::numeric_limits<float>::infinity()).bits ==
        0xFF);
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(std::numeric_limits<float>::infinity()).bits == 0x7E);
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(std::numeric_limits<float>::quiet_NaN()).bits == 0x7F);
  CHECK(to_fp8_e5m2<Fp8Overflow::kSaturate>(-std::numeric_limits<float>::quiet_NaN()).bits == 0xFE);
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(std::ldexp(1.0f, -10)).bits == 0x00);         // tie: 0
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(3.0f * std::ldexp(1.0f, -10)).bits == 0x02);  // tie: 2
  CHECK(to_fp8_e4m3<Fp8Overflow::kSaturate>(-1e-30f).bits == 0x80);                       // -0
  CHECK(to_fp8_e5m2<Fp8Overflow::kSaturate>(-0.0f).bits == 0x80);
}

TEST_CASE("fp8 round trip: encode(decode(c)) == c for every non-NaN code") {
  for_all_modes([](auto format, auto overflow) {
    constexpr Fp8Format F = decltype(format)::value;
    constexpr Fp8Overflow O = decltype(overflow)::value;
    const Spec& s = spec<F>();
    for (int c = 0; c < 256; ++c) {
      const Kind k = kind_of(s, c);
      if (k == Kind::kNan) continue;
      INFO(s.name, " code ", c);
      const float v = lowbit::to_float(lowbit::Fp8<F>{static_cast<std::uint8_t>(c)});
      const std::uint8_t back = lowbit::to_fp8<F, O>(v).bits;
      if (k == Kind::kInf && O == Fp8Overflow::kSaturate) {
        CHECK(back == (c & 0x80) + 0x7B);  // Inf saturates to the largest finite value
      } else {
        CHECK(back == c);
        CHECK(bits_of(lowbit::to_float(lowbit::Fp8<F>{back})) == bits_of(v));
      }
    }
  });
}

TEST_CASE("fp8 rows: encode and decode, errors before writing") {
  std::vector<float> x = {0.0f, -1.5f, 448.0f, 500.0f, 1e-3f, -60000.0f, 3.0f};
  std::vector<lowbit::Fp8E4M3> q(8, lowbit::Fp8E4M3{0x11});
  REQUIRE(lowbit::encode_fp8_row<Fp8Format::kE4M3, Fp8Overflow::kSaturate>(x.data(), 7, q.data(), 8)
              .ok());
  for (std::size_t i = 0; i < 7; ++i)
    CHECK(q[i].bits == lowbit::to_fp8_e4m3<Fp8Overflow::kSaturate>(x[i]).bits);
  CHECK(q[7].bits == 0x11);
  std::vector<float> y(7, -1.0f);
  REQUIRE(lowbit::decode_fp8_row(q.data(), 7, y.data(), 7).ok());
  for (std::size_t i = 0; i < 7; ++i) CHECK(y[i] == lowbit::to_float(q[i]));
  CHECK(y[3] == 448.0f);

  std::vector<lowbit::Fp8E5M2> r(7, lowbit::Fp8E5M2{0x22});
  x[4] = std::numeric_limits<float>::quiet_NaN();
  lowbit::Status s = lowbit::encode_fp8_row<Fp8Format::kE5M2, Fp8Overflow::kNonSaturating>(
      x.data(), 7, r.data(), 7);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 4);
  x[4] = 0.0f;
  x[6] = std::numeric_limits<float>::infinity();
  s = lowbit::encode_fp8_row<Fp8Format::kE5M2, Fp8Overflow::kSaturate>(x.data(), 7, r.data(), 7);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 6);
  s = lowbit::encode_fp8_row<Fp8Format::kE5M2, Fp8Overflow::kSaturate>(x.data(), 7, r.data(), 6);
  CHECK(s.code() == Errc::kShapeMismatch);
  CHECK(s.index() == 6);
  for (const auto& v : r) CHECK(v.bits == 0x22);
  CHECK(lowbit::encode_fp8_row<Fp8Format::kE5M2, Fp8Overflow::kSaturate>(x.data(), -1, r.data(), 7)
            .code() == Errc::kInvalidArgument);
  CHECK(lowbit::encode_fp8_row<Fp8Format::kE5M2, Fp8Overflow::kSaturate>(nullptr, 3, r.data(), 7)
            .code() == Errc::kInvalidArgument);
  CHECK(lowbit::encode_fp8_row<Fp8Format::kE5M2, Fp8Overflow::kSaturate>(nullptr, 0, nullptr, 0)
            .ok());
  CHECK(lowbit::decode_fp8_row(r.data(), 7, y.data(), 6).code() == Errc::kShapeMismatch);
  CHECK(lowbit::decode_fp8_row(r.data(), 7, nullptr, 7).code() == Errc::kInvalidArgument);
}

}  // namespace
