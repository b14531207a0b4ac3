// lowbit/policy/range.hpp: range estimators, which turn observed values into the real range
// [lo, hi] that a quantizer's grid must cover.
//
// Calibration is streaming: a Calibrator keeps one `State` per parameter block, folds each batch
// into it with `observe`, and asks `range` once, when frozen. Memory is the State's, never the
// data's, so calibrating on 100k tokens costs what calibrating on one batch does.
//
// Every estimator is a small type with the same static interface:
//   struct State;                                              default-constructible
//   static void observe(State&, MatrixView<const float> block) one batch of one block; all finite
//   static Range range(const State&, const QuantGrid&)         after at least one observe
// The grid (code range, symmetry) is passed to `range` because searching estimators (MSE,
// histogram L2) measure the error of the grid they will be used with.
//
// MinMax and MovingAverageMinMax live here; the histogram-based estimators (Histogram,
// Percentile, MseClipping) in policy/histogram_range.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "lowbit/policy/symmetry.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// A closed real interval [lo, hi] to be mapped onto the code range.
struct Range {
  float lo;
  float hi;
};

// What a searching estimator needs to know about the grid its range will feed.
struct QuantGrid {
  CodeRange codes;
  bool symmetric;
};

namespace detail {
// Minimum and maximum of a block, in one pass over its rows.
inline Range block_min_max(MatrixView<const float> block) noexcept {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  for (std::int64_t r = 0; r < block.rows(); ++r) {
    for (std::int64_t c = 0; c < block.cols(); ++c) {
      const float v = block(r, c);
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
  }
  return {lo, hi};
}
}  // namespace detail

// The observed minimum and maximum over all batches (torch MinMaxObserver). No clipping: exact
// for weights, sensitive to outliers in activations.
struct MinMax {
  struct State {
    float lo = std::numeric_limits<float>::infinity();
    float hi = -std::numeric_limits<float>::infinity();
  };
  static void observe(State& state, MatrixView<const float> block) noexcept {
    const Range r = detail::block_min_max(block);
    state.lo = r.lo < state.lo ? r.lo : state.lo;
    state.hi = r.hi > state.hi ? r.hi : state.hi;
  }
  static Range range(const State& state, const QuantGrid&) noexcept { return {state.lo, state.hi}; }
};

// An exponential moving average of each batch's min and max (torch MovingAverageMinMaxObserver):
// the first batch sets them, then m <- m + c * (batch_m - m) in float32 with
// c = Numerator / Denominator (default 0.01, torch's). Smooths batch-to-batch outliers during QAT
// and long activation calibration.
template <int Numerator = 1, int Denominator = 100>
struct MovingAverageMinMax {
  static_assert(Denominator > 0 && Numerator > 0 && Numerator <= Denominator,
                "MovingAverageMinMax<N, D>: the averaging constant N/D must lie in (0, 1]");
  static constexpr float kAveragingConstant =
      static_cast<float>(Numerator) / static_cast<float>(Denominator);
  struct State {
    float lo = 0.0f;
    float hi = 0.0f;
    bool seen = false;
  };
  static void observe(State& state, MatrixView<const float> block) noexcept {
    const Range r = detail::block_min_max(block);
    if (!state.seen) {
      state.lo = r.lo;
      state.hi = r.hi;
      state.seen = true;
      return;
    }
    state.lo = state.lo + kAveragingConstant * (r.lo - state.lo);
    state.hi = state.hi + kAveragingConstant * (r.hi - state.hi);
  }
  static Range range(const State& state, const QuantGrid&) noexcept { return {state.lo, state.hi}; }
};

}  // namespace lowbit
