// Fake quantization, its straight-through gradient and the LSQ gradients against PyTorch 1.13
// (tests/data/torch/fakequant and tests/data/torch/lsq; see tests/data/torch/README.md).
// The inputs hold exact ties, values where x*(1/s) and x/s round apart, and values far outside
// the range, so the conventions (reciprocal multiply, ties to even, mask on the unclamped level,
// torch's two zero points in the per-tensor LSQ backward) are each pinned by some element.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/lsq.hpp"
#include "lowbit/quantizer.hpp"
#include "support/oracle.hpp"

namespace {

using lowbit_test::load;

// The five code ranges of the oracle, each the code range of one lowbit quantizer.
template <class Granularity>
struct Ranges {
  using U8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, Granularity>;
  using S8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, Granularity>;
  using U4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, Granularity>;
  using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, Granularity>;
  using S2 = lowbit::Quantizer<lowbit::Bits<2>, lowbit::Symmetric, Granularity>;
};

// Calls f(Q{}, name) for the quantizer whose code range is the oracle's range `name`.
template <class Granularity, class F>
void for_each_range(F&& f) {
  using R = Ranges<Granularity>;
  f(typename R::U8{}, std::string("r_0_255"));
  f(typename R::S8{}, std::string("r_m128_127"));
  f(typename R::U4{}, std::string("r_0_15"));
  f(typename R::S4{}, std::string("r_m8_7"));
  f(typename R::S2{}, std::string("r_m2_1"));
}

int count_mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  int n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += (a[i] != b[i]);
  return n;
}

// Float32 sums torch reduced in its own order: 1e-5 relative, or 1e-6 absolute near zero.
void check_sum(float got, float want) {
  CHECK(std::fabs(got - want) <= std::fmax(1e-5f * std::fabs(want), 1e-6f));
}

}  // namespace

TEST_CASE("torch fake_quantize_per_tensor_affine: forward and STE gradient") {
  const char* configs[] = {"zp0_s0p0371", "zp0_s0p0625", "zp5_s0p0371", "zp5_s0p0625",
                           "zp128_s0p0371", "zp128_s0p0625", "zp37_s0p0371", "zp37_s0p0625",
                           "zp3_s0p0371", "zp3_s0p0625", "zp8_s0p0371", "zp8_s0p0625",
                           "zpm3_s0p0371", "zpm3_s0p0625", "zpm1_s0p0371", "zpm1_s0p0625"};
  int cases_run = 0;
  for_each_range<lowbit::PerTensor>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    for (const char* config : configs) {
      const std::string dir = "torch/fakequant/per_tensor/" + range + "_" + config;
      if (!lowbit_test::load_npy(dir + "/x.npy").error.empty()) continue;  // not this range's
      CAPTURE(dir);
      ++cases_run;
      const auto x = load<float>(dir + "/x.npy");
      const auto g = load<float>(dir + "/G.npy");
      const auto params = load<double>(dir + "/params.npy");
      const auto out_ref = load<float>(dir + "/out.npy");
      const auto grad_ref = load<float>(dir + "/grad_x.npy");
      REQUIRE(params[2] == Q::kCodes.min);
      REQUIRE(params[3] == Q::kCodes.max);
      const float scale = static_cast<float>(params[0]);
      const auto zp = static_cast<std::int32_t>(params[1]);
      const lowbit::QuantParamsView p{&scale, &zp, 1, 1};
      const auto n = static_cast<std::int64_t>(x.size());
      std::vector<float> out(x.size()), grad(x.size());
      REQUIRE(Q::fake_quantize(lowbit::flat(x.data(), n), p, lowbit::flat(out.data(), n)));
      REQUIRE(Q::fake_quantize_backward(lowbit::flat(x.data(), n), p, lowbit::flat(g.data(), n),
                                        lowbit::flat(grad.data(), n)));
      CHECK(count_mismatches(out, out_ref) == 0);
      CHECK(count_mismatches(grad, grad_ref) == 0);
    }
  });
  CHECK(cases_run == 20);
}

TEST_CASE("torch fake_quantize_per_channel_affine: forward and STE gradient") {
  for_each_range<lowbit::PerChannel<0>>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    const std::string dir = "torch/fakequant/per_channel/" + range;
    CAPTURE(dir);
    std::vector<std::int64_t> shape;
    const auto x = load<float>(dir + "/x.npy", &shape);
    REQUIRE(shape.size() == 2);
    const auto g = load<float>(dir + "/G.npy");
    const auto scale = load<float>(dir + "/scale.npy");
    const auto zp = load<std::int32_t>(dir + "/zero_point.npy");
    const auto out_ref = load<float>(dir + "/out.npy");
    const auto grad_ref = load<float>(dir + "/grad_x.npy");
    const std::int64_t rows = shape[0], cols = shape[1];
    const lowbit::QuantParamsView p{scale.data(), zp.data(), rows, 1};
    std::vector<float> out(x.size()), grad(x.size());
    REQUIRE(Q::fake_quantize(lowbit::row_major(x.data(), rows, cols), p,
                             lowbit::row_major(out.data(), rows, cols)));
    REQUIRE(Q::fake_quantize_backward(lowbit::row_major(x.data(), rows, cols), p,
                                      lowbit::row_major(g.data(), rows, cols),
                                      lowbit::row_major(grad.data(), rows, cols)));
    CHECK(count_mismatches(out, out_ref) == 0);
    CHECK(count_mismatches(grad, grad_ref) == 0);
  });
}

TEST_CASE("torch _fake_quantize_learnable_per_tensor_affine: LSQ forward and gradients") {
  const auto x = load<float>("torch/lsq/x.npy");
  const auto g = load<float>("torch/lsq/G.npy");
  REQUIRE(x.size() == 512);
  const auto view = lowbit::row_major(x.data(), 8, 64);
  const auto gview = lowbit::row_major(g.data(), 8, 64);
  int cases_run = 0;
  for_each_range<lowbit::PerTensor>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    for (const char* gf : {"gf1", "gfl"}) {
      for (const char* zp : {"zp0", "zp1", "zp2"}) {
        const std::string dir = "torch/lsq/per_tensor/" + range + "_" + gf + "_" + zp;
        CAPTURE(dir);
        ++cases_run;
        // params = [scale, zero_point, grad_factor, zp used forward, zp used backward]
        const auto params = load<double>(dir + "/params.npy");
        const auto out_ref = load<float>(dir + "/out.npy");
        const auto grad_x_ref = load<float>(dir + "/grad_x.npy");
        const auto grad_q_ref = load<float>(dir + "/grad_qparams.npy");
        const float scale = static_cast<float>(params[0]);
        const float zero_point = static_cast<float>(params[1]);
        const float grad_factor = static_cast<float>(params[2]);
        if (std::string(gf) == "gfl")
          CHECK(grad_factor == doctest::Approx(lowbit::lsq_grad_factor(512, Q::kCodes.max)));
        const lowbit::LearnableParamsView p{&scale, &zero_point, 1, 1};
        std::vector<float> out(512), grad_x(512);
        float grad_scale = 0, grad_zp = 0;
        REQUIRE(lowbit::lsq_forward<Q>(view, p, lowbit::row_major(out.data(), 8, 64)));
        REQUIRE(lowbit::lsq_backward<Q>(view, p, gview, grad_factor,
                                        lowbit::row_major(grad_x.data(), 8, 64),
                                        {&grad_scale, &grad_zp}));
        CHECK(count_mismatches(out, out_ref) == 0);
        CHECK(count_mismatches(grad_x, grad_x_ref) == 0);
        check_sum(grad_scale, grad_q_ref[0]);
        check_sum(grad_zp, grad_q_ref[1]);
      }
    }
  });
  CHECK(cases_run == 30);
}

TEST_CASE("torch _fake_quantize_learnable_per_channel_affine: LSQ forward and gradients") {
  const auto x = load<float>("torch/lsq/x.npy");
  const auto g = load<float>("torch/lsq/G.npy");
  const auto view = lowbit::row_major(x.data(), 8, 64);
  const auto gview = lowbit::row_major(g.data(), 8, 64);
  for_each_range<lowbit::PerChannel<0>>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    for (const char* gf : {"gf1", "gfl"}) {
      const std::string dir = "torch/lsq/per_channel/" + range + "_" + gf;
      CAPTURE(dir);
      const auto scale = load<float>(dir + "/scale.npy");
      const auto zero_point = load<float>(dir + "/zero_point.npy");
      const auto grad_factor = static_cast<float>(load<double>(dir + "/grad_factor.npy")[0]);
      const auto out_ref = load<float>(dir + "/out.npy");
      const auto grad_x_ref = load<float>(dir + "/grad_x.npy");
      const auto grad_scale_ref = load<float>(dir + "/grad_scale.npy");
      const auto grad_zp_ref = load<float>(dir + "/grad_zero_point.npy");
      const lowbit::LearnableParamsView p{scale.data(), zero_point.data(), 8, 1};
      std::vector<float> out(512), grad_x(512), grad_scale(8), grad_zp(8);
      REQUIRE(lowbit::lsq_forward<Q>(view, p, lowbit::row_major(out.data(), 8, 64)));
      REQUIRE(lowbit::lsq_backward<Q>(view, p, gview, grad_factor,
                                      lowbit::row_major(grad_x.data(), 8, 64),
                                      {grad_scale.data(), grad_zp.data()}));
      CHECK(count_mismatches(out, out_ref) == 0);
      CHECK(count_mismatches(grad_x, grad_x_ref) == 0);
      for (std::size_t c = 0; c < 8; ++c) {
        CAPTURE(c);
        check_sum(grad_scale[c], grad_scale_ref[c]);
        check_sum(grad_zp[c], grad_zp_ref[c]);
      }
    }
  });
}
