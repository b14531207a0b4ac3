// OCP Microscaling formats (lowbit/format/mx.hpp): every element code of every element format and
// all 256 E8M0 scales decoded against the specification's definitions; element encoding against a
// brute-force nearest search; whole rows (scale choice, saturation, packing) against a restatement
// of the specification's conversion written here; round trips; and every error path.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/format/mx.hpp"

namespace {

using lowbit::Errc;
using lowbit::MxElement;

// ---- The element formats as the MX v1.0 specification (and OFP8 for the FP8 ones) define them.

struct ElementSpec {
  const char* name;
  int bits;
  int exponent_bits, mantissa_bits, bias;  // unused for INT8
  bool is_int;
  int emax_elem;  // exponent of the largest normal
  int specials;   // 0 none, 1 OFP8 E4M3 (NaN S.1111.111), 2 OFP8 E5M2 (IEEE Inf/NaN)
};

template <MxElement E>
ElementSpec spec_of() {
  switch (E) {
    case MxElement::kFp8E4M3:
      return {"FP8 E4M3", 8, 4, 3, 7, false, 8, 1};
    case MxElement::kFp8E5M2:
      return {"FP8 E5M2", 8, 5, 2, 15, false, 15, 2};
    case MxElement::kFp6E3M2:
      return {"FP6 E3M2", 6, 3, 2, 3, false, 4, 0};
    case MxElement::kFp6E2M3:
      return {"FP6 E2M3", 6, 2, 3, 1, false, 2, 0};
    case MxElement::kFp4E2M1:
      return {"FP4 E2M1", 4, 2, 1, 1, false, 2, 0};
    case MxElement::kInt8:
      return {"INT8", 8, 0, 0, 0, true, 0, 0};
  }
  return {};
}

enum class Kind { kFinite, kInf, kNan };

Kind kind_of(const ElementSpec& s, int code) {
  if (s.is_int || s.specials == 0) return Kind::kFinite;
  const int e = (code >> s.mantissa_bits) & ((1 << s.exponent_bits) - 1);
  const int m = code & ((1 << s.mantissa_bits) - 1);
  const int ones = (1 << s.exponent_bits) - 1;
  if (s.specials == 2 && e == ones) return m == 0 ? Kind::kInf : Kind::kNan;
  if (s.specials == 1 && e == ones && m == (1 << s.mantissa_bits) - 1) return Kind::kNan;
  return Kind::kFinite;
}

// The value of a finite element code (exact in double).
double element_value(const ElementSpec& s, int code) {
  if (s.is_int)
    return static_cast<double>(static_cast<std::int8_t>(static_cast<std::uint8_t>(code))) / 64.0;
  const int sign = (code >> (s.bits - 1)) & 1;
  const int e = (code >> s.mantissa_bits) & ((1 << s.exponent_bits) - 1);
  const int m = code & ((1 << s.mantissa_bits) - 1);
  const double f = static_cast<double>(m) / static_cast<double>(1 << s.mantissa_bits);
  const double v = e == 0 ? std::ldexp(f, 1 - s.bias) : std::ldexp(1.0 + f, e - s.bias);
  return sign ? -v : v;
}

// Largest finite magnitude code (sign clear).
int max_code(const ElementSpec& s) {
  if (s.is_int) return 127;
  int best = 0;
  for (int c = 0; c < (1 << (s.bits - 1)); ++c)
    if (kind_of(s, c) == Kind::kFinite) best = c;
  return best;
}

// ---- The specification's conversion, restated: scale from floor(log2(amax)), elements by
// exhaustive nearest search (ties to the even code), clamped to the largest magnitude.

int reference_shared_exponent(const ElementSpec& s, float amax) {
  int floor_log2 = -126;  // amax == 0: log2 of FLT_MIN, lowbit's documented choice
  if (amax != 0.0f) {
    int e = 0;
    std::frexp(static_cast<double>(amax), &e);  // amax = f * 2^e, f in [0.5, 1)
    floor_log2 = e - 1;
  }
  const int shared = floor_log2 - s.emax_elem;
  return shared < -127 ? -127 : shared;
}

int reference_encode(const ElementSpec& s, float x, int shared) {
  const double t = std::ldexp(static_cast<double>(x), -shared);  // exact in double
  const double a = std::fabs(t);
  const int top = max_code(s);
  // At or beyond the largest value, it is the nearest (saturation). Below it, |t| - v is exact in
  // double, so equal distances are real ties.
  int best = a >= element_value(s, top) ? top : -1;
  double best_distance = 0.0;
  for (int c = 0; c <= top && best != top; ++c) {
    if (kind_of(s, c) != Kind::kFinite) continue;
    const double d = std::fabs(a - element_value(s, c));
    if (best < 0 || d < best_distance || (d == best_distance && (c & 1) == 0)) {
      best = c;
      best_distance = d;
    }
  }
  if (s.is_int) return (std::signbit(x) ? -best : best) & 0xFF;
  return (std::signbit(x) ? (1 << (s.bits - 1)) : 0) | best;
}

// lowbit's documented bit stream: element i in bits [i*b, (i+1)*b), low bit first.
std::vector<std::uint8_t> pack_stream(const std::vector<int>& codes, int bits) {
  std::vector<std::uint8_t> out((codes.size() * static_cast<std::size_t>(bits) + 7) / 8, 0);
  for (std::size_t i = 0; i < codes.size(); ++i)
    for (int b = 0; b < bits; ++b) {
      const std::size_t pos = i * static_cast<std::size_t>(bits) + static_cast<std::size_t>(b);
      out[pos / 8] = static_cast<std::uint8_t>(out[pos / 8] | (((codes[i] >> b) & 1) << (pos % 8)));
    }
  return out;
}

template <class F>
void for_each_element(F&& f) {
  f(std::integral_constant<MxElement, MxElement::kFp8E4M3>{});
  f(std::integral_constant<MxElement, MxElement::kFp8E5M2>{});
  f(std::integral_constant<MxElement, MxElement::kFp6E3M2>{});
  f(std::integral_constant<MxElement, MxElement::kFp6E2M3>{});
  f(std::integral_constant<MxElement, MxElement::kFp4E2M1>{});
  f(std::integral_constant<MxElement, MxElement::kInt8>{});
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// A value with a random sign and a log-uniform magnitude in [2^lo, 2^hi).
float random_value(std::mt19937& rng, int lo, int hi) {
  std::uniform_real_distribution<double> exponent(lo, hi);
  const double v = std::exp2(exponent(rng));
  return static_cast<float>((rng() & 1) ? -v : v);
}

TEST_CASE("mx decode: every element code of every element format, against the definitions") {
  for_each_element([](auto element) {
    constexpr MxElement E = decltype(element)::value;
    const ElementSpec s = spec_of<E>();
    for (int code = 0; code < (1 << s.bits); ++code) {
      INFO(s.name, " code ", code);
      const float v = lowbit::mx_decode_element<E>(static_cast<std::uint8_t>(code));
      switch (kind_of(s, code)) {
        case Kind::kNan:
          CHECK(std::isnan(v));
          break;
        case Kind::kInf:
          CHECK(std::isinf(v));
          CHECK(std::signbit(v) == (code >= 128));
          break;
        case Kind::kFinite:
          CHECK(static_cast<double>(v) == element_value(s, code));
          if (!s.is_int) CHECK(std::signbit(v) == (((code >> (s.bits - 1)) & 1) != 0));
          break;
      }
    }
    CHECK(static_cast<double>(lowbit::MxElementTraits<E>::kMax) == element_value(s, max_code(s)));
  });
  // The specification's landmarks.
  CHECK(lowbit::mx_decode_element<MxElement::kFp6E3M2>(0x1F) == 28.0f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp6E3M2>(0x01) == 0.0625f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp6E2M3>(0x1F) == 7.5f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp6E2M3>(0x01) == 0.125f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp4E2M1>(0x7) == 6.0f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp4E2M1>(0x1) == 0.5f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp4E2M1>(0xF) == -6.0f);
  CHECK(lowbit::mx_decode_element<MxElement::kInt8>(0x7F) == 1.984375f);
  CHECK(lowbit::mx_decode_element<MxElement::kInt8>(0x80) == -2.0f);
  CHECK(lowbit::mx_decode_element<MxElement::kFp8E4M3>(0x7E) == 448.0f);
}

TEST_CASE("mx decode: all 256 E8M0 scales") {
  for (int code = 0; code < 256; ++code) {
    INFO("E8M0 code ", code);
    const float v = lowbit::e8m0_to_float(static_cast<std::uint8_t>(code));
    if (code == 255) {
      CHECK(std::isnan(v));
    } else {
      CHECK(static_cast<double>(v) == std::ldexp(1.0, code - 127));
      CHECK(v > 0.0f);
    }
  }
  CHECK(bits_of(lowbit::e8m0_to_float(0)) == 0x00400000u);  // 2^-127, a float32 subnormal
  CHECK(lowbit::e8m0_to_float(254) == std::ldexp(1.0f, 127));
}

TEST_CASE("mx encode: one element against a brute-force nearest search, many values and scales") {
  const std::uint32_t seed = 31337;
  INFO("seed ", seed);
  for_each_element([&](auto element) {
    constexpr MxElement E = decltype(element)::value;
    const ElementSpec s = spec_of<E>();
    std::mt19937 rng(seed);
    std::int64_t failures = 0, checked = 0;
    auto check = [&](float x, int shared) {
      if (!std::isfinite(x)) return;
      ++checked;
      const int mine = lowbit::mx_encode_element<E>(x, shared);
      const int expected = reference_encode(s, x, shared);
      if (mine != expected && ++failures <= 5)
        FAIL_CHECK(std::string(s.name), " x ", x, " shared ", shared, ": lowbit ", mine,
                   " reference ", expected);
    };
    // The finite magnitudes in order: their midpoints (exact in float), with neighbours.
    std::vector<double> magnitudes;
    for (int c = 0; c <= max_code(s); ++c)
      if (kind_of(s, c) == Kind::kFinite) magnitudes.push_back(element_value(s, c));
    for (const int shared : {-127, -100, -20, -3, 0, 1, 5, 40, 110, 127}) {
      for (std::size_t k = 0; k + 1 < magnitudes.size(); ++k) {
        const float mid =
            static_cast<float>(std::ldexp((magnitudes[k] + magnitudes[k + 1]) / 2.0, shared));
        for (const float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 3e38f),
                              static_cast<float>(std::ldexp(magnitudes[k], shared))}) {
          check(x, shared);
          check(-x, shared);
        }
      }
      // Around and beyond the largest: saturation.
      const double top = magnitudes.back();
      for (const double f : {1.0, 1.01, 1.0625, 1.07, 1.1, 1.5, 2.0, 1e3})
        check(static_cast<float>(std::ldexp(top * f, shared)), shared);
      check(std::numeric_limits<float>::max(), shared);
      check(-std::numeric_limits<float>::denorm_min(), shared);
      check(0.0f, shared);
      check(-0.0f, shared);
      // Log-uniform values from far below the smallest subnormal to beyond the largest.
      for (int i = 0; i < 3000; ++i)
        check(static_cast<float>(std::ldexp(random_value(rng, -30, 20), shared)), shared);
    }
    CHECK(failures == 0);
    CHECK(checked > 25000);
  });
}

// Quantizes a row with lowbit and with the restatement, and compares scales, packed elements and
// dequantized values.
template <MxElement E>
void check_row_against_reference(const std::vector<float>& x) {
  const ElementSpec s = spec_of<E>();
  const std::int64_t n = static_cast<std::int64_t>(x.size());
  std::vector<std::uint8_t> elements(lowbit::mx_element_bytes(E, n) + 1, 0xEE);
  std::vector<std::uint8_t> scales(lowbit::mx_scale_bytes(n) + 1, 0xEE);
  REQUIRE(lowbit::mx_quantize_row<E>(x.data(), n, elements.data(), elements.size() - 1,
                                     scales.data(), scales.size() - 1)
              .ok());
  CHECK(elements.back() == 0xEE);
  CHECK(scales.back() == 0xEE);
  elements.pop_back();
  scales.pop_back();

  std::vector<int> codes(x.size());
  std::vector<std::uint8_t> scales_ref;
  std::vector<float> dequant_ref(x.size());
  for (std::int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j)
      amax = std::max(amax, std::fabs(x[static_cast<std::size_t>(b * 32 + j)]));
    const int shared = reference_shared_exponent(s, amax);
    scales_ref.push_back(static_cast<std::uint8_t>(shared + 127));
    for (int j = 0; j < 32; ++j) {
      const std::size_t i = static_cast<std::size_t>(b * 32 + j);
      codes[i] = reference_encode(s, x[i], shared);
      dequant_ref[i] = static_cast<float>(std::ldexp(element_value(s, codes[i]), shared));
    }
  }
  CHECK(scales == scales_ref);
  CHECK(elements == pack_stream(codes, s.bits));

  std::vector<float> y(x.size(), -7.0f);
  REQUIRE(lowbit::mx_dequantize_row<E>(elements.data(), elements.size(), scales.data(),
                                       scales.size(), n, y.data())
              .ok());
  std::int64_t mismatch = -1;
  for (std::size_t i = 0; i < y.size() && mismatch < 0; ++i)
    if (bits_of(y[i]) != bits_of(dequant_ref[i]) &&
        !(y[i] == 0.0f && dequant_ref[i] == 0.0f && s.is_int))
      mismatch = static_cast<std::int64_t>(i);
  CHECK(mismatch == -1);

  // The run-time overloads do the same.
  std::vector<std::uint8_t> e2(elements.size()), s2(scales.size());
  REQUIRE(lowbit::mx_quantize_row(E, x.data(), n, e2.data(), e2.size(), s2.data(), s2.size()).ok());
  CHECK(e2 == elements);
  CHECK(s2 == scales);
  std::vector<float> y2(x.size());
  REQUIRE(
      lowbit::mx_dequantize_row(E, e2.data(), e2.size(), s2.data(), s2.size(), n, y2.data()).ok());
  CHECK((y.empty() || std::memcmp(y2.data(), y.data(), y.size() * sizeof(float)) == 0));
}

TEST_CASE(
    "mx rows: scale choice, elements, packing and dequantization against the spec's conversion") {
  const std::uint32_t seed = 4242;
  INFO("seed ", seed);
  for_each_element([&](auto element) {
    constexpr MxElement E = decltype(element)::value;
    INFO(spec_of<E>().name);
    std::mt19937 rng(seed);
    std::vector<float> x;
    // Blocks of very different magnitudes: gaussian-ish weights, wide-range values, blocks near
    // FLT_MAX and among float32 subnormals, an all-zero block, and one with a lone outlier.
    for (int b = 0; b < 40; ++b) {
      const int centre = static_cast<int>(rng() % 60) - 30;
      for (int j = 0; j < 32; ++j) x.push_back(random_value(rng, centre - 8, centre + 2));
    }
    for (int j = 0; j < 32; ++j) x.push_back(random_value(rng, 110, 127));
    for (int j = 0; j < 32; ++j) x.push_back(random_value(rng, -149, -127));
    for (int j = 0; j < 32; ++j) x.push_back(0.0f);
    for (int j = 0; j < 32; ++j) x.push_back(j == 17 ? -900.0f : random_value(rng, -4, 1));
    check_row_against_reference<E>(x);
    check_row_against_reference<E>(std::vector<float>{});
  });
}

TEST_CASE("mx rows: blocks of exact element values round trip") {
  const std::uint32_t seed = 99;
  INFO("seed ", seed);
  for_each_element([&](auto element) {
    constexpr MxElement E = decltype(element)::value;
    const ElementSpec s = spec_of<E>();
    INFO(s.name);
    std::mt19937 rng(seed);
    // Finite codes, and those of the top binade (which fix the shared exponent).
    std::vector<int> finite, top;
    for (int c = 0; c < (1 << s.bits); ++c) {
      if (kind_of(s, c) != Kind::kFinite) continue;
      if (s.is_int && c == 0x80) continue;  // -2: encoding is symmetric, -2 becomes -127/64
      finite.push_back(c);
      const double v = std::fabs(element_value(s, c));
      if (v >= std::ldexp(1.0, s.emax_elem)) top.push_back(c);
    }
    REQUIRE(!top.empty());
    for (const int shared : {-127, -126, -60, -1, 0, 3, 50, 127 - s.emax_elem}) {
      std::vector<int> codes;
      std::vector<float> x;
      for (int j = 0; j < 64; ++j) {
        const int c = j % 32 == 5 ? top[rng() % top.size()] : finite[rng() % finite.size()];
        codes.push_back(c);
        x.push_back(static_cast<float>(std::ldexp(element_value(s, c), shared)));
      }
      INFO("shared exponent ", shared);
      std::vector<std::uint8_t> elements(lowbit::mx_element_bytes(E, 64)), scales(2);
      REQUIRE(lowbit::mx_quantize_row<E>(x.data(), 64, elements.data(), elements.size(),
                                         scales.data(), 2)
                  .ok());
      CHECK(scales[0] == shared + 127);
      CHECK(scales[1] == shared + 127);
      CHECK(elements == pack_stream(codes, s.bits));  // -0 keeps its sign bit, so it round trips
      std::vector<float> y(64);
      REQUIRE(lowbit::mx_dequantize_row<E>(elements.data(), elements.size(), scales.data(), 2, 64,
                                           y.data())
                  .ok());
      for (int j = 0; j < 64; ++j)
        CHECK(bits_of(y[static_cast<std::size_t>(j)]) == bits_of(x[static_cast<std::size_t>(j)]));
    }
  });
}

TEST_CASE("mx saturation at the block maximum, the smallest and the zero scale") {
  // amax in the top binade beyond the element's largest value clamps to it.
  const auto quantize_one_block = [](auto element, const std::vector<float>& x,
                                     std::vector<std::uint8_t>& elements, std::uint8_t& scale) {
    constexpr MxElement E = decltype(element)::value;
    elements.assign(lowbit::mx_element_bytes(E, 32), 0);
    REQUIRE(
        lowbit::mx_quantize_row<E>(x.data(), 32, elements.data(), elements.size(), &scale, 1).ok());
  };
  std::vector<float> x(32, 0.0f);
  std::vector<std::uint8_t> el;
  std::uint8_t scale = 0;

  x[0] = 500.0f * 1024.0f;  // E4M3: shared = 18 - 8 = 10, 500 > 448 saturates
  x[1] = -511.0f * 1024.0f;
  quantize_one_block(std::integral_constant<MxElement, MxElement::kFp8E4M3>{}, x, el, scale);
  CHECK(scale == 127 + 10);
  CHECK(el[0] == 0x7E);
  CHECK(el[1] == 0xFE);

  x[0] = 7.9f;  // E2M1: shared = 2 - 2 = 0, 7.9 -> 6
  x[1] = -7.0f;
  quantize_one_block(std::integral_constant<MxElement, MxElement::kFp4E2M1>{}, x, el, scale);
  CHECK(scale == 127);
  CHECK((el[0] & 0xF) == 0x7);
  CHECK((el[0] >> 4) == 0xF);

  x[0] = 1.999f;  // INT8: shared 0, 1.999 * 64 = 127.9 -> 127 (not 128), -1.999 -> -127
  x[1] = -1.999f;
  quantize_one_block(std::integral_constant<MxElement, MxElement::kInt8>{}, x, el, scale);
  CHECK(scale == 127);
  CHECK(el[0] == 0x7F);
  CHECK(el[1] == 0x81);

  x[0] = 31.0f;  // E3M2: shared = 4 - 4 = 0, 31 -> 28; 29.9 -> 28
  x[1] = 29.9f;
  quantize_one_block(std::integral_constant<MxElement, MxElement::kFp6E3M2>{}, x, el, scale);
  CHECK(scale == 127);
  CHECK((el[0] & 0x3F) == 0x1F);

  // All zero: log2(FLT_MIN) stands in for log2(0); -126 - emax is clamped to -127.
  std::fill(x.begin(), x.end(), 0.0f);
  quantize_one_block(std::integral_constant<MxElement, MxElement::kFp8E5M2>{}, x, el, scale);
  CHECK(scale == 0);
  for (std::uint8_t b : el) CHECK(b == 0);
  quantize_one_block(std::integral_constant<MxElement, MxElement::kInt8>{}, x, el, scale);
  CHECK(scale == 1);  // -126 - 0

  // float32 subnormals: floor(log2) = -149 - ..., clamped to -127; the elements keep what fits.
  x[3] = std::ldexp(1.0f, -130);
  quantize_one_block(std::integral_constant<MxElement, MxElement::kFp8E5M2>{}, x, el, scale);
  CHECK(scale == 0);
  CHECK(el[3] == 0x30);  // 2^-130 / 2^-127 = 2^-3 = E5M2 0.01100.00
  CHECK(lowbit::mx_shared_exponent<MxElement::kFp8E4M3>(std::numeric_limits<float>::max()) ==
        127 - 8);
  CHECK(lowbit::mx_shared_exponent<MxElement::kInt8>(std::numeric_limits<float>::max()) == 127);
  CHECK(lowbit::mx_shared_exponent<MxElement::kFp4E2M1>(std::numeric_limits<float>::denorm_min()) ==
        -127);
}

TEST_CASE("mx dequantize: NaN scale, Inf and NaN elements, float32 overflow") {
  std::vector<std::uint8_t> el(32, 0x38);  // E4M3 1.0
  el[1] = 0x7F;                            // NaN
  std::vector<float> y(32);
  std::uint8_t scale = lowbit::kE8M0Nan;
  REQUIRE(
      lowbit::mx_dequantize_row<MxElement::kFp8E4M3>(el.data(), 32, &scale, 1, 32, y.data()).ok());
  for (float v : y) CHECK(std::isnan(v));
  scale = 127 + 3;
  REQUIRE(
      lowbit::mx_dequantize_row<MxElement::kFp8E4M3>(el.data(), 32, &scale, 1, 32, y.data()).ok());
  CHECK(y[0] == 8.0f);
  CHECK(std::isnan(y[1]));
  std::vector<std::uint8_t> e5(32, 0x7C);  // E5M2 +Inf
  REQUIRE(
      lowbit::mx_dequantize_row<MxElement::kFp8E5M2>(e5.data(), 32, &scale, 1, 32, y.data()).ok());
  CHECK(std::isinf(y[0]));
  e5[0] = 0x7B;  // 57344 * 2^127 overflows float32
  scale = 254;
  REQUIRE(
      lowbit::mx_dequantize_row<MxElement::kFp8E5M2>(e5.data(), 32, &scale, 1, 32, y.data()).ok());
  CHECK(y[0] == std::numeric_limits<float>::infinity());
  std::vector<std::uint8_t> i8(32, 0x80);  // INT8 -128 = -2
  scale = 127 - 2;
  REQUIRE(lowbit::mx_dequantize_row<MxElement::kInt8>(i8.data(), 32, &scale, 1, 32, y.data()).ok());
  CHECK(y[0] == -0.5f);
}

TEST_CASE("mx errors: non-finite input, indivisible length, short buffers, bad arguments") {
  std::vector<float> x(64, 1.0f);
  std::vector<std::uint8_t> el(lowbit::mx_element_bytes(MxElement::kFp6E2M3, 64), 0x33);
  std::vector<std::uint8_t> sc(2, 0x44);
  const auto untouched = [&] {
    for (std::uint8_t b : el) REQUIRE(b == 0x33);
    for (std::uint8_t b : sc) REQUIRE(b == 0x44);
  };
  REQUIRE(el.size() == 48);
  x[40] = std::numeric_limits<float>::quiet_NaN();
  lowbit::Status s =
      lowbit::mx_quantize_row<MxElement::kFp6E2M3>(x.data(), 64, el.data(), 48, sc.data(), 2);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 40);
  x[40] = 1.0f;
  x[63] = -std::numeric_limits<float>::infinity();
  s = lowbit::mx_quantize_row(MxElement::kFp4E2M1, x.data(), 64, el.data(), 48, sc.data(), 2);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 63);
  x[63] = 1.0f;
  untouched();
  CHECK(lowbit::mx_quantize_row<MxElement::kFp6E2M3>(x.data(), 48, el.data(), 48, sc.data(), 2)
            .code() == Errc::kIndivisible);
  CHECK(lowbit::mx_quantize_row<MxElement::kFp6E2M3>(x.data(), -32, el.data(), 48, sc.data(), 2)
            .code() == Errc::kInvalidArgument);
  CHECK(lowbit::mx_quantize_row<MxElement::kFp6E2M3>(nullptr, 64, el.data(), 48, sc.data(), 2)
            .code() == Errc::kInvalidArgument);
  s = lowbit::mx_quantize_row<MxElement::kFp6E2M3>(x.data(), 64, el.data(), 47, sc.data(), 2);
  CHECK(s.code() == Errc::kShapeMismatch);
  CHECK(s.index() == 32);
  s = lowbit::mx_quantize_row<MxElement::kFp6E2M3>(x.data(), 64, el.data(), 48, sc.data(), 1);
  CHECK(s.code() == Errc::kShapeMismatch);
  CHECK(s.index() == 32);
  CHECK(
      lowbit::mx_quantize_row(static_cast<MxElement>(77), x.data(), 64, el.data(), 48, sc.data(), 2)
          .code() == Errc::kInvalidArgument);
  untouched();
  CHECK(lowbit::mx_quantize_row<MxElement::kInt8>(nullptr, 0, nullptr, 0, nullptr, 0).ok());

  std::vector<float> y(64, 5.0f);
  s = lowbit::mx_dequantize_row<MxElement::kFp6E2M3>(el.data(), 47, sc.data(), 2, 64, y.data());
  CHECK(s.code() == Errc::kTruncated);
  CHECK(s.index() == 32);
  s = lowbit::mx_dequantize_row<MxElement::kFp6E2M3>(el.data(), 48, sc.data(), 1, 64, y.data());
  CHECK(s.code() == Errc::kTruncated);
  CHECK(s.index() == 32);
  CHECK(lowbit::mx_dequantize_row<MxElement::kFp6E2M3>(el.data(), 48, sc.data(), 2, 33, y.data())
            .code() == Errc::kIndivisible);
  CHECK(lowbit::mx_dequantize_row<MxElement::kFp6E2M3>(el.data(), 48, sc.data(), 2, 64, nullptr)
            .code() == Errc::kInvalidArgument);
  CHECK(lowbit::mx_dequantize_row(static_cast<MxElement>(77), el.data(), 48, sc.data(), 2, 64,
                                  y.data())
            .code() == Errc::kInvalidArgument);
  for (float v : y) CHECK(v == 5.0f);
  CHECK(lowbit::mx_element_bytes(MxElement::kFp4E2M1, 96) == 48);
  CHECK(lowbit::mx_element_bytes(MxElement::kFp6E3M2, 96) == 72);
  CHECK(lowbit::mx_element_bytes(MxElement::kInt8, 96) == 96);
  CHECK(lowbit::mx_element_bytes(MxElement::kInt8, 95) == 0);
  CHECK(lowbit::mx_scale_bytes(96) == 3);
}

}  // namespace
