// lowbit/gemm_w8a8.hpp: the W8A8 GEMM of SmoothQuant / ZeroQuant deployment: int8 weights with
// one scale per output channel, int8 activations with one scale per token, int32 accumulation,
// fp32 output with an optional fused bias.
//
//   Y[t, o] = (sx_t · sw_o) · Σ_k qx[t, k] · qw[o, k]  (+ bias_o)        X: tokens × in, W: out × in
//
// Weights are prepared once (W8A8Weights: repacked into 64-row blocks of 4-byte K groups, the
// operand order of vpdpbusd / vpmaddubsw / sdot, plus the per-row sums the VNNI paths need; see
// detail/kernels/w8a8/reference.hpp for the byte layout). Activations come either as fp32, quantized
// per token on the fly, or already quantized by the engine (codes and per-token or per-tensor
// scales, static or dynamic).
//
// The activation quantizer is SmoothQuant's dynamic per-token absmax (algo/smoothquant.hpp,
// mit-han-lab/smoothquant's quantize_activation_per_token_absmax), so lowbit's W8A8 reproduces the
// reference's codes bit for bit:
//
//   sx_t = max(max_k |x[t, k]|, 1e-5) / 127,   qx[t, k] = clamp(rint(x[t, k] / sx_t), -127, 127)
//
// rint rounds half to even; the division (not a multiply by 1/sx) is the reference's. W8A8Linear
// in algo/smoothquant.hpp is the float32 fake-quantized model of this product (what the reference
// computes); gemm_w8a8 is the integer kernel an engine runs, equal to it up to the reference's
// float32 summation order (tests/unit/test_gemm_w8a8.cpp bounds the difference).
//
// Weights from lowbit's quantizers: Quantizer<Bits<8>, SymmetricRestricted, PerChannel<0>> (or
// Symmetric: codes of -128 are fine) gives codes and one scale per row for W8A8Weights::prepare;
// W8A8Weights::quantize applies SmoothQuant's own per-channel absmax instead.
//
// Exactness. Integer sums are exact on every path (K <= 131072 keeps |acc| < 2^31), and the float
// epilogue is one fixed sequence, s = sx_t · sw_o, v = float(acc), y = fma(v, s, bias_o) or v · s,
// so every ISA path returns bit-identical output. The paths (chosen at run time, lowbit/cpu.hpp):
//   scalar        the reference (detail/kernels/w8a8/reference.hpp)
//   sse4.1        pmaddubsw with the sign trick on xmm; the bias's fma computed exactly
//                 (detail/kernels/sse41_fma.hpp: SSE4.1 has no FMA)
//   avx2          vpmaddubsw with the sign trick: |qw| × qx·sign(qw) never saturates int16
//   avx-vnni      vpdpbusd on ymm, activations offset by +128, minus 128 · Σ_k qw per row
//   avx512-vnni   vpdpbusd on zmm, same arithmetic (avx512 without VNNI runs avx2)
//   neon          smull/smlal/sadalp, signed × signed
//   neon-dotprod  sdot by element
//
// Non-finite activations. int8 has no NaN or Inf, and a token holding one has no meaningful scale:
// such a token is quantized to codes 0 with scale NaN, so exactly its outputs are NaN and every
// other token's are unaffected. This is not an error (one bad sequence must not fail a batch); an
// engine that wants to know checks its outputs or its activations. Pre-quantized scales are
// multiplied in as given (a NaN scale likewise gives NaN outputs for its token).
//
// Threads. Output rows are cut into 64-row blocks, one task each, on the Executor the caller
// passes (executor.hpp); the activations are quantized first, in token tasks on the same
// executor, into a W8A8Workspace (pass one to reuse its memory across calls).
//
//   lowbit::Result<lowbit::W8A8Weights> w = lowbit::W8A8Weights::quantize(weight, bias);
//   if (!w) return w.status();
//   lowbit::ThreadPool pool(2);
//   LOWBIT_TRY(lowbit::gemm_w8a8(*w, x, y, pool));   // x: tokens × in fp32, y: tokens × out
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "lowbit/algo/smoothquant.hpp"
#include "lowbit/cpu.hpp"
#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/w8a8/avx2.hpp"
#include "lowbit/detail/kernels/w8a8/avx512_vnni.hpp"
#include "lowbit/detail/kernels/w8a8/avx_vnni.hpp"
#include "lowbit/detail/kernels/w8a8/neon.hpp"
#include "lowbit/detail/kernels/w8a8/neon_dotprod.hpp"
#include "lowbit/detail/kernels/w8a8/reference.hpp"
#include "lowbit/detail/kernels/w8a8/sse41.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// The largest in_features the int32 accumulators allow (see reference.hpp).
inline constexpr std::int64_t kW8A8MaxInFeatures = detail::w8a8::kMaxK;

namespace detail {
namespace w8a8 {

// A vector given as a 1 × n or n × 1 view.
inline Status check_vector(MatrixView<const float> v, std::int64_t n, const char* wrong_length) {
  LOWBIT_TRY(v.validate());
  if ((v.rows() != 1 && v.cols() != 1) || v.size() != n) return {Errc::kShapeMismatch, wrong_length};
  return {};
}
inline float vector_at(MatrixView<const float> v, std::int64_t i) noexcept {
  return v.rows() == 1 ? v(0, i) : v(i, 0);
}

class Access;  // the driver behind gemm_w8a8, below

inline const Kernel& select_kernel(Isa isa) {
  static const KernelTable<KernelGetter> table = [] {
    KernelTable<KernelGetter> t;
    t.set(Isa::kScalar, &reference_kernel);
#if defined(LOWBIT_HAVE_X86_KERNELS)
    t.set(Isa::kSse41, &sse41::kernel);
    t.set(Isa::kAvx2, &avx2::kernel);
    t.set(Isa::kAvxVnni, &avx_vnni::kernel);
    t.set(Isa::kAvx512Vnni, &avx512_vnni::kernel);
#endif
#if defined(LOWBIT_HAVE_ARM_KERNELS)
    t.set(Isa::kNeon, &neon::kernel);
#endif
#if defined(LOWBIT_HAVE_ARM_DOTPROD_KERNELS)
    t.set(Isa::kNeonDotprod, &neon_dotprod::kernel);
#endif
    return t;
  }();
  return table.lookup(isa)();
}

}  // namespace w8a8
}  // namespace detail

// The path gemm_w8a8 runs now (the forced ISA or the best one, resolved to the nearest path that
// has a W8A8 kernel: avx512 without VNNI runs avx2).
inline Isa gemm_w8a8_isa() { return detail::w8a8::select_kernel(detail::dispatch_isa()).isa; }

// int8 weights prepared for gemm_w8a8: repacked codes, per-row scales, optional bias, and the
// per-row code sums of the VNNI paths. A value type: copy and move as you like; it is immutable
// and may be shared by any number of concurrent gemm_w8a8 calls.
class W8A8Weights {
 public:
  // From int8 codes (out × in, any strides; every int8 value, -128 included, as a Symmetric
  // quantizer gives) and one scale per output row: e.g. the codes and params of
  // Quantizer<Bits<8>, SymmetricRestricted, PerChannel<0>> or smoothquant_quantize_weight.
  // `scales` and `bias` are 1 × out or out × 1 views; an empty bias view means no bias. Errors:
  // invalid views (kInvalidArgument, kOverflow), no codes (kEmpty), scales or bias of the wrong
  // length (kShapeMismatch), a NaN/Inf scale or bias (kNonFinite, index = row), in_features above
  // kW8A8MaxInFeatures (kUnsupported).
  static Result<W8A8Weights> prepare(MatrixView<const std::int8_t> codes,
                                     MatrixView<const float> scales,
                                     MatrixView<const float> bias = {}) {
    using namespace detail::w8a8;
    LOWBIT_TRY(codes.validate());
    if (codes.empty()) return Status(Errc::kEmpty, "weight codes have no elements");
    const std::int64_t out = codes.rows(), in = codes.cols();
    if (in > kMaxK)
      return Status(Errc::kUnsupported, "in_features above kW8A8MaxInFeatures: int32 could overflow");
    LOWBIT_TRY(check_vector(scales, out, "weight scales must hold one value per output row"));
    LOWBIT_TRY(bias.validate());
    const bool has_bias = !bias.empty();
    if (has_bias) LOWBIT_TRY(check_vector(bias, out, "bias must hold one value per output row"));
    for (std::int64_t o = 0; o < out; ++o) {
      if (!std::isfinite(vector_at(scales, o)))
        return Status(Errc::kNonFinite, "weight scale is NaN or Inf", o);
      if (has_bias && !std::isfinite(vector_at(bias, o)))
        return Status(Errc::kNonFinite, "bias is NaN or Inf", o);
    }
    const std::int64_t rows_padded = round_up(out, kBlockRows);
    const std::int64_t kp = round_up(in, kKAlign);
    if (rows_padded > std::numeric_limits<std::int64_t>::max() / kp)
      return Status(Errc::kOverflow, "packed weight size overflows int64");

    W8A8Weights w;
    w.out_ = out;
    w.in_ = in;
    w.groups_ = kp / kGroupK;
    w.has_bias_ = has_bias;
    w.packed_.reset(static_cast<std::size_t>(rows_padded * kp));
    w.scale_.assign(static_cast<std::size_t>(rows_padded), 0.0f);
    w.bias_.assign(has_bias ? static_cast<std::size_t>(rows_padded) : 0, 0.0f);
    w.sum_.assign(static_cast<std::size_t>(rows_padded), 0);
    std::int8_t* packed = w.packed_.data();
    for (std::int64_t o = 0; o < out; ++o) {
      std::int64_t sum = 0;
      for (std::int64_t k = 0; k < in; ++k) {
        const std::int8_t q = codes(o, k);
        packed[packed_offset(o, k, w.groups_)] = q;
        sum += q;
      }
      const auto i = static_cast<std::size_t>(o);
      w.sum_[i] = static_cast<std::int32_t>(128 * sum);  // |128 · sum| <= 2^31 for in <= kMaxK
      w.scale_[i] = vector_at(scales, o);
      if (has_bias) w.bias_[i] = vector_at(bias, o);
    }
    return w;
  }

  // Quantizes fp32 weights (out × in) per output channel as SmoothQuant does
  // (smoothquant_quantize_weight, kPerChannel: step = max(max|w_o|, 1e-5) / 127, codes rint(w / step))
  // and prepares them. Errors: those of prepare, and NaN/Inf weights (kNonFinite, flat index).
  static Result<W8A8Weights> quantize(MatrixView<const float> weight,
                                      MatrixView<const float> bias = {}) {
    LOWBIT_TRY(weight.validate());
    if (weight.cols() > detail::w8a8::kMaxK)
      return Status(Errc::kUnsupported, "in_features above kW8A8MaxInFeatures: int32 could overflow");
    Result<SmoothQuantCodes> q =
        smoothquant_quantize_weight(weight, SmoothQuantWeightScheme::kPerChannel);
    if (!q) return q.status();
    return prepare(row_major<const std::int8_t>(q->codes.data(), q->rows, q->cols),
                   flat<const float>(q->steps.data(), q->rows), bias);
  }

  std::int64_t out_features() const noexcept { return out_; }
  std::int64_t in_features() const noexcept { return in_; }
  bool has_bias() const noexcept { return has_bias_; }
  // Code (o, k) and scale of row o, read back from the packed layout (o < out, k < in).
  std::int8_t code(std::int64_t o, std::int64_t k) const noexcept {
    return packed_.data()[detail::w8a8::packed_offset(o, k, groups_)];
  }
  float scale(std::int64_t o) const noexcept { return scale_[static_cast<std::size_t>(o)]; }
  // Bytes of packed codes (rows padded to 64, K to 16): what a decode pass streams.
  std::size_t packed_bytes() const noexcept { return packed_.size(); }

 private:
  friend class detail::w8a8::Access;
  std::int64_t out_ = 0, in_ = 0, groups_ = 0;
  bool has_bias_ = false;
  detail::w8a8::AlignedBytes packed_;
  std::vector<float> scale_, bias_;
  std::vector<std::int32_t> sum_;
};

// Scratch memory of gemm_w8a8: the quantized activations (tokens × Kp bytes) and their scales.
// Reuse one per thread that calls gemm_w8a8 to avoid an allocation per call; it only grows.
class W8A8Workspace {
 public:
  std::size_t capacity_bytes() const noexcept {
    return codes_.size() + scales_.capacity() * sizeof(float);
  }

 private:
  friend class detail::w8a8::Access;
  detail::w8a8::AlignedBytes codes_;
  std::vector<float> scales_;
};

namespace detail {
namespace w8a8 {

// The driver behind the gemm_w8a8 overloads (it reaches into W8A8Weights and W8A8Workspace).
class Access {
 public:
  // Validates the output and activation shapes, packs the activations with `pack(kernel, codes,
  // kp, scales)` (a Status), then runs the compute kernel over 64-row blocks.
  template <class Pack>
  static Status run(std::int64_t tokens, std::int64_t in, const W8A8Weights& w, MatrixView<float> y,
                    Executor& executor, W8A8Workspace* workspace, const Pack& pack) {
    LOWBIT_TRY(y.validate());
    if (w.out_ == 0) return {Errc::kInvalidArgument, "weights were never prepared"};
    if (in != w.in_features())
      return {Errc::kShapeMismatch, "activation width differs from the weights' in_features"};
    if (y.rows() != tokens || y.cols() != w.out_features())
      return {Errc::kShapeMismatch, "y must be tokens x out_features"};
    if (tokens == 0) return {};  // an empty batch, as in dequant_gemm and gemm
    // y may alias x (the activations are quantized into the workspace first), but its own
    // elements must be distinct.
    LOWBIT_TRY(check_distinct_elements(y, "gemm_w8a8: elements of y overlap each other"));
    const std::int64_t kp = w.groups_ * kGroupK;
    if (tokens > std::numeric_limits<std::int64_t>::max() / kp)
      return {Errc::kOverflow, "activation workspace size overflows int64"};
    W8A8Workspace local;
    W8A8Workspace& ws = workspace != nullptr ? *workspace : local;
    const auto bytes = static_cast<std::size_t>(tokens * kp);
    if (ws.codes_.size() < bytes) ws.codes_.reset(bytes);
    if (ws.scales_.size() < static_cast<std::size_t>(tokens))
      ws.scales_.resize(static_cast<std::size_t>(tokens));

    const Kernel& kernel = select_kernel(dispatch_isa());
    LOWBIT_TRY(pack(kernel, ws.codes_.data(), kp, ws.scales_.data()));

    const Problem p{w.packed_.data(), w.scale_.data(), w.has_bias_ ? w.bias_.data() : nullptr,
                    w.sum_.data(), w.out_, w.groups_, ws.codes_.data(), ws.scales_.data(), tokens,
                    y.data(), y.row_stride(), y.col_stride()};
    const std::int64_t blocks = round_up(w.out_, kBlockRows) / kBlockRows;
    executor.parallel_for(blocks, [&](std::int64_t b0, std::int64_t b1) { kernel.compute(p, b0, b1); });
    return {};
  }
};

}  // namespace w8a8
}  // namespace detail

// Y = X · Wᵀ (+ bias) with X (tokens × in) fp32, quantized per token on the fly. X may have any
// strides (column-contiguous rows take the SIMD quantizer) and y may alias x. Errors: invalid
// views (kInvalidArgument, kOverflow), x.cols() != in_features or y not
// tokens × out_features (kShapeMismatch); nothing is written on error. NaN/Inf in a token make
// that token's outputs NaN (see the header comment).
inline Status gemm_w8a8(const W8A8Weights& w, MatrixView<const float> x, MatrixView<float> y,
                        Executor& executor, W8A8Workspace* workspace = nullptr) {
  LOWBIT_TRY(x.validate());
  return detail::w8a8::Access::run(
      x.rows(), x.cols(), w, y, executor, workspace,
      [&](const detail::w8a8::Kernel& kernel, std::int8_t* codes, std::int64_t kp, float* scales) {
        const detail::w8a8::QuantizeArgs args{x, codes, kp, scales};
        constexpr std::int64_t kTokensPerTask = 8;
        executor.parallel_for((x.rows() + kTokensPerTask - 1) / kTokensPerTask,
                              [&](std::int64_t b, std::int64_t e) {
                                const std::int64_t t1 = e * kTokensPerTask;
                                kernel.quantize(args, b * kTokensPerTask, t1 < x.rows() ? t1 : x.rows());
                              });
        return Status{};
      });
}

// Y = X · Wᵀ (+ bias) with X already quantized: x_codes (tokens × in, any strides, values in
// [-127, 127]) and x_scales, a vector of one scale per token or a single per-tensor scale (a 1 × 1
// view: static quantization). Errors: those of the fp32 overload; a scales vector of another
// length (kShapeMismatch); a code of -128 (kOutOfRange, flat index), which the integer kernels
// cannot take exactly (the quantizer above never produces it).
inline Status gemm_w8a8(const W8A8Weights& w, MatrixView<const std::int8_t> x_codes,
                        MatrixView<const float> x_scales, MatrixView<float> y, Executor& executor,
                        W8A8Workspace* workspace = nullptr) {
  LOWBIT_TRY(x_codes.validate());
  LOWBIT_TRY(x_scales.validate());
  const std::int64_t tokens = x_codes.rows();
  const bool per_tensor = x_scales.rows() == 1 && x_scales.cols() == 1;
  if (!per_tensor && tokens > 0)
    LOWBIT_TRY(detail::w8a8::check_vector(x_scales, tokens,
                                          "x_scales must hold one value per token, or one in all"));
  return detail::w8a8::Access::run(
      tokens, x_codes.cols(), w, y, executor, workspace,
      [&](const detail::w8a8::Kernel& kernel, std::int8_t* codes, std::int64_t kp, float* scales) {
        const std::int64_t in = x_codes.cols();
        for (std::int64_t t = 0; t < tokens; ++t) {
          std::int8_t* row = codes + t * kp;
          for (std::int64_t k = 0; k < in; ++k) {
            const std::int8_t q = x_codes(t, k);
            if (q == -128)
              return Status(Errc::kOutOfRange, "activation code -128: codes must be in [-127, 127]",
                            t * in + k);
            row[k] = detail::w8a8::stored_code(q, kernel.offset_activations);
          }
          for (std::int64_t k = in; k < kp; ++k)
            row[k] = detail::w8a8::stored_code(0, kernel.offset_activations);
          scales[t] = per_tensor ? x_scales(0, 0) : detail::w8a8::vector_at(x_scales, t);
        }
        return Status{};
      });
}

// Serial overloads: the calling thread does everything.
inline Status gemm_w8a8(const W8A8Weights& w, MatrixView<const float> x, MatrixView<float> y) {
  SerialExecutor serial;
  return gemm_w8a8(w, x, y, serial);
}
inline Status gemm_w8a8(const W8A8Weights& w, MatrixView<const std::int8_t> x_codes,
                        MatrixView<const float> x_scales, MatrixView<float> y) {
  SerialExecutor serial;
  return gemm_w8a8(w, x_codes, x_scales, y, serial);
}

// The activation quantizer gemm_w8a8 applies, for engines that keep int8 activations: codes
// (tokens × in, any strides) and one scale per token (a 1 × tokens or tokens × 1 view). A token
// with NaN/Inf gets codes 0 and scale NaN. Errors: invalid views, no elements (kEmpty), codes or
// scales of the wrong shape (kShapeMismatch).
inline Status quantize_activations_w8a8(MatrixView<const float> x, MatrixView<std::int8_t> codes,
                                        MatrixView<float> scales) {
  LOWBIT_TRY(x.validate());
  if (x.empty()) return {Errc::kEmpty, "activations have no elements"};
  LOWBIT_TRY(detail::check_output(codes, x));
  LOWBIT_TRY(detail::w8a8::check_vector(scales, x.rows(), "scales must hold one value per token"));
  const std::int64_t kp = detail::w8a8::round_up(x.cols(), detail::w8a8::kKAlign);
  std::vector<std::int8_t> row(static_cast<std::size_t>(kp));
  for (std::int64_t t = 0; t < x.rows(); ++t) {
    float scale = 0.0f;
    detail::w8a8::quantize_token_scalar(&x(t, 0), x.cols(), x.col_stride(), row.data(), kp, &scale,
                                        false);
    for (std::int64_t k = 0; k < x.cols(); ++k) codes(t, k) = row[static_cast<std::size_t>(k)];
    (scales.rows() == 1 ? scales(0, t) : scales(t, 0)) = scale;
  }
  return {};
}

}  // namespace lowbit
