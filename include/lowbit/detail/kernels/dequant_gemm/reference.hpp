// lowbit/detail/kernels/dequant_gemm/reference.hpp: the scalar dequant-GEMM, the oracle of every
// SIMD path and the path of CPUs that have none of them (Isa::kScalar).
//
// It is the plainest statement of what all paths compute:
//
//   y[t][r] = float( sum_k double(w[r][k]) * double(x[t][k]) + double(bias[r]) )
//
// with w[r][k] from the format's byte-exact dequantizer (dequant_ggml/reference.hpp,
// dequant_packed/reference.hpp) and the sum taken in double in increasing k. Each product of two
// floats is exact in double (24 + 24 significant bits < 53), so the only roundings are the
// double additions (relative error below K * 2^-53, far under float resolution) and the final
// conversion: the result is float32's rounding of an almost exact dot product, and a test can
// reproduce it bit for bit from the dequantized weights alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"
#include "lowbit/detail/kernels/dequant_ggml/reference.hpp"
#include "lowbit/detail/kernels/dequant_packed/reference.hpp"
#include "lowbit/executor.hpp"

namespace lowbit {
namespace detail {
namespace dequant {
namespace reference {

inline DecodeRowFn* row_decoder(const Weights& w) noexcept {
  return w.format == Format::kPacked ? &decode_packed_row : ggml_row_decoder(w.format);
}

// Rows [r0, r1) for every token; acc holds p.tokens doubles.
inline void gemm_rows(const Weights& w, const Problem& p, std::int64_t r0, std::int64_t r1,
                      double* acc) noexcept {
  DecodeRowFn* decode = row_decoder(w);
  float row[kChunk];
  for (std::int64_t r = r0; r < r1; ++r) {
    for (std::int64_t t = 0; t < p.tokens; ++t) acc[t] = 0.0;
    for (std::int64_t k0 = 0; k0 < w.cols; k0 += kChunk) {
      const std::int64_t count = std::min(kChunk, w.cols - k0);
      decode(w, r, k0, count, row);
      for (std::int64_t t = 0; t < p.tokens; ++t) {
        const float* x = p.x + t * p.x_stride + k0;
        double s = acc[t];
        for (std::int64_t i = 0; i < count; ++i)
          s += static_cast<double>(row[i]) * static_cast<double>(x[i]);
        acc[t] = s;
      }
    }
    const double b = p.bias != nullptr ? static_cast<double>(p.bias[r * p.bias_stride]) : 0.0;
    for (std::int64_t t = 0; t < p.tokens; ++t)
      p.y[t * p.y_stride + r] = static_cast<float>(acc[t] + b);
  }
}

inline void run(const Weights& w, const Problem& p, Executor& executor) {
  executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> acc(static_cast<std::size_t>(p.tokens));
    gemm_rows(w, p, begin * kRowsPerTask, std::min(end * kRowsPerTask, w.rows), acc.data());
  });
}

}  // namespace reference
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit
