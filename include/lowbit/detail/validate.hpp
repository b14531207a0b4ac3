// lowbit/detail/validate.hpp: input checks shared by the entry points.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {
namespace detail {

// A data tensor must be a valid view, non-empty and finite. The index of the first NaN/Inf is its
// flat row-major position, whatever the strides, so the caller can find it in their own layout.
inline Status check_data(MatrixView<const float> x) noexcept {
  LOWBIT_TRY(x.validate());
  if (x.empty()) return {Errc::kEmpty, "tensor has no elements"};
  for (std::int64_t r = 0; r < x.rows(); ++r) {
    for (std::int64_t c = 0; c < x.cols(); ++c) {
      if (!std::isfinite(x(r, c)))
        return {Errc::kNonFinite, "input is NaN or Inf", r * x.cols() + c};
    }
  }
  return {};
}

// An output view must be valid and shaped like the input it mirrors.
template <class T, class U>
Status check_output(MatrixView<T> out, MatrixView<U> in) noexcept {
  LOWBIT_TRY(out.validate());
  if (!same_shape(out, in)) return {Errc::kShapeMismatch, "output shape differs from input shape"};
  return {};
}

// ---- The products' argument checks (dequant_gemm, gemm, gemm_w8a8) -------------------------

// [begin, end) of the bytes a validated, non-empty view spans (every element lies inside; for a
// strided view some bytes inside are not its elements, which makes the overlap test conservative).
struct ByteSpan {
  std::uintptr_t begin = 0, end = 0;
};
template <class T>
ByteSpan byte_span(const MatrixView<T>& v) noexcept {
  ByteSpan s;
  s.begin = reinterpret_cast<std::uintptr_t>(v.data());
  const std::int64_t last = (v.rows() - 1) * v.row_stride() + (v.cols() - 1) * v.col_stride();
  s.end = s.begin + sizeof(T) * static_cast<std::uintptr_t>(last + 1);
  return s;
}
inline bool overlaps(std::uintptr_t b0, std::uintptr_t e0, std::uintptr_t b1,
                     std::uintptr_t e1) noexcept {
  return b0 < e1 && b1 < e0;
}

// The optional bias of a product: the default (empty) view, or 1 x out_features values.
inline bool has_bias(const MatrixView<const float>& bias) noexcept {
  return !(bias.data() == nullptr && bias.rows() == 0 && bias.cols() == 0);
}
inline Status check_bias(const MatrixView<const float>& bias, std::int64_t out_features,
                         const char* wrong_shape) noexcept {
  if (!has_bias(bias)) return {};
  LOWBIT_TRY(bias.validate());
  if (bias.rows() != 1 || bias.cols() != out_features) return {Errc::kShapeMismatch, wrong_shape};
  return {};
}

// Y of a product is written while everything else is read: its elements must be distinct (no
// zero or overlapping strides) and it must not overlap the memory [begin, end) of an input.
// Called with a validated, non-empty y.
template <class T>
Status check_distinct_elements(const MatrixView<T>& y, const char* what) noexcept {
  const bool rows_overlap =
      y.rows() > 1 && (y.row_stride() == 0 || (y.col_stride() == 1 && y.row_stride() < y.cols()));
  const bool cols_overlap =
      y.cols() > 1 && (y.col_stride() == 0 || (y.row_stride() == 1 && y.col_stride() < y.rows()));
  if (rows_overlap || cols_overlap) return {Errc::kInvalidArgument, what};
  return {};
}
template <class T>
bool overlaps(const MatrixView<T>& y, std::uintptr_t begin, std::uintptr_t end) noexcept {
  const ByteSpan s = byte_span(y);
  return overlaps(s.begin, s.end, begin, end);
}
template <class T, class U>
bool overlaps(const MatrixView<T>& y, const MatrixView<U>& x) noexcept {
  const ByteSpan s = byte_span(x);
  return overlaps(y, s.begin, s.end);
}

}  // namespace detail
}  // namespace lowbit
