// lowbit/detail/kernels/int8_gemm/neon.hpp: the int8-activation GEMM on AArch64 NEON without the
// dot-product extension (Cortex-A53/A55/A72/A73), for 16 rows × 1 token at a time.
//
// A q register holds one 4-byte chunk of 4 rows; its low half (rows 0, 1) and high half (rows 2,
// 3) are multiplied by the token's 4 activation bytes (broadcast) with smull/smlal into int16,
// then widened pairwise into int32 with sadalp, and one addp at the end of the block leaves one
// int32 per row. int16 holds the products of several chunks before widening:
//   4-bit codes       |c·qx| ≤ 15·127 = 1905: all 8 chunks (≤ 15240)
//   IQ4_NL, int8      |v·qx| ≤ 128·127 = 16256: 2 chunks (≤ 32512)
// Signed × signed, so codes are used as they are; the epilogue is problem.hpp's (fmla fused):
// outputs are bit-identical to every other path.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"

#if defined(LOWBIT_HAVE_ARM_KERNELS)

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace neon {

inline float32x4_t load_params(const Half* p) {
  std::uint16_t bits[4];
  std::memcpy(bits, p, sizeof bits);
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(bits)));
}
inline float32x4_t load_params(const float* p) { return vld1q_f32(p); }
inline int32x4_t load_zero_points(const std::int8_t* p) {
  std::int32_t packed;
  std::memcpy(&packed, p, sizeof packed);
  const int8x8_t bytes = vreinterpret_s8_s32(vdup_n_s32(packed));
  return vmovl_s16(vget_low_s16(vmovl_s8(bytes)));
}
inline int8x8_t broadcast_chunk(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return vreinterpret_s8_s32(vdup_n_s32(v));
}

// Products of chunk w (4 quarters of 4 rows) with the broadcast activations x, added into the
// int16 accumulators (or starting them when `first`).
inline void multiply(const int8x16_t (&w)[4], int8x8_t x, bool first, int16x8_t (&lo)[4],
                     int16x8_t (&hi)[4]) {
  for (int q = 0; q < 4; ++q) {
    if (first) {
      lo[q] = vmull_s8(vget_low_s8(w[q]), x);
      hi[q] = vmull_s8(vget_high_s8(w[q]), x);
    } else {
      lo[q] = vmlal_s8(lo[q], vget_low_s8(w[q]), x);
      hi[q] = vmlal_s8(hi[q], vget_high_s8(w[q]), x);
    }
  }
}

// Σ v(c)·qx of one k-block for 16 rows (out[q]: rows 4q .. 4q+3).
template <class F>
inline void block_dots(const std::uint8_t* block, const std::int8_t* qx, int32x4_t (&out)[4]) {
  int32x4_t wide_lo[4], wide_hi[4];
  int16x8_t lo[4], hi[4];
  // lo/hi are started by the first multiply(); zeroing them anyway costs nothing in the block
  // loop and spares GCC's -Wmaybe-uninitialized, which cannot see that `first` holds at c = 0.
  for (int q = 0; q < 4; ++q) {
    wide_lo[q] = wide_hi[q] = vdupq_n_s32(0);
    lo[q] = hi[q] = vdupq_n_s16(0);
  }
  const auto widen = [&]() {
    for (int q = 0; q < 4; ++q) {
      wide_lo[q] = vpadalq_s16(wide_lo[q], lo[q]);
      wide_hi[q] = vpadalq_s16(wide_hi[q], hi[q]);
    }
  };
  if constexpr (F::kCodes == InterleavedCodes::kSigned8) {
    for (int c = 0; c < 8; ++c) {
      int8x16_t w[4];
      for (int q = 0; q < 4; ++q)
        w[q] = vld1q_s8(reinterpret_cast<const std::int8_t*>(block) + 64 * c + 16 * q);
      multiply(w, broadcast_chunk(qx + 4 * c), c % 2 == 0, lo, hi);
      if (c % 2 == 1) widen();
    }
  } else {
    const int8x16_t table = vld1q_s8(ggml::kIq4NlValues);
    const uint8x16_t mask = vdupq_n_u8(0x0F);
    constexpr bool kNonLinear = F::kCodes == InterleavedCodes::kNonLinear4;
    for (int v = 0; v < 4; ++v) {
      int8x16_t wl[4], wh[4];
      for (int q = 0; q < 4; ++q) {
        const uint8x16_t raw = vld1q_u8(block + 64 * v + 16 * q);
        const uint8x16_t l = vandq_u8(raw, mask), h = vshrq_n_u8(raw, 4);
        wl[q] = kNonLinear ? vqtbl1q_s8(table, l) : vreinterpretq_s8_u8(l);
        wh[q] = kNonLinear ? vqtbl1q_s8(table, h) : vreinterpretq_s8_u8(h);
      }
      // 4-bit codes: the whole block in int16; IQ4_NL: widen after each pair of chunks.
      multiply(wl, broadcast_chunk(qx + 4 * v), kNonLinear || v == 0, lo, hi);
      multiply(wh, broadcast_chunk(qx + 16 + 4 * v), false, lo, hi);
      if (kNonLinear || v == 3) widen();
    }
  }
  for (int q = 0; q < 4; ++q) out[q] = vpaddq_s32(wide_lo[q], wide_hi[q]);
}

// y for the 16 rows of row block rb and token t.
template <class F>
inline void tile(const Problem& p, std::int64_t rb, std::int64_t t) {
  using Scale = typename F::Scale;
  const std::uint8_t* codes = p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes);
  const std::int64_t param0 = rb * p.groups * kRows;
  const Scale* scales = static_cast<const Scale*>(p.scales) + param0;
  const ActivationBlock* x = p.x + t * p.k_blocks;
  float32x4_t acc[4];
  for (int q = 0; q < 4; ++q) acc[q] = vdupq_n_f32(0.0f);

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
      const ActivationBlock& xb = x[b];
      int32x4_t dots[4];
      prefetch_codes<F::kBlockBytes>(codes + b * F::kBlockBytes);
      block_dots<F>(codes + b * F::kBlockBytes, xb.q, dots);
      for (int q = 0; q < 4; ++q) {
        int32x4_t isum = dots[q];
        if constexpr (F::kImplicitZero != 0)
          isum = vsubq_s32(isum, vdupq_n_s32(F::kImplicitZero * xb.s));
        if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
          isum = vmlsq_s32(isum, z[q], vdupq_n_s32(xb.s));
        acc[q] = vfmaq_f32(acc[q], vcvtq_f32_s32(isum), vmulq_n_f32(d[q], xb.d));
        if constexpr (F::kOffset == InterleavedOffset::kMin)
          acc[q] = vfmaq_f32(acc[q], m[q], vdupq_n_f32(xb.ds));
      }
    }
  }

  const std::int64_t row = rb * kRows;
  const std::int64_t n = valid_rows(p, row, kRows);
  if (n == kRows && p.y_col_stride == 1) {
    float* out = p.y + t * p.y_row_stride + row;
    for (int q = 0; q < 4; ++q) {
      float32x4_t v = acc[q];
      if (p.bias != nullptr) v = vaddq_f32(v, vld1q_f32(p.bias + row + 4 * q));
      vst1q_f32(out + 4 * q, v);
    }
  } else {
    float tmp[kRows];
    for (int q = 0; q < 4; ++q) vst1q_f32(tmp + 4 * q, acc[q]);
    store_rows(p, t, row, tmp, n);
  }
}

template <class F>
inline void gemm(const Problem& p, std::int64_t row_block_begin, std::int64_t row_block_end) {
  for (std::int64_t rb = row_block_begin; rb < row_block_end; ++rb)
    for (std::int64_t t = 0; t < p.tokens; ++t) tile<F>(p, rb, t);
}

}  // namespace neon
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_KERNELS
