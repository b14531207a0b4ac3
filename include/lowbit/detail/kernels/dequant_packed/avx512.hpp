// lowbit/detail/kernels/dequant_packed/avx512.hpp: the GEMV decoders of dequant_packed/avx2.hpp
// on 16-lane registers (AVX-512 F/BW/DQ/VL), for 8-, 4- and 2-bit codes (3-bit codes run the AVX2
// kernel; the GEMM tiles use the AVX2 decoders).
//
// vpmovzxbd widens 16 code bytes to 16 lanes; the codes are then looked up in a 16-entry float
// table with vpermps (_mm512_permutexvar_ps uses the low 4 bits of each lane):
//
//   4-bit: lane j = byte j -> code 2j  = T[lane], code 2j+1 = T[lane >> 4]     (32 codes)
//   2-bit: lane j = byte j -> code 4j+s = T2[lane >> 2s], T2[i] = f(i & 3)      (64 codes)
//
// The table holds the exact float of (code - zero point): per group {0..15} - z for unsigned
// codes, the two's complement values {0..7, -8..-1} (2-bit: {0, 1, -2, -1}) for signed ones. So
// unlike the AVX2 GEMV there is no offset term: w = scale * T[code] exactly as the dequantizer's
// float(q - z) * scale before the scale. x is permuted once per call to match the code order:
//   4-bit: position j <- element 2j, 16 + j <- element 2j + 1       within each 32
//   2-bit: position 16s + j <- element 4j + s                        within each 64
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_ggml/avx512.hpp"  // the shared AVX-512 helpers
#include "lowbit/detail/kernels/dequant_packed/avx2.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace avx512 {

constexpr int packed_unit(int bits) noexcept { return bits == 2 ? 64 : 32; }

// The position of element e of a unit in the permuted x (e < packed_unit(bits)).
constexpr int permuted_position(int bits, int e) noexcept {
  return bits == 4 ? (e % 2) * 16 + e / 2 : bits == 2 ? (e % 4) * 16 + e / 4 : e;
}

// x[t][k] -> xp[t][unit * (k / unit) + permuted_position(bits, k % unit)].
inline void permute_x(int bits, const Problem& p, std::int64_t cols, float* xp) noexcept {
  const std::int64_t unit = packed_unit(bits);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = p.x + t * p.x_stride;
    float* out = xp + t * cols;
    for (std::int64_t k = 0; k < cols; ++k)
      out[unit * (k / unit) + permuted_position(bits, static_cast<int>(k % unit))] = x[k];
  }
}

template <int Bits, bool Signed>
struct PackedGemv {
  static_assert(Bits == 2 || Bits == 4 || Bits == 8, "AVX-512 packed GEMV widths");
  static constexpr std::int64_t kUnit = packed_unit(Bits);
  static constexpr std::size_t kUnitBytes = static_cast<std::size_t>(kUnit * Bits / 8);

  // The lookup table of a group with zero point z (ignored for signed codes).
  LOWBIT_DQ_AVX512 static __m512 table(int z) noexcept {
    if constexpr (Bits == 4) {
      if (Signed) return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
      return _mm512_sub_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_ps(static_cast<float>(z)));
    } else if constexpr (Bits == 2) {
      if (Signed) return _mm512_setr_ps(0, 1, -2, -1, 0, 1, -2, -1, 0, 1, -2, -1, 0, 1, -2, -1);
      return _mm512_sub_ps(_mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3),
                           _mm512_set1_ps(static_cast<float>(z)));
    } else {
      return _mm512_set1_ps(static_cast<float>(z));  // 8 bits: the zero point, subtracted
    }
  }

  // part += sum over the unit at p of (q - z) * x (x permuted).
  LOWBIT_DQ_AVX512 static void partial(const std::uint8_t* p, const float* x, __m512 t,
                                       __m512& part) noexcept {
    if constexpr (Bits == 4) {
      const __m512i v = widen16_u8(p);
      part = _mm512_fmadd_ps(lookup(v, t), _mm512_loadu_ps(x), part);
      part = _mm512_fmadd_ps(lookup(shr<4>(v), t), _mm512_loadu_ps(x + 16), part);
    } else if constexpr (Bits == 2) {
      const __m512i v = widen16_u8(p);
      part = _mm512_fmadd_ps(lookup(v, t), _mm512_loadu_ps(x), part);
      part = _mm512_fmadd_ps(lookup(shr<2>(v), t), _mm512_loadu_ps(x + 16), part);
      part = _mm512_fmadd_ps(lookup(shr<4>(v), t), _mm512_loadu_ps(x + 32), part);
      part = _mm512_fmadd_ps(lookup(shr<6>(v), t), _mm512_loadu_ps(x + 48), part);
    } else {
      for (int h = 0; h < 2; ++h) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h));
        const __m512 q = to_float(Signed ? _mm512_maskz_cvtepi8_epi32(kAll, b)
                                         : _mm512_maskz_cvtepu8_epi32(kAll, b));
        part = _mm512_fmadd_ps(Signed ? q : _mm512_sub_ps(q, t), _mm512_loadu_ps(x + 16 * h), part);
      }
    }
  }
};

}  // namespace avx512
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
