// lowbit/detail/kernels/dequant_gemm/problem.hpp: what every dequant-GEMM kernel receives.
//
// The public entry point (lowbit/dequant_gemm.hpp) validates its arguments and reduces them to two
// plain, trivially copyable records that the kernels of every ISA read:
//
//   Weights   the weight matrix W [rows = out_features, cols = K = in_features] in its storage
//             format, unchanged (ggml blocks or lowbit's dense packed codes), with the geometry
//             the kernels need to find row r, element k and its parameters;
//   Problem   X [tokens x K] and Y [tokens x rows], unit column stride, any row stride, possibly
//             unaligned, and the optional bias (rows values, any stride).
//
// The kernels compute Y = X * W^T (+ bias): y[t][r] = sum_k x[t][k] * w[r][k] + bias[r], where
// w[r][k] is exactly the float that lowbit's byte-exact dequantizer of the format produces.
//
// Storage recap (the byte diagrams live with the formats: format/ggml/*.hpp, format/packed.hpp,
// format/packed_matrix.hpp):
//
//   ggml      row r = bytes [r * row_bytes, (r + 1) * row_bytes): cols / block blocks of
//             block_bytes each, laid end to end (ggml's own tensor layout; GGUF stores it as is).
//   packed    one dense little-endian bit stream of rows * cols codes of `bits` bits, row-major:
//             code (r, k) is bits [(r*cols + k)*bits, +bits). Rows start on a byte only when
//             cols * bits is a multiple of 8. w = float(q - zero_point) * scale, with
//             scale = scales[r * param_stride + k / group] (float32 little-endian, unaligned)
//             and the zero point at the same index (0 when symmetric). The four granularities
//             of format/packed_matrix.hpp all fit this one formula:
//               per tensor  group = cols, param_stride = 0
//               per row     group = cols, param_stride = 1
//               per column  group = 1,    param_stride = 0
//               per group   group = G,    param_stride = cols / G
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/executor.hpp"

namespace lowbit {
namespace detail {
namespace dequant {

// The storage formats the kernels read. Order is irrelevant; names follow ggml's.
enum class Format : std::uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ8_0,
  kQ2_K,
  kQ3_K,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kIQ4_NL,
  kIQ4_XS,
  kTQ1_0,
  kTQ2_0,
  kPacked,
};

// Where a packed matrix keeps its zero points.
enum class ZeroPoints : std::uint8_t {
  kNone,    // symmetric codes: the zero point is 0
  kPacked,  // `bits`-bit unsigned fields, densely packed like the codes (LBPM files)
  kInt32,   // one int32 per parameter (QuantizedTensor's QuantParams)
};

struct Weights {
  Format format = Format::kF32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  const std::uint8_t* data = nullptr;  // ggml: the blocks; packed: the codes
  std::size_t bytes = 0;               // readable bytes at `data`
  // ggml formats
  std::int64_t block = 1;       // elements per block
  std::size_t block_bytes = 0;  // bytes per block
  std::size_t row_bytes = 0;    // bytes per row = cols / block * block_bytes
  // packed format
  int bits = 0;
  bool signed_codes = false;             // symmetric schemes store b-bit two's complement codes
  std::int64_t group = 0;                // elements per parameter along K
  std::int64_t param_stride = 0;         // parameters per row (0: shared by every row)
  const std::uint8_t* scales = nullptr;  // float32 little-endian, possibly unaligned
  ZeroPoints zero_point_kind = ZeroPoints::kNone;
  const void* zero_points = nullptr;
  std::size_t zero_point_bytes = 0;  // readable bytes at zero_points (kPacked)
};

struct Problem {
  const float* x = nullptr;  // x[t * x_stride + k]
  std::int64_t x_stride = 0;
  float* y = nullptr;  // y[t * y_stride + r]
  std::int64_t y_stride = 0;
  std::int64_t tokens = 0;
  const float* bias = nullptr;  // bias[r * bias_stride], or nullptr
  std::int64_t bias_stride = 0;
};

// Output rows per task handed to the executor. A multiple of every row block a kernel uses (the
// GEMV's 4 rows, the GEMM panels' 16 and 32), so that task boundaries never change how a row is
// computed: results are bit-identical for any executor.
constexpr std::int64_t kRowsPerTask = 64;

// K is processed in chunks of this many elements by the GEMM paths (a multiple of every block
// size, 256 for the K-quants): one chunk of a 64-row panel of dequantized weights is 128 KiB,
// resident in L2 while every token passes over it. Y holds the partial sums between chunks, so a
// longer chunk means fewer passes over Y (512 measured ~20% faster than 256 at N = 512 on Zen 3).
constexpr std::int64_t kChunk = 512;

// Up to this many tokens, the GEMV kernels run once per token over each block of rows (the
// block's weights stay in L1/L2 for the next token); from here on, the GEMM kernels dequantize a
// panel once and reuse it for every token.
constexpr std::int64_t kGemmMinTokens = 4;

// Decodes elements [k0, k0 + count) of row `row` into out[0, count): exactly the floats of the
// format's dequantizer. k0 is a multiple of the format's block; count is too, or reaches cols.
using DecodeRowFn = void(const Weights& w, std::int64_t row, std::int64_t k0, std::int64_t count,
                         float* out);

// One ISA's whole dequant-GEMM: validation is done; it may not fail.
using DequantGemmFn = void(const Weights& w, const Problem& p, Executor& executor);

inline std::int64_t task_count(std::int64_t rows) noexcept {
  return (rows + kRowsPerTask - 1) / kRowsPerTask;
}

}  // namespace dequant
}  // namespace detail
}  // namespace lowbit
