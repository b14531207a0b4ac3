// QuantizedTensor (dense storage and size accounting) and the variance-preserving γ.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "lowbit/algo/gamma.hpp"
#include "lowbit/quantized_tensor.hpp"
#include "support/random.hpp"

namespace {

constexpr std::uint32_t kSeed = 7321;

std::vector<float> gaussian(std::size_t n, std::uint32_t seed) {
  return lowbit_test::gaussian(static_cast<std::int64_t>(n), 1.0f, seed);
}

double std_dev(const std::vector<float>& v) {
  double mean = 0;
  for (float x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double sq = 0;
  for (float x : v) sq += (x - mean) * (x - mean);
  return std::sqrt(sq / static_cast<double>(v.size()));
}

template <class Q>
void check_dense_tensor(std::int64_t rows, std::int64_t cols) {
  CAPTURE(Q::kBits);
  const std::vector<float> x = gaussian(static_cast<std::size_t>(rows * cols), kSeed);
  const auto view = lowbit::row_major(x.data(), rows, cols);
  lowbit::Result<lowbit::QuantizedTensor<Q>> q = Q::quantize(view);
  REQUIRE(q);
  // Stored densely: exactly ceil(n * bits / 8) bytes of codes.
  CHECK(q->code_bytes() == static_cast<std::size_t>((rows * cols * Q::kBits + 7) / 8));
  // Same values as the unpacked path.
  std::vector<float> a(x.size()), b(x.size());
  REQUIRE(q->dequantize(lowbit::row_major(a.data(), rows, cols)));
  REQUIRE(Q::fake_quantize(view, q->params(), lowbit::row_major(b.data(), rows, cols)));
  CHECK(a == b);
}

}  // namespace

TEST_CASE("QuantizedTensor stores codes densely and dequantizes like fake_quantize") {
  MESSAGE("seed ", kSeed);
  using lowbit::Bits;
  check_dense_tensor<lowbit::Quantizer<Bits<2>, lowbit::Asymmetric, lowbit::PerGroup<16>>>(7, 64);
  check_dense_tensor<lowbit::Quantizer<Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<16>>>(7, 64);
  check_dense_tensor<lowbit::Quantizer<Bits<5>, lowbit::SymmetricRestricted, lowbit::PerChannel<0>>>(5, 33);
  check_dense_tensor<lowbit::Quantizer<Bits<7>, lowbit::Symmetric, lowbit::PerTensor>>(3, 11);
  check_dense_tensor<lowbit::Quantizer<Bits<8>, lowbit::Asymmetric, lowbit::PerToken>>(4, 9);
}

TEST_CASE("bits per weight counts codes, float32 scales and asymmetric zero points") {
  using A3 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
  using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::SymmetricRestricted, lowbit::PerGroup<32>>;
  const std::vector<float> x = gaussian(64 * 256, kSeed + 1);
  const auto view = lowbit::row_major(x.data(), 64, 256);
  lowbit::Result<lowbit::QuantizedTensor<A3>> a = A3::quantize(view);
  lowbit::Result<lowbit::QuantizedTensor<S4>> s = S4::quantize(view);
  REQUIRE(a);
  REQUIRE(s);
  // 128 groups: 3 bits per code, 32 bits of scale and 3 of zero point per 128 codes.
  CHECK(a->size_bytes() == 64 * 256 * 3 / 8 + 128 * 4 + 128 * 3 / 8);
  CHECK(a->bits_per_weight() == doctest::Approx(3.0 + 35.0 / 128.0));
  // Symmetric: zero points are implicit.
  CHECK(s->bits_per_weight() == doctest::Approx(4.0 + 32.0 / 32.0));
}

TEST_CASE("gamma restores the standard deviation of the dequantized tensor") {
  using W2 = lowbit::Quantizer<lowbit::Bits<2>, lowbit::Asymmetric, lowbit::PerGroup<64>>;
  using W2g = lowbit::VariancePreserving<W2>;
  const std::vector<float> x = gaussian(32 * 256, kSeed + 2);
  const auto view = lowbit::row_major(x.data(), 32, 256);
  lowbit::Result<lowbit::QuantizedTensor<W2>> plain = W2::quantize(view);
  lowbit::Result<lowbit::QuantizedTensor<W2>> scaled = W2g::quantize(view);
  REQUIRE(plain);
  REQUIRE(scaled);
  std::vector<float> xq(x.size()), xg(x.size()), fq(x.size());
  REQUIRE(plain->dequantize(lowbit::row_major(xq.data(), 32, 256)));
  REQUIRE(scaled->dequantize(lowbit::row_major(xg.data(), 32, 256)));
  const double sd = std_dev(x), sd_plain = std_dev(xq), sd_gamma = std_dev(xg);
  MESSAGE("std: original ", sd, ", 2-bit RTN ", sd_plain, ", with gamma ", sd_gamma);
  CHECK(std::fabs(sd_plain - sd) > 1e-3 * sd);  // 2-bit rounding really changed the spread
  CHECK(sd_gamma == doctest::Approx(sd).epsilon(1e-5));
  // The codes are the same; only the scales carry γ.
  CHECK(plain->packed() == scaled->packed());
  // fake_quantize with γ gives the same tensor, up to the rounding of s*γ vs γ*(q - zp)*s.
  REQUIRE(W2g::fake_quantize(view, plain->params(), lowbit::row_major(fq.data(), 32, 256)));
  CHECK(std_dev(fq) == doctest::Approx(sd).epsilon(1e-5));
}

TEST_CASE("gamma of a tensor that quantizes to a constant is 1") {
  using W1 = lowbit::Quantizer<lowbit::Bits<1>, lowbit::Asymmetric, lowbit::PerTensor>;
  std::vector<float> x(10, 0.25f);
  lowbit::Result<lowbit::QuantParams> p = W1::compute_params(lowbit::flat<const float>(x.data(), 10));
  REQUIRE(p);
  lowbit::Result<float> g = lowbit::VariancePreserving<W1>::gamma(lowbit::flat<const float>(x.data(), 10), *p);
  REQUIRE(g);
  CHECK(*g == 1.0f);
  lowbit::QuantParams q = *p;
  CHECK(lowbit::VariancePreserving<W1>::apply_gamma(q, 0.0f).code() == lowbit::Errc::kInvalidArgument);
}
