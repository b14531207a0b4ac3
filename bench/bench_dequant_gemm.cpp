// bench_dequant_gemm: Y = X * W^T with quantized W and fp32 X (lowbit/dequant_gemm.hpp), against
// Eigen fp32 on the same shape and the machine's read bandwidth, both measured in the same run.
//
//   bench_dequant_gemm [--benchmark_filter=...] [--benchmark_min_time=...]
//
// Shapes (out x in): 4096x4096, 14336x4096 and 4096x14336 (Llama-3-8B's attention and MLP
// projections); N = 1, 8, 32 tokens on every shape, N = 512 on 4096x4096; 1 and 2 threads
// (lowbit::ThreadPool; Eigen's product is split by rows over the same pool). Formats: ggml Q4_0,
// Q8_0, Q4_K, Q6_K, IQ4_NL and lowbit packed 4-bit g128 asymmetric, 3-bit g128 asymmetric,
// 2-bit g64 asymmetric.
//
// Weights are cold: every iteration reads the next of several copies of the weight matrix that
// together exceed 4x the last-level cache (LOWBIT_BENCH_LLC_MB, default 32), so a GEMV streams
// from DRAM as a decode step does. The weights' values do not change the kernels' speed: a
// 64-row slab quantized by lowbit is replicated to the full height.
//
// Counters: GFLOP/s (2 N rows K per product), bytes_per_second = weight bytes per second (the
// effective weight bandwidth; the figure that matters at N = 1), and x_bw = that bandwidth as a
// fraction of the read bandwidth measured just before the benchmark with the same thread count
// (a streaming sum over 256 MiB split over the executor like the kernel's rows). This machine
// is shared, and its load changes over a run: a ratio to a baseline measured minutes earlier
// means little, one to a baseline measured a second earlier is what the issue asks for. The
// Eigen baseline of each shape, N and thread count runs right before the formats that use it.
// After Google Benchmark's table two summaries follow: weight GB/s as a fraction of
// BM_MemoryReadBandwidth (baselines.hpp, run first), and GFLOP/s as a multiple of Eigen fp32.
//
// Eigen: eigen_baseline.cpp, compiled with -march=native (Eigen fixes its SIMD width when it is
// compiled); the lowbit kernels are compiled without -march and dispatched at run time.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <lowbit/dequant_gemm.hpp>
#include <lowbit/format/ggml.hpp>
#include <lowbit/quantizer.hpp>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "baselines.hpp"
#include "eigen_baseline.hpp"

namespace {

using lowbit::io::GgmlType;

std::size_t llc_bytes() {
  const char* env = std::getenv("LOWBIT_BENCH_LLC_MB");
  const long mb = env != nullptr ? std::atol(env) : 32;
  return static_cast<std::size_t>(mb > 0 ? mb : 32) << 20;
}

std::vector<float> gaussian(std::size_t n, float sigma, unsigned seed) {
  std::vector<float> v(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  for (float& x : v) x = d(rng);
  return v;
}

constexpr std::int64_t kSlabRows = 64;

// One weight matrix in several copies, plus the views on each.
struct ColdWeights {
  std::vector<std::vector<std::uint8_t>> copies;  // ggml bytes, or LBPM buffers
  std::vector<lowbit::WeightsView> views;
  std::size_t bytes_per_product = 0;
};

std::size_t copies_for(std::size_t bytes) {
  return std::max<std::size_t>(2, (4 * llc_bytes() + bytes - 1) / bytes);
}

template <class Block>
std::unique_ptr<ColdWeights> make_ggml(std::int64_t rows, std::int64_t cols) {
  const std::vector<float> slab = gaussian(static_cast<std::size_t>(kSlabRows * cols), 0.02f, 7);
  std::vector<Block> blocks(
      static_cast<std::size_t>(kSlabRows * cols / lowbit::ggml::FormatTraits<Block>::kBlockSize));
  if (!lowbit::ggml::quantize_rows(lowbit::row_major(slab.data(), kSlabRows, cols), blocks.data()))
    return nullptr;
  const std::size_t slab_bytes = blocks.size() * sizeof(Block);
  const std::size_t total = slab_bytes * static_cast<std::size_t>(rows / kSlabRows);
  auto w = std::make_unique<ColdWeights>();
  for (std::size_t c = 0; c < copies_for(total); ++c) {
    std::vector<std::uint8_t> bytes(total);
    for (std::size_t off = 0; off < total; off += slab_bytes)
      std::memcpy(bytes.data() + off, blocks.data(), slab_bytes);
    w->copies.push_back(std::move(bytes));
  }
  const auto type = static_cast<GgmlType>(lowbit::ggml::FormatTraits<Block>::kGgmlType);
  for (const auto& c : w->copies) {
    lowbit::Result<lowbit::WeightsView> v =
        lowbit::WeightsView::ggml(type, c.data(), c.size(), rows, cols);
    if (!v) return nullptr;
    w->views.push_back(*v);
  }
  w->bytes_per_product = total;
  return w;
}

template <int Bits, std::int64_t Group>
std::unique_ptr<ColdWeights> make_packed(std::int64_t rows, std::int64_t cols) {
  using Q = lowbit::Quantizer<lowbit::Bits<Bits>, lowbit::Asymmetric, lowbit::PerGroup<Group>>;
  const std::vector<float> x = gaussian(static_cast<std::size_t>(rows * cols), 0.02f, 11);
  lowbit::Result<lowbit::QuantizedTensor<Q>> t =
      Q::quantize(lowbit::row_major(x.data(), rows, cols));
  if (!t) return nullptr;
  lowbit::Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(*t);
  if (!bytes) return nullptr;
  auto w = std::make_unique<ColdWeights>();
  for (std::size_t c = 0; c < copies_for(bytes->size()); ++c) w->copies.push_back(*bytes);
  for (const auto& c : w->copies) {
    lowbit::Result<lowbit::PackedMatrixView> pv = lowbit::parse_packed_matrix(c.data(), c.size());
    if (!pv) return nullptr;
    lowbit::Result<lowbit::WeightsView> v = lowbit::WeightsView::packed(*pv);
    if (!v) return nullptr;
    w->views.push_back(*v);
  }
  w->bytes_per_product = w->views.front().size_bytes();
  return w;
}

struct FormatEntry {
  const char* name;
  std::unique_ptr<ColdWeights> (*make)(std::int64_t, std::int64_t);
};
const FormatEntry kFormats[] = {
    {"q4_0", &make_ggml<lowbit::ggml::BlockQ4_0>},
    {"q8_0", &make_ggml<lowbit::ggml::BlockQ8_0>},
    {"q4_K", &make_ggml<lowbit::ggml::BlockQ4_K>},
    {"q6_K", &make_ggml<lowbit::ggml::BlockQ6_K>},
    {"iq4_nl", &make_ggml<lowbit::ggml::BlockIQ4_NL>},
    {"lowbit4_g128_asym", &make_packed<4, 128>},
    {"lowbit3_g128_asym", &make_packed<3, 128>},
    {"lowbit2_g64_asym", &make_packed<2, 64>},
};

// The weights of the benchmark that runs now; rebuilt when the format or shape changes, so that
// only one set of copies is alive at a time.
ColdWeights* current_weights(const FormatEntry& f, std::int64_t rows, std::int64_t cols) {
  static std::string key;
  static std::unique_ptr<ColdWeights> w;
  const std::string k =
      std::string(f.name) + "/" + std::to_string(rows) + "x" + std::to_string(cols);
  if (k != key) {
    w.reset();
    w = f.make(rows, cols);
    key = k;
  }
  return w.get();
}

using lowbit_bench::executor;

// Read bandwidth now, with `threads` threads (bytes per second): the best of 3 streaming sums
// over 256 MiB, far beyond the LLC, split over the executor as the kernels split their rows.
double probe_bandwidth(int threads) {
  static std::vector<std::uint64_t> buffer((std::size_t{256} << 20) / sizeof(std::uint64_t), 1);
  lowbit::Executor& ex = executor(threads);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::uint64_t totals[2] = {0, 0};
    const auto t0 = std::chrono::steady_clock::now();
    ex.parallel_for(threads, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t part = begin; part < end; ++part) {
        const std::size_t n = buffer.size(), parts = static_cast<std::size_t>(threads);
        const std::size_t b = n * static_cast<std::size_t>(part) / parts;
        const std::size_t e = n * static_cast<std::size_t>(part + 1) / parts;
        totals[part] = lowbit_bench::stream_sum(buffer.data() + b, e - b);
      }
    });
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - t0;
    benchmark::DoNotOptimize(totals);
    best = std::max(best,
                    static_cast<double>(buffer.size() * sizeof(std::uint64_t)) / seconds.count());
  }
  return best;
}

void set_counters(benchmark::State& state, std::int64_t rows, std::int64_t cols, std::int64_t n,
                  std::size_t weight_bytes, double bandwidth) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(weight_bytes));
  // Weight bytes per second / bandwidth, as a rate counter: (bytes / bandwidth) / elapsed.
  state.counters["x_bw"] = benchmark::Counter(
      static_cast<double>(weight_bytes) * static_cast<double>(state.iterations()) / bandwidth,
      benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * static_cast<double>(n) * static_cast<double>(rows) * static_cast<double>(cols) *
          static_cast<double>(state.iterations()) * 1e-9,
      benchmark::Counter::kIsRate);
}

void BM_DequantGemm(benchmark::State& state, const FormatEntry* f, std::int64_t rows,
                    std::int64_t cols, std::int64_t n, int threads) {
  ColdWeights* w = current_weights(*f, rows, cols);
  if (w == nullptr) {
    state.SkipWithError("could not build the weights");
    return;
  }
  const std::vector<float> x = gaussian(static_cast<std::size_t>(n * cols), 1.0f, 3);
  std::vector<float> y(static_cast<std::size_t>(n * rows));
  const auto xv = lowbit::row_major(x.data(), n, cols);
  const auto yv = lowbit::row_major(y.data(), n, rows);
  lowbit::Executor& ex = executor(threads);
  const double bandwidth = probe_bandwidth(threads);
  std::size_t next = 0;
  for (auto _ : state) {
    const lowbit::Status s = lowbit::dequant_gemm(w->views[next], xv, yv, ex);
    if (!s) {
      state.SkipWithError(s.message());
      break;
    }
    next = (next + 1) % w->views.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, rows, cols, n, w->bytes_per_product, bandwidth);
}

// Eigen fp32 weights of the same shape (one copy: at 4 bytes per weight every shape here is at
// least twice a 32 MiB LLC), rows split over the executor's threads as lowbit splits them
// (eigen_baseline.hpp: Eigen compiled for this machine).
void BM_EigenF32(benchmark::State& state, std::int64_t rows, std::int64_t cols, std::int64_t n,
                 int threads) {
  static std::string key;
  static std::vector<float> weights;
  const std::string k = std::to_string(rows) + "x" + std::to_string(cols);
  if (k != key) {
    weights = gaussian(static_cast<std::size_t>(rows * cols), 0.02f, 5);
    key = k;
  }
  const std::vector<float> x = gaussian(static_cast<std::size_t>(n * cols), 1.0f, 3);
  std::vector<float> y(static_cast<std::size_t>(n * rows));
  lowbit::Executor& ex = executor(threads);
  const double bandwidth = probe_bandwidth(threads);
  for (auto _ : state) {
    lowbit_bench::eigen_matmul_f32(weights.data(), rows, cols, x.data(), n, y.data(), ex, threads);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, rows, cols, n, static_cast<std::size_t>(rows * cols) * 4, bandwidth);
  state.SetLabel(lowbit_bench::eigen_simd_name());
}

struct Shape {
  std::int64_t rows, cols;
};
const Shape kShapes[] = {{4096, 4096}, {14336, 4096}, {4096, 14336}};

std::vector<std::int64_t> token_counts(const Shape& s) {
  if (s.rows == 4096 && s.cols == 4096) return {1, 8, 32, 512};
  return {1, 8, 32};
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols);
}

void register_all() {
  benchmark::RegisterBenchmark("BM_MemoryReadBandwidth", lowbit_bench::BM_MemoryReadBandwidth)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  // Shape-major (each shape's weights are built once); for each N and thread count the Eigen
  // baseline first, then the formats, so that the ratios compare runs a few seconds apart.
  for (const Shape& s : kShapes) {
    for (std::int64_t n : token_counts(s)) {
      for (int threads : {1, 2}) {
        const std::string suffix =
            shape_name(s) + "/N" + std::to_string(n) + "/T" + std::to_string(threads);
        benchmark::RegisterBenchmark(("BM_EigenF32/" + suffix).c_str(), BM_EigenF32, s.rows, s.cols,
                                     n, threads)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
        for (const FormatEntry& f : kFormats) {
          benchmark::RegisterBenchmark(
              ("BM_DequantGemm/" + std::string(f.name) + "/" + suffix).c_str(), BM_DequantGemm, &f,
              s.rows, s.cols, n, threads)
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
      }
    }
  }
}

// The bandwidth summary of baselines.hpp, then GFLOP/s against Eigen fp32 of the same shape, N
// and threads (names BM_DequantGemm/<format>/<shape>/N<n>/T<t> and BM_EigenF32/<shape>/...).
class GemmReporter : public lowbit_bench::RatioReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    RatioReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      if (!run.aggregate_name.empty() && run.aggregate_name != "median") continue;
      const auto g = run.counters.find("GFLOP/s");
      const auto x = run.counters.find("x_bw");
      const auto b = run.counters.find("bytes_per_second");
      if (g == run.counters.end() || x == run.counters.end() || b == run.counters.end()) continue;
      const std::string name = run.run_name.str();
      rows_[name] = {g->second.value, x->second.value, b->second.value};
      order_.push_back(name);
    }
  }
  // One line per lowbit benchmark: GFLOP/s, x Eigen (same shape, N, threads), weight GB/s and
  // x_bw (that bandwidth over the read bandwidth probed just before the benchmark).
  void Finalize() override {
    RatioReporter::Finalize();
    std::printf("\n%-58s %9s %9s %9s %7s\n", "benchmark", "GFLOP/s", "x Eigen", "weight GB/s",
                "x_bw");
    for (const std::string& name : order_) {
      const std::string prefix = "BM_DequantGemm/";
      if (name.rfind(prefix, 0) != 0) continue;
      const std::size_t slash = name.find('/', prefix.size());
      const auto e = rows_.find("BM_EigenF32/" + name.substr(slash + 1));
      const Row& r = rows_[name];
      const double eigen = e == rows_.end() ? 0 : e->second.gflops;
      std::printf("%-58s %9.2f %9.3f %11.2f %7.3f\n", name.c_str(), r.gflops,
                  eigen > 0 ? r.gflops / eigen : 0.0, r.bytes / 1e9, r.x_bw);
    }
  }

 private:
  struct Row {
    double gflops, x_bw, bytes;
  };
  std::map<std::string, Row> rows_;
  std::vector<std::string> order_;
};

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("lowbit_isa", lowbit::isa_name(lowbit::best_isa()));
  benchmark::AddCustomContext("eigen_simd", lowbit_bench::eigen_simd_name());
#if defined(__VERSION__)
  benchmark::AddCustomContext("compiler", __VERSION__);
#endif
  GemmReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
