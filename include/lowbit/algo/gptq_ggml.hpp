// lowbit/algo/gptq_ggml.hpp: GPTQ whose output is ggml blocks (Q4_0 … Q6_K, IQ4_NL, IQ4_XS), so
// that llama.cpp and lowbit's kernels run the GPTQ-quantized weights unchanged.
//
//   lowbit::Result<lowbit::GptqGgmlResult<lowbit::ggml::BlockQ4_K>> q =
//       lowbit::gptq_quantize_ggml<lowbit::ggml::BlockQ4_K>(w /*out × in*/, h /*in × in*/, {});
//   if (!q) return q.status();
//   // q->blocks: rows of in/256 blocks end to end, the layout ggml::quantize_rows writes
//
// The problem is GPTQ's (algo/gptq.hpp; Frantar et al. 2022, Algorithm 1): minimise the layer's
// output error ‖(W − Q)·X‖² = tr(ΔW·H·ΔWᵀ) with H = XᵀX, here with Q restricted to what a ggml
// block type can store. GPTQ needs two things from a quantizer: parameters, and "the code of this
// weight given those parameters". ggml's quantizers only offer the first, bundled: they fit a
// block's scales (and mins) to the 32 or 256 values they are given and emit every code at once.
// The extension, per output row and per ggml block of kBlockSize consecutive columns:
//
//   1. At the block's first column, run the format's own quantizer (FormatTraits<Block>::quantize,
//      byte-exact ggml) on the row's weights of that block *as they are now*, i.e. after the error
//      feedback of every column to their left. This fixes the block's parameters: Q4_0's fp16 d;
//      for the K-quants the super-block d, dmin and the 4/6-bit sub-block scales and mins. They are
//      never changed afterwards, so the block stays exactly what ggml's decoder expects.
//   2. For each column j of the block in turn, the code is the level nearest to the updated weight
//      among those the fixed parameters can represent at that position (below), the code is
//      written into the block, and the error is propagated as in GPTQ:
//
//        err = (w_j − q_j) / U_jj,     W[:, j+1:] −= err ⊗ U[j, j+1:],     H⁻¹ = UᵀU
//
//      with U the upper Cholesky factor of the damped inverse Hessian, computed and retried with
//      more damping exactly as gptq.hpp does (its gptq_inverse_factor is reused).
//
// Columns are processed left to right, never in act_order: a ggml block is a contiguous run of
// columns with shared parameters, and a permuted order would either fit a block's parameters
// before its columns' updates are known or break the storage layout. Lazy batch updates are kept
// (gptq.hpp's header explains them); the batch width is options.block_size rounded up to a
// multiple of kBlockSize, so that a ggml block never straddles two batches and step 1 always
// sees fully updated weights (unlike gptq.hpp's groups, which are fitted on stale weights
// inside a batch, a quirk of the reference we do not need to copy here).
//
// The levels at a position. Once a block's parameters are fixed, position i can hold codes
// c = 0 … max_code whose values are, bit for bit as the format's dequantizer computes them,
//
//   value(c) = scale_i · level(c) − shift_i,     level(c) = c − zero   (linear formats)
//                                                 level(c) = table[c]   (IQ4_NL, IQ4_XS)
//
//   format   scale_i                  shift_i         zero  max_code
//   q4_0     d                        0               8     15
//   q4_1     d                        −m              0     15
//   q5_0     d                        0               16    31
//   q5_1     d                        −m              0     31
//   q8_0     d                        0               127   254   (int8 codes −127 … 127, as ggml)
//   iq4_nl   d                        0               —     15    table = kIq4NlValues
//   iq4_xs   d·(ls_j − 32), j = i/32  0               —     15    table = kIq4NlValues
//   q2_K     d·sc_j,  j = i/16        dmin·m_j        0     3
//   q3_K     d·(s_j − 32), j = i/16   0               4     7
//   q4_K     d·sc_j,  j = i/32        dmin·m_j        0     15
//   q5_K     d·sc_j,  j = i/32        dmin·m_j        0     31
//   q6_K     d·scales_j, j = i/16     0               32    63
//
// (subtracting −m adds m exactly, and subtracting 0 changes no float, so each row is the format's
// own to_float). The nearest code: a first guess, clamp(round((w + shift)/scale)) + zero with
// ggml's ties-to-even rounding (for the K-quants exactly the expression ggml's quantizers use to
// recompute their codes from the stored scales), or for a table the entry nearest to
// (w + shift)/scale, ties to the larger entry as ggml; then a walk to a neighbouring code while
// that one's decoded value is strictly nearer to w. The levels are monotone in c, so the walk ends
// on the nearest decoded value; ties keep the first guess. A position whose levels all coincide
// (scale 0: an all-zero sub-block, or a sub-block scale that rounded to 0) keeps the code the
// format's quantizer wrote, since every code decodes to the same value there.
//
// Against ggml's bytes. With a diagonal H nothing is propagated and the blocks are those of
// ggml::quantize_rows, except where ggml's own code is not the nearest decoded level: Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, IQ4_NL and IQ4_XS pick their codes with the float32 scale *before* its rounding
// to fp16, so a weight within (relative fp16 rounding) × |level| of a decision boundary can get the
// code next to the nearest one for the stored scale (on ggml's oracle inputs 0.01% to 0.3% of the
// codes of the 4- and 5-bit types, 0.7% for Q8_0). lowbit picks the nearest for the stored scale, the value the model will compute with. The
// K-quants recompute their codes from the stored scales with the rounding used here: equal bytes.
//
// Importance. With options.use_hessian_importance the quantizer of step 1 gets diag(H) as its
// importance matrix: the imatrix llama.cpp collects is mean(x_c²) over tokens, which is diag(XᵀX)
// up to the token count. It is multiplied by a power of two near 1/mean(diag H): every ggml search
// is invariant to an exact power-of-two factor (weights, sums and their ratios scale exactly), so
// this changes no byte and keeps the weighted sums of large Hessians from overflowing. The legacy
// formats (Q4_0 …) weight by sqrt(σ² + x²) with σ² the mean square of the values passed in: ggml
// takes the whole row, step 1 passes one block (the rest of the row is not final yet), so their
// importance search can differ from llama-quantize's on the same row. The K-quants and IQ4 take σ²
// over the (super-)block anyway.
//
// Conventions kept from gptq.hpp: dead inputs (diag(H) = 0) get H_jj = 1 and W[:, j] = 0 (no
// token sees them, so spending a block's range on them would only cost the others); damping
// percdamp·mean(diag H), multiplied by 10 on a failed factorisation or a diverged sweep, at most
// max_damping_retries times, then Errc::kNumericalIssue; the loss Σ (w − q)²/(2·U_jj²), which
// the sequential elimination makes equal to ½·tr(ΔW·(H + damp·I)·ΔWᵀ) (to ~1e-6 in float32); rows are independent once U is known, so the
// executor runs slices of rows and the bytes do not depend on it.
//
// Errors (each a Status; nothing is written to the caller): a Block with no code levels here
// (kUnsupported); invalid views, empty W (kInvalidArgument, kEmpty); NaN/Inf in W or H
// (kNonFinite, flat index); in not a multiple of kBlockSize (kIndivisible); H not in × in
// (kShapeMismatch); a negative diag(H), block_size < 1, percdamp negative or not finite, retries
// outside 0..32 (kInvalidArgument); weights whose ggml scale overflows fp16 (kOutOfRange, or
// the format's own Status); a Hessian that no damping tried makes positive definite
// (kNumericalIssue).
//
// Memory: W's rows in float32 (one copy, sliced across tasks), the in × in factor, two batch
// buffers (rows × batch width), the blocks and the dequantized weights.
//
// The sweep, the damping retries, the row slices and the input checks are gptq.hpp's
// (detail::gptq_lazy_sweep, gptq_with_damping, gptq_for_row_slices, ...), with the quantizer
// passed in.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "lowbit/algo/gptq.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/format/ggml/common.hpp"
#include "lowbit/format/ggml/detail/k_search.hpp"
#include "lowbit/format/ggml/iq4.hpp"
#include "lowbit/format/ggml/k_quants.hpp"
#include "lowbit/format/ggml/legacy.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

struct GptqGgmlOptions {
  std::int64_t block_size = 128;      // lazy-batch width, ≥ 1; rounded up to a multiple of the
                                      // format's kBlockSize
  float percdamp = 0.01f;             // damping relative to mean(diag(H)), ≥ 0
  bool use_hessian_importance = true; // diag(H) as the ggml quantizer's importance matrix
  int max_damping_retries = 4;        // 0..32; each retry multiplies the damping by 10
  // Runs the sweep on slices of rows in parallel (null: the calling thread only). The result is
  // the same for any executor.
  Executor* executor = nullptr;
};

template <class Block>
struct GptqGgmlResult {
  std::int64_t rows = 0;             // out features
  std::int64_t cols = 0;             // in features
  std::int64_t blocks_per_row = 0;   // cols / kBlockSize
  std::vector<Block> blocks;         // (rows × blocks_per_row): row r at r·blocks_per_row, as
                                     // ggml::quantize_rows lays them out
  std::vector<float> dequantized;    // (rows × cols) row-major: the format's decode of `blocks`
  double loss = 0.0;                 // Σ (w − q)² / (2·U_jj²), as gptq.hpp
  float percdamp = 0.0f;             // relative damping that succeeded
  float damp = 0.0f;                 // the absolute value added to diag(H)
  int damping_retries = 0;           // how many times the damping was raised
};

namespace detail {

// ---------------------------------------------------------------------------------------------
// Code levels of the ggml formats at fixed parameters (see the table in the header comment).

struct GgmlCodeLevels {
  float scale = 0.0f;
  float shift = 0.0f;
  int zero = 0;                         // level(c) = c − zero, unless table is set
  int max_code = 0;                     // codes 0 … max_code
  const std::int8_t* table = nullptr;   // level(c) = table[c], increasing
};

// The decoded value of code c, with the float operations of the format's dequantizer.
inline float ggml_level_value(const GgmlCodeLevels& l, int c) noexcept {
  const int level = l.table != nullptr ? l.table[c] : c - l.zero;
  return l.scale * static_cast<float>(level) - l.shift;
}

// The code whose decoded value is nearest to x (finite x, finite non-zero scale).
inline int ggml_nearest_code(const GgmlCodeLevels& l, float x) noexcept {
  const float t = (x + l.shift) / l.scale;
  int c = 0;
  if (l.table != nullptr) {
    float best = std::fabs(t - static_cast<float>(l.table[0]));
    for (int k = 1; k <= l.max_code; ++k) {
      const float gap = std::fabs(t - static_cast<float>(l.table[k]));
      if (gap <= best) {  // ties to the larger entry, as ggml does
        best = gap;
        c = k;
      }
    }
  } else {
    // Clamped before rounding so that nearest_int_magic stays in its exact range.
    const float lo = static_cast<float>(-l.zero), hi = static_cast<float>(l.max_code - l.zero);
    c = ggml::detail::nearest_int_magic(t < lo ? lo : (t > hi ? hi : t)) + l.zero;
  }
  // Float rounding of t can leave the guess one level off the nearest decoded value.
  const auto gap = [&](int k) { return std::fabs(x - ggml_level_value(l, k)); };
  while (c > 0 && gap(c - 1) < gap(c)) --c;
  while (c < l.max_code && gap(c + 1) < gap(c)) ++c;
  return c;
}

// Split nibbles of a 32-value field: byte i % 16, low nibble for i < 16.
inline int split_nibble(const std::uint8_t* qs, int i) noexcept {
  return (qs[i % 16] >> (4 * (i / 16))) & 0xF;
}
inline void set_split_nibble(std::uint8_t* qs, int i, int c) noexcept {
  const int shift = 4 * (i / 16);
  qs[i % 16] = static_cast<std::uint8_t>((qs[i % 16] & ~(0xF << shift)) | ((c & 0xF) << shift));
}
// Bit i of a little-endian bit field.
inline int bit_at(const std::uint8_t* bits, int i) noexcept { return (bits[i / 8] >> (i % 8)) & 1; }
inline void set_bit_at(std::uint8_t* bits, int i, int b) noexcept {
  bits[i / 8] = static_cast<std::uint8_t>((bits[i / 8] & ~(1 << (i % 8))) | ((b & 1) << (i % 8)));
}
// 2-bit codes of the K-quants: element e of a 256-value block at bits 2·(r/32) of byte
// 32·(e/128) + r % 32, r = e % 128.
inline void set_k_2bit(std::uint8_t* qs, int e, int c) noexcept {
  const int r = e % 128, shift = 2 * (r / 32);
  std::uint8_t& b = qs[32 * (e / 128) + r % 32];
  b = static_cast<std::uint8_t>((b & ~(3 << shift)) | ((c & 3) << shift));
}
// 4-bit codes of Q4_K/Q5_K: sub-block j = e/32 in nibble j % 2 of byte 32·(j/2) + e % 32.
inline void set_k4_nibble(std::uint8_t* qs, int e, int c) noexcept {
  const int j = e / 32, shift = 4 * (j % 2);
  std::uint8_t& b = qs[32 * (j / 2) + e % 32];
  b = static_cast<std::uint8_t>((b & ~(0xF << shift)) | ((c & 0xF) << shift));
}

// Per block type: levels(block, i) at position i, get(block, i) and set(block, i, code).
template <class Block>
struct GgmlCodes {
  static constexpr bool kSupported = false;
};

template <>
struct GgmlCodes<ggml::BlockQ4_0> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ4_0& b, int) noexcept {
    return {to_float(b.d), 0.0f, 8, 15, nullptr};
  }
  static int get(const ggml::BlockQ4_0& b, int i) noexcept { return split_nibble(b.qs, i); }
  static void set(ggml::BlockQ4_0& b, int i, int c) noexcept { set_split_nibble(b.qs, i, c); }
};

template <>
struct GgmlCodes<ggml::BlockQ4_1> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ4_1& b, int) noexcept {
    return {to_float(b.d), -to_float(b.m), 0, 15, nullptr};
  }
  static int get(const ggml::BlockQ4_1& b, int i) noexcept { return split_nibble(b.qs, i); }
  static void set(ggml::BlockQ4_1& b, int i, int c) noexcept { set_split_nibble(b.qs, i, c); }
};

template <>
struct GgmlCodes<ggml::BlockQ5_0> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ5_0& b, int) noexcept {
    return {to_float(b.d), 0.0f, 16, 31, nullptr};
  }
  static int get(const ggml::BlockQ5_0& b, int i) noexcept {
    return split_nibble(b.qs, i) | bit_at(b.qh, i) << 4;
  }
  static void set(ggml::BlockQ5_0& b, int i, int c) noexcept {
    set_split_nibble(b.qs, i, c);
    set_bit_at(b.qh, i, c >> 4);
  }
};

template <>
struct GgmlCodes<ggml::BlockQ5_1> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ5_1& b, int) noexcept {
    return {to_float(b.d), -to_float(b.m), 0, 31, nullptr};
  }
  static int get(const ggml::BlockQ5_1& b, int i) noexcept {
    return split_nibble(b.qs, i) | bit_at(b.qh, i) << 4;
  }
  static void set(ggml::BlockQ5_1& b, int i, int c) noexcept {
    set_split_nibble(b.qs, i, c);
    set_bit_at(b.qh, i, c >> 4);
  }
};

template <>
struct GgmlCodes<ggml::BlockQ8_0> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ8_0& b, int) noexcept {
    return {to_float(b.d), 0.0f, 127, 254, nullptr};  // −128 stays unused, as in ggml's codes
  }
  static int get(const ggml::BlockQ8_0& b, int i) noexcept { return b.qs[i] + 127; }
  static void set(ggml::BlockQ8_0& b, int i, int c) noexcept {
    b.qs[i] = static_cast<std::int8_t>(c - 127);
  }
};

template <>
struct GgmlCodes<ggml::BlockIQ4_NL> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockIQ4_NL& b, int) noexcept {
    return {to_float(b.d), 0.0f, 0, 15, ggml::kIq4NlValues};
  }
  static int get(const ggml::BlockIQ4_NL& b, int i) noexcept { return split_nibble(b.qs, i); }
  static void set(ggml::BlockIQ4_NL& b, int i, int c) noexcept { set_split_nibble(b.qs, i, c); }
};

template <>
struct GgmlCodes<ggml::BlockIQ4_XS> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockIQ4_XS& b, int i) noexcept {
    const int j = i / 32;
    const int ls = ((b.scales_l[j / 2] >> (4 * (j % 2))) & 15) | (((b.scales_h >> (2 * j)) & 3) << 4);
    return {to_float(b.d) * static_cast<float>(ls - 32), 0.0f, 0, 15, ggml::kIq4NlValues};
  }
  static int get(const ggml::BlockIQ4_XS& b, int i) noexcept {
    return split_nibble(b.qs + 16 * (i / 32), i % 32);
  }
  static void set(ggml::BlockIQ4_XS& b, int i, int c) noexcept {
    set_split_nibble(b.qs + 16 * (i / 32), i % 32, c);
  }
};

template <>
struct GgmlCodes<ggml::BlockQ2_K> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ2_K& b, int i) noexcept {
    const std::uint8_t s = b.scales[i / 16];
    return {to_float(b.d) * static_cast<float>(s & 0xF),
            to_float(b.dmin) * static_cast<float>(s >> 4), 0, 3, nullptr};
  }
  static int get(const ggml::BlockQ2_K& b, int i) noexcept {
    return ggml::detail::kquant::unpack_k_2bit(b.qs, i);
  }
  static void set(ggml::BlockQ2_K& b, int i, int c) noexcept { set_k_2bit(b.qs, i, c); }
};

template <>
struct GgmlCodes<ggml::BlockQ3_K> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ3_K& b, int i) noexcept {
    const int s = ggml::detail::kquant::unpack_q3_k_scale(b.scales, i / 16);
    return {to_float(b.d) * static_cast<float>(s), 0.0f, 4, 7, nullptr};
  }
  // Code c = level + 4: its low 2 bits in qs, bit 2 (the level is >= 0) in hmask.
  static int get(const ggml::BlockQ3_K& b, int i) noexcept {
    return ggml::detail::kquant::unpack_k_2bit(b.qs, i) | ((b.hmask[i % 32] >> (i / 32)) & 1) << 2;
  }
  static void set(ggml::BlockQ3_K& b, int i, int c) noexcept {
    set_k_2bit(b.qs, i, c);
    const int bit = 1 << (i / 32);
    b.hmask[i % 32] = static_cast<std::uint8_t>((b.hmask[i % 32] & ~bit) | ((c >> 2) != 0 ? bit : 0));
  }
};

template <class Block, int MaxCode>
struct K45Codes {  // Q4_K, Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const Block& b, int i) noexcept {
    int sc = 0, m = 0;
    ggml::detail::kquant::unpack_k4_scale(b.scales, i / 32, &sc, &m);
    return {to_float(b.d) * static_cast<float>(sc), to_float(b.dmin) * static_cast<float>(m), 0,
            MaxCode, nullptr};
  }
  static int get(const Block& b, int i) noexcept {
    return ggml::detail::kquant::k45_code(b, i / 32, i % 32);
  }
};

template <>
struct GgmlCodes<ggml::BlockQ4_K> : K45Codes<ggml::BlockQ4_K, 15> {
  static void set(ggml::BlockQ4_K& b, int i, int c) noexcept { set_k4_nibble(b.qs, i, c); }
};

template <>
struct GgmlCodes<ggml::BlockQ5_K> : K45Codes<ggml::BlockQ5_K, 31> {
  // Low 4 bits as Q4_K; the fifth bit of element i is bit i/32 of qh[i % 32].
  static void set(ggml::BlockQ5_K& b, int i, int c) noexcept {
    set_k4_nibble(b.qs, i, c);
    const int bit = 1 << (i / 32);
    b.qh[i % 32] = static_cast<std::uint8_t>((b.qh[i % 32] & ~bit) | ((c >> 4) != 0 ? bit : 0));
  }
};

template <>
struct GgmlCodes<ggml::BlockQ6_K> {
  static constexpr bool kSupported = true;
  static GgmlCodeLevels levels(const ggml::BlockQ6_K& b, int i) noexcept {
    return {to_float(b.d) * static_cast<float>(b.scales[i / 16]), 0.0f, 32, 63, nullptr};
  }
  static int get(const ggml::BlockQ6_K& b, int i) noexcept {
    return ggml::detail::kquant::q6_k_code(b, i);
  }
  // Half h = i/128; with r = i % 128, l = r % 32, quarter = r/32: the low 4 bits in nibble
  // quarter/2 of ql[64h + l + 32·(quarter % 2)], the high 2 at bits 2·quarter of qh[32h + l].
  static void set(ggml::BlockQ6_K& b, int i, int c) noexcept {
    const int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
    std::uint8_t& low = b.ql[64 * h + l + 32 * (quarter & 1)];
    const int low_shift = (quarter & 2) != 0 ? 4 : 0;
    low = static_cast<std::uint8_t>((low & ~(0xF << low_shift)) | ((c & 0xF) << low_shift));
    std::uint8_t& high = b.qh[32 * h + l];
    high = static_cast<std::uint8_t>((high & ~(3 << (2 * quarter))) | (((c >> 4) & 3) << (2 * quarter)));
  }
};

// One slice of rows [r0, r0 + count): the sweep of the header comment, writing this slice's
// blocks (row-major, blocks_per_row per row) and dequantized values. False on a numerical
// failure (a diverged update, a block scale that overflows fp16).
template <class Block>
bool gptq_ggml_run_rows(MatrixView<const float> w_in, const Eigen::MatrixXf& u, const GptqSetup& s,
                        const float* importance, std::int64_t batch, std::int64_t r0,
                        std::int64_t count, Block* blocks, float* dequantized, double* loss) {
  using Traits = ggml::FormatTraits<Block>;
  using Codes = GgmlCodes<Block>;
  constexpr std::int64_t kBlock = Traits::kBlockSize;
  const std::int64_t n = s.cols, blocks_per_row = n / kBlock;
  Eigen::MatrixXf w(count, n);
  for (std::int64_t c = 0; c < n; ++c) {
    const bool dead = s.dead[static_cast<std::size_t>(c)] != 0;
    for (std::int64_t r = 0; r < count; ++r) w(r, c) = dead ? 0.0f : w_in(r0 + r, c);
  }
  *loss = 0.0;
  std::vector<float> x(static_cast<std::size_t>(kBlock));
  const auto column = [&](std::int64_t j, const Eigen::MatrixXf& w1, std::int64_t i,
                          float* err) -> bool {
    const std::int64_t b = j / kBlock;
    const int pos = static_cast<int>(j % kBlock);
    if (pos == 0) {  // the block's parameters, from its weights as updated so far
      for (std::int64_t r = 0; r < count; ++r) {
        for (std::int64_t e = 0; e < kBlock; ++e) x[static_cast<std::size_t>(e)] = w1(r, i + e);
        const float* imp = importance != nullptr ? importance + j : nullptr;
        if (!Traits::quantize(x.data(), kBlock, &blocks[(r0 + r) * blocks_per_row + b], imp).ok())
          return false;
      }
    }
    const float d = u(j, j);
    const float d2 = d * d;
    double sum = 0.0;
    for (std::int64_t r = 0; r < count; ++r) {
      Block& block = blocks[(r0 + r) * blocks_per_row + b];
      const GgmlCodeLevels levels = Codes::levels(block, pos);
      const float wr = w1(r, i);
      if (!std::isfinite(levels.scale) || !std::isfinite(levels.shift) || !std::isfinite(wr))
        return false;
      int code = 0;
      if (levels.scale == 0.0f) {  // every code decodes alike: keep the quantizer's
        code = Codes::get(block, pos);
      } else {
        code = ggml_nearest_code(levels, wr);
        Codes::set(block, pos, code);
      }
      const float q = ggml_level_value(levels, code);
      dequantized[(r0 + r) * n + j] = q;
      const float diff = wr - q;
      sum += static_cast<double>((diff * diff) / d2);
      err[r] = diff / d;
    }
    *loss += sum / 2.0;
    return std::isfinite(*loss);
  };
  return gptq_lazy_sweep(w, u, batch, column);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Entry points.

// GPTQ of W (out × in, any layout) against the Hessian H = XᵀX (in × in, any layout; its lower
// triangle is read, as gptq_quantize does), storing ggml blocks of type Block. Errors: see the
// header comment.
template <class Block>
Result<GptqGgmlResult<Block>> gptq_quantize_ggml(MatrixView<const float> w,
                                                 MatrixView<const float> h,
                                                 const GptqGgmlOptions& options) {
  if constexpr (!detail::GgmlCodes<Block>::kSupported) {
    (void)w;
    (void)h;
    (void)options;
    return Status(Errc::kUnsupported,
                  "gptq_quantize_ggml: this block type has no code levels (supported: q4_0, "
                  "q4_1, q5_0, q5_1, q8_0, iq4_nl, iq4_xs, q2_K ... q6_K)");
  } else {
    using Traits = ggml::FormatTraits<Block>;
    constexpr std::int64_t kBlock = Traits::kBlockSize;
    LOWBIT_TRY(detail::check_data(w));
    if (w.cols() % kBlock != 0)
      return Status(Errc::kIndivisible,
                    "in features must be a multiple of the ggml block size (32 or 256)");
    LOWBIT_TRY(detail::gptq_check_hessian(h, w.cols()));
    LOWBIT_TRY(detail::gptq_check_sweep_options(options.block_size, options.percdamp,
                                                options.max_damping_retries));
    detail::GptqSetup s;
    LOWBIT_TRY(detail::gptq_hessian_setup(h, w.rows(), &s));
    const std::int64_t rows = s.rows, n = s.cols, blocks_per_row = n / kBlock;
    s.perm.resize(static_cast<std::size_t>(n));
    for (std::int64_t c = 0; c < n; ++c) s.perm[static_cast<std::size_t>(c)] = c;

    std::vector<float> importance;
    if (options.use_hessian_importance) {
      // 2^−e with 2^e near mean(diag H): exact, so no ggml search changes (header comment).
      const int e = std::min(std::max(std::ilogb(s.mean_diag), -120), 120);
      const float unit = std::ldexp(1.0f, -e);
      importance.resize(static_cast<std::size_t>(n));
      for (std::int64_t c = 0; c < n; ++c) importance[static_cast<std::size_t>(c)] = h(c, c) * unit;
    }
    const float* imp = importance.empty() ? nullptr : importance.data();

    // The weights as given (dead columns zeroed) must be storable at all: a scale that
    // overflows fp16 is the input's fault, not a numerical failure worth more damping.
    {
      std::vector<float> row(static_cast<std::size_t>(n)), back(row.size());
      std::vector<Block> probe(static_cast<std::size_t>(blocks_per_row));
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t c = 0; c < n; ++c)
          row[static_cast<std::size_t>(c)] = s.dead[static_cast<std::size_t>(c)] ? 0.0f : w(r, c);
        const Status q = Traits::quantize(row.data(), n, probe.data(), imp);
        if (!q.ok()) return Status(q.code(), q.message(), q.index() < 0 ? q.index() : r * n + q.index());
        LOWBIT_TRY(Traits::dequantize(probe.data(), n, back.data()));
        for (std::int64_t c = 0; c < n; ++c)
          if (!std::isfinite(back[static_cast<std::size_t>(c)]))
            return Status(Errc::kOutOfRange, "weights too large for the ggml block's fp16 scale",
                          r * n + c);
      }
    }

    SerialExecutor serial;
    Executor& executor = options.executor != nullptr ? *options.executor : serial;
    const std::int64_t batch = (options.block_size + kBlock - 1) / kBlock * kBlock;
    const std::int64_t slices = detail::gptq_slice_count(rows, executor);
    std::vector<Block> blocks(static_cast<std::size_t>(rows * blocks_per_row));
    std::vector<float> dequantized(static_cast<std::size_t>(rows * n));
    std::vector<double> slice_loss(static_cast<std::size_t>(slices), 0.0);
    const auto attempt = [&](const Eigen::MatrixXf& u) {
      return detail::gptq_for_row_slices(
          rows, slices, executor, [&](std::int64_t t, std::int64_t r0, std::int64_t count) {
            return detail::gptq_ggml_run_rows(w, u, s, imp, batch, r0, count, blocks.data(),
                                              dequantized.data(),
                                              &slice_loss[static_cast<std::size_t>(t)]);
          });
    };
    const Result<detail::GptqDamping> damping = detail::gptq_with_damping(
        h, s, options.percdamp, options.max_damping_retries, attempt);
    if (!damping) return damping.status();

    GptqGgmlResult<Block> out;
    out.rows = rows;
    out.cols = n;
    out.blocks_per_row = blocks_per_row;
    out.blocks = std::move(blocks);
    out.dequantized = std::move(dequantized);
    for (const double l : slice_loss) out.loss += l;  // in slice order: executor-independent
    out.percdamp = damping->percdamp;
    out.damp = damping->damp;
    out.damping_retries = damping->retries;
    return out;
  }
}

template <class Block>
Result<GptqGgmlResult<Block>> gptq_quantize_ggml(MatrixView<const float> w,
                                                 const Eigen::MatrixXf& h,
                                                 const GptqGgmlOptions& options) {
  return gptq_quantize_ggml<Block>(w, col_major(h.data(), h.rows(), h.cols()), options);
}

}  // namespace lowbit
