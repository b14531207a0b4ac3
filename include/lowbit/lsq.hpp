// lowbit/lsq.hpp: fake quantization with a learnable scale and zero point (LSQ, Esser et al. 2020,
// "Learned Step Size Quantization"; the zero point as in LSQ+, Bhalgat et al. 2020).
//
// Forward: the fake quantization of quantizer.hpp with zp = clamp(round_half_even(zero_point)).
// Backward, with inv = 1/scale, level = round(zp_b + x * inv), gf the gradient scale:
//   inside [min, max]:  dx = dy,  dscale = dy * ((level - zp_b) * scale - x) * inv * gf,  dzp = 0
//   below min:          dx = 0,   dscale = dy * (min - zp_b) * gf,  dzp = -dy * scale * gf
//   above max:          dx = 0,   dscale = dy * (max - zp_b) * gf,  dzp = -dy * scale * gf
// summed over each parameter block. The LSQ paper scales the step-size gradient by
// gf = 1 / sqrt(numel * max) so that scale and weights learn at comparable rates: lsq_grad_factor.
//
// Conventions are torch's _fake_quantize_learnable_per_{tensor,channel}_affine (1.13), including a
// quirk we keep for compatibility: with PerTensor, the backward pass uses
// zp_b = trunc(clamp(zero_point + 0.5, min, max)) (2.5 -> 3 while the forward used 2), whereas
// every other granularity uses the forward's zp_b = clamp(round_half_even(zero_point)).
// Rounding is always half-to-even here, whatever the Quantizer's Rounding policy: LSQ defines it.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "lowbit/quantizer.hpp"

namespace lowbit {

// Trainable parameters: float scales and float (not yet rounded) zero points, on the same grid as
// QuantParams.
struct LearnableParamsView {
  const float* scale = nullptr;
  const float* zero_point = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

// Gradients of the parameters, written by lsq_backward: one value per parameter block.
struct LearnableParamsGrad {
  float* scale = nullptr;
  float* zero_point = nullptr;
};

// The LSQ gradient scale 1 / sqrt(numel * code_max), numel = the number of elements sharing the
// gradient's normalisation (torch's tests use the whole tensor).
inline float lsq_grad_factor(std::int64_t numel, std::int32_t code_max) noexcept {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(numel) * code_max));
}

namespace detail {

inline float lsq_forward_zero_point(float zp, CodeRange codes) noexcept {
  const float r = std::nearbyint(zp);
  return std::fmin(std::fmax(r, static_cast<float>(codes.min)), static_cast<float>(codes.max));
}

template <class Granularity>
float lsq_backward_zero_point(float zp, CodeRange codes) noexcept {
  if (std::is_same<Granularity, PerTensor>::value) {
    const float shifted = std::fmin(std::fmax(zp + 0.5f, static_cast<float>(codes.min)),
                                    static_cast<float>(codes.max));
    return std::trunc(shifted);
  }
  return lsq_forward_zero_point(zp, codes);
}

// Learnable parameters must match the grid, have positive finite scales with finite inverses
// (a trained scale may have collapsed; see QAT's clamping) and finite zero points.
template <class Granularity>
Status check_learnable(const LearnableParamsView& p, const Granularity& g, std::int64_t rows,
                       std::int64_t cols) noexcept {
  const BlockShape grid = param_grid(g, rows, cols);
  if (p.rows != grid.rows || p.cols != grid.cols)
    return {Errc::kShapeMismatch, "parameter grid does not match the tensor and granularity"};
  if (p.scale == nullptr || p.zero_point == nullptr)
    return {Errc::kInvalidArgument, "parameter view has a null pointer"};
  for (std::int64_t i = 0; i < grid.rows * grid.cols; ++i) {
    if (!(p.scale[i] > 0.0f) || !std::isfinite(p.scale[i]) || !std::isfinite(1.0f / p.scale[i]))
      return {Errc::kInvalidArgument, "scale is not a positive finite number with a finite inverse",
              i};
    if (!std::isfinite(p.zero_point[i])) return {Errc::kNonFinite, "zero point is NaN or Inf", i};
  }
  return {};
}

}  // namespace detail

template <class Q>
Status lsq_forward(MatrixView<const float> x, const LearnableParamsView& p, MatrixView<float> out,
                   const typename Q::granularity& g = {}) noexcept {
  LOWBIT_TRY(Q::check_input(x, g));
  LOWBIT_TRY(detail::check_output(out, x));
  LOWBIT_TRY(detail::check_learnable(p, g, x.rows(), x.cols()));
  detail::for_each_element(g, x.rows(), x.cols(), [&](std::int64_t r, std::int64_t c, std::int64_t i) {
    const std::int32_t zp =
        static_cast<std::int32_t>(detail::lsq_forward_zero_point(p.zero_point[i], Q::kCodes));
    const float inv = 1.0f / p.scale[i];
    const std::int32_t q =
        detail::clamp_level(detail::level<RoundHalfToEven>(x(r, c), inv, zp), Q::kCodes);
    out(r, c) = detail::dequantize_code(q, p.scale[i], zp);
  });
  return {};
}

// Writes grad_x (may alias grad_out) and the per-block parameter gradients (overwritten, not
// accumulated). grad_factor is usually lsq_grad_factor(...) or 1.
template <class Q>
Status lsq_backward(MatrixView<const float> x, const LearnableParamsView& p,
                    MatrixView<const float> grad_out, float grad_factor, MatrixView<float> grad_x,
                    LearnableParamsGrad grad_params, const typename Q::granularity& g = {}) {
  LOWBIT_TRY(Q::check_input(x, g));
  LOWBIT_TRY(detail::check_output(grad_out, x));
  LOWBIT_TRY(detail::check_output(grad_x, x));
  LOWBIT_TRY(detail::check_learnable(p, g, x.rows(), x.cols()));
  if (grad_params.scale == nullptr || grad_params.zero_point == nullptr)
    return {Errc::kInvalidArgument, "parameter gradient pointers are null"};
  if (!std::isfinite(grad_factor)) return {Errc::kNonFinite, "grad_factor is NaN or Inf"};
  const CodeRange codes = Q::kCodes;
  const std::size_t blocks = static_cast<std::size_t>(p.rows * p.cols);
  // Sums in double: a block may hold millions of elements, and float32 accumulation would drift.
  std::vector<double> dscale(blocks, 0.0), dzp(blocks, 0.0);
  detail::for_each_element(g, x.rows(), x.cols(), [&](std::int64_t r, std::int64_t c, std::int64_t i) {
    const float scale = p.scale[i];
    const float inv = 1.0f / scale;
    const float zp = detail::lsq_backward_zero_point<typename Q::granularity>(p.zero_point[i], codes);
    const float dy = grad_out(r, c);
    const float xv = x(r, c);
    // The zero point is added before rounding here (torch's backward kernel), after in forward.
    const float level = std::nearbyint(zp + xv * inv);
    const auto k = static_cast<std::size_t>(i);
    if (level < static_cast<float>(codes.min) || level > static_cast<float>(codes.max)) {
      const float edge = level < static_cast<float>(codes.min) ? static_cast<float>(codes.min)
                                                               : static_cast<float>(codes.max);
      grad_x(r, c) = 0.0f;
      dscale[k] += static_cast<double>(dy * (edge - zp) * grad_factor);
      dzp[k] += static_cast<double>(-dy * scale * grad_factor);
    } else {
      grad_x(r, c) = dy;
      dscale[k] += static_cast<double>(dy * ((level - zp) * scale - xv) * inv * grad_factor);
    }
  });
  for (std::size_t k = 0; k < blocks; ++k) {
    grad_params.scale[k] = static_cast<float>(dscale[k]);
    grad_params.zero_point[k] = static_cast<float>(dzp[k]);
  }
  return {};
}

}  // namespace lowbit
