// lowbit/detail/kernels/quantize_activations/neon.hpp: the activation quantizer of reference.hpp
// on AArch64 NEON (also used by the dot-product path).
//
// Bit-identical to the reference: amax is an unsigned max over |x| bit patterns, the block
// decision is the reference's block_scale(), x · id one fmul, and fcvtns rounds to nearest with
// ties to even regardless of the FPCR mode.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/quantize_activations/reference.hpp"

#if defined(LOWBIT_HAVE_ARM_KERNELS)

namespace lowbit {
namespace detail {
namespace quantize_activations {
namespace neon {

inline void quantize_row(const float* x, std::int64_t k, ActivationBlock* blocks) noexcept {
  const uint32x4_t abs_mask = vdupq_n_u32(0x7FFFFFFFu);
  for (std::int64_t b = 0; b < k / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    float32x4_t v[8];
    uint32x4_t m = vdupq_n_u32(0);
    for (int i = 0; i < 8; ++i) {
      v[i] = vld1q_f32(xb + 4 * i);
      m = vmaxq_u32(m, vandq_u32(vreinterpretq_u32_f32(v[i]), abs_mask));
    }
    const BlockScale s = block_scale(vmaxvq_u32(m));
    ActivationBlock& out = blocks[b];
    out.d = s.d;
    out.pad = 0;
    if (!s.codes) {
      std::memset(out.q, 0, kBlock);
      out.s = 0;
      out.ds = s.d * 0.0f;
      continue;
    }
    int32x4_t q[8];
    int32x4_t total = vdupq_n_s32(0);
    for (int i = 0; i < 8; ++i) {
      q[i] = vcvtnq_s32_f32(vmulq_n_f32(v[i], s.id));
      total = vaddq_s32(total, q[i]);
    }
    for (int h = 0; h < 2; ++h) {
      // |q| <= 127: the saturating narrows are exact.
      const int16x8_t lo = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
      const int16x8_t hi = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
      vst1q_s8(out.q + 16 * h, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
    }
    const std::int32_t block_sum = vaddvq_s32(total);
    out.s = block_sum;
    out.ds = s.d * static_cast<float>(block_sum);
  }
}

}  // namespace neon
}  // namespace quantize_activations
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_KERNELS
