// lowbit/quantized_tensor.hpp: QuantizedTensor<Q>, a tensor quantized by Q and stored densely.
//
//   using W3 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
//   lowbit::Result<lowbit::QuantizedTensor<W3>> q = W3::quantize(weights);
//   if (!q) return q.status();
//   q->bits_per_weight();             // 3 + (32 + 3) / 128 = 3.27: codes, scales and zero points
//   LOWBIT_TRY(q->dequantize(out));   // out: a rows x cols float view
//
// Codes are stored row-major (element (r, c) is code r * cols + c) in format/packed.hpp's dense
// layout, Q::kBits bits each; parameters as a QuantParams grid. The size accounting counts what a
// file of this tensor must hold: the packed codes, one float32 scale per block and, for
// asymmetric schemes, one Q::kBits-bit zero point per block (symmetric zero points are always 0
// and cost nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "lowbit/format/packed.hpp"
#include "lowbit/quantizer.hpp"

namespace lowbit {

template <class Q>
class QuantizedTensor {
 public:
  using quantizer = Q;
  using code_type = typename Q::code_type;

  // Quantizes x with parameters already chosen (a Calibrator's, an algorithm's, the caller's).
  static Result<QuantizedTensor> from_params(MatrixView<const float> x, QuantParams params,
                                             const typename Q::granularity& g = {}) {
    std::vector<code_type> codes(static_cast<std::size_t>(x.rows() * x.cols()));
    LOWBIT_TRY(Q::quantize(x, params, row_major(codes.data(), x.rows(), x.cols()), g));
    QuantizedTensor t;
    t.rows_ = x.rows();
    t.cols_ = x.cols();
    t.granularity_ = g;
    t.packed_.resize(packed_bytes(Q::kBits, x.rows() * x.cols()));
    LOWBIT_TRY(pack_codes<Q::kBits>(codes.data(), x.rows() * x.cols(), t.packed_.data(),
                                    t.packed_.size()));
    t.params_ = std::move(params);
    return t;
  }

  // Reassembles a tensor from stored parts (a file, another process), checking that they agree:
  // the packed size fits rows x cols codes, the parameter grid fits the granularity, every scale
  // is usable and every zero point is a code.
  static Result<QuantizedTensor> from_parts(std::int64_t rows, std::int64_t cols,
                                            std::vector<std::uint8_t> packed, QuantParams params,
                                            const typename Q::granularity& g = {}) {
    if (rows <= 0 || cols <= 0) return Status(Errc::kEmpty, "tensor has no elements");
    if (rows > std::numeric_limits<std::int64_t>::max() / cols)
      return Status(Errc::kOverflow, "rows * cols overflows int64");
    LOWBIT_TRY(g.check(rows, cols));
    Result<std::size_t> bytes = checked_packed_bytes(Q::kBits, rows * cols);
    if (!bytes) return bytes.status();
    if (packed.size() != *bytes)
      return Status(Errc::kShapeMismatch, "packed codes do not match rows x cols at this width");
    if (params.scale.size() != static_cast<std::size_t>(params.size()) ||
        params.zero_point.size() != static_cast<std::size_t>(params.size()))
      return Status(Errc::kShapeMismatch, "parameter arrays do not match their grid");
    LOWBIT_TRY(detail::check_params(params.view(), g, rows, cols));
    for (std::int64_t i = 0; i < params.size(); ++i) {
      const std::int32_t zp = params.zero_point[static_cast<std::size_t>(i)];
      if (zp < Q::kCodes.min || zp > Q::kCodes.max)
        return Status(Errc::kOutOfRange, "zero point outside the code range", i);
    }
    QuantizedTensor t;
    t.rows_ = rows;
    t.cols_ = cols;
    t.granularity_ = g;
    t.packed_ = std::move(packed);
    t.params_ = std::move(params);
    return t;
  }

  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return cols_; }
  const typename Q::granularity& granularity() const noexcept { return granularity_; }
  const std::vector<std::uint8_t>& packed() const noexcept { return packed_; }
  const QuantParams& params() const noexcept { return params_; }
  // Mutable parameters, for algorithms that refine scales after rounding (γ, PEQA).
  QuantParams& params() noexcept { return params_; }

  // The codes, one per element, into a rows x cols view.
  Status unpack(MatrixView<code_type> codes) const {
    LOWBIT_TRY(codes.validate());
    if (codes.rows() != rows_ || codes.cols() != cols_)
      return {Errc::kShapeMismatch, "codes view does not match the tensor's shape"};
    std::vector<code_type> flat_codes(static_cast<std::size_t>(rows_ * cols_));
    LOWBIT_TRY(unpack_codes<Q::kBits>(packed_.data(), packed_.size(), rows_ * cols_,
                                      flat_codes.data()));
    for (std::int64_t r = 0; r < rows_; ++r)
      for (std::int64_t c = 0; c < cols_; ++c)
        codes(r, c) = flat_codes[static_cast<std::size_t>(r * cols_ + c)];
    return {};
  }

  Status dequantize(MatrixView<float> out) const {
    std::vector<code_type> codes(static_cast<std::size_t>(rows_ * cols_));
    const MatrixView<code_type> view = row_major(codes.data(), rows_, cols_);
    LOWBIT_TRY(unpack(view));
    return Q::dequantize(MatrixView<const code_type>(view), params_, out, granularity_);
  }

  std::size_t code_bytes() const noexcept { return packed_.size(); }
  // Scales at 32 bits, zero points at Q::kBits bits (asymmetric only), rounded up to whole bytes.
  std::size_t param_bytes() const noexcept {
    const auto n = static_cast<std::size_t>(params_.size());
    const std::size_t zero_points = Q::symmetry::kSymmetric ? 0 : packed_bytes(Q::kBits, params_.size());
    return n * sizeof(float) + zero_points;
  }
  std::size_t size_bytes() const noexcept { return code_bytes() + param_bytes(); }
  double bits_per_weight() const noexcept {
    return 8.0 * static_cast<double>(size_bytes()) / static_cast<double>(rows_ * cols_);
  }

 private:
  QuantizedTensor() = default;

  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  typename Q::granularity granularity_{};
  std::vector<std::uint8_t> packed_;
  QuantParams params_;
};

template <class BitsT, class SymmetryT, class GranularityT, class RangeT, class RoundingT>
Result<QuantizedTensor<Quantizer<BitsT, SymmetryT, GranularityT, RangeT, RoundingT>>>
Quantizer<BitsT, SymmetryT, GranularityT, RangeT, RoundingT>::quantize(MatrixView<const float> x,
                                                                       const GranularityT& g) {
  Result<QuantParams> params = compute_params(x, g);
  if (!params) return params.status();
  return QuantizedTensor<Quantizer>::from_params(x, std::move(*params), g);
}

}  // namespace lowbit
