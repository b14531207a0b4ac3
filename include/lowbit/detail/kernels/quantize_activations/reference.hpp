// lowbit/detail/kernels/quantize_activations/reference.hpp: activations quantized on the fly to
// int8, one scale per 32 consecutive values of a token row (the partner of every weight format in
// lowbit/gemm.hpp, like ggml's Q8_0 with a float32 scale). The scalar reference; the SIMD paths
// (avx2.hpp, neon.hpp) produce the same bytes and floats.
//
// Per block of 32 values x_0..x_31 of one row:
//
//   amax = max |x_i|, computed on the bit patterns (|x| as an unsigned integer orders finite
//          magnitudes exactly and puts Inf and NaN above them all)
//   amax is Inf or NaN (the block holds a non-finite value):
//          d = NaN, q_i = 0, s = 0, ds = NaN   → every output of this token is NaN (see below)
//   127 / amax overflows (amax = 0, or amax < 127 / FLT_MAX ≈ 3.7e-37):
//          d = 0, q_i = 0, s = 0, ds = 0        → the block counts as zero
//   otherwise:
//          id = 127 / amax, d = amax / 127       (float32 divisions)
//          q_i = round_half_even(x_i · id)       (the product rounded to float32 first)
//          s = Σ q_i, ds = d · float(s)
//
// x_i · id ≤ 127·(1 + 2^-23) < 127.5, so q_i ∈ [−127, 127]: −128 never occurs, which keeps every
// u8×s8 and s8×s8 pair sum of the kernels inside int16 (2 · 128 · 127 = 32512).
//
// Rounding: to nearest, ties to even, whatever the FPU's rounding mode. It is what the hardware
// conversions give for free (x86 roundps with an explicit nearest mode, NEON fcvtns), so the SIMD
// paths need no extra correction step to equal this reference, and it is unbiased (halves away
// from zero, ggml's reference roundf, would bias ties on quantized inputs). The reference rounds
// on the float's bits, so neither a fused multiply-add nor the current FPU mode can move it.
//
// Non-finite activations. int8 has no NaN or Inf; a block holding one gets scale NaN, and the
// kernels multiply every block's scale into the token's outputs, so exactly that token's outputs
// become NaN (for an Inf input too: the sign and size of the true result are lost with the
// quantization, and NaN says "invalid" without guessing). Other tokens are untouched.
//
// Output, per token row of K values (K a multiple of 32): K / 32 ActivationBlocks, each holding
// everything a kernel needs for one k-block behind one pointer (like ggml's block_q8_1, with
// float32 fields), so a register-blocked kernel keeps one pointer per token:
//
//   byte  0                               32      36      40      44      48
//         | q[32]: int8 codes               | d f32 | s i32 | ds f32| pad 0 |
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

namespace lowbit {
namespace detail {
namespace quantize_activations {

constexpr int kBlock = 32;

struct ActivationBlock {
  std::int8_t q[kBlock];  // codes in [-127, 127]
  float d;                // scale: x ≈ d · q
  std::int32_t s;         // Σ q
  float ds;               // d · float(s)
  std::int32_t pad;       // 0
};
static_assert(sizeof(ActivationBlock) == 48, "ActivationBlock is 48 bytes: 32 codes and 4 fields");

// The block's scale decision from the bit pattern of amax (sign bit cleared).
struct BlockScale {
  float d;     // the block's scale (NaN for a non-finite block, 0 for a zero block)
  float id;    // 127 / amax when `codes` is true
  bool codes;  // whether the codes are computed (false: all zero)
};

inline BlockScale block_scale(std::uint32_t amax_bits) noexcept {
  if (amax_bits >= 0x7F800000u) return {std::numeric_limits<float>::quiet_NaN(), 0.0f, false};
  float amax;
  std::memcpy(&amax, &amax_bits, sizeof amax);
  const float id = 127.0f / amax;  // +Inf when amax is 0 or tiny
  if (!(id <= std::numeric_limits<float>::max())) return {0.0f, 0.0f, false};
  return {amax / 127.0f, id, true};
}

// Round to nearest, ties to even, of |v| < 2^23, on the bits (independent of the FPU mode).
inline int round_half_even(float v) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a < 0x3F000000u) return 0;                               // |v| < 0.5
  const int exponent = static_cast<int>(a >> 23) - 127;        // -1 .. 22
  const std::uint32_t mantissa = (a & 0x7FFFFFu) | 0x800000u;  // v = mantissa · 2^(e − 23)
  const int shift = 23 - exponent;                             // 1 .. 24
  std::uint32_t whole = mantissa >> shift;
  const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (whole & 1u) != 0)) ++whole;
  const int magnitude = static_cast<int>(whole);
  return (u >> 31) != 0 ? -magnitude : magnitude;
}

inline std::uint32_t abs_bits(float v) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u & 0x7FFFFFFFu;
}

namespace reference {

// One token row of k values (k a multiple of 32), contiguous.
inline void quantize_row(const float* x, std::int64_t k, ActivationBlock* out) noexcept {
  for (std::int64_t b = 0; b < k / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    std::uint32_t amax_bits = 0;
    for (int i = 0; i < kBlock; ++i) {
      const std::uint32_t a = abs_bits(xb[i]);
      amax_bits = a > amax_bits ? a : amax_bits;
    }
    const BlockScale s = block_scale(amax_bits);
    std::int32_t total = 0;
    for (int i = 0; i < kBlock; ++i) {
      int q = 0;
      if (s.codes) {
        const float product = xb[i] * s.id;
        q = round_half_even(product);
      }
      out[b].q[i] = static_cast<std::int8_t>(q);
      total += q;
    }
    out[b].d = s.d;
    out[b].s = total;
    out[b].ds = s.d * static_cast<float>(total);
    out[b].pad = 0;
  }
}

}  // namespace reference
}  // namespace quantize_activations
}  // namespace detail
}  // namespace lowbit
