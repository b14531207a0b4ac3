// lowbit/detail/kernels/int8_gemm/reference.hpp: the int8-activation GEMM in the simplest correct
// form, reading the weights through InterleavedWeights' element accessors (one element per
// call). It is the scalar dispatch path and the oracle every SIMD path is compared with, bit for
// bit; problem.hpp states the arithmetic.
#pragma once

#include <cmath>
#include <cstdint>

#include "lowbit/detail/kernels/int8_gemm/problem.hpp"

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace reference {

inline void gemm(const Problem& p, std::int64_t row_block_begin,
                 std::int64_t row_block_end) noexcept {
  const InterleavedWeights& w = *p.weights;
  const bool min_form = w.offset_kind() == InterleavedOffset::kMin;
  const std::int64_t row_end =
      valid_rows(p, row_block_begin * kRows, (row_block_end - row_block_begin) * kRows) +
      row_block_begin * kRows;
  for (std::int64_t r = row_block_begin * kRows; r < row_end; ++r) {
    for (std::int64_t t = 0; t < p.tokens; ++t) {
      float acc = 0.0f;
      for (std::int64_t b = 0; b < p.k_blocks; ++b) {
        const ActivationBlock& x = p.x[t * p.k_blocks + b];
        const std::int64_t k0 = b * kBlock;
        std::int32_t dot = 0;
        for (std::int64_t e = 0; e < kBlock; ++e) dot += w.value(r, k0 + e) * x.q[e];
        const std::int32_t isum = dot - w.zero_point(r, k0) * x.s;
        acc = std::fma(static_cast<float>(isum), w.scale(r, k0) * x.d, acc);
        if (min_form) acc = std::fma(w.min(r, k0), x.ds, acc);
      }
      store_rows(p, t, r, &acc, 1);
    }
  }
}

}  // namespace reference
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit
