// lowbit/detail/kernels/dequant_packed/neon.hpp: lowbit's dense 2-, 4- and 8-bit codes decoded in
// NEON registers (AArch64) into the exact floats of the dequantizer, w = float(q - z) * scale,
// 32 codes at a time (one parameter group is a multiple of 32 on this path; 3-bit and other
// widths use the reference decoder). The GEMV and GEMM drivers of dequant_gemm/neon.hpp run on
// the decoded rows.
//
// The codes are split out of their bytes 16 (8) at a time and put back in element order with
// zips, which interleave two registers lane by lane:
//
//   4-bit: byte j = c[2j] | c[2j+1] << 4:  lo = bytes & 15, hi = bytes >> 4, zip(lo, hi)
//   2-bit: byte j = c[4j] | .. | c[4j+3] << 6: c_s = (bytes >> 2s) & 3, zip(c0, c1) and
//          zip(c2, c3) byte-wise, then zip the two results 16 bits at a time
//
// Signed codes are sign-extended in the byte lanes (b-bit two's complement), unsigned ones have
// the zero point subtracted there (exact: 4- and 2-bit differences fit int8; 8-bit ones are
// widened to int16 first).
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_ggml/neon.hpp"
#include "lowbit/detail/kernels/dequant_packed/reference.hpp"

#if defined(LOWBIT_HAVE_ARM_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace neon {

// Codes 0..31 of the unit at p, minus the zero point, as two registers of 16 int8 (4 and 2 bits).
template <int Bits, bool Signed>
inline void packed_codes(const std::uint8_t* p, int zero_point, int8x16_t& c0,
                         int8x16_t& c1) noexcept {
  static_assert(Bits == 2 || Bits == 4, "byte-lane codes");
  uint8x16_t u0, u1;
  if constexpr (Bits == 4) {
    const uint8x16_t q = vld1q_u8(p);
    const uint8x16_t lo = vandq_u8(q, vdupq_n_u8(15)), hi = vshrq_n_u8(q, 4);
    u0 = vzip1q_u8(lo, hi);
    u1 = vzip2q_u8(lo, hi);
  } else {
    const uint8x8_t q = vld1_u8(p);
    const uint8x8_t three = vdup_n_u8(3);
    const uint8x8_t s0 = vand_u8(q, three), s1 = vand_u8(vshr_n_u8(q, 2), three);
    const uint8x8_t s2 = vand_u8(vshr_n_u8(q, 4), three), s3 = vshr_n_u8(q, 6);
    const uint16x4_t a = vreinterpret_u16_u8(vzip1_u8(s0, s1)),
                     b = vreinterpret_u16_u8(vzip2_u8(s0, s1));
    const uint16x4_t c = vreinterpret_u16_u8(vzip1_u8(s2, s3)),
                     d = vreinterpret_u16_u8(vzip2_u8(s2, s3));
    u0 = vcombine_u8(vreinterpret_u8_u16(vzip1_u16(a, c)), vreinterpret_u8_u16(vzip2_u16(a, c)));
    u1 = vcombine_u8(vreinterpret_u8_u16(vzip1_u16(b, d)), vreinterpret_u8_u16(vzip2_u16(b, d)));
  }
  if (Signed) {
    // (f XOR 2^(b-1)) - 2^(b-1): the b-bit two's complement value of the field f.
    const uint8x16_t sign = vdupq_n_u8(1u << (Bits - 1));
    c0 = vsubq_s8(vreinterpretq_s8_u8(veorq_u8(u0, sign)), vreinterpretq_s8_u8(sign));
    c1 = vsubq_s8(vreinterpretq_s8_u8(veorq_u8(u1, sign)), vreinterpretq_s8_u8(sign));
  } else {
    const int8x16_t z = vdupq_n_s8(static_cast<std::int8_t>(zero_point));
    c0 = vsubq_s8(vreinterpretq_s8_u8(u0), z);
    c1 = vsubq_s8(vreinterpretq_s8_u8(u1), z);
  }
}

// 16 int16 codes as 4 x 4 floats.
inline F16 widen16(int16x8_t lo, int16x8_t hi) noexcept {
  return {{vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))),
           vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
           vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)))}};
}

// DecodeRowFn for 2-, 4- and 8-bit codes with groups a multiple of 32: elements [k0, k0+count).
template <int Bits, bool Signed>
void decode_packed_row(const Weights& w, std::int64_t row, std::int64_t k0, std::int64_t count,
                       float* out) noexcept {
  const std::uint8_t* codes = w.data + static_cast<std::size_t>(row * w.cols / 8) * Bits;
  const std::int64_t param_base = row * w.param_stride;
  for (std::int64_t k = k0; k < k0 + count; k += 32) {
    const std::int64_t param = param_base + k / w.group;
    const float s = packed_scale(w, param);
    const int z = Signed ? 0 : packed_zero_point(w, param);
    const std::uint8_t* p = codes + static_cast<std::size_t>(k / 8) * Bits;
    float* o = out + (k - k0);
    if constexpr (Bits == 8) {
      for (int h = 0; h < 2; ++h) {
        int16x8_t lo, hi;
        if (Signed) {
          const int8x16_t q = vld1q_s8(reinterpret_cast<const std::int8_t*>(p + 16 * h));
          lo = vmovl_s8(vget_low_s8(q));
          hi = vmovl_s8(vget_high_s8(q));
        } else {
          const uint8x16_t q = vld1q_u8(p + 16 * h);
          const uint8x8_t zv = vdup_n_u8(static_cast<std::uint8_t>(z));
          lo = vreinterpretq_s16_u16(vsubl_u8(vget_low_u8(q), zv));
          hi = vreinterpretq_s16_u16(vsubl_u8(vget_high_u8(q), zv));
        }
        store_scaled16(widen16(lo, hi), s, o + 16 * h);
      }
    } else {
      int8x16_t c0, c1;
      packed_codes<Bits, Signed>(p, z, c0, c1);
      store_scaled16(widen(c0), s, o);
      store_scaled16(widen(c1), s, o + 16);
    }
  }
}

}  // namespace neon
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_KERNELS
