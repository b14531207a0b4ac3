// lowbit/detail/kernels/dequant_ggml/neon.hpp: ggml blocks (Q4_0, Q8_0, IQ4_NL, Q4_K, Q6_K)
// decoded in NEON registers (AArch64), for the GEMV and GEMM drivers of dequant_gemm/neon.hpp.
//
// Same contract as dequant_ggml/avx2.hpp (dot: the blocks' share of a row's dot product, the
// scale applied once per block to the partial sum; decode: the dequantizer's exact floats), with
// the work done on 16 bytes at a time where AVX2 works on 8 lanes: codes are formed as bytes
// (masks, shifts and table lookups on 16 lanes at once), then widened 8 -> 16 -> 32 bits and
// converted. The 4-bit tables use vqtbl1q_s8 (a 16-entry byte table, 16 lookups per
// instruction): Q4_0 {-8..7}, IQ4_NL its levels K, so both give the exact code value and need no
// offset term; Q6_K subtracts 32 in the byte domain (q - 32 fits int8).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_ggml/reference.hpp"

#if defined(LOWBIT_HAVE_ARM_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace neon {

inline float half_at(const std::uint8_t* p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return to_float(Half{h});
}

// 16 int8 values as 4 x 4 floats, in order.
struct F16 {
  float32x4_t v[4];
};
inline F16 widen(int8x16_t b) noexcept {
  const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_s8(vget_high_s8(b));
  return {{vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))),
           vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
           vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)))}};
}

// sum_i c.v[i] * x[4i .. 4i+3] added to part.
inline float32x4_t dot16(const F16& c, const float* x, float32x4_t part) noexcept {
  part = vfmaq_f32(part, c.v[0], vld1q_f32(x));
  part = vfmaq_f32(part, c.v[1], vld1q_f32(x + 4));
  part = vfmaq_f32(part, c.v[2], vld1q_f32(x + 8));
  return vfmaq_f32(part, c.v[3], vld1q_f32(x + 12));
}

inline void store_scaled16(const F16& c, float d, float* out) noexcept {
  for (int i = 0; i < 4; ++i) vst1q_f32(out + 4 * i, vmulq_n_f32(c.v[i], d));
}

// Q4_0 and IQ4_NL: d f16 | 16 bytes of split nibbles (element j low, j + 16 high); x = d * T[q].
template <class Table>
struct Nibble32 {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 18;
  static constexpr int kSumElems = 0;

  static void codes(const std::uint8_t* b, int8x16_t& lo, int8x16_t& hi) noexcept {
    const int8x16_t table = Table::get();
    const uint8x16_t q = vld1q_u8(b + 2);
    lo = vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(15)));
    hi = vqtbl1q_s8(table, vshrq_n_u8(q, 4));
  }
  static void dot(const std::uint8_t* b, const float* x, const float*, float32x4_t& acc) noexcept {
    int8x16_t lo, hi;
    codes(b, lo, hi);
    const float32x4_t part = dot16(widen(hi), x + 16, dot16(widen(lo), x, vdupq_n_f32(0.0f)));
    acc = vfmaq_n_f32(acc, part, half_at(b));
  }
  static void decode(const std::uint8_t* b, float* out) noexcept {
    int8x16_t lo, hi;
    codes(b, lo, hi);
    const float d = half_at(b);
    store_scaled16(widen(lo), d, out);
    store_scaled16(widen(hi), d, out + 16);
  }
};

struct Q4_0Table {
  static int8x16_t get() noexcept {
    static const std::int8_t kTable[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
    return vld1q_s8(kTable);
  }
};
struct IQ4_NLTable {
  static int8x16_t get() noexcept { return vld1q_s8(ggml::kIq4NlValues); }
};
using Q4_0 = Nibble32<Q4_0Table>;
using IQ4_NL = Nibble32<IQ4_NLTable>;

// Q8_0: d f16 | 32 int8 codes; x = q * d.
struct Q8_0 {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 34;
  static constexpr int kSumElems = 0;

  static void dot(const std::uint8_t* b, const float* x, const float*, float32x4_t& acc) noexcept {
    const int8x16_t q0 = vld1q_s8(reinterpret_cast<const std::int8_t*>(b + 2));
    const int8x16_t q1 = vld1q_s8(reinterpret_cast<const std::int8_t*>(b + 18));
    const float32x4_t part = dot16(widen(q1), x + 16, dot16(widen(q0), x, vdupq_n_f32(0.0f)));
    acc = vfmaq_n_f32(acc, part, half_at(b));
  }
  static void decode(const std::uint8_t* b, float* out) noexcept {
    const float d = half_at(b);
    store_scaled16(widen(vld1q_s8(reinterpret_cast<const std::int8_t*>(b + 2))), d, out);
    store_scaled16(widen(vld1q_s8(reinterpret_cast<const std::int8_t*>(b + 18))), d, out + 16);
  }
};

// Q4_K: sub-block j: x = (d*sc_j) * q - (dmin*m_j); qs byte 32p + l: element 64p + l (sub-block
// 2p) low, 64p + 32 + l (sub-block 2p + 1) high. The mins: (dmin m_j) * xsum_j, per sub-block.
struct Q4_K {
  static constexpr std::int64_t kElems = 256;
  static constexpr std::size_t kBytes = 144;
  static constexpr int kSumElems = 32;

  static void scales(const std::uint8_t* b, float* dl, float* ml) noexcept {
    std::uint64_t sc, m;
    unpack_k4_scales(b + 4, &sc, &m);
    const float d = half_at(b), dmin = half_at(b + 2);
    for (int j = 0; j < 8; ++j) {
      dl[j] = d * static_cast<float>((sc >> (8 * j)) & 0xFF);
      ml[j] = dmin * static_cast<float>((m >> (8 * j)) & 0xFF);
    }
  }
  // Codes of elements 64p + 16h .. +15 (lo) and 64p + 32 + 16h .. +15 (hi), 0..15 as int8.
  static void codes(const std::uint8_t* b, int p, int h, int8x16_t& lo, int8x16_t& hi) noexcept {
    const uint8x16_t q = vld1q_u8(b + 16 + 32 * p + 16 * h);
    lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15)));
    hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
  }
  static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                  float32x4_t& acc) noexcept {
    float dl[8], ml[8];
    scales(b, dl, ml);
    acc = vfmsq_f32(acc, vld1q_f32(ml), vld1q_f32(xsums));
    acc = vfmsq_f32(acc, vld1q_f32(ml + 4), vld1q_f32(xsums + 4));
    for (int p = 0; p < 4; ++p) {
      int8x16_t lo0, hi0, lo1, hi1;
      codes(b, p, 0, lo0, hi0);
      codes(b, p, 1, lo1, hi1);
      const float32x4_t plo =
          dot16(widen(lo1), x + 64 * p + 16, dot16(widen(lo0), x + 64 * p, vdupq_n_f32(0.0f)));
      const float32x4_t phi =
          dot16(widen(hi1), x + 64 * p + 48, dot16(widen(hi0), x + 64 * p + 32, vdupq_n_f32(0.0f)));
      acc = vfmaq_n_f32(acc, plo, dl[2 * p]);
      acc = vfmaq_n_f32(acc, phi, dl[2 * p + 1]);
    }
  }
  static void decode(const std::uint8_t* b, float* out) noexcept {
    float dl[8], ml[8];
    scales(b, dl, ml);
    for (int p = 0; p < 4; ++p) {
      for (int h = 0; h < 2; ++h) {
        int8x16_t lo, hi;
        codes(b, p, h, lo, hi);
        const F16 l = widen(lo), u = widen(hi);
        for (int i = 0; i < 4; ++i) {
          vst1q_f32(out + 64 * p + 16 * h + 4 * i,
                    vsubq_f32(vmulq_n_f32(l.v[i], dl[2 * p]), vdupq_n_f32(ml[2 * p])));
          vst1q_f32(out + 64 * p + 32 + 16 * h + 4 * i,
                    vsubq_f32(vmulq_n_f32(u.v[i], dl[2 * p + 1]), vdupq_n_f32(ml[2 * p + 1])));
        }
      }
    }
  }
};

// Q6_K: element 128h + 32u + 16i + l' (u = 0..3, i = 0..1) is sub-block 8h + 2u + i: its low
// nibble is ql[64h + 32(u & 1) + 16i + l'] (>> 4 for u >= 2), its top 2 bits bits 2u of
// qh[32h + 16i + l']; x = (d*sc) * (q - 32), q - 32 formed in int8 lanes.
struct Q6_K {
  static constexpr std::int64_t kElems = 256;
  static constexpr std::size_t kBytes = 210;
  static constexpr int kSumElems = 0;

  static void codes(const std::uint8_t* b, int h, int i, int8x16_t q[4]) noexcept {
    const uint8x16_t low4 = vdupq_n_u8(15), top2 = vdupq_n_u8(0x30), k32 = vdupq_n_u8(32);
    const uint8x16_t hb = vld1q_u8(b + 128 + 32 * h + 16 * i);
    const uint8x16_t l0 = vld1q_u8(b + 64 * h + 16 * i);
    const uint8x16_t l1 = vld1q_u8(b + 64 * h + 32 + 16 * i);
    const uint8x16_t u0 = vorrq_u8(vandq_u8(l0, low4), vandq_u8(vshlq_n_u8(hb, 4), top2));
    const uint8x16_t u1 = vorrq_u8(vandq_u8(l1, low4), vandq_u8(vshlq_n_u8(hb, 2), top2));
    const uint8x16_t u2 = vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(hb, top2));
    const uint8x16_t u3 = vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hb, 2), top2));
    q[0] = vreinterpretq_s8_u8(vsubq_u8(u0, k32));
    q[1] = vreinterpretq_s8_u8(vsubq_u8(u1, k32));
    q[2] = vreinterpretq_s8_u8(vsubq_u8(u2, k32));
    q[3] = vreinterpretq_s8_u8(vsubq_u8(u3, k32));
  }
  static void scales(const std::uint8_t* b, float* dl) noexcept {
    const float d = half_at(b + 208);
    for (int j = 0; j < 16; ++j)
      dl[j] = d * static_cast<float>(static_cast<std::int8_t>(b[192 + j]));
  }
  static void dot(const std::uint8_t* b, const float* x, const float*, float32x4_t& acc) noexcept {
    float dl[16];
    scales(b, dl);
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 2; ++i) {
        int8x16_t q[4];
        codes(b, h, i, q);
        for (int u = 0; u < 4; ++u) {
          const float32x4_t part =
              dot16(widen(q[u]), x + 128 * h + 32 * u + 16 * i, vdupq_n_f32(0.0f));
          acc = vfmaq_n_f32(acc, part, dl[8 * h + 2 * u + i]);
        }
      }
    }
  }
  static void decode(const std::uint8_t* b, float* out) noexcept {
    float dl[16];
    scales(b, dl);
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 2; ++i) {
        int8x16_t q[4];
        codes(b, h, i, q);
        for (int u = 0; u < 4; ++u)
          store_scaled16(widen(q[u]), dl[8 * h + 2 * u + i], out + 128 * h + 32 * u + 16 * i);
      }
    }
  }
};

template <class F>
void decode_row(const Weights& w, std::int64_t row, std::int64_t k0, std::int64_t count,
                float* out) noexcept {
  const std::uint8_t* p = w.data + static_cast<std::size_t>(row) * w.row_bytes +
                          static_cast<std::size_t>(k0 / F::kElems) * F::kBytes;
  for (std::int64_t b = 0; b < count / F::kElems; ++b)
    F::decode(p + static_cast<std::size_t>(b) * F::kBytes, out + b * F::kElems);
}

}  // namespace neon
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_KERNELS
