// lowbit/numeric.hpp: 16-bit float storage types and their exact conversions.
//
// Weights arrive as fp16 or bf16 (safetensors, GGUF, the reference vectors in tests/data). The
// conversions are written on the bit patterns, so they are exact, independent of compiler flags
// and of F16C, and never trap on NaN or subnormal inputs:
//   half -> float: exact (every half is a float);
//   float -> half: round to nearest, ties to even; overflow gives +-Inf; NaN stays NaN (quiet);
//   bf16 <-> float: the top 16 bits of the float; float -> bf16 rounds to nearest even.
#pragma once

#include <cstdint>
#include <cstring>

namespace lowbit {

// Raw storage of an IEEE-754 binary16 value.
struct Half {
  std::uint16_t bits;
};
// Raw storage of a bfloat16 value (the high half of a binary32).
struct BFloat16 {
  std::uint16_t bits;
};

namespace detail {
inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

inline float to_float(Half h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  const std::uint32_t exponent = (h.bits >> 10) & 0x1Fu;
  std::uint32_t mantissa = h.bits & 0x3FFu;
  if (exponent == 0x1Fu)  // Inf or NaN: keep the payload, force quiet
    return detail::bits_float(sign | 0x7F800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0));
  if (exponent != 0) return detail::bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  if (mantissa == 0) return detail::bits_float(sign);  // +-0
  // Subnormal half: value = mantissa * 2^-24, exactly representable as a normal float.
  int shift = 0;
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    ++shift;
  }
  mantissa &= 0x3FFu;
  return detail::bits_float(sign | (static_cast<std::uint32_t>(113 - shift) << 23) |
                            (mantissa << 13));
}

inline Half to_half(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u)  // Inf or NaN
    return Half{static_cast<std::uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0))};
  if (abs >= 0x477FF000u) return Half{static_cast<std::uint16_t>(sign | 0x7C00u)};  // rounds to Inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: value / 2^-24, rounded to nearest even, as an integer.
    if (abs < 0x33000000u) return Half{sign};  // below half the smallest subnormal: +-0
    const std::uint32_t exponent = abs >> 23;
    const std::uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent;  // 14..24 bits to drop
    const std::uint32_t half_bits = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    const std::uint32_t rounded =
        half_bits + ((rest > halfway || (rest == halfway && (half_bits & 1u))) ? 1u : 0u);
    return Half{static_cast<std::uint16_t>(sign | rounded)};
  }
  // Normal: rebias the exponent, round the 13 dropped bits to nearest even (a carry may ripple
  // into the exponent, which is the correct result, up to Inf handled above).
  const std::uint32_t rebiased = abs - (112u << 23);
  const std::uint32_t rounded = rebiased + 0xFFFu + ((rebiased >> 13) & 1u);
  return Half{static_cast<std::uint16_t>(sign | (rounded >> 13))};
}

inline float to_float(BFloat16 b) noexcept {
  return detail::bits_float(static_cast<std::uint32_t>(b.bits) << 16);
}

inline BFloat16 to_bfloat16(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u)  // NaN: keep sign, force quiet
    return BFloat16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  const std::uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return BFloat16{static_cast<std::uint16_t>(rounded >> 16)};
}

}  // namespace lowbit
