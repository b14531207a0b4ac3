// lowbit/detail/kernels/int8_gemm/neon_dotprod.hpp: the int8-activation GEMM on AArch64 with the
// dot-product extension (sdot by element: Cortex-A76 and later, Neoverse, Apple M).
//
// A q register holds one 4-byte chunk of 4 rows (a quarter of the interleaved layout's 64-byte
// vector), so `sdot v_acc.4s, v_w.16b, v_x.4b[j]` multiplies 4 rows by chunk j of the token's
// 16 activation bytes in one instruction, with no broadcast: the activations of a 32-block are
// two q loads (chunks 0-3 and 4-7), selected by lane. sdot is signed × signed, so every code is
// used as it is (4-bit codes 0..15, IQ4_NL table values from one tbl lookup, int8 codes) and isum
// = Σ v·qx − z·sx is computed directly; the float epilogue is problem.hpp's (fmla is fused), so
// outputs are bit-identical to every other path.
//
// Register blocking (32 q registers): 16 rows × 2 tokens (8 int and 8 float accumulators, the 8
// nibble vectors of one k-block quarter pair, 4 activation vectors), and 16 rows × 1 token for
// decode and odd token counts, where low and high nibble chunks use separate accumulators so the
// dependent sdot chains are 4 long per block.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"

#if defined(LOWBIT_HAVE_ARM_DOTPROD_KERNELS)

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace neon_dotprod {

#define LOWBIT_INT8_GEMM_DOT_INLINE LOWBIT_TARGET_NEON_DOTPROD inline __attribute__((always_inline))

template <int Lane>
LOWBIT_INT8_GEMM_DOT_INLINE int32x4_t dot_lane(int32x4_t acc, int8x16_t w, int8x16_t x) {
  return vdotq_laneq_s32(acc, w, x, Lane);
}

LOWBIT_INT8_GEMM_DOT_INLINE float32x4_t load_params(const Half* p) {
  std::uint16_t bits[4];
  std::memcpy(bits, p, sizeof bits);
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(bits)));
}
LOWBIT_INT8_GEMM_DOT_INLINE float32x4_t load_params(const float* p) { return vld1q_f32(p); }
LOWBIT_INT8_GEMM_DOT_INLINE int32x4_t load_zero_points(const std::int8_t* p) {
  std::int32_t packed;
  std::memcpy(&packed, p, sizeof packed);
  const int8x8_t bytes = vreinterpret_s8_s32(vdup_n_s32(packed));
  return vmovl_s16(vget_low_s16(vmovl_s8(bytes)));
}

// The 4-bit codes of 64-byte vector `Vec` of a k-block: 4 quarters, chunk Vec (low nibbles) and
// chunk Vec + 4 (high nibbles), as signed bytes (IQ4_NL: looked up in the table).
template <class F, int Vec>
LOWBIT_INT8_GEMM_DOT_INLINE void nibbles(const std::uint8_t* block, int8x16_t table,
                                         int8x16_t (&lo)[4], int8x16_t (&hi)[4]) {
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int q = 0; q < 4; ++q) {
    const uint8x16_t raw = vld1q_u8(block + 64 * Vec + 16 * q);
    const uint8x16_t l = vandq_u8(raw, mask);
    const uint8x16_t h = vshrq_n_u8(raw, 4);
    if constexpr (F::kCodes == InterleavedCodes::kNonLinear4) {
      lo[q] = vqtbl1q_s8(table, l);
      hi[q] = vqtbl1q_s8(table, h);
    } else {
      lo[q] = vreinterpretq_s8_u8(l);
      hi[q] = vreinterpretq_s8_u8(h);
    }
  }
}

template <class F, int T, int Vec>
LOWBIT_INT8_GEMM_DOT_INLINE void step4(const std::uint8_t* block, int8x16_t table,
                                       const int8x16_t (&xl)[T], const int8x16_t (&xh)[T],
                                       int32x4_t (&acc)[2][T][4]) {
  int8x16_t lo[4], hi[4];
  nibbles<F, Vec>(block, table, lo, hi);
  constexpr int kHigh = T == 1 ? 1 : 0;  // one token: high chunks in their own accumulators
  for (int t = 0; t < T; ++t)
    for (int q = 0; q < 4; ++q) {
      acc[0][t][q] = dot_lane<Vec>(acc[0][t][q], lo[q], xl[t]);
      acc[kHigh][t][q] = dot_lane<Vec>(acc[kHigh][t][q], hi[q], xh[t]);
    }
}

template <int T, int Chunk>
LOWBIT_INT8_GEMM_DOT_INLINE void step8(const std::uint8_t* block, const int8x16_t (&xl)[T],
                                       const int8x16_t (&xh)[T], int32x4_t (&acc)[2][T][4]) {
  constexpr int kChain = T == 1 ? Chunk % 2 : 0;
  int8x16_t w[4];
  for (int q = 0; q < 4; ++q)
    w[q] = vld1q_s8(reinterpret_cast<const std::int8_t*>(block) + 64 * Chunk + 16 * q);
  for (int t = 0; t < T; ++t)
    for (int q = 0; q < 4; ++q)
      acc[kChain][t][q] = dot_lane<Chunk % 4>(acc[kChain][t][q], w[q], Chunk < 4 ? xl[t] : xh[t]);
}

// Σ v(c)·qx of one k-block for 16 rows (4 quarters) and T tokens.
template <class F, int T>
LOWBIT_INT8_GEMM_DOT_INLINE void block_dots(const std::uint8_t* block, const std::int8_t* const* qx,
                                            int32x4_t (&out)[T][4]) {
  int32x4_t acc[2][T][4];
  for (int c = 0; c < 2; ++c)
    for (int t = 0; t < T; ++t)
      for (int q = 0; q < 4; ++q) acc[c][t][q] = vdupq_n_s32(0);
  int8x16_t xl[T], xh[T];
  for (int t = 0; t < T; ++t) {
    xl[t] = vld1q_s8(qx[t]);
    xh[t] = vld1q_s8(qx[t] + 16);
  }
  if constexpr (F::kCodes == InterleavedCodes::kSigned8) {
    step8<T, 0>(block, xl, xh, acc);
    step8<T, 1>(block, xl, xh, acc);
    step8<T, 2>(block, xl, xh, acc);
    step8<T, 3>(block, xl, xh, acc);
    step8<T, 4>(block, xl, xh, acc);
    step8<T, 5>(block, xl, xh, acc);
    step8<T, 6>(block, xl, xh, acc);
    step8<T, 7>(block, xl, xh, acc);
  } else {
    const int8x16_t table = vld1q_s8(ggml::kIq4NlValues);
    step4<F, T, 0>(block, table, xl, xh, acc);
    step4<F, T, 1>(block, table, xl, xh, acc);
    step4<F, T, 2>(block, table, xl, xh, acc);
    step4<F, T, 3>(block, table, xl, xh, acc);
  }
  for (int t = 0; t < T; ++t)
    for (int q = 0; q < 4; ++q)
      out[t][q] = T == 1 ? vaddq_s32(acc[0][t][q], acc[1][t][q]) : acc[0][t][q];
}

// y for the 16 rows of row block rb and tokens [t0, t0 + T).
template <class F, int T>
LOWBIT_TARGET_NEON_DOTPROD inline void tile(const Problem& p, std::int64_t rb, std::int64_t t0) {
  using Scale = typename F::Scale;
  const std::uint8_t* codes = p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes);
  const std::int64_t param0 = rb * p.groups * kRows;
  const Scale* scales = static_cast<const Scale*>(p.scales) + param0;
  const ActivationBlock* x[T];
  for (int t = 0; t < T; ++t) x[t] = p.x + (t0 + t) * p.k_blocks;
  float32x4_t acc[T][4];
  for (int t = 0; t < T; ++t)
    for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0.0f);

  for (std::int64_t g = 0; g < p.groups; ++g) {
    float32x4_t d[4], m[4];
    int32x4_t z[4];
    for (int q = 0; q < 4; ++q) {
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
      int32x4_t dots[T][4];
      if constexpr (T == 1) prefetch_codes<F::kBlockBytes>(codes + b * F::kBlockBytes);
      block_dots<F, T>(codes + b * F::kBlockBytes, qb, dots);
      for (int t = 0; t < T; ++t) {
        const ActivationBlock& xb = x[t][b];
        for (int q = 0; q < 4; ++q) {
          int32x4_t isum = dots[t][q];
          if constexpr (F::kImplicitZero != 0)
            isum = vsubq_s32(isum, vdupq_n_s32(F::kImplicitZero * xb.s));
          if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
            isum = vmlsq_s32(isum, z[q], vdupq_n_s32(xb.s));
          acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(isum), vmulq_n_f32(d[q], xb.d));
          if constexpr (F::kOffset == InterleavedOffset::kMin)
            acc[t][q] = vfmaq_f32(acc[t][q], m[q], vdupq_n_f32(xb.ds));
        }
      }
    }
  }

  const std::int64_t row = rb * kRows;
  const std::int64_t n = valid_rows(p, row, kRows);
  for (int t = 0; t < T; ++t) {
    if (n == kRows && p.y_col_stride == 1) {
      float* out = p.y + (t0 + t) * p.y_row_stride + row;
      for (int q = 0; q < 4; ++q) {
        float32x4_t v = acc[t][q];
        if (p.bias != nullptr) v = vaddq_f32(v, vld1q_f32(p.bias + row + 4 * q));
        vst1q_f32(out + 4 * q, v);
      }
    } else {
      float tmp[kRows];
      for (int q = 0; q < 4; ++q) vst1q_f32(tmp + 4 * q, acc[t][q]);
      store_rows(p, t0 + t, row, tmp, n);
    }
  }
}

template <class F>
LOWBIT_TARGET_NEON_DOTPROD inline void gemm(const Problem& p, std::int64_t row_block_begin,
                                            std::int64_t row_block_end) {
  for (std::int64_t rb = row_block_begin; rb < row_block_end; ++rb) {
    std::int64_t t = 0;
    for (; t + 2 <= p.tokens; t += 2) tile<F, 2>(p, rb, t);
    for (; t < p.tokens; ++t) tile<F, 1>(p, rb, t);
  }
}

#undef LOWBIT_INT8_GEMM_DOT_INLINE

}  // namespace neon_dotprod
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_DOTPROD_KERNELS
