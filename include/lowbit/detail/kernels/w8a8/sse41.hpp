// lowbit/detail/kernels/w8a8/sse41.hpp: the W8A8 GEMM on SSSE3 + SSE4.1 (x86-64 CPUs without
// AVX2), bit-identical to the reference.
//
// The AVX2 kernel (avx2.hpp) at half the width: the sign trick on pmaddubsw (|qw| unsigned times
// qx·sign(qw), pairs ≤ 2·128·127, never saturating), pmaddwd by ones into one int32 lane per row.
// An xmm holds 4 rows × 4 k of a chunk, a quarter of a 16-row panel. The epilogue's fused
// multiply-add with a bias is computed exactly (sse41_fma.hpp): SSE4.1 has no FMA.
//
// Register blocking (16 xmm): a tile is Q quarters (4 rows each) × C tokens, Q·C accumulators.
//   prefill  Q = 2, C = 4: 8 accumulators, 2 weights and their magnitudes, ones, broadcasts
//   decode   Q = 8, C = 1: half a 64-row block per pass, the chunk prefetched four ahead
// The activations are quantized by the scalar reference (K values per token: small next to the
// product, and SSE4.1 would round them no faster).
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/sse41_fma.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace w8a8 {
namespace sse41 {

#define LOWBIT_W8A8_SSE41_INLINE LOWBIT_TARGET_SSE41 inline __attribute__((always_inline))

LOWBIT_W8A8_SSE41_INLINE __m128i broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm_set1_epi32(v);
}

// acc + Σ of 4 products per lane, exact (avx2.hpp's header comment).
LOWBIT_W8A8_SSE41_INLINE __m128i dot(__m128i acc, __m128i w_abs, __m128i w, __m128i x,
                                     __m128i ones) {
  const __m128i pairs = _mm_maddubs_epi16(w_abs, _mm_sign_epi8(x, w));
  return _mm_add_epi32(acc, _mm_madd_epi16(pairs, ones));
}

// Y[t, o .. o+3] from 4 int32 accumulators, in the reference's order: s = sx · sw, v = float(acc),
// y = fma(v, s, b) or v · s. Scales and bias hold rows_padded values, so the loads stay inside.
LOWBIT_W8A8_SSE41_INLINE void store4(const Problem& p, std::int64_t t, std::int64_t o,
                                     __m128i acc) {
  const std::int64_t n = valid_rows(p, o, 4);
  if (n <= 0) return;
  const __m128 s = _mm_mul_ps(_mm_set1_ps(p.x_scale[t]), _mm_loadu_ps(p.w_scale + o));
  const __m128 v = _mm_cvtepi32_ps(acc);
  const __m128 y = p.bias != nullptr ? sse41_fma::fma_float(v, s, _mm_loadu_ps(p.bias + o))
                                     : _mm_mul_ps(v, s);
  if (n == 4 && p.y_col_stride == 1) {
    _mm_storeu_ps(output_at(p, t, o), y);
  } else {
    alignas(16) float tmp[4];
    _mm_store_ps(tmp, y);
    store_partial(p, t, o, tmp, n);
  }
}

// The chunk four ahead of g, when it exists (avx2.hpp measured the distance).
LOWBIT_W8A8_SSE41_INLINE void prefetch_chunk(const std::int8_t* w, std::int64_t g,
                                             std::int64_t groups) {
  constexpr std::int64_t kAhead = 4;
  if (g + kAhead >= groups) return;
  const char* next = reinterpret_cast<const char*>(w + (g + kAhead) * kChunkBytes);
  for (int line = 0; line < 4; ++line) _mm_prefetch(next + 64 * line, _MM_HINT_T0);
}

// Q quarters (rows o .. o + 4Q - 1; `w` is the block's first chunk offset to row o) × C tokens
// (t .. t + C - 1) over all of K. `block` is the block's first chunk, for the prefetch.
template <int Q, int C>
LOWBIT_TARGET_SSE41 inline void tile(const Problem& p, const std::int8_t* block,
                                     const std::int8_t* w, std::int64_t t, std::int64_t o) {
  const std::int64_t kp = p.groups * kGroupK;
  const std::int8_t* x = p.x + t * kp;
  const __m128i ones = _mm_set1_epi16(1);
  __m128i acc[C][Q];
  for (int c = 0; c < C; ++c)
    for (int q = 0; q < Q; ++q) acc[c][q] = _mm_setzero_si128();
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int8_t* wg = w + g * kChunkBytes;
    if (C == 1) prefetch_chunk(block, g, p.groups);
    __m128i xb[C];
    for (int c = 0; c < C; ++c) xb[c] = broadcast4(x + c * kp + g * kGroupK);
    for (int q = 0; q < Q; ++q) {
      const __m128i wv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wg + 16 * q));
      const __m128i wa = _mm_abs_epi8(wv);
      for (int c = 0; c < C; ++c) acc[c][q] = dot(acc[c][q], wa, wv, xb[c], ones);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int q = 0; q < Q; ++q) store4(p, t + c, o + 4 * q, acc[c][q]);
}

constexpr int kTokens = 4;        // C of the prefill tile
constexpr int kPrefillQuarters = 2;  // Q of the prefill tile: 8 rows
constexpr int kDecodeQuarters = 8;   // Q of the decode tile: 32 rows, half a block

// The 8-row strips of one 64-row block (those holding valid rows) for C tokens.
template <int C>
LOWBIT_TARGET_SSE41 inline void sweep_strips(const Problem& p, const std::int8_t* wb,
                                             std::int64_t t, std::int64_t o) {
  constexpr std::int64_t kStripRows = 4 * kPrefillQuarters;
  for (std::int64_t s = 0; s < kBlockRows / kStripRows && o + s * kStripRows < p.rows; ++s)
    tile<kPrefillQuarters, C>(p, wb, wb + s * kStripRows * kGroupK, t, o + s * kStripRows);
}

LOWBIT_TARGET_SSE41 inline void compute(const Problem& p, std::int64_t block_begin,
                                        std::int64_t block_end) {
  constexpr std::int64_t kHalfRows = 4 * kDecodeQuarters;
  for (std::int64_t b = block_begin; b < block_end; ++b) {
    const std::int8_t* wb = p.w + b * p.groups * kChunkBytes;
    const std::int64_t o = b * kBlockRows;
    if (p.tokens == 1) {
      for (std::int64_t h = 0; h < kBlockRows / kHalfRows && o + h * kHalfRows < p.rows; ++h)
        tile<kDecodeQuarters, 1>(p, wb, wb + h * kHalfRows * kGroupK, 0, o + h * kHalfRows);
      continue;
    }
    std::int64_t t = 0;
    // Token tiles outside, strips inside: the tile's activations stay in L1 while the block's
    // weights are re-read from L2, as in avx2.hpp.
    for (; t + kTokens <= p.tokens; t += kTokens) sweep_strips<kTokens>(p, wb, t, o);
    for (; t < p.tokens; ++t) sweep_strips<1>(p, wb, t, o);
  }
}

#undef LOWBIT_W8A8_SSE41_INLINE

inline const Kernel& kernel() {
  static constexpr Kernel k{Isa::kSse41, false, &quantize_reference, &compute};
  return k;
}

}  // namespace sse41
}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
