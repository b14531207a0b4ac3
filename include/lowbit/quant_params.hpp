// lowbit/quant_params.hpp: the (scale, zero point) pairs of a quantized tensor.
//
// Parameters sit on a grid of param_rows x param_cols blocks (policy/granularity.hpp), stored
// row-major: the parameters of element (r, c) are at index (r / block.rows) * cols + c / block.cols.
// QuantParams owns them; QuantParamsView lets an engine pass parameters it already holds (from a
// file, from its own calibration) without copying.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "lowbit/policy/granularity.hpp"
#include "lowbit/status.hpp"

namespace lowbit {

struct QuantParamsView {
  const float* scale = nullptr;              // (rows, cols) row-major
  const std::int32_t* zero_point = nullptr;  // (rows, cols) row-major
  std::int64_t rows = 0;
  std::int64_t cols = 0;

  std::int64_t size() const noexcept { return rows * cols; }
};

struct QuantParams {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<float> scale;
  std::vector<std::int32_t> zero_point;

  QuantParams() = default;
  QuantParams(std::int64_t param_rows, std::int64_t param_cols)
      : rows(param_rows),
        cols(param_cols),
        scale(static_cast<std::size_t>(param_rows * param_cols)),
        zero_point(static_cast<std::size_t>(param_rows * param_cols)) {}

  std::int64_t size() const noexcept { return rows * cols; }
  QuantParamsView view() const noexcept { return {scale.data(), zero_point.data(), rows, cols}; }
  operator QuantParamsView() const noexcept { return view(); }
};

namespace detail {
// Parameters must match the grid the granularity gives this tensor, and every scale must be a
// positive finite number (a zero or NaN scale would make 1/scale meaningless).
template <class Granularity>
Status check_params(const QuantParamsView& p, const Granularity& g, std::int64_t rows,
                    std::int64_t cols) noexcept {
  const BlockShape grid = param_grid(g, rows, cols);
  if (p.rows != grid.rows || p.cols != grid.cols)
    return {Errc::kShapeMismatch, "parameter grid does not match the tensor and granularity"};
  if (p.size() > 0 && (p.scale == nullptr || p.zero_point == nullptr))
    return {Errc::kInvalidArgument, "parameter view has a null pointer"};
  for (std::int64_t i = 0; i < p.size(); ++i) {
    // 1/scale must be finite too: a subnormal scale would turn every product into Inf or NaN.
    if (!(p.scale[i] > 0.0f) || !std::isfinite(p.scale[i]) || !std::isfinite(1.0f / p.scale[i]))
      return {Errc::kInvalidArgument, "scale is not a positive finite number with a finite inverse",
              i};
  }
  return {};
}
}  // namespace detail

}  // namespace lowbit
