// examples/llama/quantized_linear.hpp: quantized implementations of llama.hpp's `Linear` that own
// their weights in a quantized format and run lowbit's kernels, plus LinearFactory helpers that
// quantize a model's decoder linears at load time and report each layer's true size.
//
//   lowbit::ThreadPool pool(2);
//   std::vector<llama::LinearSize> sizes;
//   Result<LlamaModel> m = LlamaModel::load(dir, llama::dequant_factory(GgmlType::kQ8_0, &pool,
//                                                                       &sizes));
//
// Every layer computes y [tokens, out] = x [tokens, in] · Ŵᵀ, Ŵ the dequantized weights; the
// three kinds differ in how much of the product is approximated and by what:
//
//   kind            kernel                     activations                  y differs from x·Ŵᵀ by
//   DequantLinear   lowbit::dequant_gemm       fp32, as given               float32 summation order
//   Int8ActLinear   lowbit::gemm (interleaved) int8 per 32-block of K,       Σ_blocks (dx/2)·Σ|ŵ|
//                                              dx = amax/127, ties to even   (+ float rounding)
//   W8A8Linear      lowbit::gemm_w8a8          int8 per token,               Σ_k (sx/2)·|ŵ_k|
//                                              sx = max(amax, 1e-5)/127      (+ float rounding)
//
// DequantLinear reads Ŵ in its storage format on every call (a ggml block type: Q8_0, Q6_K, Q4_K,
// Q4_0, IQ4_NL, ...; or lowbit's packed codes with float32 scales and packed zero points, from a
// Quantizer policy's QuantizedTensor or from the codes + group parameters GPTQ/AWQ produce), so
// its memory is exactly the format's. Int8ActLinear repacks Ŵ once into lowbit's interleaved
// layout (16 rows per 4-byte K chunk, format/interleaved.hpp; Q4_0, Q4_1, IQ4_NL, Q8_0 and lowbit
// 4/8-bit codes) because the integer dot instructions want 16 rows side by side. W8A8Linear holds
// int8 codes with one scale per output row (SmoothQuant's per-channel weights); smoothing is the
// caller's: fold diag(s)⁻¹ into the previous RMSNorm's weight and diag(s) into W before building
// the layer, and the product is unchanged (x·diag(s)⁻¹)·(W·diag(s))ᵀ = x·Wᵀ.
//
// Size. weight_bytes() is what the layer keeps for its weights, as the kernels stream them:
//   DequantLinear ggml      rows · (K / block) · block_bytes        (Q8_0: 8.5 bits per weight)
//   DequantLinear packed    packed codes + float32 scales + packed bits-wide zero points
//   Int8ActLinear           InterleavedWeights::size_bytes(): codes, scales and offsets, the rows
//                           padded to a multiple of 16 (fp16 scales for ggml sources, as stored)
//   W8A8Linear              int8 codes (rows padded to 64, K to 16, as packed) + float32 scales
//                           + the int32 row sums of the VNNI paths (+ the bias if any)
//
// Threads. forward() is const and safe to call from several threads at once: the layer's state
// is immutable after construction, and the kernels' scratch (activation codes) is allocated per
// call, or taken from a thread_local workspace that only its own thread touches. Each layer runs
// its products on the lowbit::Executor it was given (a ThreadPool serialises concurrent calls;
// nullptr runs on the calling thread); the executor must outlive the layer.
//
// Errors are lowbit::Status values, checked before anything is written: wrong shapes or byte
// counts (kShapeMismatch, kTruncated, kIndivisible), NaN/Inf weights or scales (kNonFinite,
// kInvalidArgument), codes or zero points outside the width (kOutOfRange), formats a kernel does
// not take (kUnsupported), negative token counts or null buffers in forward (kInvalidArgument).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "llama/llama.hpp"
#include "lowbit/algo/awq.hpp"
#include "lowbit/algo/gptq.hpp"
#include "lowbit/dequant_gemm.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/format/ggml.hpp"
#include "lowbit/format/interleaved.hpp"
#include "lowbit/format/packed.hpp"
#include "lowbit/format/packed_matrix.hpp"
#include "lowbit/gemm.hpp"
#include "lowbit/gemm_w8a8.hpp"
#include "lowbit/io/ggml_types.hpp"
#include "lowbit/quantized_tensor.hpp"
#include "lowbit/quantizer.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace llama {

// A Linear whose weights are quantized: adds what a size report needs.
class QuantizedLinear : public Linear {
 public:
  using Linear::Linear;
  // Bytes of the weights as held and streamed (see the header comment per kind).
  std::size_t weight_bytes() const noexcept override = 0;
  // "dequant q8_0", "int8-act q4_0", "w8a8 per-channel", ...
  virtual std::string format() const = 0;
  double bits_per_weight() const noexcept {
    return 8.0 * static_cast<double>(weight_bytes()) /
           static_cast<double>(in_features() * out_features());
  }
};

// One row of a model's size report, filled by the factories below.
struct LinearSize {
  std::string name;    // "model.layers.0.self_attn.q_proj"
  std::string format;  // QuantizedLinear::format()
  std::int64_t out_features = 0, in_features = 0;
  std::size_t bytes = 0;       // weight_bytes()
  std::size_t fp32_bytes = 0;  // 4 · out · in, for the ratio
};

namespace detail {

// forward()'s own checks, shared by the three kinds (DenseLinear's contract: zero tokens is a
// valid call with nothing to do).
inline Status check_forward(const float* x, std::int64_t tokens, const float* y) {
  if (tokens < 0 || (tokens > 0 && (x == nullptr || y == nullptr)))
    return Status(Errc::kInvalidArgument, "linear: negative token count or null buffer", tokens);
  return {};
}

inline Status check_shape(std::int64_t out, std::int64_t in) {
  if (out < 1 || in < 1 || out > kMaxDim || in > kMaxDim)
    return Status(Errc::kShapeMismatch, "linear: in/out features outside [1, 2^20]");
  return {};
}

// Calls f(Block{}) with the ggml block struct of `type`, for the types lowbit can quantize to.
template <class F>
Status with_ggml_block(lowbit::io::GgmlType type, F&& f) {
  namespace g = lowbit::ggml;
  using T = lowbit::io::GgmlType;
  switch (type) {
    case T::kQ4_0: return f(g::BlockQ4_0{});
    case T::kQ4_1: return f(g::BlockQ4_1{});
    case T::kQ5_0: return f(g::BlockQ5_0{});
    case T::kQ5_1: return f(g::BlockQ5_1{});
    case T::kQ8_0: return f(g::BlockQ8_0{});
    case T::kQ2_K: return f(g::BlockQ2_K{});
    case T::kQ3_K: return f(g::BlockQ3_K{});
    case T::kQ4_K: return f(g::BlockQ4_K{});
    case T::kQ5_K: return f(g::BlockQ5_K{});
    case T::kQ6_K: return f(g::BlockQ6_K{});
    case T::kIQ4_NL: return f(g::BlockIQ4_NL{});
    case T::kIQ4_XS: return f(g::BlockIQ4_XS{});
    case T::kTQ1_0: return f(g::BlockTQ1_0{});
    case T::kTQ2_0: return f(g::BlockTQ2_0{});
    default: return Status(Errc::kUnsupported, "linear: lowbit has no quantizer for this ggml type");
  }
}

// A [out, in] fp32 matrix quantized row by row into ggml blocks (ggml_quantize_chunk's result,
// byte for byte; `importance` is an optional per-column imatrix), as bytes.
template <class Block>
Result<std::vector<std::uint8_t>> quantize_to_ggml(const float* weight, std::int64_t out,
                                                   std::int64_t in, const float* importance) {
  using Traits = lowbit::ggml::FormatTraits<Block>;
  LOWBIT_TRY(check_shape(out, in));
  if (weight == nullptr) return Status(Errc::kInvalidArgument, "linear: null weight");
  if (in % Traits::kBlockSize != 0)
    return Status(Errc::kIndivisible, "linear: in_features is not a multiple of the block size",
                  in);
  std::vector<Block> blocks(static_cast<std::size_t>(out * (in / Traits::kBlockSize)));
  LOWBIT_TRY(lowbit::ggml::quantize_rows<Block>(lowbit::row_major(weight, out, in), blocks.data(),
                                                importance));
  std::vector<std::uint8_t> bytes(blocks.size() * sizeof(Block));
  std::memcpy(bytes.data(), blocks.data(), bytes.size());
  return bytes;
}

template <int B>
using GroupCodes = lowbit::Quantizer<lowbit::Bits<B>, lowbit::Asymmetric,
                                     lowbit::PerGroup<lowbit::kDynamicGroup>>;

// Unsigned codes [0, 2^bits − 1] with one float32 scale and one zero point per group of
// `group_size` consecutive columns of a row (GPTQ's and AWQ's output: w = scale·(code − zero)),
// checked and reassembled as a lowbit QuantizedTensor, then handed to `f`.
template <int B, class F>
Status group_codes_tensor(std::int64_t out, std::int64_t in, std::int64_t group_size,
                          const std::uint8_t* codes, const float* scales,
                          const std::int32_t* zeros, F&& f) {
  using Q = GroupCodes<B>;
  const std::int64_t groups = in / group_size;
  std::vector<std::uint8_t> packed(lowbit::packed_bytes(B, out * in));
  LOWBIT_TRY(lowbit::pack_codes<B>(codes, out * in, packed.data(), packed.size()));
  lowbit::QuantParams params(out, groups);
  for (std::int64_t i = 0; i < out * groups; ++i) {
    const float s = scales[i];
    if (!std::isfinite(s)) return Status(Errc::kNonFinite, "linear: scale is NaN or Inf", i);
    params.scale[static_cast<std::size_t>(i)] = s;
    params.zero_point[static_cast<std::size_t>(i)] = zeros[i];
  }
  lowbit::PerGroup<lowbit::kDynamicGroup> g;
  g.group_size = group_size;
  Result<lowbit::QuantizedTensor<Q>> t =
      lowbit::QuantizedTensor<Q>::from_parts(out, in, std::move(packed), std::move(params), g);
  if (!t) return t.status();
  return f(*t);
}

template <class F>
Status with_group_codes(int bits, std::int64_t out, std::int64_t in, std::int64_t group_size,
                        const std::uint8_t* codes, const float* scales, const std::int32_t* zeros,
                        F&& f) {
  LOWBIT_TRY(check_shape(out, in));
  if (codes == nullptr || scales == nullptr || zeros == nullptr)
    return Status(Errc::kInvalidArgument, "linear: null codes, scales or zero points");
  if (group_size == -1) group_size = in;  // GPTQ's and AWQ's "per channel"
  if (group_size < 1) return Status(Errc::kInvalidArgument, "linear: group size < 1", group_size);
  if (in % group_size != 0)
    return Status(Errc::kIndivisible, "linear: group size does not divide in_features", group_size);
  switch (bits) {
    case 1: return group_codes_tensor<1>(out, in, group_size, codes, scales, zeros, f);
    case 2: return group_codes_tensor<2>(out, in, group_size, codes, scales, zeros, f);
    case 3: return group_codes_tensor<3>(out, in, group_size, codes, scales, zeros, f);
    case 4: return group_codes_tensor<4>(out, in, group_size, codes, scales, zeros, f);
    case 5: return group_codes_tensor<5>(out, in, group_size, codes, scales, zeros, f);
    case 6: return group_codes_tensor<6>(out, in, group_size, codes, scales, zeros, f);
    case 7: return group_codes_tensor<7>(out, in, group_size, codes, scales, zeros, f);
    case 8: return group_codes_tensor<8>(out, in, group_size, codes, scales, zeros, f);
    default: return Status(Errc::kInvalidArgument, "linear: bits not in 1..8", bits);
  }
}

// GPTQ's result is deployable as consecutive groups only when every column's group is
// column / group_size (no act-order, or act-order with static groups).
inline Status check_gptq_groups(const lowbit::GptqResult& r) {
  if (r.codes.size() != static_cast<std::size_t>(r.rows * r.cols) ||
      r.scales.size() != static_cast<std::size_t>(r.rows * r.groups) ||
      r.zeros.size() != r.scales.size() || r.group_size < 1 || r.groups * r.group_size != r.cols)
    return Status(Errc::kShapeMismatch, "linear: GPTQ result arrays do not match its shape");
  if (!r.g_idx.empty()) {
    if (r.g_idx.size() != static_cast<std::size_t>(r.cols))
      return Status(Errc::kShapeMismatch, "linear: GPTQ g_idx does not have one entry per column");
    for (std::int64_t c = 0; c < r.cols; ++c)
      if (r.g_idx[static_cast<std::size_t>(c)] != c / r.group_size)
        return Status(Errc::kUnsupported,
                      "linear: GPTQ groups are not consecutive columns (act-order without static "
                      "groups); quantize with static groups",
                      c);
  }
  return {};
}

inline Status check_awq(const lowbit::AwqQuantized& q) {
  if (q.codes.size() != static_cast<std::size_t>(q.rows * q.cols) ||
      q.scales.size() != static_cast<std::size_t>(q.rows * q.groups) ||
      q.zeros.size() != q.scales.size() || q.group_size < 1 || q.groups * q.group_size != q.cols)
    return Status(Errc::kShapeMismatch, "linear: AWQ result arrays do not match its shape");
  return {};
}

// The serial executor stands in for a null one; it has no state, so one per call is free.
struct ExecutorOrSerial {
  lowbit::SerialExecutor serial;
  lowbit::Executor& executor;
  explicit ExecutorOrSerial(lowbit::Executor* e) noexcept : executor(e ? *e : serial) {}
};

// The group-code entry points both code-taking layers share: codes + group parameters (and
// GPTQ / AWQ results, which are such codes) become a QuantizedTensor handed to the layer's own
// `from_quantized`. Layer is complete where these are instantiated (inside its member bodies).
template <class Layer>
Result<std::unique_ptr<Layer>> layer_from_codes(int bits, std::int64_t out, std::int64_t in,
                                                std::int64_t group_size,
                                                const std::uint8_t* codes, const float* scales,
                                                const std::int32_t* zeros,
                                                lowbit::Executor* executor) {
  std::unique_ptr<Layer> l;
  const auto make = [&](const auto& t) -> Status {
    Result<std::unique_ptr<Layer>> r = Layer::from_quantized(t, executor);
    if (!r) return r.status();
    l = std::move(*r);
    return {};
  };
  LOWBIT_TRY(with_group_codes(bits, out, in, group_size, codes, scales, zeros, make));
  return l;
}
template <class Layer>
Result<std::unique_ptr<Layer>> layer_from_gptq(const lowbit::GptqResult& r, int bits,
                                               lowbit::Executor* executor) {
  LOWBIT_TRY(check_gptq_groups(r));
  return Layer::from_codes(bits, r.rows, r.cols, r.group_size, r.codes.data(), r.scales.data(),
                           r.zeros.data(), executor);
}
template <class Layer>
Result<std::unique_ptr<Layer>> layer_from_awq(const lowbit::AwqQuantized& q,
                                              lowbit::Executor* executor) {
  LOWBIT_TRY(check_awq(q));
  return Layer::from_codes(q.bits, q.rows, q.cols, q.group_size, q.codes.data(), q.scales.data(),
                           q.zeros.data(), executor);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// fp32 activations, weights dequantized inside the kernel (lowbit::dequant_gemm).

class DequantLinear final : public QuantizedLinear {
 public:
  // Takes ggml tensor data of type `type` ([out, in], rows of in / block_size blocks end to end,
  // e.g. a GGUF tensor's bytes); byte count checked against the shape.
  static Result<std::unique_ptr<DequantLinear>> from_ggml(lowbit::io::GgmlType type,
                                                          std::vector<std::uint8_t> bytes,
                                                          std::int64_t out_features,
                                                          std::int64_t in_features,
                                                          lowbit::Executor* executor = nullptr) {
    LOWBIT_TRY(detail::check_shape(out_features, in_features));
    std::unique_ptr<DequantLinear> l(new DequantLinear(out_features, in_features, executor));
    l->bytes_ = std::move(bytes);
    Result<lowbit::WeightsView> v = lowbit::WeightsView::ggml(
        type, l->bytes_.data(), l->bytes_.size(), out_features, in_features);
    if (!v) return v.status();
    l->view_ = *v;
    l->ggml_type_ = type;
    l->format_ = std::string("dequant ") + lowbit::io::ggml_type_info(type)->name;
    return l;
  }

  // Quantizes fp32 weights [out, in] to a ggml block type with lowbit's byte-exact ggml
  // quantizers (ggml_quantize_chunk; `importance` = an optional imatrix of in values).
  static Result<std::unique_ptr<DequantLinear>> quantize_ggml(lowbit::io::GgmlType type,
                                                              const float* weight,
                                                              std::int64_t out_features,
                                                              std::int64_t in_features,
                                                              lowbit::Executor* executor = nullptr,
                                                              const float* importance = nullptr) {
    std::vector<std::uint8_t> bytes;
    LOWBIT_TRY(detail::with_ggml_block(type, [&](auto block) -> Status {
      Result<std::vector<std::uint8_t>> b = detail::quantize_to_ggml<decltype(block)>(
          weight, out_features, in_features, importance);
      if (!b) return b.status();
      bytes = std::move(*b);
      return {};
    }));
    return from_ggml(type, std::move(bytes), out_features, in_features, executor);
  }

  // A lowbit QuantizedTensor (any Quantizer policy with stored parameters: Bits<1..8>, any
  // symmetry, PerTensor / PerChannel / PerGroup), re-stored as lowbit's packed matrix.
  template <class Q>
  static Result<std::unique_ptr<DequantLinear>> from_quantized(
      const lowbit::QuantizedTensor<Q>& t, lowbit::Executor* executor = nullptr) {
    LOWBIT_TRY(detail::check_shape(t.rows(), t.cols()));
    Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(t);
    if (!bytes) return bytes.status();
    return from_packed(std::move(*bytes), executor);
  }

  // A lowbit packed matrix (LBPM, lowbit/format/packed_matrix.hpp), e.g. stored().bytes of a
  // packed layer read back from a file; validated by parse_packed_matrix.
  static Result<std::unique_ptr<DequantLinear>> from_packed(std::vector<std::uint8_t> bytes,
                                                            lowbit::Executor* executor = nullptr) {
    Result<lowbit::PackedMatrixView> m = lowbit::parse_packed_matrix(bytes.data(), bytes.size());
    if (!m) return m.status();
    LOWBIT_TRY(detail::check_shape(m->rows, m->cols));
    std::unique_ptr<DequantLinear> l(new DequantLinear(m->rows, m->cols, executor));
    l->bytes_ = std::move(bytes);  // a vector's move keeps its buffer: the view stays valid
    Result<lowbit::WeightsView> v = lowbit::WeightsView::packed(*m);
    if (!v) return v.status();
    l->view_ = *v;
    l->packed_bytes_ = v->size_bytes();
    l->format_ = "dequant packed " + std::to_string(m->bits) + "-bit" +
                 (m->scheme == lowbit::PackedScheme::kAsymmetric ? " asym" : " sym");
    if (m->granularity == lowbit::PackedGranularity::kPerGroup)
      l->format_ += " g" + std::to_string(m->group_size);
    return l;
  }

  // Unsigned codes [0, 2^bits − 1] ([out, in] row-major, one per byte) with a float32 scale and
  // an int32 zero point per group of `group_size` consecutive columns of a row ([out, in /
  // group_size]; group_size −1 = the whole row): w = scale · (code − zero).
  static Result<std::unique_ptr<DequantLinear>> from_codes(
      int bits, std::int64_t out_features, std::int64_t in_features, std::int64_t group_size,
      const std::uint8_t* codes, const float* scales, const std::int32_t* zeros,
      lowbit::Executor* executor = nullptr) {
    return detail::layer_from_codes<DequantLinear>(bits, out_features, in_features, group_size,
                                               codes, scales, zeros, executor);
  }

  // lowbit::gptq_quantize's result (consecutive groups: no act-order, or static groups).
  static Result<std::unique_ptr<DequantLinear>> from_gptq(const lowbit::GptqResult& r, int bits,
                                                          lowbit::Executor* executor = nullptr) {
    return detail::layer_from_gptq<DequantLinear>(r, bits, executor);
  }

  // lowbit::awq_pseudo_quantize's result (after scaling and clipping were applied to W).
  static Result<std::unique_ptr<DequantLinear>> from_awq(const lowbit::AwqQuantized& q,
                                                         lowbit::Executor* executor = nullptr) {
    return detail::layer_from_awq<DequantLinear>(q, executor);
  }

  Status forward(const float* x, std::int64_t tokens, float* y) const override {
    LOWBIT_TRY(detail::check_forward(x, tokens, y));
    if (tokens == 0) return {};
    detail::ExecutorOrSerial ex(executor_);
    return lowbit::dequant_gemm(view_, lowbit::row_major(x, tokens, in_features()),
                                lowbit::row_major(y, tokens, out_features()), ex.executor);
  }

  std::size_t weight_bytes() const noexcept override {
    return view_.format() == lowbit::WeightFormat::kPacked ? packed_bytes_ : bytes_.size();
  }
  std::string format() const override { return format_; }
  const lowbit::WeightsView& weights() const noexcept { return view_; }
  // ggml blocks of the layer's type (a GGUF tensor's data), or a lowbit packed matrix (LBPM:
  // lowbit::parse_packed_matrix, from_packed read it back).
  StoredWeights stored() const noexcept override {
    StoredWeights w;
    const bool packed = view_.format() == lowbit::WeightFormat::kPacked;
    w.kind = packed ? StoredWeights::Kind::kPacked : StoredWeights::Kind::kGgml;
    w.bytes = bytes_.data();
    w.size = bytes_.size();
    w.ggml_type = static_cast<std::uint32_t>(ggml_type_);
    return w;
  }

 private:
  DequantLinear(std::int64_t out, std::int64_t in, lowbit::Executor* executor) noexcept
      : QuantizedLinear(in, out), executor_(executor) {}

  std::vector<std::uint8_t> bytes_;  // ggml blocks, or an LBPM buffer (view_ points into it)
  lowbit::WeightsView view_;
  std::size_t packed_bytes_ = 0;  // codes + scales + zero points, without the LBPM header
  lowbit::io::GgmlType ggml_type_ = lowbit::io::GgmlType::kF32;  // of ggml blocks
  std::string format_;
  lowbit::Executor* executor_;
};

// ---------------------------------------------------------------------------------------------
// int8 activations quantized on the fly, weights repacked once (lowbit::gemm): W4A8 / W8A8-style.

class Int8ActLinear final : public QuantizedLinear {
 public:
  // ggml tensor data of type Q4_0, Q4_1, IQ4_NL or Q8_0 ([out, in], rows of blocks end to end).
  static Result<std::unique_ptr<Int8ActLinear>> from_ggml(lowbit::io::GgmlType type,
                                                          const std::uint8_t* bytes,
                                                          std::size_t n_bytes,
                                                          std::int64_t out_features,
                                                          std::int64_t in_features,
                                                          lowbit::Executor* executor = nullptr) {
    LOWBIT_TRY(detail::check_shape(out_features, in_features));
    using T = lowbit::io::GgmlType;
    if (type != T::kQ4_0 && type != T::kQ4_1 && type != T::kIQ4_NL && type != T::kQ8_0)
      return Status(Errc::kUnsupported,
                    "linear: the int8-activation kernels take Q4_0, Q4_1, IQ4_NL and Q8_0");
    // The same size checks as the dequantizing kernels (kTruncated, kShapeMismatch, ...).
    Result<lowbit::WeightsView> v =
        lowbit::WeightsView::ggml(type, bytes, n_bytes, out_features, in_features);
    if (!v) return v.status();
    Result<lowbit::InterleavedWeights> w = Status(Errc::kUnsupported, "unreachable");
    const auto interleave = [&](auto block) -> Status {
      using Block = decltype(block);
      // Copied into typed storage: the caller's bytes need not be aligned for the block struct.
      std::vector<Block> blocks(n_bytes / sizeof(Block));
      std::memcpy(blocks.data(), bytes, n_bytes);
      w = lowbit::interleave_weights(blocks.data(), out_features, in_features);
      return w.status();
    };
    namespace g = lowbit::ggml;
    switch (type) {
      case T::kQ4_0: LOWBIT_TRY(interleave(g::BlockQ4_0{})); break;
      case T::kQ4_1: LOWBIT_TRY(interleave(g::BlockQ4_1{})); break;
      case T::kIQ4_NL: LOWBIT_TRY(interleave(g::BlockIQ4_NL{})); break;
      default: LOWBIT_TRY(interleave(g::BlockQ8_0{})); break;
    }
    return make(std::move(*w), executor);
  }

  // Quantizes fp32 weights [out, in] to Q4_0, Q4_1, IQ4_NL or Q8_0 (ggml's quantizers, byte for
  // byte), then repacks them.
  static Result<std::unique_ptr<Int8ActLinear>> quantize_ggml(lowbit::io::GgmlType type,
                                                              const float* weight,
                                                              std::int64_t out_features,
                                                              std::int64_t in_features,
                                                              lowbit::Executor* executor = nullptr,
                                                              const float* importance = nullptr) {
    using T = lowbit::io::GgmlType;
    if (type != T::kQ4_0 && type != T::kQ4_1 && type != T::kIQ4_NL && type != T::kQ8_0)
      return Status(Errc::kUnsupported,
                    "linear: the int8-activation kernels take Q4_0, Q4_1, IQ4_NL and Q8_0");
    std::vector<std::uint8_t> bytes;
    LOWBIT_TRY(detail::with_ggml_block(type, [&](auto block) -> Status {
      Result<std::vector<std::uint8_t>> b = detail::quantize_to_ggml<decltype(block)>(
          weight, out_features, in_features, importance);
      if (!b) return b.status();
      bytes = std::move(*b);
      return {};
    }));
    return from_ggml(type, bytes.data(), bytes.size(), out_features, in_features, executor);
  }

  // A lowbit QuantizedTensor of Bits<4> or Bits<8> codes (groups a multiple of 32, per row or
  // per tensor).
  template <class Q>
  static Result<std::unique_ptr<Int8ActLinear>> from_quantized(
      const lowbit::QuantizedTensor<Q>& t, lowbit::Executor* executor = nullptr) {
    LOWBIT_TRY(detail::check_shape(t.rows(), t.cols()));
    if constexpr (Q::kBits != 4 && Q::kBits != 8) {
      return Status(Errc::kUnsupported, "linear: the int8-activation kernels take 4- and 8-bit codes");
    } else {
      Result<lowbit::InterleavedWeights> w = lowbit::interleave_weights(t);
      if (!w) return w.status();
      return make(std::move(*w), executor);
    }
  }

  // Codes + group parameters as DequantLinear::from_codes, at 4 or 8 bits.
  static Result<std::unique_ptr<Int8ActLinear>> from_codes(
      int bits, std::int64_t out_features, std::int64_t in_features, std::int64_t group_size,
      const std::uint8_t* codes, const float* scales, const std::int32_t* zeros,
      lowbit::Executor* executor = nullptr) {
    if (bits != 4 && bits != 8)
      return Status(Errc::kUnsupported, "linear: the int8-activation kernels take 4- and 8-bit codes",
                    bits);
    return detail::layer_from_codes<Int8ActLinear>(bits, out_features, in_features, group_size,
                                               codes, scales, zeros, executor);
  }

  static Result<std::unique_ptr<Int8ActLinear>> from_gptq(const lowbit::GptqResult& r, int bits,
                                                          lowbit::Executor* executor = nullptr) {
    return detail::layer_from_gptq<Int8ActLinear>(r, bits, executor);
  }
  static Result<std::unique_ptr<Int8ActLinear>> from_awq(const lowbit::AwqQuantized& q,
                                                         lowbit::Executor* executor = nullptr) {
    return detail::layer_from_awq<Int8ActLinear>(q, executor);
  }

  Status forward(const float* x, std::int64_t tokens, float* y) const override {
    LOWBIT_TRY(detail::check_forward(x, tokens, y));
    if (tokens == 0) return {};
    detail::ExecutorOrSerial ex(executor_);
    // One workspace per thread: forward() runs on several threads at once, and on one thread
    // the calls are sequential, so the activation buffer is reused without sharing.
    static thread_local lowbit::GemmWorkspace workspace;
    lowbit::GemmOptions options;
    options.workspace = &workspace;
    return lowbit::gemm(weights_, lowbit::row_major(x, tokens, in_features()),
                        lowbit::row_major(y, tokens, out_features()), ex.executor, options);
  }

  std::size_t weight_bytes() const noexcept override { return weights_.size_bytes(); }
  std::string format() const override {
    return std::string("int8-act ") + weights_.format_name();
  }
  const lowbit::InterleavedWeights& weights() const noexcept { return weights_; }

 private:
  Int8ActLinear(lowbit::InterleavedWeights w, lowbit::Executor* executor) noexcept
      : QuantizedLinear(w.cols(), w.rows()), weights_(std::move(w)), executor_(executor) {}
  static Result<std::unique_ptr<Int8ActLinear>> make(lowbit::InterleavedWeights w,
                                                     lowbit::Executor* executor) {
    return std::unique_ptr<Int8ActLinear>(new Int8ActLinear(std::move(w), executor));
  }

  lowbit::InterleavedWeights weights_;
  lowbit::Executor* executor_;
};

// ---------------------------------------------------------------------------------------------
// W8A8: int8 weights per output channel, int8 activations per token (lowbit::gemm_w8a8).

class W8A8Linear final : public QuantizedLinear {
 public:
  // Quantizes fp32 weights [out, in] per output channel as SmoothQuant does (step = max(max|w|,
  // 1e-5)/127, codes rint(w/step)). Fold the smoothing scales into `weight` first.
  static Result<std::unique_ptr<W8A8Linear>> quantize(const float* weight,
                                                      std::int64_t out_features,
                                                      std::int64_t in_features,
                                                      lowbit::Executor* executor = nullptr,
                                                      const float* bias = nullptr) {
    LOWBIT_TRY(detail::check_shape(out_features, in_features));
    if (weight == nullptr) return Status(Errc::kInvalidArgument, "linear: null weight");
    Result<lowbit::W8A8Weights> w = lowbit::W8A8Weights::quantize(
        lowbit::row_major(weight, out_features, in_features), bias_view(bias, out_features));
    if (!w) return w.status();
    return make(std::move(*w), executor);
  }

  // int8 codes [out, in] and one scale per output row (w = code · scale), e.g. from
  // Quantizer<Bits<8>, SymmetricRestricted, PerChannel<0>> or smoothquant_quantize_weight.
  static Result<std::unique_ptr<W8A8Linear>> from_codes(const std::int8_t* codes,
                                                        const float* scales,
                                                        std::int64_t out_features,
                                                        std::int64_t in_features,
                                                        lowbit::Executor* executor = nullptr,
                                                        const float* bias = nullptr) {
    LOWBIT_TRY(detail::check_shape(out_features, in_features));
    if (codes == nullptr || scales == nullptr)
      return Status(Errc::kInvalidArgument, "linear: null codes or scales");
    Result<lowbit::W8A8Weights> w = lowbit::W8A8Weights::prepare(
        lowbit::row_major(codes, out_features, in_features),
        lowbit::flat(scales, out_features), bias_view(bias, out_features));
    if (!w) return w.status();
    return make(std::move(*w), executor);
  }

  Status forward(const float* x, std::int64_t tokens, float* y) const override {
    LOWBIT_TRY(detail::check_forward(x, tokens, y));
    if (tokens == 0) return {};  // gemm_w8a8 calls that kEmpty; a Linear does nothing
    detail::ExecutorOrSerial ex(executor_);
    static thread_local lowbit::W8A8Workspace workspace;  // see Int8ActLinear::forward
    return lowbit::gemm_w8a8(weights_, lowbit::row_major(x, tokens, in_features()),
                             lowbit::row_major(y, tokens, out_features()), ex.executor,
                             &workspace);
  }

  std::size_t weight_bytes() const noexcept override {
    const std::size_t rows = (static_cast<std::size_t>(out_features()) + 63) / 64 * 64;
    return weights_.packed_bytes() + rows * (sizeof(float) + sizeof(std::int32_t)) +
           (weights_.has_bias() ? rows * sizeof(float) : 0);
  }
  std::string format() const override { return "w8a8 per-channel"; }
  const lowbit::W8A8Weights& weights() const noexcept { return weights_; }

 private:
  W8A8Linear(lowbit::W8A8Weights w, lowbit::Executor* executor) noexcept
      : QuantizedLinear(w.in_features(), w.out_features()),
        weights_(std::move(w)),
        executor_(executor) {}
  static Result<std::unique_ptr<W8A8Linear>> make(lowbit::W8A8Weights w,
                                                  lowbit::Executor* executor) {
    return std::unique_ptr<W8A8Linear>(new W8A8Linear(std::move(w), executor));
  }
  static lowbit::MatrixView<const float> bias_view(const float* bias, std::int64_t out) noexcept {
    return bias == nullptr ? lowbit::MatrixView<const float>{} : lowbit::flat(bias, out);
  }

  lowbit::W8A8Weights weights_;
  lowbit::Executor* executor_;
};

// ---------------------------------------------------------------------------------------------
// Factories for LlamaModel::load / from_weights. Each quantizes every decoder linear the same way
// and, when `sizes` is given, appends one LinearSize per layer (load calls the factory once per
// linear, in order, on one thread). `executor` must outlive the model.

namespace detail {
template <class Layer, class Make>
LinearFactory make_factory(Make make, std::vector<LinearSize>* sizes) {
  return [make, sizes](const std::string& name, const float* weight, std::int64_t out,
                       std::int64_t in) -> Result<std::unique_ptr<Linear>> {
    Result<std::unique_ptr<Layer>> l = make(weight, out, in);
    if (!l) return l.status();
    if (sizes != nullptr)
      sizes->push_back(LinearSize{name, (*l)->format(), out, in, (*l)->weight_bytes(),
                                  static_cast<std::size_t>(out * in) * sizeof(float)});
    return std::unique_ptr<Linear>(std::move(*l));
  };
}
}  // namespace detail

// DequantLinear of ggml type `type` (Q8_0, Q6_K, Q4_K, Q4_0, IQ4_NL, ...).
inline LinearFactory dequant_factory(lowbit::io::GgmlType type, lowbit::Executor* executor = nullptr,
                                     std::vector<LinearSize>* sizes = nullptr) {
  return detail::make_factory<DequantLinear>(
      [type, executor](const float* w, std::int64_t out, std::int64_t in) {
        return DequantLinear::quantize_ggml(type, w, out, in, executor);
      },
      sizes);
}

// DequantLinear of lowbit codes from a Quantizer policy Q (e.g. Quantizer<Bits<4>, Asymmetric,
// PerGroup<128>>), round-to-nearest with Q's range estimator.
template <class Q>
LinearFactory packed_factory(lowbit::Executor* executor = nullptr,
                             std::vector<LinearSize>* sizes = nullptr,
                             typename Q::granularity granularity = {}) {
  return detail::make_factory<DequantLinear>(
      [executor, granularity](const float* w, std::int64_t out,
                              std::int64_t in) -> Result<std::unique_ptr<DequantLinear>> {
        Result<lowbit::QuantizedTensor<Q>> t = Q::quantize(lowbit::row_major(w, out, in), granularity);
        if (!t) return t.status();
        return DequantLinear::from_quantized(*t, executor);
      },
      sizes);
}

// Int8ActLinear of ggml type Q4_0, Q4_1, IQ4_NL or Q8_0.
inline LinearFactory int8_act_factory(lowbit::io::GgmlType type,
                                      lowbit::Executor* executor = nullptr,
                                      std::vector<LinearSize>* sizes = nullptr) {
  return detail::make_factory<Int8ActLinear>(
      [type, executor](const float* w, std::int64_t out, std::int64_t in) {
        return Int8ActLinear::quantize_ggml(type, w, out, in, executor);
      },
      sizes);
}

// W8A8Linear, SmoothQuant per-channel weights (no smoothing: fold it into the weights first).
inline LinearFactory w8a8_factory(lowbit::Executor* executor = nullptr,
                                  std::vector<LinearSize>* sizes = nullptr) {
  return detail::make_factory<W8A8Linear>(
      [executor](const float* w, std::int64_t out, std::int64_t in) {
        return W8A8Linear::quantize(w, out, in, executor);
      },
      sizes);
}

}  // namespace llama
