// lowbit/dequant_gemm.hpp: Y = X * W^T (+ bias) with W in a quantized storage format and fp32
// activations, on the best SIMD path of the CPU it runs on.
//
//   lowbit::Result<lowbit::WeightsView> w =
//       lowbit::WeightsView::ggml(lowbit::io::GgmlType::kQ4_K, bytes, n_bytes, out, in);
//   if (!w) return w.status();
//   lowbit::ThreadPool pool(2);
//   LOWBIT_TRY(lowbit::dequant_gemm(*w, x /*tokens x in*/, y /*tokens x out*/, pool));
//
// The math. W is [out_features x in_features] (rows are output channels, K = in_features runs
// along a row, as torch.nn.Linear and ggml store it). For every token t and output r:
//
//   y[t][r] = sum_k x[t][k] * w[r][k]  (+ bias[r])
//
// where w[r][k] is exactly the float lowbit's byte-exact dequantizer of the format gives (ggml's
// to_float for the ggml types; float(q - zero_point) * scale for lowbit's packed codes). Only the
// order of the float32 additions differs between paths. The scalar path (the oracle) sums in
// double and rounds once; the SIMD paths sum in float32 with FMA, and their difference from it is
// bounded by about (K + 32) * 2^-24 * sum_k |w[r][k] x[t][k]| (for the GEMV kernels that take a
// block's offset out of the per-element work, Q4_0, Q4_K, Q6_K and the packed codes on AVX2,
// plus the offsets' own terms; tests/unit/test_dequant_gemm.cpp derives the bound).
//
// Weights are read in their storage format, unchanged: a WeightsView is a validated, non-owning
// description (format, shape, pointer, byte size). Formats and what runs them:
//
//   format                 GEMV (N < 4)                 GEMM tiles (N >= 4)
//   Q4_0 Q8_0 IQ4_NL       fused SIMD kernel            SIMD decoder
//   Q4_K Q6_K              fused SIMD kernel            SIMD decoder
//   packed 2/3/4/8-bit     fused SIMD kernel            SIMD decoder     (group a multiple of
//     sym. or asym.                                                       32, or per row/tensor)
//   Q4_1 Q5_0 Q5_1 Q2_K    the scalar byte-exact decoder (reference.hpp) fills an fp32 tile that
//   Q3_K Q5_K IQ4_XS       the SIMD fp32 code multiplies: correct, but at N = 1 bound by the
//   TQ1_0 TQ2_0 F16 BF16   scalar decoder; at large N the decode is amortised like any other
//   F32, other packed      (widths 1, 5, 6, 7 bits, groups not a multiple of 32, per column)
//
// Paths (lowbit/cpu.hpp, chosen once per call from CPUID + XGETBV, forced with LOWBIT_ISA or
// force_isa_for_testing): scalar (reference), AVX2+FMA+F16C, AVX-512 F/BW/DQ/VL, NEON. The AVX-VNNI
// and AVX-512 VNNI clusters run the AVX2 and AVX-512 kernels (nothing here is an integer dot).
// SSE4.1-only CPUs run the scalar path.
//
// N = tokens decides the driver: below 4 the GEMV kernels stream each weight block once per
// token while it is in cache (decoding in registers, memory-bound); from 4 on, panels of 64 rows
// x 512 of K are dequantized once into an L2-resident fp32 tile and reused by every token
// through a register-blocked FMA micro-kernel (compute-bound). See
// detail/kernels/dequant_gemm/<isa>.hpp for the register blocking.
//
// Threads: the executor runs blocks of 64 output rows as independent tasks; the arithmetic of an
// output never depends on the block it falls in, so any executor gives bit-identical results.
// Nothing here creates threads; scratch memory (256 KiB per participating thread for the GEMM
// tiles, 4 rows of K floats for the scalar-decoded GEMV, K floats per token for the packed
// GEMV's permuted activations) is allocated per call.
//
// NaN and Inf: in activations they propagate as IEEE says into the outputs of their own token
// (row of Y) and nowhere else; a NaN bias value into its output column. Weights with non-finite
// scales (possible in ggml data; lowbit's packed matrices reject them when parsed) propagate the
// same way: a matrix product reports no error for them, and scanning every scale per call would
// double the memory traffic of a GEMV.
//
// Errors (checked before anything is written): kInvalidArgument (a default-constructed view,
// null data, Y overlapping X, W or the bias, Y rows overlapping each other), kShapeMismatch
// (x.cols != K, y.rows != x.rows, y.cols != out_features, bias not 1 x out_features),
// kUnsupported (a column stride other than 1 in X or Y; a ggml type without a dequantizer),
// kIndivisible (K not a multiple of the block), kTruncated (fewer bytes than the shape needs),
// kOverflow. Zero tokens is a valid product with nothing to do.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "lowbit/cpu.hpp"
#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"
#include "lowbit/detail/kernels/dequant_gemm/reference.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/format/packed_matrix.hpp"
#include "lowbit/io/ggml_types.hpp"
#include "lowbit/quantized_tensor.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)
#include "lowbit/detail/kernels/dequant_gemm/avx2.hpp"
#include "lowbit/detail/kernels/dequant_gemm/avx512.hpp"
#endif
#if defined(LOWBIT_HAVE_ARM_KERNELS)
#include "lowbit/detail/kernels/dequant_gemm/neon.hpp"
#endif

namespace lowbit {

// The storage formats dequant_gemm reads (names as ggml's types; kPacked is lowbit's own).
using WeightFormat = detail::dequant::Format;

constexpr const char* weight_format_name(WeightFormat f) noexcept {
  switch (f) {
    case WeightFormat::kF32: return "f32";
    case WeightFormat::kF16: return "f16";
    case WeightFormat::kBF16: return "bf16";
    case WeightFormat::kQ4_0: return "q4_0";
    case WeightFormat::kQ4_1: return "q4_1";
    case WeightFormat::kQ5_0: return "q5_0";
    case WeightFormat::kQ5_1: return "q5_1";
    case WeightFormat::kQ8_0: return "q8_0";
    case WeightFormat::kQ2_K: return "q2_K";
    case WeightFormat::kQ3_K: return "q3_K";
    case WeightFormat::kQ4_K: return "q4_K";
    case WeightFormat::kQ5_K: return "q5_K";
    case WeightFormat::kQ6_K: return "q6_K";
    case WeightFormat::kIQ4_NL: return "iq4_nl";
    case WeightFormat::kIQ4_XS: return "iq4_xs";
    case WeightFormat::kTQ1_0: return "tq1_0";
    case WeightFormat::kTQ2_0: return "tq2_0";
    case WeightFormat::kPacked: return "packed";
  }
  return "unknown";
}

// A validated, non-owning description of a weight matrix W [rows = out_features, cols = K] in
// its storage format. The bytes must outlive every product that reads them. Make it once per
// matrix (the factories check sizes, and for QuantizedTensor every parameter), then reuse it.
class WeightsView {
 public:
  WeightsView() = default;  // empty: dequant_gemm rejects it

  // A ggml tensor of `rows` rows of `cols` elements in ggml's own layout (GGUF's tensor data:
  // each row cols / block_size blocks, rows end to end). n_bytes must be exactly the size the
  // shape needs (kTruncated if smaller, kShapeMismatch if larger: a different type or shape).
  // Supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K..q6_K, iq4_nl, iq4_xs, tq1_0,
  // tq2_0; any other type is kUnsupported.
  static Result<WeightsView> ggml(io::GgmlType type, const void* bytes, std::size_t n_bytes,
                                  std::int64_t rows, std::int64_t cols) noexcept {
    using detail::dequant::Format;
    Format f;
    switch (type) {
      case io::GgmlType::kF32: f = Format::kF32; break;
      case io::GgmlType::kF16: f = Format::kF16; break;
      case io::GgmlType::kBF16: f = Format::kBF16; break;
      case io::GgmlType::kQ4_0: f = Format::kQ4_0; break;
      case io::GgmlType::kQ4_1: f = Format::kQ4_1; break;
      case io::GgmlType::kQ5_0: f = Format::kQ5_0; break;
      case io::GgmlType::kQ5_1: f = Format::kQ5_1; break;
      case io::GgmlType::kQ8_0: f = Format::kQ8_0; break;
      case io::GgmlType::kQ2_K: f = Format::kQ2_K; break;
      case io::GgmlType::kQ3_K: f = Format::kQ3_K; break;
      case io::GgmlType::kQ4_K: f = Format::kQ4_K; break;
      case io::GgmlType::kQ5_K: f = Format::kQ5_K; break;
      case io::GgmlType::kQ6_K: f = Format::kQ6_K; break;
      case io::GgmlType::kIQ4_NL: f = Format::kIQ4_NL; break;
      case io::GgmlType::kIQ4_XS: f = Format::kIQ4_XS; break;
      case io::GgmlType::kTQ1_0: f = Format::kTQ1_0; break;
      case io::GgmlType::kTQ2_0: f = Format::kTQ2_0; break;
      default: return Status(Errc::kUnsupported, "dequant_gemm: no dequantizer for this ggml type");
    }
    const io::GgmlTypeInfo* info = io::ggml_type_info(type);
    if (info == nullptr)  // unreachable for the types above; keeps the table the one authority
      return Status(Errc::kUnsupported, "dequant_gemm: unknown ggml type");
    if (rows <= 0 || cols <= 0)
      return Status(Errc::kInvalidArgument, "weights: rows and cols must be positive");
    if (cols % info->block_size != 0)
      return Status(Errc::kIndivisible, "weights: cols is not a multiple of the ggml block size");
    const std::int64_t ne[2] = {cols, rows};
    const Result<io::GgmlTensorSize> size =
        io::ggml_tensor_size(static_cast<std::uint32_t>(type), ne, 2);
    if (!size) return size.status();
    if (size->bytes > std::numeric_limits<std::size_t>::max())
      return Status(Errc::kOverflow, "weights: byte size does not fit size_t");
    if (bytes == nullptr) return Status(Errc::kInvalidArgument, "weights: null data");
    if (n_bytes < size->bytes)
      return Status(Errc::kTruncated, "weights: fewer bytes than rows x cols of this type need",
                    static_cast<std::int64_t>(n_bytes));
    if (n_bytes > size->bytes)
      return Status(
          Errc::kShapeMismatch,
          "weights: more bytes than rows x cols of this type need (another type or shape?)",
          static_cast<std::int64_t>(size->bytes));
    WeightsView v;
    v.w_.format = f;
    v.w_.rows = rows;
    v.w_.cols = cols;
    v.w_.data = static_cast<const std::uint8_t*>(bytes);
    v.w_.bytes = n_bytes;
    v.w_.block = info->block_size;
    v.w_.block_bytes = static_cast<std::size_t>(info->block_bytes);
    v.w_.row_bytes = static_cast<std::size_t>(cols / info->block_size) * v.w_.block_bytes;
    return v;
  }

  // A lowbit packed matrix as parse_packed_matrix returns it (an LBPM buffer, format/
  // packed_matrix.hpp): its codes, float32 scales and packed zero points are read in place.
  static Result<WeightsView> packed(const PackedMatrixView& m) noexcept {
    if (m.bits < 1 || m.bits > 8) return Status(Errc::kInvalidArgument, "packed: bits not in 1..8");
    if (m.rows <= 0 || m.cols <= 0)
      return Status(Errc::kInvalidArgument, "packed: rows and cols must be positive");
    if (m.rows > std::numeric_limits<std::int64_t>::max() / m.cols)
      return Status(Errc::kOverflow, "packed: rows * cols overflows int64");
    const bool asym = m.scheme == PackedScheme::kAsymmetric;
    if (m.codes == nullptr || m.scales == nullptr || (asym && m.zero_points == nullptr))
      return Status(Errc::kInvalidArgument, "packed: null section pointer");
    WeightsView v;
    LOWBIT_TRY(
        v.set_granularity(m.granularity, m.rows, m.cols, m.group_size, m.param_rows, m.param_cols));
    v.w_.bits = m.bits;
    v.w_.rows = m.rows;
    v.w_.cols = m.cols;
    v.w_.data = m.codes;
    v.w_.bytes = packed_bytes(m.bits, m.rows * m.cols);
    v.w_.signed_codes = !asym;
    v.w_.scales = m.scales;
    if (asym) {
      v.w_.zero_point_kind = detail::dequant::ZeroPoints::kPacked;
      v.w_.zero_points = m.zero_points;
      v.w_.zero_point_bytes = packed_bytes(m.bits, m.param_rows * m.param_cols);
    }
    return v;
  }

  // A QuantizedTensor's codes and parameters, read in place (the tensor must outlive the view).
  template <class Q>
  static Result<WeightsView> packed(const QuantizedTensor<Q>& t) noexcept {
    static_assert(!Q::granularity::kDynamic,
                  "WeightsView::packed: PerToken parameters are computed at run time, not stored");
    constexpr bool kSigned = Q::kCodes.min < 0;
    const QuantParams& params = t.params();
    if (t.rows() <= 0 || t.cols() <= 0)
      return Status(Errc::kInvalidArgument, "packed: rows and cols must be positive");
    const BlockShape grid = param_grid(t.granularity(), t.rows(), t.cols());
    const std::size_t n = static_cast<std::size_t>(params.size());
    if (params.rows != grid.rows || params.cols != grid.cols || params.scale.size() != n ||
        params.zero_point.size() != n)
      return Status(Errc::kShapeMismatch, "packed: parameter grid does not match the tensor");
    if (t.packed().size() != packed_bytes(Q::kBits, t.rows() * t.cols()))
      return Status(Errc::kShapeMismatch, "packed: code bytes do not match rows x cols");
    bool zero_points = false;
    for (std::size_t i = 0; i < n; ++i) {
      const float s = params.scale[i];
      if (!(s > 0.0f) || !std::isfinite(s))
        return Status(Errc::kInvalidArgument, "packed: scale is not positive and finite",
                      static_cast<std::int64_t>(i));
      const std::int32_t z = params.zero_point[i];
      if (z < Q::kCodes.min || z > Q::kCodes.max)
        return Status(Errc::kOutOfRange, "packed: zero point outside the code range",
                      static_cast<std::int64_t>(i));
      zero_points = zero_points || z != 0;
    }
    WeightsView v;
    using G = typename Q::granularity;
    PackedGranularity g = PackedGranularity::kPerGroup;
    if (std::is_same<G, PerTensor>::value) g = PackedGranularity::kPerTensor;
    if (std::is_same<G, PerChannel<0>>::value) g = PackedGranularity::kPerRow;
    if (std::is_same<G, PerChannel<1>>::value) g = PackedGranularity::kPerColumn;
    const std::int64_t group = g == PackedGranularity::kPerGroup ? t.cols() / grid.cols : 0;
    LOWBIT_TRY(v.set_granularity(g, t.rows(), t.cols(), group, grid.rows, grid.cols));
    v.w_.bits = Q::kBits;
    v.w_.rows = t.rows();
    v.w_.cols = t.cols();
    v.w_.data = t.packed().data();
    v.w_.bytes = t.packed().size();
    v.w_.signed_codes = kSigned;
    v.w_.scales = reinterpret_cast<const std::uint8_t*>(params.scale.data());
    if (!kSigned || zero_points) {
      v.w_.zero_point_kind = detail::dequant::ZeroPoints::kInt32;
      v.w_.zero_points = params.zero_point.data();
    }
    return v;
  }

  bool empty() const noexcept { return w_.data == nullptr; }
  WeightFormat format() const noexcept { return w_.format; }
  std::int64_t rows() const noexcept { return w_.rows; }  // out_features
  std::int64_t cols() const noexcept { return w_.cols; }  // in_features, K
  int bits() const noexcept { return w_.bits; }           // packed only; 0 for ggml types
  // The bytes one product streams: ggml blocks, or packed codes + scales + zero points.
  std::size_t size_bytes() const noexcept {
    if (w_.format != WeightFormat::kPacked) return w_.bytes;
    const std::int64_t params = (w_.param_stride == 0 ? 1 : w_.rows) *
                                (w_.param_stride == 0 ? w_.cols / w_.group : w_.param_stride);
    const std::size_t zps = w_.zero_point_kind == detail::dequant::ZeroPoints::kNone ? 0
                            : w_.zero_point_kind == detail::dequant::ZeroPoints::kPacked
                                ? w_.zero_point_bytes
                                : 4 * static_cast<std::size_t>(params);
    return w_.bytes + 4 * static_cast<std::size_t>(params) + zps;
  }
  // What the kernels read (detail::dequant::Weights, see its header).
  const detail::dequant::Weights& layout() const noexcept { return w_; }

 private:
  Status set_granularity(PackedGranularity g, std::int64_t rows, std::int64_t cols,
                         std::int64_t group, std::int64_t param_rows,
                         std::int64_t param_cols) noexcept {
    w_.format = WeightFormat::kPacked;
    switch (g) {
      case PackedGranularity::kPerTensor:
        w_.group = cols;
        w_.param_stride = 0;
        if (param_rows != 1 || param_cols != 1) break;
        return {};
      case PackedGranularity::kPerRow:
        w_.group = cols;
        w_.param_stride = 1;
        if (param_rows != rows || param_cols != 1) break;
        return {};
      case PackedGranularity::kPerColumn:
        w_.group = 1;
        w_.param_stride = 0;
        if (param_rows != 1 || param_cols != cols) break;
        return {};
      case PackedGranularity::kPerGroup:
        if (group <= 0 || cols % group != 0)
          return {Errc::kIndivisible, "packed: group size does not divide the columns"};
        w_.group = group;
        w_.param_stride = cols / group;
        if (param_rows != rows || param_cols != cols / group) break;
        return {};
    }
    return {Errc::kShapeMismatch, "packed: parameter grid does not match the granularity"};
  }

  detail::dequant::Weights w_;
};

// Options of a product. Defaults: no bias.
struct DequantGemmOptions {
  // Empty, or 1 x out_features values added to every token's outputs (lowbit::flat(b, out)).
  MatrixView<const float> bias{};
};

namespace detail {
namespace dequant {

inline const KernelTable<DequantGemmFn>& kernel_table() noexcept {
  static const KernelTable<DequantGemmFn> table = [] {
    KernelTable<DequantGemmFn> t;
    t.set(Isa::kScalar, &reference::run);
#if defined(LOWBIT_HAVE_X86_KERNELS)
    t.set(Isa::kAvx2, &avx2::run);
    t.set(Isa::kAvx512, &avx512::run);
#endif
#if defined(LOWBIT_HAVE_ARM_KERNELS)
    t.set(Isa::kNeon, &neon::run);
#endif
    return t;
  }();
  return table;
}

}  // namespace dequant
}  // namespace detail

// Y = X * W^T (+ bias), X [tokens x K], Y [tokens x out_features]; see the header comment.
inline Status dequant_gemm(const WeightsView& w, MatrixView<const float> x, MatrixView<float> y,
                           Executor& executor, const DequantGemmOptions& options = {}) {
  if (w.empty()) return {Errc::kInvalidArgument, "dequant_gemm: empty weights view"};
  LOWBIT_TRY(x.validate());
  LOWBIT_TRY(y.validate());
  if (x.cols() != w.cols())
    return {Errc::kShapeMismatch, "dequant_gemm: x.cols() must equal the weights' K (cols)"};
  if (y.rows() != x.rows())
    return {Errc::kShapeMismatch, "dequant_gemm: y.rows() must equal x.rows() (tokens)"};
  if (y.cols() != w.rows())
    return {Errc::kShapeMismatch, "dequant_gemm: y.cols() must equal the weights' rows"};
  if (x.rows() == 0) return {};
  if (x.col_stride() != 1 || (y.col_stride() != 1 && y.cols() > 1))
    return {Errc::kUnsupported, "dequant_gemm: x and y need a column stride of 1"};
  LOWBIT_TRY(detail::check_distinct_elements(y, "dequant_gemm: rows of y overlap each other"));
  const MatrixView<const float>& bias = options.bias;
  LOWBIT_TRY(detail::check_bias(bias, w.rows(), "dequant_gemm: bias must be 1 x out_features"));
  if (detail::overlaps(y, x)) return {Errc::kInvalidArgument, "dequant_gemm: y overlaps x"};
  const detail::dequant::Weights& lw = w.layout();
  const auto weights = reinterpret_cast<std::uintptr_t>(lw.data);
  if (detail::overlaps(y, weights, weights + lw.bytes))
    return {Errc::kInvalidArgument, "dequant_gemm: y overlaps the weights"};
  if (!bias.empty() && detail::overlaps(y, bias))
    return {Errc::kInvalidArgument, "dequant_gemm: y overlaps the bias"};

  detail::dequant::Problem p;
  p.x = x.data();
  p.x_stride = x.row_stride();
  p.y = y.data();
  p.y_stride = y.row_stride();
  p.tokens = x.rows();
  if (!bias.empty()) {
    p.bias = bias.data();
    p.bias_stride = bias.col_stride();
  }
  detail::dequant::kernel_table().lookup(detail::dispatch_isa())(lw, p, executor);
  return {};
}

// The same on the calling thread.
inline Status dequant_gemm(const WeightsView& w, MatrixView<const float> x, MatrixView<float> y,
                           const DequantGemmOptions& options = {}) {
  SerialExecutor serial;
  return dequant_gemm(w, x, y, serial, options);
}

}  // namespace lowbit
