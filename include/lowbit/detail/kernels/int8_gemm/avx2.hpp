// lowbit/detail/kernels/int8_gemm/avx2.hpp: the int8-activation GEMM on AVX2 (vpmaddubsw +
// vpmaddwd), computing problem.hpp's arithmetic bit for bit.
//
// A ymm holds one 4-byte chunk for 8 rows (half a row block; format/interleaved.hpp), so one
// broadcast 4-byte activation chunk (vpbroadcastd from memory) meets 8 rows at once and each
// 32-bit lane ends as one row's dot product: no horizontal sums.
//
//   4-bit codes (Q4_0, Q4_1, lowbit 4-bit): c ∈ [0, 15] is unsigned, qx ∈ [−127, 127] signed:
//     vpmaddubsw(c, qx) pairs sum to at most 2·15·127 = 3810, so the 8 chunks of a k-block
//     accumulate in int16 (16 products per lane, |sum| ≤ 30480 < 32767, no saturation) and one
//     vpmaddwd by 1 widens per block.
//   IQ4_NL and 8-bit codes are signed (the table spans [−127, 113]): the sign trick
//     vpmaddubsw(|w|, qx·sign(w)) gives w·qx with |w| ≤ 128 unsigned and |qx| ≤ 127, so a pair sum
//     is at most 2·128·127 = 32512: exact; vpmaddwd by 1 widens each chunk to int32. IQ4_NL's
//     table lookup is one vpshufb on the nibbles (the 16 values fit one 128-bit lane).
//
// Register blocking (16 ymm):
//   prefill (tile<F, 4, 1>)  8 rows × 4 tokens: 4 int accumulators, 4 float accumulators, the
//                            weight vectors of one load and the constants; the weight chunk is
//                            unpacked once and used 4 times.
//   decode, N < 4 (decode_rows<F, 2>)  2 row blocks × 16 rows × 1 token in lockstep: two
//                            sequential weight streams (IQ4_NL: one), each with a software
//                            prefetch 2 KiB ahead (problem.hpp); each weight byte is read once
//                            per token.
//   token tails of prefill (tile<F, 1, 2>)  16 rows × 1 token.
// Per k-block, the float epilogue runs once per (8 rows, token): vcvtdq2ps, one vmulps for
// d·dx and one vfmadd (a second for the Q4_1 min) — problem.hpp's order.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace avx2 {

LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) __m256i broadcast_chunk(
    const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) __m256 load_params(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) __m256 load_params(const float* p) {
  return _mm256_loadu_ps(p);
}
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) __m256i load_zero_points(
    const std::int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// The 16 IQ4_NL values in both 128-bit lanes, for vpshufb.
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) __m256i nonlinear_table() {
  return _mm256_broadcastsi128_si256(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(ggml::kIq4NlValues)));
}

// One signed weight chunk w (8 rows per half) against every token's chunk at `offset`, by the
// sign trick, accumulated in int32.
template <int T, int H>
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) void signed_step(
    const __m256i (&w)[H], const std::int8_t* const* qx, int offset, __m256i (&out)[H][T]) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i magnitude[H];
  for (int h = 0; h < H; ++h) magnitude[h] = _mm256_abs_epi8(w[h]);
  for (int t = 0; t < T; ++t) {
    const __m256i x = broadcast_chunk(qx[t] + offset);
    for (int h = 0; h < H; ++h) {
      const __m256i pairs = _mm256_maddubs_epi16(magnitude[h], _mm256_sign_epi8(x, w[h]));
      out[h][t] = _mm256_add_epi32(out[h][t], _mm256_madd_epi16(pairs, ones16));
    }
  }
}

// Raw dot products Σ v(c)·qx of one k-block: out[h][t] for the 8-row half h and token t.
// `block` points at the row block's k-block, already offset to the first half.
template <class F, int T, int H>
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) void block_dots(
    const std::uint8_t* block, const std::int8_t* const* qx, __m256i (&out)[H][T]) {
  if constexpr (F::kCodes == InterleavedCodes::kUnsigned4) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i acc[H][T];
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_si256();
    // Not unrolled: fully unrolled, GCC 12 reassociates the int16 sums into trees and spills
    // the 32 products of a tile to the stack (measured: 25 % slower prefill).
#pragma GCC unroll 1
    for (int v = 0; v < 4; ++v) {
      __m256i lo[H], hi[H];
      for (int h = 0; h < H; ++h) {
        const __m256i raw =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * v + 32 * h));
        lo[h] = _mm256_and_si256(raw, nibble);
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
      }
      for (int t = 0; t < T; ++t) {
        const __m256i xl = broadcast_chunk(qx[t] + 4 * v);
        const __m256i xh = broadcast_chunk(qx[t] + 16 + 4 * v);
        for (int h = 0; h < H; ++h) {
          acc[h][t] = _mm256_add_epi16(acc[h][t], _mm256_maddubs_epi16(lo[h], xl));
          acc[h][t] = _mm256_add_epi16(acc[h][t], _mm256_maddubs_epi16(hi[h], xh));
        }
      }
    }
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) out[h][t] = _mm256_madd_epi16(acc[h][t], ones16);
  } else {
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) out[h][t] = _mm256_setzero_si256();
    if constexpr (F::kCodes == InterleavedCodes::kNonLinear4) {
      const __m256i nibble = _mm256_set1_epi8(0x0F);
      const __m256i table = nonlinear_table();
      for (int v = 0; v < 4; ++v) {
        __m256i lo[H], hi[H];
        for (int h = 0; h < H; ++h) {
          const __m256i raw =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * v + 32 * h));
          lo[h] = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, nibble));
          hi[h] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble));
        }
        signed_step<T, H>(lo, qx, 4 * v, out);
        signed_step<T, H>(hi, qx, 16 + 4 * v, out);
      }
    } else {
      for (int c = 0; c < 8; ++c) {
        __m256i w[H];
        for (int h = 0; h < H; ++h)
          w[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * c + 32 * h));
        signed_step<T, H>(w, qx, 4 * c, out);
      }
    }
  }
}

// One k-block's term of 8 rows for one token, problem.hpp's order: acc + float(isum)·(d·dx), then
// the min form's m·ds. d, z and m are the rows' parameters of the block's group.
template <class F>
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) __m256 accumulate(
    __m256i dot, __m256 d, __m256i z, __m256 m, const ActivationBlock& xb, __m256 acc) {
  const __m256i sum_x = _mm256_set1_epi32(xb.s);
  __m256i isum = dot;
  if constexpr (F::kImplicitZero == 8)
    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sum_x, 3));
  if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
    isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(z, sum_x));
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, _mm256_set1_ps(xb.d)), acc);
  if constexpr (F::kOffset == InterleavedOffset::kMin)
    acc = _mm256_fmadd_ps(m, _mm256_set1_ps(xb.ds), acc);
  return acc;
}

// The parameters of 8 rows (param0: the first one's index) for group g: scales, and the zero
// points or mins the format has.
template <class F>
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) void load_group(
    const Problem& p, std::int64_t param0, std::int64_t g, __m256& d, __m256i& z, __m256& m) {
  using Scale = typename F::Scale;
  z = _mm256_setzero_si256();  // formats without zero points or mins leave these unused
  m = _mm256_setzero_ps();
  d = load_params(static_cast<const Scale*>(p.scales) + param0 + g * kRows);
  if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
    z = load_zero_points(static_cast<const std::int8_t*>(p.offsets) + param0 + g * kRows);
  if constexpr (F::kOffset == InterleavedOffset::kMin)
    m = load_params(static_cast<const Scale*>(p.offsets) + param0 + g * kRows);
}

// Stores 8 rows starting at `row` of token t (fewer at the end), adding the bias.
LOWBIT_TARGET_AVX2 inline __attribute__((always_inline)) void store_half(
    const Problem& p, std::int64_t row, std::int64_t t, __m256 v) {
  const std::int64_t n = valid_rows(p, row, 8);
  if (n <= 0) return;
  if (n == 8 && p.y_col_stride == 1) {
    if (p.bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(p.bias + row));
    _mm256_storeu_ps(p.y + t * p.y_row_stride + row, v);
  } else {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    store_rows(p, t, row, tmp, n);
  }
}

// y for rows [16·rb + 8·half, +8·H) and tokens [t0, t0 + T).
template <class F, int T, int H>
LOWBIT_TARGET_AVX2 inline void tile(const Problem& p, std::int64_t rb, int half, std::int64_t t0) {
  static_assert(F::kImplicitZero == 0 || F::kImplicitZero == 8, "implicit zero points are 0 or 8");
  const std::uint8_t* codes =
      p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes) + 32 * half;
  const std::int64_t param0 = rb * p.groups * kRows + 8 * half;  // row block's first parameter
  const ActivationBlock* x[T];
  for (int t = 0; t < T; ++t) x[t] = p.x + (t0 + t) * p.k_blocks;
  __m256 acc[H][T];
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_ps();

  for (std::int64_t g = 0; g < p.groups; ++g) {
    __m256 d[H], m[H];
    __m256i z[H];
    for (int h = 0; h < H; ++h) load_group<F>(p, param0 + 8 * h, g, d[h], z[h], m[h]);
    const std::int64_t b_end = (g + 1) * p.blocks_per_group;
    for (std::int64_t b = g * p.blocks_per_group; b < b_end; ++b) {
      const std::int8_t* qb[T];
      for (int t = 0; t < T; ++t) qb[t] = x[t][b].q;
      __m256i dots[H][T];
      if constexpr (T == 1) prefetch_codes<F::kBlockBytes>(codes + b * F::kBlockBytes);
      block_dots<F, T, H>(codes + b * F::kBlockBytes, qb, dots);
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h)
          acc[h][t] = accumulate<F>(dots[h][t], d[h], z[h], m[h], x[t][b], acc[h][t]);
    }
  }

  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) store_half(p, rb * kRows + 8 * (half + h), t0 + t, acc[h][t]);
}

// Decode: token t for the 16 rows of each of the R row blocks rbs[0..R) in lockstep, k-block by
// k-block. One row block's codes are one sequential stream, and a single stream per core left the
// weights at ~70% of the read bandwidth (AMD EPYC VM; Eigen's fp32 GEMV streams faster): two in
// flight reach 86–93% (decode_streams below). Each row's operations are tile<F, 1, 2>'s, in the
// same order, so the outputs are the same bits whatever R.
template <class F, int R>
LOWBIT_TARGET_AVX2 inline void decode_rows(const Problem& p, const std::int64_t (&rbs)[R],
                                           std::int64_t t) {
  const std::uint8_t* codes[R];
  std::int64_t param0[R];
  for (int r = 0; r < R; ++r) {
    codes[r] = p.codes + rbs[r] * static_cast<std::int64_t>(p.row_block_bytes);
    param0[r] = rbs[r] * p.groups * kRows;
  }
  const ActivationBlock* x = p.x + t * p.k_blocks;
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (std::int64_t g = 0; g < p.groups; ++g) {
    __m256 d[R][2], m[R][2];
    __m256i z[R][2];
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h)
        load_group<F>(p, param0[r] + 8 * h, g, d[r][h], z[r][h], m[r][h]);
    const std::int64_t b_end = (g + 1) * p.blocks_per_group;
    for (std::int64_t b = g * p.blocks_per_group; b < b_end; ++b) {
      const std::int8_t* qb[1] = {x[b].q};
      for (int r = 0; r < R; ++r) {
        __m256i dots[2][1];
        prefetch_codes<F::kBlockBytes>(codes[r] + b * F::kBlockBytes);
        block_dots<F, 1, 2>(codes[r] + b * F::kBlockBytes, qb, dots);
        for (int h = 0; h < 2; ++h)
          acc[r][h] = accumulate<F>(dots[h][0], d[r][h], z[r][h], m[r][h], x[b], acc[r][h]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) store_half(p, rbs[r] * kRows + 8 * h, t, acc[r][h]);
}

// Streams per format, measured on 14336 × 4096 (1 thread, fraction of the bandwidth re-measured
// in the same run; 1 / 2 / 4 streams): Q4_0 0.71 / 0.88 / 0.92, Q8_0 0.69 / 0.86 / 0.81, lowbit
// u4 g128 0.75 / 0.87 / 0.72, Q4_K 0.86 / 0.93 / 0.69, IQ4_NL 0.68 / 0.62 / 0.56. Past two, the
// per-stream parameters and the sign trick's extra registers spill; IQ4_NL's table lookup and
// sign trick already do at two.
template <class F>
constexpr int decode_streams() {
  return F::kCodes == InterleavedCodes::kNonLinear4 ? 1 : 2;
}

template <class F>
LOWBIT_TARGET_AVX2 inline void gemm(const Problem& p, std::int64_t row_block_begin,
                                    std::int64_t row_block_end) {
  constexpr int kTokens = 4;
  if (p.tokens < kTokens) {
    // Decode and small batches: the task's row blocks as interleaved streams (an equal share of
    // the range each), the row blocks left over one at a time.
    constexpr int kStreams = decode_streams<F>();
    const std::int64_t per_stream = (row_block_end - row_block_begin) / kStreams;
    for (std::int64_t i = 0; i < per_stream; ++i) {
      std::int64_t rbs[kStreams];
      for (int s = 0; s < kStreams; ++s) rbs[s] = row_block_begin + s * per_stream + i;
      for (std::int64_t t = 0; t < p.tokens; ++t) decode_rows<F, kStreams>(p, rbs, t);
    }
    for (std::int64_t rb = row_block_begin + kStreams * per_stream; rb < row_block_end; ++rb)
      for (std::int64_t t = 0; t < p.tokens; ++t) tile<F, 1, 2>(p, rb, 0, t);
    return;
  }
  for (std::int64_t rb = row_block_begin; rb < row_block_end; ++rb) {
    std::int64_t t = 0;
    for (int half = 0; half < 2; ++half) {
      if (rb * kRows + 8 * half >= p.rows) break;
      for (t = 0; t + kTokens <= p.tokens; t += kTokens) tile<F, kTokens, 1>(p, rb, half, t);
    }
    for (; t < p.tokens; ++t) tile<F, 1, 2>(p, rb, 0, t);
  }
}

}  // namespace avx2
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
