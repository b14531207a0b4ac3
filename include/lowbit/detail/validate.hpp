// lowbit/detail/validate.hpp: input checks shared by the entry points.
#pragma once

#include <cmath>
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

}  // namespace detail
}  // namespace lowbit
