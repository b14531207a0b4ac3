// lowbit/detail/kernels/int8_gemm/problem.hpp: what every int8-activation GEMM kernel receives,
// and the one arithmetic they all implement (the reference in reference.hpp spells it out).
//
// For output row r, token t, with k-blocks b = 0 .. K/32 − 1 in order, g = the block's group:
//
//   dot   = Σ_{e<32} v(code[r][32b+e]) · q[e]          exact int32 (|dot| ≤ 32·128·127)
//   isum  = dot − z[r][g] · s                           exact int32
//   acc   = fma(float(isum), d[r][g] · dx, acc)         float(isum) is exact (< 2^24)
//   acc   = fma(m[r][g], ds, acc)                       min form (Q4_1, Q4_K) only
//
// where q, dx (field d), s and ds belong to token t's k-block b (ActivationBlock).
//   y[t][r] = acc (+ bias[r])                                    acc starts at +0
//
// Integer sums are exact on every path, and the float sequence per (row, token) is this one, in
// this order, with fused multiply-adds (std::fma in the reference); so every ISA's output equals
// the reference bit for bit, which the tests check. A SIMD path may reach `dot` through other
// identities (vpdpbusd needs an unsigned operand: Σ (v + 128)·qx − 128·sx) as long as isum is the
// same integer.
//
// Kernels work on whole row blocks of 16 rows (format/interleaved.hpp) and all tokens; the
// executor gives each task a range of row blocks, so tasks write disjoint output columns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "lowbit/detail/kernels/quantize_activations/reference.hpp"
#include "lowbit/format/interleaved.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {
namespace detail {
namespace int8_gemm {

constexpr std::int64_t kRows = kInterleaveRows;    // rows per row block
constexpr std::int64_t kBlock = kInterleaveBlock;  // K per k-block
using quantize_activations::ActivationBlock;

struct Problem {
  // Weights.
  const InterleavedWeights* weights;  // for the reference's element accessors
  const std::uint8_t* codes;
  const void* scales;
  const void* offsets;
  std::int64_t rows;
  std::int64_t k_blocks;
  std::int64_t blocks_per_group;
  std::int64_t groups;
  std::size_t row_block_bytes;  // code bytes per row block
  // Activations, quantized (quantize_activations/reference.hpp): token t's k-block b is
  // x[t · k_blocks + b].
  std::int64_t tokens;
  const ActivationBlock* x;
  // Output y[t][r] at y + t·y_row_stride + r·y_col_stride; bias has `rows` values or is null.
  float* y;
  std::int64_t y_row_stride;
  std::int64_t y_col_stride;
  const float* bias;
};

// The problem for weights w, `tokens` rows of quantized activations x (tokens × w.k_blocks()),
// output y (tokens × w.rows(), validated by the caller) and bias (w.rows() values or null).
inline Problem make_problem(const InterleavedWeights& w, const ActivationBlock* x,
                            std::int64_t tokens, MatrixView<float> y, const float* bias) noexcept {
  Problem p{};
  p.weights = &w;
  p.codes = w.codes();
  p.scales = w.scales();
  p.offsets = w.offsets();
  p.rows = w.rows();
  p.k_blocks = w.k_blocks();
  p.groups = w.groups();
  p.blocks_per_group = w.group_size() / kBlock;
  p.row_block_bytes = w.row_block_code_bytes();
  p.tokens = tokens;
  p.x = x;
  p.y = y.data();
  p.y_row_stride = y.row_stride();
  p.y_col_stride = y.col_stride();
  p.bias = bias;
  return p;
}

// Rows [row_block_begin · 16, row_block_end · 16) ∩ [0, rows) for every token.
using Kernel = void(const Problem&, std::int64_t row_block_begin, std::int64_t row_block_end);

// The nine (codes, scale, offset) combinations the builders of format/interleaved.hpp produce;
// each kernel is instantiated for these only.
template <InterleavedCodes C, InterleavedScale S, InterleavedOffset O>
struct Format {
  static constexpr InterleavedCodes kCodes = C;
  static constexpr InterleavedOffset kOffset = O;
  using Scale = std::conditional_t<S == InterleavedScale::kHalf, Half, float>;
  // z of the implicit zero-point form.
  static constexpr int kImplicitZero =
      (O == InterleavedOffset::kImplicit && C == InterleavedCodes::kUnsigned4) ? 8 : 0;
  static constexpr std::int64_t kBlockBytes = C == InterleavedCodes::kSigned8 ? 512 : 256;
};

using FormatQ4_0 =
    Format<InterleavedCodes::kUnsigned4, InterleavedScale::kHalf, InterleavedOffset::kImplicit>;
using FormatQ4_1 =
    Format<InterleavedCodes::kUnsigned4, InterleavedScale::kHalf, InterleavedOffset::kMin>;
using FormatIq4Nl =
    Format<InterleavedCodes::kNonLinear4, InterleavedScale::kHalf, InterleavedOffset::kImplicit>;
using FormatQ8_0 =
    Format<InterleavedCodes::kSigned8, InterleavedScale::kHalf, InterleavedOffset::kImplicit>;
using FormatU4Sym =
    Format<InterleavedCodes::kUnsigned4, InterleavedScale::kFloat, InterleavedOffset::kImplicit>;
using FormatU4Asym =
    Format<InterleavedCodes::kUnsigned4, InterleavedScale::kFloat, InterleavedOffset::kZeroPoint>;
using FormatS8Sym =
    Format<InterleavedCodes::kSigned8, InterleavedScale::kFloat, InterleavedOffset::kImplicit>;
using FormatS8Asym =
    Format<InterleavedCodes::kSigned8, InterleavedScale::kFloat, InterleavedOffset::kZeroPoint>;
// ggml Q4_K: float d·sc and float −dmin·m per sub-block (format/interleaved.hpp).
using FormatQ4_K =
    Format<InterleavedCodes::kUnsigned4, InterleavedScale::kFloat, InterleavedOffset::kMin>;

// Index 0..8 of the combination above, or -1 for one no builder makes.
inline int format_index(const InterleavedWeights& w) noexcept {
  const InterleavedCodes c = w.codes_kind();
  const InterleavedScale s = w.scale_kind();
  const InterleavedOffset o = w.offset_kind();
  const bool half = s == InterleavedScale::kHalf;
  if (c == InterleavedCodes::kUnsigned4 && half && o == InterleavedOffset::kImplicit) return 0;
  if (c == InterleavedCodes::kUnsigned4 && half && o == InterleavedOffset::kMin) return 1;
  if (c == InterleavedCodes::kNonLinear4 && half && o == InterleavedOffset::kImplicit) return 2;
  if (c == InterleavedCodes::kSigned8 && half && o == InterleavedOffset::kImplicit) return 3;
  if (c == InterleavedCodes::kUnsigned4 && !half && o == InterleavedOffset::kImplicit) return 4;
  if (c == InterleavedCodes::kUnsigned4 && !half && o == InterleavedOffset::kZeroPoint) return 5;
  if (c == InterleavedCodes::kSigned8 && !half && o == InterleavedOffset::kImplicit) return 6;
  if (c == InterleavedCodes::kSigned8 && !half && o == InterleavedOffset::kZeroPoint) return 7;
  if (c == InterleavedCodes::kUnsigned4 && !half && o == InterleavedOffset::kMin) return 8;
  return -1;
}
constexpr int kFormatCount = 9;

// Stores `count` (≤ 16) row values of token t starting at row `row`, adding the bias: the
// epilogue every path shares when it cannot store a full vector.
inline void store_rows(const Problem& p, std::int64_t t, std::int64_t row, const float* values,
                       std::int64_t count) noexcept {
  float* out = p.y + t * p.y_row_stride + row * p.y_col_stride;
  for (std::int64_t i = 0; i < count; ++i) {
    const float v = p.bias != nullptr ? values[i] + p.bias[row + i] : values[i];
    out[i * p.y_col_stride] = v;
  }
}

// Decode (one token) is bound by the weight stream: kernels ask for the code bytes of the k-block
// kPrefetchDistance bytes ahead (2 KiB: 8 blocks of 4-bit codes, 4 of 8-bit; measured better than
// 1 and 4 KiB on Zen 3, and than relying on the hardware prefetcher alone, by 10-30 %). Past the
// row block's end that is the next row block's start, which comes next in the task's stream; past
// the allocation's end prefetch is a no-op. The address is formed on integers because pointer
// arithmetic beyond the allocation would be undefined.
constexpr std::int64_t kPrefetchDistance = 2048;

template <std::int64_t Bytes>
inline __attribute__((always_inline)) void prefetch_codes(const std::uint8_t* block) noexcept {
  const std::uintptr_t ahead = reinterpret_cast<std::uintptr_t>(block) + kPrefetchDistance;
  for (std::int64_t line = 0; line < Bytes; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(ahead + static_cast<std::uintptr_t>(line)), 0,
                       3);
}

// How many of the `width` rows starting at `row` exist.
constexpr std::int64_t valid_rows(const Problem& p, std::int64_t row, std::int64_t width) noexcept {
  return p.rows - row < width ? p.rows - row : width;
}

}  // namespace int8_gemm
}  // namespace detail
}  // namespace lowbit
