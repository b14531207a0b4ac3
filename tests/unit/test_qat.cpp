// FakeQuantLinear (lowbit/qat.hpp): gradients, the torch oracles through the layer, PEQA, the
// activation observer, a learning test, export bit-exactness, scale safety and divergence reports.
//
// What each kind of check can see:
//   * the linear algebra (dX, dW, db) against central finite differences of a double
//     re-implementation, with fake quantization off (a finite difference cannot see an STE);
//   * the STE and LSQ/LSQ+ gradients element by element against PyTorch 1.13
//     (tests/data/torch/fakequant, tests/data/torch/lsq; see tests/data/torch/README.md), pushed
//     through the layer: the oracle's tensor is the layer's weight and the input is the identity,
//     so dŴ = dYᵀ·I is the oracle's upstream gradient G exactly (or the oracle's tensor is the
//     input and the weight the identity);
//   * PEQA's scale gradient against finite differences (with the codes frozen the forward is
//     differentiable in s: an exact check).
#include <doctest/doctest.h>

#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lowbit/qat.hpp"
#include "support/oracle.hpp"
#include "support/random.hpp"
#include "support/status.hpp"

namespace {

using lowbit::Errc;
using lowbit::FakeQuantLinear;
using lowbit::row_major;
using lowbit_test::load;
using lowbit_test::require_ok;
using lowbit_test::value_of;

template <class G>
using U8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, G>;
template <class G>
using S8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, G>;
template <class G>
using U4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, G>;
template <class G>
using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, G>;
template <class G>
using S2 = lowbit::Quantizer<lowbit::Bits<2>, lowbit::Symmetric, G>;

// Calls f(Q{}, name) for the lowbit quantizer of each oracle code range.
template <class G, class F>
void for_each_range(F&& f) {
  f(U8<G>{}, std::string("r_0_255"));
  f(S8<G>{}, std::string("r_m128_127"));
  f(U4<G>{}, std::string("r_0_15"));
  f(S4<G>{}, std::string("r_m8_7"));
  f(S2<G>{}, std::string("r_m2_1"));
}

std::vector<float> identity(std::int64_t n) {
  std::vector<float> e(static_cast<std::size_t>(n * n), 0.0f);
  for (std::int64_t i = 0; i < n; ++i) e[static_cast<std::size_t>(i * n + i)] = 1.0f;
  return e;
}

std::vector<float> transpose(const std::vector<float>& a, std::int64_t rows, std::int64_t cols) {
  std::vector<float> t(a.size());
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      t[static_cast<std::size_t>(c * rows + r)] = a[static_cast<std::size_t>(r * cols + c)];
  return t;
}

int count_mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  int n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += !(a[i] == b[i]);
  return n;
}

// Float32 sums torch reduced in its own order: 1e-5 relative, or 1e-6 absolute near zero (the
// tolerance of test_torch_fakequant.cpp).
bool close_sum(float got, float want) {
  return std::fabs(got - want) <= std::fmax(1e-5f * std::fabs(want), 1e-6f);
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::fmax(m, std::fabs(x));
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// (a) The linear algebra, fake quantization off.

TEST_CASE("FakeQuantLinear without fake quant: dX, dW, db match central differences") {
  const std::int64_t tokens = 5, in = 12, out = 7;
  std::printf("test_qat: seeds 11..14\n");
  const auto w = lowbit_test::gaussian(out * in, 0.3f, 11);
  const auto b = lowbit_test::gaussian(out, 0.1f, 12);
  const auto x = lowbit_test::gaussian(tokens * in, 1.0f, 13);
  const auto target = lowbit_test::gaussian(tokens * out, 1.0f, 14);
  using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<4>>;
  using A8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor,
                               lowbit::MovingAverageMinMax<>>;
  auto layer = value_of(FakeQuantLinear<W4, A8>::create(row_major(w.data(), out, in), b.data()));
  layer.set_fake_quant(false, false);
  std::vector<float> y(static_cast<std::size_t>(tokens * out)), dy(y.size()), dx(x.size());
  require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
  for (std::size_t i = 0; i < y.size(); ++i) dy[i] = y[i] - target[i];  // L = ½‖Y − T‖²
  require_ok(layer.backward(row_major<const float>(dy.data(), tokens, out),
                            row_major(dx.data(), tokens, in)));

  // The same function in double: L(x, w, b) = ½ Σ (x·wᵀ + b − t)².
  std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()), bd(b.begin(), b.end());
  auto loss = [&]() {
    double l = 0.0;
    for (std::int64_t t = 0; t < tokens; ++t)
      for (std::int64_t o = 0; o < out; ++o) {
        double acc = bd[static_cast<std::size_t>(o)];
        for (std::int64_t k = 0; k < in; ++k)
          acc +=
              xd[static_cast<std::size_t>(t * in + k)] * wd[static_cast<std::size_t>(o * in + k)];
        const double e = acc - target[static_cast<std::size_t>(t * out + o)];
        l += 0.5 * e * e;
      }
    return l;
  };
  // The forward is that function: Y within float32 rounding of the double one.
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = bd[static_cast<std::size_t>(o)];
      for (std::int64_t k = 0; k < in; ++k)
        acc += xd[static_cast<std::size_t>(t * in + k)] * wd[static_cast<std::size_t>(o * in + k)];
      CHECK(std::fabs(y[static_cast<std::size_t>(t * out + o)] - acc) <=
            1e-5 * (1.0 + std::fabs(acc)));
    }
  // Central differences: L is quadratic in each variable, so they are exact up to rounding.
  auto numeric = [&](std::vector<double>& v) {
    std::vector<double> g(v.size());
    const double h = 1e-3;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double up = loss();
      v[i] = keep - h;
      const double down = loss();
      v[i] = keep;
      g[i] = (up - down) / (2 * h);
    }
    return g;
  };
  auto compare = [](const std::vector<float>& analytic, const std::vector<double>& fd) {
    REQUIRE(analytic.size() == fd.size());
    const double tol = 1e-5 * (1.0 + max_abs(fd));
    int bad = 0;
    for (std::size_t i = 0; i < fd.size(); ++i) bad += !(std::fabs(analytic[i] - fd[i]) <= tol);
    return bad;
  };
  CHECK(compare(dx, numeric(xd)) == 0);
  CHECK(compare(layer.grad_weight(), numeric(wd)) == 0);
  CHECK(compare(layer.grad_bias(), numeric(bd)) == 0);

  // Gradients accumulate across backward calls and zero_grad resets them.
  const std::vector<float> once = layer.grad_weight();
  require_ok(
      layer.backward(row_major<const float>(dy.data(), tokens, out), lowbit::MatrixView<float>{}));
  for (std::size_t i = 0; i < once.size(); ++i) CHECK(layer.grad_weight()[i] == 2.0f * once[i]);
  layer.zero_grad();
  for (float g : layer.grad_weight()) CHECK(g == 0.0f);
}

// ---------------------------------------------------------------------------------------------
// (b) STE and LSQ against torch, through the layer.

namespace {

// Weight side, frozen parameters (kWeightsOnly): W = the oracle's x (rows, cols), X = I_cols, so
// Y = Ŵᵀ and, with dY = Gᵀ, dŴ = G: the layer's dW must be torch's STE grad_x.
template <class Q>
void check_weight_ste(const std::vector<float>& x, const std::vector<float>& g, std::int64_t rows,
                      std::int64_t cols, const std::vector<float>& scale,
                      const std::vector<float>& zp, const std::vector<float>& out_ref,
                      const std::vector<float>& grad_ref) {
  lowbit::QatOptions o;
  o.mode = lowbit::QatMode::kWeightsOnly;
  auto layer = value_of(FakeQuantLinear<Q>::create(row_major(x.data(), rows, cols), nullptr, o));
  require_ok(layer.set_weight_params(scale.data(), zp.data()));
  const auto eye = identity(cols);
  std::vector<float> y(static_cast<std::size_t>(cols * rows));
  require_ok(layer.forward(row_major(eye.data(), cols, cols), row_major(y.data(), cols, rows)));
  const auto gt = transpose(g, rows, cols);
  require_ok(layer.backward(row_major(gt.data(), cols, rows), lowbit::MatrixView<float>{}));
  CHECK(count_mismatches(layer.fake_weight(), out_ref) == 0);
  CHECK(count_mismatches(transpose(y, cols, rows), out_ref) == 0);
  CHECK(count_mismatches(layer.grad_weight(), grad_ref) == 0);
}

// Activation side, frozen parameters: X = the oracle's x (rows, cols), W = I_cols with weight
// fake quant off, so Y = X̂ and dX̂ = dY = G: dX must be torch's STE grad_x.
template <class Q>
void check_activation_ste(const std::vector<float>& x, const std::vector<float>& g,
                          std::int64_t rows, std::int64_t cols, float scale, float zp,
                          const std::vector<float>& out_ref, const std::vector<float>& grad_ref) {
  using W8 = U8<lowbit::PerChannel<0>>;
  const auto eye = identity(cols);
  auto layer = value_of(FakeQuantLinear<W8, Q>::create(row_major(eye.data(), cols, cols), nullptr));
  layer.set_fake_quant(false, true);
  require_ok(layer.set_activation_params(&scale, &zp));
  std::vector<float> y(x.size()), dx(x.size());
  require_ok(layer.forward(row_major(x.data(), rows, cols), row_major(y.data(), rows, cols)));
  require_ok(layer.backward(row_major(g.data(), rows, cols), row_major(dx.data(), rows, cols)));
  CHECK(count_mismatches(y, out_ref) == 0);
  CHECK(count_mismatches(dx, grad_ref) == 0);
}

}  // namespace

TEST_CASE("FakeQuantLinear STE gradients equal torch fake_quantize_per_tensor_affine's") {
  const char* configs[] = {"zp0_s0p0371",   "zp0_s0p0625",   "zp5_s0p0371",  "zp5_s0p0625",
                           "zp128_s0p0371", "zp128_s0p0625", "zp37_s0p0371", "zp37_s0p0625",
                           "zp3_s0p0371",   "zp3_s0p0625",   "zp8_s0p0371",  "zp8_s0p0625",
                           "zpm3_s0p0371",  "zpm3_s0p0625",  "zpm1_s0p0371", "zpm1_s0p0625"};
  int cases = 0;
  for_each_range<lowbit::PerTensor>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    for (const char* config : configs) {
      const std::string dir = "torch/fakequant/per_tensor/" + range + "_" + config;
      if (!lowbit_test::load_npy(dir + "/x.npy").error.empty()) continue;  // another range's
      const auto params = load<double>(dir + "/params.npy");  // [scale, zp, qmin, qmax]
      // Symmetric lowbit grids keep zero point 0 (their formats store none): the other torch
      // cases have no lowbit layer to run through.
      if (Q::symmetry::kSymmetric && params[1] != 0.0) continue;
      CAPTURE(dir);
      ++cases;
      const auto x = load<float>(dir + "/x.npy");
      const auto g = load<float>(dir + "/G.npy");
      const auto out_ref = load<float>(dir + "/out.npy");
      const auto grad_ref = load<float>(dir + "/grad_x.npy");
      const auto n = static_cast<std::int64_t>(x.size());
      const float scale = static_cast<float>(params[0]), zp = static_cast<float>(params[1]);
      check_weight_ste<Q>(x, g, 1, n, {scale}, {zp}, out_ref, grad_ref);
      check_activation_ste<Q>(x, g, 1, n, scale, zp, out_ref, grad_ref);
    }
  });
  CHECK(cases == 14);  // 8 asymmetric + 6 symmetric with zero point 0, of torch's 20
}

TEST_CASE("FakeQuantLinear STE gradients equal torch fake_quantize_per_channel_affine's") {
  int cases = 0;
  for_each_range<lowbit::PerChannel<0>>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    const std::string dir = "torch/fakequant/per_channel/" + range;
    const auto zp_i = load<std::int32_t>(dir + "/zero_point.npy");
    bool all_zero = true;
    for (std::int32_t z : zp_i) all_zero = all_zero && z == 0;
    if (Q::symmetry::kSymmetric && !all_zero) return;  // signed grids with z != 0: see above
    CAPTURE(dir);
    ++cases;
    std::vector<std::int64_t> shape;
    const auto x = load<float>(dir + "/x.npy", &shape);
    REQUIRE(shape.size() == 2);
    const auto scale = load<float>(dir + "/scale.npy");
    const std::vector<float> zp(zp_i.begin(), zp_i.end());
    check_weight_ste<Q>(x, load<float>(dir + "/G.npy"), shape[0], shape[1], scale, zp,
                        load<float>(dir + "/out.npy"), load<float>(dir + "/grad_x.npy"));
  });
  CHECK(cases == 2);  // r_0_255 and r_0_15
}

namespace {

lowbit::LsqGradScale grad_scale_of(const std::string& gf, lowbit::LsqGradScale per_tensor) {
  return gf == "gf1" ? lowbit::LsqGradScale::kNone : per_tensor;
}

// Weight side in kFull (and kScaleOnly) mode: dW = torch's grad_x, ds/dz = torch's sums.
template <class Q>
void check_weight_lsq(const std::vector<float>& x, const std::vector<float>& g,
                      lowbit::LsqGradScale gs, const std::vector<float>& scale,
                      const std::vector<float>& zp, const std::vector<float>& out_ref,
                      const std::vector<float>& grad_x_ref,
                      const std::vector<float>& grad_scale_ref,
                      const std::vector<float>& grad_zp_ref) {
  const std::int64_t rows = 8, cols = 64;
  const auto eye = identity(cols);
  const auto gt = transpose(g, rows, cols);
  for (lowbit::QatMode mode : {lowbit::QatMode::kFull, lowbit::QatMode::kScaleOnly}) {
    CAPTURE(static_cast<int>(mode));
    lowbit::QatOptions o;
    o.mode = mode;
    o.grad_scale = gs;
    auto layer = value_of(FakeQuantLinear<Q>::create(row_major(x.data(), rows, cols), nullptr, o));
    require_ok(
        layer.set_weight_params(scale.data(), Q::symmetry::kSymmetric ? nullptr : zp.data()));
    std::vector<float> y(static_cast<std::size_t>(cols * rows));
    require_ok(layer.forward(row_major(eye.data(), cols, cols), row_major(y.data(), cols, rows)));
    require_ok(layer.backward(row_major(gt.data(), cols, rows), lowbit::MatrixView<float>{}));
    CHECK(count_mismatches(transpose(y, cols, rows), out_ref) == 0);
    if (mode == lowbit::QatMode::kFull) {
      CHECK(count_mismatches(layer.grad_weight(), grad_x_ref) == 0);
    } else {
      for (float v : layer.grad_weight()) CHECK(v == 0.0f);  // W frozen
    }
    for (std::size_t c = 0; c < grad_scale_ref.size(); ++c) {
      CAPTURE(c);
      CHECK(close_sum(layer.grad_weight_scale()[c], grad_scale_ref[c]));
      if (!Q::symmetry::kSymmetric)
        CHECK(close_sum(layer.grad_weight_zero_point()[c], grad_zp_ref[c]));
    }
  }
}

}  // namespace

TEST_CASE("FakeQuantLinear LSQ/LSQ+ weight gradients equal torch's learnable fake quant") {
  const auto x = load<float>("torch/lsq/x.npy");
  const auto g = load<float>("torch/lsq/G.npy");
  REQUIRE(x.size() == 512);
  int per_tensor = 0, per_channel = 0;
  for_each_range<lowbit::PerTensor>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    for (const char* gf : {"gf1", "gfl"})
      for (const char* zpn : {"zp0", "zp1", "zp2"}) {
        const std::string dir = "torch/lsq/per_tensor/" + range + "_" + gf + "_" + zpn;
        const auto params = load<double>(dir + "/params.npy");  // [scale, zp, gf, zp fwd, zp bwd]
        if (Q::symmetry::kSymmetric && params[1] != 0.0) continue;
        CAPTURE(dir);
        ++per_tensor;
        const auto gq = load<float>(dir + "/grad_qparams.npy");
        // For PerTensor the block is the tensor: kPerBlock and kPerTensor both give torch's gfl.
        check_weight_lsq<Q>(x, g, grad_scale_of(gf, lowbit::LsqGradScale::kPerBlock),
                            {static_cast<float>(params[0])}, {static_cast<float>(params[1])},
                            load<float>(dir + "/out.npy"), load<float>(dir + "/grad_x.npy"),
                            {gq[0]}, {gq[1]});
      }
  });
  for_each_range<lowbit::PerChannel<0>>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    if (Q::symmetry::kSymmetric) return;  // the oracle's signed cases all have z != 0
    for (const char* gf : {"gf1", "gfl"}) {
      const std::string dir = "torch/lsq/per_channel/" + range + "_" + gf;
      CAPTURE(dir);
      ++per_channel;
      // torch's gfl normalises by the whole tensor (512), not the channel (64): kPerTensor.
      check_weight_lsq<Q>(x, g, grad_scale_of(gf, lowbit::LsqGradScale::kPerTensor),
                          load<float>(dir + "/scale.npy"), load<float>(dir + "/zero_point.npy"),
                          load<float>(dir + "/out.npy"), load<float>(dir + "/grad_x.npy"),
                          load<float>(dir + "/grad_scale.npy"),
                          load<float>(dir + "/grad_zero_point.npy"));
    }
  });
  CHECK(per_tensor == 18);  // 12 asymmetric + 6 symmetric with zero point 0, of 30
  CHECK(per_channel == 4);  // r_0_255 and r_0_15, gf1 and gfl, of 10
}

TEST_CASE(
    "FakeQuantLinear learnable activation scale: gradients equal torch's learnable fake quant") {
  const auto x = load<float>("torch/lsq/x.npy");
  const auto g = load<float>("torch/lsq/G.npy");
  const std::int64_t tokens = 8, in = 64;
  const auto eye = identity(in);
  int cases = 0;
  for_each_range<lowbit::PerTensor>([&](auto tag, const std::string& range) {
    using Q = decltype(tag);
    for (const char* gf : {"gf1", "gfl"})
      for (const char* zpn : {"zp0", "zp1", "zp2"}) {
        const std::string dir = "torch/lsq/per_tensor/" + range + "_" + gf + "_" + zpn;
        const auto params = load<double>(dir + "/params.npy");
        if (Q::symmetry::kSymmetric && params[1] != 0.0) continue;
        CAPTURE(dir);
        ++cases;
        lowbit::QatOptions o;
        o.learn_activation_scale = true;
        // The activation block is the whole (8, 64) batch: 512 elements, torch's gfl.
        o.grad_scale = grad_scale_of(gf, lowbit::LsqGradScale::kPerBlock);
        using W8 = U8<lowbit::PerChannel<0>>;
        auto layer =
            value_of(FakeQuantLinear<W8, Q>::create(row_major(eye.data(), in, in), nullptr, o));
        layer.set_fake_quant(false, true);
        const float scale = static_cast<float>(params[0]), zp = static_cast<float>(params[1]);
        require_ok(layer.set_activation_params(&scale, Q::symmetry::kSymmetric ? nullptr : &zp));
        std::vector<float> y(x.size()), dx(x.size());
        require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, in)));
        require_ok(
            layer.backward(row_major(g.data(), tokens, in), row_major(dx.data(), tokens, in)));
        const auto gq = load<float>(dir + "/grad_qparams.npy");
        CHECK(count_mismatches(y, load<float>(dir + "/out.npy")) == 0);
        CHECK(count_mismatches(dx, load<float>(dir + "/grad_x.npy")) == 0);
        CHECK(close_sum(layer.grad_activation_scale()[0], gq[0]));
        if (!Q::symmetry::kSymmetric)
          CHECK(close_sum(layer.grad_activation_zero_point()[0], gq[1]));
        // The learnable activation parameters are offered to the optimizer.
        bool listed = false;
        for (const lowbit::ParamView& p : layer.parameters())
          listed = listed || std::string(p.name) == "activation_scale";
        CHECK(listed);
      }
  });
  CHECK(cases == 18);
}

// ---------------------------------------------------------------------------------------------
// The activation observer against torch's MovingAverageMinMaxObserver.

TEST_CASE("FakeQuantLinear activation observer: moving average during warm-up, then frozen") {
  const auto x = load<float>("torch/observers/batches/x.npy");  // 5 batches of (32, 128)
  const std::int64_t rows = 32, cols = 128;
  const auto eye = identity(cols);
  auto run = [&](auto tag, const std::string& dir) {
    using Q = decltype(tag);
    CAPTURE(dir);
    const auto running = load<float>(dir + "/running_minmax.npy");  // [lo, hi] after batch b
    const auto scale_ref = load<float>(dir + "/scale.npy");
    const auto zp_ref = load<std::int32_t>(dir + "/zero_point.npy");
    const auto dequant_ref = load<float>(dir + "/dequant.npy");  // final params on all batches
    using W8 = U8<lowbit::PerChannel<0>>;
    auto batch = [&](std::int64_t b) { return row_major(x.data() + b * rows * cols, rows, cols); };
    std::vector<float> y(static_cast<std::size_t>(rows * cols));

    // Warm-up of 5: the frozen parameters are torch's after its five batches.
    lowbit::QatOptions o;
    o.activation_warmup_steps = 5;
    auto layer =
        value_of(FakeQuantLinear<W8, Q>::create(row_major(eye.data(), cols, cols), nullptr, o));
    layer.set_fake_quant(false, true);
    for (std::int64_t b = 0; b < 5; ++b) {
      CHECK(!layer.observer_frozen());
      require_ok(layer.forward(batch(b), row_major(y.data(), rows, cols)));
    }
    CHECK(layer.observer_frozen());
    CHECK(layer.observed_steps() == 5);
    lowbit::QuantParams p = value_of(layer.activation_params());
    CHECK(p.scale[0] == scale_ref[0]);
    CHECK(p.zero_point[0] == zp_ref[0]);
    // Frozen: more training batches change nothing, and X̂ is torch's dequantized batch.
    for (std::int64_t b = 0; b < 5; ++b) {
      require_ok(layer.forward(batch(b), row_major(y.data(), rows, cols)));
      const std::vector<float> ref(dequant_ref.begin() + b * rows * cols,
                                   dequant_ref.begin() + (b + 1) * rows * cols);
      CHECK(count_mismatches(y, ref) == 0);
    }
    CHECK(layer.observed_steps() == 5);
    CHECK(value_of(layer.activation_params()).scale[0] == scale_ref[0]);

    // Warm-up of 3: frozen at torch's running range after batch 3, whatever follows. The
    // parameters of that range, by torch's _calculate_qparams (shared oracle README section 1).
    o.activation_warmup_steps = 3;
    auto early =
        value_of(FakeQuantLinear<W8, Q>::create(row_major(eye.data(), cols, cols), nullptr, o));
    early.set_fake_quant(false, true);
    for (std::int64_t b = 0; b < 5; ++b)
      require_ok(early.forward(batch(b), row_major(y.data(), rows, cols)));
    const float lo = std::fmin(running[4], 0.0f), hi = std::fmax(running[5], 0.0f);
    float scale;
    std::int32_t zp;
    if (Q::symmetry::kSymmetric) {
      scale = std::fmax(std::fmax(-lo, hi) / (255.0f / 2.0f), FLT_EPSILON);
      zp = 0;
    } else {
      scale = std::fmax((hi - lo) / 255.0f, FLT_EPSILON);
      zp = static_cast<std::int32_t>(
          std::fmin(std::fmax(0.0f - std::nearbyint(lo / scale), 0.0f), 255.0f));
    }
    p = value_of(early.activation_params());
    CHECK(p.scale[0] == scale);
    CHECK(p.zero_point[0] == zp);
    CHECK(early.observed_steps() == 3);
  };
  using S8Avg = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, lowbit::PerTensor,
                                  lowbit::MovingAverageMinMax<>>;
  using U8Avg = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor,
                                  lowbit::MovingAverageMinMax<>>;
  run(U8Avg{}, "torch/observers/batches/movingavg_quint8_affine");
  run(S8Avg{}, "torch/observers/batches/movingavg_qint8_symmetric");
}

// ---------------------------------------------------------------------------------------------
// (c) PEQA: with the codes frozen the forward is differentiable in s.

TEST_CASE("FakeQuantLinear PEQA: the scale gradient is the exact derivative") {
  const std::int64_t tokens = 6, in = 16, out = 5;
  using W3 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
  std::printf("test_qat: PEQA seeds 21..24\n");
  const auto w = lowbit_test::gaussian(out * in, 0.5f, 21);
  const auto b = lowbit_test::gaussian(out, 0.1f, 22);
  const auto x = lowbit_test::gaussian(tokens * in, 1.0f, 23);
  const auto target = lowbit_test::gaussian(tokens * out, 1.0f, 24);
  lowbit::QatOptions o;
  o.mode = lowbit::QatMode::kPeqa;
  auto layer = value_of(FakeQuantLinear<W3>::create(row_major(w.data(), out, in), b.data(), o));
  const std::vector<std::uint8_t> codes = layer.frozen_codes();
  REQUIRE(codes.size() == w.size());
  std::vector<float> y(static_cast<std::size_t>(tokens * out)), dy(y.size());
  require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
  for (std::size_t i = 0; i < y.size(); ++i) dy[i] = y[i] - target[i];
  require_ok(
      layer.backward(row_major<const float>(dy.data(), tokens, out), lowbit::MatrixView<float>{}));
  const std::vector<float> ds = layer.grad_weight_scale();
  REQUIRE(ds.size() == 10);

  // Double re-implementation: Ŵ = s·(q − z), Y = X·Ŵᵀ + b, L = ½‖Y − T‖².
  std::vector<double> s(layer.weight_scale().begin(), layer.weight_scale().end());
  const std::vector<float> z = layer.weight_zero_point();
  auto forward_d = [&](std::vector<double>& yd) {
    yd.assign(static_cast<std::size_t>(tokens * out), 0.0);
    for (std::int64_t t = 0; t < tokens; ++t)
      for (std::int64_t r = 0; r < out; ++r) {
        double acc = b[static_cast<std::size_t>(r)];
        for (std::int64_t c = 0; c < in; ++c) {
          const auto i = static_cast<std::size_t>(r * 2 + c / 8);
          const double wh =
              s[i] * (codes[static_cast<std::size_t>(r * in + c)] - static_cast<double>(z[i]));
          acc += x[static_cast<std::size_t>(t * in + c)] * wh;
        }
        yd[static_cast<std::size_t>(t * out + r)] = acc;
      }
  };
  auto loss_d = [&]() {
    std::vector<double> yd;
    forward_d(yd);
    double l = 0.0;
    for (std::size_t i = 0; i < yd.size(); ++i)
      l += 0.5 * (yd[i] - target[i]) * (yd[i] - target[i]);
    return l;
  };
  std::vector<double> yd;
  forward_d(yd);
  for (std::size_t i = 0; i < y.size(); ++i)
    CHECK(std::fabs(y[i] - yd[i]) <= 1e-5 * (1.0 + std::fabs(yd[i])));
  std::vector<double> fd(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const double keep = s[i], h = 1e-3 * keep;
    s[i] = keep + h;
    const double up = loss_d();
    s[i] = keep - h;
    const double down = loss_d();
    s[i] = keep;
    fd[i] = (up - down) / (2 * h);
  }
  const double tol = 1e-5 * (1.0 + max_abs(fd));
  for (std::size_t i = 0; i < s.size(); ++i) {
    CAPTURE(i);
    CHECK(std::fabs(ds[i] - fd[i]) <= tol);
  }

  // The same through the layer itself (float32 forward, loss in double), by perturbing the scale
  // through its ParamView: coarser, because Y is rounded to float32.
  std::vector<lowbit::ParamView> params = layer.parameters();
  REQUIRE(params.size() == 1);  // PEQA trains the scales only
  CHECK(std::string(params[0].name) == "weight_scale");
  auto loss_layer = [&]() {
    REQUIRE(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
    double l = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i)
      l += 0.5 * (double(y[i]) - target[i]) * (double(y[i]) - target[i]);
    return l;
  };
  for (std::int64_t i = 0; i < params[0].size; ++i) {
    CAPTURE(i);
    const float keep = params[0].value[i], h = 1e-2f * keep;
    params[0].value[i] = keep + h;
    const double up = loss_layer();
    params[0].value[i] = keep - h;
    const double down = loss_layer();
    params[0].value[i] = keep;
    const double numeric = (up - down) / (double(keep + h) - double(keep - h));
    CHECK(std::fabs(ds[static_cast<std::size_t>(i)] - numeric) <= 1e-3 * (1.0 + max_abs(fd)));
  }
  CHECK(layer.frozen_codes() == codes);  // scales moved, codes did not
}

// ---------------------------------------------------------------------------------------------
// QAT reduces the output error of a quantized layer (a real learning test).

namespace {

struct TeacherData {
  std::int64_t in = 256, out = 16, train = 128, test = 128;
  std::vector<float> w, x_train, y_train, x_test, y_test;
};

// Correlated inputs: tokens near a 12-dimensional subspace plus noise, three loud features (as
// LLM activations have), through a fixed fp32 teacher.
TeacherData make_teacher(std::uint32_t seed) {
  TeacherData d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  d.w.resize(static_cast<std::size_t>(d.out * d.in));
  for (std::int64_t r = 0; r < d.out; ++r)
    for (std::int64_t c = 0; c < d.in; ++c)
      d.w[static_cast<std::size_t>(r * d.in + c)] =
          n01(rng) * (0.5f + 0.25f * static_cast<float>(r % 4)) / 16.0f;
  const std::int64_t rank = 12;
  std::vector<float> mix(static_cast<std::size_t>(rank * d.in));
  for (float& v : mix) v = n01(rng);
  auto inputs = [&](std::int64_t tokens, std::vector<float>& x) {
    x.assign(static_cast<std::size_t>(tokens * d.in), 0.0f);
    for (std::int64_t t = 0; t < tokens; ++t) {
      float latent[12];
      for (float& l : latent) l = n01(rng);
      for (std::int64_t c = 0; c < d.in; ++c) {
        float v = 0.3f * n01(rng);
        for (std::int64_t k = 0; k < rank; ++k)
          v += latent[k] * mix[static_cast<std::size_t>(k * d.in + c)] / 3.0f;
        if (c == 7 || c == 100 || c == 201) v *= 6.0f;
        x[static_cast<std::size_t>(t * d.in + c)] = v;
      }
    }
  };
  inputs(d.train, d.x_train);
  inputs(d.test, d.x_test);
  auto teacher = [&](const std::vector<float>& x, std::int64_t tokens, std::vector<float>& y) {
    y.resize(static_cast<std::size_t>(tokens * d.out));
    REQUIRE(lowbit::linear_forward(row_major(x.data(), tokens, d.in),
                                   row_major(d.w.data(), d.out, d.in), nullptr,
                                   row_major(y.data(), tokens, d.out)));
  };
  teacher(d.x_train, d.train, d.y_train);
  teacher(d.x_test, d.test, d.y_test);
  return d;
}

double mse(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return s / static_cast<double>(a.size());
}

// Trains a layer of quantizer W on the teacher's outputs (MSE) with AdamW and a warm-up + cosine
// schedule; returns the held-out output MSE before (RTN: the initial min-max layer) and after.
template <class W>
std::pair<double, double> distill(const TeacherData& d, lowbit::QatMode mode, int steps, double lr,
                                  float scale_lr_scale) {
  lowbit::QatOptions o;
  o.mode = mode;
  auto layer = value_of(FakeQuantLinear<W>::create(row_major(d.w.data(), d.out, d.in), nullptr, o));
  std::vector<float> y_test(d.y_test.size()), y(d.y_train.size()), dy(y.size());
  auto eval = [&]() {
    layer.set_training(false);
    REQUIRE(layer.forward(row_major(d.x_test.data(), d.test, d.in),
                          row_major(y_test.data(), d.test, d.out)));
    layer.set_training(true);
    return mse(y_test, d.y_test);
  };
  const double before = eval();
  std::vector<lowbit::ParamView> params = layer.parameters();
  for (lowbit::ParamView& p : params) {
    const std::string name = p.name;
    if (name == "weight_scale" || name == "weight_zero_point") p.lr_scale = scale_lr_scale;
  }
  lowbit::AdamWOptions ao;
  ao.lr = lr;
  ao.weight_decay = 0.0;
  auto opt = value_of(lowbit::AdamW::create(params, ao));
  auto schedule = value_of(lowbit::WarmupCosineSchedule::create(lr, steps / 10, steps, lr * 0.05));
  lowbit::TrainingGuard guard;
  for (int step = 0; step < steps; ++step) {
    layer.zero_grad();
    require_ok(layer.forward(row_major(d.x_train.data(), d.train, d.in),
                             row_major(y.data(), d.train, d.out)));
    const double n = static_cast<double>(y.size());
    double loss = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      const double e = double(y[i]) - d.y_train[i];
      loss += e * e / n;
      dy[i] = static_cast<float>(2.0 * e / n);
    }
    require_ok(guard.check_loss(step, loss));
    require_ok(layer.backward(row_major<const float>(dy.data(), d.train, d.out),
                              lowbit::MatrixView<float>{}));
    require_ok(guard.check_gradients(step, params));
    require_ok(opt.set_lr(schedule.lr(step)));
    require_ok(opt.step());
    layer.clamp_scales();
    require_ok(guard.check_scales(step, layer.weight_scale().data(),
                                  layer.initial_weight_scale().data(),
                                  static_cast<std::int64_t>(layer.weight_scale().size())));
  }
  return {before, eval()};
}

}  // namespace

TEST_CASE("QAT reduces a W3 g128 / W2 g64 layer's output error well below RTN's") {
  const auto start = std::chrono::steady_clock::now();
  std::printf("test_qat: teacher seed 31\n");
  const TeacherData d = make_teacher(31);
  using W3 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
  using W2 = lowbit::Quantizer<lowbit::Bits<2>, lowbit::Asymmetric, lowbit::PerGroup<64>>;
  double signal = 0.0;
  for (float v : d.y_test) signal += double(v) * v;
  signal /= static_cast<double>(d.y_test.size());
  const auto w3_full = distill<W3>(d, lowbit::QatMode::kFull, 150, 2e-3, 0.25f);
  const auto w2_full = distill<W2>(d, lowbit::QatMode::kFull, 150, 2e-3, 0.25f);
  const auto w3_peqa = distill<W3>(d, lowbit::QatMode::kPeqa, 100, 2e-3, 1.0f);
  const auto w3_lsq = distill<W3>(d, lowbit::QatMode::kScaleOnly, 100, 2e-3, 1.0f);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("test_qat: held-out output MSE (mean y^2 = %.3e), %.2f s for the four runs\n", signal,
              seconds);
  std::printf(
      "  W3 g128  RTN %.4e   QAT full, 150 steps %.4e (x%.3f)   PEQA, 100 steps %.4e (x%.3f)   "
      "LSQ scale-only, 100 steps %.4e (x%.3f)\n",
      w3_full.first, w3_full.second, w3_full.second / w3_full.first, w3_peqa.second,
      w3_peqa.second / w3_peqa.first, w3_lsq.second, w3_lsq.second / w3_lsq.first);
  std::printf("  W2 g64   RTN %.4e   QAT full, 150 steps %.4e (x%.3f)\n", w2_full.first,
              w2_full.second, w2_full.second / w2_full.first);
  CHECK(w3_full.second < 0.5 * w3_full.first);
  CHECK(w2_full.second < 0.5 * w2_full.first);
  CHECK(w3_peqa.second < w3_peqa.first);
  CHECK(w3_lsq.second < w3_lsq.first);
}

// ---------------------------------------------------------------------------------------------
// Export: the packed layer is, bit for bit, what the fake-quant forward used.

namespace {

template <class W, class A>
void check_export(lowbit::QatMode mode, std::uint32_t seed) {
  const std::int64_t tokens = 9, in = 64, out = 12;
  CAPTURE(seed);
  const auto w = lowbit_test::gaussian(out * in, 0.2f, seed);
  const auto b = lowbit_test::gaussian(out, 0.1f, seed + 1);
  const auto x = lowbit_test::gaussian(tokens * in, 1.0f, seed + 2);
  lowbit::QatOptions o;
  o.mode = mode;
  o.activation_warmup_steps = 2;
  auto layer = value_of(FakeQuantLinear<W, A>::create(row_major(w.data(), out, in), b.data(), o));
  auto opt = value_of(lowbit::AdamW::create(layer.parameters(), lowbit::AdamWOptions{}));
  std::vector<float> y(static_cast<std::size_t>(tokens * out)), dy(y.size());
  for (int step = 0; step < 6; ++step) {  // move W, s and z off their initial values
    layer.zero_grad();
    require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
    for (std::size_t i = 0; i < y.size(); ++i) dy[i] = y[i] - 0.5f * static_cast<float>(i % 3);
    require_ok(layer.backward(row_major<const float>(dy.data(), tokens, out),
                              lowbit::MatrixView<float>{}));
    require_ok(opt.step());
    layer.clamp_scales();
  }
  layer.set_training(false);
  require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));

  const lowbit::QuantizedTensor<W> q = value_of(layer.export_weights());
  std::vector<float> w_deq(w.size());
  require_ok(q.dequantize(row_major(w_deq.data(), out, in)));
  CHECK(count_mismatches(w_deq, layer.fake_weight()) == 0);
  // Re-running the product on the exported weights (and exported activation parameters).
  std::vector<float> xq = x;
  if constexpr (!std::is_same<A, lowbit::NoActivationQuant>::value) {
    const lowbit::QuantParams ap = value_of(layer.activation_params());
    require_ok(
        A::fake_quantize(row_major(x.data(), tokens, in), ap, row_major(xq.data(), tokens, in)));
  }
  CHECK(count_mismatches(xq, layer.quantized_input()) == 0);
  std::vector<float> y2(y.size());
  require_ok(lowbit::linear_forward(row_major<const float>(xq.data(), tokens, in),
                                    row_major<const float>(w_deq.data(), out, in),
                                    layer.bias().data(), row_major(y2.data(), tokens, out)));
  CHECK(count_mismatches(y2, y) == 0);
  // And through the file format.
  const std::vector<std::uint8_t> bytes = value_of(layer.export_packed());
  const lowbit::QuantizedTensor<W> back =
      value_of(lowbit::read_packed_matrix<W>(bytes.data(), bytes.size()));
  std::vector<float> w_file(w.size());
  require_ok(back.dequantize(row_major(w_file.data(), out, in)));
  CHECK(count_mismatches(w_file, layer.fake_weight()) == 0);
}

}  // namespace

TEST_CASE("FakeQuantLinear export: dequantized packed weights reproduce the forward exactly") {
  using A8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor,
                               lowbit::MovingAverageMinMax<>>;
  using A8Tok = lowbit::Quantizer<lowbit::Bits<8>, lowbit::SymmetricRestricted, lowbit::PerToken>;
  using W4g32 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<32>>;
  using W3ch = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Symmetric, lowbit::PerChannel<0>>;
  using W2g16 = lowbit::Quantizer<lowbit::Bits<2>, lowbit::Asymmetric, lowbit::PerGroup<16>>;
  using W4t = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerTensor>;
  check_export<W4g32, A8>(lowbit::QatMode::kFull, 41);
  check_export<W3ch, lowbit::NoActivationQuant>(lowbit::QatMode::kFull, 44);
  check_export<W2g16, A8Tok>(lowbit::QatMode::kPeqa, 47);
  check_export<W4t, A8>(lowbit::QatMode::kScaleOnly, 50);
  check_export<W4g32, lowbit::NoActivationQuant>(lowbit::QatMode::kWeightsOnly, 53);
}

TEST_CASE("FakeQuantLinear LSQ initialisation: 2 mean|w| / sqrt(Q_P) per block") {
  // One row of 8 weights per group: mean|w| = 0.25 and 0.5.
  const std::vector<float> w = {0.25f, -0.25f, 0.25f, -0.25f, 0.25f, -0.25f, 0.25f, -0.25f,
                                0.5f,  -0.5f,  0.5f,  -0.5f,  0.5f,  -0.5f,  0.5f,  -0.5f};
  lowbit::QatOptions o;
  o.scale_init = lowbit::ScaleInit::kLsq;
  using S4g8 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, lowbit::PerGroup<8>>;
  auto sym = value_of(FakeQuantLinear<S4g8>::create(row_major(w.data(), 1, 16), nullptr, o));
  CHECK(sym.weight_scale()[0] == doctest::Approx(2 * 0.25 / std::sqrt(7.0)));  // Q_P = 7
  CHECK(sym.weight_scale()[1] == doctest::Approx(2 * 0.5 / std::sqrt(7.0)));
  using U3g8 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
  auto asym = value_of(FakeQuantLinear<U3g8>::create(row_major(w.data(), 1, 16), nullptr, o));
  CHECK(asym.weight_zero_point()[0] == 3.0f);  // floor((0 + 7) / 2); Q_P = 7 - 3 = 4
  CHECK(asym.weight_scale()[0] == doctest::Approx(2 * 0.25 / 2.0));
}

// ---------------------------------------------------------------------------------------------
// Scale safety and bad input.

TEST_CASE("FakeQuantLinear clamps scales that reach <= 0, NaN or Inf to the documented floor") {
  using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
  const std::int64_t out = 3, in = 16, tokens = 4;
  const auto w = lowbit_test::gaussian(out * in, 0.5f, 61);
  const auto x = lowbit_test::gaussian(tokens * in, 1.0f, 62);
  auto layer = value_of(FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nullptr));
  std::vector<lowbit::ParamView> params = layer.parameters();
  lowbit::ParamView scale{}, zp{};
  for (const lowbit::ParamView& p : params) {
    if (std::string(p.name) == "weight_scale") scale = p;
    if (std::string(p.name) == "weight_zero_point") zp = p;
  }
  REQUIRE(scale.size == 6);
  const std::vector<float> initial = layer.initial_weight_scale();
  scale.value[0] = -1.0f;
  scale.value[1] = 0.0f;
  scale.value[2] = std::numeric_limits<float>::quiet_NaN();
  scale.value[3] = std::numeric_limits<float>::infinity();
  scale.value[4] = 1e-30f;  // positive but below the floor
  const float kept = scale.value[5];
  const float zp1 = zp.value[1];
  zp.value[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK(layer.clamp_scales() == 6);
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    const float floor = std::fmax(1e-8f * initial[static_cast<std::size_t>(i)], FLT_MIN);
    CHECK(scale.value[i] == floor);
    CHECK(std::isfinite(1.0f / scale.value[i]));
  }
  CHECK(scale.value[5] == kept);
  CHECK(zp.value[1] == zp1);  // back to its initial value
  CHECK(layer.clamp_scales() == 0);
  CHECK(layer.clamped_count() == 6);
  // Forward applies the same projection itself, so a bad scale never reaches a division.
  scale.value[2] = -3.0f;
  std::vector<float> y(static_cast<std::size_t>(tokens * out)), dx(x.size());
  require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
  CHECK(scale.value[2] > 0.0f);
  for (float v : y) CHECK(std::isfinite(v));
  require_ok(layer.backward(row_major<const float>(y.data(), tokens, out),
                            row_major(dx.data(), tokens, in)));
  for (float v : layer.grad_weight_scale()) CHECK(std::isfinite(v));
  CHECK(value_of(layer.export_weights()).params().scale[2] == scale.value[2]);

  // An all-zero weight gets the policy's floor scale 2^-23; its trained floor stays a normal float.
  const std::vector<float> zeros(static_cast<std::size_t>(out * in), 0.0f);
  auto zero_layer =
      value_of(FakeQuantLinear<W4>::create(row_major(zeros.data(), out, in), nullptr));
  CHECK(zero_layer.weight_scale()[0] == lowbit::kScaleFloor);
  lowbit::ParamView zs = zero_layer.parameters()[1];
  REQUIRE(std::string(zs.name) == "weight_scale");
  zs.value[0] = 0.0f;
  CHECK(zero_layer.clamp_scales() == 1);
  CHECK(zs.value[0] == 1e-8f * lowbit::kScaleFloor);
  CHECK(std::isnormal(zs.value[0]));

  // Options: the ratio lies in (0, 1].
  for (float bad : {0.0f, -1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN()}) {
    lowbit::QatOptions o;
    o.min_scale_ratio = bad;
    CHECK(FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nullptr, o).status().code() ==
          Errc::kInvalidArgument);
  }
}

TEST_CASE("FakeQuantLinear bad input returns a specific Status") {
  using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
  using S4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, lowbit::PerChannel<0>>;
  using A8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor,
                               lowbit::MovingAverageMinMax<>>;
  const std::int64_t out = 2, in = 16;
  auto w = lowbit_test::gaussian(out * in, 0.5f, 71);
  const auto x = lowbit_test::gaussian(3 * in, 1.0f, 72);
  std::vector<float> y(6), dx(x.size());
  auto code = [](const lowbit::Status& s) { return s.code(); };

  std::vector<float> bad = w;
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  lowbit::Status s = FakeQuantLinear<W4>::create(row_major(bad.data(), out, in), nullptr).status();
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 5);
  CHECK(FakeQuantLinear<W4>::create(row_major(w.data(), 4, 8 - 2), nullptr).status().code() ==
        Errc::kIndivisible);
  const float nan_bias[2] = {0.0f, std::numeric_limits<float>::infinity()};
  s = FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nan_bias).status();
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 1);
  lowbit::QatOptions o;
  o.learn_activation_scale = true;
  CHECK(FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nullptr, o).status().code() ==
        Errc::kInvalidArgument);
  o = {};
  o.activation_warmup_steps = 0;
  CHECK(FakeQuantLinear<W4, A8>::create(row_major(w.data(), out, in), nullptr, o).status().code() ==
        Errc::kInvalidArgument);
  o = {};
  o.mode = static_cast<lowbit::QatMode>(9);
  CHECK(FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nullptr, o).status().code() ==
        Errc::kInvalidArgument);

  auto layer = value_of(FakeQuantLinear<W4, A8>::create(row_major(w.data(), out, in), nullptr));
  CHECK(code(layer.backward(row_major(y.data(), 3, out), row_major(dx.data(), 3, in))) ==
        Errc::kInvalidArgument);
  CHECK(code(layer.forward(row_major(x.data(), 3, in - 1), row_major(y.data(), 3, out))) ==
        Errc::kShapeMismatch);
  CHECK(code(layer.forward(row_major(x.data(), 3, in), row_major(y.data(), 2, out))) ==
        Errc::kShapeMismatch);
  std::vector<float> nan_x = x;
  nan_x[7] = std::numeric_limits<float>::infinity();
  s = layer.forward(row_major(nan_x.data(), 3, in), row_major(y.data(), 3, out));
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 7);
  layer.set_training(false);  // evaluation before the observer saw anything
  CHECK(code(layer.forward(row_major(x.data(), 3, in), row_major(y.data(), 3, out))) ==
        Errc::kNotCalibrated);
  CHECK(code(layer.freeze_observer()) == Errc::kNotCalibrated);
  CHECK(layer.activation_params().status().code() == Errc::kNotCalibrated);
  layer.set_training(true);
  require_ok(layer.forward(row_major(x.data(), 3, in), row_major(y.data(), 3, out)));
  require_ok(layer.freeze_observer());
  CHECK(code(layer.backward(row_major(y.data(), 3, out), row_major(dx.data(), 3, in - 1))) ==
        Errc::kShapeMismatch);
  CHECK(code(layer.backward(row_major(y.data(), 2, out), row_major(dx.data(), 2, in))) ==
        Errc::kShapeMismatch);
  std::vector<float> nan_dy = y;
  nan_dy[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK(code(layer.backward(row_major(nan_dy.data(), 3, out), row_major(dx.data(), 3, in))) ==
        Errc::kNonFinite);

  const float scales[4] = {0.1f, -0.1f, 0.1f, 0.1f};
  s = layer.set_weight_params(scales, nullptr);
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.index() == 1);
  const float ok_scales[4] = {0.1f, 0.1f, 0.1f, 0.1f},
              nan_zp[4] = {1, 2, std::numeric_limits<float>::quiet_NaN(), 3};
  CHECK(code(layer.set_weight_params(ok_scales, nan_zp)) == Errc::kNonFinite);
  auto sym = value_of(FakeQuantLinear<S4>::create(row_major(w.data(), out, in), nullptr));
  const float zps[2] = {0.0f, 1.0f};
  CHECK(code(sym.set_weight_params(ok_scales, zps)) == Errc::kInvalidArgument);
  CHECK(code(sym.set_activation_params(ok_scales, nullptr)) == Errc::kUnsupported);
  CHECK(sym.activation_params().status().code() == Errc::kUnsupported);
  CHECK(code(sym.freeze_observer()) == Errc::kUnsupported);

  // A latent weight that became NaN is reported by the next forward, with its index.
  lowbit::ParamView wv = layer.parameters()[0];
  REQUIRE(std::string(wv.name) == "weight");
  wv.value[9] = std::numeric_limits<float>::quiet_NaN();
  s = layer.forward(row_major(x.data(), 3, in), row_major(y.data(), 3, out));
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 9);
  CHECK(code(layer.backward(row_major(y.data(), 3, out), row_major(dx.data(), 3, in))) ==
        Errc::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Divergence is reported with the step it happened at.

TEST_CASE("TrainingGuard reports NaN losses, NaN gradients and explosions with their step") {
  lowbit::TrainingGuard guard;
  for (std::int64_t step = 0; step < 7; ++step)
    require_ok(guard.check_loss(step, 1.0 / (step + 1)));
  lowbit::Status s = guard.check_loss(7, std::numeric_limits<double>::quiet_NaN());
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 7);
  CHECK(guard.diverged());
  CHECK(guard.report().step == 7);
  CHECK(std::string(guard.report().what) == "loss");
  CHECK(guard.check_loss(8, std::numeric_limits<double>::infinity()).index() == 8);
  CHECK(guard.report().step == 7);  // the first failure is kept

  // A NaN gradient in a real layer's buffers at step 12, caught before the optimizer runs.
  using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
  const std::int64_t out = 4, in = 16, tokens = 8;
  const auto w = lowbit_test::gaussian(out * in, 0.5f, 81);
  const auto x = lowbit_test::gaussian(tokens * in, 1.0f, 82);
  auto layer = value_of(FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nullptr));
  std::vector<lowbit::ParamView> params = layer.parameters();
  auto opt = value_of(lowbit::AdamW::create(params, lowbit::AdamWOptions{}));
  lowbit::TrainingGuard g2;
  std::vector<float> y(static_cast<std::size_t>(tokens * out));
  lowbit::Status failure;
  std::int64_t failed_at = -1;
  for (std::int64_t step = 0; step < 20 && failure.ok(); ++step) {
    layer.zero_grad();
    require_ok(layer.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
    require_ok(g2.check_loss(step, 1.0));
    require_ok(
        layer.backward(row_major<const float>(y.data(), tokens, out), lowbit::MatrixView<float>{}));
    if (step == 12) params[1].grad[3] = std::numeric_limits<float>::quiet_NaN();  // weight_scale
    failure = g2.check_gradients(step, params);
    if (!failure.ok()) {
      failed_at = step;
      break;
    }
    require_ok(opt.step());
  }
  CHECK(failure.code() == Errc::kNonFinite);
  CHECK(failure.index() == 12);
  CHECK(failed_at == 12);
  CHECK(std::string(g2.report().tensor) == "weight_scale");
  CHECK(g2.report().element == 3);
  // The optimizer refuses the same gradients, touching nothing, and names its own step number.
  const std::vector<float> before = layer.weight();
  s = opt.step();
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 13);
  CHECK(layer.weight() == before);

  // A real explosion: a learning rate far too large (here on the float layer, fake quant off, so
  // the grid cannot bound the outputs) makes the loss jump by orders of magnitude; the guard
  // names the first step whose loss exceeds 10x the best so far.
  auto hot = value_of(FakeQuantLinear<W4>::create(row_major(w.data(), out, in), nullptr));
  hot.set_fake_quant(false, false);
  std::vector<lowbit::ParamView> hp = hot.parameters();
  lowbit::AdamWOptions ao;
  ao.lr = 3.0;
  auto hot_opt = value_of(lowbit::AdamW::create(hp, ao));
  lowbit::TrainingGuardOptions go;
  go.max_loss_ratio = 10.0;
  go.max_scale_growth = 0.0;
  lowbit::TrainingGuard g3(go);
  std::vector<double> losses;
  std::int64_t reported = -1;
  for (std::int64_t step = 0; step < 50; ++step) {
    hot.zero_grad();
    require_ok(hot.forward(row_major(x.data(), tokens, in), row_major(y.data(), tokens, out)));
    double loss = 0.0;
    std::vector<float> dy(y.size());
    for (std::size_t i = 0; i < y.size(); ++i) {
      loss += 0.5 * double(y[i]) * y[i];  // target 0
      dy[i] = y[i];
    }
    losses.push_back(loss);
    s = g3.check_loss(step, loss);
    if (!s.ok()) {
      reported = step;
      break;
    }
    require_ok(
        hot.backward(row_major<const float>(dy.data(), tokens, out), lowbit::MatrixView<float>{}));
    require_ok(hot_opt.step());
  }
  REQUIRE(reported > 0);
  CHECK(s.code() == Errc::kNumericalIssue);
  CHECK(s.index() == reported);
  double best = losses[0];
  std::int64_t expected = -1;
  for (std::size_t i = 1; i < losses.size() && expected < 0; ++i) {
    if (losses[i] > 10.0 * best) expected = static_cast<std::int64_t>(i);
    best = std::fmin(best, losses[i]);
  }
  CHECK(reported == expected);
  std::printf("test_qat: lr 3 diverged at step %lld (loss %.3g from best %.3g)\n",
              static_cast<long long>(reported), losses.back(), g3.best_loss());

  // Exploding scales, against the scales training started from.
  lowbit::TrainingGuard g4;  // max_scale_growth 1e4 by default
  std::vector<float> sc = hot.initial_weight_scale();
  require_ok(g4.check_scales(3, sc.data(), hot.initial_weight_scale().data(),
                             static_cast<std::int64_t>(sc.size())));
  sc[2] *= 2e4f;
  s = g4.check_scales(4, sc.data(), hot.initial_weight_scale().data(),
                      static_cast<std::int64_t>(sc.size()), "w_scale");
  CHECK(s.code() == Errc::kNumericalIssue);
  CHECK(s.index() == 4);
  CHECK(g4.report().element == 2);
  CHECK(std::string(g4.report().tensor) == "w_scale");
  sc[2] = std::numeric_limits<float>::infinity();
  CHECK(g4.check_scales(5, sc.data(), hot.initial_weight_scale().data(), 1 + 2).code() ==
        Errc::kNonFinite);
  // NaN parameter values after an update are reported too.
  lowbit::TrainingGuard g5;
  hp[0].value[1] = std::numeric_limits<float>::quiet_NaN();
  s = g5.check_values(21, hp);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 21);
  CHECK(std::string(g5.report().what) == "parameter");
}
