// lowbit/detail/kernels/dequant_ggml/avx2.hpp: ggml blocks (Q4_0, Q8_0, IQ4_NL, Q4_K, Q6_K)
// decoded in AVX2 registers, for the GEMV and GEMM drivers of dequant_gemm/avx2.hpp.
//
// Every format offers two operations on one block of one row (the other ggml formats use the
// scalar decoder of reference.hpp):
//
//   dot(blocks, x, xsums, acc) acc += the blocks' share of the row's dot product with x. The
//                              integer codes are converted to float exactly and multiplied by
//                              x; scales and offsets are applied once per block to those sums:
//                                Q4_0    d * (sum q x - 8 xsum)
//                                IQ4_NL  d * sum K[q] x
//                                Q8_0    d * sum q x
//                                Q6_K    sum_j (d sc_j) (sum q x - 32 xsum_j)
//                                Q4_K    sum_j [(d sc_j) sum q x  -  (dmin m_j) xsum_j]
//                              (xsum: the sum of x over the block or sub-block, computed once
//                              per call). Taking the offsets out of the per-element work saves
//                              a subtraction per element, and the scale a multiply: this path
//                              is bound by the FP pipes' throughput, not by the loads. The price
//                              is a rounding error relative to sum |q x| + |offset| sum |x|
//                              instead of sum |(q - offset) x|: a few ulp of fp32 on a dot
//                              product, far below the quantization error itself.
//                              The 32-element formats run 8 blocks at a time (kBatch), so that
//                              their 8 fp16 scales take one vcvtph2ps; the scales are gathered
//                              with integer loads, on pipes this loop leaves idle.
//   decode(block, out)         the block's weights exactly as the format's dequantizer computes
//                              them (products rounded in the same order), for the GEMM tiles.
//
// Lanes hold consecutive elements, so x is read in its natural order. The 4-bit formats keep
// elements j and j+16 (Q4_0, IQ4_NL) or j and j+32 (Q4_K) in one byte: vpmovzxbd widens 8 bytes
// to 8 lanes, `& 15` gives elements j..j+7 and `>> 4` elements j+16..j+23.
//
// IQ4_NL's 16-entry table: looked up with vpshufb on the int8 table, 16 codes per instruction,
// before widening; the two 8-lane vpermps lookups plus a blend that a float table would need
// cost more per element on AVX2 (AVX-512's 16-lane vpermps has no such problem and is used
// there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_ggml/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

#ifndef LOWBIT_DQ_AVX2
// A small AVX2 helper that must be inlined into its (AVX2) caller.
#define LOWBIT_DQ_AVX2 LOWBIT_TARGET_AVX2 inline __attribute__((always_inline))
#endif

namespace lowbit {
namespace detail {
namespace dequant {
namespace avx2 {

LOWBIT_DQ_AVX2 float half_at(const std::uint8_t* p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _cvtsh_ss(h);
}

LOWBIT_DQ_AVX2 __m256i widen_u8(const std::uint8_t* p) noexcept {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
LOWBIT_DQ_AVX2 __m256i widen_s8(const std::uint8_t* p) noexcept {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// sum_i c[i] * x[8i .. 8i+7]: the partial dot of 32 consecutive elements.
LOWBIT_DQ_AVX2 __m256 dot32(const __m256 c[4], const float* x) noexcept {
  const __m256 s0 =
      _mm256_fmadd_ps(c[2], _mm256_loadu_ps(x + 16), _mm256_mul_ps(c[0], _mm256_loadu_ps(x)));
  const __m256 s1 =
      _mm256_fmadd_ps(c[3], _mm256_loadu_ps(x + 24), _mm256_mul_ps(c[1], _mm256_loadu_ps(x + 8)));
  return _mm256_add_ps(s0, s1);
}

// The fp16 numbers at p, p + stride, ..., p + 7 stride, as 8 floats (exact).
LOWBIT_DQ_AVX2 __m256 halves8(const std::uint8_t* p, std::size_t stride) noexcept {
  std::uint64_t lo = 0, hi = 0;
  for (int i = 0; i < 4; ++i) {
    lo |= static_cast<std::uint64_t>(load_u16(p + i * stride)) << (16 * i);
    hi |= static_cast<std::uint64_t>(load_u16(p + (i + 4) * stride)) << (16 * i);
  }
  return _mm256_cvtph_ps(_mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo)));
}

// 8 consecutive blocks of a 32-element format: acc += sum_b scale_b * F::partial(b) - offsets.
// Block b's scale is the fp16 at its first byte; F::partial(block, x) returns the block's
// sum of codes times x (before scale and offset); F::kOffset the per-element offset (0: none).
template <class F>
LOWBIT_DQ_AVX2 void dot_batch8(const std::uint8_t* p, const float* x, const float* xsums,
                               __m256& acc) noexcept {
  const __m256 d = halves8(p, F::kBytes);
  alignas(32) float ds[8];
  _mm256_store_ps(ds, d);
  if (F::kOffset != 0)
    acc = _mm256_fnmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(static_cast<float>(F::kOffset))),
                           _mm256_loadu_ps(xsums), acc);
  for (int b = 0; b < 8; ++b)
    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(ds + b), F::partial(p + b * F::kBytes, x + 32 * b),
                          acc);
}

// One block of a 32-element format (the tail of a row, K not a multiple of 256).
template <class F>
LOWBIT_DQ_AVX2 void dot_one(const std::uint8_t* p, const float* x, const float* xsums,
                            __m256& acc) noexcept {
  const float d = half_at(p);
  __m256 part = F::partial(p, x);
  if (F::kOffset != 0)
    part = _mm256_sub_ps(
        part, _mm256_setr_ps(static_cast<float>(F::kOffset) * xsums[0], 0, 0, 0, 0, 0, 0, 0));
  acc = _mm256_fmadd_ps(_mm256_set1_ps(d), part, acc);
}

LOWBIT_DQ_AVX2 void store_scaled32(const __m256 c[4], __m256 d, float* out) noexcept {
  for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + 8 * i, _mm256_mul_ps(c[i], d));
}

// ---- Q4_0: 18 bytes, d f16 | 16 bytes of split nibbles; x = (q - 8) * d ------------------------
struct Q4_0 {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 18;
  static constexpr int kBatch = 8;
  static constexpr int kSumElems = 32;
  static constexpr int kOffset = 8;

  // q (0..15) as floats, elements 0..31 in order.
  LOWBIT_DQ_AVX2 static void codes(const std::uint8_t* b, __m256 c[4]) noexcept {
    const __m256i mask = _mm256_set1_epi32(15);
    const __m256i v0 = widen_u8(b + 2), v1 = widen_u8(b + 10);
    c[0] = _mm256_cvtepi32_ps(_mm256_and_si256(v0, mask));
    c[1] = _mm256_cvtepi32_ps(_mm256_and_si256(v1, mask));
    c[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v0, 4));
    c[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v1, 4));
  }
  LOWBIT_DQ_AVX2 static __m256 partial(const std::uint8_t* b, const float* x) noexcept {
    __m256 c[4];
    codes(b, c);
    return dot32(c, x);
  }
  LOWBIT_DQ_AVX2 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                 __m256& acc) noexcept {
    dot_batch8<Q4_0>(b, x, xsums, acc);
  }
  LOWBIT_DQ_AVX2 static void decode(const std::uint8_t* b, float* out) noexcept {
    __m256 c[4];
    codes(b, c);
    const __m256 eight = _mm256_set1_ps(8.0f);
    for (int i = 0; i < 4; ++i) c[i] = _mm256_sub_ps(c[i], eight);  // exact: small integers
    store_scaled32(c, _mm256_set1_ps(half_at(b)), out);
  }
};

// ---- Q8_0: 34 bytes, d f16 | 32 int8 codes; x = q * d ------------------------------------------
struct Q8_0 {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 34;
  static constexpr int kBatch = 8;
  static constexpr int kSumElems = 0;
  static constexpr int kOffset = 0;

  LOWBIT_DQ_AVX2 static void codes(const std::uint8_t* b, __m256 c[4]) noexcept {
    for (int i = 0; i < 4; ++i) c[i] = _mm256_cvtepi32_ps(widen_s8(b + 2 + 8 * i));
  }
  LOWBIT_DQ_AVX2 static __m256 partial(const std::uint8_t* b, const float* x) noexcept {
    __m256 c[4];
    codes(b, c);
    return dot32(c, x);
  }
  LOWBIT_DQ_AVX2 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                 __m256& acc) noexcept {
    dot_batch8<Q8_0>(b, x, xsums, acc);
  }
  LOWBIT_DQ_AVX2 static void decode(const std::uint8_t* b, float* out) noexcept {
    __m256 c[4];
    codes(b, c);
    store_scaled32(c, _mm256_set1_ps(half_at(b)), out);
  }
};

// ---- IQ4_NL: 18 bytes, d f16 | 16 bytes of split nibbles; x = d * K[q] ------------------------
struct IQ4_NL {
  static constexpr std::int64_t kElems = 32;
  static constexpr std::size_t kBytes = 18;
  static constexpr int kBatch = 8;
  static constexpr int kSumElems = 0;
  static constexpr int kOffset = 0;

  LOWBIT_DQ_AVX2 static void codes(const std::uint8_t* b, __m256 c[4]) noexcept {
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ggml::kIq4NlValues));
    const __m128i low4 = _mm_set1_epi8(15);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(q, low4));  // 0..15
    const __m128i hi =
        _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), low4));  // 16..31
    c[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    c[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo)));
    c[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    c[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi)));
  }
  LOWBIT_DQ_AVX2 static __m256 partial(const std::uint8_t* b, const float* x) noexcept {
    __m256 c[4];
    codes(b, c);
    return dot32(c, x);
  }
  LOWBIT_DQ_AVX2 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                 __m256& acc) noexcept {
    dot_batch8<IQ4_NL>(b, x, xsums, acc);
  }
  LOWBIT_DQ_AVX2 static void decode(const std::uint8_t* b, float* out) noexcept {
    __m256 c[4];
    codes(b, c);
    store_scaled32(c, _mm256_set1_ps(half_at(b)), out);
  }
};

// ---- Q4_K: 144 bytes, d | dmin | 12 bytes of 6-bit scales and mins | 128 bytes of nibbles -------
// Sub-block j (32 elements) is x = (d*sc_j) * q - (dmin*m_j); qs byte 32p + l holds element
// 64p + l (sub-block 2p) in its low nibble and 64p + 32 + l (sub-block 2p + 1) in its high one.
struct Q4_K {
  static constexpr std::int64_t kElems = 256;
  static constexpr std::size_t kBytes = 144;
  static constexpr int kBatch = 1;
  static constexpr int kSumElems = 32;

  // d*sc_j and dmin*m_j for j = 0..7, each product rounded as the dequantizer rounds it.
  LOWBIT_DQ_AVX2 static void scales(const std::uint8_t* b, __m256& dl, __m256& ml) noexcept {
    std::uint64_t sc, m;
    unpack_k4_scales(b + 4, &sc, &m);
    const __m256 fsc =
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(sc))));
    const __m256 fm =
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(m))));
    dl = _mm256_mul_ps(_mm256_set1_ps(half_at(b)), fsc);
    ml = _mm256_mul_ps(_mm256_set1_ps(half_at(b + 2)), fm);
  }
  // The codes of sub-blocks 2p (lo) and 2p + 1 (hi), as floats.
  LOWBIT_DQ_AVX2 static void codes(const std::uint8_t* b, int p, __m256 lo[4],
                                   __m256 hi[4]) noexcept {
    const __m256i mask = _mm256_set1_epi32(15);
    for (int i = 0; i < 4; ++i) {
      const __m256i v = widen_u8(b + 16 + 32 * p + 8 * i);
      lo[i] = _mm256_cvtepi32_ps(_mm256_and_si256(v, mask));
      hi[i] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    }
  }
  LOWBIT_DQ_AVX2 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                 __m256& acc) noexcept {
    __m256 dl, ml;
    scales(b, dl, ml);
    alignas(32) float d[8];
    _mm256_store_ps(d, dl);
    // The mins: sum_j (dmin m_j) * xsums_j, one lane per sub-block.
    acc = _mm256_fnmadd_ps(ml, _mm256_loadu_ps(xsums), acc);
    for (int p = 0; p < 4; ++p) {
      __m256 lo[4], hi[4];
      codes(b, p, lo, hi);
      acc = _mm256_fmadd_ps(_mm256_broadcast_ss(d + 2 * p), dot32(lo, x + 64 * p), acc);
      acc = _mm256_fmadd_ps(_mm256_broadcast_ss(d + 2 * p + 1), dot32(hi, x + 64 * p + 32), acc);
    }
  }
  LOWBIT_DQ_AVX2 static void decode(const std::uint8_t* b, float* out) noexcept {
    __m256 dl, ml;
    scales(b, dl, ml);
    alignas(32) float d[8], m[8];
    _mm256_store_ps(d, dl);
    _mm256_store_ps(m, ml);
    for (int p = 0; p < 4; ++p) {
      __m256 lo[4], hi[4];
      codes(b, p, lo, hi);
      const __m256 d0 = _mm256_broadcast_ss(d + 2 * p), m0 = _mm256_broadcast_ss(m + 2 * p);
      const __m256 d1 = _mm256_broadcast_ss(d + 2 * p + 1), m1 = _mm256_broadcast_ss(m + 2 * p + 1);
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(out + 64 * p + 8 * i, _mm256_sub_ps(_mm256_mul_ps(d0, lo[i]), m0));
        _mm256_storeu_ps(out + 64 * p + 32 + 8 * i, _mm256_sub_ps(_mm256_mul_ps(d1, hi[i]), m1));
      }
    }
  }
};

// ---- Q6_K: 210 bytes, ql[128] low nibbles | qh[64] high 2 bits | int8 scales[16] | d f16 --------
// Half h, l = 0..31: element 128h + 32u + l (u = 0..3) takes ql[64h + l + 32(u & 1)] (low nibble
// for u < 2, high for u >= 2) and bits 2u, 2u+1 of qh[32h + l]; x = (d*scales[e/16]) * (q - 32).
struct Q6_K {
  static constexpr std::int64_t kElems = 256;
  static constexpr std::size_t kBytes = 210;
  static constexpr int kBatch = 1;
  static constexpr int kSumElems = 16;

  LOWBIT_DQ_AVX2 static void scales(const std::uint8_t* b, __m256& lo, __m256& hi) noexcept {
    const __m256 d = _mm256_set1_ps(half_at(b + 208));
    lo = _mm256_mul_ps(d, _mm256_cvtepi32_ps(widen_s8(b + 192)));
    hi = _mm256_mul_ps(d, _mm256_cvtepi32_ps(widen_s8(b + 200)));
  }
  // q (0..63) of elements 128h + 32u + 8i .. +7, for u = 0..3, as integers in q[u].
  LOWBIT_DQ_AVX2 static void codes(const std::uint8_t* b, int h, int i, __m256i q[4]) noexcept {
    const __m256i low4 = _mm256_set1_epi32(15), top2 = _mm256_set1_epi32(0x30);
    const __m256i hb = widen_u8(b + 128 + 32 * h + 8 * i);
    const __m256i l0 = widen_u8(b + 64 * h + 8 * i);
    const __m256i l1 = widen_u8(b + 64 * h + 32 + 8 * i);
    q[0] = _mm256_or_si256(_mm256_and_si256(l0, low4),
                           _mm256_and_si256(_mm256_slli_epi32(hb, 4), top2));
    q[1] = _mm256_or_si256(_mm256_and_si256(l1, low4),
                           _mm256_and_si256(_mm256_slli_epi32(hb, 2), top2));
    q[2] = _mm256_or_si256(_mm256_srli_epi32(l0, 4), _mm256_and_si256(hb, top2));
    q[3] =
        _mm256_or_si256(_mm256_srli_epi32(l1, 4), _mm256_and_si256(_mm256_srli_epi32(hb, 2), top2));
  }
  LOWBIT_DQ_AVX2 static void dot(const std::uint8_t* b, const float* x, const float* xsums,
                                 __m256& acc) noexcept {
    __m256 dlo, dhi;
    scales(b, dlo, dhi);
    // The offsets: sum_j (d sc_j) * 32 * xsum_j, one lane per sub-block.
    const __m256 k32 = _mm256_set1_ps(32.0f);
    acc = _mm256_fnmadd_ps(_mm256_mul_ps(dlo, k32), _mm256_loadu_ps(xsums), acc);
    acc = _mm256_fnmadd_ps(_mm256_mul_ps(dhi, k32), _mm256_loadu_ps(xsums + 8), acc);
    alignas(32) float dl[16];
    _mm256_store_ps(dl, dlo);
    _mm256_store_ps(dl + 8, dhi);
    for (int h = 0; h < 2; ++h) {
      // Sub-block 8h + 2u + s covers l = 16s..16s+15 of quarter u: i = 2s, 2s + 1.
      for (int s = 0; s < 2; ++s) {
        __m256i q0[4], q1[4];
        codes(b, h, 2 * s, q0);
        codes(b, h, 2 * s + 1, q1);
        for (int u = 0; u < 4; ++u) {
          const float* xe = x + 128 * h + 32 * u + 16 * s;
          __m256 part = _mm256_mul_ps(_mm256_cvtepi32_ps(q0[u]), _mm256_loadu_ps(xe));
          part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1[u]), _mm256_loadu_ps(xe + 8), part);
          acc = _mm256_fmadd_ps(_mm256_broadcast_ss(dl + 8 * h + 2 * u + s), part, acc);
        }
      }
    }
  }
  LOWBIT_DQ_AVX2 static void decode(const std::uint8_t* b, float* out) noexcept {
    __m256 dlo, dhi;
    scales(b, dlo, dhi);
    alignas(32) float dl[16];
    _mm256_store_ps(dl, dlo);
    _mm256_store_ps(dl + 8, dhi);
    const __m256i k32 = _mm256_set1_epi32(32);
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 4; ++i) {
        __m256i q[4];
        codes(b, h, i, q);
        for (int u = 0; u < 4; ++u) {
          const __m256 d = _mm256_broadcast_ss(dl + 8 * h + 2 * u + i / 2);
          const __m256 c = _mm256_cvtepi32_ps(_mm256_sub_epi32(q[u], k32));
          _mm256_storeu_ps(out + 128 * h + 32 * u + 8 * i, _mm256_mul_ps(d, c));
        }
      }
    }
  }
};

// DecodeRowFn for a format above: blocks [k0, k0 + count) / kElems of the row.
template <class F>
LOWBIT_TARGET_AVX2 void decode_row(const Weights& w, std::int64_t row, std::int64_t k0,
                                   std::int64_t count, float* out) noexcept {
  const std::uint8_t* p = w.data + static_cast<std::size_t>(row) * w.row_bytes +
                          static_cast<std::size_t>(k0 / F::kElems) * F::kBytes;
  for (std::int64_t b = 0; b < count / F::kElems; ++b)
    F::decode(p + static_cast<std::size_t>(b) * F::kBytes, out + b * F::kElems);
}

}  // namespace avx2
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
