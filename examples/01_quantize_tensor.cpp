// 01_quantize_tensor: quantize one real weight matrix with several compositions of lowbit's
// policies and compare what each costs (bits per weight, bytes) with what it loses (error).
//
//   01_quantize_tensor [weights.npy]
//
// The default input is tinylm's layer-2 MLP down projection (256 x 768, float32), shipped in
// tests/data/tinylm. Every row of the table is one Quantizer type: the policies are the whole
// configuration, composed at compile time.
#include <lowbit/lowbit.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "npy.hpp"

namespace {

struct Weights {
  std::vector<float> data;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

// One table row: quantize w with Q (γ-scaled when Q is a VariancePreserving), dequantize, and
// compare with the original.
template <class Q>
bool report(const char* scheme, const Weights& w) {
  const auto view = lowbit::row_major(w.data.data(), w.rows, w.cols);
  lowbit::Result<lowbit::QuantizedTensor<typename Q::base_quantizer>> q = Q::quantize(view);
  if (!q) {
    std::fprintf(stderr, "%s: %s (%s)\n", scheme, q.status().message(),
                 lowbit::errc_name(q.status().code()));
    return false;
  }
  std::vector<float> back(w.data.size());
  if (!q->dequantize(lowbit::row_major(back.data(), w.rows, w.cols))) return false;
  double err = 0, energy = 0, sum = 0, sum_q = 0, sq = 0, sq_q = 0;
  for (std::size_t i = 0; i < back.size(); ++i) {
    const double d = static_cast<double>(back[i]) - w.data[i];
    err += d * d;
    energy += static_cast<double>(w.data[i]) * w.data[i];
    sum += w.data[i];
    sum_q += back[i];
    sq += static_cast<double>(w.data[i]) * w.data[i];
    sq_q += static_cast<double>(back[i]) * back[i];
  }
  const double n = static_cast<double>(back.size());
  const double sd = std::sqrt(sq / n - (sum / n) * (sum / n));
  const double sd_q = std::sqrt(sq_q / n - (sum_q / n) * (sum_q / n));
  const double fp32_bytes = 4.0 * n;
  std::printf("%-48s %6.3f %9.1f %7.1f%% %11.3e %8.2f %8.4f\n", scheme, q->bits_per_weight(),
              static_cast<double>(q->size_bytes()) / 1024.0,
              100.0 * (1.0 - static_cast<double>(q->size_bytes()) / fp32_bytes), err / energy,
              10.0 * std::log10(energy / err), sd_q / sd);
  return true;
}

// Plain quantizers report through the same path as γ-scaled ones.
template <class Q>
struct NoGamma : Q {
  using base_quantizer = Q;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string path =
      argc > 1 ? argv[1] : std::string(LOWBIT_EXAMPLE_DATA_DIR) + "/tinylm/layers.2.mlp.down_proj.weight.npy";
  const lowbit_test::Npy npy = lowbit_test::load_npy_file(path);
  if (!npy.error.empty() || npy.shape.size() != 2) {
    std::fprintf(stderr, "cannot read a 2-D array from %s: %s\n", path.c_str(), npy.error.c_str());
    return 1;
  }
  Weights w{npy.as<float>(), npy.shape[0], npy.shape[1]};
  std::printf("lowbit %s: %s, %lld x %lld float32 (%.1f KiB)\n\n", "demo", path.c_str(),
              static_cast<long long>(w.rows), static_cast<long long>(w.cols),
              4.0 * static_cast<double>(w.data.size()) / 1024.0);
  std::printf("%-48s %6s %9s %8s %11s %8s %8s\n", "scheme", "bits/w", "KiB", "smaller",
              "rel.err", "SQNR dB", "std q/x");

  using namespace lowbit;
  bool ok = true;
  ok &= report<NoGamma<Quantizer<Bits<8>, SymmetricRestricted, PerChannel<0>>>>(
      "int8 symmetric per-channel", w);
  ok &= report<NoGamma<Quantizer<Bits<8>, Asymmetric, PerTensor>>>("int8 asymmetric per-tensor", w);
  ok &= report<NoGamma<Quantizer<Bits<4>, Asymmetric, PerChannel<0>>>>(
      "int4 asymmetric per-channel", w);
  ok &= report<NoGamma<Quantizer<Bits<4>, Asymmetric, PerGroup<128>>>>(
      "int4 asymmetric g128", w);
  ok &= report<NoGamma<Quantizer<Bits<4>, SymmetricRestricted, PerGroup<128>>>>(
      "int4 symmetric g128", w);
  ok &= report<NoGamma<Quantizer<Bits<4>, Asymmetric, PerGroup<128>, MseClipping<>>>>(
      "int4 asymmetric g128, MSE clipping", w);
  ok &= report<NoGamma<Quantizer<Bits<4>, Asymmetric, PerChannel<0>, Percentile<999, 1000>>>>(
      "int4 asymmetric per-channel, 99.9% clip", w);
  ok &= report<NoGamma<Quantizer<Bits<3>, Asymmetric, PerGroup<128>>>>("int3 asymmetric g128", w);
  ok &= report<NoGamma<Quantizer<Bits<2>, Asymmetric, PerGroup<64>>>>("int2 asymmetric g64", w);
  ok &= report<VariancePreserving<Quantizer<Bits<2>, Asymmetric, PerGroup<64>>>>(
      "int2 asymmetric g64, variance-preserving gamma", w);
  ok &= report<NoGamma<Quantizer<Bits<1>, Asymmetric, PerGroup<32>>>>("int1 asymmetric g32", w);
  std::printf("\nrel.err = ||W - Wq||^2 / ||W||^2; bits/w and KiB count codes, float32 scales and "
              "zero points.\n");
  return ok ? 0 : 1;
}
