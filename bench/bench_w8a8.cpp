// bench_w8a8: the W8A8 GEMM (gemm_w8a8.hpp) on LLM shapes against Eigen fp32 on the same shape and
// the machine's read bandwidth, both measured in the same run.
//
//   shapes (out × in)  4096 × 4096, 14336 × 4096 (up/gate projection), 4096 × 14336 (down)
//   tokens N           1 (decode: weights stream from DRAM), 8, 32, 512 (prefill)
//   threads            1 and 2 (lowbit::ThreadPool; the Eigen baseline is split over the same
//                      pool by output-column blocks, since Debian's Eigen has no OpenMP here)
//
// Counters: GOPS (2·N·out·in per second, int8 multiply-adds counted as two operations like the
// FLOPs of the fp32 baseline); for N = 1 bytes/s counts the weights streamed (int8 for W8A8,
// fp32 for Eigen), so the ratio table after the run is the fraction of read bandwidth. Weights
// for N <= 8 rotate over copies totalling > 128 MiB (4x this machine's 32 MiB L3) so each
// iteration reads cold weights. The closing "W8A8 / Eigen" table pairs each W8A8 run with the
// Eigen run of the same shape, N and threads. BM_W8A8Isa repeats 4096 × 4096 on every path this
// CPU runs (1 thread).
//
//   bench_w8a8 [--benchmark_repetitions=3 --benchmark_report_aggregates_only=true]
#include <lowbit/gemm_w8a8.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "baselines.hpp"
#include "eigen_baseline.hpp"

namespace {

constexpr std::size_t kColdBytes = std::size_t{128} << 20;

int copies_for(std::size_t bytes, std::int64_t tokens) {
  if (tokens > 8) return 1;  // compute-bound: weights may stay warm, as in a real prefill
  return static_cast<int>(std::max<std::size_t>(1, (kColdBytes + bytes - 1) / bytes));
}

std::vector<float> random_floats(std::int64_t n, std::uint32_t seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
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

void run_w8a8(benchmark::State& state, std::int64_t out, std::int64_t in, std::int64_t n,
              int threads) {
  const std::vector<float> w = random_floats(out * in, 1, 0.02f);
  lowbit::Result<lowbit::W8A8Weights> prepared =
      lowbit::W8A8Weights::quantize(lowbit::row_major(w.data(), out, in));
  if (!prepared) {
    state.SkipWithError(prepared.status().message());
    return;
  }
  std::vector<lowbit::W8A8Weights> weights(
      static_cast<std::size_t>(copies_for(prepared->packed_bytes(), n)), *prepared);
  const std::vector<float> x = random_floats(n * in, 2, 1.0f);
  std::vector<float> y(static_cast<std::size_t>(n * out));
  lowbit::W8A8Workspace workspace;
  lowbit::Executor& ex = executor(threads);
  std::size_t i = 0;
  for (auto _ : state) {
    const lowbit::Status s =
        lowbit::gemm_w8a8(weights[i++ % weights.size()], lowbit::row_major(x.data(), n, in),
                          lowbit::row_major(y.data(), n, out), ex, &workspace);
    if (!s) state.SkipWithError(s.message());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, out, in, n, prepared->packed_bytes());
  state.SetLabel(lowbit::isa_name(lowbit::gemm_w8a8_isa()));
}

// Args: out, in, tokens, threads.
void BM_W8A8(benchmark::State& state) {
  run_w8a8(state, state.range(0), state.range(1), state.range(2), static_cast<int>(state.range(3)));
}

// Y (N × out) = X (N × in) · Wᵀ in fp32 with Eigen (eigen_baseline.hpp: compiled for this
// machine), W row-major (out × in) as the W8A8 weights.
void BM_EigenF32(benchmark::State& state) {
  const std::int64_t out = state.range(0), in = state.range(1), n = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const std::size_t bytes = static_cast<std::size_t>(out * in) * sizeof(float);
  std::vector<std::vector<float>> weights;
  for (int c = 0; c < copies_for(bytes, n); ++c) weights.push_back(random_floats(out * in, 1, 0.02f));
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

// Args: isa, tokens (4096 × 4096, 1 thread, the ISA forced).
void BM_W8A8Isa(benchmark::State& state) {
  const auto isa = static_cast<lowbit::Isa>(state.range(0));
  if (!lowbit::force_isa_for_testing(isa)) {
    state.SkipWithError("ISA not runnable here");
    return;
  }
  run_w8a8(state, 4096, 4096, state.range(1), 1);
  lowbit::reset_forced_isa();
}

void shapes(benchmark::internal::Benchmark* b) {
  const std::int64_t list[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (const auto& s : list)
    for (std::int64_t n : {1, 8, 32, 512})
      for (std::int64_t t : {1, 2}) b->Args({s[0], s[1], n, t});
}

// Pairs W8A8 and Eigen runs by their arguments and prints GOP/s and the ratio. On a shared, busy
// machine the process gets a varying share of the cores, so 1-thread rows also show GOP/s per
// CPU-second of the benchmark thread (time it actually ran), and the ratio of those.
class W8A8Reporter : public lowbit_bench::RatioReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    RatioReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (!run.aggregate_name.empty() && run.aggregate_name != "median") continue;
      const auto it = run.counters.find("GOPS");
      if (it == run.counters.end()) continue;
      const std::string name = run.run_name.function_name;
      const std::string args = run.run_name.args;
      const double cpu = run.GetAdjustedCPUTime();
      const Rate r{it->second.value, cpu > 0 ? it->second.value * run.GetAdjustedRealTime() / cpu : 0};
      if (name == "BM_W8A8") w8a8_[args] = r;
      if (name == "BM_EigenF32") eigen_[args] = r;
      if (name == "BM_W8A8" && order_.insert(args).second) keys_.push_back(args);
    }
  }
  void Finalize() override {
    RatioReporter::Finalize();
    std::printf("\n%-20s %10s %12s %8s %14s %14s %8s\n", "out/in/N/threads", "W8A8 GOP/s",
                "Eigen GFLOP/s", "ratio", "W8A8 per CPU-s", "Eigen per CPU-s", "ratio");
    for (const std::string& k : keys_) {
      const Rate w = w8a8_[k];
      const auto e = eigen_.find(k);
      const Rate ev = e == eigen_.end() ? Rate{} : e->second;
      std::printf("%-20s %10.1f %12.1f %8.2f", k.c_str(), w.wall, ev.wall,
                  ev.wall > 0 ? w.wall / ev.wall : 0.0);
      if (k.size() >= 2 && k.compare(k.size() - 2, 2, "/1") == 0)
        std::printf(" %14.1f %14.1f %8.2f", w.cpu, ev.cpu, ev.cpu > 0 ? w.cpu / ev.cpu : 0.0);
      std::printf("\n");
    }
  }

 private:
  struct Rate {
    double wall = 0, cpu = 0;
  };
  std::map<std::string, Rate> w8a8_, eigen_;
  std::set<std::string> order_;
  std::vector<std::string> keys_;
};

}  // namespace

BENCHMARK(lowbit_bench::BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_W8A8)->Apply(shapes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EigenF32)->Apply(shapes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_W8A8Isa)
    ->ArgsProduct({{static_cast<std::int64_t>(lowbit::Isa::kScalar),
                    static_cast<std::int64_t>(lowbit::Isa::kSse41),
                    static_cast<std::int64_t>(lowbit::Isa::kAvx2),
                    static_cast<std::int64_t>(lowbit::Isa::kAvxVnni),
                    static_cast<std::int64_t>(lowbit::Isa::kAvx512Vnni),
                    static_cast<std::int64_t>(lowbit::Isa::kNeon),
                    static_cast<std::int64_t>(lowbit::Isa::kNeonDotprod)},
                   {1, 32}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("w8a8 path", lowbit::isa_name(lowbit::gemm_w8a8_isa()));
  W8A8Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
