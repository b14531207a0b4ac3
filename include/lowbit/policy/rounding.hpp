// lowbit/policy/rounding.hpp: how a real value x/scale becomes an integer level.
//
// Rounding is never implicit (CUTLASS's numeric_conversion takes it as a parameter, and so do we).
// Each policy maps a float to the float holding the chosen integer; clamping happens afterwards.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace lowbit {

// Ties to even. The default: torch.round, ATen's nearbyint and NumPy's rint do this, and the
// reference vectors in tests/data come from them. Assumes the default floating-point environment
// (FE_TONEAREST), as every engine runs in.
//
// Not std::nearbyint directly: on baseline x86-64 (no SSE4.1) that is a libm call per element,
// which was the largest single cost of quantizing a tensor. Adding 1.5 * 2^23 leaves round(x) in the
// low mantissa bits (the FPU rounds the sum to nearest even), read back as an integer, so no
// optimisation flag can fold it away; ggml's nearest_int uses the same identity. Valid for
// |x| < 2^22 - 1 (the sum must stay below 2^24); larger magnitudes, NaN and Inf take
// nearbyint. A zero result is +0 (nearbyint gives -0 for x in (-0.5, -0]); lowbit converts
// levels to integers, where the sign of zero is gone.
struct RoundHalfToEven {
  static float round(float x) noexcept {
    if (std::fabs(x) < 4194303.0f) {
      const float shifted = x + 12582912.0f;
      std::int32_t bits;
      std::memcpy(&bits, &shifted, sizeof bits);
      return static_cast<float>((bits & 0x007FFFFF) - 0x00400000);
    }
    return std::nearbyint(x);
  }
};

// Ties away from zero, as C's roundf: what some published quantizers (and ggml's Q4_1 minimum
// handling, among others) use. Offered so their codes can be reproduced exactly.
struct RoundHalfAwayFromZero {
  static float round(float x) noexcept { return std::round(x); }
};

}  // namespace lowbit
