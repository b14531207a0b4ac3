// 02_custom_layer: build a quantized linear layer from policies at compile time, calibrate its
// activation quantizer on streamed batches, store its weights in lowbit's packed-matrix layout,
// load them back, and measure the layer's output error against float32.
//
//   02_custom_layer [weights.npy] [output.lbpm]
//
// y = x · Wᵀ with W (out, in) quantized to 4 bits per group of 128 and x quantized to 8 bits per
// tensor with a histogram-calibrated range: a W4A8 layer. Activations are synthetic (Gaussian
// with a few outlier channels, as LLM activations have); weights are tinylm's by default.
#include <lowbit/lowbit.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "npy.hpp"

namespace {

// The layer's whole configuration, as types.
using WeightQuantizer = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>,
                                          lowbit::MseClipping<>>;
using ActivationQuantizer = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor,
                                              lowbit::Histogram<>>;

std::vector<float> activations(std::int64_t tokens, std::int64_t features, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(tokens * features));
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t f = 0; f < features; ++f)
      x[static_cast<std::size_t>(t * features + f)] = d(rng) * (f % 97 == 5 ? 12.0f : 1.0f);
  return x;
}

// y (tokens, out) = x (tokens, in) · Wᵀ, in double for a clean reference.
std::vector<double> linear(const std::vector<float>& x, const std::vector<float>& w,
                           std::int64_t tokens, std::int64_t in, std::int64_t out) {
  std::vector<double> y(static_cast<std::size_t>(tokens * out), 0.0);
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (std::int64_t i = 0; i < in; ++i)
        acc += static_cast<double>(x[static_cast<std::size_t>(t * in + i)]) *
               w[static_cast<std::size_t>(o * in + i)];
      y[static_cast<std::size_t>(t * out + o)] = acc;
    }
  return y;
}

int fail(const char* what, lowbit::Status s) {
  std::fprintf(stderr, "%s: %s (%s, index %lld)\n", what, s.message(), lowbit::errc_name(s.code()),
               static_cast<long long>(s.index()));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1]
                                    : std::string(LOWBIT_EXAMPLE_DATA_DIR) +
                                          "/tinylm/layers.2.mlp.down_proj.weight.npy";
  const std::string saved = argc > 2 ? argv[2] : "02_custom_layer.lbpm";
  const lowbit_test::Npy npy = lowbit_test::load_npy_file(path);
  if (!npy.error.empty() || npy.shape.size() != 2) {
    std::fprintf(stderr, "cannot read a 2-D array from %s: %s\n", path.c_str(), npy.error.c_str());
    return 1;
  }
  const std::int64_t out = npy.shape[0], in = npy.shape[1];
  const std::vector<float> w = npy.as<float>();

  // 1. Weights: quantize, write the packed-matrix bytes to a file, read them back.
  lowbit::Result<lowbit::QuantizedTensor<WeightQuantizer>> wq =
      WeightQuantizer::quantize(lowbit::row_major(w.data(), out, in));
  if (!wq) return fail("quantizing weights", wq.status());
  lowbit::Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(*wq);
  if (!bytes) return fail("packing weights", bytes.status());
  std::ofstream(saved, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes->data()), static_cast<std::streamsize>(bytes->size()));
  std::ifstream file(saved, std::ios::binary);
  const std::vector<std::uint8_t> loaded((std::istreambuf_iterator<char>(file)),
                                         std::istreambuf_iterator<char>());
  lowbit::Result<lowbit::QuantizedTensor<WeightQuantizer>> wl =
      lowbit::read_packed_matrix<WeightQuantizer>(loaded.data(), loaded.size());
  if (!wl) return fail("reading weights back", wl.status());
  std::vector<float> w_deq(w.size());
  if (lowbit::Status s = wl->dequantize(lowbit::row_major(w_deq.data(), out, in)); !s)
    return fail("dequantizing weights", s);

  // 2. Activations: calibrate on 8 streamed batches of 64 tokens, then freeze.
  lowbit::Calibrator<ActivationQuantizer> calibrator;
  for (std::uint32_t b = 0; b < 8; ++b) {
    const std::vector<float> batch = activations(64, in, 100 + b);
    if (lowbit::Status s = calibrator.observe(lowbit::row_major(batch.data(), 64, in)); !s)
      return fail("calibrating", s);
  }
  lowbit::Result<lowbit::QuantParams> act = calibrator.freeze();
  if (!act) return fail("freezing the activation range", act.status());

  // 3. Evaluate on held-out tokens: float32, W4 only, and W4A8.
  const std::int64_t tokens = 32;
  const std::vector<float> x = activations(tokens, in, 999);
  std::vector<float> xq(x.size());
  if (lowbit::Status s = ActivationQuantizer::fake_quantize(lowbit::row_major(x.data(), tokens, in), *act,
                                                            lowbit::row_major(xq.data(), tokens, in));
      !s)
    return fail("quantizing activations", s);
  const std::vector<double> y = linear(x, w, tokens, in, out);
  const std::vector<double> y_w4 = linear(x, w_deq, tokens, in, out);
  const std::vector<double> y_w4a8 = linear(xq, w_deq, tokens, in, out);
  auto rel_err = [&](const std::vector<double>& yq) {
    double e = 0, n = 0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      e += (yq[i] - y[i]) * (yq[i] - y[i]);
      n += y[i] * y[i];
    }
    return e / n;
  };
  std::printf("layer %lld x %lld, weights %s (%.3f bits/weight, %zu bytes on disk)\n",
              static_cast<long long>(out), static_cast<long long>(in), path.c_str(),
              wl->bits_per_weight(), loaded.size());
  std::printf("activation range after calibration: scale %.6g, zero point %d\n", act->scale[0],
              act->zero_point[0]);
  std::printf("relative output error ||y - y_q||^2 / ||y||^2:  W4 %.3e   W4A8 %.3e\n",
              rel_err(y_w4), rel_err(y_w4a8));
  return 0;
}
