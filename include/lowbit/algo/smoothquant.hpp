// lowbit/algo/smoothquant.hpp: SmoothQuant (Xiao, Lin, Seznec, Wu, Demouth, Han 2023,
// "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models"),
// following the reference implementation mit-han-lab/smoothquant (commit c61476d:
// `calibration.get_act_scales`, `smooth.smooth_ln_fcs[_llama_like]`, `fake_quant.*`,
// `W8A8Linear`) so that its statistics, scales, codes and W8A8 outputs are reproduced.
//
// Why smoothing works. LLM activations carry a few input channels whose magnitude is ~100x the
// rest; an int8 grid per token or per tensor spends its levels on them and rounds everything else
// to a handful of codes, while the weights are flat and easy. For a linear layer Y = X·Wᵀ,
//
//   Y = (X·diag(s)⁻¹) · (W·diag(s))ᵀ                                    (paper, eq. 3)
//
// for any positive s, so channel j of the activation can be divided by s_j and column j of every
// weight that reads it multiplied by s_j. Equation 4 picks
//
//   s_j = max|X_j|^α / max|W_j|^(1−α),   α in [0, 1]   (α = 0.5 balances the two difficulties)
//
// and diag(s)⁻¹ costs nothing at inference: it folds into the normalisation that produces X
// (LayerNorm: weight and bias; RMSNorm: weight only), and diag(s) folds into the weights.
//
// The reference's steps, all float32, in its order:
//
//   calibration   a_j = max over tokens of |x_tj|        (SmoothQuantCalibrator, streaming)
//   weight stats  w_j = max(max over fcs and rows i of |W_ij|, 1e-5)
//   scales        s_j = max(pow(a_j, α) / pow(w_j, 1 − α), 1e-5)
//   fold          norm.weight_j /= s_j;  norm.bias_j /= s_j;  W_ij *= s_j  for every fc
//
// pow is torch's Tensor.pow(python float): the exponent is rounded to float32, 0.5 is an exact
// sqrt, and other exponents go through a float pow accurate to about 1 ulp (Sleef). We evaluate
// the latter in double with the float exponent and round once, so s is within 1 ulp of torch's
// and exact for α = 0.5.
//
// Fake quantization (fake_quant.py), b bits (8 by default), qmax = 2^(b−1) − 1:
//
//   step = max(absmax, 1e-5) / qmax     clamp first, then divide, float32
//   code = rint(x / step)               DIVISION by the step, rounding half to even
//   x^   = code · step
//
// with absmax taken over a weight row (per channel, i.e. per output feature), the whole weight
// (per tensor), an activation row (per token) or the whole activation (per tensor). There is no
// zero point: codes are symmetric in [−qmax, qmax] and never −qmax − 1. This convention differs
// on purpose from lowbit's Quantizer, which follows torch's observers (scale = max/127.5 and a
// multiply by the float32 reciprocal): x / step and x · (1/step) round differently for some x, and
// the reference divides. Dynamic schemes never need a clamp (|x| <= absmax gives |code| <= qmax);
// the static per-tensor scheme, whose step comes from calibration, clamps codes to ±qmax as an
// int8 kernel must (the reference has no static fake quantization to follow here).
//
// W8A8 linear (W8A8Linear.from_float + forward): y = fq_act(x) · fq_w(W)ᵀ + b in float32, with no
// output quantization; the product is an Eigen float32 GEMM, so y matches the reference's
// (MKL/OpenBLAS) float32 GEMM up to summation order.
//
// Memory: the calibrator keeps one float per channel whatever the number of tokens; W8A8Linear
// keeps the fake-quantized weight (out × in floats) and its codes, and processes activations in
// chunks of kSmoothQuantChunkRows tokens.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lowbit/algo/channel_absmax.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/policy/rounding.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// The smallest absmax and the smallest smoothing scale the reference allows (both clamp(min=1e-5)).
inline constexpr float kSmoothQuantFloor = 1e-5f;

// Tokens of an activation quantized and multiplied at a time: bounds the scratch memory of
// W8A8Linear::forward to (chunk × (in + out)) floats.
inline constexpr std::int64_t kSmoothQuantChunkRows = 256;

namespace detail {

// x^e (x >= 0) as torch's CPU Tensor.pow(python float) gives it for float32 tensors: e = 0.5 is a
// sqrt, e = 2 and 3 are products, any other exponent is rounded to float32 and goes through a
// float pow accurate to ~1 ulp (Sleef_powf8_u10). We compute that pow in double and round once,
// which is within 1 ulp of torch.
inline float smoothquant_pow(float x, double exponent) noexcept {
  if (exponent == 0.5) return std::sqrt(x);
  if (exponent == 2.0) return x * x;
  if (exponent == 3.0) return x * x * x;
  const auto e = static_cast<double>(static_cast<float>(exponent));
  return static_cast<float>(std::pow(static_cast<double>(x), e));
}

// A vector passed as a view: any 1 × n or n × 1 view with n elements.
inline Status smoothquant_check_vector(MatrixView<const float> v, std::int64_t n) noexcept {
  LOWBIT_TRY(v.validate());
  if (v.rows() != 1 && v.cols() != 1)
    return {Errc::kShapeMismatch, "a vector must be a 1 x n or n x 1 view"};
  if (v.size() != n) return {Errc::kShapeMismatch, "vector length differs from the channel count"};
  return {};
}

inline float smoothquant_vector_at(MatrixView<const float> v, std::int64_t i) noexcept {
  return v.rows() == 1 ? v(0, i) : v(i, 0);
}
inline float& smoothquant_vector_at(MatrixView<float> v, std::int64_t i) noexcept {
  return v.rows() == 1 ? v(0, i) : v(i, 0);
}

inline Status smoothquant_check_finite_vector(MatrixView<const float> v, std::int64_t n) noexcept {
  LOWBIT_TRY(smoothquant_check_vector(v, n));
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(smoothquant_vector_at(v, i))) return {Errc::kNonFinite, "vector has NaN or Inf", i};
  return {};
}

inline Status smoothquant_check_bits(int bits) noexcept {
  if (bits < 2 || bits > 8) return {Errc::kInvalidArgument, "bits must be in 2..8"};
  return {};
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// The reference's quantization step (division convention, no zero point).

// qmax = 2^(bits−1) − 1: 127 for 8 bits.
constexpr std::int32_t smoothquant_qmax(int bits) noexcept { return (1 << (bits - 1)) - 1; }

// The step of a block whose largest magnitude is `absmax`: max(absmax, 1e-5) / qmax, in float32.
inline float smoothquant_step(float absmax, int bits = 8) noexcept {
  return std::max(absmax, kSmoothQuantFloor) / static_cast<float>(smoothquant_qmax(bits));
}

// The code of x: rint(x / step), clamped to ±qmax (a no-op whenever |x| <= the block's absmax).
// A NaN level maps to 0 so the conversion is always defined; entry points reject NaN first.
inline std::int32_t smoothquant_code(float x, float step, int bits = 8) noexcept {
  const auto qmax = static_cast<float>(smoothquant_qmax(bits));
  float q = RoundHalfToEven::round(x / step);
  if (std::isnan(q)) q = 0.0f;
  if (q < -qmax) q = -qmax;
  if (q > qmax) q = qmax;
  return static_cast<std::int32_t>(q);
}

// The fake-quantized value code · step, bit for bit what the reference's div/round/mul gives.
inline float smoothquant_fake_quantize(float x, float step, int bits = 8) noexcept {
  return static_cast<float>(smoothquant_code(x, step, bits)) * step;
}

// ---------------------------------------------------------------------------------------------
// Calibration: per-channel max|x|, streaming.

// The reference's get_act_scales for one linear input: the running max over every token seen of
// |x| per channel (channel_absmax.hpp).
using SmoothQuantCalibrator = ChannelAbsMax;

// ---------------------------------------------------------------------------------------------
// Smoothing scales and folding.

struct SmoothQuantScales {
  std::vector<float> weight_scales;  // w_j = max(max over fcs and rows |W_ij|, 1e-5)
  std::vector<float> scales;         // s_j = max(a_j^α / w_j^(1−α), 1e-5)
};

namespace detail {
// Every fc must be a finite, non-empty (out × in) matrix with the same in.
template <class T>
Status smoothquant_check_fcs(const std::vector<MatrixView<T>>& fcs, std::int64_t in) noexcept {
  if (fcs.empty()) return {Errc::kEmpty, "no linear layer given"};
  for (std::size_t i = 0; i < fcs.size(); ++i) {
    const MatrixView<const float> w = fcs[i];
    LOWBIT_TRY(w.validate());
    if (w.empty()) return {Errc::kEmpty, "a linear layer has no weights", static_cast<std::int64_t>(i)};
    if (w.cols() != in)
      return {Errc::kShapeMismatch, "a linear layer's in_features differs from the channel count",
              static_cast<std::int64_t>(i)};
    LOWBIT_TRY(check_data(w));
  }
  return {};
}
}  // namespace detail

// smooth_ln_fcs's scales (without folding) for the linear layers `fcs` (each out_i × in) that
// share one input whose per-channel max|x| is `act_absmax` (a vector of `in` values, e.g. from
// SmoothQuantCalibrator). Errors: alpha NaN or outside [0, 1] (kInvalidArgument); invalid views;
// no fcs or an empty fc (kEmpty); lengths that disagree (kShapeMismatch); NaN/Inf in act_absmax or
// the weights (kNonFinite); a negative act_absmax (kInvalidArgument, index = channel).
inline Result<SmoothQuantScales> smoothquant_scales(MatrixView<const float> act_absmax,
                                                    const std::vector<MatrixView<const float>>& fcs,
                                                    double alpha) {
  if (!(alpha >= 0.0 && alpha <= 1.0))
    return Status(Errc::kInvalidArgument, "alpha must be in [0, 1]");
  LOWBIT_TRY(act_absmax.validate());
  if (act_absmax.empty()) return Status(Errc::kEmpty, "act_absmax has no channels");
  const std::int64_t in = act_absmax.size();
  LOWBIT_TRY(detail::smoothquant_check_finite_vector(act_absmax, in));
  for (std::int64_t j = 0; j < in; ++j)
    if (detail::smoothquant_vector_at(act_absmax, j) < 0.0f)
      return Status(Errc::kInvalidArgument, "act_absmax must be non-negative", j);
  LOWBIT_TRY(detail::smoothquant_check_fcs(fcs, in));

  SmoothQuantScales out;
  out.weight_scales.assign(static_cast<std::size_t>(in), 0.0f);
  for (const MatrixView<const float>& w : fcs)
    for (std::int64_t i = 0; i < w.rows(); ++i)
      for (std::int64_t j = 0; j < in; ++j) {
        float& m = out.weight_scales[static_cast<std::size_t>(j)];
        m = std::max(m, std::fabs(w(i, j)));
      }
  out.scales.resize(static_cast<std::size_t>(in));
  for (std::int64_t j = 0; j < in; ++j) {
    float& ws = out.weight_scales[static_cast<std::size_t>(j)];
    ws = std::max(ws, kSmoothQuantFloor);
    // (1 − α) in double, as Python computes it before torch rounds the exponent to float32.
    const float num = detail::smoothquant_pow(detail::smoothquant_vector_at(act_absmax, j), alpha);
    const float den = detail::smoothquant_pow(ws, 1.0 - alpha);
    out.scales[static_cast<std::size_t>(j)] = std::max(num / den, kSmoothQuantFloor);
  }
  return out;
}

// Folds smoothing scales s (a vector of `in` values) into a normalisation and the linear layers
// that read its output: norm_weight_j /= s_j, norm_bias_j /= s_j, fc_ij *= s_j for every fc.
// norm_bias may be an empty view (RMSNorm has none). This is both SmoothQuant's smooth_ln_fcs
// fold and AWQ's scale_ln_fcs. Everything is checked before anything is written. Errors: invalid
// views; no fcs or an empty fc or norm (kEmpty); lengths that disagree (kShapeMismatch);
// NaN/Inf anywhere (kNonFinite); a scale that is not positive (kInvalidArgument, index =
// channel); a folded value that overflows float32 (kOutOfRange).
inline Status fold_scales_into_norm(MatrixView<float> norm_weight, MatrixView<float> norm_bias,
                                    const std::vector<MatrixView<float>>& fcs,
                                    MatrixView<const float> scales) {
  LOWBIT_TRY(scales.validate());
  if (scales.empty()) return {Errc::kEmpty, "scales have no channels"};
  const std::int64_t in = scales.size();
  LOWBIT_TRY(detail::smoothquant_check_finite_vector(scales, in));
  for (std::int64_t j = 0; j < in; ++j)
    if (!(detail::smoothquant_vector_at(scales, j) > 0.0f))
      return {Errc::kInvalidArgument, "scales must be positive", j};
  LOWBIT_TRY(detail::smoothquant_check_finite_vector(norm_weight, in));
  LOWBIT_TRY(norm_bias.validate());
  const bool has_bias = !norm_bias.empty();  // a 0 x 0 (or any empty) view: no bias
  if (has_bias) LOWBIT_TRY(detail::smoothquant_check_finite_vector(norm_bias, in));
  LOWBIT_TRY(detail::smoothquant_check_fcs(fcs, in));
  // Dry run: every folded value must stay finite (a tiny s can push a large norm weight to Inf).
  for (std::int64_t j = 0; j < in; ++j) {
    const float s = detail::smoothquant_vector_at(scales, j);
    if (!std::isfinite(detail::smoothquant_vector_at(norm_weight, j) / s) ||
        (has_bias && !std::isfinite(detail::smoothquant_vector_at(norm_bias, j) / s)))
      return {Errc::kOutOfRange, "folding overflows the norm parameters", j};
  }
  for (const MatrixView<float>& w : fcs)
    for (std::int64_t i = 0; i < w.rows(); ++i)
      for (std::int64_t j = 0; j < in; ++j)
        if (!std::isfinite(w(i, j) * detail::smoothquant_vector_at(scales, j)))
          return {Errc::kOutOfRange, "folding overflows a weight", i * in + j};

  for (std::int64_t j = 0; j < in; ++j) {
    const float s = detail::smoothquant_vector_at(scales, j);
    detail::smoothquant_vector_at(norm_weight, j) /= s;
    if (has_bias) detail::smoothquant_vector_at(norm_bias, j) /= s;
  }
  for (const MatrixView<float>& w : fcs)
    for (std::int64_t i = 0; i < w.rows(); ++i)
      for (std::int64_t j = 0; j < in; ++j) w(i, j) *= detail::smoothquant_vector_at(scales, j);
  return {};
}

// smooth_ln_fcs (LayerNorm: pass its bias) or smooth_ln_fcs_llama_like (RMSNorm: pass an empty
// bias view): computes the scales from act_absmax and the current weights, then folds them.
// Returns the scales. Errors: those of smoothquant_scales and fold_scales_into_norm; on error
// nothing is written.
inline Result<SmoothQuantScales> smooth_norm_fcs(MatrixView<float> norm_weight,
                                                 MatrixView<float> norm_bias,
                                                 const std::vector<MatrixView<float>>& fcs,
                                                 MatrixView<const float> act_absmax, double alpha) {
  const std::vector<MatrixView<const float>> readonly(fcs.begin(), fcs.end());
  Result<SmoothQuantScales> s = smoothquant_scales(act_absmax, readonly, alpha);
  if (!s) return s.status();
  LOWBIT_TRY(fold_scales_into_norm(norm_weight, norm_bias, fcs,
                                   flat(s->scales.data(), static_cast<std::int64_t>(s->scales.size()))));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Fake quantization and W8A8.

// Weights: one step per output row (per_channel) or one for the whole weight (per_tensor).
enum class SmoothQuantWeightScheme : std::uint8_t { kPerChannel, kPerTensor };
// Activations: dynamic per row (per_token) or per tensor, or a static per-tensor step fixed by
// calibration (smoothquant_static_step).
enum class SmoothQuantActScheme : std::uint8_t { kPerToken, kPerTensor, kStaticPerTensor };

// Symmetric codes of a (rows × cols) tensor and their steps: value (r, c) = codes[r·cols + c] ·
// steps[per_row ? r : 0].
struct SmoothQuantCodes {
  std::int64_t rows = 0, cols = 0;
  bool per_row = false;
  std::vector<std::int8_t> codes;  // (rows × cols), row-major
  std::vector<float> steps;        // rows values (per row) or 1

  float step_of_row(std::int64_t r) const noexcept {
    return steps[static_cast<std::size_t>(per_row ? r : 0)];
  }
  float value(std::int64_t r, std::int64_t c) const noexcept {
    return static_cast<float>(codes[static_cast<std::size_t>(r * cols + c)]) * step_of_row(r);
  }
};

namespace detail {
inline float smoothquant_absmax_of(MatrixView<const float> x) noexcept {
  float m = 0.0f;
  for (std::int64_t r = 0; r < x.rows(); ++r)
    for (std::int64_t c = 0; c < x.cols(); ++c) m = std::max(m, std::fabs(x(r, c)));
  return m;
}
inline float smoothquant_absmax_of_row(MatrixView<const float> x, std::int64_t r) noexcept {
  float m = 0.0f;
  for (std::int64_t c = 0; c < x.cols(); ++c) m = std::max(m, std::fabs(x(r, c)));
  return m;
}
inline Status smoothquant_check_static_step(float step) noexcept {
  if (!(step > 0.0f) || !std::isfinite(step) || !std::isfinite(1.0f / step))
    return {Errc::kInvalidArgument, "static step must be positive, finite and not subnormal"};
  return {};
}
// Codes of x with one step per row or one step overall (static_step > 0 fixes it).
inline SmoothQuantCodes smoothquant_absmax_quantize(MatrixView<const float> x, bool per_row, float static_step,
                                        int bits) {
  SmoothQuantCodes q;
  q.rows = x.rows();
  q.cols = x.cols();
  q.per_row = per_row;
  q.codes.resize(static_cast<std::size_t>(x.rows() * x.cols()));
  if (per_row) {
    q.steps.resize(static_cast<std::size_t>(x.rows()));
    for (std::int64_t r = 0; r < x.rows(); ++r)
      q.steps[static_cast<std::size_t>(r)] = smoothquant_step(smoothquant_absmax_of_row(x, r), bits);
  } else {
    q.steps.assign(1, static_step > 0.0f ? static_step : smoothquant_step(smoothquant_absmax_of(x), bits));
  }
  for (std::int64_t r = 0; r < x.rows(); ++r) {
    const float step = q.step_of_row(r);
    for (std::int64_t c = 0; c < x.cols(); ++c)
      q.codes[static_cast<std::size_t>(r * x.cols() + c)] =
          static_cast<std::int8_t>(smoothquant_code(x(r, c), step, bits));
  }
  return q;
}
}  // namespace detail

// quantize_weight_per_{channel,tensor}_absmax as codes and steps. Errors: bits outside 2..8
// (kInvalidArgument), invalid view, no elements (kEmpty), NaN/Inf (kNonFinite, flat index).
inline Result<SmoothQuantCodes> smoothquant_quantize_weight(MatrixView<const float> w,
                                                            SmoothQuantWeightScheme scheme,
                                                            int bits = 8) {
  LOWBIT_TRY(detail::smoothquant_check_bits(bits));
  LOWBIT_TRY(detail::check_data(w));
  return detail::smoothquant_absmax_quantize(w, scheme == SmoothQuantWeightScheme::kPerChannel, 0.0f, bits);
}

// quantize_activation_per_{token,tensor}_absmax of x (tokens × features) as codes and steps; for
// kStaticPerTensor, `static_step` is the step (from smoothquant_static_step) and codes clamp to
// ±qmax. Errors: as smoothquant_quantize_weight, plus a static step that is not a positive normal
// float (kInvalidArgument).
inline Result<SmoothQuantCodes> smoothquant_quantize_activation(MatrixView<const float> x,
                                                                SmoothQuantActScheme scheme,
                                                                float static_step = 0.0f,
                                                                int bits = 8) {
  LOWBIT_TRY(detail::smoothquant_check_bits(bits));
  LOWBIT_TRY(detail::check_data(x));
  if (scheme == SmoothQuantActScheme::kStaticPerTensor) {
    LOWBIT_TRY(detail::smoothquant_check_static_step(static_step));
    return detail::smoothquant_absmax_quantize(x, false, static_step, bits);
  }
  return detail::smoothquant_absmax_quantize(x, scheme == SmoothQuantActScheme::kPerToken, 0.0f, bits);
}

// The static per-tensor activation step from calibration: max(max_j a_j / s_j, 1e-5) / qmax, with
// a = per-channel max|x| of the *unsmoothed* input and s the smoothing scales (pass an empty view
// for none). Dividing the calibrated maxima by s predicts the smoothed input's maximum up to the
// rounding of the re-parameterised norm (a last-ulp difference); calibrate the smoothed layer's
// input directly when that ulp matters. Errors: invalid or mismatched vectors, NaN/Inf, negative
// maxima or non-positive scales (kInvalidArgument), bits outside 2..8.
inline Result<float> smoothquant_static_step(MatrixView<const float> act_absmax,
                                             MatrixView<const float> scales, int bits = 8) {
  LOWBIT_TRY(detail::smoothquant_check_bits(bits));
  LOWBIT_TRY(act_absmax.validate());
  if (act_absmax.empty()) return Status(Errc::kEmpty, "act_absmax has no channels");
  const std::int64_t n = act_absmax.size();
  LOWBIT_TRY(detail::smoothquant_check_finite_vector(act_absmax, n));
  const bool smoothed = !scales.empty();
  if (smoothed) LOWBIT_TRY(detail::smoothquant_check_finite_vector(scales, n));
  float m = 0.0f;
  for (std::int64_t j = 0; j < n; ++j) {
    const float a = detail::smoothquant_vector_at(act_absmax, j);
    if (a < 0.0f) return Status(Errc::kInvalidArgument, "act_absmax must be non-negative", j);
    float v = a;
    if (smoothed) {
      const float s = detail::smoothquant_vector_at(scales, j);
      if (!(s > 0.0f)) return Status(Errc::kInvalidArgument, "scales must be positive", j);
      v = a / s;
    }
    m = std::max(m, v);
  }
  const float step = smoothquant_step(m, bits);
  if (!std::isfinite(step)) return Status(Errc::kOutOfRange, "smoothed maximum overflows float32");
  return step;
}

struct W8A8Options {
  SmoothQuantWeightScheme weight = SmoothQuantWeightScheme::kPerChannel;
  SmoothQuantActScheme act = SmoothQuantActScheme::kPerToken;
  float static_act_step = 0.0f;  // used by kStaticPerTensor only
  int bits = 8;                  // 2..8, weights and activations alike
};

// W8A8Linear.from_float(fc, weight_quant, act_quant) and its forward pass, in float32.
class W8A8Linear {
 public:
  // Quantizes w (out × in) once and keeps b (a vector of `out` values, or an empty view for no
  // bias). Errors: those of smoothquant_quantize_weight; a bias of the wrong length
  // (kShapeMismatch) or with NaN/Inf (kNonFinite); a bad static step (kInvalidArgument).
  static Result<W8A8Linear> create(MatrixView<const float> w, MatrixView<const float> bias,
                                   const W8A8Options& options = {}) {
    if (options.act == SmoothQuantActScheme::kStaticPerTensor)
      LOWBIT_TRY(detail::smoothquant_check_static_step(options.static_act_step));
    Result<SmoothQuantCodes> q = smoothquant_quantize_weight(w, options.weight, options.bits);
    if (!q) return q.status();
    W8A8Linear layer;
    layer.options_ = options;
    LOWBIT_TRY(bias.validate());
    if (!bias.empty()) {  // an empty view: no bias
      LOWBIT_TRY(detail::smoothquant_check_finite_vector(bias, w.rows()));
      layer.bias_.resize(static_cast<std::size_t>(w.rows()));
      for (std::int64_t i = 0; i < w.rows(); ++i)
        layer.bias_[static_cast<std::size_t>(i)] = detail::smoothquant_vector_at(bias, i);
    }
    // fq(W)ᵀ as an (in × out) column-major matrix: element (j, i) = code(i, j) · step(i).
    layer.weight_t_.resize(w.cols(), w.rows());
    for (std::int64_t i = 0; i < w.rows(); ++i)
      for (std::int64_t j = 0; j < w.cols(); ++j) layer.weight_t_(j, i) = q->value(i, j);
    layer.codes_ = std::move(*q);
    return layer;
  }

  std::int64_t in_features() const noexcept { return weight_t_.rows(); }
  std::int64_t out_features() const noexcept { return weight_t_.cols(); }
  const SmoothQuantCodes& weight_codes() const noexcept { return codes_; }
  const W8A8Options& options() const noexcept { return options_; }

  // y = fq_act(x) · fq(W)ᵀ + b for x (tokens × in) into y (tokens × out). y may alias x when both
  // have the same layout. Errors: invalid views, no tokens (kEmpty), x not finite (kNonFinite),
  // x.cols() != in or y not tokens × out (kShapeMismatch).
  Status forward(MatrixView<const float> x, MatrixView<float> y) const {
    LOWBIT_TRY(detail::check_data(x));
    if (x.cols() != in_features())
      return {Errc::kShapeMismatch, "x's width differs from the layer's in_features"};
    LOWBIT_TRY(y.validate());
    if (y.rows() != x.rows() || y.cols() != out_features())
      return {Errc::kShapeMismatch, "y must be tokens x out_features"};
    const int bits = options_.bits;
    float tensor_step = 0.0f;
    if (options_.act == SmoothQuantActScheme::kPerTensor)
      tensor_step = smoothquant_step(detail::smoothquant_absmax_of(x), bits);
    else if (options_.act == SmoothQuantActScheme::kStaticPerTensor)
      tensor_step = options_.static_act_step;
    const std::int64_t in = in_features(), out = out_features();
    const std::int64_t chunk = std::min(kSmoothQuantChunkRows, x.rows());
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> xq(chunk, in), yc(chunk, out);
    for (std::int64_t t0 = 0; t0 < x.rows(); t0 += chunk) {
      const std::int64_t n = std::min(chunk, x.rows() - t0);
      for (std::int64_t t = 0; t < n; ++t) {
        const float step = options_.act == SmoothQuantActScheme::kPerToken
                               ? smoothquant_step(detail::smoothquant_absmax_of_row(x, t0 + t), bits)
                               : tensor_step;
        for (std::int64_t j = 0; j < in; ++j)
          xq(t, j) = smoothquant_fake_quantize(x(t0 + t, j), step, bits);
      }
      yc.topRows(n).noalias() = xq.topRows(n) * weight_t_;
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t i = 0; i < out; ++i)
          y(t0 + t, i) = bias_.empty() ? yc(t, i) : yc(t, i) + bias_[static_cast<std::size_t>(i)];
    }
    return {};
  }

 private:
  W8A8Options options_;
  SmoothQuantCodes codes_;
  Eigen::MatrixXf weight_t_;  // (in × out): fq(W)ᵀ
  std::vector<float> bias_;   // out values, or empty
};

// One-shot W8A8 linear: W8A8Linear::create(w, bias, options) then forward(x, y). Errors: theirs.
inline Status w8a8_linear(MatrixView<const float> x, MatrixView<const float> w,
                          MatrixView<const float> bias, MatrixView<float> y,
                          const W8A8Options& options = {}) {
  Result<W8A8Linear> layer = W8A8Linear::create(w, bias, options);
  if (!layer) return layer.status();
  return layer->forward(x, y);
}

}  // namespace lowbit
