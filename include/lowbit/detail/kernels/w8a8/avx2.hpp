// lowbit/detail/kernels/w8a8/avx2.hpp: the W8A8 GEMM on AVX2 (vpmaddubsw), and the AVX2
// activation quantizer that the VNNI paths share.
//
// AVX2's only byte multiply, vpmaddubsw, multiplies unsigned bytes by signed bytes and adds
// adjacent pairs into a *saturating* int16. The +128 offset that VNNI uses does not fit it:
// (qx + 128) ∈ [1, 255] times qw ∈ [-128, 127], twice, reaches 65280 and would saturate. So this
// path moves the signs instead (the sign trick):
//
//   qx · qw = |qw| · (qx · sign(qw))        u8 = |qw| ∈ [0, 128]   (vpabsb; |-128| = 0x80 = 128)
//                                          s8 = qx · sign(qw) ∈ [-127, 127]   (vpsignb)
//
// A pair sums to at most 2 · 128 · 127 = 32512 < 32767: never saturates, so the int16 pairs, then
// vpmaddwd by ones into int32 lanes of 4 products, then vpaddd, give the exact integer acc. The
// signs go onto the activation because activations never hold -128 (their codes are clamped to
// ±127 and pre-quantized inputs with -128 are refused): the other way round, |qx| with
// sign(qw, qx), would negate a weight of -128, which has no int8 negation.
//
// Register blocking (16 ymm): a tile is R panels of 16 rows (2 ymm each) times C tokens, with 2RC
// int32 accumulators; per group of 4 k it loads 2R weight vectors (their |qw| once), broadcasts
// each token's 4 codes, and issues 4 operations per accumulator (sign, maddubs, maddwd, add).
//   prefill  R = 1, C = 4: 8 accumulators, 2 weights + 2 |weights|, ones, a broadcast, temporaries
//   decode   R = 4, C = 1: one sequential pass over the 256-byte chunks of the 64-row block
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace w8a8 {
namespace avx2 {

#define LOWBIT_W8A8_AVX2_INLINE LOWBIT_TARGET_AVX2 inline __attribute__((always_inline))

LOWBIT_W8A8_AVX2_INLINE __m256i broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

// acc + Σ of 4 products per lane, exact (see the header comment).
LOWBIT_W8A8_AVX2_INLINE __m256i dot(__m256i acc, __m256i w_abs, __m256i w, __m256i x,
                                    __m256i ones) {
  const __m256i pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
}

// Y[t, o .. o+7] from 8 int32 accumulators (already corrected by the caller if offset), in the
// reference's order: s = sx · sw, v = float(acc), y = fma(v, s, b) or v · s.
LOWBIT_W8A8_AVX2_INLINE void store8(const Problem& p, std::int64_t t, std::int64_t o,
                                    __m256i acc) {
  const std::int64_t n = valid_rows(p, o, 8);
  if (n <= 0) return;
  const __m256 s = _mm256_mul_ps(_mm256_set1_ps(p.x_scale[t]), _mm256_loadu_ps(p.w_scale + o));
  const __m256 v = _mm256_cvtepi32_ps(acc);
  const __m256 y = p.bias != nullptr ? _mm256_fmadd_ps(v, s, _mm256_loadu_ps(p.bias + o))
                                     : _mm256_mul_ps(v, s);
  if (n == 8 && p.y_col_stride == 1) {
    _mm256_storeu_ps(output_at(p, t, o), y);
  } else {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, y);
    store_partial(p, t, o, tmp, n);
  }
}

// Decode (C = 1) reads the weights once, as one sequential stream per thread, and a single stream
// does not keep enough loads in flight to reach the DRAM bandwidth (on the Zen 3 test machine a
// plain streaming sum reaches ~60% of what several streams do). Prefetching the chunk four ahead
// (1 KiB, measured best of 1/2/4 KiB) brought decode from ~15 to ~18 GB/s per CPU-second there.
constexpr std::int64_t kPrefetchChunks = 4;

// Prefetches the 256-byte chunk `ahead` chunks past g when it exists (never forms a pointer past
// the weights).
LOWBIT_W8A8_AVX2_INLINE void prefetch_chunk(const std::int8_t* w, std::int64_t g,
                                            std::int64_t groups) {
  if (g + kPrefetchChunks >= groups) return;
  const char* next = reinterpret_cast<const char*>(w + (g + kPrefetchChunks) * kChunkBytes);
  _mm_prefetch(next, _MM_HINT_T0);
  _mm_prefetch(next + 64, _MM_HINT_T0);
  _mm_prefetch(next + 128, _MM_HINT_T0);
  _mm_prefetch(next + 192, _MM_HINT_T0);
}

// R panels (rows o .. o + 16R - 1, starting `w` bytes into the block's chunks) × C tokens
// (t .. t + C - 1) over all of K.
template <int R, int C>
LOWBIT_TARGET_AVX2 inline void tile(const Problem& p, const std::int8_t* w, std::int64_t t,
                                    std::int64_t o) {
  const std::int64_t kp = p.groups * kGroupK;
  const std::int8_t* x = p.x + t * kp;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[C][2 * R];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < 2 * R; ++r) acc[c][r] = _mm256_setzero_si256();
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int8_t* wg = w + g * kChunkBytes;
    if (C == 1) prefetch_chunk(w, g, p.groups);
#pragma GCC unroll 8
    for (int r = 0; r < 2 * R; ++r) {
      const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(wg + 32 * r));
      const __m256i wa = _mm256_abs_epi8(wv);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c)
        acc[c][r] = dot(acc[c][r], wa, wv, broadcast4(x + c * kp + g * kGroupK), ones);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 8
    for (int r = 0; r < 2 * R; ++r) store8(p, t + c, o + 8 * r, acc[c][r]);
}

constexpr int kTokens = 4;  // C of the prefill tile

// Every panel of one 64-row block (those holding valid rows) for C tokens.
template <int C>
LOWBIT_TARGET_AVX2 inline void sweep_panels(const Problem& p, const std::int8_t* wb, std::int64_t t,
                                            std::int64_t o) {
  for (std::int64_t q = 0; q < kBlockRows / kPanelRows && o + q * kPanelRows < p.rows; ++q)
    tile<1, C>(p, wb + q * kPanelRows * kGroupK, t, o + q * kPanelRows);
}

LOWBIT_TARGET_AVX2 inline void compute(const Problem& p, std::int64_t block_begin,
                                       std::int64_t block_end) {
  for (std::int64_t b = block_begin; b < block_end; ++b) {
    const std::int8_t* wb = p.w + b * p.groups * kChunkBytes;
    const std::int64_t o = b * kBlockRows;
    std::int64_t t = 0;
    // Token tiles outside, panels inside: the tile's activations stay in L1 while the block's
    // weights (64 · Kp bytes) are re-read from L2.
    for (; t + kTokens <= p.tokens; t += kTokens) sweep_panels<kTokens>(p, wb, t, o);
    switch (p.tokens - t) {
      case 1: tile<4, 1>(p, wb, t, o); break;
      case 2: sweep_panels<2>(p, wb, t, o); break;
      case 3: sweep_panels<3>(p, wb, t, o); break;
      default: break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The activation quantizer: the reference's operations on 8 lanes. max is exact and order-free,
// vdivps is the correctly rounded division, vroundps(nearest) is rint, so codes and steps equal
// quantize_token_scalar's; the last K mod 32 values take that scalar code itself.

template <bool Offset>
LOWBIT_TARGET_AVX2 inline void quantize_token(const float* x, std::int64_t k, std::int8_t* codes,
                                              std::int64_t kp, float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 fmax = _mm256_set1_ps(FLT_MAX);
  __m256 vmax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
    vmax = _mm256_max_ps(vmax, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));  // NaN or Inf
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float absmax = 0.0f;
  for (int l = 0; l < 8; ++l) absmax = lanes[l] > absmax ? lanes[l] : absmax;
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; i < k; ++i) {
    const float a = std::fabs(x[i]);
    if (!(a <= FLT_MAX)) finite = false;
    absmax = a > absmax ? a : absmax;
  }
  if (!finite) {
    std::memset(codes, Offset ? 0x80 : 0, static_cast<std::size_t>(kp));
    *scale = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const float step = smoothquant_step(absmax);
  const __m256 vstep = _mm256_set1_ps(step);
  const __m256 lo = _mm256_set1_ps(-static_cast<float>(kActMax));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(kActMax));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  i = 0;
  for (; i + 32 <= k; i += 32) {
    __m256i q[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i + 8 * j), vstep);
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
    }
    // packs interleave 128-bit lanes: dwords come out as 0,2,4,6 | 1,3,5,7 of the 4-code groups.
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
                                         _mm256_packs_epi32(q[2], q[3]));
    __m256i out = _mm256_permutevar8x32_epi32(b, order);
    if (Offset) out = _mm256_xor_si256(out, flip);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), out);
  }
  for (; i < k; ++i) codes[i] = stored_code(smoothquant_code(x[i], step), Offset);
  for (; i < kp; ++i) codes[i] = stored_code(0, Offset);
  *scale = step;
}

template <bool Offset>
LOWBIT_TARGET_AVX2 inline void quantize(const QuantizeArgs& a, std::int64_t token_begin,
                                        std::int64_t token_end) {
  for (std::int64_t t = token_begin; t < token_end; ++t) {
    if (a.x.col_stride() == 1)
      quantize_token<Offset>(&a.x(t, 0), a.x.cols(), a.codes + t * a.kp, a.kp, a.scales + t);
    else
      quantize_token_scalar(&a.x(t, 0), a.x.cols(), a.x.col_stride(), a.codes + t * a.kp, a.kp,
                            a.scales + t, Offset);
  }
}

#undef LOWBIT_W8A8_AVX2_INLINE

inline const Kernel& kernel() {
  static constexpr Kernel k{Isa::kAvx2, false, &quantize<false>, &compute};
  return k;
}

}  // namespace avx2
}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
