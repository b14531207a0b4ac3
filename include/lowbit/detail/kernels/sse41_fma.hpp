// lowbit/detail/kernels/sse41_fma.hpp: a fused multiply-add for CPUs without FMA (SSE4.1
// paths), rounded once as std::fma is, so that those paths stay bit-identical to the references.
//
// fma(a, b, c) for floats: the product of two floats is exact in double (24 + 24 bits <= 53, and
// no float product under- or overflows double); the sum is rounded to double *to odd* (TwoSum
// gives its rounding error; if the error is not zero and the sum's last bit is even, step one ulp
// towards the exact value); the final rounding to float is then the correctly rounded fma
// (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using
// rounding to odd", IEEE Transactions on Computers 57(4), 2008: 53 >= 2·24 + 2 bits suffice).
// Rounding the double sum to nearest instead would be wrong whenever it lands on a float tie
// (the test in test_gemm_int8.cpp builds such a case). Inf and NaN propagate as std::fma's do.
#pragma once

#include "lowbit/detail/dispatch.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace sse41_fma {

// a·b + c in double, rounded to odd: a·b exact, TwoSum's error e decides the last bit.
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128d sum_to_odd(__m128d product,
                                                                             __m128d c) {
  const __m128d s = _mm_add_pd(product, c);
  const __m128d c_part = _mm_sub_pd(s, product);
  const __m128d e =
      _mm_add_pd(_mm_sub_pd(product, _mm_sub_pd(s, c_part)), _mm_sub_pd(c, c_part));
  // Inexact (e is a nonzero number; NaN e comes from an Inf or NaN sum, left as it is) and even.
  const __m128i inexact = _mm_castpd_si128(
      _mm_and_pd(_mm_cmpneq_pd(e, _mm_setzero_pd()), _mm_cmpord_pd(e, e)));
  const __m128i one = _mm_set1_epi64x(1);
  const __m128i s_bits = _mm_castpd_si128(s);
  const __m128i even = _mm_cmpeq_epi64(_mm_and_si128(s_bits, one), _mm_setzero_si128());
  // Towards the exact value: +1 ulp of magnitude if e has s's sign, −1 otherwise. s is not zero
  // here (a zero TwoSum sum is exact), so a step never crosses zero.
  const __m128i opposite = _mm_srli_epi64(_mm_castpd_si128(_mm_xor_pd(e, s)), 63);
  const __m128i step = _mm_sub_epi64(one, _mm_add_epi64(opposite, opposite));
  const __m128i adjust = _mm_and_si128(step, _mm_and_si128(inexact, even));
  return _mm_castsi128_pd(_mm_add_epi64(s_bits, adjust));
}

// fma(a, b, c) for four floats, rounded once (header comment).
LOWBIT_TARGET_SSE41 inline __attribute__((always_inline)) __m128 fma_float(__m128 a, __m128 b,
                                                                           __m128 c) {
  const __m128 a_hi = _mm_movehl_ps(a, a), b_hi = _mm_movehl_ps(b, b), c_hi = _mm_movehl_ps(c, c);
  const __m128d lo = sum_to_odd(_mm_mul_pd(_mm_cvtps_pd(a), _mm_cvtps_pd(b)), _mm_cvtps_pd(c));
  const __m128d hi =
      sum_to_odd(_mm_mul_pd(_mm_cvtps_pd(a_hi), _mm_cvtps_pd(b_hi)), _mm_cvtps_pd(c_hi));
  return _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi));
}

}  // namespace sse41_fma
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
