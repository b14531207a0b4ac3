// lowbit/algo/gamma.hpp: the variance-preserving factor γ of the seed paper
// (../shared/seeds/000: "a scaling factor γ ... designed to preserve the second moment of the
// activations post-quantization"):
//
//   γ = std(x) / std(x^),   x^ = dequantize(quantize(x)),   and the tensor used is γ·x^.
//
// Rounding to a coarse grid changes a tensor's spread: clamping shrinks it, and at low bit widths
// round-to-nearest moves many small values to zero. Rescaling by γ restores std(γ·x^) = std(x)
// exactly, at no inference cost, because γ folds into every dequantization scale:
// γ·(q - zp)·s = (q - zp)·(γ·s). The codes themselves are chosen with the unscaled s, so γ changes
// what the codes mean, never which codes are picked. Whether it helps is an empirical question
// (it trades a bias in the spread for a bias in each value); the PTQ issue measures it.
//
// VariancePreserving<Q> is Q with γ applied: one γ per tensor, as the paper's per-layer factor.
// Degenerate case: when x^ is constant (std 0) γ is 1, the identity, rather than a division by 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lowbit/quantizer.hpp"

namespace lowbit {

namespace detail {
// Population standard deviation of a view, accumulated in double (two passes).
inline double standard_deviation(MatrixView<const float> x) noexcept {
  const double n = static_cast<double>(x.size());
  double sum = 0.0;
  for (std::int64_t r = 0; r < x.rows(); ++r)
    for (std::int64_t c = 0; c < x.cols(); ++c) sum += x(r, c);
  const double mean = sum / n;
  double sq = 0.0;
  for (std::int64_t r = 0; r < x.rows(); ++r)
    for (std::int64_t c = 0; c < x.cols(); ++c) sq += (x(r, c) - mean) * (x(r, c) - mean);
  return std::sqrt(sq / n);
}
}  // namespace detail

template <class Q>
struct VariancePreserving : Q {
  using base_quantizer = Q;
  using granularity = typename Q::granularity;

  // γ for x quantized with parameters p.
  static Result<float> gamma(MatrixView<const float> x, const QuantParamsView& p,
                             const granularity& g = {}) {
    std::vector<float> xq(static_cast<std::size_t>(x.size()));
    const MatrixView<float> xq_view = row_major(xq.data(), x.rows(), x.cols());
    LOWBIT_TRY(Q::fake_quantize(x, p, xq_view, g));
    const double sd_q = detail::standard_deviation(xq_view);
    if (!(sd_q > 0.0)) return 1.0f;
    const auto gamma = static_cast<float>(detail::standard_deviation(x) / sd_q);
    if (!std::isfinite(gamma)) return Status(Errc::kOutOfRange, "gamma overflows float32");
    return gamma;
  }

  // Scales every dequantization scale by γ: the stored tensor then dequantizes to γ·x^.
  static Status apply_gamma(QuantParams& params, float gamma) noexcept {
    if (!(gamma > 0.0f) || !std::isfinite(gamma))
      return {Errc::kInvalidArgument, "gamma must be a positive finite number"};
    for (float& s : params.scale) s *= gamma;
    return {};
  }

  // Q's quantization with γ folded into the stored scales.
  static Result<QuantizedTensor<Q>> quantize(MatrixView<const float> x, const granularity& g = {}) {
    Result<QuantizedTensor<Q>> t = Q::quantize(x, g);
    if (!t) return t;
    Result<float> gm = gamma(x, t->params(), g);
    if (!gm) return gm.status();
    LOWBIT_TRY(apply_gamma(t->params(), *gm));
    return t;
  }

  // out = γ · fake_quantize(x) with the (unscaled) quantization parameters p. out may alias x.
  static Status fake_quantize(MatrixView<const float> x, const QuantParamsView& p,
                              MatrixView<float> out, const granularity& g = {}) {
    Result<float> gm = gamma(x, p, g);
    if (!gm) return gm.status();
    LOWBIT_TRY(Q::fake_quantize(x, p, out, g));
    for (std::int64_t r = 0; r < out.rows(); ++r)
      for (std::int64_t c = 0; c < out.cols(); ++c) out(r, c) *= *gm;
    return {};
  }
};

}  // namespace lowbit
