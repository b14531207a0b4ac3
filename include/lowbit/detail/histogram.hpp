// lowbit/detail/histogram.hpp: a streaming histogram of a stream of float batches, and the L2
// range search over it. Internal: users reach it through policy/histogram_range.hpp.
//
// Why a histogram: an activation's useful range is decided by the bulk of its distribution, not by
// the handful of outliers that set min and max. A fixed number of equal-width bins over the
// observed range summarises any number of batches in Bins floats, and clipping searches then work
// on the bins instead of the data.
//
// Why PyTorch's exact arithmetic: the accumulation and the search reproduce torch 1.13's
// HistogramObserver (torch/ao/quantization/observer.py) operation by operation, so that ranges
// calibrated here equal those of engines calibrated with torch, and tests can compare for equality.
// The algorithm, in our words:
//
//   Binning (torch.histc on CPU). Edges e0 = float(lo), eB = float(hi); a value x in [e0, eB]
//   goes to bin trunc(float32((x - e0) * B / (eB - e0))), and x == eB to the last bin. Values
//   outside are dropped. lo == hi widens the edges to [lo - 1, hi + 1].
//
//   First batch: the range [lo, hi] is the batch's min and max; the batch is binned.
//
//   Later batches (re-binning): with the old range split into B*U fine cells of width
//   w = (hi - lo) / (B*U), U = 128, the new range [lo', hi'] = [min, max] of both is rounded up to
//   a whole number D of fine cells per new bin: D = ceil((hi' - lo') / (B*w)), and hi' grows by
//   the excess (only hi', so a post-ReLU range keeps lo = 0). Each old bin is spread evenly over
//   its U fine cells, which are shifted by s = round((lo - lo') / w) cells and summed D at a time
//   into the new bins (a running double sum, read back at every D-th cell); the new batch is
//   binned over [lo', hi'] and added. The old mass is preserved; it moves by at most half a fine
//   cell. Because D is a ceiling, each batch that widens the range pushes hi' past the data by up
//   to (hi - lo) / 128: torch's behaviour, kept (its five-batch oracle ends at 4.2923 for data
//   that stop at 4.2691). A batch inside the range (D = U exactly when Bins is a power of two)
//   is simply added.
//
//   L2 search (torch _non_linear_param_search, after caffe2's NormMinimization): starting from all
//   bins, repeatedly drop one more quantile step (1e-5 of the mass) from whichever end frees more
//   bins, and stop as soon as the estimated squared quantization error grows. For a candidate of
//   bins [a, b] quantized onto N levels (the grid's number of codes) of width
//   dw = (b - a + 1) * bw / N, each bin's mass
//   is taken as uniform over the bin (density c / bw), and the error is the integral of
//   density * (x - centre of x's level)^2, split where the bin crosses level boundaries:
//     integral over [d0, d1] of t^2 dt = (d1^3 - d0^3) / 3.
//   Values outside [a, b] are charged against the outermost level's centre, as clamping does.
//
// torch 1.13 deviations reproduced in HistogramBounds::kTorch113 mode (torch's HistogramObserver):
//   * histc receives its bounds through Python int(), so they are truncated toward zero: the first
//     batch of a tensor in [-8.9, 14.25] is binned over [-8, 14] while the range says
//     [-8.9, 14.25], and values beyond the truncated bounds are not counted. When both bounds
//     truncate to the same integer (a tensor inside (-1, 1), say), histc falls back to the batch's
//     own min and max. The same truncation applies to the new batch during re-binning.
//   * after a batch whose values were all equal (lo == hi), the next batch restarts the histogram
//     and the equal batch is forgotten.
// HistogramBounds::kExact (used by Percentile and MseClipping) bins over the true range and
// merges an all-equal history instead of dropping it; it is otherwise the same algorithm.
//
// Where torch would fail (it raises, or allocates B*D floats) lowbit does something defined:
//   * a new range so much wider than the old one that D exceeds 2^40 (an old range below ~1e-10
//     of the new one, or one whose fine cells underflow to zero): each old bin's mass moves whole
//     to the new bin holding the old bin's centre, and hi' is not relaxed.
//   * a shifted old histogram reaching past the last new bin by a rounding cell: the overhang is
//     added to the last bin, so no mass is lost.
// Float order matters: build with -ffp-contract=off for bit-exactness with torch (FMA contraction
// moves the bin arithmetic by an ulp).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "lowbit/policy/range.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {
namespace detail {

// torch's default upsample_rate: the fine grid that re-binning aligns old and new ranges on.
constexpr std::int64_t kHistogramUpsampleRate = 128;

// How histc bounds are chosen; see the header comment.
enum class HistogramBounds : std::uint8_t {
  kTorch113,  // bit-for-bit torch 1.13 HistogramObserver, with its integer truncation
  kExact,     // the true range
};

template <int Bins>
struct StreamingHistogram {
  static_assert(Bins >= 2 && Bins <= 16384,
                "Histogram bins must lie in [2, 16384]: re-binning and the range searches keep "
                "a few temporary copies of the histogram on the stack");
  // Counts per bin, float32 as torch keeps them: whole numbers until re-binning spreads mass.
  std::array<float, Bins> counts{};
  // The range the bins span; lo == hi means all mass sits at lo. lo > hi: nothing observed yet.
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();

  bool observed() const noexcept { return lo <= hi; }
};

// ---------------------------------------------------------------------------------------------
// Float primitives with torch's CPU rounding.

// Python's floor division a // b on float32 (torch.div(rounding_mode='floor')): the quotient of the
// exact remainder split, not floor(a / b), which can round across an integer.
inline float floor_divide(float a, float b) noexcept {
  if (b == 0.0f) return a / b;
  const float mod = std::fmod(a, b);
  float div = (a - mod) / b;
  if (mod != 0.0f && ((b < 0.0f) != (mod < 0.0f))) div -= 1.0f;
  if (div == 0.0f) return std::copysign(0.0f, a / b);
  float result = std::floor(div);
  if (div - result > 0.5f) result += 1.0f;
  return result;
}

// ATen's row_sum (cascade_sum on CPU): `units` consecutive units of Lanes floats (a SIMD vector,
// or one float), read four units per row; rows are added in blocks of at least 16 into a 4-level
// cascade, and the four running units are then folded left to right. Returns the folded unit.
template <int Lanes>
inline std::array<float, Lanes> aten_row_sum(const float* x, std::int64_t units) noexcept {
  constexpr int kUnitsPerRow = 4, kLevels = 4;
  const std::int64_t rows = units / kUnitsPerRow;
  std::int64_t ceil_log2 = 0;
  while ((std::int64_t{1} << ceil_log2) < rows) ++ceil_log2;
  const std::int64_t level_power = ceil_log2 / kLevels > 4 ? ceil_log2 / kLevels : 4;
  const std::int64_t level_step = std::int64_t{1} << level_power;
  const std::int64_t level_mask = level_step - 1;

  float acc[kLevels][kUnitsPerRow][Lanes] = {};
  auto add_row = [&](std::int64_t row) {
    for (int u = 0; u < kUnitsPerRow; ++u)
      for (int l = 0; l < Lanes; ++l) acc[0][u][l] += x[(row * kUnitsPerRow + u) * Lanes + l];
  };
  std::int64_t row = 0;
  while (row + level_step <= rows) {
    for (std::int64_t j = 0; j < level_step; ++j, ++row) add_row(row);
    for (int level = 1; level < kLevels; ++level) {
      for (int u = 0; u < kUnitsPerRow; ++u)
        for (int l = 0; l < Lanes; ++l) {
          acc[level][u][l] += acc[level - 1][u][l];
          acc[level - 1][u][l] = 0.0f;
        }
      if ((row & (level_mask << (level * level_power))) != 0) break;
    }
  }
  for (; row < rows; ++row) add_row(row);
  for (int level = 1; level < kLevels; ++level)
    for (int u = 0; u < kUnitsPerRow; ++u)
      for (int l = 0; l < Lanes; ++l) acc[0][u][l] += acc[level][u][l];
  // Units left over after the last whole row join the first running unit.
  for (std::int64_t unit = rows * kUnitsPerRow; unit < units; ++unit)
    for (int l = 0; l < Lanes; ++l) acc[0][0][l] += x[unit * Lanes + l];
  for (int u = 1; u < kUnitsPerRow; ++u)
    for (int l = 0; l < Lanes; ++l) acc[0][0][l] += acc[0][u][l];
  std::array<float, Lanes> out;
  for (int l = 0; l < Lanes; ++l) out[l] = acc[0][0][l];
  return out;
}

// torch.sum of a contiguous float32 vector on an AVX2 CPU: row_sum over 8-float vectors, then the
// floats past the last whole vector, then the 8 lanes, in that order; under 8 floats, row_sum
// over single floats. The order matters only in the last ulp, which in the search can decide a
// near-tie; torch on an AVX-512 CPU uses 16 lanes and may differ there.
inline float aten_sum(const float* x, std::int64_t n) noexcept {
  constexpr int kLanes = 8;
  if (n < kLanes) return aten_row_sum<1>(x, n)[0];
  const std::int64_t vectors = n / kLanes;
  const std::array<float, kLanes> lanes = aten_row_sum<kLanes>(x, vectors);
  float total = 0.0f;
  for (std::int64_t i = vectors * kLanes; i < n; ++i) total += x[i];
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// The bin of x under histc's edges [e0, eB]: float32 arithmetic in torch's order. Callers pass x
// inside the edges. Where torch's float formula has no answer (its integer conversion would be
// UB), lowbit decides: an overflowing product is redone in double, and edges that rounded
// together (a constant input widened by +-1 that float cannot hold) give the middle bin, where
// exact arithmetic puts a constant.
template <int Bins>
inline std::int64_t histc_bin(float x, float e0, float eB) noexcept {
  const float pos = (x - e0) * static_cast<float>(Bins) / (eB - e0);
  if (pos >= 0.0f && pos < static_cast<float>(Bins)) return static_cast<std::int64_t>(pos);
  if (pos == static_cast<float>(Bins)) return Bins - 1;  // x == eB: the last bin is closed
  const double span = static_cast<double>(eB) - static_cast<double>(e0);
  if (!(span > 0.0)) return Bins / 2;
  const double exact = (static_cast<double>(x) - static_cast<double>(e0)) / span * Bins;
  return exact >= Bins - 1 ? Bins - 1 : (exact <= 0.0 ? 0 : static_cast<std::int64_t>(exact));
}

// torch.histc(x, Bins, min, max) into out (overwritten), with its degenerate-bound rules.
template <int Bins>
inline void histc(MatrixView<const float> x, double min, double max, float* out) noexcept {
  for (int i = 0; i < Bins; ++i) out[i] = 0.0f;
  if (min == max && !x.empty()) {
    const Range r = block_min_max(x);
    min = r.lo;
    max = r.hi;
  }
  if (min == max) {
    min -= 1.0;
    max += 1.0;
  }
  const float e0 = static_cast<float>(min), eB = static_cast<float>(max);
  for (std::int64_t r = 0; r < x.rows(); ++r) {
    for (std::int64_t c = 0; c < x.cols(); ++c) {
      const float v = x(r, c);
      if (!(v >= e0 && v <= eB)) continue;
      out[histc_bin<Bins>(v, e0, eB)] += 1.0f;
    }
  }
}

// Python int() of a float: truncation toward zero, kept in a double so no magnitude is UB.
inline double python_int(float v) noexcept { return std::trunc(static_cast<double>(v)); }

// The exponent of the lowest set bit of a finite nonzero double (v = odd * 2^result).
inline int lowest_bit_exponent(double v) noexcept {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const int exponent_field = static_cast<int>((bits >> 52) & 0x7FF);
  std::uint64_t mantissa = bits & ((std::uint64_t{1} << 52) - 1);
  int exponent = -1074;
  if (exponent_field != 0) {
    mantissa |= std::uint64_t{1} << 52;
    exponent = exponent_field - 1075;
  }
  while ((mantissa & 1u) == 0) {
    mantissa >>= 1;
    ++exponent;
  }
  return exponent;
}

// run + v added `times` times one by one in double, as a sequential cumsum does. When every
// partial sum is a multiple of the smaller lowest bit below 2^53 of it, each addition is exact and
// the product form gives the same double; otherwise the additions are replayed.
inline double repeated_add(double run, double v, std::int64_t times) noexcept {
  if (times <= 0 || v == 0.0) return run;
  const int low = run == 0.0 ? lowest_bit_exponent(v)
                             : (lowest_bit_exponent(v) < lowest_bit_exponent(run)
                                    ? lowest_bit_exponent(v)
                                    : lowest_bit_exponent(run));
  const double bound = std::ldexp(1.0, 53 + low);
  if (std::fabs(run) + static_cast<double>(times) * std::fabs(v) < bound) {
    return run + static_cast<double>(times) * v;
  }
  for (std::int64_t t = 0; t < times; ++t) run += v;
  return run;
}

// torch _combine_histograms: adds the old histogram `old` (range of B*U fine cells starting at
// cell `start`) to `out`, the new batch's histogram over B bins of `down` fine cells each.
template <int Bins>
inline void add_rebinned(const float* old, std::int64_t start, std::int64_t down,
                         float* out) noexcept {
  constexpr std::int64_t kUp = kHistogramUpsampleRate;
  const std::int64_t cells = Bins * down;  // fine cells covered by the new bins
  double run = 0.0;                        // cumulative sum of the fine cells seen so far
  float previous = 0.0f;                   // the last bin's cumulative sum, rounded to float32
  std::int64_t bin = 0;                    // the new bin whose right edge comes next
  auto close_bins_before = [&](std::int64_t cell) {
    // Every new bin whose last cell lies before `cell` is complete: emit it.
    while (bin < Bins && (bin + 1) * down <= cell) {
      const float spread = static_cast<float>((run - static_cast<double>(previous)) /
                                              static_cast<double>(kUp));
      out[bin] = out[bin] + spread;
      previous = static_cast<float>(run);
      ++bin;
    }
  };
  double overhang = 0.0;  // mass torch's slice assignment could not place (see header)
  for (std::int64_t i = 0; i < Bins; ++i) {
    const double v = static_cast<double>(old[i]);
    std::int64_t cell = start + i * kUp;
    const std::int64_t end = cell + kUp;
    while (cell < end) {
      if (cell >= cells) {
        overhang += v * static_cast<double>(end - cell);
        break;
      }
      close_bins_before(cell);
      // Cells up to the end of this old bin or of the current new bin, whichever comes first.
      const std::int64_t bin_end = (bin + 1) * down;
      const std::int64_t stop = end < bin_end ? end : bin_end;
      run = repeated_add(run, v, stop - cell);
      cell = stop;
    }
  }
  close_bins_before(cells);
  if (overhang != 0.0) out[Bins - 1] += static_cast<float>(overhang / static_cast<double>(kUp));
}

// Folds one batch into the histogram (torch HistogramObserver.forward).
template <int Bins>
inline void observe(StreamingHistogram<Bins>& h, MatrixView<const float> x,
                    HistogramBounds bounds) noexcept {
  if (x.empty()) return;
  const bool torch = bounds == HistogramBounds::kTorch113;
  const Range batch = block_min_max(x);

  if (!h.observed() || (torch && h.lo == h.hi)) {
    h.lo = batch.lo;
    h.hi = batch.hi;
    const double e0 = torch ? python_int(batch.lo) : static_cast<double>(batch.lo);
    const double eB = torch ? python_int(batch.hi) : static_cast<double>(batch.hi);
    histc<Bins>(x, e0, eB, h.counts.data());
    return;
  }

  std::array<float, Bins> combined;
  if (h.lo == h.hi) {
    // kExact with an all-equal history: bin the batch over the joint range, then put the old
    // mass, all at h.lo, in its bin.
    const float c = h.lo;
    float old_mass = 0.0f;
    for (float v : h.counts) old_mass += v;
    const float lo = batch.lo < c ? batch.lo : c;
    const float hi = batch.hi > c ? batch.hi : c;
    histc<Bins>(x, lo, hi, combined.data());
    if (lo == hi) {
      combined[Bins / 2] += old_mass;  // histc put the equal batch in the middle bin too
    } else {
      combined[histc_bin<Bins>(c, lo, hi)] += old_mass;
    }
    h.counts = combined;
    h.lo = lo;
    h.hi = hi;
    return;
  }

  // torch _adjust_min_max, in float32 as the tensors are.
  float lo = batch.lo < h.lo ? batch.lo : h.lo;
  float hi = batch.hi > h.hi ? batch.hi : h.hi;
  const float cell = (h.hi - h.lo) / static_cast<float>(Bins * kHistogramUpsampleRate);
  const float bin_of_cells = static_cast<float>(Bins) * cell;
  const float ratio = std::ceil((hi - lo) / bin_of_cells);
  const float start_f = std::nearbyint((h.lo - lo) / cell);
  constexpr float kMaxDown = 1099511627776.0f;  // 2^40: B * D stays far inside int64
  if (!(ratio >= 1.0f && ratio <= kMaxDown && start_f <= kMaxDown * Bins)) {
    // Outside what torch can compute (header): move each old bin whole to the new bin holding its
    // centre, on the unrelaxed joint range.
    const double e0 = torch ? python_int(lo) : static_cast<double>(lo);
    const double eB = torch ? python_int(hi) : static_cast<double>(hi);
    histc<Bins>(x, e0, eB, combined.data());
    const double old_width = (static_cast<double>(h.hi) - h.lo) / Bins;
    for (int i = 0; i < Bins; ++i) {
      if (h.counts[i] == 0.0f) continue;
      float centre = static_cast<float>(h.lo + (i + 0.5) * old_width);
      centre = centre < lo ? lo : (centre > hi ? hi : centre);
      combined[histc_bin<Bins>(centre, lo, hi)] += h.counts[i];
    }
    h.counts = combined;
    h.lo = lo;
    h.hi = hi;
    return;
  }
  const auto down = static_cast<std::int64_t>(ratio);
  const float excess = static_cast<float>(down) * bin_of_cells - (hi - lo);
  hi = hi + excess;
  const auto start = static_cast<std::int64_t>(start_f);

  const double e0 = torch ? python_int(lo) : static_cast<double>(lo);
  const double eB = torch ? python_int(hi) : static_cast<double>(hi);
  histc<Bins>(x, e0, eB, combined.data());
  if (lo == h.lo && hi == h.hi) {
    for (int i = 0; i < Bins; ++i) combined[i] = combined[i] + h.counts[i];
  } else {
    add_rebinned<Bins>(h.counts.data(), start, down, combined.data());
  }
  h.counts = combined;
  h.lo = lo;
  h.hi = hi;
}

// torch _compute_quantization_error: the L2 error of quantizing the histogram with the bins
// [first, last] mapped onto `levels` equal levels. Float32 per bin, as torch's tensors.
template <int Bins>
inline double l2_quantization_error(const StreamingHistogram<Bins>& h, std::int64_t first,
                                    std::int64_t last, std::int64_t levels) noexcept {
  const double bin_width = (static_cast<double>(h.hi) - static_cast<double>(h.lo)) / Bins;
  const double level_width =
      bin_width * static_cast<double>(last - first + 1) / static_cast<double>(levels);
  if (level_width == 0.0) return 0.0;
  const float bw = static_cast<float>(bin_width);
  const float lw = static_cast<float>(level_width);
  const float half = static_cast<float>(level_width / 2);
  const float neg_half = static_cast<float>(-level_width / 2);
  const float top_level = static_cast<float>(levels - 1);
  // Error of a level crossed from edge to edge, per unit density.
  const float full_level = (half * half * half - neg_half * neg_half * neg_half) / 3.0f;
  std::array<float, Bins> norm;
  for (int i = 0; i < Bins; ++i) {
    const float begin = static_cast<float>(i - first) * bw;  // from the first level's left edge
    const float end = begin + bw;
    float level_of_begin = floor_divide(begin, lw);
    level_of_begin = level_of_begin < 0.0f ? 0.0f : (level_of_begin > top_level ? top_level
                                                                                : level_of_begin);
    float level_of_end = floor_divide(end, lw);
    level_of_end = level_of_end < 0.0f ? 0.0f : (level_of_end > top_level ? top_level
                                                                          : level_of_end);
    const float density = h.counts[i] / bw;
    // From the bin's left edge to the end of its first level...
    const float d0 = begin - (level_of_begin + 0.5f) * lw;
    float n = 0.0f + density * ((half * half * half - d0 * d0 * d0) / 3.0f);
    // ...whole levels in between (a negative count when both edges share a level: it cancels
    // the overshoot of the first and last terms)...
    n = n + (level_of_end - level_of_begin - 1.0f) * (density * full_level);
    // ...and from the last level's left edge to the bin's right edge.
    const float d1 = end - (level_of_end * lw + half);
    n = n + density * ((d1 * d1 * d1 - neg_half * neg_half * neg_half) / 3.0f);
    norm[i] = n;
  }
  return static_cast<double>(aten_sum(norm.data(), Bins));
}

// torch _non_linear_param_search: the clipped range minimising the L2 error, for a grid of
// `levels` codes. [lo, lo] for a histogram of equal values; [lo, hi'] unclipped if nothing helps.
template <int Bins>
inline Range l2_search(const StreamingHistogram<Bins>& h, std::int64_t levels) noexcept {
  if (!h.observed()) return {0.0f, 0.0f};
  const float bin_width = (h.hi - h.lo) / static_cast<float>(Bins);
  if (!(h.hi > h.lo)) return {h.lo, h.hi};
  const double total = static_cast<double>(aten_sum(h.counts.data(), Bins));
  // torch.cumsum on CPU accumulates float32 in double and rounds each prefix to float32.
  std::array<float, Bins> cumulative;
  double run = 0.0;
  for (int i = 0; i < Bins; ++i) {
    run += static_cast<double>(h.counts[i]);
    cumulative[i] = static_cast<float>(run);
  }

  constexpr double kStep = 1e-5;  // torch's quantile granularity
  double alpha = 0.0, beta = 1.0;
  std::int64_t first = 0, last = Bins - 1;
  double best = std::numeric_limits<double>::infinity();
  while (alpha < beta) {
    const double next_alpha = alpha + kStep;
    const double next_beta = beta - kStep;
    // torch compares a float32 tensor with a Python float: the threshold is rounded to float32.
    const float low_mass = static_cast<float>(next_alpha * total);
    const float high_mass = static_cast<float>(next_beta * total);
    std::int64_t l = first, r = last;
    while (l < last && cumulative[l] < low_mass) ++l;
    while (r > first && cumulative[r] > high_mass) --r;
    std::int64_t next_first = first, next_last = last;
    if (l - first > last - r) {
      next_first = l;
      alpha = next_alpha;
    } else {
      next_last = r;
      beta = next_beta;
    }
    if (next_first == first && next_last == last) continue;
    const double error = l2_quantization_error(h, next_first, next_last, levels);
    if (error > best) break;
    best = error;
    first = next_first;
    last = next_last;
  }
  if (!std::isfinite(bin_width)) {
    // hi - lo overflowed float32 (torch returns NaN here): the same bins, measured in double.
    const double wide = (static_cast<double>(h.hi) - static_cast<double>(h.lo)) / Bins;
    return {static_cast<float>(h.lo + wide * static_cast<double>(first)),
            static_cast<float>(h.lo + wide * static_cast<double>(last + 1))};
  }
  return {h.lo + bin_width * static_cast<float>(first),
          h.lo + bin_width * static_cast<float>(last + 1)};
}

}  // namespace detail
}  // namespace lowbit
