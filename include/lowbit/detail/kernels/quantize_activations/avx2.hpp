// lowbit/detail/kernels/quantize_activations/avx2.hpp: the activation quantizer of reference.hpp
// on AVX2, 32 values (4 ymm) per block; every x86 path above AVX2 uses it too (it is a small
// fraction of a GEMM's time).
//
// Bit-identical to the reference: amax is an integer max over |x| bit patterns (vpmaxsd: the
// patterns are non-negative int32), the block decision is the reference's own block_scale(), the
// product x · id is one vmulps, the rounding vroundps with an explicit nearest-even mode (not the
// MXCSR mode), and the conversion of the then integral floats is exact.
#pragma once

#include <cstdint>
#include <cstring>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/quantize_activations/reference.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace quantize_activations {
namespace avx2 {

LOWBIT_TARGET_AVX2 inline void quantize_row(const float* x, std::int64_t k,
                                            ActivationBlock* blocks) noexcept {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  // vpackssdw/vpacksswb interleave the 128-bit lanes; this puts the 8 dwords back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (std::int64_t b = 0; b < k / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    const __m256 v0 = _mm256_loadu_ps(xb);
    const __m256 v1 = _mm256_loadu_ps(xb + 8);
    const __m256 v2 = _mm256_loadu_ps(xb + 16);
    const __m256 v3 = _mm256_loadu_ps(xb + 24);
    __m256i m =
        _mm256_max_epi32(_mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(v0), abs_mask),
                                          _mm256_and_si256(_mm256_castps_si256(v1), abs_mask)),
                         _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(v2), abs_mask),
                                          _mm256_and_si256(_mm256_castps_si256(v3), abs_mask)));
    m = _mm256_max_epi32(m, _mm256_permute2x128_si256(m, m, 1));
    m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0x4E));
    m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0xB1));
    const BlockScale s = block_scale(static_cast<std::uint32_t>(_mm256_cvtsi256_si32(m)));
    ActivationBlock& out = blocks[b];
    out.d = s.d;
    out.pad = 0;
    if (!s.codes) {
      std::memset(out.q, 0, kBlock);
      out.s = 0;
      out.ds = s.d * 0.0f;
      continue;
    }
    const __m256 id = _mm256_set1_ps(s.id);
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256i q0 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), kNearest));
    const __m256i q1 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), kNearest));
    const __m256i q2 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), kNearest));
    const __m256i q3 = _mm256_cvttps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), kNearest));
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
    const __m128i half =
        _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    __m128i t = _mm_add_epi32(half, _mm_shuffle_epi32(half, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    const std::int32_t block_sum = _mm_cvtsi128_si32(t);
    const __m256i packed =
        _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q),
                        _mm256_permutevar8x32_epi32(packed, order));
    out.s = block_sum;
    out.ds = s.d * static_cast<float>(block_sum);
  }
}

}  // namespace avx2
}  // namespace quantize_activations
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
