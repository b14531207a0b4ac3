// lowbit/detail/kernels/w8a8/avx_vnni.hpp: the W8A8 GEMM on AVX-VNNI (vpdpbusd on ymm: Alder
// Lake, Zen 5), the AVX2 kernel's structure with one instruction per accumulator update.
//
// vpdpbusd adds to each int32 lane the four products of unsigned bytes (first source) by signed
// bytes (second source), without saturation. The activations become the unsigned operand by the
// +128 offset, stored by the quantizer as qx XOR 0x80 = qx + 128 ∈ [1, 255]:
//
//   Σ_k (qx + 128) · qw = acc + 128 · Σ_k qw        so    acc = dpbusd result − w_sum[o]
//
// with w_sum[o] = 128 · Σ_k qw[o, k] computed once when the weights are prepared. Padding is exact:
// padded k have qw = 0. The raw sum can leave int32 (255 · 128 · K), but vpdpbusd and vpsubd
// wrap modulo 2^32 and the true acc fits int32 (K <= kMaxK), so the wrapped difference is exactly
// acc: the same integer as the reference, then the same epilogue (avx2::store8).
//
// Register blocking (16 ymm): prefill R = 1 panel (2 ymm of weights) × C = 6 tokens = 12
// accumulators + 2 weights + 1 broadcast; decode R = 4, C = 1.
#pragma once

#include <cstdint>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/w8a8/avx2.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace w8a8 {
namespace avx_vnni {

template <int R, int C>
LOWBIT_TARGET_AVX_VNNI inline void tile(const Problem& p, const std::int8_t* w, std::int64_t t,
                                        std::int64_t o) {
  const std::int64_t kp = p.groups * kGroupK;
  const std::int8_t* x = p.x + t * kp;
  __m256i acc[C][2 * R];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < 2 * R; ++r) acc[c][r] = _mm256_setzero_si256();
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int8_t* wg = w + g * kChunkBytes;
    if (C == 1) avx2::prefetch_chunk(w, g, p.groups);
    __m256i wv[2 * R];
#pragma GCC unroll 8
    for (int r = 0; r < 2 * R; ++r)
      wv[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + 32 * r));
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const __m256i xb = avx2::broadcast4(x + c * kp + g * kGroupK);
#pragma GCC unroll 8
      for (int r = 0; r < 2 * R; ++r) acc[c][r] = _mm256_dpbusd_avx_epi32(acc[c][r], xb, wv[r]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < 2 * R; ++r) {
      const __m256i sum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.w_sum + o + 8 * r));
      avx2::store8(p, t + c, o + 8 * r, _mm256_sub_epi32(acc[c][r], sum));
    }
}

constexpr int kTokens = 6;

template <int C>
LOWBIT_TARGET_AVX_VNNI inline void sweep_panels(const Problem& p, const std::int8_t* wb,
                                                std::int64_t t, std::int64_t o) {
  for (std::int64_t q = 0; q < kBlockRows / kPanelRows && o + q * kPanelRows < p.rows; ++q)
    tile<1, C>(p, wb + q * kPanelRows * kGroupK, t, o + q * kPanelRows);
}

LOWBIT_TARGET_AVX_VNNI inline void compute(const Problem& p, std::int64_t block_begin,
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
      case 4: sweep_panels<4>(p, wb, t, o); break;
      case 5: sweep_panels<5>(p, wb, t, o); break;
      default: break;
    }
  }
}

inline const Kernel& kernel() {
  static constexpr Kernel k{Isa::kAvxVnni, true, &avx2::quantize<true>, &compute};
  return k;
}

}  // namespace avx_vnni
}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
