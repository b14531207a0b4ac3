// lowbit/format/ggml/common.hpp: what every ggml block format shares.
//
// ggml (the tensor library of llama.cpp) stores a quantized row as blocks laid end to end; each
// block type fixes its element count, byte size and bit layout (ggml-common.h). lowbit mirrors
// those layouts byte for byte in lowbit::ggml, keeping ggml's names so users find them
// (ggml::BlockQ4_0), so that files written by either library are read by the other.
//
// Each block type `B` has a struct with a static_assert on its size, and a FormatTraits<B>
// specialisation with this interface (all noexcept, no allocation, no exceptions):
//
//   kName                "q4_0": ggml's type name, also the GGUF/llama.cpp name
//   kGgmlType            ggml's enum ggml_type value (the tensor type id stored in GGUF)
//   kBlockSize           elements per block (32, or 256 for the K-quants)
//   DotPartner           the block type activations are quantized to for this weight's dot
//                        product (ggml's vec_dot_type): BlockQ8_0 for Q4_0, BlockQ8_K for Q4_K
//   quantize_reference(x, n, y)          ggml's quantize_row_<type>_ref: the reference quantizer
//   quantize(x, n, y, importance)        ggml_quantize_chunk on one row of n values: with an
//                                        importance matrix (n weights, importance[i] >= 0) or
//                                        with nullptr (then equal to quantize_reference, except
//                                        where ggml's chunk path differs: IQ4_NL)
//   dequantize(y, n, x)                  ggml's to_float (dequantize_row_<type>)
//
// Bad input is a Status, checked before anything is written: n not a multiple of kBlockSize
// (kIndivisible), n < 0 or a null pointer with n > 0 (kInvalidArgument), NaN or Inf among the
// values (kNonFinite, index of the first) or the importance (kInvalidArgument, also for negative
// weights). ggml itself does not check: it asserts or emits garbage.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {
namespace ggml {

// Specialised by every block type (see the header comment for the interface).
template <class Block>
struct FormatTraits;

namespace detail {

// Checks one row of n values to be quantized into blocks of `block` elements.
inline Status check_quantize_row(const float* x, std::int64_t n, const void* y, std::int64_t block,
                                 const float* importance = nullptr) noexcept {
  if (n < 0) return {Errc::kInvalidArgument, "ggml row: negative length"};
  if (n % block != 0)
    return {Errc::kIndivisible, "ggml row: length is not a multiple of the block size"};
  if (n > 0 && (x == nullptr || y == nullptr))
    return {Errc::kInvalidArgument, "ggml row: null pointer"};
  for (std::int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return {Errc::kNonFinite, "input is NaN or Inf", i};
  }
  if (importance != nullptr) {
    for (std::int64_t i = 0; i < n; ++i) {
      if (!(importance[i] >= 0.0f) || !std::isfinite(importance[i]))
        return {Errc::kInvalidArgument, "importance weight is negative, NaN or Inf", i};
    }
  }
  return {};
}

// Checks one row of n values to be dequantized from blocks of `block` elements.
inline Status check_dequantize_row(const void* y, std::int64_t n, const float* x,
                                   std::int64_t block) noexcept {
  if (n < 0) return {Errc::kInvalidArgument, "ggml row: negative length"};
  if (n % block != 0)
    return {Errc::kIndivisible, "ggml row: length is not a multiple of the block size"};
  if (n > 0 && (x == nullptr || y == nullptr))
    return {Errc::kInvalidArgument, "ggml row: null pointer"};
  return {};
}

}  // namespace detail

// Quantizes every row of a matrix (rows x n_per_row, any strides) into row-major blocks:
// row r occupies blocks [r * n_per_row / kBlockSize, (r + 1) * n_per_row / kBlockSize).
// `importance` holds n_per_row weights shared by all rows, or is nullptr.
template <class Block>
Status quantize_rows(MatrixView<const float> x, Block* y, const float* importance = nullptr) {
  using Traits = FormatTraits<Block>;
  LOWBIT_TRY(x.validate());
  if (x.cols() % Traits::kBlockSize != 0)
    return {Errc::kIndivisible, "ggml row: length is not a multiple of the block size"};
  const std::int64_t blocks_per_row = x.cols() / Traits::kBlockSize;
  std::vector<float> row(static_cast<std::size_t>(x.col_stride() == 1 ? 0 : x.cols()));
  for (std::int64_t r = 0; r < x.rows(); ++r) {
    const float* src = &x(r, 0);
    if (x.col_stride() != 1) {
      for (std::int64_t c = 0; c < x.cols(); ++c) row[static_cast<std::size_t>(c)] = x(r, c);
      src = row.data();
    }
    const Status s = Traits::quantize(src, x.cols(), y + r * blocks_per_row, importance);
    if (!s.ok()) return {s.code(), s.message(), s.index() < 0 ? s.index() : r * x.cols() + s.index()};
  }
  return {};
}

}  // namespace ggml
}  // namespace lowbit
