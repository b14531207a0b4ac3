// lowbit/policy/histogram_range.hpp: range estimators that clip outliers, working on a streaming
// histogram of everything observed (detail/histogram.hpp).
//
// Why clip: with b-bit codes the rounding error per element is about scale^2 / 12, and scale grows
// linearly with the range. A few activation outliers that double the range quadruple the error of
// every other element; clipping them costs only their own clamping error. The estimators trade
// the two differently:
//
// Histogram<Bins>: torch's HistogramObserver, bit for bit (torch 1.13). Shrinks the range a
//   quantile step at a time from the side that frees more bins, while the estimated L2 error
//   (each bin taken as a uniform density) keeps falling.
// Percentile<N, D, Bins>: clips at the quantiles 1 - N/D and N/D (default 99.99%, as TensorRT's
//   calibrator). Cheap and predictable, blind to the grid.
// MseClipping<Bins, G>: tries G shrink factors p = 1 - 0.8 k / G of the observed range
//   (k = 0..G-1, down to about 0.2, as GPTQ's mse option does) and keeps the one whose grid has
//   the least squared error over the histogram:
//     err(p) = sum_b count_b * (x_b - dequant(quant(x_b)))^2,
//   x_b the bin centres, quant and dequant the exact grid of `range`'s QuantGrid (scale and zero
//   point from Symmetric/Asymmetric::params, round half to even, clamp to the codes). Ties keep
//   the wider range. Asymmetric candidates are [p lo, p hi], symmetric ones [-p amax, p amax].
//
// Memory: each State is Bins floats plus the range, Bins * 4 bytes per parameter block (8 KiB at
// the default 2048), whatever the number of batches. That suits per-tensor and per-channel
// activations; for fine-grained weight groups (PerGroup<128>: one State per 128 weights) use
// MinMax, whose State is two floats and which is exact for weights anyway.
//
// Histogram reproduces torch's accumulation including its quirks (histc bounds truncated to
// integers, a history of equal values dropped by the next batch; detail/histogram.hpp explains
// them). Percentile and MseClipping use the same re-binning on exact bounds instead: they have no
// torch counterpart to match, and truncated bounds would lose mass. All three are noexcept and
// allocate nothing; an all-equal input gives the range [v, v] (the symmetry policies turn it into
// their documented scale), and an estimator asked before any observe returns [0, 0].
#pragma once

#include <cstdint>
#include <limits>

#include "lowbit/detail/affine.hpp"
#include "lowbit/detail/assert.hpp"
#include "lowbit/detail/histogram.hpp"
#include "lowbit/policy/range.hpp"
#include "lowbit/policy/rounding.hpp"
#include "lowbit/policy/symmetry.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// torch.ao.quantization.HistogramObserver(bins=Bins, upsample_rate=128): the range that
// calculate_qparams feeds to _calculate_qparams, for a grid of codes.max - codes.min + 1 levels
// (torch's 2^bits; the same for its 8-bit dtypes). The grid's symmetry does not enter the search,
// as in torch; pass the range to the symmetry policy's params.
template <int Bins = 2048>
struct Histogram {
  struct State {
    detail::StreamingHistogram<Bins> histogram;
  };
  static void observe(State& state, MatrixView<const float> block) noexcept {
    detail::observe(state.histogram, block, detail::HistogramBounds::kTorch113);
  }
  static Range range(const State& state, const QuantGrid& grid) noexcept {
    const std::int64_t levels =
        static_cast<std::int64_t>(grid.codes.max) - static_cast<std::int64_t>(grid.codes.min) + 1;
    LOWBIT_ASSERT(levels >= 1, "Histogram::range: the grid's codes.max is below codes.min");
    return detail::l2_search(state.histogram, levels < 1 ? 1 : levels);
  }
};

namespace detail {
// The value below which `mass` of the histogram lies, the mass spread uniformly inside each bin.
// Empty bins are skipped, so a quantile never lands in a gap between clusters.
template <int Bins>
inline double histogram_quantile(const StreamingHistogram<Bins>& h, double mass,
                                 double width) noexcept {
  double below = 0.0;
  std::int64_t last_nonempty = -1;
  for (int i = 0; i < Bins; ++i) {
    const double c = h.counts[i];
    if (c <= 0.0) continue;
    last_nonempty = i;
    if (below + c >= mass) {
      double f = (mass - below) / c;
      f = f < 0.0 ? 0.0 : (f > 1.0 ? 1.0 : f);
      return static_cast<double>(h.lo) + (static_cast<double>(i) + f) * width;
    }
    below += c;
  }
  // Rounding left `mass` a hair above the total: the top of the last occupied bin.
  return static_cast<double>(h.lo) + static_cast<double>(last_nonempty + 1) * width;
}
}  // namespace detail

// Clips at the quantiles 1 - N/D (lo) and N/D (hi) of everything observed, interpolating linearly
// inside the bin where each falls. After one batch the estimate is within one bin width,
// (max - min) / Bins, of the data's quantile; each re-binning (a batch that widens the range) may
// move earlier mass by a further 1/128 bin and spreads it evenly over its old bin.
template <int Numerator = 9999, int Denominator = 10000, int Bins = 2048>
struct Percentile {
  static_assert(Denominator > 0 && Numerator <= Denominator && 2 * Numerator >= Denominator,
                "Percentile<N, D>: the clipping quantile N/D must lie in [0.5, 1] (99.99% is "
                "Percentile<9999, 10000>)");
  struct State {
    detail::StreamingHistogram<Bins> histogram;
  };
  static void observe(State& state, MatrixView<const float> block) noexcept {
    detail::observe(state.histogram, block, detail::HistogramBounds::kExact);
  }
  static Range range(const State& state, const QuantGrid&) noexcept {
    const detail::StreamingHistogram<Bins>& h = state.histogram;
    if (!h.observed()) return {0.0f, 0.0f};
    if (!(h.hi > h.lo)) return {h.lo, h.hi};
    double total = 0.0;
    for (float c : h.counts) total += c;
    if (!(total > 0.0)) return {h.lo, h.hi};
    const double width = (static_cast<double>(h.hi) - static_cast<double>(h.lo)) / Bins;
    const double q = static_cast<double>(Numerator) / static_cast<double>(Denominator);
    float lo = static_cast<float>(detail::histogram_quantile(h, (1.0 - q) * total, width));
    float hi = static_cast<float>(detail::histogram_quantile(h, q * total, width));
    lo = lo < h.lo ? h.lo : lo;
    hi = hi > h.hi ? h.hi : hi;
    return {lo, hi < lo ? lo : hi};
  }
};

// Grid search over clipping ratios with the exact grid's squared error (see the header comment).
template <int Bins = 2048, int GridPoints = 100>
struct MseClipping {
  static_assert(GridPoints >= 1, "MseClipping<Bins, GridPoints>: GridPoints must be at least 1");
  struct State {
    detail::StreamingHistogram<Bins> histogram;
  };
  static void observe(State& state, MatrixView<const float> block) noexcept {
    detail::observe(state.histogram, block, detail::HistogramBounds::kExact);
  }

  // The squared error of quantizing the histogram's bin centres onto the grid of [lo, hi];
  // infinity when the grid cannot be built (a scale that overflows float32).
  static double grid_error(const detail::StreamingHistogram<Bins>& h, float lo, float hi,
                           const QuantGrid& grid) noexcept {
    const Result<ScaleZeroPoint> p = grid.symmetric ? Symmetric::params(lo, hi, grid.codes)
                                                    : Asymmetric::params(lo, hi, grid.codes);
    if (!p) return std::numeric_limits<double>::infinity();
    // The quantizer's own element-wise steps (detail/affine.hpp), so the search measures exactly
    // the error the chosen range will give.
    const float inv_scale = 1.0f / p->scale;
    const double width = (static_cast<double>(h.hi) - static_cast<double>(h.lo)) / Bins;
    double error = 0.0;
    for (int i = 0; i < Bins; ++i) {
      if (h.counts[i] == 0.0f) continue;
      const float x = static_cast<float>(h.lo + (i + 0.5) * width);
      const std::int32_t q = detail::clamp_level(
          detail::level<RoundHalfToEven>(x, inv_scale, p->zero_point), grid.codes);
      const double d =
          static_cast<double>(x) - static_cast<double>(detail::dequantize_code(q, p->scale, p->zero_point));
      error += static_cast<double>(h.counts[i]) * d * d;
    }
    return error;
  }

  static Range range(const State& state, const QuantGrid& grid) noexcept {
    const detail::StreamingHistogram<Bins>& h = state.histogram;
    if (!h.observed()) return {0.0f, 0.0f};
    if (!(h.hi > h.lo)) return {h.lo, h.hi};
    const float amax = -h.lo > h.hi ? -h.lo : h.hi;
    Range best{h.lo, h.hi};
    double best_error = std::numeric_limits<double>::infinity();
    for (int k = 0; k < GridPoints; ++k) {
      const float p = static_cast<float>(1.0 - 0.8 * k / GridPoints);
      const Range candidate = grid.symmetric ? Range{-p * amax, p * amax}
                                             : Range{p * h.lo, p * h.hi};
      const double error = grid_error(h, candidate.lo, candidate.hi, grid);
      if (error < best_error) {  // strict: on a tie the wider range, tried first, stays
        best_error = error;
        best = candidate;
      }
    }
    return best;
  }
};

}  // namespace lowbit
