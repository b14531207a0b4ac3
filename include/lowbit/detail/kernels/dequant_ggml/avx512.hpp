// lowbit/detail/kernels/dequant_ggml/avx512.hpp: the AVX2 GEMV decoders of dequant_ggml/avx2.hpp
// on 16-lane registers (AVX-512 F/BW/DQ/VL), for the GEMV of dequant_gemm/avx512.hpp (its GEMM tiles
// use the AVX2 decoders: they run once per panel, not per token). Same formats,
// same operations (dot over 8 blocks or one super-block, partial sums scaled once per block),
// same element order in registers; only the width changes, plus one instruction AVX2 lacks:
//
//   vpermps with 16 lanes (_mm512_permutexvar_ps) looks a float up in a 16-entry table using the
//   low 4 bits of each lane. A 4-bit code widened to a lane (vpmovzxbd) becomes its float in one
//   operation, with no mask (the high nibble in bits 4-7 is ignored) and no conversion. The
//   tables: Q4_0 {-8..7} (the exact code - 8, so no offset term), IQ4_NL the 16 levels K,
//   Q4_K {0..15}. This is why the IQ4_NL lookup is a float vpermps here and an int8 vpshufb in
//   the AVX2 file.
//
// Q4_0 element order: vpmovzxbd of the 16 code bytes gives elements 0..15 in the low nibbles and
// 16..31 in the high ones, i.e. one register per half-block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_ggml/avx2.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

#ifndef LOWBIT_DQ_AVX512
// A small AVX-512 helper that must be inlined into its (AVX-512) caller.
#define LOWBIT_DQ_AVX512 LOWBIT_TARGET_AVX512 inline __attribute__((always_inline))
#endif

namespace lowbit {
namespace detail {
namespace dequant {
namespace avx512 {

// Several unmasked AVX-512 intrinsics of GCC 12 pass _mm512_undefined_*() as their merge source,
// which -Wmaybe-uninitialized flags wherever they are inlined (GCC bug 105593). The zero-masking
// forms with every lane enabled are the same instructions without that source.
constexpr __mmask16 kAll = 0xFFFF;
LOWBIT_DQ_AVX512 __m512 to_float(__m512i v) noexcept { return _mm512_maskz_cvtepi32_ps(kAll, v); }
template <unsigned N>
LOWBIT_DQ_AVX512 __m512i shr(__m512i v) noexcept {
  return _mm512_maskz_srli_epi32(kAll, v, N);
}
template <unsigned N>
LOWBIT_DQ_AVX512 __m512i shl(__m512i v) noexcept {
  return _mm512_maskz_slli_epi32(kAll, v, N);
}
LOWBIT_DQ_AVX512 __m512 lookup(__m512i index, __m512 table) noexcept {
  return _mm512_maskz_permutexvar_ps(kAll, index, table);
}
LOWBIT_DQ_AVX512 __m512i widen16_u8(const std::uint8_t* p) noexcept {
  return _mm512_maskz_cvtepu8_epi32(kAll, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LOWBIT_DQ_AVX512 __m512i widen16_s8(const std::uint8_t* p) noexcept {
  return _mm512_maskz_cvtepi8_epi32(kAll, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
// The sum of the 16 lanes, in a fixed order (halves added pairwise, then the AVX2 reduction).
LOWBIT_DQ_AVX512 float hsum(__m512 v) noexcept {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  const __m256 h = _mm256_add_ps(_mm256_load_ps(lanes), _mm256_load_ps(lanes + 8));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// a * x[0..15] + b * x[16..31]
LOWBIT_DQ_AVX512 __m512 dot2(__m512 a, __m512 b, const float* x) noexcept {
  return _mm512_fmadd_ps(b, _mm512_loadu_ps(x + 16), _mm512_mul_ps(a, _mm512_loadu_ps(x)));
}

// 8 consecutive blocks of a 32-element format: acc += sum_b scale_b * F::partial(block b).
template <class F>
LOWBIT_DQ_AVX512 void dot_batch8(const std::uint8_t* p, const float* x, __m512& acc) noexcept {
  alignas(32) float ds[8];
  _mm256_store_ps(ds, avx2::halves8(p, F::kBytes));
  for (int b = 0; b < 8; ++b)
    acc = _mm512_fmadd_ps(_mm512_set1_ps(ds[b]), F::partial(p + b * F::kBytes, x + 32 * b), acc);
}

template <class F>
LOWBIT_DQ_AVX512 void dot_one(const std::uint8_t* p, const float* x, __m512& acc) noexcept {
  acc = _mm512_fmadd_ps(_mm512_set1_ps(avx2::half_at(p)), F::partial(p, x), acc);
}

// Q4_0 and IQ4_NL: 18 bytes, d f16 | 16 bytes of split nibbles; x = d * T[q].
template <class Table>
struct Nibble32 {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 18;
  static constexpr int kBatch = 8;

  LOWBIT_DQ_AVX512 static void codes(const std::uint8_t* b, __m512& lo, __m512& hi) noexcept {
    const __m512 table = Table::get();
    const __m512i v = widen16_u8(b + 2);
    lo = lookup(v, table);          // elements 0..15
    hi = lookup(shr<4>(v), table);  // elements 16..31
  }
  LOWBIT_DQ_AVX512 static __m512 partial(const std::uint8_t* b, const float* x) noexcept {
    __m512 lo, hi;
    codes(b, lo, hi);
    return dot2(lo, hi, x);
  }
  LOWBIT_DQ_AVX512 static void dot(const std::uint8_t* b, const float* x, const float*,
                                   __m512& acc) noexcept {
    dot_batch8<Nibble32>(b, x, acc);
  }
};

struct Q4_0Table {
  LOWBIT_DQ_AVX512 static __m512 get() noexcept {
    return _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  }
};
struct IQ4_NLTable {
  LOWBIT_DQ_AVX512 static __m512 get() noexcept {
    return to_float(widen16_s8(reinterpret_cast<const std::uint8_t*>(ggml::kIq4NlValues)));
  }
};
using Q4_0 = Nibble32<Q4_0Table>;
using IQ4_NL = Nibble32<IQ4_NLTable>;

// Q8_0: 34 bytes, d f16 | 32 int8 codes; x = q * d.
struct Q8_0 {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 34;
  static constexpr int kBatch = 8;

  LOWBIT_DQ_AVX512 static __m512 partial(const std::uint8_t* b, const float* x) noexcept {
    return dot2(to_float(widen16_s8(b + 2)), to_float(widen16_s8(b + 18)), x);
  }
  LOWBIT_DQ_AVX512 static void dot(const std::uint8_t* b, const float* x, const float*,
                                   __m512& acc) noexcept {
    dot_batch8<Q8_0>(b, x, acc);
  }
};

// Q4_K: sub-block j: x = (d*sc_j) * q - (dmin*m_j); qs byte 32p + l holds element 64p + l
// (sub-block 2p) low and 64p + 32 + l (sub-block 2p + 1) high. Codes through the {0..15} table.
struct Q4_K {
  static constexpr std::int64_t kElems = 256;
  static constexpr std::size_t kBytes = 144;
  static constexpr int kBatch = 1;

  // Elements 64p + 16h .. +15 (lo, sub-block 2p) and 64p + 32 + 16h .. +15 (hi, sub-block 2p+1).
  LOWBIT_DQ_AVX512 static void codes(const std::uint8_t* b, int p, int h, __m512& lo,
                                     __m512& hi) noexcept {
    const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i v = widen16_u8(b + 16 + 32 * p + 16 * h);
    lo = lookup(v, table);
    hi = lookup(shr<4>(v), table);
  }
  LOWBIT_DQ_AVX512 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                   __m512& acc) noexcept {
    __m256 dl, ml;
    avx2::Q4_K::scales(b, dl, ml);
    alignas(32) float d[8];
    _mm256_store_ps(d, dl);
    // The mins, one lane per sub-block (the upper 8 lanes stay zero).
    acc = _mm512_fnmadd_ps(_mm512_maskz_broadcast_f32x8(0x00FF, ml),
                           _mm512_maskz_loadu_ps(0x00FF, xsums), acc);
    for (int p = 0; p < 4; ++p) {
      __m512 lo0, hi0, lo1, hi1;
      codes(b, p, 0, lo0, hi0);
      codes(b, p, 1, lo1, hi1);
      acc = _mm512_fmadd_ps(_mm512_set1_ps(d[2 * p]), dot2(lo0, lo1, x + 64 * p), acc);
      acc = _mm512_fmadd_ps(_mm512_set1_ps(d[2 * p + 1]), dot2(hi0, hi1, x + 64 * p + 32), acc);
    }
  }
};

// Q6_K: 16 lanes are exactly one 16-element sub-block: element 128h + 32u + 16i + l' (u = 0..3,
// i = 0..1, l' = 0..15) is in sub-block 8h + 2u + i. x = (d*sc) * (q - 32), taken as
// (d*sc) * sum q x - 32 (d*sc) xsum, the 16 offsets in one register.
struct Q6_K {
  static constexpr std::int64_t kElems = 256;
  static constexpr std::size_t kBytes = 210;
  static constexpr int kBatch = 1;

  LOWBIT_DQ_AVX512 static void codes(const std::uint8_t* b, int h, int i, __m512i q[4]) noexcept {
    const __m512i low4 = _mm512_set1_epi32(15), top2 = _mm512_set1_epi32(0x30);
    const __m512i hb = widen16_u8(b + 128 + 32 * h + 16 * i);
    const __m512i l0 = widen16_u8(b + 64 * h + 16 * i);
    const __m512i l1 = widen16_u8(b + 64 * h + 32 + 16 * i);
    q[0] = _mm512_or_si512(_mm512_and_si512(l0, low4), _mm512_and_si512(shl<4>(hb), top2));
    q[1] = _mm512_or_si512(_mm512_and_si512(l1, low4), _mm512_and_si512(shl<2>(hb), top2));
    q[2] = _mm512_or_si512(shr<4>(l0), _mm512_and_si512(hb, top2));
    q[3] = _mm512_or_si512(shr<4>(l1), _mm512_and_si512(shr<2>(hb), top2));
  }
  LOWBIT_DQ_AVX512 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                   __m512& acc) noexcept {
    const __m512 dl =
        _mm512_mul_ps(_mm512_set1_ps(avx2::half_at(b + 208)), to_float(widen16_s8(b + 192)));
    acc = _mm512_fnmadd_ps(_mm512_mul_ps(dl, _mm512_set1_ps(32.0f)), _mm512_loadu_ps(xsums), acc);
    alignas(64) float d[16];
    _mm512_store_ps(d, dl);
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 2; ++i) {
        __m512i q[4];
        codes(b, h, i, q);
        for (int u = 0; u < 4; ++u) {
          const __m512 part =
              _mm512_mul_ps(to_float(q[u]), _mm512_loadu_ps(x + 128 * h + 32 * u + 16 * i));
          acc = _mm512_fmadd_ps(_mm512_set1_ps(d[8 * h + 2 * u + i]), part, acc);
        }
      }
    }
  }
};

}  // namespace avx512
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
