// Quantizer properties over bit widths, symmetries and granularities, and its answers to bad input.
// Expected values are derived from the definitions (real = scale * (q - zp)), never from lowbit.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lowbit/calibrator.hpp"
#include "lowbit/quantizer.hpp"
#include "support/random.hpp"

namespace {

constexpr std::uint32_t kSeed = 20261123;

using lowbit_test::gaussian;

template <class Q>
struct Quantized {
  lowbit::QuantParams params;
  std::vector<typename Q::code_type> codes;
  std::vector<float> dequant;
};

template <class Q>
Quantized<Q> round_trip(lowbit::MatrixView<const float> x, const typename Q::granularity& g = {}) {
  Quantized<Q> out;
  lowbit::Result<lowbit::QuantParams> p = Q::compute_params(x, g);
  REQUIRE(p);
  out.params = *p;
  out.codes.resize(static_cast<std::size_t>(x.size()));
  out.dequant.resize(static_cast<std::size_t>(x.size()));
  const auto codes = lowbit::row_major(out.codes.data(), x.rows(), x.cols());
  REQUIRE(Q::quantize(x, out.params, codes, g));
  REQUIRE(Q::dequantize(lowbit::MatrixView<const typename Q::code_type>(codes), out.params,
                        lowbit::row_major(out.dequant.data(), x.rows(), x.cols()), g));
  return out;
}

// With min-max ranges every element lies inside the clamp range, so each reconstruction is within
// half a step of the input (plus float rounding of the product scale * (q - zp)), every code is in
// range, and zero maps to a code that dequantizes to exactly 0.
template <class Q>
void check_round_trip_properties(std::int64_t rows, std::int64_t cols,
                                 const typename Q::granularity& g = {}) {
  CAPTURE(Q::kBits);
  CAPTURE(Q::kCodes.min);
  CAPTURE(Q::kCodes.max);
  std::vector<float> x = gaussian(rows * cols, 0.7f, kSeed + static_cast<std::uint32_t>(Q::kBits), 0.1f);
  x[3] = 0.0f;
  const auto view = lowbit::row_major<const float>(x.data(), rows, cols);
  const Quantized<Q> q = round_trip<Q>(view, g);
  const lowbit::BlockShape block = g.block(rows, cols);
  const std::int64_t grid_cols = cols / block.cols;
  int too_far = 0, bad_codes = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const auto k = static_cast<std::size_t>(r * cols + c);
      const auto i = static_cast<std::size_t>((r / block.rows) * grid_cols + c / block.cols);
      const float step = q.params.scale[i];
      too_far += std::fabs(q.dequant[k] - x[k]) > 0.5f * step * (1.0f + 1e-5f);
      bad_codes += q.codes[k] < Q::kCodes.min || q.codes[k] > Q::kCodes.max;
    }
  }
  CHECK(too_far == 0);
  CHECK(bad_codes == 0);
  CHECK(q.dequant[3] == 0.0f);
}

}  // namespace

TEST_CASE("round trip within half a step, every width and scheme, every granularity") {
  MESSAGE("seed ", kSeed);
  using lowbit::Bits;
  using G = lowbit::PerGroup<32>;
  check_round_trip_properties<lowbit::Quantizer<Bits<1>, lowbit::Asymmetric, lowbit::PerTensor>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<2>, lowbit::Asymmetric, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<3>, lowbit::Asymmetric, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<4>, lowbit::Asymmetric, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<5>, lowbit::Asymmetric, lowbit::PerChannel<0>>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<6>, lowbit::Asymmetric, lowbit::PerChannel<1>>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<7>, lowbit::Asymmetric, lowbit::PerToken>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<8>, lowbit::Asymmetric, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<2>, lowbit::SymmetricRestricted, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<3>, lowbit::SymmetricRestricted, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<4>, lowbit::SymmetricRestricted, G>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<8>, lowbit::SymmetricRestricted, lowbit::PerToken>>(8, 64);
  check_round_trip_properties<lowbit::Quantizer<Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<lowbit::kDynamicGroup>>>(
      8, 64, lowbit::PerGroup<lowbit::kDynamicGroup>{16});
}

// torch's symmetric scale divides max|x| by (max - min)/2 = 2^(b-1) - 0.5, so +max|x| lands half
// a step beyond the top code and is clamped: up to one full step of error there, as in torch.
TEST_CASE("Symmetric: error within half a step except at the clamped top, one step there") {
  using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, lowbit::PerTensor>;
  std::vector<float> x = gaussian(256, 1.0f, kSeed);
  const auto view = lowbit::flat<const float>(x.data(), 256);
  const Quantized<S4> q = round_trip<S4>(view);
  const float step = q.params.scale[0];
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool clamped = x[i] / step > 7.5f;
    CHECK(std::fabs(q.dequant[i] - x[i]) <= (clamped ? 1.0f : 0.5f) * step * (1.0f + 1e-5f));
  }
}

TEST_CASE("SymmetricRestricted: codes of -x are the negated codes of x") {
  using S3 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::SymmetricRestricted, lowbit::PerChannel<0>>;
  std::vector<float> x = gaussian(4 * 100, 1.0f, kSeed + 1);
  std::vector<float> neg(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) neg[i] = -x[i];
  const Quantized<S3> a = round_trip<S3>(lowbit::row_major<const float>(x.data(), 4, 100));
  const Quantized<S3> b = round_trip<S3>(lowbit::row_major<const float>(neg.data(), 4, 100));
  CHECK(a.params.scale == b.params.scale);
  int mismatches = 0;
  for (std::size_t i = 0; i < x.size(); ++i) mismatches += a.codes[i] != -b.codes[i];
  CHECK(mismatches == 0);
  CHECK(S3::kCodes.min == -3);
  CHECK(S3::kCodes.max == 3);
}

TEST_CASE("fake_quantize is idempotent and quantize(dequantize(q)) == q at fixed parameters") {
  using A5 = lowbit::Quantizer<lowbit::Bits<5>, lowbit::Asymmetric, lowbit::PerGroup<16>>;
  std::vector<float> x = gaussian(3 * 64, 2.0f, kSeed + 2, -0.3f);
  const auto view = lowbit::row_major<const float>(x.data(), 3, 64);
  const Quantized<A5> q = round_trip<A5>(view);
  std::vector<float> once(x.size()), twice(x.size());
  REQUIRE(A5::fake_quantize(view, q.params, lowbit::row_major(once.data(), 3, 64)));
  CHECK(once == q.dequant);  // fake quantization equals quantize then dequantize
  REQUIRE(A5::fake_quantize(lowbit::row_major<const float>(once.data(), 3, 64), q.params,
                            lowbit::row_major(twice.data(), 3, 64)));
  CHECK(once == twice);
  std::vector<std::uint8_t> codes_again(x.size());
  REQUIRE(A5::quantize(lowbit::row_major<const float>(q.dequant.data(), 3, 64), q.params,
                       lowbit::row_major(codes_again.data(), 3, 64)));
  CHECK(codes_again == q.codes);
}

TEST_CASE("scaling the input by a power of two keeps the codes and scales the parameters") {
  using A4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerChannel<0>>;
  std::vector<float> x = gaussian(4 * 64, 1.0f, kSeed + 3, 0.2f);
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * 8.0f;
  const Quantized<A4> a = round_trip<A4>(lowbit::row_major<const float>(x.data(), 4, 64));
  const Quantized<A4> b = round_trip<A4>(lowbit::row_major<const float>(y.data(), 4, 64));
  CHECK(a.codes == b.codes);
  CHECK(a.params.zero_point == b.params.zero_point);
  for (std::size_t i = 0; i < 4; ++i) CHECK(b.params.scale[i] == 8.0f * a.params.scale[i]);
}

TEST_CASE("strided and column-major inputs quantize like their row-major copy") {
  using A4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
  const std::int64_t rows = 5, cols = 24, ld = 29;
  std::vector<float> x = gaussian(rows * cols, 1.0f, kSeed + 4);
  std::vector<float> padded(static_cast<std::size_t>(rows * ld), std::nanf(""));  // padding is NaN
  std::vector<float> colmajor(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      padded[static_cast<std::size_t>(r * ld + c)] = x[static_cast<std::size_t>(r * cols + c)];
      colmajor[static_cast<std::size_t>(c * rows + r)] = x[static_cast<std::size_t>(r * cols + c)];
    }
  }
  const Quantized<A4> a = round_trip<A4>(lowbit::row_major<const float>(x.data(), rows, cols));
  const Quantized<A4> b = round_trip<A4>(lowbit::strided_rows<const float>(padded.data(), rows, cols, ld));
  const Quantized<A4> c = round_trip<A4>(lowbit::col_major<const float>(colmajor.data(), rows, cols));
  CHECK(a.codes == b.codes);
  CHECK(a.codes == c.codes);
  CHECK(a.params.scale == b.params.scale);
  CHECK(a.params.scale == c.params.scale);
}

TEST_CASE("all-equal, all-zero and extreme-magnitude tensors get defined parameters") {
  using A8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor>;
  using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::SymmetricRestricted, lowbit::PerTensor>;
  const float values[] = {0.0f, 0.3f, -1.7f, 1e-30f, -1e-30f, 1e30f, -1e30f, 3e38f};
  for (float v : values) {
    CAPTURE(v);
    std::vector<float> x(16, v);
    const auto view = lowbit::flat<const float>(x.data(), 16);
    const Quantized<A8> a = round_trip<A8>(view);
    const Quantized<S4> s = round_trip<S4>(view);
    CHECK(std::isfinite(a.params.scale[0]));
    CHECK(a.params.scale[0] >= lowbit::kScaleFloor);
    for (std::size_t i = 0; i < x.size(); ++i) {
      CHECK(std::fabs(a.dequant[i] - v) <= 0.5f * a.params.scale[0] * (1.0f + 1e-5f));
      CHECK(std::fabs(s.dequant[i] - v) <= 0.5f * s.params.scale[0] * (1.0f + 1e-5f));
    }
  }
  // Zero: torch's convention, scale = eps and the zero point at the bottom of the range.
  std::vector<float> zeros(8, 0.0f);
  lowbit::Result<lowbit::QuantParams> p = A8::compute_params(lowbit::flat<const float>(zeros.data(), 8));
  REQUIRE(p);
  CHECK(p->scale[0] == lowbit::kScaleFloor);
  CHECK(p->zero_point[0] == 0);
}

TEST_CASE("bad input gets a specific Status, never undefined behaviour") {
  using A4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<4>>;
  std::vector<float> x = gaussian(2 * 8, 1.0f, kSeed + 5);
  auto view = lowbit::row_major<const float>(x.data(), 2, 8);
  std::vector<std::uint8_t> codes(16);
  std::vector<float> out(16);

  SUBCASE("NaN and Inf, with their flat index") {
    x[13] = std::nanf("");
    lowbit::Result<lowbit::QuantParams> p = A4::compute_params(view);
    CHECK(p.status().code() == lowbit::Errc::kNonFinite);
    CHECK(p.status().index() == 13);
    x[13] = 0.0f;
    x[6] = -std::numeric_limits<float>::infinity();
    CHECK(A4::compute_params(view).status().index() == 6);
  }
  SUBCASE("empty tensors") {
    CHECK(A4::compute_params(lowbit::row_major<const float>(x.data(), 0, 8)).status().code() ==
          lowbit::Errc::kEmpty);
    CHECK(A4::compute_params(lowbit::row_major<const float>(nullptr, 2, 0)).status().code() ==
          lowbit::Errc::kEmpty);
  }
  SUBCASE("a group size that does not divide the columns") {
    CHECK(A4::compute_params(lowbit::row_major<const float>(x.data(), 2, 6)).status().code() ==
          lowbit::Errc::kIndivisible);
    using Dyn = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric,
                                  lowbit::PerGroup<lowbit::kDynamicGroup>>;
    CHECK(Dyn::compute_params(view, {3}).status().code() == lowbit::Errc::kIndivisible);
    CHECK(Dyn::compute_params(view, {0}).status().code() == lowbit::Errc::kInvalidArgument);
    CHECK(Dyn::compute_params(view, {8}));
  }
  SUBCASE("mismatched output shapes and parameter grids") {
    lowbit::Result<lowbit::QuantParams> p = A4::compute_params(view);
    REQUIRE(p);
    CHECK(A4::quantize(view, *p, lowbit::row_major(codes.data(), 2, 7)).code() ==
          lowbit::Errc::kShapeMismatch);
    CHECK(A4::fake_quantize(view, *p, lowbit::row_major(out.data(), 4, 4)).code() ==
          lowbit::Errc::kShapeMismatch);
    lowbit::QuantParams wrong(2, 1);
    wrong.scale = {1.0f, 1.0f};
    CHECK(A4::quantize(view, wrong, lowbit::row_major(codes.data(), 2, 8)).code() ==
          lowbit::Errc::kShapeMismatch);
  }
  SUBCASE("caller-provided scales that are zero, negative, NaN or subnormal") {
    lowbit::Result<lowbit::QuantParams> p = A4::compute_params(view);
    REQUIRE(p);
    for (float bad : {0.0f, -1.0f, std::nanf(""), 1e-45f}) {
      CAPTURE(bad);
      lowbit::QuantParams q = *p;
      q.scale[3] = bad;
      const lowbit::Status s = A4::quantize(view, q, lowbit::row_major(codes.data(), 2, 8));
      CHECK(s.code() == lowbit::Errc::kInvalidArgument);
      CHECK(s.index() == 3);
    }
  }
  SUBCASE("a range whose width overflows float32") {
    x[0] = 3e38f;
    x[1] = -3e38f;
    lowbit::Result<lowbit::QuantParams> p = A4::compute_params(view);
    CHECK(p.status().code() == lowbit::Errc::kOutOfRange);
    CHECK(p.status().index() == 0);  // the parameter block
  }
  SUBCASE("huge values far outside the range clamp without integer overflow") {
    const float s = 1e-3f;
    const std::int32_t z = 8;
    std::vector<float> big = {1e30f, -1e30f, 3e38f, -3e38f};
    std::vector<std::uint8_t> c(4);
    using A4t = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerTensor>;
    REQUIRE(A4t::quantize(lowbit::flat<const float>(big.data(), 4), {&s, &z, 1, 1},
                          lowbit::flat(c.data(), 4)));
    CHECK(c == std::vector<std::uint8_t>{15, 0, 15, 0});
  }
}

TEST_CASE("Calibrator: streaming min/max equals one-shot, and shape errors") {
  using A8c = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerChannel<1>>;
  std::vector<float> x = gaussian(30 * 16, 1.0f, kSeed + 6);
  lowbit::Calibrator<A8c> calib;
  CHECK(calib.freeze().status().code() == lowbit::Errc::kNotCalibrated);
  // Batches of 10, 15 and 5 tokens.
  REQUIRE(calib.observe(lowbit::row_major<const float>(x.data(), 10, 16)));
  REQUIRE(calib.observe(lowbit::row_major<const float>(x.data() + 160, 15, 16)));
  REQUIRE(calib.observe(lowbit::row_major<const float>(x.data() + 400, 5, 16)));
  CHECK(calib.batches() == 3);
  CHECK(calib.observe(lowbit::row_major<const float>(x.data(), 10, 8)).code() ==
        lowbit::Errc::kShapeMismatch);
  lowbit::Result<lowbit::QuantParams> streamed = calib.freeze();
  lowbit::Result<lowbit::QuantParams> once = A8c::compute_params(lowbit::row_major<const float>(x.data(), 30, 16));
  REQUIRE(streamed);
  REQUIRE(once);
  CHECK(streamed->scale == once->scale);
  CHECK(streamed->zero_point == once->zero_point);

  using A8r = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerChannel<0>>;
  lowbit::Calibrator<A8r> rows;
  REQUIRE(rows.observe(lowbit::row_major<const float>(x.data(), 1, 16)));
  CHECK(rows.observe(lowbit::row_major<const float>(x.data(), 2, 16)).code() ==
        lowbit::Errc::kShapeMismatch);
}

TEST_CASE("RoundHalfToEven equals nearbyint (up to the sign of zero) over ties and magnitudes") {
  int mismatches = 0;
  auto check = [&](float x) {
    const float want = std::nearbyint(x), got = lowbit::RoundHalfToEven::round(x);
    mismatches += !(got == want);  // == treats -0 and +0 alike
  };
  for (int k = -70000; k <= 70000; ++k) {
    const float t = static_cast<float>(k) + 0.5f;  // exact ties
    check(t);
    check(std::nextafter(t, 1e9f));
    check(std::nextafter(t, -1e9f));
    check(static_cast<float>(k) * 0.37f);
  }
  for (float x : {4194303.5f, 4194304.0f, 4194304.5f, -4194304.5f, 8388607.5f, 1e9f, -1e30f, 0.0f,
                  -0.0f, 0.49999997f, -0.49999997f, 1.5f, 2.5f, -2.5f})
    check(x);
  CHECK(mismatches == 0);
  CHECK(std::isnan(lowbit::RoundHalfToEven::round(std::nanf(""))));
  CHECK(std::isinf(lowbit::RoundHalfToEven::round(INFINITY)));
}
