// bench/eigen_baseline.cpp: Eigen fp32 matrix products, compiled with -march=native (see
// eigen_baseline.hpp for why).
#include "eigen_baseline.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <vector>

namespace lowbit_bench {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

void rows(const float* w, std::int64_t first, std::int64_t count, std::int64_t in, const float* x,
          std::int64_t tokens, std::int64_t out, float* y) {
  const Eigen::Map<const RowMajor> wm(w + first * in, count, in);
  const Eigen::Map<const RowMajor> xm(x, tokens, in);
  // y's columns [first, first + count): a strided block of the row-major output.
  Eigen::Map<RowMajor, 0, Eigen::OuterStride<>> ym(y + first, tokens, count,
                                                   Eigen::OuterStride<>(out));
  if (tokens == 1)
    ym.row(0).noalias() = (wm * xm.row(0).transpose()).transpose();
  else
    ym.noalias() = xm * wm.transpose();
}

}  // namespace

void eigen_matmul_f32(const float* w, std::int64_t out, std::int64_t in, const float* x,
                      std::int64_t tokens, float* y, lowbit::Executor& executor, int parts) {
  if (parts <= 1) {
    rows(w, 0, out, in, x, tokens, out, y);
    return;
  }
  // Slices of whole 16-row blocks, so every slice keeps Eigen's register blocking.
  const std::int64_t blocks = (out + 15) / 16;
  executor.parallel_for(parts, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; ++t) {
      const std::int64_t b0 = blocks * t / parts, b1 = blocks * (t + 1) / parts;
      const std::int64_t first = b0 * 16, last = std::min(out, b1 * 16);
      if (first < last) rows(w, first, last - first, in, x, tokens, out, y);
    }
  });
}

std::uint64_t stream_sum(const std::uint64_t* p, std::size_t n) {
  constexpr std::size_t kStreams = 8;
  const std::size_t slice = n / kStreams;
  std::uint64_t total = 0;
  // Integer adds are associative, so the compiler vectorises across i and the loop is bound by
  // the loads of the 8 streams.
  for (std::size_t i = 0; i < slice; ++i) {
    std::uint64_t row = 0;
    for (std::size_t s = 0; s < kStreams; ++s) row += p[s * slice + i];
    total += row;
  }
  for (std::size_t i = kStreams * slice; i < n; ++i) total += p[i];
  return total;
}

const char* eigen_simd_name() { return Eigen::SimdInstructionSetsInUse(); }

}  // namespace lowbit_bench
