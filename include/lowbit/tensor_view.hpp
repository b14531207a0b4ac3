// lowbit/tensor_view.hpp: non-owning 2-D views over the caller's memory.
//
// Every lowbit entry point takes its data through a MatrixView, so an engine passes its own buffers
// (row-major weights, column-major activations, rows with padding) without copies. Element (r, c)
// lives at data[r * row_stride + c * col_stride]; sizes and strides are int64 because LLM tensors
// pass 2^31 elements. A view never owns, allocates or frees.
//
//   row-major  rows x cols:            row_stride = cols, col_stride = 1
//   column-major rows x cols:          row_stride = 1,    col_stride = rows
//   strided rows (leading dim ld):     row_stride = ld,   col_stride = 1
//   a flat buffer of n values:         1 x n row-major (quantizers treat it as one row)
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "lowbit/status.hpp"

namespace lowbit {

template <class T>
class MatrixView {
 public:
  using element_type = T;

  constexpr MatrixView() noexcept = default;
  constexpr MatrixView(T* data, std::int64_t rows, std::int64_t cols, std::int64_t row_stride,
                       std::int64_t col_stride) noexcept
      : data_(data), rows_(rows), cols_(cols), row_stride_(row_stride), col_stride_(col_stride) {}

  // A view of mutable elements converts to a view of const ones, never the reverse.
  template <class U, class = std::enable_if_t<std::is_same<const U, T>::value &&
                                               !std::is_same<U, T>::value>>
  constexpr MatrixView(const MatrixView<U>& other) noexcept
      : MatrixView(other.data(), other.rows(), other.cols(), other.row_stride(),
                   other.col_stride()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::int64_t rows() const noexcept { return rows_; }
  constexpr std::int64_t cols() const noexcept { return cols_; }
  constexpr std::int64_t row_stride() const noexcept { return row_stride_; }
  constexpr std::int64_t col_stride() const noexcept { return col_stride_; }
  constexpr std::int64_t size() const noexcept { return rows_ * cols_; }
  constexpr bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }

  constexpr T& operator()(std::int64_t r, std::int64_t c) const noexcept {
    return data_[r * row_stride_ + c * col_stride_];
  }
  // The element at flat row-major position i (i = r * cols + c), whatever the strides.
  constexpr T& flat(std::int64_t i) const noexcept { return (*this)(i / cols_, i % cols_); }

  // Rows [first, first + count) as a view of their own.
  constexpr MatrixView row_block(std::int64_t first, std::int64_t count) const noexcept {
    return MatrixView(data_ + first * row_stride_, count, cols_, row_stride_, col_stride_);
  }
  // Columns [first, first + count).
  constexpr MatrixView col_block(std::int64_t first, std::int64_t count) const noexcept {
    return MatrixView(data_ + first * col_stride_, rows_, count, row_stride_, col_stride_);
  }
  // The same elements with rows and columns exchanged: no data moves.
  constexpr MatrixView transposed() const noexcept {
    return MatrixView(data_, cols_, rows_, col_stride_, row_stride_);
  }

  // Checks what a view can get wrong on its own: negative extents or strides, a null pointer with
  // elements, and element offsets that overflow int64. Entry points call this before reading.
  Status validate() const noexcept {
    if (rows_ < 0 || cols_ < 0) return {Errc::kInvalidArgument, "view has a negative extent"};
    if (row_stride_ < 0 || col_stride_ < 0)
      return {Errc::kInvalidArgument, "view has a negative stride"};
    if (empty()) return {};
    if (data_ == nullptr) return {Errc::kInvalidArgument, "view has elements but a null pointer"};
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
    if (rows_ > kMax / cols_) return {Errc::kOverflow, "view: rows * cols overflows int64"};
    // The last element's offset must be representable: (rows-1)*rs + (cols-1)*cs <= max.
    const std::int64_t r = rows_ - 1, c = cols_ - 1;
    if (r != 0 && row_stride_ > kMax / r) return {Errc::kOverflow, "view: row offset overflows"};
    if (c != 0 && col_stride_ > kMax / c) return {Errc::kOverflow, "view: column offset overflows"};
    if (r * row_stride_ > kMax - c * col_stride_)
      return {Errc::kOverflow, "view: element offset overflows"};
    return {};
  }

 private:
  T* data_ = nullptr;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t row_stride_ = 0;
  std::int64_t col_stride_ = 0;
};

template <class T>
constexpr MatrixView<T> row_major(T* data, std::int64_t rows, std::int64_t cols) noexcept {
  return MatrixView<T>(data, rows, cols, cols, 1);
}
template <class T>
constexpr MatrixView<T> col_major(T* data, std::int64_t rows, std::int64_t cols) noexcept {
  return MatrixView<T>(data, rows, cols, 1, rows);
}
template <class T>
constexpr MatrixView<T> strided_rows(T* data, std::int64_t rows, std::int64_t cols,
                                     std::int64_t row_stride) noexcept {
  return MatrixView<T>(data, rows, cols, row_stride, 1);
}
// n contiguous values as one row.
template <class T>
constexpr MatrixView<T> flat(T* data, std::int64_t n) noexcept {
  return MatrixView<T>(data, 1, n, n, 1);
}

// Both views have the same extents.
template <class T, class U>
constexpr bool same_shape(const MatrixView<T>& a, const MatrixView<U>& b) noexcept {
  return a.rows() == b.rows() && a.cols() == b.cols();
}

}  // namespace lowbit
