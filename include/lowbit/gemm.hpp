// lowbit/gemm.hpp: Y = X · Wᵀ (+ bias) with quantized weights and int8 activations quantized on
// the fly, the integer path of fast inference engines (ggml's vec_dot with a Q8 partner, W4A8),
// on the best SIMD path of the CPU it runs on.
//
//   lowbit::Result<lowbit::InterleavedWeights> w =
//       lowbit::interleave_weights(blocks /*ggml::BlockQ4_0*/, out_features, in_features);
//   if (!w) return w.status();                      // once, at load time
//   lowbit::ThreadPool pool(2);
//   lowbit::GemmWorkspace workspace;                // optional: reused across calls
//   lowbit::GemmOptions options;
//   options.bias = lowbit::flat(bias, out_features);  // optional
//   options.workspace = &workspace;
//   LOWBIT_TRY(lowbit::gemm(*w, x /*tokens × in*/, y /*tokens × out*/, pool, options));
//
// Weights: ggml Q4_0, Q4_1, IQ4_NL, Q8_0, Q4_K and lowbit's 4- and 8-bit packed matrices
// (symmetric or asymmetric; per-tensor, per-row or groups of 32·n), repacked once by
// interleave_weights() (format/interleaved.hpp: 16 rows interleaved per 4-byte K chunk, the
// prepared size ≈ the format's size; Q4_K's float sub-block scales make it 6 bits per weight).
// Activations X [tokens × in_features] fp32, any strides.
//
// The math. Each token row of X is quantized per block of 32 values to int8 with a float scale
// dx = amax/127, ties rounded to even (detail/kernels/quantize_activations/reference.hpp), with
// the block sums sx = Σ qx. Every weight format is w = d·(v(c) − z) or w = d·c + m per 32-block,
// so
//
//   y[t][r] = Σ_blocks  d·dx · (Σ v(c)·qx − z·sx)   [+ m · dx·sx]    (+ bias[r])
//
// with the inner sums exact in int32 and one fused multiply-add per block
// (detail/kernels/int8_gemm/problem.hpp gives the exact sequence). Every path — scalar reference,
// SSE4.1, AVX2, AVX-VNNI, AVX-512 VNNI, NEON, NEON dot product — returns bit-identical outputs.
//
// Accuracy: the only approximation is the activations' rounding, |x − dx·qx| ≤ dx/2 per value, so
// |y − Σ w·x| ≤ Σ_blocks (dx/2)·Σ|w| plus float32 rounding of the block terms (the weights are
// used exactly as the format's dequantizer gives them).
//
// Paths (lowbit/cpu.hpp; chosen once per call, forced with LOWBIT_ISA or force_isa_for_testing):
//   scalar        the reference (detail/kernels/int8_gemm/reference.hpp)
//   sse4.1        pmaddubsw/pmaddwd on xmm (4 rows per register), the fused multiply-add
//                 computed exactly in double (SSE4.1 has no FMA)
//   avx2          vpmaddubsw/vpmaddwd: 4-bit codes unsigned × int8 with int16 accumulation per
//                 block; IQ4_NL (vpshufb lookup) and 8-bit codes with the sign trick
//   avx-vnni      vpdpbusd on ymm; signed codes offset by +128 and corrected by 128·sx
//   avx512 (F/BW) runs the avx2 kernels
//   avx512-vnni   vpdpbusd on zmm (16 rows per register)
//   neon          smull/sadalp;   neon-dotprod: sdot by lane
// The activation quantizer has SIMD forms for AVX2 and NEON; SSE4.1 CPUs quantize with the
// scalar one (K values per token: small next to the product).
//
// NaN and Inf in activations: a 32-block holding one is quantized to codes 0 with scale NaN, so
// every output of that token is NaN (an Inf input also gives NaN: int8 cannot carry it) and no
// other token is touched. Not an error: one bad sequence must not fail a batch. A NaN bias value
// gives NaN in its output column. Weight scales are finite (interleave_weights checks them).
//
// Threads: the activations are quantized in token tasks, then output rows are cut into 16-row
// blocks, each a task, on the executor the caller passes; nothing here creates threads, and the
// result does not depend on the executor. Scratch memory (48 bytes per token and 32 values of
// K, detail/kernels/quantize_activations/reference.hpp) lives in a GemmWorkspace, allocated per
// call when none is given.
//
// Errors (checked before anything is written): kInvalidArgument (empty weights, null data, Y
// overlapping X, the bias or the weights, rows of Y overlapping each other), kShapeMismatch
// (x.cols() != in_features, y.rows() != x.rows(), y.cols() != out_features, bias not
// 1 × out_features), and the views' own kInvalidArgument / kOverflow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "lowbit/cpu.hpp"
#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/int8_gemm/avx2.hpp"
#include "lowbit/detail/kernels/int8_gemm/avx512_vnni.hpp"
#include "lowbit/detail/kernels/int8_gemm/avx_vnni.hpp"
#include "lowbit/detail/kernels/int8_gemm/neon.hpp"
#include "lowbit/detail/kernels/int8_gemm/neon_dotprod.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"
#include "lowbit/detail/kernels/int8_gemm/reference.hpp"
#include "lowbit/detail/kernels/int8_gemm/sse41.hpp"
#include "lowbit/detail/kernels/quantize_activations/avx2.hpp"
#include "lowbit/detail/kernels/quantize_activations/neon.hpp"
#include "lowbit/detail/kernels/quantize_activations/reference.hpp"
#include "lowbit/detail/validate.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/format/interleaved.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

namespace detail {
namespace int8_gemm {
struct WorkspaceAccess;
}  // namespace int8_gemm
}  // namespace detail

// Scratch memory of gemm(): the quantized activations. Reusing one across calls (per thread that
// calls gemm) avoids an allocation per call; it only grows.
class GemmWorkspace {
 public:
  std::size_t capacity_bytes() const noexcept {
    return sizeof(detail::quantize_activations::ActivationBlock) * blocks_.capacity() +
           sizeof(float) * (bias_.capacity() + row_.capacity());
  }

 private:
  friend struct detail::int8_gemm::WorkspaceAccess;
  std::vector<detail::quantize_activations::ActivationBlock> blocks_;  // tokens × K/32
  std::vector<float> bias_;  // a bias with a column stride other than 1, made contiguous
  std::vector<float> row_;   // a row of X with a column stride other than 1, made contiguous
};

struct GemmOptions {
  // Empty, or 1 × out_features values added to every token's outputs (lowbit::flat(b, out)).
  MatrixView<const float> bias{};
  // Scratch memory to reuse; nullptr allocates per call.
  GemmWorkspace* workspace = nullptr;
};

namespace detail {
namespace int8_gemm {

// gemm()'s view of the workspace.
struct WorkspaceAccess {
  static std::vector<ActivationBlock>& blocks(GemmWorkspace& w) noexcept { return w.blocks_; }
  static std::vector<float>& bias(GemmWorkspace& w) noexcept { return w.bias_; }
  static std::vector<float>& row(GemmWorkspace& w) noexcept { return w.row_; }
};

using QuantizeRow = void(const float* x, std::int64_t k, ActivationBlock* blocks);

inline const KernelTable<QuantizeRow>& quantize_table() noexcept {
  static const KernelTable<QuantizeRow> table = [] {
    KernelTable<QuantizeRow> t;
    t.set(Isa::kScalar, &quantize_activations::reference::quantize_row);
#if defined(LOWBIT_HAVE_X86_KERNELS)
    t.set(Isa::kAvx2, &quantize_activations::avx2::quantize_row);
#endif
#if defined(LOWBIT_HAVE_ARM_KERNELS)
    t.set(Isa::kNeon, &quantize_activations::neon::quantize_row);
#endif
    return t;
  }();
  return table;
}

template <class F>
KernelTable<Kernel> make_table() noexcept {
  KernelTable<Kernel> t;
  t.set(Isa::kScalar, &reference::gemm);
#if defined(LOWBIT_HAVE_X86_KERNELS)
  t.set(Isa::kSse41, &sse41::gemm<F>);
  t.set(Isa::kAvx2, &avx2::gemm<F>);
  t.set(Isa::kAvxVnni, &avx_vnni::gemm<F>);
  t.set(Isa::kAvx512Vnni, &avx512_vnni::gemm<F>);
#endif
#if defined(LOWBIT_HAVE_ARM_KERNELS)
  t.set(Isa::kNeon, &neon::gemm<F>);
#endif
#if defined(LOWBIT_HAVE_ARM_DOTPROD_KERNELS)
  t.set(Isa::kNeonDotprod, &neon_dotprod::gemm<F>);
#endif
  return t;
}

template <class F>
const KernelTable<Kernel>& table() noexcept {
  static const KernelTable<Kernel> t = make_table<F>();
  return t;
}

// The kernel for weights of format index `format` (format_index()) on `isa`.
inline Kernel* select_kernel(int format, Isa isa) noexcept {
  switch (format) {
    case 0:
      return table<FormatQ4_0>().lookup(isa);
    case 1:
      return table<FormatQ4_1>().lookup(isa);
    case 2:
      return table<FormatIq4Nl>().lookup(isa);
    case 3:
      return table<FormatQ8_0>().lookup(isa);
    case 4:
      return table<FormatU4Sym>().lookup(isa);
    case 5:
      return table<FormatU4Asym>().lookup(isa);
    case 6:
      return table<FormatS8Sym>().lookup(isa);
    case 7:
      return table<FormatS8Asym>().lookup(isa);
    case 8:
      return table<FormatQ4_K>().lookup(isa);
    default:
      return nullptr;
  }
}

}  // namespace int8_gemm
}  // namespace detail

// Y = X · Wᵀ (+ bias), X [tokens × in_features], Y [tokens × out_features]; see the header comment.
inline Status gemm(const InterleavedWeights& w, MatrixView<const float> x, MatrixView<float> y,
                   Executor& executor, const GemmOptions& options = {}) {
  namespace ig = detail::int8_gemm;
  if (w.empty()) return {Errc::kInvalidArgument, "gemm: empty weights"};
  LOWBIT_TRY(x.validate());
  LOWBIT_TRY(y.validate());
  if (x.cols() != w.cols())
    return {Errc::kShapeMismatch, "gemm: x.cols() must equal the weights' in_features"};
  if (y.rows() != x.rows())
    return {Errc::kShapeMismatch, "gemm: y.rows() must equal x.rows() (tokens)"};
  if (y.cols() != w.rows())
    return {Errc::kShapeMismatch, "gemm: y.cols() must equal the weights' out_features"};
  const MatrixView<const float>& bias = options.bias;
  const bool has_bias = detail::has_bias(bias);
  LOWBIT_TRY(detail::check_bias(bias, w.rows(), "gemm: bias must be 1 × out_features"));
  if (x.rows() == 0) return {};
  // Y is written while X, the bias and the weights are read, and its elements must be distinct.
  LOWBIT_TRY(detail::check_distinct_elements(y, "gemm: elements of y overlap each other"));
  if (detail::overlaps(y, x)) return {Errc::kInvalidArgument, "gemm: y overlaps x"};
  const auto codes = reinterpret_cast<std::uintptr_t>(w.codes());
  if (detail::overlaps(y, codes, codes + w.span_bytes()))
    return {Errc::kInvalidArgument, "gemm: y overlaps the weights"};
  if (has_bias && detail::overlaps(y, bias))
    return {Errc::kInvalidArgument, "gemm: y overlaps the bias"};
  const int format = ig::format_index(w);
  if (format < 0) return {Errc::kUnsupported, "gemm: unknown interleaved weight format"};

  const Isa isa = detail::dispatch_isa();
  ig::Kernel* kernel = ig::select_kernel(format, isa);
  ig::QuantizeRow* quantize = ig::quantize_table().lookup(isa);

  GemmWorkspace local;
  GemmWorkspace& ws = options.workspace != nullptr ? *options.workspace : local;
  using access = ig::WorkspaceAccess;
  const std::int64_t tokens = x.rows(), k = x.cols(), blocks = w.k_blocks();
  access::blocks(ws).resize(static_cast<std::size_t>(tokens * blocks));

  const float* bias_data = nullptr;
  if (has_bias) {
    if (bias.col_stride() == 1 || bias.cols() == 1) {
      bias_data = bias.data();
    } else {
      std::vector<float>& copy = access::bias(ws);
      copy.resize(static_cast<std::size_t>(bias.cols()));
      for (std::int64_t i = 0; i < bias.cols(); ++i) copy[static_cast<std::size_t>(i)] = bias(0, i);
      bias_data = copy.data();
    }
  }
  const ig::Problem p = ig::make_problem(w, access::blocks(ws).data(), tokens, y, bias_data);

  // Activations: a task per token (contiguous rows are read in place).
  ig::ActivationBlock* xq = access::blocks(ws).data();
  if (x.col_stride() == 1) {
    executor.parallel_for(tokens, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t t = begin; t < end; ++t) quantize(&x(t, 0), k, xq + t * blocks);
    });
  } else {
    std::vector<float>& row = access::row(ws);
    row.resize(static_cast<std::size_t>(k));
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (std::int64_t c = 0; c < k; ++c) row[static_cast<std::size_t>(c)] = x(t, c);
      quantize(row.data(), k, xq + t * blocks);
    }
  }
  executor.parallel_for(w.row_blocks(),
                        [&](std::int64_t begin, std::int64_t end) { kernel(p, begin, end); });
  return {};
}

// The same on the calling thread.
inline Status gemm(const InterleavedWeights& w, MatrixView<const float> x, MatrixView<float> y,
                   const GemmOptions& options = {}) {
  SerialExecutor serial;
  return gemm(w, x, y, serial, options);
}

}  // namespace lowbit
