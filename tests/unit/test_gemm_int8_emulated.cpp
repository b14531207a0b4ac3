// The AVX-VNNI and AVX-512 VNNI int8 GEMM kernels, run on any AVX2 machine.
//
// This CPU (and most CI runners) lacks VNNI, so the dispatch test in test_gemm_int8.cpp cannot
// reach those paths. Their headers can be compiled in an emulation mode instead
// (LOWBIT_INT8_GEMM_EMULATE_VNNI, LOWBIT_INT8_GEMM_EMULATE_AVX512_VNNI): the same kernel source,
// targeted at AVX2, in namespaces avx_vnni_emulated / avx512_vnni_emulated, with vpdpbusd
// emulated exactly and each zmm a pair of ymm. Everything except the VNNI/AVX-512 instructions
// themselves — loop structure, register tiles, the +128 operand offsets and their zero-point
// corrections, group and min handling, tails and stores — is then checked against the scalar
// reference, bit for bit. (This file must not include lowbit/gemm.hpp: the headers are included
// once per translation unit, here in their emulated form.)
#define LOWBIT_INT8_GEMM_EMULATE_VNNI 1
#define LOWBIT_INT8_GEMM_EMULATE_AVX512_VNNI 1

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lowbit/cpu.hpp"
#include "lowbit/detail/kernels/int8_gemm/avx512_vnni.hpp"
#include "lowbit/detail/kernels/int8_gemm/avx_vnni.hpp"
#include "lowbit/detail/kernels/int8_gemm/problem.hpp"
#include "lowbit/detail/kernels/int8_gemm/reference.hpp"
#include "lowbit/detail/kernels/quantize_activations/reference.hpp"
#include "lowbit/format/ggml/iq4.hpp"
#include "lowbit/format/ggml/k_quants.hpp"
#include "lowbit/format/ggml/legacy.hpp"
#include "lowbit/format/interleaved.hpp"
#include "lowbit/quantized_tensor.hpp"
#include "lowbit/quantizer.hpp"
#include "support/random.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace {

namespace ggml = lowbit::ggml;
namespace ig = lowbit::detail::int8_gemm;
using lowbit::Isa;

constexpr std::uint32_t kSeed = 7071;

template <class Block>
lowbit::InterleavedWeights ggml_weights(std::int64_t rows, std::int64_t cols, std::uint32_t seed,
                                        float mean = 0.0f) {
  const std::vector<float> x = lowbit_test::gaussian(rows * cols, 0.3f, seed, mean);
  std::vector<Block> blocks(
      static_cast<std::size_t>(rows * cols / ggml::FormatTraits<Block>::kBlockSize));
  REQUIRE(ggml::quantize_rows<Block>(lowbit::row_major(x.data(), rows, cols), blocks.data()).ok());
  lowbit::Result<lowbit::InterleavedWeights> w =
      lowbit::interleave_weights(blocks.data(), rows, cols);
  REQUIRE(w.has_value());
  return std::move(*w);
}

template <class Q>
lowbit::InterleavedWeights lowbit_weights(std::int64_t rows, std::int64_t cols,
                                          std::uint32_t seed) {
  const std::vector<float> x = lowbit_test::gaussian(rows * cols, 0.1f, seed, 0.03f);
  lowbit::Result<lowbit::QuantizedTensor<Q>> q =
      Q::quantize(lowbit::row_major(x.data(), rows, cols));
  REQUIRE(q.has_value());
  lowbit::Result<lowbit::InterleavedWeights> w = lowbit::interleave_weights(*q);
  REQUIRE(w.has_value());
  return std::move(*w);
}

using W4Asym128 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
using W4Sym64 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, lowbit::PerGroup<64>>;
using W8Sym32 =
    lowbit::Quantizer<lowbit::Bits<8>, lowbit::SymmetricRestricted, lowbit::PerGroup<32>>;
using W8Asym128 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerGroup<128>>;

// One matrix per kernel format (all nine combinations of format/interleaved.hpp; Q4_K only when
// cols is a multiple of its 256-value super-block).
std::vector<lowbit::InterleavedWeights> all_formats(std::int64_t rows, std::int64_t cols) {
  std::vector<lowbit::InterleavedWeights> v;
  v.push_back(ggml_weights<ggml::BlockQ4_0>(rows, cols, kSeed + 1));
  v.push_back(ggml_weights<ggml::BlockQ4_1>(rows, cols, kSeed + 2, 0.5f));
  v.push_back(ggml_weights<ggml::BlockIQ4_NL>(rows, cols, kSeed + 3));
  v.push_back(ggml_weights<ggml::BlockQ8_0>(rows, cols, kSeed + 4));
  v.push_back(lowbit_weights<W4Sym64>(rows, cols, kSeed + 5));
  v.push_back(lowbit_weights<W4Asym128>(rows, cols, kSeed + 6));
  v.push_back(lowbit_weights<W8Sym32>(rows, cols, kSeed + 7));
  v.push_back(lowbit_weights<W8Asym128>(rows, cols, kSeed + 8));
  if (cols % 256 == 0) v.push_back(ggml_weights<ggml::BlockQ4_K>(rows, cols, kSeed + 9, 0.5f));
  return v;
}

enum class Path { kReference, kAvxVnni, kAvx512Vnni };

template <class F>
ig::Kernel* kernel_for(Path path) {
  switch (path) {
    case Path::kAvxVnni:
      return &ig::avx_vnni_emulated::gemm<F>;
    case Path::kAvx512Vnni:
      return &ig::avx512_vnni_emulated::gemm<F>;
    default:
      return &ig::reference::gemm;
  }
}

ig::Kernel* select(int format, Path path) {
  switch (format) {
    case 0:
      return kernel_for<ig::FormatQ4_0>(path);
    case 1:
      return kernel_for<ig::FormatQ4_1>(path);
    case 2:
      return kernel_for<ig::FormatIq4Nl>(path);
    case 3:
      return kernel_for<ig::FormatQ8_0>(path);
    case 4:
      return kernel_for<ig::FormatU4Sym>(path);
    case 5:
      return kernel_for<ig::FormatU4Asym>(path);
    case 6:
      return kernel_for<ig::FormatS8Sym>(path);
    case 7:
      return kernel_for<ig::FormatS8Asym>(path);
    case 8:
      return kernel_for<ig::FormatQ4_K>(path);
    default:
      return nullptr;
  }
}

// y (tokens × rows, padded rows, optional bias) for quantized activations x, on `path`, with the
// row blocks split into two task ranges as a 2-thread executor would.
std::vector<float> run(const lowbit::InterleavedWeights& w,
                       const std::vector<ig::ActivationBlock>& x, std::int64_t tokens, Path path,
                       const float* bias, bool column_major) {
  const std::int64_t stride = w.rows() + 3;
  std::vector<float> y(static_cast<std::size_t>(tokens * stride), -3.0f);
  const lowbit::MatrixView<float> yv =
      column_major ? lowbit::MatrixView<float>(y.data(), tokens, w.rows(), 1, tokens)
                   : lowbit::strided_rows(y.data(), tokens, w.rows(), stride);
  const ig::Problem p = ig::make_problem(w, x.data(), tokens, yv, bias);
  ig::Kernel* kernel = select(ig::format_index(w), path);
  REQUIRE(static_cast<bool>(kernel != nullptr));
  const std::int64_t split = w.row_blocks() / 2;
  kernel(p, 0, split);
  kernel(p, split, w.row_blocks());
  return y;
}

// Bitwise, except that any NaN equals any NaN (the payload of a NaN produced from a NaN input is
// the hardware's or libm's choice, not part of the contract).
int bit_mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  int wrong = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    std::uint32_t ua, ub;
    std::memcpy(&ua, &a[i], 4);
    std::memcpy(&ub, &b[i], 4);
    wrong += ua != ub;
  }
  return wrong;
}

}  // namespace

TEST_CASE("int8 gemm, emulated AVX-VNNI and AVX-512 VNNI kernels equal the reference bit for bit") {
  if (!lowbit::isa_supported(Isa::kAvx2)) {
    MESSAGE("no AVX2 on this CPU: the emulated VNNI kernels are not tested here");
    return;
  }
  struct Shape {
    std::int64_t rows, cols;
  };
  const Shape shapes[] = {{7, 128}, {33, 256}, {48, 384}, {7, 512}};
  std::uint32_t seed = kSeed;
  for (const Shape& s : shapes) {
    const std::vector<float> bias = lowbit_test::gaussian(s.rows, 1.0f, seed++);
    for (const lowbit::InterleavedWeights& w : all_formats(s.rows, s.cols)) {
      for (std::int64_t tokens : {1, 2, 3, 4, 5, 8, 9, 13, 17}) {
        std::vector<float> x = lowbit_test::gaussian(tokens * s.cols, 1.0f, seed++);
        if (tokens == 9) x[static_cast<std::size_t>(4 * s.cols + 33)] = NAN;  // a NaN token
        std::vector<ig::ActivationBlock> q(static_cast<std::size_t>(tokens * w.k_blocks()));
        for (std::int64_t t = 0; t < tokens; ++t)
          lowbit::detail::quantize_activations::reference::quantize_row(
              x.data() + t * s.cols, s.cols, q.data() + t * w.k_blocks());
        const float* b = tokens % 2 ? bias.data() : nullptr;
        const bool column_major = tokens == 5;
        INFO(std::string(w.format_name()), " ", s.rows, "x", s.cols, ", tokens ", tokens);
        const std::vector<float> want = run(w, q, tokens, Path::kReference, b, column_major);
        CHECK(bit_mismatches(run(w, q, tokens, Path::kAvxVnni, b, column_major), want) == 0);
        CHECK(bit_mismatches(run(w, q, tokens, Path::kAvx512Vnni, b, column_major), want) == 0);
      }
    }
  }
}

#endif  // LOWBIT_HAVE_X86_KERNELS
