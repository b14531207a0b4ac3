// lowbit/algo/llm_int8.hpp: LLM.int8()'s mixed-precision decomposition (Dettmers, Lewis, Belkada,
// Zettlemoyer 2022, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale", section 3),
// as a scalar reference: outlier-feature detection (one-shot or streamed over calibration batches),
// the decomposed product, and its error against float32.
//
// Why. From about 6.7B parameters on, a handful of hidden features (input columns of a linear
// layer) carry activations of magnitude 6 to 100 in most tokens. Per-token int8 absmax then spends
// its 255 levels on them and rounds every other feature of the token to a few codes. Those
// features are few (≈0.1% of columns) but systematic, so the product is split by columns:
//
//   Y = X·Wᵀ = Σ_{h ∈ O} X[:, h]·W[:, h]ᵀ  +  Σ_{h ∉ O} X[:, h]·W[:, h]ᵀ        (paper, eq. 7)
//              ─────── float32 ───────        ───── vector-wise int8 ─────
//
// with O = { h : max_t |X[t, h]| ≥ threshold }, threshold 6.0 by default (the paper's α; ≥ as in
// bitsandbytes, so threshold 0 makes every column an outlier and +Inf none).
//
// The int8 part quantizes the regular columns only ("decompose, then quantize": the outliers no
// longer inflate the absmax of their token):
//
//   X_R = X[:, R] (tokens × |R|): one scale per token,          s_x[t] = max_h |X_R[t, h]| / 127
//   W_R = W[:, R] (out × |R|):    one scale per output channel, s_w[o] = max_h |W_R[o, h]| / 127
//   acc[t, o] = Σ_{h ∈ R} q_x[t, h] · q_w[o, h]                 int32, ascending h
//   Y_int8[t, o] = float(acc) · (s_x[t] · s_w[o])                float32
//
// i.e. bitsandbytes' vector-wise symmetric ±127 quantization, here through lowbit's own policies:
// ActivationQ = Quantizer<Bits<8>, SymmetricRestricted, PerToken> and WeightQ = Quantizer<Bits<8>,
// SymmetricRestricted, PerChannel<0>> by default, whose codes are clamp(round_half_even(x · (1/s)),
// −127, 127) with s = absmax/127 in float32 (bitsandbytes multiplies by 127/absmax instead; the two
// differ by an ulp of the scaled value, which can flip a tie). Any symmetric lowbit quantizer whose
// blocks span whole rows composes (4-bit codes, torch's [−128, 127] Symmetric, Percentile-clipped
// activation ranges, PerTensor scales), because a per-row scale factors out of the sum over h.
//
// Outlier part: float32, not the paper's float16. A CPU has no float16 arithmetic to be faithful to,
// and rounding the protected values to 11 bits would add error exactly where the decomposition is
// meant to remove it. Y_fp[t, o] = Σ_{h ∈ O} X[t, h]·W[o, h], accumulated in float32 in ascending h.
//
//   Y[t, o] = Y_int8[t, o] + Y_fp[t, o]
//
// so with O empty Y is exactly the pure vector-wise int8 product (plus 0.0f), and with O = all
// columns exactly the float32 product in ascending-h order.
//
// int32 accumulation holds while |R| · max|q_x| · max|q_w| < 2^31: |R| ≤ 133 144 columns at
// ±127 (larger layers get kOverflow, as they would overflow any int8 GEMM with int32 accumulators).
//
// Outlier columns, offline or online. bitsandbytes detects O on every call from the batch at hand;
// llm_int8_matmul(x, w, threshold, y) does the same. An engine that wants a fixed set (one
// weight quantization, known at load time) streams calibration batches through
// OutlierFeatureDetector and passes its columns; the weights' int8 part then depends only on that
// set (quantize it once with WeightQ on W[:, R]).
//
// Memory: the scalar reference copies X_R and W_R and their int8 codes (|R|·(tokens + out) floats
// and bytes); the detector keeps one float per feature.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "lowbit/algo/channel_absmax.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/quantizer.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// The paper's outlier threshold α = 6.0 on activation magnitudes.
inline constexpr float kLlmInt8Threshold = 6.0f;

namespace detail {
inline Status check_llm_int8_threshold(float threshold) noexcept {
  if (std::isnan(threshold) || threshold < 0.0f)
    return {Errc::kInvalidArgument, "outlier threshold must be >= 0 (or +Inf for none)"};
  return {};
}
}  // namespace detail

// Streams activation batches (tokens × features) and keeps max |x| per feature (ChannelAbsMax),
// from which the outlier features at any threshold follow. One float per feature, whatever the
// token count.
class OutlierFeatureDetector : public ChannelAbsMax {
 public:
  // Ascending indices of the features whose largest magnitude reached `threshold`.
  // Errors: before any observe (kNotCalibrated); a NaN or negative threshold (kInvalidArgument).
  Result<std::vector<std::int64_t>> outlier_columns(float threshold = kLlmInt8Threshold) const {
    Result<std::vector<float>> maxima = absmax();
    if (!maxima) return Status(Errc::kNotCalibrated, "outlier_columns() before any observe()");
    LOWBIT_TRY(detail::check_llm_int8_threshold(threshold));
    std::vector<std::int64_t> columns;
    for (std::size_t c = 0; c < maxima->size(); ++c)
      if ((*maxima)[c] >= threshold) columns.push_back(static_cast<std::int64_t>(c));
    return columns;
  }

  std::int64_t features() const noexcept { return channels(); }
};

// The outlier features of one batch: what bitsandbytes computes on every call.
inline Result<std::vector<std::int64_t>> llm_int8_outlier_columns(MatrixView<const float> x,
                                                                  float threshold = kLlmInt8Threshold) {
  OutlierFeatureDetector detector;
  LOWBIT_TRY(detector.observe(x));
  return detector.outlier_columns(threshold);
}

// How far the decomposed product is from the float32 one (accumulated in double).
struct LlmInt8Error {
  double relative_squared_error = 0.0;  // ‖Y − XWᵀ‖²_F / ‖XWᵀ‖²_F (0 when XWᵀ = 0 and Y = 0)
  double max_abs_error = 0.0;           // max |Y − XWᵀ|
  std::int64_t outlier_columns = 0;     // |O|
};

template <class ActivationQ = Quantizer<Bits<8>, SymmetricRestricted, PerToken>,
          class WeightQ = Quantizer<Bits<8>, SymmetricRestricted, PerChannel<0>>>
struct LlmInt8 {
  static_assert(ActivationQ::symmetry::kSymmetric && WeightQ::symmetry::kSymmetric,
                "LlmInt8<ActivationQ, WeightQ>: the int8 part accumulates code products in int32, "
                "which needs zero points of 0: use Symmetric or SymmetricRestricted quantizers");
  static_assert(std::is_same<typename ActivationQ::granularity, PerToken>::value ||
                    std::is_same<typename ActivationQ::granularity, PerChannel<0>>::value ||
                    std::is_same<typename ActivationQ::granularity, PerTensor>::value,
                "LlmInt8<ActivationQ, ...>: activation scales must span whole rows (PerToken, "
                "PerChannel<0> or PerTensor) so that they factor out of the int32 sum");
  static_assert(std::is_same<typename WeightQ::granularity, PerChannel<0>>::value ||
                    std::is_same<typename WeightQ::granularity, PerTensor>::value,
                "LlmInt8<..., WeightQ>: weight scales must span whole rows (PerChannel<0> or "
                "PerTensor) so that they factor out of the int32 sum");

  using activation_quantizer = ActivationQ;
  using weight_quantizer = WeightQ;

  // Largest |code| of each side, for the int32 bound.
  static constexpr std::int64_t kMaxActivationCode =
      ActivationQ::kCodes.min < 0 && -ActivationQ::kCodes.min > ActivationQ::kCodes.max
          ? -static_cast<std::int64_t>(ActivationQ::kCodes.min)
          : static_cast<std::int64_t>(ActivationQ::kCodes.max);
  static constexpr std::int64_t kMaxWeightCode =
      WeightQ::kCodes.min < 0 && -WeightQ::kCodes.min > WeightQ::kCodes.max
          ? -static_cast<std::int64_t>(WeightQ::kCodes.min)
          : static_cast<std::int64_t>(WeightQ::kCodes.max);
  // Regular columns the int32 accumulator can take without overflow.
  static constexpr std::int64_t kMaxRegularColumns =
      static_cast<std::int64_t>(std::numeric_limits<std::int32_t>::max()) /
      (kMaxActivationCode * kMaxWeightCode);

  // Y (tokens × out) = the decomposition of x (tokens × in) · wᵀ (w: out × in) with the given
  // outlier columns (strictly ascending, each in [0, in)). y must not overlap x or w.
  // Errors, checked before y is written: invalid views, empty x or w (kEmpty), NaN/Inf in x or w
  // (kNonFinite, flat index of that tensor), x.cols() != w.cols() or y not tokens × out
  // (kShapeMismatch), columns out of range or not strictly ascending (kInvalidArgument, index into
  // the list), more regular columns than int32 accumulation allows (kOverflow), a quantizer error.
  static Status matmul(MatrixView<const float> x, MatrixView<const float> w,
                       const std::vector<std::int64_t>& outlier_columns, MatrixView<float> y) {
    LOWBIT_TRY(check_operands(x, w, y));
    LOWBIT_TRY(check_columns(outlier_columns, x.cols()));
    const std::int64_t tokens = x.rows(), out = w.rows(), in = x.cols();
    const auto outliers = static_cast<std::int64_t>(outlier_columns.size());
    const std::int64_t regular = in - outliers;
    if (regular > kMaxRegularColumns)
      return {Errc::kOverflow, "too many regular columns for int32 accumulation"};

    // The regular columns, in order.
    std::vector<std::int64_t> regular_columns;
    regular_columns.reserve(static_cast<std::size_t>(regular));
    {
      std::size_t next = 0;
      for (std::int64_t c = 0; c < in; ++c) {
        if (next < outlier_columns.size() && outlier_columns[next] == c) {
          ++next;
          continue;
        }
        regular_columns.push_back(c);
      }
    }

    // Vector-wise int8 part: codes and scales of X_R and W_R, computed before y is touched.
    std::vector<typename ActivationQ::code_type> qx;
    std::vector<typename WeightQ::code_type> qw;
    QuantParams px, pw;
    if (regular > 0) {
      std::vector<float> xr(static_cast<std::size_t>(tokens * regular));
      std::vector<float> wr(static_cast<std::size_t>(out * regular));
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t j = 0; j < regular; ++j)
          xr[static_cast<std::size_t>(t * regular + j)] = x(t, regular_columns[static_cast<std::size_t>(j)]);
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t j = 0; j < regular; ++j)
          wr[static_cast<std::size_t>(o * regular + j)] = w(o, regular_columns[static_cast<std::size_t>(j)]);
      const auto xr_view = row_major<const float>(xr.data(), tokens, regular);
      const auto wr_view = row_major<const float>(wr.data(), out, regular);
      Result<QuantParams> rx = ActivationQ::compute_params(xr_view);
      if (!rx) return rx.status();
      Result<QuantParams> rw = WeightQ::compute_params(wr_view);
      if (!rw) return rw.status();
      px = std::move(*rx);
      pw = std::move(*rw);
      qx.resize(xr.size());
      qw.resize(wr.size());
      LOWBIT_TRY(ActivationQ::quantize(xr_view, px, row_major(qx.data(), tokens, regular)));
      LOWBIT_TRY(WeightQ::quantize(wr_view, pw, row_major(qw.data(), out, regular)));
    }

    for (std::int64_t t = 0; t < tokens; ++t) {
      const float sx = regular > 0 ? activation_scale(px, t) : 0.0f;
      for (std::int64_t o = 0; o < out; ++o) {
        float int8_part = 0.0f;
        if (regular > 0) {
          std::int32_t acc = 0;
          const auto* a = qx.data() + t * regular;
          const auto* b = qw.data() + o * regular;
          for (std::int64_t j = 0; j < regular; ++j)
            acc += static_cast<std::int32_t>(a[j]) * static_cast<std::int32_t>(b[j]);
          int8_part = static_cast<float>(acc) * (sx * weight_scale(pw, o));
        }
        float fp_part = 0.0f;
        for (std::int64_t h : outlier_columns) fp_part += x(t, h) * w(o, h);
        y(t, o) = int8_part + fp_part;
      }
    }
    return {};
  }

  // The same with the outlier columns detected on x itself at `threshold` (bitsandbytes' per-call
  // detection). Errors: those above, and a NaN or negative threshold (kInvalidArgument).
  static Status matmul(MatrixView<const float> x, MatrixView<const float> w, float threshold,
                       MatrixView<float> y) {
    LOWBIT_TRY(detail::check_llm_int8_threshold(threshold));
    Result<std::vector<std::int64_t>> columns = llm_int8_outlier_columns(x, threshold);
    if (!columns) return columns.status();
    return matmul(x, w, *columns, y);
  }

  // The decomposition's error against the exact product (double accumulation).
  static Result<LlmInt8Error> error(MatrixView<const float> x, MatrixView<const float> w,
                                    const std::vector<std::int64_t>& outlier_columns) {
    LOWBIT_TRY(detail::check_data(x));
    LOWBIT_TRY(detail::check_data(w));
    if (x.cols() != w.cols()) return Status(Errc::kShapeMismatch, "x.cols() must equal w.cols()");
    std::vector<float> y(static_cast<std::size_t>(x.rows() * w.rows()));
    LOWBIT_TRY(matmul(x, w, outlier_columns, row_major(y.data(), x.rows(), w.rows())));
    double num = 0.0, den = 0.0, max_abs = 0.0;
    for (std::int64_t t = 0; t < x.rows(); ++t) {
      for (std::int64_t o = 0; o < w.rows(); ++o) {
        double exact = 0.0;
        for (std::int64_t h = 0; h < x.cols(); ++h)
          exact += static_cast<double>(x(t, h)) * static_cast<double>(w(o, h));
        const double d = static_cast<double>(y[static_cast<std::size_t>(t * w.rows() + o)]) - exact;
        num += d * d;
        den += exact * exact;
        max_abs = std::max(max_abs, std::fabs(d));
      }
    }
    LlmInt8Error e;
    e.relative_squared_error = den > 0.0 ? num / den : (num > 0.0 ? std::numeric_limits<double>::infinity() : 0.0);
    e.max_abs_error = max_abs;
    e.outlier_columns = static_cast<std::int64_t>(outlier_columns.size());
    return e;
  }

 private:
  static Status check_operands(MatrixView<const float> x, MatrixView<const float> w,
                               MatrixView<float> y) noexcept {
    LOWBIT_TRY(detail::check_data(x));
    LOWBIT_TRY(detail::check_data(w));
    if (x.cols() != w.cols()) return {Errc::kShapeMismatch, "x.cols() must equal w.cols()"};
    LOWBIT_TRY(y.validate());
    if (y.rows() != x.rows() || y.cols() != w.rows())
      return {Errc::kShapeMismatch, "y must be tokens x out"};
    return {};
  }
  static Status check_columns(const std::vector<std::int64_t>& columns, std::int64_t in) noexcept {
    for (std::size_t i = 0; i < columns.size(); ++i) {
      const auto index = static_cast<std::int64_t>(i);
      if (columns[i] < 0 || columns[i] >= in)
        return {Errc::kInvalidArgument, "outlier column outside [0, in)", index};
      if (i > 0 && columns[i] <= columns[i - 1])
        return {Errc::kInvalidArgument, "outlier columns must be strictly ascending", index};
    }
    return {};
  }
  // The scale of token t (PerToken / PerChannel<0>: one per row; PerTensor: one for all).
  static float activation_scale(const QuantParams& p, std::int64_t t) noexcept {
    return p.size() == 1 ? p.scale[0] : p.scale[static_cast<std::size_t>(t)];
  }
  static float weight_scale(const QuantParams& p, std::int64_t o) noexcept {
    return p.size() == 1 ? p.scale[0] : p.scale[static_cast<std::size_t>(o)];
  }
};

// The default (8-bit, ±127, bitsandbytes' vector-wise) decomposition as free functions.
inline Status llm_int8_matmul(MatrixView<const float> x, MatrixView<const float> w,
                              const std::vector<std::int64_t>& outlier_columns, MatrixView<float> y) {
  return LlmInt8<>::matmul(x, w, outlier_columns, y);
}
inline Status llm_int8_matmul(MatrixView<const float> x, MatrixView<const float> w, float threshold,
                              MatrixView<float> y) {
  return LlmInt8<>::matmul(x, w, threshold, y);
}
inline Result<LlmInt8Error> llm_int8_error(MatrixView<const float> x, MatrixView<const float> w,
                                           const std::vector<std::int64_t>& outlier_columns) {
  return LlmInt8<>::error(x, w, outlier_columns);
}

}  // namespace lowbit
