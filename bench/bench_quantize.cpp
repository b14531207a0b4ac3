// bench_quantize: the cost of turning float weights into codes and back, per byte of float32
// input, against the machine's read bandwidth measured in the same run. Quantization happens
// once per model at load or conversion time, so the question is whether a 70B model's worth
// (140 GB of bf16) takes minutes or hours, not how it compares with a GEMV.
//
//   bench_quantize [--benchmark_repetitions=5 --benchmark_report_aggregates_only=true]
#include <lowbit/lowbit.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "baselines.hpp"

namespace {

// A 4096 x 4096 float32 layer (64 MiB): larger than the cache, the size of a Llama-7B projection.
constexpr std::int64_t kRows = 4096, kCols = 4096;

const std::vector<float>& weights() {
  static const std::vector<float> w = [] {
    std::vector<float> v(static_cast<std::size_t>(kRows * kCols));
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    for (float& x : v) x = d(rng);
    return v;
  }();
  return w;
}

template <class Q>
void BM_Quantize(benchmark::State& state) {
  const auto w = lowbit::row_major(weights().data(), kRows, kCols);
  for (auto _ : state) {
    lowbit::Result<lowbit::QuantizedTensor<Q>> q = Q::quantize(w);
    if (!q) state.SkipWithError(q.status().message());
    benchmark::DoNotOptimize(q);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * kRows * kCols * 4);
}

template <class Q>
void BM_Dequantize(benchmark::State& state) {
  const auto w = lowbit::row_major(weights().data(), kRows, kCols);
  lowbit::Result<lowbit::QuantizedTensor<Q>> q = Q::quantize(w);
  std::vector<float> out(weights().size());
  for (auto _ : state) {
    if (!q->dequantize(lowbit::row_major(out.data(), kRows, kCols))) state.SkipWithError("failed");
    benchmark::DoNotOptimize(out.data());
  }
  // Bytes of float32 produced: the figure comparable with the quantize direction.
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * kRows * kCols * 4);
}

using W4g128 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
using W8ch = lowbit::Quantizer<lowbit::Bits<8>, lowbit::SymmetricRestricted, lowbit::PerChannel<0>>;
using W3g128 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<128>>;

}  // namespace

BENCHMARK(lowbit_bench::BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Quantize<W4g128>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Quantize<W3g128>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Quantize<W8ch>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Dequantize<W4g128>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Dequantize<W8ch>)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  lowbit_bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
