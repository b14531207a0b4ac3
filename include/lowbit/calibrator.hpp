// lowbit/calibrator.hpp: streaming calibration of a Quantizer's parameters (post-training
// quantization of activations, or of weights seen in pieces).
//
//   lowbit::Calibrator<A8> calib;                  // A8 = Quantizer<Bits<8>, Asymmetric, PerTensor,
//   for (auto& batch : batches)                    //                 MovingAverageMinMax<>>
//     LOWBIT_TRY(calib.observe(batch));            // rows = tokens, cols = features
//   lowbit::Result<lowbit::QuantParams> p = calib.freeze();
//
// The calibrator keeps one range-estimator State per parameter block and never the data, so its
// memory is independent of how many tokens it sees. Every batch must have the columns of the
// first; blocks that span rows (PerTensor, PerChannel<1>) accept any number of rows per batch,
// while per-row blocks (PerChannel<0>, PerGroup) need the same rows every time, as a weight has.
#pragma once

#include <cstdint>
#include <vector>

#include "lowbit/quantizer.hpp"

namespace lowbit {

template <class Q>
class Calibrator {
  using Granularity = typename Q::granularity;
  using Estimator = typename Q::range_estimator;
  static_assert(!Granularity::kDynamic,
                "Calibrator<Q>: Q's granularity is dynamic (PerToken): its parameters come from "
                "each input at run time, so there is nothing to calibrate; call "
                "Q::compute_params on the input instead");

 public:
  explicit Calibrator(const Granularity& g = {}) : granularity_(g) {}

  // Folds one batch into every block's estimator state. On error nothing is folded.
  Status observe(MatrixView<const float> batch) {
    LOWBIT_TRY(Q::check_input(batch, granularity_));
    // A batch must map onto the same parameter grid as the first one did.
    const BlockShape grid = param_grid(granularity_, batch.rows(), batch.cols());
    if (batches_ == 0) {
      rows_ = batch.rows();
      cols_ = batch.cols();
      states_.assign(static_cast<std::size_t>(grid.rows * grid.cols), typename Estimator::State{});
    } else {
      const BlockShape first = param_grid(granularity_, rows_, cols_);
      if (batch.cols() != cols_ || grid.rows != first.rows || grid.cols != first.cols)
        return {Errc::kShapeMismatch, "batch does not map onto the first batch's parameter grid"};
    }
    detail::for_each_block(granularity_, batch, [&](std::int64_t i, MatrixView<const float> b) {
      Estimator::observe(states_[static_cast<std::size_t>(i)], b);
    });
    ++batches_;
    return {};
  }

  // Parameters from everything observed so far; the calibrator may keep observing afterwards.
  Result<QuantParams> freeze() const {
    if (batches_ == 0) return Status(Errc::kNotCalibrated, "freeze() before any observe()");
    const BlockShape grid = param_grid(granularity_, rows_, cols_);
    QuantParams params(grid.rows, grid.cols);
    for (std::size_t i = 0; i < states_.size(); ++i) {
      const Range r = Estimator::range(states_[i], Q::kGrid);
      Result<ScaleZeroPoint> p = Q::symmetry::params(r.lo, r.hi, Q::kCodes);
      if (!p) return Status(p.status().code(), p.status().message(), static_cast<std::int64_t>(i));
      params.scale[i] = p->scale;
      params.zero_point[i] = p->zero_point;
    }
    return params;
  }

  // The estimator state of parameter block i, e.g. to inspect a running min/max or histogram.
  const typename Estimator::State& state(std::int64_t i) const {
    return states_[static_cast<std::size_t>(i)];
  }
  std::int64_t batches() const noexcept { return batches_; }
  void reset() {
    states_.clear();
    batches_ = 0;
  }

 private:
  Granularity granularity_;
  std::vector<typename Estimator::State> states_;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t batches_ = 0;
};

}  // namespace lowbit
