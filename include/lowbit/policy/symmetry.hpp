// lowbit/policy/symmetry.hpp: the integer code range and how (scale, zero point) follow from a
// real range [lo, hi].
//
// Every lowbit scheme is affine: real = scale * (q - zero_point), q an integer in
// [codes.min, codes.max]. Real zero is always exactly representable (q = zero_point), so zero
// padding and ReLU zeros add no bias, which is why the range is first widened to include 0.
//
// The formulas are PyTorch's (torch.ao.quantization _calculate_qparams, 1.13), evaluated in
// float32 in the same order, because engines compare against torch and our oracles come from it:
//   lo' = min(lo, 0), hi' = max(hi, 0)
//   Asymmetric: scale = max((hi' - lo') / (max - min), eps),
//               zero_point = clamp(min - round_half_even(lo' / scale), min, max)
//   Symmetric:  scale = max(max(-lo', hi') / ((max - min) / 2), eps), zero_point = 0
// eps = 2^-23 (float32 epsilon): it gives an all-zero tensor a defined scale and keeps 1/scale
// finite. The price, as in torch, is that tensors whose whole range is below ~1e-7 quantize to
// their zero point; rescale such tensors first.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "lowbit/status.hpp"

namespace lowbit {

// Inclusive range of integer codes.
struct CodeRange {
  std::int32_t min;
  std::int32_t max;
};

// One group's affine parameters.
struct ScaleZeroPoint {
  float scale;
  std::int32_t zero_point;
};

// Smallest scale a policy produces: float32 epsilon, as torch.
constexpr float kScaleFloor = 1.1920928955078125e-07f;

namespace detail {
inline Status check_scale_finite(float scale) noexcept {
  if (!std::isfinite(scale))
    return {Errc::kOutOfRange, "range too wide: its scale overflows float32"};
  return {};
}
}  // namespace detail

// Unsigned codes [0, 2^b - 1] with a zero point inside them: uses every level on skewed ranges
// (post-ReLU/SiLU activations, weights with a shifted mean). Matches torch quint8 affine
// (per_tensor_affine / per_channel_affine) at 8 bits and GPTQ/AWQ's asymmetric 4-bit codes.
struct Asymmetric {
  static constexpr bool kSymmetric = false;
  template <int B>
  static constexpr CodeRange code_range() noexcept {
    return {0, (1 << B) - 1};
  }
  static Result<ScaleZeroPoint> params(float lo, float hi, CodeRange codes) noexcept {
    const float lo0 = std::fmin(lo, 0.0f), hi0 = std::fmax(hi, 0.0f);
    float scale = (hi0 - lo0) / static_cast<float>(codes.max - codes.min);
    scale = std::fmax(scale, kScaleFloor);
    LOWBIT_TRY(detail::check_scale_finite(scale));
    float zp = static_cast<float>(codes.min) - std::nearbyint(lo0 / scale);
    zp = std::fmin(std::fmax(zp, static_cast<float>(codes.min)), static_cast<float>(codes.max));
    return ScaleZeroPoint{scale, static_cast<std::int32_t>(zp)};
  }
};

// Signed codes [-2^(b-1), 2^(b-1) - 1], zero point 0: no zero-point arithmetic in the kernels.
// The scale divides by (max - min)/2 = 2^(b-1) - 0.5 (127.5 at 8 bits), as torch's
// per_tensor_symmetric does; +max|x| then rounds to the top code only after clamping. Matches
// torch qint8 symmetric. Needs b >= 2: one bit has no symmetric signed range.
struct Symmetric {
  static constexpr bool kSymmetric = true;
  template <int B>
  static constexpr CodeRange code_range() noexcept {
    static_assert(B >= 2, "Symmetric needs Bits<2> or more: 1-bit codes have no symmetric "
                          "signed range; use Asymmetric for 1-bit quantization");
    return {-(1 << (B - 1)), (1 << (B - 1)) - 1};
  }
  static Result<ScaleZeroPoint> params(float lo, float hi, CodeRange codes) noexcept {
    const float lo0 = std::fmin(lo, 0.0f), hi0 = std::fmax(hi, 0.0f);
    const float amax = std::fmax(-lo0, hi0);
    float scale = amax / (static_cast<float>(codes.max - codes.min) / 2.0f);
    scale = std::fmax(scale, kScaleFloor);
    LOWBIT_TRY(detail::check_scale_finite(scale));
    return ScaleZeroPoint{scale, 0};
  }
};

// Signed codes [-(2^(b-1) - 1), 2^(b-1) - 1]: the most negative code is dropped so the grid is
// symmetric about zero, codes of -x are exactly the negation of codes of x, and
// scale = max|x| / (2^(b-1) - 1) (the same torch formula on the narrow range). What LLM.int8,
// ggml's Q8_0 and most int8 GEMM kernels use: the product of two codes never reaches -128*-128.
struct SymmetricRestricted {
  static constexpr bool kSymmetric = true;
  template <int B>
  static constexpr CodeRange code_range() noexcept {
    static_assert(B >= 2, "SymmetricRestricted needs Bits<2> or more (2 bits give {-1, 0, 1})");
    return {-((1 << (B - 1)) - 1), (1 << (B - 1)) - 1};
  }
  static Result<ScaleZeroPoint> params(float lo, float hi, CodeRange codes) noexcept {
    return Symmetric::params(lo, hi, codes);
  }
};

}  // namespace lowbit
