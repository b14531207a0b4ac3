// lowbit/detail/affine.hpp: the element-wise steps of affine quantization, shared by the
// quantizer, the LSQ ops and the range searches so that all of them round the same way.
// Conventions (torch's, see quantizer.hpp): multiply by the float32 reciprocal of the scale,
// round, add the zero point after rounding, clamp, dequantize as float(q - zp) * scale.
#pragma once

#include <cstdint>

#include "lowbit/policy/symmetry.hpp"

namespace lowbit {
namespace detail {

// The unclamped level zero_point + round(x * inv_scale), as a float so that no magnitude of x
// reaches an integer conversion before the clamp (torch converts first, which is UB for huge x).
template <class Rounding>
inline float level(float x, float inv_scale, std::int32_t zero_point) noexcept {
  return static_cast<float>(zero_point) + Rounding::round(x * inv_scale);
}

inline std::int32_t clamp_level(float level, CodeRange codes) noexcept {
  const float lo = static_cast<float>(codes.min), hi = static_cast<float>(codes.max);
  return static_cast<std::int32_t>(level < lo ? lo : (level > hi ? hi : level));
}

inline float dequantize_code(std::int32_t q, float scale, std::int32_t zero_point) noexcept {
  return static_cast<float>(q - zero_point) * scale;
}

}  // namespace detail
}  // namespace lowbit
