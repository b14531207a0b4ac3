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
//   decode / token tails (tile<F, 1, 2>)  16 rows × 1 token: each weight byte is read once, in
//                            address order, with a software prefetch 2 KiB ahead (problem.hpp).
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

// y for rows [16·rb + 8·half, +8·H) and tokens [t0, t0 + T).
template <class F, int T, int H>
LOWBIT_TARGET_AVX2 inline void tile(const Problem& p, std::int64_t rb, int half, std::int64_t t0) {
  using Scale = typename F::Scale;
  static_assert(F::kImplicitZero == 0 || F::kImplicitZero == 8, "implicit zero points are 0 or 8");
  const std::uint8_t* codes =
      p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes) + 32 * half;
  const std::int64_t param0 = rb * p.groups * kRows + 8 * half;  // row block's first parameter
  const Scale* scales = static_cast<const Scale*>(p.scales) + param0;
  const ActivationBlock* x[T];
  for (int t = 0; t < T; ++t) x[t] = p.x + (t0 + t) * p.k_blocks;
  __m256 acc[H][T];
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_ps();

  for (std::int64_t g = 0; g < p.groups; ++g) {
    __m256 d[H];
    __m256i z[H];
    __m256 m[H];
    for (int h = 0; h < H; ++h) {
      d[h] = load_params(scales + g * kRows + 8 * h);
      if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
        z[h] = load_zero_points(static_cast<const std::int8_t*>(p.offsets) + param0 + g * kRows +
                                8 * h);
      if constexpr (F::kOffset == InterleavedOffset::kMin)
        m[h] = load_params(static_cast<const Scale*>(p.offsets) + param0 + g * kRows + 8 * h);
    }
    const std::int64_t b_end = (g + 1) * p.blocks_per_group;
    for (std::int64_t b = g * p.blocks_per_group; b < b_end; ++b) {
      const std::int8_t* qb[T];
      for (int t = 0; t < T; ++t) qb[t] = x[t][b].q;
      __m256i dots[H][T];
      if constexpr (T == 1) prefetch_codes<F::kBlockBytes>(codes + b * F::kBlockBytes);
      block_dots<F, T, H>(codes + b * F::kBlockBytes, qb, dots);
      for (int t = 0; t < T; ++t) {
        const ActivationBlock& xb = x[t][b];
        const __m256 scale_x = _mm256_set1_ps(xb.d);
        const __m256i sum_x = _mm256_set1_epi32(xb.s);
        for (int h = 0; h < H; ++h) {
          __m256i isum = dots[h][t];
          if constexpr (F::kImplicitZero == 8)
            isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sum_x, 3));
          if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
            isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(z[h], sum_x));
          acc[h][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d[h], scale_x), acc[h][t]);
          if constexpr (F::kOffset == InterleavedOffset::kMin)
            acc[h][t] = _mm256_fmadd_ps(m[h], _mm256_set1_ps(xb.ds), acc[h][t]);
        }
      }
    }
  }

  for (int h = 0; h < H; ++h) {
    const std::int64_t row = rb * kRows + 8 * (half + h);
    const std::int64_t n = valid_rows(p, row, 8);
    if (n <= 0) continue;
    for (int t = 0; t < T; ++t) {
      if (n == 8 && p.y_col_stride == 1) {
        __m256 v = acc[h][t];
        if (p.bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(p.bias + row));
        _mm256_storeu_ps(p.y + (t0 + t) * p.y_row_stride + row, v);
      } else {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, acc[h][t]);
        store_rows(p, t0 + t, row, tmp, n);
      }
    }
  }
}

template <class F>
LOWBIT_TARGET_AVX2 inline void gemm(const Problem& p, std::int64_t row_block_begin,
                                    std::int64_t row_block_end) {
  constexpr int kTokens = 4;
  for (std::int64_t rb = row_block_begin; rb < row_block_end; ++rb) {
    std::int64_t t = 0;
    if (p.tokens >= kTokens) {
      for (int half = 0; half < 2; ++half) {
        if (rb * kRows + 8 * half >= p.rows) break;
        for (t = 0; t + kTokens <= p.tokens; t += kTokens) tile<F, kTokens, 1>(p, rb, half, t);
      }
    }
    for (; t < p.tokens; ++t) tile<F, 1, 2>(p, rb, 0, t);
  }
}

}  // namespace avx2
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
