// lowbit/detail/kernels/int8_gemm/avx_vnni.hpp: the int8-activation GEMM on AVX-VNNI (vpdpbusd
// on ymm: Alder Lake, Zen 5), the AVX2 kernel (avx2.hpp) with its dot products replaced.
//
// vpdpbusd adds four u8 × s8 products to each int32 lane without intermediate saturation, so
// one instruction replaces vpmaddubsw + vpaddw (+ vpmaddwd). Its first operand must be unsigned:
//   4-bit codes c ∈ [0, 15]      used as they are
//   IQ4_NL                       looked up in the table + 128 (values 1 .. 241, unsigned)
//   8-bit codes (int8)           c xor 0x80 = c + 128 (one vpxor per chunk, shared by the tokens)
// and the +128 is taken back with the zero point: Σ (v + 128)·qx − (z + 128)·sx = Σ v·qx − z·sx,
// the same exact isum as every other path (problem.hpp), so outputs are bit-identical.
//
// Register blocking as in avx2.hpp (8 rows × 4 tokens; 16 rows × 1 token); with one token the
// low- and high-nibble chunks go to separate accumulators, because a chain of dependent
// vpdpbusd (latency 4-5) would otherwise bound a GEMV.
//
// Testing without the hardware: defining LOWBIT_INT8_GEMM_EMULATE_VNNI before including this
// header compiles the same kernels for AVX2, into namespace avx_vnni_emulated, with vpdpbusd
// emulated exactly (tests/unit/test_gemm_int8_emulated.cpp). Only vpdpbusd itself is then left
// to the CI machines that have it.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/avx2.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

#if defined(LOWBIT_INT8_GEMM_EMULATE_VNNI)
#define LOWBIT_INT8_GEMM_VNNI_NS avx_vnni_emulated
#define LOWBIT_INT8_GEMM_VNNI_TARGET LOWBIT_TARGET_AVX2
#else
#define LOWBIT_INT8_GEMM_VNNI_NS avx_vnni
#define LOWBIT_INT8_GEMM_VNNI_TARGET LOWBIT_TARGET_AVX_VNNI
#endif

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace LOWBIT_INT8_GEMM_VNNI_NS {

// acc + Σ_{i<4} u[4j+i] · s[4j+i] per int32 lane j (u unsigned, s signed), no saturation.
LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) __m256i dpbusd(__m256i acc,
                                                                                  __m256i u,
                                                                                  __m256i s) {
#if defined(LOWBIT_INT8_GEMM_EMULATE_VNNI)
  // Bytes widened to int16 (every product |u·s| ≤ 255·128 fits), products summed in int32.
  const __m256i low_byte = _mm256_set1_epi16(0x00FF);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i u_even = _mm256_and_si256(u, low_byte), u_odd = _mm256_srli_epi16(u, 8);
  const __m256i s_even = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8);
  const __m256i s_odd = _mm256_srai_epi16(s, 8);
  const __m256i even = _mm256_madd_epi16(_mm256_mullo_epi16(u_even, s_even), ones);
  const __m256i odd = _mm256_madd_epi16(_mm256_mullo_epi16(u_odd, s_odd), ones);
  return _mm256_add_epi32(acc, _mm256_add_epi32(even, odd));
#else
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#endif
}

LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) __m256i broadcast_chunk(
    const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}
LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) __m256 load_params(
    const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) __m256 load_params(
    const float* p) {
  return _mm256_loadu_ps(p);
}
LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) __m256i load_zero_points(
    const std::int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// The unsigned operand's offset: 0 for 4-bit codes, 128 for IQ4_NL and 8-bit codes.
template <class F>
constexpr int operand_offset() noexcept {
  return F::kCodes == InterleavedCodes::kUnsigned4 ? 0 : 128;
}

// IQ4_NL values + 128, in both 128-bit lanes, for vpshufb.
LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) __m256i offset_table() {
  return _mm256_add_epi8(_mm256_broadcastsi128_si256(
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(ggml::kIq4NlValues))),
                         _mm256_set1_epi8(static_cast<char>(0x80)));
}

// Raw dot products Σ (v(c) + offset)·qx of one k-block: out[h][t] for 8-row half h, token t.
template <class F, int T, int H>
LOWBIT_INT8_GEMM_VNNI_TARGET inline __attribute__((always_inline)) void block_dots(
    const std::uint8_t* block, const std::int8_t* const* qx, __m256i (&out)[H][T]) {
  // One token: two accumulators per half (chunks 0-3 and 4-7) to break the dependency chain.
  constexpr int kChains = T == 1 ? 2 : 1;
  __m256i acc[kChains][H][T];
  for (int c = 0; c < kChains; ++c)
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t) acc[c][h][t] = _mm256_setzero_si256();
  if constexpr (F::kCodes == InterleavedCodes::kSigned8) {
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    // Not unrolled, as in avx2.hpp (keeps GCC from spilling reassociated sums).
#pragma GCC unroll 1
    for (int c = 0; c < 8; c += 2) {
      for (int j = 0; j < 2; ++j) {
        __m256i w[H];
        for (int h = 0; h < H; ++h)
          w[h] = _mm256_xor_si256(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * (c + j) + 32 * h)),
              flip);
        for (int t = 0; t < T; ++t) {
          const __m256i x = broadcast_chunk(qx[t] + 4 * (c + j));
          for (int h = 0; h < H; ++h)
            acc[j % kChains][h][t] = dpbusd(acc[j % kChains][h][t], w[h], x);
        }
      }
    }
  } else {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i table = _mm256_setzero_si256();
    if constexpr (F::kCodes == InterleavedCodes::kNonLinear4) table = offset_table();
    // Not unrolled, as in avx2.hpp.
#pragma GCC unroll 1
    for (int v = 0; v < 4; ++v) {
      __m256i lo[H], hi[H];
      for (int h = 0; h < H; ++h) {
        const __m256i raw =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * v + 32 * h));
        lo[h] = _mm256_and_si256(raw, nibble);
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
        if constexpr (F::kCodes == InterleavedCodes::kNonLinear4) {
          lo[h] = _mm256_shuffle_epi8(table, lo[h]);
          hi[h] = _mm256_shuffle_epi8(table, hi[h]);
        }
      }
      for (int t = 0; t < T; ++t) {
        const __m256i xl = broadcast_chunk(qx[t] + 4 * v);
        const __m256i xh = broadcast_chunk(qx[t] + 16 + 4 * v);
        for (int h = 0; h < H; ++h) {
          acc[0][h][t] = dpbusd(acc[0][h][t], lo[h], xl);
          acc[kChains - 1][h][t] = dpbusd(acc[kChains - 1][h][t], hi[h], xh);
        }
      }
    }
  }
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t)
      out[h][t] =
          kChains == 2 ? _mm256_add_epi32(acc[0][h][t], acc[kChains - 1][h][t]) : acc[0][h][t];
}

// y for rows [16·rb + 8·half, +8·H) and tokens [t0, t0 + T): avx2.hpp's tile with the offset
// of the unsigned operand added to the zero point.
template <class F, int T, int H>
LOWBIT_INT8_GEMM_VNNI_TARGET inline void tile(const Problem& p, std::int64_t rb, int half,
                                              std::int64_t t0) {
  using Scale = typename F::Scale;
  constexpr int kOffset = operand_offset<F>();
  // The implicit zero point plus the offset: 8 (4-bit), 128 (IQ4_NL, 8-bit); a power of two.
  constexpr int kZero = F::kImplicitZero + kOffset;
  static_assert(kZero == 0 || kZero == 8 || kZero == 128, "the implicit zero must be 0, 8 or 128");
  constexpr int kZeroShift = kZero == 8 ? 3 : 7;
  const std::uint8_t* codes =
      p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes) + 32 * half;
  const std::int64_t param0 = rb * p.groups * kRows + 8 * half;
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
        z[h] = _mm256_add_epi32(load_zero_points(static_cast<const std::int8_t*>(p.offsets) +
                                                 param0 + g * kRows + 8 * h),
                                _mm256_set1_epi32(kOffset));
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
          if constexpr (F::kOffset == InterleavedOffset::kZeroPoint) {
            isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(z[h], sum_x));
          } else if constexpr (kZero != 0) {
            isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sum_x, kZeroShift));
          }
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
LOWBIT_INT8_GEMM_VNNI_TARGET inline void gemm(const Problem& p, std::int64_t row_block_begin,
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

}  // namespace LOWBIT_INT8_GEMM_VNNI_NS
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#undef LOWBIT_INT8_GEMM_VNNI_NS
#undef LOWBIT_INT8_GEMM_VNNI_TARGET

#endif  // LOWBIT_HAVE_X86_KERNELS
