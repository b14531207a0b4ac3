// lowbit/format/ggml/iq4.hpp: ggml's non-linear 4-bit formats IQ4_NL and IQ4_XS, byte-exact.
//
// Both store a 4-bit index into one fixed, non-uniform table instead of a uniform level:
//
//   kIq4NlValues = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
//
// The levels crowd around zero and thin out towards the tails, the shape of a bell-curved weight
// distribution, so for Gaussian-like blocks the table loses less than 16 evenly spaced levels at
// the same 4 bits. A value dequantizes as scale * table[code]; there is no zero point. The table
// is asymmetric (-127 and 113 at the ends, no 0), which is why the scale keeps the sign the search
// gives it: a negative scale mirrors the table and lets the -127 end serve a positive maximum.
//
// IQ4_NL (ggml type 20): 32 values, 18 bytes, 4.5 bits per value.
//
//   byte  0      2                                    18
//         +------+------------------------------------+
//         |  d   | qs[16]: split nibbles              |    value e = d * K[code e]
//         | fp16 | byte j = code j | code (j+16) << 4 |
//         +------+------------------------------------+
//
// IQ4_XS (ggml type 23): 256 values, 136 bytes, 4.25 bits per value. Eight sub-blocks of 32, each
// with a 6-bit signed scale ls - 32 relative to the super-block scale d:
//
//   byte  0      2          4             8                                         136
//         +------+----------+-------------+-----------------------------------------+
//         |  d   | scales_h | scales_l[4] | qs[128]: sub-block j = bytes 16j..16j+15 |
//         | fp16 | u16 LE   |             | split nibbles within the sub-block       |
//         +------+----------+-------------+-----------------------------------------+
//
//   ls_j = (scales_l[j/2] >> 4*(j%2) & 15) | ((scales_h >> 2j & 3) << 4)     (6 bits, 0..63)
//   value e of sub-block j = (d * (ls_j - 32)) * K[code e]       (the product rounded to float)
//
// Fields are little-endian, as in ggml; like ggml, lowbit assumes a little-endian host for the
// 16-bit fields (Half and scales_h are stored in host order).
//
// Quantizers (ggml's quantize_row_iq4_nl_impl, re-derived). Every 32-value sub-block with largest
// magnitude amax (signed value `max`, the first one on ties) below 1e-15 gets scale 0. Otherwise:
//
//   weights    w_j = x_j^2, or with an importance matrix w_j = imp_j * sqrt(sigma2 + x_j^2), where
//              sigma2 = 2 * sum(x^2) / (block length) over the whole block (32) or super-block (256)
//   one pass   codes l_j = nearest table entry to x_j / d0, then the weighted least-squares scale
//              for those codes, d = sum(w q x) / sum(w q^2) with q = K[l]
//   search     15 more candidates d = max / (s - 127), s = -7..7, each with its own codes; the
//              one maximising (sum w q x)^2 / sum(w q^2) wins (the least weighted squared error)
//
// quantize_reference(IQ4_NL) is ggml's quantize_row_iq4_nl_ref: one pass from d0 = max / -127,
// and the codes of that pass are kept. quantize(IQ4_NL) is ggml_quantize_chunk: one pass from
// d0 = max / 127, then the search, then every code recomputed from the winning scale. The two
// differ in 13 of the 14 oracle inputs; model files written by llama-quantize use the second.
// IQ4_XS has a single path (its reference quantizer is the chunk path without importance): search
// on each sub-block, then d = -max_scale / 32 from the sub-block scale of largest magnitude, each
// sub-block scale rounded to l = clamp(nearest_int(scale / d), -32, 31), and the codes recomputed
// with d * l. Rounding is ggml's nearest_int (ties to even); "nearest table entry" breaks exact
// ties towards the larger entry. All arithmetic is float32 in ggml's order: build with
// -ffp-contract=off for the bytes to match ggml's (a fused multiply-add moves results by an ulp).
//
// Where lowbit defines what ggml leaves open:
//   * IQ4_NL reference, negligible block (amax < 1e-15): ggml stores d = 0 and code bytes read from
//     an uninitialised buffer; lowbit writes code 8 (table value 1), as ggml's chunk path does.
//     The dequantized values are zero either way.
//   * Importance weights that are all zero over a 32-value sub-block: ggml divides 0 by 0 and
//     stores a NaN scale; lowbit quantizes that sub-block with the weights x^2 instead (the
//     weighting ggml uses without an importance matrix). Any other importance is used as ggml does.
//   * A block whose fp16 scale would overflow (|x| in the millions) is kOutOfRange, index = the
//     block's first element; ggml stores Inf. Blocks before it have been written, later ones not
//     (the scale is only known after the block's search, so a complete pre-check would cost a
//     second full pass).
//
// Dequantization accepts any bytes (every nibble is a valid code); a non-finite fp16 scale in
// the input is propagated to the output values, as ggml does.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "lowbit/format/ggml/common.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"

namespace lowbit {
namespace ggml {

// Activation partners (defined in legacy.hpp and k_quants.hpp); only named here.
struct BlockQ8_0;
struct BlockQ8_K;

// The 16 levels shared by IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl).
inline constexpr std::int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                 1,    13,   25,  38,  53,  69,  89,  113};

struct BlockIQ4_NL {
  Half d;                 // scale, fp16
  std::uint8_t qs[16];    // split nibbles: byte j = code j | code (j + 16) << 4
};
static_assert(sizeof(BlockIQ4_NL) == 18, "BlockIQ4_NL must match ggml's block_iq4_nl (18 bytes)");

struct BlockIQ4_XS {
  Half d;                    // super-block scale, fp16
  std::uint16_t scales_h;    // high 2 bits of sub-block scale j at bits 2j, 2j+1
  std::uint8_t scales_l[4];  // low 4 bits of sub-block scale j: nibble j % 2 of byte j / 2
  std::uint8_t qs[128];      // sub-block j: bytes 16j..16j+15, split nibbles
};
static_assert(sizeof(BlockIQ4_XS) == 136, "BlockIQ4_XS must match ggml's block_iq4_xs (136 bytes)");

namespace detail {
namespace iq4 {

constexpr int kSubBlock = 32;
constexpr float kNegligible = 1e-15f;  // below this amax a sub-block is stored as zero
constexpr int kSearchSteps = 7;        // candidates max / (s - 127), s = -7..7

// Round to nearest, ties to even, for |v| <= 2^22 - 1: adding 1.5 * 2^23 leaves the rounded
// integer in the low mantissa bits (the add itself rounds to even). Defined for every float (the
// bits are read with memcpy), which keeps NaN from ever reaching a float-to-int conversion.
inline int nearest_int(float v) noexcept {
  const float shifted = v + 12582912.0f;
  std::uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return static_cast<int>(bits & 0x007FFFFFu) - 0x00400000;
}

// Index of the table entry nearest to v; an exact midpoint goes to the larger entry, values
// beyond either end to that end, NaN to 15.
inline std::uint8_t nearest_code(float v) noexcept {
  if (v <= static_cast<float>(kIq4NlValues[0])) return 0;
  if (v >= static_cast<float>(kIq4NlValues[15])) return 15;
  int lo = 0, hi = 15;  // invariant: K[lo] <= v < K[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < static_cast<float>(kIq4NlValues[mid])) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  const float below = v - static_cast<float>(kIq4NlValues[lo]);
  const float above = static_cast<float>(kIq4NlValues[hi]) - v;
  return static_cast<std::uint8_t>(below < above ? lo : hi);
}

// The weighted sums sum(w q x) and sum(w q^2) for the codes of x * inverse_scale, accumulated in
// element order; writes the codes when `codes` is not null.
struct Sums {
  float qx = 0.0f;
  float q2 = 0.0f;
};
inline Sums weighted_sums(const float* x, const float* w, float inverse_scale,
                          std::uint8_t* codes) noexcept {
  Sums s;
  for (int j = 0; j < kSubBlock; ++j) {
    const std::uint8_t l = nearest_code(inverse_scale * x[j]);
    if (codes != nullptr) codes[j] = l;
    const float q = static_cast<float>(kIq4NlValues[l]);
    const float wq = w[j] * q;
    s.qx += wq * x[j];
    s.q2 += wq * q;
  }
  return s;
}

enum class Fit {
  kOnePass,  // ggml's reference IQ4_NL: codes from max / -127, one least-squares refit
  kSearch,   // ggml's chunk path: 15 extra candidate scales, the best least-squares fit wins
};

// Scale of one 32-value sub-block. `importance` (32 weights) may be null; sigma2 is the
// (super-)block's 2 * mean(x^2). With kOnePass the codes of the pass land in `codes`; with kSearch
// `codes` is scratch and the caller recomputes them from the final scale. Returns 0 for a
// negligible sub-block and leaves `codes` untouched then.
inline float fit_sub_block(const float* x, const float* importance, float sigma2, Fit fit,
                           std::uint8_t* codes) noexcept {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kSubBlock; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  if (amax < kNegligible) return 0.0f;

  float w[kSubBlock];
  for (int j = 0; j < kSubBlock; ++j) {
    w[j] = importance != nullptr ? importance[j] * std::sqrt(sigma2 + x[j] * x[j]) : x[j] * x[j];
  }
  // The reference pass starts from the table's -127 end mapped onto max, the search from +127.
  const float first = fit == Fit::kOnePass ? max / -127.0f : max / 127.0f;
  Sums s = weighted_sums(x, w, 1.0f / first, codes);
  if (!(s.q2 > 0.0f)) {
    // All weights zero (only possible with an importance matrix; ggml would store 0/0 = NaN):
    // fall back to the weighting used without importance. q is never 0, so x^2 weights give
    // q2 > 0 whenever amax >= kNegligible, barring overflow, which the caller reports.
    for (int j = 0; j < kSubBlock; ++j) w[j] = x[j] * x[j];
    s = weighted_sums(x, w, 1.0f / first, codes);
  }
  float d = s.qx / s.q2;
  if (fit == Fit::kOnePass) return d;

  // Maximising qx^2 / q2 minimises sum w (x - d q)^2 at the least-squares d = qx / q2; the
  // comparison is cross-multiplied (as ggml does) so no candidate divides by zero.
  float best = d * s.qx;
  for (int step = -kSearchSteps; step <= kSearchSteps; ++step) {
    const float inverse_scale = static_cast<float>(step + kIq4NlValues[0]) / max;
    const Sums c = weighted_sums(x, w, inverse_scale, nullptr);
    if (c.q2 > 0.0f && c.qx * c.qx > best * c.q2) {
      d = c.qx / c.q2;
      best = d * c.qx;
    }
  }
  return d;
}

inline bool half_is_finite(Half h) noexcept { return (h.bits & 0x7C00u) != 0x7C00u; }

// Packs 32 codes of a sub-block into 16 split-nibble bytes.
inline void pack_split_nibbles(const std::uint8_t* codes, std::uint8_t* out) noexcept {
  for (int j = 0; j < 16; ++j) {
    out[j] = static_cast<std::uint8_t>(codes[j] | (codes[j + 16] << 4));
  }
}

inline float sum_of_squares(const float* x, int n) noexcept {
  float s = 0.0f;
  for (int j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

// One IQ4_NL block. Returns false when its fp16 scale overflows.
inline bool quantize_nl_block(const float* x, const float* importance, Fit fit,
                              BlockIQ4_NL& out) noexcept {
  const float sigma2 = sum_of_squares(x, kSubBlock) * (2.0f / kSubBlock);
  std::uint8_t codes[kSubBlock];
  std::memset(codes, 8, sizeof codes);  // code 8 (value 1) for a negligible block, see header
  const float d = fit_sub_block(x, importance, sigma2, fit, codes);
  if (fit == Fit::kSearch) {
    const float inverse_scale = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < kSubBlock; ++j) codes[j] = nearest_code(inverse_scale * x[j]);
  }
  out.d = to_half(d);
  pack_split_nibbles(codes, out.qs);
  return half_is_finite(out.d);
}

// One IQ4_XS super-block. Returns false when its fp16 scale overflows.
inline bool quantize_xs_block(const float* x, const float* importance, BlockIQ4_XS& out) noexcept {
  constexpr int kSubBlocks = 256 / kSubBlock;
  const float sigma2 = sum_of_squares(x, 256) * (2.0f / 256);
  float scales[kSubBlocks];
  std::uint8_t scratch[kSubBlock];
  float max_scale = 0.0f, amax_scale = 0.0f;
  for (int ib = 0; ib < kSubBlocks; ++ib) {
    scales[ib] = fit_sub_block(x + ib * kSubBlock,
                               importance != nullptr ? importance + ib * kSubBlock : nullptr,
                               sigma2, Fit::kSearch, scratch);
    if (std::fabs(scales[ib]) > amax_scale) {
      amax_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  // The sub-block scale of largest magnitude maps to level -32, the end of the signed 6-bit
  // range with the most room. The float d (not its fp16 rounding) sets the 6-bit levels.
  const float d = -max_scale / 32.0f;
  out.d = to_half(d);
  out.scales_h = 0;
  const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
  for (int ib = 0; ib < kSubBlocks; ++ib) {
    int level = nearest_int(inverse_d * scales[ib]);
    level = level < -32 ? -32 : (level > 31 ? 31 : level);
    const float sub_scale = d * static_cast<float>(level);
    const float inverse_sub = sub_scale != 0.0f ? 1.0f / sub_scale : 0.0f;
    std::uint8_t codes[kSubBlock];
    for (int j = 0; j < kSubBlock; ++j) codes[j] = nearest_code(inverse_sub * x[ib * kSubBlock + j]);
    pack_split_nibbles(codes, out.qs + 16 * ib);
    const auto biased = static_cast<unsigned>(level + 32);  // 0..63
    if (ib % 2 == 0) {
      out.scales_l[ib / 2] = static_cast<std::uint8_t>(biased & 15u);
    } else {
      out.scales_l[ib / 2] = static_cast<std::uint8_t>(out.scales_l[ib / 2] | ((biased & 15u) << 4));
    }
    out.scales_h = static_cast<std::uint16_t>(out.scales_h | ((biased >> 4) << (2 * ib)));
  }
  return half_is_finite(out.d);
}

inline Status quantize_nl_row(const float* x, std::int64_t n, BlockIQ4_NL* y,
                              const float* importance, Fit fit) noexcept {
  LOWBIT_TRY(ggml::detail::check_quantize_row(x, n, y, kSubBlock, importance));
  for (std::int64_t b = 0; b < n / kSubBlock; ++b) {
    BlockIQ4_NL block;
    const float* w = importance != nullptr ? importance + b * kSubBlock : nullptr;
    if (!quantize_nl_block(x + b * kSubBlock, w, fit, block))
      return {Errc::kOutOfRange, "iq4_nl: block scale overflows fp16", b * kSubBlock};
    y[b] = block;
  }
  return {};
}

}  // namespace iq4
}  // namespace detail

template <>
struct FormatTraits<BlockIQ4_NL> {
  static constexpr const char* kName = "iq4_nl";
  static constexpr std::uint32_t kGgmlType = 20;
  static constexpr std::int64_t kBlockSize = 32;
  using DotPartner = BlockQ8_0;

  // ggml's quantize_row_iq4_nl_ref (one pass; code 8 in negligible blocks, see the header).
  static Status quantize_reference(const float* x, std::int64_t n, BlockIQ4_NL* y) noexcept {
    return detail::iq4::quantize_nl_row(x, n, y, nullptr, detail::iq4::Fit::kOnePass);
  }

  // ggml_quantize_chunk: the 15-candidate search, with or without importance. Without importance
  // this is NOT quantize_reference (see the header).
  static Status quantize(const float* x, std::int64_t n, BlockIQ4_NL* y,
                         const float* importance = nullptr) noexcept {
    return detail::iq4::quantize_nl_row(x, n, y, importance, detail::iq4::Fit::kSearch);
  }

  // ggml's dequantize_row_iq4_nl: d * K[code].
  static Status dequantize(const BlockIQ4_NL* y, std::int64_t n, float* x) noexcept {
    LOWBIT_TRY(ggml::detail::check_dequantize_row(y, n, x, kBlockSize));
    for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
      const float d = to_float(y[b].d);
      float* out = x + b * kBlockSize;
      for (int j = 0; j < 16; ++j) {
        out[j] = d * static_cast<float>(kIq4NlValues[y[b].qs[j] & 15]);
        out[j + 16] = d * static_cast<float>(kIq4NlValues[y[b].qs[j] >> 4]);
      }
    }
    return {};
  }
};

template <>
struct FormatTraits<BlockIQ4_XS> {
  static constexpr const char* kName = "iq4_xs";
  static constexpr std::uint32_t kGgmlType = 23;
  static constexpr std::int64_t kBlockSize = 256;
  using DotPartner = BlockQ8_K;

  // ggml's quantize_row_iq4_xs_ref, which is the search path without importance.
  static Status quantize_reference(const float* x, std::int64_t n, BlockIQ4_XS* y) noexcept {
    return quantize(x, n, y, nullptr);
  }

  // ggml_quantize_chunk for IQ4_XS, with or without importance.
  static Status quantize(const float* x, std::int64_t n, BlockIQ4_XS* y,
                         const float* importance = nullptr) noexcept {
    LOWBIT_TRY(ggml::detail::check_quantize_row(x, n, y, kBlockSize, importance));
    for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
      BlockIQ4_XS block;
      const float* w = importance != nullptr ? importance + b * kBlockSize : nullptr;
      if (!detail::iq4::quantize_xs_block(x + b * kBlockSize, w, block))
        return {Errc::kOutOfRange, "iq4_xs: super-block scale overflows fp16", b * kBlockSize};
      y[b] = block;
    }
    return {};
  }

  // ggml's dequantize_row_iq4_xs: (d * (ls - 32)) * K[code].
  static Status dequantize(const BlockIQ4_XS* y, std::int64_t n, float* x) noexcept {
    LOWBIT_TRY(ggml::detail::check_dequantize_row(y, n, x, kBlockSize));
    for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
      const BlockIQ4_XS& block = y[b];
      const float d = to_float(block.d);
      for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((block.scales_l[ib / 2] >> (4 * (ib % 2))) & 15) |
                       (((block.scales_h >> (2 * ib)) & 3) << 4);
        const float sub_scale = d * static_cast<float>(ls - 32);
        const std::uint8_t* qs = block.qs + 16 * ib;
        float* out = x + b * kBlockSize + 32 * ib;
        for (int j = 0; j < 16; ++j) {
          out[j] = sub_scale * static_cast<float>(kIq4NlValues[qs[j] & 15]);
          out[j + 16] = sub_scale * static_cast<float>(kIq4NlValues[qs[j] >> 4]);
        }
      }
    }
    return {};
  }
};

}  // namespace ggml
}  // namespace lowbit
