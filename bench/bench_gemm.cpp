// bench_gemm: the int8-activation GEMM (lowbit/gemm.hpp) on LLM shapes, against the machine's
// read bandwidth and Eigen fp32 on the same shape, both measured in the same run.
//
//   formats            q4_0, q8_0, iq4_nl, q4_K (ggml blocks) and lowbit 4-bit asymmetric, groups
//                      of 128
//   shapes (out × in)  4096 × 4096, 14336 × 4096 (up/gate projection), 4096 × 14336 (down)
//   tokens N           1 (decode), 8, 32, 512 (prefill)
//   threads            1 and 2 (lowbit::ThreadPool; Eigen split by output rows, eigen_baseline.hpp)
//
// Counters: GOPS = 2·N·out·in per second (int8 multiply-adds counted as two operations, like the
// FLOPs of the fp32 baseline). For N = 1, bytes/s counts the prepared weights streamed
// (InterleavedWeights::size_bytes(): the format's own size), so the ratio table after the run is
// the fraction of read bandwidth. Weights for N <= 8 rotate over copies totalling > 128 MiB
// (4× this machine's 32 MiB L3) so each iteration reads them from DRAM; the weights' values are
// random codes and scales (speed does not depend on them). Eigen fp32 is compiled with
// -march=native (eigen_baseline.cpp), the kernels without -march (run-time dispatch).
// The closing table pairs every run with Eigen's run of the same shape, N and threads.
// BM_GemmIsa repeats q4_0 4096 × 4096 on every path this CPU runs (1 thread).
//
//   bench_gemm [--benchmark_filter=...] [--benchmark_repetitions=3
//               --benchmark_report_aggregates_only=true]
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <lowbit/gemm.hpp>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "baselines.hpp"
#include "eigen_baseline.hpp"

namespace {

namespace ggml = lowbit::ggml;

constexpr std::size_t kColdBytes = std::size_t{128} << 20;

enum Format : int {
  kQ4_0 = 0,
  kQ8_0 = 1,
  kIq4Nl = 2,
  kLowbitU4Asym128 = 3,
  kQ4_K = 4,
  kFormatCount = 5
};
const char* const kFormatNames[] = {"q4_0", "q8_0", "iq4_nl", "lowbit-u4-asym-g128", "q4_K"};

int copies_for(std::size_t bytes, std::int64_t tokens) {
  if (tokens > 8) return 1;  // compute-bound: weights stay warm, as in a real prefill
  return static_cast<int>(std::max<std::size_t>(1, (kColdBytes + bytes - 1) / bytes));
}

std::vector<float> random_floats(std::int64_t n, std::uint32_t seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// Random blocks: codes uniform, scales ~0.01 with random sign (as quantized weights have); Q4_K
// also gets a min super-scale and random 6-bit sub-block scales and mins.
template <class Block>
std::vector<Block> random_blocks(std::int64_t count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Block> blocks(static_cast<std::size_t>(count));
  for (Block& b : blocks) {
    b.d = lowbit::to_half((rng() & 1 ? 0.01f : -0.01f) *
                          (1.0f + static_cast<float>(rng() % 100) / 100));
    auto* bytes = reinterpret_cast<std::uint8_t*>(&b.qs);
    for (std::size_t i = 0; i < sizeof(b.qs); ++i) bytes[i] = static_cast<std::uint8_t>(rng());
    if constexpr (std::is_same_v<Block, ggml::BlockQ4_K>) {
      b.dmin = lowbit::to_half(0.001f * (1.0f + static_cast<float>(rng() % 100) / 100));
      for (std::uint8_t& s : b.scales) s = static_cast<std::uint8_t>(rng());
    }
  }
  return blocks;
}

lowbit::Result<lowbit::InterleavedWeights> prepare(Format f, std::int64_t out, std::int64_t in) {
  const std::int64_t blocks = out * in / 32;
  switch (f) {
    case kQ4_0:
      return lowbit::interleave_weights(random_blocks<ggml::BlockQ4_0>(blocks, 1).data(), out, in);
    case kQ8_0:
      return lowbit::interleave_weights(random_blocks<ggml::BlockQ8_0>(blocks, 2).data(), out, in);
    case kIq4Nl:
      return lowbit::interleave_weights(random_blocks<ggml::BlockIQ4_NL>(blocks, 3).data(), out,
                                        in);
    case kQ4_K:
      return lowbit::interleave_weights(random_blocks<ggml::BlockQ4_K>(blocks / 8, 5).data(), out,
                                        in);
    default:
      break;
  }
  using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
  std::mt19937 rng(4);
  std::vector<std::uint8_t> packed(static_cast<std::size_t>(out * in / 2));
  for (std::uint8_t& b : packed) b = static_cast<std::uint8_t>(rng());
  lowbit::QuantParams params(out, in / 128);
  for (std::size_t i = 0; i < params.scale.size(); ++i) {
    params.scale[i] = 0.001f * (1.0f + static_cast<float>(rng() % 100) / 100);
    params.zero_point[i] = static_cast<std::int32_t>(rng() % 16);
  }
  lowbit::Result<lowbit::QuantizedTensor<Q>> t =
      lowbit::QuantizedTensor<Q>::from_parts(out, in, std::move(packed), std::move(params));
  if (!t) return t.status();
  return lowbit::interleave_weights(*t);
}

// Prepared weights, built once per (format, shape) and kept for the whole run: the benchmarks
// share them (a 14336 × 4096 q8_0 copy is 62 MB).
std::vector<lowbit::InterleavedWeights>& weights_for(Format f, std::int64_t out, std::int64_t in,
                                                     int copies, lowbit::Status* status) {
  static std::map<std::tuple<int, std::int64_t, std::int64_t>,
                  std::vector<lowbit::InterleavedWeights>>
      cache;
  std::vector<lowbit::InterleavedWeights>& v = cache[{f, out, in}];
  while (static_cast<int>(v.size()) < copies) {
    lowbit::Result<lowbit::InterleavedWeights> w = prepare(f, out, in);
    if (!w) {
      *status = w.status();
      break;
    }
    v.push_back(std::move(*w));
  }
  return v;
}

// Wall-clock and calling-thread CPU time, in seconds.
struct Timing {
  double real = 0.0, cpu = 0.0;
  static Timing now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    const double cpu = static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    const auto wall = std::chrono::steady_clock::now().time_since_epoch();
    return {std::chrono::duration<double>(wall).count(), cpu};
  }
  Timing operator-(const Timing& o) const { return {real - o.real, cpu - o.cpu}; }
  Timing& operator+=(const Timing& o) {
    real += o.real;
    cpu += o.cpu;
    return *this;
  }
};

// The streaming sum of lowbit_bench::BM_MemoryReadBandwidth (eigen_baseline.hpp).
using lowbit_bench::stream_sum;

// Reads `bytes` bytes (split over `threads` tasks) from a 512 MiB buffer at a rotating offset.
void stream_bytes(std::size_t bytes, lowbit::Executor& ex, int threads) {
  static std::vector<std::uint64_t> buffer(lowbit_bench::kStreamBytes / sizeof(std::uint64_t), 1);
  static std::size_t offset = 0;
  const std::size_t words = std::min(bytes / sizeof(std::uint64_t), buffer.size());
  if (offset + words > buffer.size()) offset = 0;
  const std::uint64_t* const base = buffer.data() + offset;
  offset += words;
  std::uint64_t totals[2] = {0, 0};
  ex.parallel_for(threads, [base, words, threads, &totals](std::int64_t b, std::int64_t e) {
    for (std::int64_t t = b; t < e; ++t) {
      const auto part = static_cast<std::size_t>(t), parts = static_cast<std::size_t>(threads);
      const std::size_t w0 = words * part / parts, w1 = words * (part + 1) / parts;
      totals[t % 2] += stream_sum(base + w0, w1 - w0);
    }
  });
  benchmark::DoNotOptimize(totals);
}

using lowbit_bench::executor;

void set_counters(benchmark::State& state, std::int64_t out, std::int64_t in, std::int64_t n,
                  std::size_t weight_bytes) {
  state.counters["GOPS"] = benchmark::Counter(2.0 * static_cast<double>(n * out * in) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  if (n == 1)
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                            static_cast<std::int64_t>(weight_bytes));
}

void run_gemm(benchmark::State& state, Format f, std::int64_t out, std::int64_t in, std::int64_t n,
              int threads) {
  lowbit::Status status;
  // Size of one copy first, to know how many make the rotation cold.
  std::vector<lowbit::InterleavedWeights>& first = weights_for(f, out, in, 1, &status);
  if (!status || first.empty()) {
    state.SkipWithError(status.message());
    return;
  }
  const std::size_t bytes = first.front().size_bytes();
  std::vector<lowbit::InterleavedWeights>& weights =
      weights_for(f, out, in, copies_for(bytes, n), &status);
  if (!status) {
    state.SkipWithError(status.message());
    return;
  }
  const int rotation = copies_for(bytes, n);
  const std::vector<float> x = random_floats(n * in, 2, 1.0f);
  std::vector<float> y(static_cast<std::size_t>(n * out));
  lowbit::GemmWorkspace workspace;
  lowbit::GemmOptions options;
  options.workspace = &workspace;
  lowbit::Executor& ex = executor(threads);
  // Decode: after every product, the same number of bytes is streamed from a cold buffer on the
  // same threads and timed apart, so the bandwidth ratio pairs each GEMV with a bandwidth sample
  // taken moments later (robust to the load of a shared machine drifting during the run).
  Timing gemv, stream;
  std::size_t i = 0;
  for (auto _ : state) {
    const Timing t0 = Timing::now();
    const lowbit::Status s = lowbit::gemm(weights[i++ % static_cast<std::size_t>(rotation)],
                                          lowbit::row_major(x.data(), n, in),
                                          lowbit::row_major(y.data(), n, out), ex, options);
    if (!s) state.SkipWithError(s.message());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    const Timing t1 = Timing::now();
    state.SetIterationTime(t1.real - t0.real);
    gemv += t1 - t0;
    if (n == 1) {
      stream_bytes(bytes, ex, threads);
      stream += Timing::now() - t1;
    }
  }
  set_counters(state, out, in, n, bytes);
  if (n == 1 && gemv.real > 0 && gemv.cpu > 0) {
    state.counters["xBW_real"] = stream.real / gemv.real;
    state.counters["xBW_cpu"] = stream.cpu / gemv.cpu;
  }
  state.SetLabel(std::string(kFormatNames[f]) + " " + lowbit::isa_name(lowbit::best_isa()));
}

// Args: format, out, in, tokens, threads.
void BM_Gemm(benchmark::State& state) {
  run_gemm(state, static_cast<Format>(state.range(0)), state.range(1), state.range(2),
           state.range(3), static_cast<int>(state.range(4)));
}

// Args: out, in, tokens, threads.
void BM_EigenF32(benchmark::State& state) {
  const std::int64_t out = state.range(0), in = state.range(1), n = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const std::size_t bytes = static_cast<std::size_t>(out * in) * sizeof(float);
  std::vector<std::vector<float>> weights;
  for (int c = 0; c < copies_for(bytes, n); ++c)
    weights.push_back(random_floats(out * in, 1 + c, 0.02f));
  const std::vector<float> x = random_floats(n * in, 2, 1.0f);
  std::vector<float> y(static_cast<std::size_t>(n * out));
  std::size_t i = 0;
  for (auto _ : state) {
    lowbit_bench::eigen_matmul_f32(weights[i++ % weights.size()].data(), out, in, x.data(), n,
                                   y.data(), executor(threads), threads);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, out, in, n, bytes);
  state.SetLabel(lowbit_bench::eigen_simd_name());
}

// Args: isa, tokens (q4_0 4096 × 4096, 1 thread, the ISA forced).
void BM_GemmIsa(benchmark::State& state) {
  const auto isa = static_cast<lowbit::Isa>(state.range(0));
  if (!lowbit::force_isa_for_testing(isa)) {
    state.SkipWithError("ISA not runnable here");
    return;
  }
  run_gemm(state, kQ4_0, 4096, 4096, state.range(1), 1);
  state.SetLabel(std::string("q4_0 ") + lowbit::isa_name(isa));
  lowbit::reset_forced_isa();
}

void gemm_args(benchmark::internal::Benchmark* b) {
  const std::int64_t shapes[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (int f = 0; f < kFormatCount; ++f)
    for (const auto& s : shapes)
      for (std::int64_t n : {1, 8, 32, 512})
        for (std::int64_t t : {1, 2}) b->Args({f, s[0], s[1], n, t});
}

void eigen_args(benchmark::internal::Benchmark* b) {
  const std::int64_t shapes[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (const auto& s : shapes)
    for (std::int64_t n : {1, 8, 32, 512})
      for (std::int64_t t : {1, 2}) b->Args({s[0], s[1], n, t});
}

// Pairs each run with Eigen's run of the same shape, N and threads.
class GemmReporter : public lowbit_bench::RatioReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    RatioReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (!run.aggregate_name.empty() && run.aggregate_name != "median") continue;
      const std::string name = run.run_name.function_name;
      // real / CPU time of the benchmark thread: > 1 when other processes took the core.
      const double busy =
          run.cpu_accumulated_time > 0 ? run.real_accumulated_time / run.cpu_accumulated_time : 1.0;
      if (name.find("MemoryReadBandwidth") != std::string::npos) {
        const auto bytes = run.counters.find("bytes_per_second");
        if (bytes != run.counters.end()) {
          bandwidth_ = bytes->second.value;
          bandwidth_cpu_ = bytes->second.value * busy;
        }
      }
      const auto it = run.counters.find("GOPS");
      if (it == run.counters.end()) continue;
      const std::string args = run.run_name.args;
      if (name == "BM_EigenF32") {
        eigen_[args] = it->second.value;
        eigen_cpu_[args] = it->second.value * busy;
      }
      if (name == "BM_Gemm") {
        const auto bytes = run.counters.find("bytes_per_second");
        const auto paired_real = run.counters.find("xBW_real");
        const auto paired_cpu = run.counters.find("xBW_cpu");
        runs_.push_back({args, run.report_label, it->second.value,
                         bytes == run.counters.end() ? 0.0 : bytes->second.value, busy,
                         paired_real == run.counters.end() ? 0.0 : paired_real->second.value,
                         paired_cpu == run.counters.end() ? 0.0 : paired_cpu->second.value});
      }
    }
  }
  // Ratios, each to a baseline measured in the same run:
  //   xEigen   GOP/s over Eigen fp32's GFLOP/s of the same shape, N and threads;
  //   xBW      decode (N = 1) weight bytes/s over read bandwidth, paired: each GEMV is followed
  //            by a streaming read of as many bytes on as many threads (see run_gemm);
  // each from real time (what a user sees) and from the benchmark thread's CPU time (what the
  // kernel achieves while it runs: on a shared machine real time mixes in other processes' load).
  // CPU-time xEigen is printed for 1 thread only (Eigen's calling thread only waits for its
  // workers when it has 2). The standalone BM_MemoryReadBandwidth is printed as well.
  void Finalize() override {
    RatioReporter::Finalize();
    std::printf("\nBM_MemoryReadBandwidth: %.2f GB/s (real time), %.2f GB/s (CPU time)\n",
                bandwidth_ / 1e9, bandwidth_cpu_ / 1e9);
    std::printf("%-22s %-26s %7s %7s %7s %7s %7s | %7s %7s\n", "format/out/in/N/thr", "label",
                "GOP/s", "Eigen", "xEigen", "GB/s", "xBW", "xEigen", "xBW");
    std::printf("%-22s %-26s %7s %7s %7s %7s %7s | %7s %7s\n", "", "", "real", "real", "real",
                "real", "real", "cpu", "cpu");
    for (const Entry& e : runs_) {
      // Eigen's key drops the leading format argument.
      const std::string key = e.args.substr(e.args.find('/') + 1);
      const auto ev = eigen_.find(key);
      const double eigen = ev == eigen_.end() ? 0.0 : ev->second;
      const double eigen_cpu = ev == eigen_.end() ? 0.0 : eigen_cpu_[key];
      const bool one_thread = e.args.size() >= 2 && e.args.compare(e.args.size() - 2, 2, "/1") == 0;
      // (N = 1: the loop's CPU time includes the paired stream, so no CPU-time xEigen.)
      const bool decode = e.paired_real > 0;
      const double x_eigen_cpu =
          one_thread && !decode && eigen_cpu > 0 ? e.gops * e.busy / eigen_cpu : 0.0;
      std::printf("%-22s %-26s %7.1f %7.1f %7.2f %7.2f %7.2f | %7.2f %7.2f\n", e.args.c_str(),
                  e.label.c_str(), e.gops, eigen, eigen > 0 ? e.gops / eigen : 0.0, e.bytes / 1e9,
                  e.paired_real, x_eigen_cpu, e.paired_cpu);
    }
  }

 private:
  struct Entry {
    std::string args, label;
    double gops, bytes, busy, paired_real, paired_cpu;
  };
  std::map<std::string, double> eigen_, eigen_cpu_;
  std::vector<Entry> runs_;
  double bandwidth_ = 0.0, bandwidth_cpu_ = 0.0;
};

}  // namespace

BENCHMARK(lowbit_bench::BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gemm)->Apply(gemm_args)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK(BM_EigenF32)->Apply(eigen_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_GemmIsa)
    ->ArgsProduct({{static_cast<std::int64_t>(lowbit::Isa::kSse41),
                    static_cast<std::int64_t>(lowbit::Isa::kAvx2),
                    static_cast<std::int64_t>(lowbit::Isa::kAvxVnni),
                    static_cast<std::int64_t>(lowbit::Isa::kAvx512Vnni),
                    static_cast<std::int64_t>(lowbit::Isa::kNeon),
                    static_cast<std::int64_t>(lowbit::Isa::kNeonDotprod)},
                   {1, 32}})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("int8 gemm path", lowbit::isa_name(lowbit::best_isa()));
  benchmark::AddCustomContext("eigen simd", lowbit_bench::eigen_simd_name());
  GemmReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
