// lowbit/algo/hessian.hpp: the layer-wise Hessian that GPTQ (Frantar et al. 2022) minimises over.
//
// For a linear layer y = W·x the reconstruction objective ‖W·X − Ŵ·X‖² has, per output row, the
// Hessian H = 2·X·Xᵀ with X (in_features × tokens). GPTQ normalises by the number of samples so
// that layers calibrated on different amounts of data share a scale:
//
//   H = (2/n) · Σ_t x_t·x_tᵀ          (in × in, float32, symmetric positive semi-definite)
//
// HessianAccumulator streams calibration batches into H the way IST-DASLab/gptq's `add_batch` does,
// so its H reproduces the reference's float32 one up to summation order. A batch of m samples
// rescales the running mean, then adds the new outer products pre-scaled by sqrt(2/n):
//
//   H *= n/(n+m);   n += m;   H += (sqrt(2/n)·X_b)ᵀ·(sqrt(2/n)·X_b)      X_b: (tokens × in)
//
// Why pre-scale X instead of multiplying the sum by 2/n: it is the reference's order of rounding.
// The product is a symmetric rank-k update (Eigen's `rankUpdate`, half the flops of a GEMM) into
// the lower triangle; the upper triangle is filled in when H is read.
//
// Memory: H itself (in² floats) plus one scratch tile of at most kHessianChunkRows × in floats,
// whatever the batch size: rows are copied (and scaled) one chunk at a time, which also accepts
// any strided view.
//
// Samples: by default each row (token) is one sample. The reference counts `inp.shape[0]`, which
// for a [batch, seq, features] hook input is the number of *sequences* (and 1 for a 2-D input,
// which it unsqueezes); pass `samples` explicitly to reproduce that weighting. Only the relative
// weight of the batches depends on it: GPTQ's damping is relative to mean(diag(H)), so H's overall
// scale does not change the quantized weights.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// Rows of a batch copied, scaled and multiplied at a time: large enough for the rank-k update to
// run at GEMM speed, small enough that the scratch stays (kHessianChunkRows × in) floats.
inline constexpr std::int64_t kHessianChunkRows = 256;

class HessianAccumulator {
 public:
  // An accumulator for layers with `features` inputs. Errors: features < 1 (kInvalidArgument),
  // features² floats not addressable (kOverflow).
  static Result<HessianAccumulator> create(std::int64_t features) {
    if (features < 1) return Status(Errc::kInvalidArgument, "Hessian needs at least one feature");
    constexpr std::int64_t kMaxElements =
        std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(sizeof(float));
    if (features > kMaxElements / features)
      return Status(Errc::kOverflow, "Hessian: features * features overflows");
    return HessianAccumulator(features);
  }

  // Adds a batch x (tokens × features) counted as x.rows() samples.
  Status add_batch(MatrixView<const float> x) { return add_batch(x, x.rows()); }

  // Adds a batch x (tokens × features) counted as `samples` samples (the reference's inp.shape[0]).
  // Nothing is modified unless the whole batch is valid. Errors: an invalid view, x.cols() !=
  // features (kShapeMismatch), no rows (kEmpty), samples < 1 (kInvalidArgument), a sample count
  // that overflows int64 (kOverflow), NaN/Inf in x (kNonFinite, with the flat index).
  Status add_batch(MatrixView<const float> x, std::int64_t samples) {
    LOWBIT_TRY(x.validate());
    if (x.cols() != features()) return {Errc::kShapeMismatch, "batch width differs from features"};
    if (x.rows() == 0) return {Errc::kEmpty, "batch has no rows"};
    if (samples < 1) return {Errc::kInvalidArgument, "a batch must count at least one sample"};
    if (samples > std::numeric_limits<std::int64_t>::max() - samples_)
      return {Errc::kOverflow, "sample count overflows int64"};
    for (std::int64_t r = 0; r < x.rows(); ++r)
      for (std::int64_t c = 0; c < x.cols(); ++c)
        if (!std::isfinite(x(r, c)))
          return {Errc::kNonFinite, "batch is NaN or Inf", r * x.cols() + c};

    // The reference multiplies its float32 H by the Python float n/(n+m), rounded to float32.
    const double previous = static_cast<double>(samples_);
    samples_ += samples;
    const double total = static_cast<double>(samples_);
    h_.triangularView<Eigen::Lower>() *= static_cast<float>(previous / total);
    const auto factor = static_cast<float>(std::sqrt(2.0 / total));

    const std::int64_t n = features();
    for (std::int64_t first = 0; first < x.rows(); first += kHessianChunkRows) {
      const std::int64_t count = std::min(kHessianChunkRows, x.rows() - first);
      // (features × count), column-major: column t is token first + t, scaled by sqrt(2/n).
      for (std::int64_t t = 0; t < count; ++t)
        for (std::int64_t c = 0; c < n; ++c) scratch_(c, t) = factor * x(first + t, c);
      h_.selfadjointView<Eigen::Lower>().rankUpdate(scratch_.leftCols(count), 1.0f);
    }
    upper_stale_ = true;
    return {};
  }

  std::int64_t features() const noexcept { return h_.rows(); }
  // Samples counted so far (n in the formula above).
  std::int64_t samples() const noexcept { return samples_; }

  // H (features × features, column-major, symmetric; zero before the first batch). Non-const
  // because the upper triangle is mirrored from the lower one here, once per batch, not per update.
  const Eigen::MatrixXf& hessian() {
    if (upper_stale_) {
      h_.triangularView<Eigen::StrictlyUpper>() = h_.transpose();
      upper_stale_ = false;
    }
    return h_;
  }
  // The same matrix as a view, for gptq_quantize.
  MatrixView<const float> view() {
    const Eigen::MatrixXf& h = hessian();
    return col_major(h.data(), h.rows(), h.cols());
  }

  // Back to H = 0, n = 0.
  void reset() {
    h_.setZero();
    samples_ = 0;
    upper_stale_ = false;
  }

 private:
  explicit HessianAccumulator(std::int64_t features)
      : h_(Eigen::MatrixXf::Zero(features, features)), scratch_(features, kHessianChunkRows) {}

  Eigen::MatrixXf h_;        // (features × features); only the lower triangle is accumulated
  Eigen::MatrixXf scratch_;  // (features × kHessianChunkRows) scaled tokens
  std::int64_t samples_ = 0;
  bool upper_stale_ = false;
};

}  // namespace lowbit
