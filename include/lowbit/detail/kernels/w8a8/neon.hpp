// lowbit/detail/kernels/w8a8/neon.hpp: the W8A8 GEMM on ARMv8 NEON without the dot-product
// extension (Cortex-A53/A55 class without dotprod, A57, A72: Raspberry Pi 4), and the NEON
// activation quantizer the dotprod path shares.
//
// NEON multiplies signed bytes by signed bytes directly, so no offset or sign trick is needed:
// smull gives exact int16 products (|qw · qx| <= 128 · 127 = 16256), smlal adds a second group's
// products into the same int16 lanes (<= 32512, no overflow: activations never hold -128), and
// sadalp adds adjacent int16 pairs into int32 accumulators. A q register of weights is 4 rows × 4
// k (16 bytes of a chunk); against the token's 4 codes broadcast to all four 32-bit lanes, the low
// half gives rows 0-1, the high half rows 2-3, and each int32 accumulator lane holds half a row:
//
//   lo = [r0 k0+k1, r0 k2+k3, r1 k0+k1, r1 k2+k3]   hi = same for r2, r3
//   row sums = addp(lo, hi) = [r0, r1, r2, r3]                   (at the end, once)
//
// Integer sums are exact and equal the reference's; the epilogue is the reference's sequence with
// vfmaq (fused) for the bias. Register blocking (32 q): a tile is R panels (4R row quads, 8R
// accumulators per token) × C tokens; prefill R = 1, C = 2 (16 accumulators, 8 weights, the
// broadcasts); decode R = 2, C = 1.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"

#if defined(LOWBIT_HAVE_ARM_KERNELS)

namespace lowbit {
namespace detail {
namespace w8a8 {
namespace neon {

inline __attribute__((always_inline)) int8x16_t broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

// Y[t, o .. o+3] from 4 int32 row sums, in the reference's order.
inline __attribute__((always_inline)) void store4(const Problem& p, std::int64_t t,
                                                   std::int64_t o, int32x4_t acc) {
  const std::int64_t n = valid_rows(p, o, 4);
  if (n <= 0) return;
  const float32x4_t s = vmulq_f32(vdupq_n_f32(p.x_scale[t]), vld1q_f32(p.w_scale + o));
  const float32x4_t v = vcvtq_f32_s32(acc);
  const float32x4_t y = p.bias != nullptr ? vfmaq_f32(vld1q_f32(p.bias + o), v, s) : vmulq_f32(v, s);
  if (n == 4 && p.y_col_stride == 1) {
    vst1q_f32(output_at(p, t, o), y);
  } else {
    float tmp[4];
    vst1q_f32(tmp, y);
    store_partial(p, t, o, tmp, n);
  }
}

template <int R, int C>
inline void tile(const Problem& p, const std::int8_t* w, std::int64_t t, std::int64_t o) {
  constexpr int Q = 4 * R;  // row quads
  const std::int64_t kp = p.groups * kGroupK;
  const std::int8_t* x = p.x + t * kp;
  int32x4_t lo[C][Q], hi[C][Q];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) lo[c][q] = hi[c][q] = vdupq_n_s32(0);
  // groups is a multiple of 4 (K is padded to 16), so groups come in pairs.
  for (std::int64_t g = 0; g < p.groups; g += 2) {
    const std::int8_t* w0 = w + g * kChunkBytes;
    const std::int8_t* w1 = w0 + kChunkBytes;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const int8x16_t x0 = broadcast4(x + c * kp + g * kGroupK);
      const int8x16_t x1 = broadcast4(x + c * kp + (g + 1) * kGroupK);
#pragma GCC unroll 16
      for (int q = 0; q < Q; ++q) {
        const int8x16_t a = vld1q_s8(w0 + 16 * q), b = vld1q_s8(w1 + 16 * q);
        const int16x8_t pl = vmlal_s8(vmull_s8(vget_low_s8(a), vget_low_s8(x0)), vget_low_s8(b),
                                      vget_low_s8(x1));
        const int16x8_t ph = vmlal_high_s8(vmull_high_s8(a, x0), b, x1);
        lo[c][q] = vpadalq_s16(lo[c][q], pl);
        hi[c][q] = vpadalq_s16(hi[c][q], ph);
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) store4(p, t + c, o + 4 * q, vpaddq_s32(lo[c][q], hi[c][q]));
}

template <int R, int C>
inline void sweep(const Problem& p, const std::int8_t* wb, std::int64_t t, std::int64_t o) {
  constexpr std::int64_t rows = R * kPanelRows;
  for (std::int64_t q = 0; q < kBlockRows / rows && o + q * rows < p.rows; ++q)
    tile<R, C>(p, wb + q * rows * kGroupK, t, o + q * rows);
}

inline void compute(const Problem& p, std::int64_t block_begin, std::int64_t block_end) {
  for (std::int64_t b = block_begin; b < block_end; ++b) {
    const std::int8_t* wb = p.w + b * p.groups * kChunkBytes;
    const std::int64_t o = b * kBlockRows;
    std::int64_t t = 0;
    for (; t + 2 <= p.tokens; t += 2) sweep<1, 2>(p, wb, t, o);
    if (t < p.tokens) sweep<2, 1>(p, wb, t, o);
  }
}

// ---------------------------------------------------------------------------------------------
// The activation quantizer: the reference's operations on 4 lanes (fabs, an exact max, the IEEE
// division, frintn = rint, clamp), 16 codes per store; the last K mod 16 values take the scalar
// code itself.

template <bool Offset>
inline void quantize_token(const float* x, std::int64_t k, std::int8_t* codes, std::int64_t kp,
                           float* scale) {
  const float32x4_t fmax = vdupq_n_f32(FLT_MAX);
  float32x4_t vmax = vdupq_n_f32(0.0f);
  uint32x4_t ok = vdupq_n_u32(0xFFFFFFFFu);
  std::int64_t i = 0;
  for (; i + 4 <= k; i += 4) {
    const float32x4_t a = vabsq_f32(vld1q_f32(x + i));
    vmax = vmaxq_f32(vmax, a);
    ok = vandq_u32(ok, vcleq_f32(a, fmax));  // false for NaN and Inf
  }
  float absmax = vmaxvq_f32(vmax);
  bool finite = vminvq_u32(ok) != 0;
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
  const float32x4_t vstep = vdupq_n_f32(step);
  const float32x4_t lo = vdupq_n_f32(-static_cast<float>(kActMax));
  const float32x4_t hi = vdupq_n_f32(static_cast<float>(kActMax));
  i = 0;
  for (; i + 16 <= k; i += 16) {
    int32x4_t q[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const float32x4_t v = vrndnq_f32(vdivq_f32(vld1q_f32(x + i + 4 * j), vstep));
      q[j] = vcvtq_s32_f32(vminq_f32(vmaxq_f32(v, lo), hi));
    }
    const int16x8_t h0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
    const int16x8_t h1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
    int8x16_t out = vcombine_s8(vmovn_s16(h0), vmovn_s16(h1));
    if (Offset) out = veorq_s8(out, vdupq_n_s8(static_cast<std::int8_t>(-128)));
    vst1q_s8(codes + i, out);
  }
  for (; i < k; ++i) codes[i] = stored_code(smoothquant_code(x[i], step), Offset);
  for (; i < kp; ++i) codes[i] = stored_code(0, Offset);
  *scale = step;
}

inline void quantize(const QuantizeArgs& a, std::int64_t token_begin, std::int64_t token_end) {
  for (std::int64_t t = token_begin; t < token_end; ++t) {
    if (a.x.col_stride() == 1)
      quantize_token<false>(&a.x(t, 0), a.x.cols(), a.codes + t * a.kp, a.kp, a.scales + t);
    else
      quantize_token_scalar(&a.x(t, 0), a.x.cols(), a.x.col_stride(), a.codes + t * a.kp, a.kp,
                            a.scales + t, false);
  }
}

inline const Kernel& kernel() {
  static constexpr Kernel k{Isa::kNeon, false, &quantize, &compute};
  return k;
}

}  // namespace neon
}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_KERNELS
