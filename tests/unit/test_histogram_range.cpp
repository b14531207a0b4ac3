// Histogram-based range estimators (policy/histogram_range.hpp, detail/histogram.hpp).
//
// Histogram against PyTorch 1.13's HistogramObserver (tests/data/torch/observers, produced by
// oracles_torch.py; see tests/data/torch/README.md): the accumulated 2048-bin histogram, its range
// and the scale / zero point of the searched range are all compared exactly. Percentile and
// MseClipping have no torch counterpart; they get property tests on data with known answers.
// Random data come from a fixed seed (printed on failure) and a generator written here, so the
// draws do not depend on the standard library's distributions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/detail/histogram.hpp"
#include "lowbit/policy/histogram_range.hpp"
#include "lowbit/policy/range.hpp"
#include "lowbit/policy/symmetry.hpp"
#include "support/oracle.hpp"

namespace {

using lowbit_test::load;

constexpr lowbit::QuantGrid kQuint8Affine{{0, 255}, false};
constexpr lowbit::QuantGrid kQint8Symmetric{{-128, 127}, true};

lowbit::ScaleZeroPoint params_of(lowbit::Range r, const lowbit::QuantGrid& grid) {
  const lowbit::Result<lowbit::ScaleZeroPoint> p =
      grid.symmetric ? lowbit::Symmetric::params(r.lo, r.hi, grid.codes)
                     : lowbit::Asymmetric::params(r.lo, r.hi, grid.codes);
  REQUIRE(p);
  return *p;
}

// Squared error of quantizing x on the grid of r, with torch's quantize/dequantize
// (README section 1): q = clamp(zp + rint(x * (1/scale))), x^ = (q - zp) * scale.
double data_error(const std::vector<float>& x, lowbit::Range r, const lowbit::QuantGrid& grid) {
  const lowbit::ScaleZeroPoint p = params_of(r, grid);
  const float inv = 1.0f / p.scale;
  double error = 0.0;
  for (float v : x) {
    float q = static_cast<float>(p.zero_point) + std::nearbyint(v * inv);
    q = std::fmin(std::fmax(q, static_cast<float>(grid.codes.min)),
                  static_cast<float>(grid.codes.max));
    const double d = v - (q - static_cast<float>(p.zero_point)) * p.scale;
    error += d * d;
  }
  return error;
}

// splitmix64: a tiny generator with the same integers everywhere (std:: distributions differ
// between standard libraries).
struct Random {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double gaussian() {  // Box-Muller
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

template <int Bins>
double mass(const lowbit::detail::StreamingHistogram<Bins>& h) {
  double total = 0.0;
  for (float c : h.counts) total += c;
  return total;
}

template <class Estimator>
lowbit::Range estimate(const std::vector<float>& x, const lowbit::QuantGrid& grid) {
  typename Estimator::State state;
  Estimator::observe(state, lowbit::flat(x.data(), static_cast<std::int64_t>(x.size())));
  return Estimator::range(state, grid);
}

}  // namespace

TEST_CASE("Histogram matches torch HistogramObserver on one batch (observers/main)") {
  std::vector<std::int64_t> shape;
  const auto x = load<float>("torch/observers/main/x.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{64, 256});
  // The same values stored column-major: binning must not depend on the order of elements.
  std::vector<float> x_cols(x.size());
  for (std::int64_t r = 0; r < 64; ++r)
    for (std::int64_t c = 0; c < 256; ++c)
      x_cols[static_cast<std::size_t>(c * 64 + r)] = x[static_cast<std::size_t>(r * 256 + c)];

  struct Case {
    const char* dir;
    lowbit::QuantGrid grid;
  };
  for (const Case& k : {Case{"torch/observers/main/histogram_quint8_affine", kQuint8Affine},
                        Case{"torch/observers/main/histogram_qint8_symmetric", kQint8Symmetric}}) {
    CAPTURE(k.dir);
    const std::string dir = k.dir;
    const auto hist_ref = load<float>(dir + "/histogram.npy");
    const auto minmax_ref = load<float>(dir + "/minmax.npy");
    const auto scale_ref = load<float>(dir + "/scale.npy");
    const auto zp_ref = load<std::int32_t>(dir + "/zero_point.npy");
    REQUIRE(hist_ref.size() == 2048);

    const lowbit::MatrixView<const float> views[] = {
        lowbit::row_major(x.data(), 64, 256),
        lowbit::col_major<const float>(x_cols.data(), 64, 256)};
    for (const lowbit::MatrixView<const float>& view : views) {
      lowbit::Histogram<>::State state;
      lowbit::Histogram<>::observe(state, view);
      int mismatches = 0;
      for (std::size_t i = 0; i < 2048; ++i) mismatches += state.histogram.counts[i] != hist_ref[i];
      CHECK(mismatches == 0);
      CHECK(state.histogram.lo == minmax_ref[0]);
      CHECK(state.histogram.hi == minmax_ref[1]);
      // torch 1.13 bins the first batch over int(min), int(max) = [-8, 14] while the range says
      // [-8.905, 14.25]: the 3 values beyond the truncated bounds are not counted.
      CHECK(mass(state.histogram) == 64 * 256 - 3);

      const lowbit::ScaleZeroPoint p = params_of(lowbit::Histogram<>::range(state, k.grid), k.grid);
      CHECK(p.scale == scale_ref[0]);
      CHECK(p.zero_point == zp_ref[0]);
    }
  }
}

TEST_CASE("Histogram: a batch inside the range is added as is, without re-binning") {
  // With 2048 bins the fine grid divides the range exactly (D = U = 128, no excess), so a second
  // identical batch doubles every count and leaves the range alone.
  const auto x = load<float>("torch/observers/main/x.npy");
  const auto hist_ref = load<float>("torch/observers/main/histogram_quint8_affine/histogram.npy");
  lowbit::Histogram<>::State state;
  lowbit::Histogram<>::observe(state, lowbit::row_major(x.data(), 64, 256));
  lowbit::Histogram<>::observe(state, lowbit::row_major(x.data(), 64, 256));
  int mismatches = 0;
  for (std::size_t i = 0; i < 2048; ++i)
    mismatches += state.histogram.counts[i] != 2.0f * hist_ref[i];
  CHECK(mismatches == 0);
  CHECK(state.histogram.lo == -8.905129432678223f);
  CHECK(state.histogram.hi == 14.25f);
}

TEST_CASE("Histogram matches torch HistogramObserver over five widening batches") {
  std::vector<std::int64_t> shape;
  const auto x = load<float>("torch/observers/batches/x.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{5, 32, 128});
  const std::string dir = "torch/observers/batches/histogram_quint8_affine";
  const auto hist_ref = load<float>(dir + "/histogram.npy");
  const auto minmax_ref = load<float>(dir + "/minmax.npy");
  const auto scale_ref = load<float>(dir + "/scale.npy");
  const auto zp_ref = load<std::int32_t>(dir + "/zero_point.npy");
  REQUIRE(hist_ref.size() == 2048);

  lowbit::Histogram<>::State state;
  for (std::int64_t b = 0; b < 5; ++b)
    lowbit::Histogram<>::observe(state, lowbit::row_major(x.data() + b * 32 * 128, 32, 128));

  // Every bin exact: four re-binnings, fractional counts included.
  int mismatches = 0;
  for (std::size_t i = 0; i < 2048; ++i) mismatches += state.histogram.counts[i] != hist_ref[i];
  CHECK(mismatches == 0);
  CHECK(state.histogram.lo == minmax_ref[0]);
  // Above the largest value observed (4.2691): torch relaxes the top of the range on re-binning.
  CHECK(state.histogram.hi == minmax_ref[1]);

  const lowbit::ScaleZeroPoint p = params_of(lowbit::Histogram<>::range(state, kQuint8Affine),
                                             kQuint8Affine);
  CHECK(p.scale == scale_ref[0]);
  CHECK(p.zero_point == zp_ref[0]);

  // The search runs on the stored histogram alone: feeding torch's own histogram and range gives
  // torch's scale, which checks the search apart from the accumulation.
  lowbit::Histogram<>::State torch_state;
  for (std::size_t i = 0; i < 2048; ++i) torch_state.histogram.counts[i] = hist_ref[i];
  torch_state.histogram.lo = minmax_ref[0];
  torch_state.histogram.hi = minmax_ref[1];
  const lowbit::ScaleZeroPoint q = params_of(lowbit::Histogram<>::range(torch_state, kQuint8Affine),
                                             kQuint8Affine);
  CHECK(q.scale == scale_ref[0]);
  CHECK(q.zero_point == zp_ref[0]);
}

TEST_CASE("detail: floor_divide is Python's // on float32, not floor(a / b)") {
  using lowbit::detail::floor_divide;
  CHECK(floor_divide(7.0f, 2.0f) == 3.0f);
  CHECK(floor_divide(-7.0f, 2.0f) == -4.0f);
  CHECK(floor_divide(7.0f, -2.0f) == -4.0f);
  // 0.1f is slightly above 0.1, so 1 // 0.1f is 9; the rounded quotient 1 / 0.1f is exactly 10.
  CHECK(std::floor(1.0f / 0.1f) == 10.0f);
  CHECK(floor_divide(1.0f, 0.1f) == 9.0f);
  CHECK(std::signbit(floor_divide(-0.0f, 3.0f)));
}

TEST_CASE("detail: aten_sum adds every element once, for every length") {
  // Small integers sum exactly in any order, so this checks the bookkeeping of torch's cascade
  // (scalar path under 8, vector rows, leftover vectors, tail floats), not its rounding order,
  // which the torch oracle pins through the search.
  std::vector<float> x(3000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(1 + (i * 7919) % 13);
  int wrong = 0;
  for (std::int64_t n = 0; n <= 3000; n = n < 80 ? n + 1 : n * 3 / 2 + 1) {
    double exact = 0.0;
    for (std::int64_t i = 0; i < n; ++i) exact += x[static_cast<std::size_t>(i)];
    wrong += static_cast<double>(lowbit::detail::aten_sum(x.data(), n)) != exact;
  }
  CHECK(wrong == 0);
}

TEST_CASE("detail: repeated_add equals the one-by-one double additions of a cumsum") {
  const std::uint64_t seed = 20240611;
  INFO("seed " << seed);
  Random rng{seed};
  int slow_cases = 0, mismatches = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    // Counts as re-binning makes them: whole numbers and float32 fractions of many magnitudes.
    const int run_exponent = static_cast<int>(rng.next() % 80) - 20;
    const double run = trial % 3 == 0 ? std::floor(rng.uniform() * 1e6)
                                      : rng.uniform() * std::ldexp(1.0, run_exponent);
    const double v = static_cast<double>(static_cast<float>(
        rng.uniform() * std::ldexp(1.0, static_cast<int>(rng.next() % 40) - 30)));
    const std::int64_t times = 1 + static_cast<std::int64_t>(rng.next() % 128);
    double expected = run;
    for (std::int64_t t = 0; t < times; ++t) expected += v;
    const double fast_bound = std::fabs(run) + static_cast<double>(times) * std::fabs(v);
    slow_cases += expected != run + static_cast<double>(times) * v && fast_bound > 0.0;
    mismatches += lowbit::detail::repeated_add(run, v, times) != expected;
  }
  CHECK(mismatches == 0);
  // The replay branch was exercised: some cases round differently from the product form.
  CHECK(slow_cases > 0);
}

TEST_CASE_TEMPLATE("edge inputs give defined ranges: nothing, one value, equal values, zeros",
                   Estimator, lowbit::Histogram<>, lowbit::Percentile<>, lowbit::MseClipping<>) {
  const lowbit::QuantGrid grids[] = {kQuint8Affine, kQint8Symmetric};
  for (const lowbit::QuantGrid& grid : grids) {
    typename Estimator::State state;
    lowbit::Range r = Estimator::range(state, grid);
    CHECK(r.lo == 0.0f);  // asked before any observe
    CHECK(r.hi == 0.0f);
    Estimator::observe(state, lowbit::flat<const float>(nullptr, 0));  // empty: ignored
    r = Estimator::range(state, grid);
    CHECK(r.lo == 0.0f);
    CHECK(r.hi == 0.0f);

    const float one = 2.5f;
    Estimator::observe(state, lowbit::flat(&one, 1));
    r = Estimator::range(state, grid);
    CHECK(r.lo == 2.5f);
    CHECK(r.hi == 2.5f);
  }

  // Constant and all-zero tensors (observers/edge cases 0-2). torch's HistogramObserver returns
  // [c, c] for them, as MinMaxObserver does, so MinMaxObserver's stored qparams apply.
  std::vector<std::int64_t> shape;
  const auto edge = load<float>("torch/observers/edge/x.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{5, 4, 16});
  const auto scale_ref = load<float>("torch/observers/edge/minmax_quint8_affine/scale.npy");
  const auto zp_ref =
      load<std::int32_t>("torch/observers/edge/minmax_quint8_affine/zero_point.npy");
  for (std::int64_t e = 0; e < 5; ++e) {
    CAPTURE(e);
    typename Estimator::State state;
    Estimator::observe(state, lowbit::row_major(edge.data() + e * 64, 4, 16));
    const lowbit::Range r = Estimator::range(state, kQuint8Affine);
    CHECK(r.lo <= r.hi);
    CHECK(std::isfinite(r.lo));
    CHECK(std::isfinite(r.hi));
    if (e <= 2) {
      CHECK(r.lo == edge[static_cast<std::size_t>(e * 64)]);
      CHECK(r.hi == edge[static_cast<std::size_t>(e * 64)]);
      const lowbit::ScaleZeroPoint p = params_of(r, kQuint8Affine);
      CHECK(p.scale == scale_ref[static_cast<std::size_t>(e)]);
      CHECK(p.zero_point == zp_ref[static_cast<std::size_t>(e)]);
    }
  }
}

TEST_CASE_TEMPLATE("extreme magnitudes stay defined: overflowing bin arithmetic, huge constants",
                   Estimator, lowbit::Histogram<>, lowbit::Percentile<>, lowbit::MseClipping<>) {
  // (x - e0) * 2048 overflows float for x = 1e36 and 2e36; 1e8 +- 1 rounds back to 1e8, so the
  // widened edges of that constant coincide; 3e38 - (-3e38) overflows float.
  const std::vector<std::vector<float>> cases = {
      {0.0f, 1e36f, 2e36f}, std::vector<float>(5, 1e8f), {-3e38f, 0.0f, 3e38f}};
  for (const auto& x : cases) {
    CAPTURE(x[0]);
    typename Estimator::State state;
    Estimator::observe(state, lowbit::flat(x.data(), static_cast<std::int64_t>(x.size())));
    CHECK(mass(state.histogram) == static_cast<double>(x.size()));
    for (const lowbit::QuantGrid& grid : {kQuint8Affine, kQint8Symmetric}) {
      const lowbit::Range r = Estimator::range(state, grid);
      CHECK(std::isfinite(r.lo));
      CHECK(std::isfinite(r.hi));
      CHECK(r.lo <= r.hi);
    }
  }
  // The overflowing products land where exact arithmetic puts them: 1e36 mid-range, 2e36 last.
  typename Estimator::State state;
  Estimator::observe(state, lowbit::flat(cases[0].data(), 3));
  CHECK(state.histogram.counts[0] == 1.0f);
  CHECK(state.histogram.counts[1024] == 1.0f);
  CHECK(state.histogram.counts[2047] == 1.0f);
}

TEST_CASE("after an all-equal batch torch forgets it; the exact bounds keep it") {
  const std::vector<float> equal(100, 0.5f);
  std::vector<float> ramp(64);
  for (std::size_t i = 0; i < ramp.size(); ++i) ramp[i] = -1.0f + 3.0f * static_cast<float>(i) / 63;

  lowbit::Histogram<>::State torch_state;
  lowbit::Histogram<>::observe(torch_state, lowbit::flat(equal.data(), 100));
  lowbit::Histogram<>::observe(torch_state, lowbit::flat(ramp.data(), 64));
  CHECK(mass(torch_state.histogram) == 64);
  CHECK(torch_state.histogram.lo == -1.0f);
  CHECK(torch_state.histogram.hi == 2.0f);

  lowbit::Percentile<>::State exact_state;
  lowbit::Percentile<>::observe(exact_state, lowbit::flat(equal.data(), 100));
  lowbit::Percentile<>::observe(exact_state, lowbit::flat(equal.data(), 100));  // still equal
  CHECK(exact_state.histogram.lo == 0.5f);
  CHECK(exact_state.histogram.hi == 0.5f);
  lowbit::Percentile<>::observe(exact_state, lowbit::flat(ramp.data(), 64));
  CHECK(mass(exact_state.histogram) == 264);
  // The 200 equal values now dominate: the median is 0.5, within a bin.
  const lowbit::Range median = lowbit::Percentile<1, 2>::range(
      lowbit::Percentile<1, 2>::State{exact_state.histogram}, kQuint8Affine);
  CHECK(std::fabs(median.hi - 0.5f) <= 3.0f / 2048);
}

TEST_CASE("a range many orders wider than the history stays defined and keeps the mass") {
  // Old ranges of 1.2e-7 and of a subnormal: torch would need 2^44 fine cells, or divide by an
  // underflowed cell width.
  const std::vector<std::vector<float>> firsts = {{1.0f, std::nextafter(1.0f, 2.0f)},
                                                  {0.0f, 1e-40f}};
  std::vector<float> wide(1000);
  for (std::size_t i = 0; i < wide.size(); ++i)
    wide[i] = -1000.0f + 2000.0f * static_cast<float>(i) / 999;
  for (const auto& first : firsts) {
    lowbit::MseClipping<>::State exact_state;
    lowbit::MseClipping<>::observe(exact_state, lowbit::flat(first.data(), 2));
    lowbit::MseClipping<>::observe(exact_state, lowbit::flat(wide.data(), 1000));
    CHECK(mass(exact_state.histogram) == 1002);
    CHECK(exact_state.histogram.lo == -1000.0f);
    CHECK(exact_state.histogram.hi == 1000.0f);
    const lowbit::Range r = lowbit::MseClipping<>::range(exact_state, kQuint8Affine);
    CHECK(r.lo < 0.0f);
    CHECK(r.hi > 0.0f);

    lowbit::Histogram<>::State torch_state;
    lowbit::Histogram<>::observe(torch_state, lowbit::flat(first.data(), 2));
    lowbit::Histogram<>::observe(torch_state, lowbit::flat(wide.data(), 1000));
    const lowbit::Range t = lowbit::Histogram<>::range(torch_state, kQuint8Affine);
    CHECK(std::isfinite(t.lo));
    CHECK(std::isfinite(t.hi));
    CHECK(t.lo <= t.hi);
  }
}

TEST_CASE("Percentile: on a uniform ramp the clip lands within one bin of the true quantile") {
  // 100001 evenly spaced values over [-3, 3]: the q-quantile is -3 + 6q.
  constexpr int kN = 100001;
  std::vector<float> ramp(kN);
  for (int i = 0; i < kN; ++i)
    ramp[static_cast<std::size_t>(i)] = -3.0f + 6.0f * static_cast<float>(i) / (kN - 1);
  const double bin = 6.0 / 2048;

  const lowbit::Range r = estimate<lowbit::Percentile<99, 100>>(ramp, kQuint8Affine);
  CHECK(std::fabs(r.hi - 2.94) <= bin);
  CHECK(std::fabs(r.lo + 2.94) <= bin);
  const lowbit::Range tight = estimate<lowbit::Percentile<9999, 10000>>(ramp, kQuint8Affine);
  CHECK(std::fabs(tight.hi - 2.9994) <= bin);
  CHECK(std::fabs(tight.lo + 2.9994) <= bin);
  // N/D = 1 keeps everything: exactly the observed range.
  const lowbit::Range all = estimate<lowbit::Percentile<1, 1>>(ramp, kQuint8Affine);
  CHECK(all.lo == -3.0f);
  CHECK(all.hi == 3.0f);

  // The same ramp in ten batches that widen the range from the middle out: four re-binnings.
  lowbit::Percentile<99, 100>::State state;
  const int order[10] = {4, 5, 3, 6, 2, 7, 1, 8, 0, 9};
  for (int chunk : order) {
    const int first = chunk * (kN / 10), count = chunk == 9 ? kN - first : kN / 10;
    lowbit::Percentile<99, 100>::observe(state, lowbit::flat(ramp.data() + first, count));
  }
  const lowbit::Range streamed = lowbit::Percentile<99, 100>::range(state, kQuint8Affine);
  const double streamed_bin = (state.histogram.hi - state.histogram.lo) / 2048.0;
  CHECK(std::fabs(streamed.hi - 2.94) <= streamed_bin);
  CHECK(std::fabs(streamed.lo + 2.94) <= streamed_bin);
}

TEST_CASE("MseClipping: clips Gaussian outliers and beats MinMax's grid error") {
  const std::uint64_t seed = 7;
  INFO("seed " << seed);
  Random rng{seed};
  std::vector<float> x(20000);
  for (float& v : x) v = static_cast<float>(rng.gaussian());
  // Six outliers at +-40 (the Gaussian bulk stays inside +-5).
  for (int i = 0; i < 6; ++i) x[static_cast<std::size_t>(i * 3001)] = i % 2 ? 40.0f : -40.0f;

  // 4 bits: a step of 80/15 costs the 20000 bulk values ~2.4 each, far more than clamping six
  // outliers: the search shrinks to the end of its grid (p ~ 0.2, +-8.3).
  const lowbit::QuantGrid four_bit_grids[] = {{{0, 15}, false}, {{-8, 7}, true}};
  for (const lowbit::QuantGrid& grid : four_bit_grids) {
    CAPTURE(grid.codes.min);
    const lowbit::Range minmax = estimate<lowbit::MinMax>(x, grid);
    const lowbit::Range clipped = estimate<lowbit::MseClipping<>>(x, grid);
    CHECK(clipped.hi < 0.25f * minmax.hi);
    CHECK(clipped.lo > 0.25f * minmax.lo);
    CHECK(data_error(x, clipped, grid) < 0.5 * data_error(x, minmax, grid));
  }
  // 8 bits: rounding over the whole range costs ~164 in all, clamping the outliers ~5000, so the
  // range must stay almost whole, and never do worse than MinMax.
  const lowbit::Range minmax = estimate<lowbit::MinMax>(x, kQuint8Affine);
  const lowbit::Range kept = estimate<lowbit::MseClipping<>>(x, kQuint8Affine);
  CHECK(kept.hi >= 0.95f * minmax.hi);
  CHECK(data_error(x, kept, kQuint8Affine) <= data_error(x, minmax, kQuint8Affine));
}

TEST_CASE("MseClipping: on uniform data the range stays (nearly) whole") {
  const std::uint64_t seed = 11;
  INFO("seed " << seed);
  Random rng{seed};
  std::vector<float> x(20000);
  for (float& v : x) v = static_cast<float>(2.0 * rng.uniform() - 1.0);
  const lowbit::Range minmax = estimate<lowbit::MinMax>(x, kQuint8Affine);

  // With L steps, error(p) ~ p^2 / (3 L^2) (rounding) + (1 - p)^3 / 3 (clamping), minimal near
  // 1 - p ~ 0.8 / L, less because clamping only starts half a step past the range: below the
  // 0.008 grid step at 8 bits (so p = 1), a few percent at 4 bits.
  for (const lowbit::QuantGrid& grid : {kQuint8Affine, kQint8Symmetric}) {
    const lowbit::Range r = estimate<lowbit::MseClipping<>>(x, grid);
    if (grid.symmetric) CHECK(r.lo == -r.hi);  // candidates are [-p amax, p amax]
    CHECK(r.hi / minmax.hi >= 0.99f);
    CHECK(r.lo / minmax.lo >= 0.99f);
  }
  const lowbit::QuantGrid four_bits{{0, 15}, false};
  const lowbit::Range r4 = estimate<lowbit::MseClipping<>>(x, four_bits);
  const float p4 = r4.hi / minmax.hi;
  CHECK(p4 >= 0.9f);
  CHECK(p4 <= 0.99f);
  CHECK(data_error(x, r4, four_bits) < data_error(x, minmax, four_bits));
}
