// lowbit/detail/kernels/int8_gemm/avx512_vnni.hpp: the int8-activation GEMM on AVX-512 VNNI
// (vpdpbusd on zmm: Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4/5).
//
// A zmm is a whole 64-byte vector of the interleaved layout: one 4-byte chunk of all 16 rows of a
// row block, so one broadcast activation chunk meets 16 rows per vpdpbusd (64 multiply-adds).
// The arithmetic is avx_vnni.hpp's (unsigned operand = code, IQ4_NL table + 128, or int8 code
// xor 0x80; the +128 returned through the zero point), the float epilogue problem.hpp's, on
// 16 lanes: outputs are bit-identical to every other path.
//
// Register blocking (32 zmm): 16 rows × 8 tokens for prefill (8 int and 8 float accumulators,
// the two nibble vectors of one load, the parameters), then 4, then 1 for the remaining tokens;
// with one token the chunks rotate over 4 accumulators, so a GEMV is not bound by the latency
// of dependent vpdpbusd.
//
// Every operation goes through the small vector layer below (V: 16 int32 lanes, Vf: 16 floats).
// Defining LOWBIT_INT8_GEMM_EMULATE_AVX512_VNNI before including this header compiles the same
// kernel for AVX2, into namespace avx512_vnni_emulated, with each zmm a pair of ymm and vpdpbusd
// emulated exactly (tests/unit/test_gemm_int8_emulated.cpp): the loop structure, offsets, zero
// points and stores are then tested on any AVX2 machine, only the instructions themselves on
// AVX-512 ones.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

#if defined(LOWBIT_INT8_GEMM_EMULATE_AVX512_VNNI)
#define LOWBIT_INT8_GEMM_Z_NS avx512_vnni_emulated
#define LOWBIT_INT8_GEMM_Z_TARGET LOWBIT_TARGET_AVX2
#else
#define LOWBIT_INT8_GEMM_Z_NS avx512_vnni
#define LOWBIT_INT8_GEMM_Z_TARGET LOWBIT_TARGET_AVX512_VNNI
#endif
#define LOWBIT_INT8_GEMM_Z_INLINE LOWBIT_INT8_GEMM_Z_TARGET inline __attribute__((always_inline))

namespace lowbit {
namespace detail {
namespace int8_gemm {
namespace LOWBIT_INT8_GEMM_Z_NS {

// ---- the vector layer -------------------------------------------------------------------------
#if defined(LOWBIT_INT8_GEMM_EMULATE_AVX512_VNNI)
struct V {
  __m256i lo, hi;  // lanes 0-7, 8-15
};
struct Vf {
  __m256 lo, hi;
};
LOWBIT_INT8_GEMM_Z_INLINE V zero_i() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
LOWBIT_INT8_GEMM_Z_INLINE Vf zero_f() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
LOWBIT_INT8_GEMM_Z_INLINE V load64(const std::uint8_t* p) {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32))};
}
LOWBIT_INT8_GEMM_Z_INLINE V set1_i8(std::int8_t v) {
  return {_mm256_set1_epi8(v), _mm256_set1_epi8(v)};
}
LOWBIT_INT8_GEMM_Z_INLINE V set1_i32(std::int32_t v) {
  return {_mm256_set1_epi32(v), _mm256_set1_epi32(v)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf set1_f(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
LOWBIT_INT8_GEMM_Z_INLINE V and_i(V a, V b) {
  return {_mm256_and_si256(a.lo, b.lo), _mm256_and_si256(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE V xor_i(V a, V b) {
  return {_mm256_xor_si256(a.lo, b.lo), _mm256_xor_si256(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE V srli16_4(V a) {
  return {_mm256_srli_epi16(a.lo, 4), _mm256_srli_epi16(a.hi, 4)};
}
template <int Shift>
LOWBIT_INT8_GEMM_Z_INLINE V slli32(V a) {
  return {_mm256_slli_epi32(a.lo, Shift), _mm256_slli_epi32(a.hi, Shift)};
}
LOWBIT_INT8_GEMM_Z_INLINE V add_i32(V a, V b) {
  return {_mm256_add_epi32(a.lo, b.lo), _mm256_add_epi32(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE V sub_i32(V a, V b) {
  return {_mm256_sub_epi32(a.lo, b.lo), _mm256_sub_epi32(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE V mullo_i32(V a, V b) {
  return {_mm256_mullo_epi32(a.lo, b.lo), _mm256_mullo_epi32(a.hi, b.hi)};
}
// Byte lookup within each 128-bit lane (vpshufb), table in every lane.
LOWBIT_INT8_GEMM_Z_INLINE V lookup(V table, V index) {
  return {_mm256_shuffle_epi8(table.lo, index.lo), _mm256_shuffle_epi8(table.hi, index.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE V table16(const std::int8_t* values) {
  const __m256i t =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(values)));
  return {t, t};
}
LOWBIT_INT8_GEMM_Z_INLINE V add_i8(V a, V b) {
  return {_mm256_add_epi8(a.lo, b.lo), _mm256_add_epi8(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE __m256i dpbusd_half(__m256i acc, __m256i u, __m256i s) {
  const __m256i low_byte = _mm256_set1_epi16(0x00FF);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i u_even = _mm256_and_si256(u, low_byte), u_odd = _mm256_srli_epi16(u, 8);
  const __m256i s_even = _mm256_srai_epi16(_mm256_slli_epi16(s, 8), 8);
  const __m256i s_odd = _mm256_srai_epi16(s, 8);
  const __m256i even = _mm256_madd_epi16(_mm256_mullo_epi16(u_even, s_even), ones);
  const __m256i odd = _mm256_madd_epi16(_mm256_mullo_epi16(u_odd, s_odd), ones);
  return _mm256_add_epi32(acc, _mm256_add_epi32(even, odd));
}
LOWBIT_INT8_GEMM_Z_INLINE V dpbusd(V acc, V u, V s) {
  return {dpbusd_half(acc.lo, u.lo, s.lo), dpbusd_half(acc.hi, u.hi, s.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf cvt(V a) {
  return {_mm256_cvtepi32_ps(a.lo), _mm256_cvtepi32_ps(a.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf mul(Vf a, Vf b) {
  return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf add(Vf a, Vf b) {
  return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf fmadd(Vf a, Vf b, Vf c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf load_params(const Half* p) {
  return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)))};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf load_params(const float* p) {
  return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
LOWBIT_INT8_GEMM_Z_INLINE Vf load_f(const float* p) {
  return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
}
LOWBIT_INT8_GEMM_Z_INLINE V load_zero_points(const std::int8_t* p) {
  return {_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)))};
}
LOWBIT_INT8_GEMM_Z_INLINE void store_f(float* p, Vf a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
#else
// Where GCC 12 implements an unmasked intrinsic with _mm512_undefined_*, it warns
// -Wmaybe-uninitialized (GCC bug 105593, fixed in 13); the zero-masked form with a full mask is
// the same instruction without the warning.
constexpr __mmask16 kAll = 0xFFFF;
using V = __m512i;
using Vf = __m512;
LOWBIT_INT8_GEMM_Z_INLINE V zero_i() { return _mm512_setzero_si512(); }
LOWBIT_INT8_GEMM_Z_INLINE Vf zero_f() { return _mm512_setzero_ps(); }
LOWBIT_INT8_GEMM_Z_INLINE V load64(const std::uint8_t* p) { return _mm512_loadu_si512(p); }
LOWBIT_INT8_GEMM_Z_INLINE V set1_i8(std::int8_t v) { return _mm512_set1_epi8(v); }
LOWBIT_INT8_GEMM_Z_INLINE V set1_i32(std::int32_t v) { return _mm512_set1_epi32(v); }
LOWBIT_INT8_GEMM_Z_INLINE Vf set1_f(float v) { return _mm512_set1_ps(v); }
LOWBIT_INT8_GEMM_Z_INLINE V and_i(V a, V b) { return _mm512_and_si512(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE V xor_i(V a, V b) { return _mm512_xor_si512(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE V srli16_4(V a) { return _mm512_srli_epi16(a, 4); }
template <int Shift>
LOWBIT_INT8_GEMM_Z_INLINE V slli32(V a) {
  return _mm512_maskz_slli_epi32(kAll, a, Shift);
}
LOWBIT_INT8_GEMM_Z_INLINE V add_i32(V a, V b) { return _mm512_add_epi32(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE V sub_i32(V a, V b) { return _mm512_sub_epi32(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE V mullo_i32(V a, V b) { return _mm512_mullo_epi32(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE V lookup(V table, V index) { return _mm512_shuffle_epi8(table, index); }
LOWBIT_INT8_GEMM_Z_INLINE V table16(const std::int8_t* values) {
  return _mm512_maskz_broadcast_i32x4(kAll,
                                      _mm_loadu_si128(reinterpret_cast<const __m128i*>(values)));
}
LOWBIT_INT8_GEMM_Z_INLINE V add_i8(V a, V b) { return _mm512_add_epi8(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE V dpbusd(V acc, V u, V s) { return _mm512_dpbusd_epi32(acc, u, s); }
LOWBIT_INT8_GEMM_Z_INLINE Vf cvt(V a) { return _mm512_maskz_cvtepi32_ps(kAll, a); }
LOWBIT_INT8_GEMM_Z_INLINE Vf mul(Vf a, Vf b) { return _mm512_mul_ps(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE Vf add(Vf a, Vf b) { return _mm512_add_ps(a, b); }
LOWBIT_INT8_GEMM_Z_INLINE Vf fmadd(Vf a, Vf b, Vf c) { return _mm512_fmadd_ps(a, b, c); }
LOWBIT_INT8_GEMM_Z_INLINE Vf load_params(const Half* p) {
  return _mm512_maskz_cvtph_ps(kAll, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
LOWBIT_INT8_GEMM_Z_INLINE Vf load_params(const float* p) { return _mm512_loadu_ps(p); }
LOWBIT_INT8_GEMM_Z_INLINE Vf load_f(const float* p) { return _mm512_loadu_ps(p); }
LOWBIT_INT8_GEMM_Z_INLINE V load_zero_points(const std::int8_t* p) {
  return _mm512_maskz_cvtepi8_epi32(kAll, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
LOWBIT_INT8_GEMM_Z_INLINE void store_f(float* p, Vf a) { _mm512_storeu_ps(p, a); }
#endif

LOWBIT_INT8_GEMM_Z_INLINE V broadcast_chunk(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return set1_i32(v);
}

// ---- the kernel -------------------------------------------------------------------------------

// The unsigned operand's offset: 0 for 4-bit codes, 128 for IQ4_NL and 8-bit codes.
template <class F>
constexpr int operand_offset() noexcept {
  return F::kCodes == InterleavedCodes::kUnsigned4 ? 0 : 128;
}

// Raw dot products Σ (v(c) + offset)·qx of one k-block for 16 rows: out[t] per token.
template <class F, int T>
LOWBIT_INT8_GEMM_Z_INLINE void block_dots(const std::uint8_t* block, const std::int8_t* const* qx,
                                          V (&out)[T]) {
  // One token: the chunks rotate over 4 accumulators (vpdpbusd latency), summed at the end.
  constexpr int kChains = T == 1 ? 4 : 1;
  V acc[kChains][T];
  for (int c = 0; c < kChains; ++c)
    for (int t = 0; t < T; ++t) acc[c][t] = zero_i();
  if constexpr (F::kCodes == InterleavedCodes::kSigned8) {
    const V flip = set1_i8(static_cast<std::int8_t>(-128));
    for (int c = 0; c < 8; ++c) {
      const V w = xor_i(load64(block + 64 * c), flip);
      for (int t = 0; t < T; ++t)
        acc[c % kChains][t] = dpbusd(acc[c % kChains][t], w, broadcast_chunk(qx[t] + 4 * c));
    }
  } else {
    const V nibble = set1_i8(0x0F);
    V table = zero_i();
    if constexpr (F::kCodes == InterleavedCodes::kNonLinear4)
      table = add_i8(table16(ggml::kIq4NlValues), set1_i8(static_cast<std::int8_t>(-128)));
    for (int v = 0; v < 4; ++v) {
      const V raw = load64(block + 64 * v);
      V lo = and_i(raw, nibble);
      V hi = and_i(srli16_4(raw), nibble);
      if constexpr (F::kCodes == InterleavedCodes::kNonLinear4) {
        lo = lookup(table, lo);
        hi = lookup(table, hi);
      }
      for (int t = 0; t < T; ++t) {
        acc[(2 * v) % kChains][t] =
            dpbusd(acc[(2 * v) % kChains][t], lo, broadcast_chunk(qx[t] + 4 * v));
        acc[(2 * v + 1) % kChains][t] =
            dpbusd(acc[(2 * v + 1) % kChains][t], hi, broadcast_chunk(qx[t] + 16 + 4 * v));
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    V sum = acc[0][t];
    for (int c = 1; c < kChains; ++c) sum = add_i32(sum, acc[c][t]);
    out[t] = sum;
  }
}

// y for the 16 rows of row block rb and tokens [t0, t0 + T).
template <class F, int T>
LOWBIT_INT8_GEMM_Z_TARGET inline void tile(const Problem& p, std::int64_t rb, std::int64_t t0) {
  using Scale = typename F::Scale;
  constexpr int kOffset = operand_offset<F>();
  constexpr int kZero = F::kImplicitZero + kOffset;
  static_assert(kZero == 0 || kZero == 8 || kZero == 128, "the implicit zero must be 0, 8 or 128");
  constexpr int kZeroShift = kZero == 8 ? 3 : 7;
  const std::uint8_t* codes = p.codes + rb * static_cast<std::int64_t>(p.row_block_bytes);
  const std::int64_t param0 = rb * p.groups * kRows;
  const Scale* scales = static_cast<const Scale*>(p.scales) + param0;
  const ActivationBlock* x[T];
  for (int t = 0; t < T; ++t) x[t] = p.x + (t0 + t) * p.k_blocks;
  Vf acc[T];
  for (int t = 0; t < T; ++t) acc[t] = zero_f();

  for (std::int64_t g = 0; g < p.groups; ++g) {
    const Vf d = load_params(scales + g * kRows);
    V z = zero_i();
    Vf m = zero_f();
    if constexpr (F::kOffset == InterleavedOffset::kZeroPoint)
      z = add_i32(load_zero_points(static_cast<const std::int8_t*>(p.offsets) + param0 + g * kRows),
                  set1_i32(kOffset));
    if constexpr (F::kOffset == InterleavedOffset::kMin)
      m = load_params(static_cast<const Scale*>(p.offsets) + param0 + g * kRows);
    const std::int64_t b_end = (g + 1) * p.blocks_per_group;
    for (std::int64_t b = g * p.blocks_per_group; b < b_end; ++b) {
      const std::int8_t* qb[T];
      for (int t = 0; t < T; ++t) qb[t] = x[t][b].q;
      V dots[T];
      if constexpr (T == 1) prefetch_codes<F::kBlockBytes>(codes + b * F::kBlockBytes);
      block_dots<F, T>(codes + b * F::kBlockBytes, qb, dots);
      for (int t = 0; t < T; ++t) {
        const ActivationBlock& xb = x[t][b];
        const V sum_x = set1_i32(xb.s);
        V isum = dots[t];
        if constexpr (F::kOffset == InterleavedOffset::kZeroPoint) {
          isum = sub_i32(isum, mullo_i32(z, sum_x));
        } else if constexpr (kZero != 0) {
          isum = sub_i32(isum, slli32<kZeroShift>(sum_x));
        }
        acc[t] = fmadd(cvt(isum), mul(d, set1_f(xb.d)), acc[t]);
        if constexpr (F::kOffset == InterleavedOffset::kMin)
          acc[t] = fmadd(m, set1_f(xb.ds), acc[t]);
      }
    }
  }

  const std::int64_t row = rb * kRows;
  const std::int64_t n = valid_rows(p, row, kRows);
  for (int t = 0; t < T; ++t) {
    if (n == kRows && p.y_col_stride == 1) {
      Vf v = acc[t];
      if (p.bias != nullptr) v = add(v, load_f(p.bias + row));
      store_f(p.y + (t0 + t) * p.y_row_stride + row, v);
    } else {
      float tmp[kRows];
      store_f(tmp, acc[t]);
      store_rows(p, t0 + t, row, tmp, n);
    }
  }
}

template <class F>
LOWBIT_INT8_GEMM_Z_TARGET inline void gemm(const Problem& p, std::int64_t row_block_begin,
                                           std::int64_t row_block_end) {
  for (std::int64_t rb = row_block_begin; rb < row_block_end; ++rb) {
    std::int64_t t = 0;
    for (; t + 8 <= p.tokens; t += 8) tile<F, 8>(p, rb, t);
    if (t + 4 <= p.tokens) {
      tile<F, 4>(p, rb, t);
      t += 4;
    }
    for (; t < p.tokens; ++t) tile<F, 1>(p, rb, t);
  }
}

}  // namespace LOWBIT_INT8_GEMM_Z_NS
}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit

#undef LOWBIT_INT8_GEMM_Z_INLINE
#undef LOWBIT_INT8_GEMM_Z_NS
#undef LOWBIT_INT8_GEMM_Z_TARGET

#endif  // LOWBIT_HAVE_X86_KERNELS
