// lowbit/detail/kernels/dequant_packed/avx2.hpp: lowbit's dense b-bit codes (b = 2, 3, 4, 8)
// decoded in AVX2 registers, for the GEMV and GEMM drivers of dequant_gemm/avx2.hpp.
//
// Eight b-bit codes are exactly b bytes of the little-endian stream (format/packed.hpp), so a
// unit of 32 codes (one register of 8 lanes per 8 codes) starts on a byte when the row does.
// For b < 8 the b bytes of 8 codes are read into one 32-bit integer and broadcast to the 8 lanes;
// lane i then shifts its own field into place with a per-lane shift (vpsllvd):
//
//   lane i:  v << (32 - b - b*i)   puts code i's top bit at bit 31, then
//            >> (32 - b)           arithmetic for signed codes (sign extension),
//                                  logical for unsigned ones, minus the zero point,
//
// which yields the codes in element order, so x is read in its natural order. 8-bit codes are
// widened with vpmovsxbd / vpmovzxbd. Then, as the dequantizer:  w = float(q - zp) * scale.
// That is the GEMM tiles' decoder (PackedUnit::codes, decode_packed_row).
//
// The GEMV (PackedGemv) is bound by the FP pipes' throughput, so it spends fewer operations per
// code: it widens 8 bytes at once (vpmovzxbd) and splits the lanes with a shift and a mask,
//
//   4-bit: lane j = byte j -> codes 2j (& 15) and 2j+1 (>> 4)
//   2-bit: lane j = byte j -> codes 4j+s  ((>> 2s) & 3), s = 0..3
//
// which yields the codes in a fixed permutation of their order; x is permuted the same way once
// per call (permute_x) instead of once per row. 3-bit codes are spread with one vpshufb per 8
// codes (each lane gets the 3 bytes holding its code) and a per-lane shift. The GEMV also takes
// the zero point out of the per-element work: with u the unsigned field,
//
//   sum_k (q_k - z) x_k = sum_k u_k x_k - z' * sum_k x_k,
//
// where z' = z for unsigned codes and, for signed ones, u is the field with its sign bit
// flipped (one XOR on the bytes) and z' = 2^(b-1): (f XOR 2^(b-1)) - 2^(b-1) is the b-bit two's
// complement value of f. The group's sum of x is computed once per call.
//
// Fast-path conditions (checked by the driver, else the reference decoder is used): b in
// {2, 3, 4, 8}, the parameter group a multiple of 32 elements (so every 32-code unit has one
// scale and starts on a byte; per-row and per-tensor parameters count as a group of `cols`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_ggml/avx2.hpp"  // widen_u8, the shared AVX2 helpers
#include "lowbit/detail/kernels/dequant_packed/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace avx2 {

// The byte offset of code `index` (a multiple of 8) in the stream.
inline std::size_t packed_byte(std::int64_t index, int bits) noexcept {
  return static_cast<std::size_t>(index / 8) * static_cast<std::size_t>(bits);
}

// 3-bit units: the 12 bytes of 32 codes in both 128-bit halves (16 bytes are loaded; near the
// end of the stream they are copied first), and, for word j (codes 8j..8j+7), bytes 3j, 3j+1,
// 3j+2 in every 32-bit lane (vpshufb; the 0x80 entries, bit 7 set, give zero bytes).
LOWBIT_DQ_AVX2 __m256i spread_source(const std::uint8_t* p, const std::uint8_t* end) noexcept {
  if (end - p >= 16)
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  alignas(16) std::uint8_t copy[16] = {};
  std::memcpy(copy, p, 12);
  return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(copy)));
}
LOWBIT_DQ_AVX2 __m256i spread3(__m256i all, int j) noexcept {
  const __m256i spread0 =
      _mm256_setr_epi8(0, 1, 2, -128, 0, 1, 2, -128, 0, 1, 2, -128, 0, 1, 2, -128, 0, 1, 2, -128, 0,
                       1, 2, -128, 0, 1, 2, -128, 0, 1, 2, -128);
  return _mm256_shuffle_epi8(all,
                             _mm256_add_epi8(spread0, _mm256_set1_epi8(static_cast<char>(3 * j))));
}

template <int Bits, bool Signed>
struct PackedUnit {
  static_assert(Bits == 2 || Bits == 3 || Bits == 4 || Bits == 8, "fast path widths");
  static constexpr std::size_t kBytes = 4 * Bits;  // 32 codes

  // Codes 0..31 of the unit at p, minus the zero point, as floats. `end`: the end of the code
  // bytes (the 3-bit unit reads 16 bytes for its 12, and copies them when that would pass it).
  LOWBIT_DQ_AVX2 static void codes(const std::uint8_t* p, const std::uint8_t* end,
                                   __m256i zero_point, __m256 c[4]) noexcept {
    if constexpr (Bits == 8) {
      for (int i = 0; i < 4; ++i) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * i));
        const __m256i v = Signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
        c[i] = _mm256_cvtepi32_ps(Signed ? v : _mm256_sub_epi32(v, zero_point));
      }
    } else {
      const __m256i lift =
          _mm256_setr_epi32(32 - Bits, 32 - 2 * Bits, 32 - 3 * Bits, 32 - 4 * Bits, 32 - 5 * Bits,
                            32 - 6 * Bits, 32 - 7 * Bits, 32 - 8 * Bits);
      __m256i all = _mm256_setzero_si256();
      if constexpr (Bits == 3) all = spread_source(p, end);
      for (int i = 0; i < 4; ++i) {
        __m256i word;
        if constexpr (Bits == 3) {
          word = spread3(all, i);  // each lane: bytes 3i..3i+2
        } else {
          std::uint32_t bits = 0;
          std::memcpy(&bits, p + Bits * i, Bits);  // 8 codes = Bits bytes, little-endian
          word = _mm256_set1_epi32(static_cast<int>(bits));
        }
        const __m256i top = _mm256_sllv_epi32(word, lift);
        const __m256i q = Signed ? _mm256_srai_epi32(top, 32 - Bits)
                                 : _mm256_sub_epi32(_mm256_srli_epi32(top, 32 - Bits), zero_point);
        c[i] = _mm256_cvtepi32_ps(q);
      }
    }
  }
};

// Row `row`'s units from element k0 on: the first byte, and the parameter index of element k.
struct PackedRow {
  const std::uint8_t* codes;
  std::int64_t param_base;
};
inline PackedRow packed_row(const Weights& w, std::int64_t row) noexcept {
  return {w.data + packed_byte(row * w.cols, w.bits), row * w.param_stride};
}

// DecodeRowFn: elements [k0, k0 + count) of the row, count a multiple of 32.
template <int Bits, bool Signed>
LOWBIT_TARGET_AVX2 void decode_packed_row(const Weights& w, std::int64_t row, std::int64_t k0,
                                          std::int64_t count, float* out) noexcept {
  using Unit = PackedUnit<Bits, Signed>;
  const PackedRow r = packed_row(w, row);
  for (std::int64_t k = k0; k < k0 + count; k += 32) {
    const std::int64_t param = r.param_base + k / w.group;
    __m256 c[4];
    Unit::codes(r.codes + packed_byte(k, Bits), w.data + w.bytes,
                _mm256_set1_epi32(packed_zero_point(w, param)), c);
    const __m256 s = _mm256_set1_ps(packed_scale(w, param));
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + (k - k0) + 8 * i, _mm256_mul_ps(c[i], s));
  }
}

// ---- GEMV units ---------------------------------------------------------------------------------

// The position of element e (0..31) of a unit in the GEMV's permuted x.
constexpr int permuted_position(int bits, int e) noexcept {
  return bits == 4   ? 16 * (e / 16) + (e % 2) * 8 + (e % 16) / 2
         : bits == 2 ? (e % 4) * 8 + e / 4
                     : e;
}

// x[t][k] -> xp[t][32 * (k / 32) + permuted_position(bits, k % 32)], cols a multiple of 32.
inline void permute_x(int bits, const Problem& p, std::int64_t cols, float* xp) noexcept {
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = p.x + t * p.x_stride;
    float* out = xp + t * cols;
    for (std::int64_t k = 0; k < cols; ++k)
      out[32 * (k / 32) + permuted_position(bits, static_cast<int>(k % 32))] = x[k];
  }
}

template <int Bits, bool Signed>
struct PackedGemv {
  static constexpr bool kPermuted = Bits == 4 || Bits == 2;
  // The zero point the GEMV subtracts as z' * sum(x): signed codes carry it in their sign flip.
  static constexpr int kSignedOffset = (Bits == 8 || !Signed) ? 0 : 1 << (Bits - 1);

  // part += sum over the unit of u * x (x permuted for 4 and 2 bits). `end` is the end of the
  // code bytes: the 3-bit unit reads 16 bytes for its 12 and copies them when that would pass it.
  LOWBIT_DQ_AVX2 static void partial(const std::uint8_t* p, const std::uint8_t* end, const float* x,
                                     __m256& part) noexcept {
    if constexpr (Bits == 8) {
      for (int i = 0; i < 4; ++i) {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * i));
        const __m256i v = Signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(x + 8 * i), part);
      }
    } else if constexpr (Bits == 4) {
      const __m256i flip = _mm256_set1_epi32(Signed ? 0x88 : 0), mask = _mm256_set1_epi32(15);
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_xor_si256(widen_u8(p + 8 * h), flip);
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, mask)),
                               _mm256_loadu_ps(x + 16 * h), part);
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)),
                               _mm256_loadu_ps(x + 16 * h + 8), part);
      }
    } else if constexpr (Bits == 2) {
      const __m256i mask = _mm256_set1_epi32(3);
      const __m256i v = _mm256_xor_si256(widen_u8(p), _mm256_set1_epi32(Signed ? 0xAA : 0));
      part =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, mask)), _mm256_loadu_ps(x), part);
      part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 2), mask)),
                             _mm256_loadu_ps(x + 8), part);
      part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 4), mask)),
                             _mm256_loadu_ps(x + 16), part);
      part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 6)), _mm256_loadu_ps(x + 24),
                             part);
    } else {
      // 3 bits: 32 codes in 12 bytes; lane i of word j gets bytes 3j..3j+2, then >> 3i, & 7.
      // Signed: flip bit 2 of each 3-bit field (bytes 0..2 of each word: 0x924924).
      const __m256i flip =
          Signed ? _mm256_setr_epi8(0x24, 0x49, -110, 0x24, 0x49, -110, 0x24, 0x49, -110, 0x24,
                                    0x49, -110, 0, 0, 0, 0, 0x24, 0x49, -110, 0x24, 0x49, -110,
                                    0x24, 0x49, -110, 0x24, 0x49, -110, 0, 0, 0, 0)
                 : _mm256_setzero_si256();
      const __m256i all = _mm256_xor_si256(spread_source(p, end), flip);
      const __m256i shift = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
      const __m256i mask = _mm256_set1_epi32(7);
      for (int j = 0; j < 4; ++j) {
        const __m256i spread = spread3(all, j);
        const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(spread, shift), mask);
        part = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(x + 8 * j), part);
      }
    }
  }
};

}  // namespace avx2
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
