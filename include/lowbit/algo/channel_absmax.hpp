// lowbit/algo/channel_absmax.hpp: the running max |x| of each channel of a linear layer's input,
// streamed over calibration batches. SmoothQuant reads it as its activation scales (the
// reference's get_act_scales: SmoothQuantCalibrator), LLM.int8 as the magnitudes its outlier
// threshold applies to (OutlierFeatureDetector), a static per-tensor int8 scheme as its
// activation range (tensor_absmax). AWQ reads mean |x| instead (AwqActivationStats, awq.hpp).
//
// Memory: one float per channel, whatever the number of tokens.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lowbit/detail/validate.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

class ChannelAbsMax {
 public:
  // Folds a batch (tokens × channels; a [batch, seq, hidden] tensor viewed as (batch·seq) × hidden)
  // into the running maxima. Errors: invalid view (kInvalidArgument, kOverflow), no elements
  // (kEmpty), NaN/Inf (kNonFinite, flat index), a channel count that differs from the first batch's
  // (kShapeMismatch). On error nothing is folded.
  Status observe(MatrixView<const float> x) {
    LOWBIT_TRY(detail::check_data(x));
    if (tokens_ > 0 && x.cols() != channels())
      return {Errc::kShapeMismatch, "batch width differs from the first batch's"};
    if (tokens_ == 0) absmax_.assign(static_cast<std::size_t>(x.cols()), 0.0f);
    for (std::int64_t t = 0; t < x.rows(); ++t)
      for (std::int64_t c = 0; c < x.cols(); ++c) {
        float& m = absmax_[static_cast<std::size_t>(c)];
        m = std::max(m, std::fabs(x(t, c)));
      }
    tokens_ += x.rows();
    return {};
  }

  // max |x| per channel over everything observed; kNotCalibrated before the first batch.
  Result<std::vector<float>> absmax() const {
    if (tokens_ == 0) return Status(Errc::kNotCalibrated, "absmax() before any observe()");
    return absmax_;
  }

  // max |x| over every element observed (the static per-tensor statistic).
  Result<float> tensor_absmax() const {
    if (tokens_ == 0) return Status(Errc::kNotCalibrated, "tensor_absmax() before any observe()");
    return *std::max_element(absmax_.begin(), absmax_.end());
  }

  std::int64_t channels() const noexcept { return static_cast<std::int64_t>(absmax_.size()); }
  std::int64_t tokens() const noexcept { return tokens_; }
  void reset() {
    absmax_.clear();
    tokens_ = 0;
  }

 private:
  std::vector<float> absmax_;
  std::int64_t tokens_ = 0;
};

}  // namespace lowbit
