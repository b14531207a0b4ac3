// fp16 and bf16 conversions, exhaustively over every 16-bit pattern.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "lowbit/numeric.hpp"

namespace {
// The value of a binary16 pattern from its definition, in double: (-1)^s * 2^(e-15) * 1.m, or
// 2^-14 * 0.m for subnormals.
double half_value(std::uint16_t bits) {
  const int sign = bits >> 15, e = (bits >> 10) & 31, m = bits & 1023;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return sign ? -mag : mag;
}
}  // namespace

TEST_CASE("half -> float is exact and half -> float -> half is the identity") {
  for (std::uint32_t u = 0; u < 65536; ++u) {
    const auto bits = static_cast<std::uint16_t>(u);
    const float f = lowbit::to_float(lowbit::Half{bits});
    const int e = (bits >> 10) & 31;
    if (e == 31) {
      CHECK(((bits & 1023) ? std::isnan(f) : std::isinf(f)));
      continue;
    }
    CHECK(static_cast<double>(f) == half_value(bits));
    CHECK(lowbit::to_half(f).bits == bits);  // also distinguishes -0 from +0
  }
}

TEST_CASE("float -> half rounds to nearest even, overflows to Inf, keeps NaN") {
  // Halfway between 1 and the next half (1 + 2^-10) rounds to even (1); just above rounds up.
  CHECK(lowbit::to_half(1.0f + std::ldexp(1.0f, -11)).bits == 0x3C00);
  CHECK(lowbit::to_half(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)).bits == 0x3C01);
  CHECK(lowbit::to_half(1.0f + 3 * std::ldexp(1.0f, -11)).bits == 0x3C02);  // tie to even, up
  CHECK(lowbit::to_half(65504.0f).bits == 0x7BFF);
  CHECK(lowbit::to_half(65519.99f).bits == 0x7BFF);
  CHECK(lowbit::to_half(65520.0f).bits == 0x7C00);  // the tie above max rounds to Inf
  CHECK(lowbit::to_half(-1e10f).bits == 0xFC00);
  CHECK((lowbit::to_half(std::nanf("")).bits & 0x7FFF) > 0x7C00);
  // Subnormals: 2^-24 is the smallest; half of it ties to 0 (even), a bit more rounds up.
  CHECK(lowbit::to_half(std::ldexp(1.0f, -24)).bits == 0x0001);
  CHECK(lowbit::to_half(std::ldexp(1.0f, -25)).bits == 0x0000);
  CHECK(lowbit::to_half(std::ldexp(1.5f, -25)).bits == 0x0001);
  CHECK(lowbit::to_half(std::ldexp(3.0f, -25)).bits == 0x0002);  // 1.5 * 2^-24 ties to 2
  CHECK(lowbit::to_half(-std::ldexp(1.0f, -30)).bits == 0x8000);
}

TEST_CASE("bf16 is the high half of a float, rounded to nearest even") {
  for (std::uint32_t u = 0; u < 65536; ++u) {
    const auto bits = static_cast<std::uint16_t>(u);
    const float f = lowbit::to_float(lowbit::BFloat16{bits});
    std::uint32_t fbits;
    std::memcpy(&fbits, &f, 4);
    CHECK(fbits == (u << 16));
    if (!std::isnan(f)) CHECK(lowbit::to_bfloat16(f).bits == bits);
  }
  CHECK(lowbit::to_bfloat16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3F80);   // tie to even
  CHECK(lowbit::to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)).bits == 0x3F82);
  CHECK(std::isnan(lowbit::to_float(lowbit::to_bfloat16(std::nanf("")))));
}
