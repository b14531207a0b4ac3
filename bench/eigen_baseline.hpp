// bench/eigen_baseline.hpp: the fp32 baseline every GEMM/GEMV benchmark is divided by.
//
// Eigen chooses its SIMD width when it is compiled (no run-time dispatch), so a baseline built
// with the benchmarks' portable flags would run SSE2 code and flatter every ratio. Its one
// function therefore lives in eigen_baseline.cpp, compiled with -march=native (bench/CMakeLists),
// while the lowbit kernels are measured as users get them: compiled without -march, dispatched
// at run time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/executor.hpp"

namespace lowbit_bench {

// y (tokens × out, row-major) = x (tokens × in, row-major) · wᵀ, w (out × in, row-major), fp32.
// The output rows are cut into `parts` slices of whole 16-row blocks (Eigen's own parallel GEMM
// needs OpenMP, which the library does not use) run on `executor`, the pool the lowbit kernel of
// the same benchmark runs on, so both sides pay the same scheduling cost.
void eigen_matmul_f32(const float* w, std::int64_t out, std::int64_t in, const float* x,
                      std::int64_t tokens, float* y, lowbit::Executor& executor, int parts);

// The sum of n 64-bit words, read as 8 sequential streams at once (the buffer cut into 8
// slices). This is the memory-read baseline: a single stream leaves most of the memory system's
// parallelism unused (on the 2-vCPU EPYC this was written on, one stream reads ~10 GB/s while an
// fp32 GEMV, reading 4+ rows at once, streams 18-22), and a kernel that "beats the bandwidth" only
// says the baseline is wrong. Compiled with -march=native like the Eigen product, so the loop
// uses the widest vectors this machine has.
std::uint64_t stream_sum(const std::uint64_t* p, std::size_t n);

// Which SIMD Eigen was compiled for in eigen_baseline.cpp ("AVX512", "AVX2+FMA", ...).
const char* eigen_simd_name();

}  // namespace lowbit_bench
