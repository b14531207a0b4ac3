// lowbit/policy/granularity.hpp: which elements share one (scale, zero point).
//
// A granularity tiles a rows x cols tensor into equal rectangular blocks; each block gets its own
// parameters, stored row-major on a param_rows x param_cols grid:
//
//   PerTensor        one block: the whole tensor                      grid 1 x 1
//   PerChannel<0>    one block per row (output channel of W (N, K))   grid rows x 1
//   PerChannel<1>    one block per column (input feature)             grid 1 x cols
//   PerGroup<G>      G consecutive elements of a row, along K         grid rows x cols/G
//   PerToken         one block per row, computed at run time          grid rows x 1
//
// Weights are (out, in) = (N, K) row-major as in torch.nn.Linear, so PerGroup groups run along
// the input dimension K, as GPTQ, AWQ and ggml's blocks do. Pass `view.transposed()` for (K, N).
#pragma once

#include <cstdint>

#include "lowbit/status.hpp"

namespace lowbit {

// The extent of one block and of the parameter grid, for a given tensor shape.
struct BlockShape {
  std::int64_t rows;  // rows of the tensor per block
  std::int64_t cols;  // columns of the tensor per block
};

struct PerTensor {
  static constexpr bool kDynamic = false;
  Status check(std::int64_t, std::int64_t) const noexcept { return {}; }
  BlockShape block(std::int64_t rows, std::int64_t cols) const noexcept { return {rows, cols}; }
};

template <int Axis>
struct PerChannel {
  static_assert(Axis == 0 || Axis == 1,
                "PerChannel<Axis>: Axis is 0 (one scale per row) or 1 (one per column)");
  static constexpr bool kDynamic = false;
  static constexpr int kAxis = Axis;
  Status check(std::int64_t, std::int64_t) const noexcept { return {}; }
  BlockShape block(std::int64_t rows, std::int64_t cols) const noexcept {
    return Axis == 0 ? BlockShape{1, cols} : BlockShape{rows, 1};
  }
};

// PerGroup<kDynamicGroup>{g} takes the group size at run time through the same code path.
constexpr std::int64_t kDynamicGroup = 0;

// One scale per `Size` consecutive weights along K. Size is a template argument so loops over a
// group can unroll in kernels; PerGroup<kDynamicGroup> carries it as a member instead.
template <std::int64_t Size>
struct PerGroup {
  static_assert(Size == kDynamicGroup || Size > 0,
                "PerGroup<Size>: Size must be positive, or kDynamicGroup for a run-time group size");
  static constexpr bool kDynamic = false;
  static constexpr std::int64_t kSize = Size;
  std::int64_t size() const noexcept { return Size; }
  Status check(std::int64_t, std::int64_t cols) const noexcept {
    if (cols % Size != 0)
      return {Errc::kIndivisible, "PerGroup: group size does not divide the number of columns"};
    return {};
  }
  BlockShape block(std::int64_t, std::int64_t) const noexcept { return {1, Size}; }
};

template <>
struct PerGroup<kDynamicGroup> {
  static constexpr bool kDynamic = false;
  static constexpr std::int64_t kSize = kDynamicGroup;
  std::int64_t group_size = 0;
  std::int64_t size() const noexcept { return group_size; }
  Status check(std::int64_t, std::int64_t cols) const noexcept {
    if (group_size <= 0)
      return {Errc::kInvalidArgument, "PerGroup<kDynamicGroup>: group_size must be positive"};
    if (cols % group_size != 0)
      return {Errc::kIndivisible, "PerGroup: group size does not divide the number of columns"};
    return {};
  }
  BlockShape block(std::int64_t, std::int64_t) const noexcept { return {1, group_size}; }
};

// One scale per row of activations (rows = tokens), from that row's own range at run time, as
// ZeroQuant and LLM.int8 quantize activations. Dynamic: there is nothing to calibrate, so a
// Calibrator rejects it at compile time; the range policy is applied to each row as it comes.
struct PerToken {
  static constexpr bool kDynamic = true;
  Status check(std::int64_t, std::int64_t) const noexcept { return {}; }
  BlockShape block(std::int64_t, std::int64_t cols) const noexcept { return {1, cols}; }
};

// Parameter grid of a granularity on a rows x cols tensor (after check() succeeded).
template <class Granularity>
BlockShape param_grid(const Granularity& g, std::int64_t rows, std::int64_t cols) noexcept {
  const BlockShape b = g.block(rows, cols);
  return {b.rows == 0 ? 0 : rows / b.rows, b.cols == 0 ? 0 : cols / b.cols};
}

}  // namespace lowbit
