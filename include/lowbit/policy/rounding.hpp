// lowbit/policy/rounding.hpp: how a real value x/scale becomes an integer level.
//
// Rounding is never implicit (CUTLASS's numeric_conversion takes it as a parameter, and so do we).
// Each policy maps a float to the float holding the chosen integer; clamping happens afterwards.
#pragma once

#include <cmath>

namespace lowbit {

// Ties to even. The default: torch.round, ATen's nearbyint and NumPy's rint do this, and the
// reference vectors in tests/data come from them. Assumes the default floating-point environment
// (FE_TONEAREST), as every engine runs in.
struct RoundHalfToEven {
  static float round(float x) noexcept { return std::nearbyint(x); }
};

// Ties away from zero, as C's roundf: what some published quantizers (and ggml's Q4_1 minimum
// handling, among others) use. Offered so their codes can be reproduced exactly.
struct RoundHalfAwayFromZero {
  static float round(float x) noexcept { return std::round(x); }
};

}  // namespace lowbit
