// Observers against PyTorch 1.13 (tests/data/torch/observers, see tests/data/torch/README.md):
// MinMaxObserver, PerChannelMinMaxObserver and MovingAverageMinMaxObserver, then
// quantize_per_tensor / quantize_per_channel and dequantize. Everything here is exact.
//
// torch stores the same scheme with signed (qint8) or unsigned (quint8) codes; lowbit has one code
// type per scheme, so the other is checked through the exact offset between them:
//   affine:    qint8 codes = quint8 codes - 128 and zero points likewise (same scale);
//   symmetric: quint8 codes = qint8 codes + 128, torch's quint8 zero point is 128.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/calibrator.hpp"
#include "lowbit/quantizer.hpp"
#include "support/oracle.hpp"

namespace {

using lowbit_test::load;

using U8Affine = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor>;
using S8Symmetric = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, lowbit::PerTensor>;
using U8AffineChannel = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerChannel<0>>;
using S8SymmetricChannel =
    lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, lowbit::PerChannel<0>>;

// Quantizes x with Q's own parameters and checks scale, zero point, codes and dequantized values
// against one torch configuration, after shifting lowbit's codes and zero points by `offset`.
template <class Q>
void check_against_torch(const std::vector<float>& x, std::int64_t rows, std::int64_t cols,
                         const std::string& dir, std::int64_t case_index, int offset) {
  const auto view = lowbit::row_major(x.data() + case_index * rows * cols, rows, cols);
  const auto scale = load<float>(dir + "/scale.npy");
  const auto zp = load<std::int32_t>(dir + "/zero_point.npy");
  const auto codes_ref = load<std::int32_t>(dir + "/int_repr.npy");
  const auto dequant_ref = load<float>(dir + "/dequant.npy");

  lowbit::Result<lowbit::QuantParams> p = Q::compute_params(view);
  REQUIRE(p);
  const std::int64_t n_params = p->size();
  for (std::int64_t i = 0; i < n_params; ++i) {
    const auto k = static_cast<std::size_t>(case_index * n_params + i);
    CHECK(p->scale[static_cast<std::size_t>(i)] == scale[k]);
    CHECK(p->zero_point[static_cast<std::size_t>(i)] + offset == zp[k]);
  }
  std::vector<typename Q::code_type> codes(static_cast<std::size_t>(rows * cols));
  REQUIRE(Q::quantize(view, *p, lowbit::row_major(codes.data(), rows, cols)));
  std::vector<float> dequant(codes.size());
  REQUIRE(Q::dequantize(lowbit::row_major<const typename Q::code_type>(codes.data(), rows, cols), *p,
                        lowbit::row_major(dequant.data(), rows, cols)));
  int code_mismatches = 0, value_mismatches = 0;
  for (std::size_t i = 0; i < codes.size(); ++i) {
    const auto k = static_cast<std::size_t>(case_index * rows * cols) + i;
    code_mismatches += (codes[i] + offset != codes_ref[k]);
    value_mismatches += (dequant[i] != dequant_ref[k]);
  }
  CHECK(code_mismatches == 0);
  CHECK(value_mismatches == 0);
}

}  // namespace

TEST_CASE("torch MinMaxObserver and PerChannelMinMaxObserver, main input, 8 bits") {
  std::vector<std::int64_t> shape;
  const auto x = load<float>("torch/observers/main/x.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{64, 256});
  const std::string base = "torch/observers/main/";
  check_against_torch<U8Affine>(x, 64, 256, base + "minmax_quint8_affine", 0, 0);
  check_against_torch<U8Affine>(x, 64, 256, base + "minmax_qint8_affine", 0, -128);
  check_against_torch<S8Symmetric>(x, 64, 256, base + "minmax_qint8_symmetric", 0, 0);
  check_against_torch<S8Symmetric>(x, 64, 256, base + "minmax_quint8_symmetric", 0, 128);
  check_against_torch<U8AffineChannel>(x, 64, 256, base + "perchannel_quint8_affine", 0, 0);
  check_against_torch<U8AffineChannel>(x, 64, 256, base + "perchannel_qint8_affine", 0, -128);
  check_against_torch<S8SymmetricChannel>(x, 64, 256, base + "perchannel_qint8_symmetric", 0, 0);
  check_against_torch<S8SymmetricChannel>(x, 64, 256, base + "perchannel_quint8_symmetric", 0, 128);
}

TEST_CASE("torch observers on edge cases: zeros, constants, one value, signed zeros") {
  const auto x = load<float>("torch/observers/edge/x.npy");
  const std::string base = "torch/observers/edge/";
  for (std::int64_t e = 0; e < 5; ++e) {
    CAPTURE(e);
    check_against_torch<U8Affine>(x, 4, 16, base + "minmax_quint8_affine", e, 0);
    check_against_torch<U8Affine>(x, 4, 16, base + "minmax_qint8_affine", e, -128);
    check_against_torch<S8Symmetric>(x, 4, 16, base + "minmax_qint8_symmetric", e, 0);
    check_against_torch<S8Symmetric>(x, 4, 16, base + "minmax_quint8_symmetric", e, 128);
    check_against_torch<U8AffineChannel>(x, 4, 16, base + "perchannel_quint8_affine", e, 0);
    check_against_torch<U8AffineChannel>(x, 4, 16, base + "perchannel_qint8_affine", e, -128);
    check_against_torch<S8SymmetricChannel>(x, 4, 16, base + "perchannel_qint8_symmetric", e, 0);
    check_against_torch<S8SymmetricChannel>(x, 4, 16, base + "perchannel_quint8_symmetric", e, 128);
  }
}

// 4-bit custom ranges: torch's scale and zero point, then its fake quantization of the input.
TEST_CASE("torch MinMaxObserver with 4-bit ranges [0,15] and [-8,7]") {
  const auto x = load<float>("torch/observers/main/x.npy");
  const auto view = lowbit::row_major(x.data(), 64, 256);
  using U4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerTensor>;
  using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, lowbit::PerTensor>;
  struct Case {
    const char* dir;
    bool symmetric;
    int zp_offset;  // torch's zero point minus lowbit's
  };
  // torch's quint8 symmetric zero point on a custom range is (min + max) / 2 = 7, not 8: that
  // shifts the grid by one code, so only its scale is lowbit's; its fake quantization is
  // checked below with torch's zero point and range [0, 15].
  const Case cases[] = {{"minmax_quint8_0_15_affine", false, 0},
                        {"minmax_qint8_m8_7_affine", false, -8},
                        {"minmax_qint8_m8_7_symmetric", true, 0},
                        {"minmax_quint8_0_15_symmetric", true, 7}};
  for (const Case& c : cases) {
    CAPTURE(c.dir);
    const std::string dir = std::string("torch/observers/main/") + c.dir;
    const auto scale = load<float>(dir + "/scale.npy");
    const auto zp = load<std::int32_t>(dir + "/zero_point.npy");
    const auto fq_ref = load<float>(dir + "/fake_quant.npy");
    lowbit::Result<lowbit::QuantParams> p =
        c.symmetric ? S4::compute_params(view) : U4::compute_params(view);
    REQUIRE(p);
    CHECK(p->scale[0] == scale[0]);
    CHECK(p->zero_point[0] + c.zp_offset == zp[0]);
    // Fake quantization on torch's own grid: unsigned [0,15] with torch's zero point shifted into
    // it, or signed [-8,7] with torch's zero point.
    std::vector<float> out(x.size());
    const float s = scale[0];
    lowbit::Status st;
    if (std::string(c.dir).find("m8_7") != std::string::npos) {
      const std::int32_t z = zp[0];
      st = S4::fake_quantize(view, lowbit::QuantParamsView{&s, &z, 1, 1},
                             lowbit::row_major(out.data(), 64, 256));
    } else {
      const std::int32_t z = zp[0];
      st = U4::fake_quantize(view, lowbit::QuantParamsView{&s, &z, 1, 1},
                             lowbit::row_major(out.data(), 64, 256));
    }
    REQUIRE(st);
    int mismatches = 0;
    for (std::size_t i = 0; i < out.size(); ++i) mismatches += (out[i] != fq_ref[i]);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("torch MovingAverageMinMaxObserver over five batches, streamed through a Calibrator") {
  std::vector<std::int64_t> shape;
  const auto x = load<float>("torch/observers/batches/x.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{5, 32, 128});
  const std::int64_t rows = 32, cols = 128;

  using U8Avg = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor,
                                  lowbit::MovingAverageMinMax<>>;
  using S8Avg = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, lowbit::PerTensor,
                                  lowbit::MovingAverageMinMax<>>;
  auto run = [&](auto tag, const std::string& dir, int offset) {
    using Q = decltype(tag);
    const auto running = load<float>(dir + "/running_minmax.npy");
    const auto scale = load<float>(dir + "/scale.npy");
    const auto zp = load<std::int32_t>(dir + "/zero_point.npy");
    const auto codes_ref = load<std::int32_t>(dir + "/int_repr.npy");
    const auto dequant_ref = load<float>(dir + "/dequant.npy");
    lowbit::Calibrator<Q> calib;
    for (std::int64_t b = 0; b < 5; ++b) {
      CAPTURE(b);
      REQUIRE(calib.observe(lowbit::row_major(x.data() + b * rows * cols, rows, cols)));
      CHECK(calib.state(0).lo == running[static_cast<std::size_t>(2 * b)]);
      CHECK(calib.state(0).hi == running[static_cast<std::size_t>(2 * b + 1)]);
    }
    lowbit::Result<lowbit::QuantParams> p = calib.freeze();
    REQUIRE(p);
    CHECK(p->scale[0] == scale[0]);
    CHECK(p->zero_point[0] + offset == zp[0]);
    // The frozen parameters applied to all five batches at once.
    const auto all = lowbit::row_major(x.data(), 5 * rows, cols);
    std::vector<typename Q::code_type> codes(x.size());
    REQUIRE(Q::quantize(all, *p, lowbit::row_major(codes.data(), 5 * rows, cols)));
    std::vector<float> dq(x.size());
    REQUIRE(Q::dequantize(lowbit::row_major<const typename Q::code_type>(codes.data(), 5 * rows, cols),
                          *p, lowbit::row_major(dq.data(), 5 * rows, cols)));
    int mismatches = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
      mismatches += (codes[i] + offset != codes_ref[i]) + (dq[i] != dequant_ref[i]);
    CHECK(mismatches == 0);
  };
  run(U8Avg{}, "torch/observers/batches/movingavg_quint8_affine", 0);
  run(S8Avg{}, "torch/observers/batches/movingavg_qint8_symmetric", 0);
}
