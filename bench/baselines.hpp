// bench/baselines.hpp: the baselines every lowbit benchmark is reported against, measured in the
// same run because this machine (and any CI box) is shared and noisy: only ratios travel.
//
//   BM_MemoryReadBandwidth   a streaming sum (8 streams, eigen_baseline.hpp) over a buffer far
//                            larger than the last-level cache:
//                            the speed limit of anything that reads weights once (GEMV, dequant).
//
// RatioReporter prints, after Google Benchmark's own table, each benchmark's bytes/s as a fraction
// of the bandwidth benchmark's, with the median over repetitions when --benchmark_repetitions
// is given.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "eigen_baseline.hpp"
#include "lowbit/executor.hpp"

namespace lowbit_bench {

// The executors every benchmark runs on: the calling thread for 1, one shared pool of 2 threads
// (created once, not per benchmark) for 2.
inline lowbit::Executor& executor(int threads) {
  static lowbit::SerialExecutor serial;
  static lowbit::ThreadPool pool(2);
  return threads == 1 ? static_cast<lowbit::Executor&>(serial) : pool;
}

// 512 MiB: at least 16x any current last-level cache, so every pass streams from DRAM.
inline constexpr std::size_t kStreamBytes = std::size_t{512} << 20;

inline void BM_MemoryReadBandwidth(benchmark::State& state) {
  static std::vector<std::uint64_t> buffer(kStreamBytes / sizeof(std::uint64_t), 1);
  for (auto _ : state) {
    std::uint64_t total = stream_sum(buffer.data(), buffer.size());
    benchmark::DoNotOptimize(total);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(kStreamBytes));
}

// Console output plus a closing table of bytes/s relative to BM_MemoryReadBandwidth.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      // With repetitions, keep only the median aggregate; without, the single run.
      if (!run.aggregate_name.empty() && run.aggregate_name != "median") continue;
      const auto it = run.counters.find("bytes_per_second");
      if (it == run.counters.end()) continue;
      std::string name = run.run_name.str();
      rates_[name] = it->second.value;
      order_.push_back(name);
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    double bandwidth = 0;
    for (const auto& [name, rate] : rates_)
      if (name.find("MemoryReadBandwidth") != std::string::npos) bandwidth = rate;
    if (bandwidth <= 0) return;
    std::printf("\n%-60s %10s %12s\n", "benchmark", "GB/s", "x bandwidth");
    for (const std::string& name : order_) {
      const double rate = rates_[name];
      std::printf("%-60s %10.2f %12.3f\n", name.c_str(), rate / 1e9, rate / bandwidth);
    }
  }

 private:
  std::map<std::string, double> rates_;
  std::vector<std::string> order_;
};

}  // namespace lowbit_bench
