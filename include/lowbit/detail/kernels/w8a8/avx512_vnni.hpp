// lowbit/detail/kernels/w8a8/avx512_vnni.hpp: the W8A8 GEMM on AVX-512 VNNI (vpdpbusd on zmm:
// Cascade Lake, Ice Lake, Zen 4/5), the AVX-VNNI kernel widened to 16 rows per register.
//
// Arithmetic as in avx_vnni.hpp: activations stored as qx + 128 (unsigned), weights signed,
// vpdpbusd accumulates without saturation and wraps modulo 2^32, acc = result − w_sum[o] is the
// reference's exact integer, and the epilogue is the reference's sequence (s = sx · sw,
// v = float(acc), y = fma(v, s, b) or v · s) on 16 lanes.
//
// Register blocking (32 zmm): a 64-row block's chunk of one group is 4 zmm (256 contiguous bytes),
// so a tile is the whole block (4 panels) × C = 6 tokens = 24 accumulators + 4 weights + 1
// broadcast; per group 4 loads and 6 broadcasts feed 24 vpdpbusd. Decode (C = 1) streams the
// block's chunks in one sequential pass.
#pragma once

#include <cstdint>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/w8a8/avx2.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace w8a8 {
namespace avx512_vnni {

// Y[t, o .. o+15] from 16 corrected accumulators.
LOWBIT_TARGET_AVX512_VNNI inline __attribute__((always_inline)) void store16(
    const Problem& p, std::int64_t t, std::int64_t o, __m512i acc) {
  const std::int64_t n = valid_rows(p, o, 16);
  if (n <= 0) return;
  const __m512 s = _mm512_mul_ps(_mm512_set1_ps(p.x_scale[t]), _mm512_loadu_ps(p.w_scale + o));
  // The zero-masked form with a full mask is vcvtdq2ps itself; the unmasked intrinsic trips GCC
  // 12's -Wmaybe-uninitialized on its _mm512_undefined_ps (GCC bug 105593, fixed in GCC 13).
  const __m512 v = _mm512_maskz_cvtepi32_ps(static_cast<__mmask16>(0xFFFF), acc);
  const __m512 y = p.bias != nullptr ? _mm512_fmadd_ps(v, s, _mm512_loadu_ps(p.bias + o))
                                     : _mm512_mul_ps(v, s);
  if (p.y_col_stride == 1) {
    const __mmask16 mask = static_cast<__mmask16>(n == 16 ? 0xFFFF : (1u << n) - 1u);
    _mm512_mask_storeu_ps(output_at(p, t, o), mask, y);
  } else {
    alignas(64) float tmp[16];
    _mm512_store_ps(tmp, y);
    store_partial(p, t, o, tmp, n);
  }
}

// The block's 4 panels (rows o .. o+63) × C tokens (t .. t+C-1) over all of K.
template <int C>
LOWBIT_TARGET_AVX512_VNNI inline void tile(const Problem& p, const std::int8_t* wb, std::int64_t t,
                                           std::int64_t o) {
  constexpr int R = kBlockRows / kPanelRows;
  const std::int64_t kp = p.groups * kGroupK;
  const std::int8_t* x = p.x + t * kp;
  __m512i acc[C][R];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[c][r] = _mm512_setzero_si512();
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int8_t* wg = wb + g * kChunkBytes;
    if (C == 1) avx2::prefetch_chunk(wb, g, p.groups);
    __m512i wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) wv[r] = _mm512_load_si512(wg + 64 * r);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      std::int32_t xv;
      std::memcpy(&xv, x + c * kp + g * kGroupK, sizeof xv);
      const __m512i xb = _mm512_set1_epi32(xv);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[c][r] = _mm512_dpbusd_epi32(acc[c][r], xb, wv[r]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (o + 16 * r >= p.rows) break;
      const __m512i sum = _mm512_loadu_si512(p.w_sum + o + 16 * r);
      store16(p, t + c, o + 16 * r, _mm512_sub_epi32(acc[c][r], sum));
    }
}

constexpr int kTokens = 6;

LOWBIT_TARGET_AVX512_VNNI inline void compute(const Problem& p, std::int64_t block_begin,
                                              std::int64_t block_end) {
  for (std::int64_t b = block_begin; b < block_end; ++b) {
    const std::int8_t* wb = p.w + b * p.groups * kChunkBytes;
    const std::int64_t o = b * kBlockRows;
    std::int64_t t = 0;
    for (; t + kTokens <= p.tokens; t += kTokens) tile<kTokens>(p, wb, t, o);
    switch (p.tokens - t) {
      case 1: tile<1>(p, wb, t, o); break;
      case 2: tile<2>(p, wb, t, o); break;
      case 3: tile<3>(p, wb, t, o); break;
      case 4: tile<4>(p, wb, t, o); break;
      case 5: tile<5>(p, wb, t, o); break;
      default: break;
    }
  }
}

inline const Kernel& kernel() {
  static constexpr Kernel k{Isa::kAvx512Vnni, true, &avx2::quantize<true>, &compute};
  return k;
}

}  // namespace avx512_vnni
}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
