// lowbit/quantizer.hpp: Quantizer<Bits, Symmetry, Granularity, Range, Rounding>, the composition
// of the policies in policy/ into the affine quantizer every lowbit algorithm builds on.
//
//   real = scale * (q - zero_point),   q in [codes.min, codes.max]
//
//   quantize:       q   = clamp(zero_point + round(x * (1/scale)), codes.min, codes.max)
//   dequantize:     x^  = float(q - zero_point) * scale
//   fake_quantize:  x^ computed from x directly, in float32 (what QAT and error studies use)
//   backward (STE): dx  = dy if codes.min <= zero_point + round(x/scale) <= codes.max, else 0
//
// The conventions are PyTorch's (ATen quantize_val and fake_quantize_*_cachemask), which engines
// compare against: multiply by the float32 reciprocal (not divide; the two round differently for
// some x), round half to even by default, add the zero point after rounding, and decide the STE
// mask on the rounded, unclamped level. Every step is float32 in that order; build with
// -ffp-contract=off if bit-exactness with torch matters (FMA contraction moves results by an ulp).
//
//   using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
//   lowbit::Result<lowbit::QuantParams> p = W4::compute_params(weights);   // MinMax by default
//   if (!p) return p.status();
//   LOWBIT_TRY(W4::quantize(weights, *p, codes));                           // codes: uint8 view
//
// Parameters may also come from a Calibrator (calibrator.hpp, streaming batches) or from the
// caller (QuantParamsView). Packing codes densely is QuantizedTensor's job (quantized_tensor.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "lowbit/detail/affine.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/policy/bits.hpp"
#include "lowbit/policy/granularity.hpp"
#include "lowbit/policy/range.hpp"
#include "lowbit/policy/rounding.hpp"
#include "lowbit/policy/symmetry.hpp"
#include "lowbit/quant_params.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

template <class Q>
class QuantizedTensor;

namespace detail {

template <class T>
struct is_bits : std::false_type {};
template <int N>
struct is_bits<Bits<N>> : std::true_type {};

template <class T, class = void>
struct is_symmetry : std::false_type {};
template <class T>
struct is_symmetry<T, std::void_t<decltype(T::kSymmetric)>> : std::true_type {};

template <class T, class = void>
struct is_granularity : std::false_type {};
template <class T>
struct is_granularity<
    T, std::void_t<decltype(std::declval<const T&>().block(std::int64_t{}, std::int64_t{})),
                   decltype(T::kDynamic)>> : std::true_type {};

template <class T, class = void>
struct is_rounding : std::false_type {};
template <class T>
struct is_rounding<T, std::void_t<decltype(T::round(0.0f))>> : std::true_type {};

// A rectangle of a tensor: rows [row, row + rows), columns [col, col + cols).
struct BlockRange {
  std::int64_t row, rows, col, cols;
};

template <class T>
MatrixView<T> sub_view(MatrixView<T> x, const BlockRange& b) noexcept {
  return x.row_block(b.row, b.rows).col_block(b.col, b.cols);
}

// Calls f(param_index, range) for every parameter block of a rows x cols tensor, in parameter
// order. Loops run per block so each block's scale, inverse and zero point are loaded once.
template <class Granularity, class F>
void for_each_block(const Granularity& g, std::int64_t rows, std::int64_t cols, F&& f) {
  const BlockShape b = g.block(rows, cols);
  const BlockShape grid = param_grid(g, rows, cols);
  for (std::int64_t pr = 0; pr < grid.rows; ++pr)
    for (std::int64_t pc = 0; pc < grid.cols; ++pc)
      f(pr * grid.cols + pc, BlockRange{pr * b.rows, b.rows, pc * b.cols, b.cols});
}

// Calls f(param_index, block_view) for every parameter block of x, in parameter order.
template <class Granularity, class T, class F>
void for_each_block(const Granularity& g, MatrixView<T> x, F&& f) {
  for_each_block(g, x.rows(), x.cols(),
                 [&](std::int64_t i, const BlockRange& b) { f(i, sub_view(x, b)); });
}

// Calls f(r, c, param_index) for every element, in row-major order.
template <class Granularity, class F>
void for_each_element(const Granularity& g, std::int64_t rows, std::int64_t cols, F&& f) {
  const BlockShape b = g.block(rows, cols);
  const std::int64_t grid_cols = cols / b.cols;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t row_base = (r / b.rows) * grid_cols;
    for (std::int64_t c = 0; c < cols; ++c) f(r, c, row_base + c / b.cols);
  }
}

}  // namespace detail

template <class BitsT, class SymmetryT, class GranularityT, class RangeT = MinMax,
          class RoundingT = RoundHalfToEven>
struct Quantizer {
  static_assert(detail::is_bits<BitsT>::value,
                "Quantizer<Bits, ...>: the first parameter must be lowbit::Bits<N>, N in 1..8");
  static_assert(detail::is_symmetry<SymmetryT>::value,
                "Quantizer<Bits, Symmetry, ...>: the second parameter must be a symmetry policy "
                "(Symmetric, SymmetricRestricted or Asymmetric)");
  static_assert(detail::is_granularity<GranularityT>::value,
                "Quantizer<Bits, Symmetry, Granularity, ...>: the third parameter must be a "
                "granularity (PerTensor, PerChannel<Axis>, PerGroup<Size> or PerToken)");
  static_assert(detail::is_rounding<RoundingT>::value,
                "Quantizer<..., Rounding>: the fifth parameter must be a rounding policy "
                "(RoundHalfToEven or RoundHalfAwayFromZero)");

  using bits_type = BitsT;
  using symmetry = SymmetryT;
  using granularity = GranularityT;
  using range_estimator = RangeT;
  using rounding = RoundingT;

  static constexpr int kBits = BitsT::kBits;
  static constexpr CodeRange kCodes = SymmetryT::template code_range<kBits>();
  static constexpr QuantGrid kGrid = {kCodes, SymmetryT::kSymmetric};
  // Codes fit a byte at every width; signed schemes use int8, unsigned ones uint8.
  using code_type = std::conditional_t<(kCodes.min < 0), std::int8_t, std::uint8_t>;

  // Checks x is finite, non-empty and tiles evenly into the granularity's blocks.
  static Status check_input(MatrixView<const float> x, const GranularityT& g = {}) noexcept {
    LOWBIT_TRY(detail::check_data(x));
    return g.check(x.rows(), x.cols());
  }

  // (scale, zero point) of one block from the range the estimator reports for it.
  static Result<ScaleZeroPoint> block_params(MatrixView<const float> block) {
    typename RangeT::State state{};
    RangeT::observe(state, block);
    const Range r = RangeT::range(state, kGrid);
    return SymmetryT::params(r.lo, r.hi, kCodes);
  }

  // One-shot parameters: the range estimator sees each block once, as one batch. For streaming
  // calibration over many batches use Calibrator<Quantizer>.
  static Result<QuantParams> compute_params(MatrixView<const float> x,
                                            const GranularityT& g = {}) {
    LOWBIT_TRY(check_input(x, g));
    const BlockShape grid = param_grid(g, x.rows(), x.cols());
    QuantParams params(grid.rows, grid.cols);
    Status failure;
    detail::for_each_block(g, x, [&](std::int64_t i, MatrixView<const float> block) {
      if (!failure.ok()) return;
      Result<ScaleZeroPoint> p = block_params(block);
      if (!p) {
        failure = Status(p.status().code(), p.status().message(), i);
        return;
      }
      params.scale[static_cast<std::size_t>(i)] = p->scale;
      params.zero_point[static_cast<std::size_t>(i)] = p->zero_point;
    });
    if (!failure.ok()) return failure;
    return params;
  }

  // Parameters, codes and dense packing in one call (defined in quantized_tensor.hpp).
  static Result<QuantizedTensor<Quantizer>> quantize(MatrixView<const float> x,
                                                     const GranularityT& g = {});

  static Status quantize(MatrixView<const float> x, const QuantParamsView& p,
                         MatrixView<code_type> codes, const GranularityT& g = {}) noexcept {
    LOWBIT_TRY(check_input(x, g));
    LOWBIT_TRY(detail::check_output(codes, x));
    LOWBIT_TRY(detail::check_params(p, g, x.rows(), x.cols()));
    detail::for_each_block(g, x.rows(), x.cols(), [&](std::int64_t i, const detail::BlockRange& b) {
      const float inv = 1.0f / p.scale[i];
      const std::int32_t zp = p.zero_point[i];
      const MatrixView<const float> xb = detail::sub_view(x, b);
      const MatrixView<code_type> qb = detail::sub_view(codes, b);
      for (std::int64_t r = 0; r < b.rows; ++r)
        for (std::int64_t c = 0; c < b.cols; ++c)
          qb(r, c) = static_cast<code_type>(
              detail::clamp_level(detail::level<RoundingT>(xb(r, c), inv, zp), kCodes));
    });
    return {};
  }

  static Status dequantize(MatrixView<const code_type> codes, const QuantParamsView& p,
                           MatrixView<float> out, const GranularityT& g = {}) noexcept {
    LOWBIT_TRY(codes.validate());
    if (codes.empty()) return {Errc::kEmpty, "codes tensor has no elements"};
    LOWBIT_TRY(g.check(codes.rows(), codes.cols()));
    LOWBIT_TRY(detail::check_output(out, codes));
    LOWBIT_TRY(detail::check_params(p, g, codes.rows(), codes.cols()));
    detail::for_each_block(g, codes.rows(), codes.cols(), [&](std::int64_t i, const detail::BlockRange& b) {
      const float scale = p.scale[i];
      const std::int32_t zp = p.zero_point[i];
      const MatrixView<const code_type> qb = detail::sub_view(codes, b);
      const MatrixView<float> ob = detail::sub_view(out, b);
      for (std::int64_t r = 0; r < b.rows; ++r)
        for (std::int64_t c = 0; c < b.cols; ++c) ob(r, c) = detail::dequantize_code(qb(r, c), scale, zp);
    });
    return {};
  }

  // out = dequantize(quantize(x)) without materialising codes. out may alias x.
  static Status fake_quantize(MatrixView<const float> x, const QuantParamsView& p,
                              MatrixView<float> out, const GranularityT& g = {}) noexcept {
    LOWBIT_TRY(check_input(x, g));
    LOWBIT_TRY(detail::check_output(out, x));
    LOWBIT_TRY(detail::check_params(p, g, x.rows(), x.cols()));
    detail::for_each_block(g, x.rows(), x.cols(), [&](std::int64_t i, const detail::BlockRange& b) {
      const float scale = p.scale[i];
      const float inv = 1.0f / scale;
      const std::int32_t zp = p.zero_point[i];
      const MatrixView<const float> xb = detail::sub_view(x, b);
      const MatrixView<float> ob = detail::sub_view(out, b);
      for (std::int64_t r = 0; r < b.rows; ++r) {
        for (std::int64_t c = 0; c < b.cols; ++c) {
          const std::int32_t q = detail::clamp_level(detail::level<RoundingT>(xb(r, c), inv, zp), kCodes);
          ob(r, c) = detail::dequantize_code(q, scale, zp);
        }
      }
    });
    return {};
  }

  // The straight-through estimator (Bengio et al. 2013; torch's cachemask kernels): the gradient
  // passes unchanged where x landed inside the code range and is zero where it was clamped. The
  // test uses the rounded, unclamped level, so an x just past the last level that still rounds to
  // it keeps its gradient. grad_in may alias grad_out.
  static Status fake_quantize_backward(MatrixView<const float> x, const QuantParamsView& p,
                                       MatrixView<const float> grad_out,
                                       MatrixView<float> grad_in,
                                       const GranularityT& g = {}) noexcept {
    LOWBIT_TRY(check_input(x, g));
    LOWBIT_TRY(detail::check_output(grad_out, x));
    LOWBIT_TRY(detail::check_output(grad_in, x));
    LOWBIT_TRY(detail::check_params(p, g, x.rows(), x.cols()));
    detail::for_each_element(g, x.rows(), x.cols(), [&](std::int64_t r, std::int64_t c, std::int64_t i) {
      const float inv = 1.0f / p.scale[i];
      const float q = detail::level<RoundingT>(x(r, c), inv, p.zero_point[i]);
      const bool inside = q >= static_cast<float>(kCodes.min) && q <= static_cast<float>(kCodes.max);
      grad_in(r, c) = inside ? grad_out(r, c) : 0.0f;
    });
    return {};
  }
};

}  // namespace lowbit

// Completes Quantizer::quantize(x): whoever includes quantizer.hpp can call it.
#include "lowbit/quantized_tensor.hpp"
