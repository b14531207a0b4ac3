// lowbit/detail/kernels/int8_gemm/sse41.hpp: the int8-activation GEMM on SSSE3 + SSE4.1 (x86-64
// CPUs without AVX2: Nehalem to Ivy Bridge, Silvermont/Goldmont Atoms, VMs masked to
// x86-64-v2), computing problem.hpp's arithmetic bit for bit.
//
// The integer part is the AVX2 kernel's (avx2.hpp) at half the width: an xmm holds one 4-byte
// chunk of 4 rows (a quarter of a row block), one broadcast activation chunk meets the 4 rows, and
// pmaddubsw + pmaddwd leave one row's chunk dot per 32-bit lane. The same bounds hold: 4-bit
// codes accumulate a whole k-block in int16; IQ4_NL and 8-bit codes use the sign trick and widen
// per chunk.
//
// Two things AVX2 has and SSE4.1 lacks:
//   - F16C: half scales are converted with integer operations (load_params), exactly as
//     lowbit::to_float does, and without float arithmetic on subnormal inputs, so that a caller's
//     denormals-are-zero mode does not change a scale.
//   - FMA: problem.hpp's acc = fma(float(isum), d·dx, acc) is one rounding; a multiply then an
//     add would round twice and differ from every other path in the last bit now and then.
//     sse41_fma.hpp computes the fused operation exactly in double instead. Its cost, about 20
//     instructions per 2 lanes, makes this path's epilogue as dear as its dot products: the
//     price of identical results.
//
// Register blocking (16 xmm): prefill 4 rows × 4 tokens (tile<F, 4, 1>), decode 16 rows × 1
// token (tile<F, 1, 4>) with problem.hpp's software prefetch.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"
#include "lowbit/detail/kernels/sse41_fma.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace sse41 {

LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128i broadcast_chunk(
    const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm_set1_epi32(v);
}

// Four halves to float as lowbit::to_float: normal values and Inf/NaN by moving the exponent
// (NaN made quiet), subnormals as m · 2^-24 from an exact integer conversion.
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128 load_params(const Half* p) {
  std::uint64_t raw;
  std::memcpy(&raw, p, sizeof raw);
  const __m128i h = _mm_cvtepu16_epi32(_mm_cvtsi64_si128(static_cast<long long>(raw)));
  const __m128i sign = _mm_slli_epi32(_mm_and_si128(h, _mm_set1_epi32(0x8000)), 16);
  const __m128i magnitude = _mm_and_si128(h, _mm_set1_epi32(0x7FFF));
  const __m128i mantissa = _mm_and_si128(h, _mm_set1_epi32(0x3FF));
  __m128i bits = _mm_add_epi32(_mm_slli_epi32(magnitude, 13), _mm_set1_epi32(112 << 23));
  const __m128i inf_nan = _mm_cmpgt_epi32(magnitude, _mm_set1_epi32(0x7BFF));
  const __m128i nan = _mm_andnot_si128(_mm_cmpeq_epi32(mantissa, _mm_setzero_si128()), inf_nan);
  bits = _mm_add_epi32(bits, _mm_and_si128(inf_nan, _mm_set1_epi32(112 << 23)));
  bits = _mm_or_si128(bits, _mm_and_si128(nan, _mm_set1_epi32(0x400000)));
  const __m128 subnormal = _mm_mul_ps(_mm_cvtepi32_ps(magnitude), _mm_set1_ps(0x1p-24f));
  const __m128i is_subnormal = _mm_cmplt_epi32(magnitude, _mm_set1_epi32(0x400));
  const __m128 value =
      _mm_blendv_ps(_mm_castsi128_ps(bits), subnormal, _mm_castsi128_ps(is_subnormal));
  return _mm_or_ps(value, _mm_castsi128_ps(sign));
}
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128 load_params(const float* p) {
  return _mm_loadu_ps(p);
}
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128i load_zero_points(
    const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm_cvtepi8_epi32(_mm_cvtsi32_si128(v));
}

// The 16 IQ4_NL values, for pshufb.
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128i nonlinear_table() {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(ggml::kIq4NlValues));
}

// One signed weight chunk w (4 rows per quarter) against every token's chunk at `offset`, by the
// sign trick, accumulated in int32.
template <int T, int Q>
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) void signed_step(
    const __m128i (&w)[Q], const std::int8_t* const* qx, int offset, __m128i (&out)[Q][T]) {
  const __m128i ones16 = _mm_set1_epi16(1);
  __m128i magnitude[Q];
  for (int q = 0; q < Q; ++q) magnitude[q] = _mm_abs_epi8(w[q]);
  for (int t = 0; t < T; ++t) {
    const __m128i x = broadcast_chunk(qx[t] + offset);
    for (int q = 0; q < Q; ++q) {
      const __m128i pairs = _mm_maddubs_epi16(magnitude[q], _mm_sign_epi8(x, w[q]));
      out[q][t] = _mm_add_epi32(out[q][t], _mm_madd_epi16(pairs, ones16));
    }
  }
}

LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128i load(const std::uint8_t* at) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
}

// Raw dot products Σ v(c)·qx of one k-block: out[q][t] for the 4-row quarter q and token t.
// `block` points at the row block's k-block, already offset to the first quarter.
template <class F, int T, int Q>
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) void block_dots(
    const std::uint8_t* block, const std::int8_t* const* qx, __m128i (&out)[Q][T]) {
  if constexpr (F::kCodes == InterleavedCodes::kUnsigned4) {
    const __m128i nibble = _mm_set1_epi8(0x0F);
    __m128i acc[Q][T];
    for (int q = 0; q < Q; ++q)
      for (int t = 0; t < T; ++t) acc[q][t] = _mm_setzero_si128();
#pragma GCC unroll 1
    for (int v = 0; v < 4; ++v) {
      __m128i lo[Q], hi[Q];
      for (int q = 0; q < Q; ++q) {
        const __m128i raw = load(block + 64 * v + 16 * q);
        lo[q] = _mm_and_si128(raw, nibble);
        hi[q] = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble);
      }
      for (int t = 0; t < T; ++t) {
        const __m128i xl = broadcast_chunk(qx[t] + 4 * v);
        const __m128i xh = broadcast_chunk(qx[t] + 16 + 4 * v);
        for (int q = 0; q < Q; ++q) {
          acc[q][t] = _mm_add_epi16(acc[q][t], _mm_maddubs_epi16(lo[q], xl));
          acc[q][t] = _mm_add_epi16(acc[q][t], _mm_maddubs_epi16(hi[q], xh));
        }
      }
    }
    const __m128i ones16 = _mm_set1_epi16(1);
    for (int q = 0; q < Q; ++q)
      for (int t = 0; t < T; ++t) out[q][t] = _mm_madd_epi16(acc[q][t], ones16);
  } else {
    for (int q = 0; q < Q; ++q)
      for (int t = 0; t < T; ++t) out[q][t] = _mm_setzero_si128();
    if constexpr (F::kCodes == InterleavedCodes::kNonLinear4) {
      const __m128i nibble = _mm_set1_epi8(0x0F);
      const __m128i table = nonlinear_table();
      for (int v = 0; v < 4; ++v) {
        __m128i lo[Q], hi[Q];
        for (int q = 0; q < Q; ++q) {
          const __m128i raw = load(block + 64 * v + 16 * q);
          lo[q] = _mm_shuffle_epi8(table, _mm_and_si128(raw, nibble));
          hi[q] = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(raw, 4), nibble));
        }
        signed_step<T, Q>(lo, qx, 4 * v, out);
        signed_step<T, Q>(hi, qx, 16 + 4 * v, out);
      }
    } else {
      for (int c = 0; c < 8; ++c) {
        __m128i w[Q];
        for (int q = 0; q < Q; ++q) w[q] = load(block + 64 * c + 16 * q);
        signed_step<T, Q>(w, qx, 4 * c, out);
      }
    }
  }
}

// y for rows [16·rb + 4·quarter, +4·Q) and tokens [t0, t0 + T).
template <class F, int T, int Q>
LOWBIT_TARGET_SSE41 inline void tile(const Problem& p, std::int64_t rb, int quarter,
                                     std::int64_t t0) {
  using Scale = typename F::Scale;
  static_assert(F::kImplicitZero == 0 || F::kImplicitZero == 8, "implicit zero points are 0 or 8");
  const std::uint8_t* codes =
      p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes) + 16 * quarter;
  const std::int64_t param0 = rb * p.groups * kRows + 4 * quarter;  // row block's first parameter
  const Scale* scales = static_cast<const Scale*>(p.scales) + param0;
  const ActivationBlock* x[T];
  for (int t = 0; t < T; ++t) x[t] = p.x + (t0 + t) * p.k_blocks;
  __m128 acc[Q][T];
  for (int q = 0; q < Q; ++q)
    for (int t = 0; t < T; ++t) acc[q][t] = _mm_setzero_ps();

  for (std::int64_t g = 0; g < p.groups; ++g) {
    __m128 d[Q];
    __m128i z[Q];
    __m128 m[Q];
    for (int q = 0; q < Q; ++q) {
      d[q] = load_params(scales + g * kRows + 4 * q);
      if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
        z[q] = load_zero_points(static_cast<const std::int8_t*>(p.offsets) + param0 + g * kRows +
                                4 * q);
      if constexpr (F::kOffset == InterleavedOffset::kMin)
        m[q] = load_params(static_cast<const Scale*>(p.offsets) + param0 + g * kRows + 4 * q);
    }
    const std::int64_t b_end = (g + 1) * p.blocks_per_group;
    for (std::int64_t b = g * p.blocks_per_group; b < b_end; ++b) {
      const std::int8_t* qb[T];
      for (int t = 0; t < T; ++t) qb[t] = x[t][b].q;
      __m128i dots[Q][T];
      if constexpr (T == 1) prefetch_codes<F::kBlockBytes>(codes + b * F::kBlockBytes);
      block_dots<F, T, Q>(codes + b * F::kBlockBytes, qb, dots);
      for (int t = 0; t < T; ++t) {
        const ActivationBlock& xb = x[t][b];
        const __m128 scale_x = _mm_set1_ps(xb.d);
        const __m128i sum_x = _mm_set1_epi32(xb.s);
        for (int q = 0; q < Q; ++q) {
          __m128i isum = dots[q][t];
          if constexpr (F::kImplicitZero == 8)
            isum = _mm_sub_epi32(isum, _mm_slli_epi32(sum_x, 3));
          if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
            isum = _mm_sub_epi32(isum, _mm_mullo_epi32(z[q], sum_x));
          acc[q][t] = sse41_fma::fma_float(_mm_cvtepi32_ps(isum), _mm_mul_ps(d[q], scale_x), acc[q][t]);
          if constexpr (F::kOffset == InterleavedOffset::kMin)
            acc[q][t] = sse41_fma::fma_float(m[q], _mm_set1_ps(xb.ds), acc[q][t]);
        }
      }
    }
  }

  for (int q = 0; q < Q; ++q) {
    const std::int64_t row = rb * kRows + 4 * (quarter + q);
    const std::int64_t n = valid_rows(p, row, 4);
    if (n <= 0) continue;
    for (int t = 0; t < T; ++t) {
      if (n == 4 && p.y_col_stride == 1) {
        __m128 v = acc[q][t];
        if (p.bias != nullptr) v = _mm_add_ps(v, _mm_loadu_ps(p.bias + row));
        _mm_storeu_ps(p.y + (t0 + t) * p.y_row_stride + row, v);
      } else {
        alignas(16) float tmp[4];
        _mm_store_ps(tmp, acc[q][t]);
        store_rows(p, t0 + t, row, tmp, n);
      }
    }
  }
}

template <class F>
LOWBIT_TARGET_SSE41 inline void gemm(const Problem& p, std::int64_t row_block_begin,
                                     std::int64_t row_block_end) {
  constexpr int kTokens = 4;
  for (std::int64_t rb = row_block_begin; rb < row_block_end; ++rb) {
    std::int64_t t = 0;
    if (p.tokens >= kTokens) {
      for (int quarter = 0; quarter < 4; ++quarter) {
        if (rb * kRows + 4 * quarter >= p.rows) break;
        for (t = 0; t + kTokens <= p.tokens; t += kTokens) tile<F, kTokens, 1>(p, rb, quarter, t);
      }
    }
    for (; t < p.tokens; ++t) tile<F, 1, 4>(p, rb, 0, t);
  }
}

}  // namespace sse41
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
