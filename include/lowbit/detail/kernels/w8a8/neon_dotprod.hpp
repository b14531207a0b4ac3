// lowbit/detail/kernels/w8a8/neon_dotprod.hpp: the W8A8 GEMM on ARMv8.2 dotprod (sdot: Cortex-A55
// with dotprod, A76 and later, Neoverse N1/V1, Apple M).
//
// sdot adds to each int32 lane the four products of signed bytes, exactly: the layout's 4 k per
// lane is its operand order. The by-element form takes one 32-bit lane of a second register as
// the other operand, so a q register of 16 activation codes of one token (4 groups) feeds four
// sdot per weight register without any broadcast:
//
//   acc[r0..r3] += w(rows r0..r3, k 4g..4g+3) · x(k 4g..4g+3)     sdot v.4s, w.16b, x.4b[g mod 4]
//
// Signed by signed needs no offset or sign trick; the integer sums equal the reference's and the
// epilogue is neon::store4 (the reference's sequence). Register blocking (32 q): prefill R = 1
// panel (4 row quads) × C = 4 tokens = 16 accumulators + 4 activation registers + weights;
// decode R = 4 (the whole 64-row block, one sequential pass) × C = 1.
#pragma once

#include <cstdint>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/w8a8/neon.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"

#if defined(LOWBIT_HAVE_ARM_DOTPROD_KERNELS)

namespace lowbit {
namespace detail {
namespace w8a8 {
namespace neon_dotprod {

// One group (lane L of the activation registers) for every row quad and token.
template <int Q, int C, int L>
LOWBIT_TARGET_NEON_DOTPROD inline __attribute__((always_inline)) void group(
    int32x4_t (&acc)[C][Q], const std::int8_t* wg, const int8x16_t (&xv)[C]) {
#pragma GCC unroll 16
  for (int q = 0; q < Q; ++q) {
    const int8x16_t w = vld1q_s8(wg + 16 * q);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[c][q] = vdotq_laneq_s32(acc[c][q], w, xv[c], L);
  }
}

template <int R, int C>
LOWBIT_TARGET_NEON_DOTPROD inline void tile(const Problem& p, const std::int8_t* w, std::int64_t t,
                                            std::int64_t o) {
  constexpr int Q = 4 * R;
  const std::int64_t kp = p.groups * kGroupK;
  const std::int8_t* x = p.x + t * kp;
  int32x4_t acc[C][Q];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) acc[c][q] = vdupq_n_s32(0);
  // groups is a multiple of 4: one 16-byte load per token covers four groups.
  for (std::int64_t g = 0; g < p.groups; g += 4) {
    int8x16_t xv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) xv[c] = vld1q_s8(x + c * kp + g * kGroupK);
    const std::int8_t* wg = w + g * kChunkBytes;
    group<Q, C, 0>(acc, wg, xv);
    group<Q, C, 1>(acc, wg + kChunkBytes, xv);
    group<Q, C, 2>(acc, wg + 2 * kChunkBytes, xv);
    group<Q, C, 3>(acc, wg + 3 * kChunkBytes, xv);
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) neon::store4(p, t + c, o + 4 * q, acc[c][q]);
}

constexpr int kTokens = 4;

template <int C>
LOWBIT_TARGET_NEON_DOTPROD inline void sweep_panels(const Problem& p, const std::int8_t* wb,
                                                    std::int64_t t, std::int64_t o) {
  for (std::int64_t q = 0; q < kBlockRows / kPanelRows && o + q * kPanelRows < p.rows; ++q)
    tile<1, C>(p, wb + q * kPanelRows * kGroupK, t, o + q * kPanelRows);
}

LOWBIT_TARGET_NEON_DOTPROD inline void compute(const Problem& p, std::int64_t block_begin,
                                               std::int64_t block_end) {
  for (std::int64_t b = block_begin; b < block_end; ++b) {
    const std::int8_t* wb = p.w + b * p.groups * kChunkBytes;
    const std::int64_t o = b * kBlockRows;
    std::int64_t t = 0;
    for (; t + kTokens <= p.tokens; t += kTokens) sweep_panels<kTokens>(p, wb, t, o);
    switch (p.tokens - t) {
      case 1: tile<4, 1>(p, wb, t, o); break;
      case 2: sweep_panels<2>(p, wb, t, o); break;
      case 3: sweep_panels<3>(p, wb, t, o); break;
      default: break;
    }
  }
}

inline const Kernel& kernel() {
  static constexpr Kernel k{Isa::kNeonDotprod, false, &neon::quantize, &compute};
  return k;
}

}  // namespace neon_dotprod
}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_DOTPROD_KERNELS
