// Tests for lowbit/dequant_gemm.hpp: Y = X * W^T (+ bias) with quantized W and fp32 X.
//
// What is checked, and against what:
//   1. The scalar path (the oracle of the others) equals, bit for bit, float32's rounding of the
//      double-precision dot product of the dequantized weights with x (plus the bias), summed in
//      increasing k: the weights dequantized by lowbit's byte-exact dequantizers (ggml formats,
//      packed codes) for matrices made with lowbit's own quantizers, and by ggml itself (the
//      `.deq.f32` oracle files of tests/data/ggml, see its README) for ggml's own blocks.
//   2. Every SIMD path this CPU runs stays within the bound derived below of the scalar path, for
//      every format, odd shapes (rows that are no multiple of the row blocks, K of one block and
//      of several, N = 1, 2, 3, 4, 5, 17), strided and unaligned X and Y, and a bias.
//   3. ThreadPool(2) and ThreadPool(3) give the serial result bit for bit on every path.
//   4. NaN in one token's activations makes that token's outputs NaN and changes nothing else.
//   5. Every error path returns its Status, writing nothing.
//
// The bound (SIMD path vs scalar path). Let s = sum_k w_k x_k exactly and M = sum_k |w_k x_k|
// (+ |bias|). The scalar path returns fl32(s + e_d), |e_d| <= K 2^-53 M (double sums of exact
// products), so it is within u M + K 2^-53 M of s, u = 2^-24. A SIMD path forms each product
// w_k x_k (or q_k x_k, scaled later) and adds it into a float32 partial sum; through lane
// accumulators, per-block scaling, the sum over blocks, the horizontal reduction and the bias,
// one term meets at most D <= K + 16 roundings, each of relative size <= u. Higham's bound for
// any summation order (Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 4.4, with an
// FMA counting as one rounding) gives |y_simd - s| <= gamma_D M, gamma_D = D u / (1 - D u). So
//
//   |y_simd - y_scalar| <= (gamma_{K+16} + u + K 2^-53) M  <=  (K + 32) u M    for K u < 2^-8.
//
// Kernels that take a block's offset out of the per-element work (on AVX2: Q4_0 as
// d (sum q x - 8 sum x), Q6_K, Q4_K as (d sc_j) sum q x - (dmin m_j) sum x, and the packed
// codes as s (sum u x - z sum x)) add terms of magnitude |o_k| |x_k| and |w_k + o_k| |x_k| <=
// (|w_k| + |o_k|) |x_k|, so M uses (|w_k| + 2 |o_k|) |x_k| with o_k the element's offset (8 d,
// 32 d sc_j, dmin m_j, s z). A single wrong code moves a result by about M / K, at least 15 times
// the bound (K + 32) u M for every K used here (K <= 1056).
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "lowbit/cpu.hpp"
#include "lowbit/dequant_gemm.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/format/ggml.hpp"
#include "lowbit/format/packed_matrix.hpp"
#include "lowbit/quantizer.hpp"
#include "support/random.hpp"
#include "support/raw.hpp"

namespace {

using lowbit::Errc;
using lowbit::Isa;
using lowbit::Status;
using lowbit::WeightsView;
using lowbit::io::GgmlType;
namespace ggml = lowbit::ggml;

constexpr std::uint32_t kSeed = 20250505;
constexpr float kU = 0x1p-24f;

// A weight matrix under test: its view, the bytes it points into, and its exact dequantization.
struct Weights {
  std::string name;
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint8_t> bytes;  // ggml blocks or an LBPM buffer (the view points into it)
  std::vector<float> dequantized;   // rows x cols, the dequantizer's floats
  std::vector<float> offsets;       // rows x cols, |o_k| of the bound (zeros: no offset form)
  WeightsView view;
};

// ---- ggml matrices ------------------------------------------------------------------------------

template <class Block>
GgmlType type_of() {
  return static_cast<GgmlType>(ggml::FormatTraits<Block>::kGgmlType);
}

// |offset| per element for the formats whose fused kernels factor a per-block offset out
// (Q4_0: 8 d; Q6_K: 32 d sc_j; Q4_K/Q5_K: dmin m_j), read from the blocks with the formats'
// own helpers.
template <class Block>
void fill_offsets(Weights& w) {
  w.offsets.assign(w.dequantized.size(), 0.0f);
  constexpr std::int64_t kBlock = ggml::FormatTraits<Block>::kBlockSize;
  const std::int64_t per_row = w.cols / kBlock;
  for (std::int64_t r = 0; r < w.rows; ++r) {
    for (std::int64_t b = 0; b < per_row; ++b) {
      Block blk;
      std::memcpy(&blk, w.bytes.data() + (r * per_row + b) * sizeof(Block), sizeof(Block));
      float* o = w.offsets.data() + r * w.cols + b * kBlock;
      if constexpr (std::is_same<Block, ggml::BlockQ4_0>::value) {
        for (int i = 0; i < 32; ++i) o[i] = 8.0f * std::fabs(lowbit::to_float(blk.d));
      } else if constexpr (std::is_same<Block, ggml::BlockQ6_K>::value) {
        for (int i = 0; i < 256; ++i)
          o[i] =
              32.0f * std::fabs(lowbit::to_float(blk.d) * static_cast<float>(blk.scales[i / 16]));
      } else if constexpr (std::is_same<Block, ggml::BlockQ4_K>::value ||
                           std::is_same<Block, ggml::BlockQ5_K>::value) {
        for (int j = 0; j < 8; ++j) {
          int sc = 0, m = 0;
          ggml::detail::kquant::unpack_k4_scale(blk.scales, j, &sc, &m);
          for (int i = 0; i < 32; ++i)
            o[32 * j + i] = std::fabs(lowbit::to_float(blk.dmin) * static_cast<float>(m));
        }
      }
    }
  }
}

template <class Block>
Weights from_ggml_bytes(std::string name, std::vector<std::uint8_t> bytes, std::int64_t rows,
                        std::int64_t cols) {
  Weights w;
  w.name = std::move(name);
  w.rows = rows;
  w.cols = cols;
  w.bytes = std::move(bytes);
  w.dequantized.resize(static_cast<std::size_t>(rows * cols));
  std::vector<Block> blocks(w.bytes.size() / sizeof(Block));
  std::memcpy(blocks.data(), w.bytes.data(), w.bytes.size());
  REQUIRE(ggml::FormatTraits<Block>::dequantize(blocks.data(), rows * cols, w.dequantized.data()));
  fill_offsets<Block>(w);
  lowbit::Result<WeightsView> v =
      WeightsView::ggml(type_of<Block>(), w.bytes.data(), w.bytes.size(), rows, cols);
  REQUIRE(v);
  w.view = *v;
  return w;
}

// Gaussian weights (sigma 0.05, a few larger values) quantized by lowbit's ggml quantizer.
template <class Block>
Weights make_ggml(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::vector<float> x = lowbit_test::gaussian(rows * cols, 0.05f, seed);
  for (std::size_t i = 0; i < x.size(); i += 97) x[i] *= 6.0f;
  std::vector<Block> blocks(
      static_cast<std::size_t>(rows * cols / ggml::FormatTraits<Block>::kBlockSize));
  REQUIRE(ggml::quantize_rows(lowbit::row_major<const float>(x.data(), rows, cols), blocks.data()));
  std::vector<std::uint8_t> bytes(blocks.size() * sizeof(Block));
  std::memcpy(bytes.data(), blocks.data(), bytes.size());
  return from_ggml_bytes<Block>(ggml::FormatTraits<Block>::kName, std::move(bytes), rows, cols);
}

// F32 has no FormatTraits: its rows are the floats.
Weights make_f32(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  Weights w;
  w.name = "f32";
  w.rows = rows;
  w.cols = cols;
  w.dequantized = lowbit_test::gaussian(rows * cols, 0.05f, seed);
  w.offsets.assign(w.dequantized.size(), 0.0f);
  w.bytes.resize(w.dequantized.size() * 4);
  std::memcpy(w.bytes.data(), w.dequantized.data(), w.bytes.size());
  lowbit::Result<WeightsView> v =
      WeightsView::ggml(GgmlType::kF32, w.bytes.data(), w.bytes.size(), rows, cols);
  REQUIRE(v);
  w.view = *v;
  return w;
}

// ---- lowbit packed matrices ---------------------------------------------------------------------

// Q quantizes; the view is made from the LBPM bytes (parse_packed_matrix: packed zero points,
// little-endian scales read in place) when `lbpm`, else from the QuantizedTensor itself (int32
// zero points). The tensor is kept alive by the caller's Packed holder below.
template <class Q>
struct Packed {
  Weights w;
  std::vector<lowbit::QuantizedTensor<Q>> keep;  // 0 or 1 element: owns what a tensor view reads
};

template <class Q>
Packed<Q> make_packed(std::int64_t rows, std::int64_t cols, std::uint32_t seed, bool lbpm,
                      const typename Q::granularity& g = {}) {
  Packed<Q> out;
  Weights& w = out.w;
  w.rows = rows;
  w.cols = cols;
  const std::vector<float> x = lowbit_test::gaussian(rows * cols, 0.05f, seed, 0.01f);
  lowbit::Result<lowbit::QuantizedTensor<Q>> t =
      Q::quantize(lowbit::row_major(x.data(), rows, cols), g);
  REQUIRE(t);
  w.dequantized.resize(static_cast<std::size_t>(rows * cols));
  REQUIRE(t->dequantize(lowbit::row_major(w.dequantized.data(), rows, cols)));
  // The GEMV's offset form: sum (u - z') x with z' the zero point (asymmetric) or 2^(b-1)
  // (signed codes, sign bit flipped); |offset| = scale * z' for the bound.
  w.offsets.resize(w.dequantized.size());
  const lowbit::BlockShape block = g.block(rows, cols);
  const lowbit::BlockShape grid = lowbit::param_grid(g, rows, cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t k = 0; k < cols; ++k) {
      const std::size_t i = static_cast<std::size_t>((r / block.rows) * grid.cols + k / block.cols);
      const float z = Q::kCodes.min < 0 ? static_cast<float>(1 << (Q::kBits - 1))
                                        : static_cast<float>(t->params().zero_point[i]);
      w.offsets[static_cast<std::size_t>(r * cols + k)] = t->params().scale[i] * z;
    }
  }
  w.name = "packed b" + std::to_string(Q::kBits) + (Q::kCodes.min < 0 ? " sym" : " asym") +
           (lbpm ? " lbpm" : " tensor");
  if (lbpm) {
    lowbit::Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(*t);
    REQUIRE(bytes);
    w.bytes = *bytes;
    lowbit::Result<lowbit::PackedMatrixView> pv =
        lowbit::parse_packed_matrix(w.bytes.data(), w.bytes.size());
    REQUIRE(pv);
    lowbit::Result<WeightsView> v = WeightsView::packed(*pv);
    REQUIRE(v);
    w.view = *v;
  } else {
    out.keep.push_back(std::move(*t));
    lowbit::Result<WeightsView> v = WeightsView::packed(out.keep.front());
    REQUIRE(v);
    w.view = *v;
  }
  return out;
}

// ---- products -----------------------------------------------------------------------------------

struct Activations {
  std::int64_t tokens = 0, cols = 0, stride = 0, offset = 0;
  std::vector<float> storage;
  lowbit::MatrixView<const float> view() const {
    return lowbit::strided_rows<const float>(storage.data() + offset, tokens, cols, stride);
  }
  float at(std::int64_t t, std::int64_t k) const {
    return storage[static_cast<std::size_t>(offset + t * stride + k)];
  }
};

// N(0, 1) activations with a few large ones; rows `pad` floats apart beyond cols, starting
// `offset` floats into the buffer (offset 1: every row unaligned).
Activations make_x(std::int64_t tokens, std::int64_t cols, std::uint32_t seed, std::int64_t pad = 0,
                   std::int64_t offset = 0) {
  Activations a;
  a.tokens = tokens;
  a.cols = cols;
  a.stride = cols + pad;
  a.offset = offset;
  a.storage = lowbit_test::gaussian(offset + tokens * a.stride, 1.0f, seed);
  for (std::size_t i = 0; i < a.storage.size(); i += 61) a.storage[i] *= 8.0f;
  return a;
}

std::vector<float> make_bias(std::int64_t n, std::uint32_t seed) {
  return lowbit_test::gaussian(n, 0.5f, seed);
}

// Y (tokens x rows, row stride rows + ypad) from the current ISA; the returned vector is Y's
// storage. Any Status other than ok fails the test.
std::vector<float> product(const Weights& w, const Activations& x, const std::vector<float>* bias,
                           lowbit::Executor* executor = nullptr, std::int64_t ypad = 0) {
  const std::int64_t ys = w.rows + ypad;
  std::vector<float> y(static_cast<std::size_t>(x.tokens * ys), -12345.0f);
  lowbit::DequantGemmOptions options;
  if (bias != nullptr) options.bias = lowbit::flat<const float>(bias->data(), w.rows);
  const lowbit::MatrixView<float> yv = lowbit::strided_rows(y.data(), x.tokens, w.rows, ys);
  const Status s = executor != nullptr
                       ? lowbit::dequant_gemm(w.view, x.view(), yv, *executor, options)
                       : lowbit::dequant_gemm(w.view, x.view(), yv, options);
  INFO(s.message());
  REQUIRE(s.ok());
  return y;
}

// The oracle: float32's rounding of the double dot of the dequantized weights, k increasing.
std::vector<float> expected(const Weights& w, const Activations& x,
                            const std::vector<float>* bias) {
  std::vector<float> y(static_cast<std::size_t>(x.tokens * w.rows));
  for (std::int64_t t = 0; t < x.tokens; ++t) {
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double s = 0.0;
      for (std::int64_t k = 0; k < w.cols; ++k)
        s += static_cast<double>(w.dequantized[static_cast<std::size_t>(r * w.cols + k)]) *
             static_cast<double>(x.at(t, k));
      const double b =
          bias != nullptr ? static_cast<double>((*bias)[static_cast<std::size_t>(r)]) : 0.0;
      y[static_cast<std::size_t>(t * w.rows + r)] = static_cast<float>(s + b);
    }
  }
  return y;
}

// M of the bound for every output.
std::vector<double> magnitudes(const Weights& w, const Activations& x,
                               const std::vector<float>* bias) {
  std::vector<double> m(static_cast<std::size_t>(x.tokens * w.rows));
  for (std::int64_t t = 0; t < x.tokens; ++t) {
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double s = bias != nullptr ? std::fabs((*bias)[static_cast<std::size_t>(r)]) : 0.0;
      for (std::int64_t k = 0; k < w.cols; ++k) {
        const std::size_t i = static_cast<std::size_t>(r * w.cols + k);
        s += (std::fabs(static_cast<double>(w.dequantized[i])) + 2.0 * w.offsets[i]) *
             std::fabs(x.at(t, k));
      }
      m[static_cast<std::size_t>(t * w.rows + r)] = s;
    }
  }
  return m;
}

// Y's storage (row stride ys) against a dense tokens x rows reference; returns the first
// mismatching index (dense numbering) or -1. bound == nullptr asks for bitwise equality.
std::int64_t first_mismatch(const std::vector<float>& got, std::int64_t ys,
                            const std::vector<float>& want, std::int64_t tokens, std::int64_t rows,
                            const std::vector<double>* m, std::int64_t cols,
                            double* worst = nullptr) {
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const float g = got[static_cast<std::size_t>(t * ys + r)];
      const float e = want[static_cast<std::size_t>(t * rows + r)];
      const std::size_t i = static_cast<std::size_t>(t * rows + r);
      if (m == nullptr) {
        std::uint32_t gb, eb;
        std::memcpy(&gb, &g, 4);
        std::memcpy(&eb, &e, 4);
        if (gb != eb) return static_cast<std::int64_t>(i);
        continue;
      }
      const double allowed = static_cast<double>(cols + 32) * kU * (*m)[i];
      const double diff = std::fabs(static_cast<double>(g) - static_cast<double>(e));
      if (worst != nullptr && allowed > 0) *worst = std::max(*worst, diff / allowed);
      if (!(diff <= allowed)) return static_cast<std::int64_t>(i);
    }
  }
  return -1;
}

// RAII: force an ISA for the scope.
struct ForcedIsa {
  explicit ForcedIsa(Isa isa) { REQUIRE(lowbit::force_isa_for_testing(isa)); }
  ~ForcedIsa() { lowbit::reset_forced_isa(); }
  ForcedIsa(const ForcedIsa&) = delete;
  ForcedIsa& operator=(const ForcedIsa&) = delete;
};

void report_isas_once() {
  static bool done = false;
  if (done) return;
  done = true;
  std::string runnable, skipped;
  const Isa compiled[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon};
  for (Isa isa : compiled)
    (lowbit::isa_supported(isa) ? runnable : skipped) += std::string(" ") + lowbit::isa_name(isa);
  MESSAGE("dequant_gemm paths run here:", runnable,
          "; compiled in but not runnable here:", skipped);
}

const std::int64_t kTokenCounts[] = {1, 2, 3, 4, 5, 17};

// Checks 1 and 2 for one matrix: the scalar path against the double-dot oracle (bitwise), every
// runnable ISA against the scalar path (bound), with a bias and without, every N above.
void check_paths(const Weights& w, std::uint32_t seed) {
  report_isas_once();
  CAPTURE(w.name);
  CAPTURE(w.rows);
  CAPTURE(w.cols);
  const std::vector<float> bias = make_bias(w.rows, seed + 7);
  for (std::int64_t n : kTokenCounts) {
    CAPTURE(n);
    const bool with_bias = n % 2 == 1;
    const std::vector<float>* b = with_bias ? &bias : nullptr;
    const Activations x =
        make_x(n, w.cols, seed + static_cast<std::uint32_t>(n), n == 3 ? 5 : 0, n == 3 ? 1 : 0);
    const std::vector<float> want = expected(w, x, b);
    std::vector<float> scalar;
    {
      ForcedIsa forced(Isa::kScalar);
      scalar = product(w, x, b);
    }
    CHECK(first_mismatch(scalar, w.rows, want, n, w.rows, nullptr, w.cols) == -1);
    const std::vector<double> m = magnitudes(w, x, b);
    for (Isa isa : lowbit::available_isas()) {
      if (isa == Isa::kScalar) continue;
      const std::string isa_label = lowbit::isa_name(isa);
      CAPTURE(isa_label);
      ForcedIsa forced(isa);
      const std::int64_t ypad = n == 5 ? 3 : 0;
      const std::vector<float> got = product(w, x, b, nullptr, ypad);
      double worst = 0;
      const std::int64_t bad =
          first_mismatch(got, w.rows + ypad, scalar, n, w.rows, &m, w.cols, &worst);
      CAPTURE(worst);
      CHECK(bad == -1);
      // Y's padding is never written.
      if (ypad > 0) CHECK(got[static_cast<std::size_t>(w.rows)] == -12345.0f);
    }
  }
}

template <class Q>
void check_packed(std::int64_t rows, std::int64_t cols, std::uint32_t seed, bool lbpm,
                  const typename Q::granularity& g = {}) {
  check_paths(make_packed<Q>(rows, cols, seed, lbpm, g).w, seed);
}

// Shapes: rows 67 (16 GEMV groups of 4 and a tail of 3; one 64-row tile and a partial panel of
// 3), 5 and 1; K of one block and of several: 9 blocks of 32 (one batch of 8 blocks, whose fp16
// scales the SIMD paths convert together, and a single block after it), 2 super-blocks of 256,
// or 203 elements (16-bit rows: not a multiple of any vector width).
template <class Block>
void check_ggml_format(std::uint32_t seed, std::int64_t rows = 67) {
  constexpr std::int64_t kBlock = ggml::FormatTraits<Block>::kBlockSize;
  const std::int64_t one = kBlock == 1 ? 40 : kBlock == 32 ? 32 : 256;
  const std::int64_t several = kBlock == 256 ? 512 : kBlock == 32 ? 288 : 203;
  check_paths(make_ggml<Block>(rows, several, seed), seed);
  check_paths(make_ggml<Block>(5, one, seed + 1), seed + 1);
  check_paths(make_ggml<Block>(1, several, seed + 2), seed + 2);
}

}  // namespace

TEST_CASE(
    "dequant_gemm, ggml formats with fused kernels: scalar = double-dot oracle, SIMD within "
    "bound") {
  check_ggml_format<ggml::BlockQ4_0>(kSeed + 100);
  check_ggml_format<ggml::BlockQ8_0>(kSeed + 200);
  check_ggml_format<ggml::BlockIQ4_NL>(kSeed + 300);
  check_ggml_format<ggml::BlockQ4_K>(kSeed + 400);
  check_ggml_format<ggml::BlockQ6_K>(kSeed + 500);
}

// These share the scalar decoder and the SIMD fp32 code, already taken through the 64-row tile
// above: 21 rows (5 groups of 4 and a tail, a full and a partial 16-row panel) suffice.
// K longer than one GEMM chunk (dequant_gemm/problem.hpp: kChunk = 512): Y carries the partial
// sums from chunk to chunk, and the last chunk is shorter.
TEST_CASE("dequant_gemm, K spanning several GEMM chunks") {
  using namespace lowbit;
  using G = PerGroup<kDynamicGroup>;
  check_paths(make_ggml<ggml::BlockQ4_0>(19, 1056, kSeed + 1800), kSeed + 1800);
  check_paths(make_ggml<ggml::BlockQ6_K>(19, 768, kSeed + 1801), kSeed + 1801);
  check_paths(make_ggml<lowbit::Half>(19, 1030, kSeed + 1802), kSeed + 1802);
  check_packed<Quantizer<Bits<4>, Asymmetric, G>>(19, 640, kSeed + 1803, true, G{128});
}

TEST_CASE("dequant_gemm, the other ggml formats (scalar decoder + SIMD fp32)") {
  check_ggml_format<ggml::BlockQ4_1>(kSeed + 600, 21);
  check_ggml_format<ggml::BlockQ5_0>(kSeed + 700, 21);
  check_ggml_format<ggml::BlockQ5_1>(kSeed + 800, 21);
  check_ggml_format<ggml::BlockQ2_K>(kSeed + 900, 21);
  check_ggml_format<ggml::BlockQ3_K>(kSeed + 1000, 21);
  check_ggml_format<ggml::BlockQ5_K>(kSeed + 1100, 21);
  check_ggml_format<ggml::BlockIQ4_XS>(kSeed + 1200, 21);
  check_ggml_format<ggml::BlockTQ1_0>(kSeed + 1300, 21);
  check_ggml_format<ggml::BlockTQ2_0>(kSeed + 1400, 21);
  check_ggml_format<lowbit::Half>(kSeed + 1500, 21);
  check_ggml_format<lowbit::BFloat16>(kSeed + 1600, 21);
  check_paths(make_f32(21, 203, kSeed + 1700), kSeed + 1700);
}

// 19 rows: 4 GEMV groups of 4 and a tail of 3, a full and a partial 16-row panel (the 64-row
// tile is the ggml cases' business). Each variant is read once from its QuantizedTensor (int32
// zero points) and once from an LBPM buffer (packed zero points, little-endian scales).
TEST_CASE("dequant_gemm, lowbit packed 2/3/4/8-bit, symmetric and asymmetric, groups 32/64/128") {
  using namespace lowbit;
  using G = PerGroup<kDynamicGroup>;
  std::uint32_t seed = kSeed + 2000;
  for (std::int64_t group : {32, 64, 128}) {
    CAPTURE(group);
    // K: 3 groups of 32, or 2 of 128 (4 of 64).
    const std::int64_t cols = group == 32 ? 96 : 256;
    const bool lbpm = group == 64;
    check_packed<Quantizer<Bits<2>, Asymmetric, G>>(19, cols, ++seed, lbpm, G{group});
    check_packed<Quantizer<Bits<2>, Symmetric, G>>(19, cols, ++seed, !lbpm, G{group});
    check_packed<Quantizer<Bits<3>, Asymmetric, G>>(19, cols, ++seed, lbpm, G{group});
    check_packed<Quantizer<Bits<3>, Symmetric, G>>(19, cols, ++seed, !lbpm, G{group});
    check_packed<Quantizer<Bits<4>, Asymmetric, G>>(19, cols, ++seed, lbpm, G{group});
    check_packed<Quantizer<Bits<4>, Symmetric, G>>(19, cols, ++seed, !lbpm, G{group});
    check_packed<Quantizer<Bits<8>, Asymmetric, G>>(19, cols, ++seed, lbpm, G{group});
    check_packed<Quantizer<Bits<8>, Symmetric, G>>(19, cols, ++seed, !lbpm, G{group});
  }
  // One group (K = 32), a single row, and 67 rows (a full 64-row tile) once.
  check_packed<Quantizer<Bits<4>, Asymmetric, G>>(3, 32, ++seed, true, G{32});
  check_packed<Quantizer<Bits<3>, Symmetric, G>>(1, 128, ++seed, false, G{64});
  check_packed<Quantizer<Bits<4>, Asymmetric, G>>(67, 256, ++seed, true, G{128});
}

TEST_CASE("dequant_gemm, packed layouts off the SIMD fast path fall back correctly") {
  using namespace lowbit;
  using G = PerGroup<kDynamicGroup>;
  std::uint32_t seed = kSeed + 3000;
  // One group per row (the per-row layout: fast path), a group of 100 3-bit codes (rows start
  // mid-byte: the scalar decoder), per tensor, per column, and widths without a SIMD decoder.
  check_packed<Quantizer<Bits<4>, Asymmetric, G>>(67, 160, ++seed, true, G{160});
  check_packed<Quantizer<Bits<3>, Asymmetric, G>>(21, 200, ++seed, true, G{100});
  check_packed<Quantizer<Bits<4>, Symmetric, PerTensor>>(20, 64, ++seed, false);
  check_packed<Quantizer<Bits<8>, SymmetricRestricted, PerChannel<1>>>(9, 40, ++seed, true);
  check_packed<Quantizer<Bits<5>, Asymmetric, G>>(19, 96, ++seed, true, G{32});
  check_packed<Quantizer<Bits<6>, Symmetric, G>>(19, 96, ++seed, false, G{48});
}

TEST_CASE("dequant_gemm, an LBPM per-row header reads like one group per row") {
  using namespace lowbit;
  using G = PerGroup<kDynamicGroup>;
  using Q = Quantizer<Bits<4>, Asymmetric, G>;
  Packed<Q> p = make_packed<Q>(9, 96, kSeed + 3100, true, G{96});
  // Same sections; granularity byte 8 = 1 (PerChannel<0>) and group size (bytes 32..39) = 0.
  p.w.bytes[8] = 1;
  for (int i = 32; i < 40; ++i) p.w.bytes[static_cast<std::size_t>(i)] = 0;
  Result<PackedMatrixView> pv = parse_packed_matrix(p.w.bytes.data(), p.w.bytes.size());
  REQUIRE(pv);
  REQUIRE(pv->granularity == PackedGranularity::kPerRow);
  Result<WeightsView> v = WeightsView::packed(*pv);
  REQUIRE(v);
  p.w.view = *v;
  p.w.name = "lbpm per row";
  check_paths(p.w, kSeed + 3101);
}

TEST_CASE("dequant_gemm on ggml's own blocks: scalar path bitwise equal to the oracle's dot") {
  // tests/data/ggml: ggml's reference quantizer output for the 4096-value inputs, read as 16
  // rows of 256, and ggml's own dequantization of it (.deq.f32); x from inputs/outliers.f32.
  struct File {
    const char* type;
    GgmlType id;
    const char* dir;
  };
  const File files[] = {
      {"q4_0", GgmlType::kQ4_0, "ref"},     {"q8_0", GgmlType::kQ8_0, "ref"},
      {"iq4_nl", GgmlType::kIQ4_NL, "ref"}, {"iq4_nl", GgmlType::kIQ4_NL, "chunk"},
      {"q4_K", GgmlType::kQ4_K, "ref"},     {"q6_K", GgmlType::kQ6_K, "ref"},
      {"q4_1", GgmlType::kQ4_1, "ref"},     {"q5_0", GgmlType::kQ5_0, "ref"},
      {"q5_1", GgmlType::kQ5_1, "ref"},     {"q2_K", GgmlType::kQ2_K, "ref"},
      {"q3_K", GgmlType::kQ3_K, "ref"},     {"q5_K", GgmlType::kQ5_K, "ref"},
      {"iq4_xs", GgmlType::kIQ4_XS, "ref"}, {"tq1_0", GgmlType::kTQ1_0, "ref"},
      {"tq2_0", GgmlType::kTQ2_0, "ref"},   {"f16", GgmlType::kF16, "ref"},
      {"bf16", GgmlType::kBF16, "ref"},
  };
  const std::vector<float> xs = lowbit_test::load_f32("ggml/inputs/outliers.f32");
  REQUIRE(xs.size() == 4096);
  for (const char* input : {"weightlike", "mixed_scale"}) {
    for (const File& f : files) {
      const std::string base = std::string("ggml/") + f.dir + "/" + input + "." + f.type;
      CAPTURE(base);
      Weights w;
      w.name = base;
      w.rows = 16;
      w.cols = 256;
      w.bytes = lowbit_test::load_bytes(base + ".bin");
      w.dequantized = lowbit_test::load_f32(base + ".deq.f32");
      REQUIRE(w.dequantized.size() == 4096);
      w.offsets.assign(4096, 0.0f);
      // Offsets for the bound, from the blocks (see fill_offsets).
      if (f.id == GgmlType::kQ4_K)
        w.offsets = from_ggml_bytes<ggml::BlockQ4_K>("", w.bytes, 16, 256).offsets;
      if (f.id == GgmlType::kQ4_0)
        w.offsets = from_ggml_bytes<ggml::BlockQ4_0>("", w.bytes, 16, 256).offsets;
      if (f.id == GgmlType::kQ6_K)
        w.offsets = from_ggml_bytes<ggml::BlockQ6_K>("", w.bytes, 16, 256).offsets;
      lowbit::Result<WeightsView> v =
          WeightsView::ggml(f.id, w.bytes.data(), w.bytes.size(), 16, 256);
      REQUIRE(v);
      w.view = *v;
      Activations x;
      x.tokens = 16;
      x.cols = 256;
      x.stride = 256;
      x.storage = xs;
      for (std::int64_t n : {1, 16}) {
        CAPTURE(n);
        Activations xn = x;
        xn.tokens = n;
        const std::vector<float> want = expected(w, xn, nullptr);
        std::vector<float> scalar;
        {
          ForcedIsa forced(Isa::kScalar);
          scalar = product(w, xn, nullptr);
        }
        CHECK(first_mismatch(scalar, 16, want, n, 16, nullptr, 256) == -1);
        const std::vector<double> m = magnitudes(w, xn, nullptr);
        for (Isa isa : lowbit::available_isas()) {
          if (isa == Isa::kScalar) continue;
          const std::string isa_label = lowbit::isa_name(isa);
          CAPTURE(isa_label);
          ForcedIsa forced(isa);
          CHECK(first_mismatch(product(w, xn, nullptr), 16, want, n, 16, &m, 256) == -1);
        }
      }
    }
  }
}

TEST_CASE("dequant_gemm: ThreadPool(2) and ThreadPool(3) equal the serial result bit for bit") {
  using namespace lowbit;
  using G = PerGroup<kDynamicGroup>;
  // 203 rows: four 64-row tasks, the last partial; 3 threads get unequal shares.
  std::vector<Weights> ws;
  ws.push_back(make_ggml<ggml::BlockQ4_0>(203, 64, kSeed + 4000));
  ws.push_back(make_ggml<ggml::BlockQ4_K>(203, 256, kSeed + 4001));
  ws.push_back(make_ggml<ggml::BlockQ5_1>(203, 64, kSeed + 4002));
  Packed<Quantizer<Bits<3>, Asymmetric, G>> p3 =
      make_packed<Quantizer<Bits<3>, Asymmetric, G>>(203, 128, kSeed + 4003, false, G{64});
  ws.push_back(p3.w);
  ThreadPool two(2), three(3);
  for (const Weights& w : ws) {
    CAPTURE(w.name);
    for (std::int64_t n : {1, 3, 9}) {
      CAPTURE(n);
      const Activations x = make_x(n, w.cols, kSeed + 4010 + static_cast<std::uint32_t>(n));
      const std::vector<float> bias = make_bias(w.rows, kSeed + 4020);
      for (Isa isa : available_isas()) {
        const std::string isa_label = isa_name(isa);
        CAPTURE(isa_label);
        ForcedIsa forced(isa);
        const std::vector<float> serial = product(w, x, &bias);
        CHECK(product(w, x, &bias, &two) == serial);
        CHECK(product(w, x, &bias, &three) == serial);
      }
    }
  }
}

TEST_CASE("dequant_gemm: NaN and Inf in one token's activations stay in that token's outputs") {
  std::vector<Weights> ws;
  ws.push_back(make_ggml<ggml::BlockQ8_0>(70, 64, kSeed + 5000));
  ws.push_back(make_ggml<ggml::BlockQ6_K>(70, 256, kSeed + 5001));
  ws.push_back(make_ggml<ggml::BlockQ3_K>(70, 256, kSeed + 5002));
  for (const Weights& w : ws) {
    CAPTURE(w.name);
    for (std::int64_t n : {2, 3, 7}) {
      CAPTURE(n);
      const Activations clean = make_x(n, w.cols, kSeed + 5010);
      for (float bad :
           {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
        CAPTURE(bad);
        Activations dirty = clean;
        const std::int64_t t_bad = n - 2;
        dirty.storage[static_cast<std::size_t>(t_bad * dirty.stride + 5)] = bad;
        for (lowbit::Isa isa : lowbit::available_isas()) {
          const std::string isa_label = lowbit::isa_name(isa);
          CAPTURE(isa_label);
          ForcedIsa forced(isa);
          const std::vector<float> a = product(w, clean, nullptr);
          const std::vector<float> b = product(w, dirty, nullptr);
          bool others_equal = true, bad_row_nonfinite = true;
          for (std::int64_t t = 0; t < n; ++t) {
            for (std::int64_t r = 0; r < w.rows; ++r) {
              const std::size_t i = static_cast<std::size_t>(t * w.rows + r);
              if (t == t_bad) {
                // x_k = +-Inf: the product is +-Inf unless w_k = 0 (then NaN); NaN stays NaN.
                bad_row_nonfinite = bad_row_nonfinite && !std::isfinite(b[i]);
              } else {
                others_equal = others_equal && std::memcmp(&a[i], &b[i], 4) == 0;
              }
            }
          }
          CHECK(others_equal);
          CHECK(bad_row_nonfinite);
        }
      }
    }
  }
}

TEST_CASE("dequant_gemm: bad arguments are Status values and leave Y untouched") {
  const Weights w = make_ggml<ggml::BlockQ4_0>(8, 64, kSeed + 6000);
  const Activations x = make_x(2, 64, kSeed + 6001);
  std::vector<float> y(16, 7.0f);
  const auto yv = lowbit::row_major(y.data(), 2, 8);
  const auto code = [&](const WeightsView& v, lowbit::MatrixView<const float> xv,
                        lowbit::MatrixView<float> out, const lowbit::DequantGemmOptions& o = {}) {
    return lowbit::dequant_gemm(v, xv, out, o).code();
  };
  CHECK(code(WeightsView{}, x.view(), yv) == Errc::kInvalidArgument);
  CHECK(code(w.view, lowbit::row_major(x.storage.data(), 2, 32), yv) == Errc::kShapeMismatch);
  CHECK(code(w.view, x.view(), lowbit::row_major(y.data(), 1, 8)) == Errc::kShapeMismatch);
  CHECK(code(w.view, x.view(), lowbit::row_major(y.data(), 2, 7)) == Errc::kShapeMismatch);
  CHECK(code(w.view, lowbit::col_major<const float>(x.storage.data(), 2, 64), yv) ==
        Errc::kUnsupported);
  CHECK(code(w.view, x.view(), lowbit::col_major(y.data(), 2, 8)) == Errc::kUnsupported);
  CHECK(code(w.view, x.view(), lowbit::strided_rows(y.data(), 2, 8, 4)) == Errc::kInvalidArgument);
  CHECK(code(w.view, lowbit::MatrixView<const float>(nullptr, 2, 64, 64, 1), yv) ==
        Errc::kInvalidArgument);
  CHECK(code(w.view, lowbit::MatrixView<const float>(x.storage.data(), -1, 64, 64, 1), yv) ==
        Errc::kInvalidArgument);
  lowbit::DequantGemmOptions bad_bias;
  const std::vector<float> bias(8, 1.0f);
  bad_bias.bias = lowbit::flat(bias.data(), 7);
  CHECK(code(w.view, x.view(), yv, bad_bias) == Errc::kShapeMismatch);
  // Y overlapping X, the bias, or the weights.
  std::vector<float> xy(256, 0.5f);
  CHECK(code(w.view, lowbit::row_major<const float>(xy.data(), 2, 64),
             lowbit::row_major(xy.data() + 100, 2, 8)) == Errc::kInvalidArgument);
  lowbit::DequantGemmOptions alias_bias;
  alias_bias.bias = lowbit::flat<const float>(y.data() + 8, 8);
  CHECK(code(w.view, x.view(), yv, alias_bias) == Errc::kInvalidArgument);
  std::vector<std::uint8_t> wbytes = w.bytes;
  lowbit::Result<WeightsView> wv =
      WeightsView::ggml(GgmlType::kQ4_0, wbytes.data(), wbytes.size(), 8, 64);
  REQUIRE(wv);
  CHECK(code(*wv, x.view(), lowbit::row_major(reinterpret_cast<float*>(wbytes.data()), 2, 8)) ==
        Errc::kInvalidArgument);
  for (float v : y) CHECK(v == 7.0f);
  // Zero tokens: nothing to do, and not an error.
  CHECK(code(w.view, lowbit::row_major<const float>(x.storage.data(), 0, 64),
             lowbit::row_major(y.data(), 0, 8)) == Errc::kOk);

  // The factories.
  const std::uint8_t* p = w.bytes.data();
  const std::size_t n = w.bytes.size();
  CHECK(WeightsView::ggml(GgmlType::kQ4_0, p, n - 1, 8, 64).status().code() == Errc::kTruncated);
  CHECK(WeightsView::ggml(GgmlType::kQ4_0, p, n + 1, 8, 64).status().code() ==
        Errc::kShapeMismatch);
  CHECK(WeightsView::ggml(GgmlType::kQ4_0, p, n, 8, 63).status().code() == Errc::kIndivisible);
  CHECK(WeightsView::ggml(GgmlType::kQ4_0, p, n, 0, 64).status().code() == Errc::kInvalidArgument);
  CHECK(WeightsView::ggml(GgmlType::kQ4_0, nullptr, n, 8, 64).status().code() ==
        Errc::kInvalidArgument);
  CHECK(WeightsView::ggml(GgmlType::kQ8_K, p, n, 8, 256).status().code() == Errc::kUnsupported);
  CHECK(WeightsView::ggml(GgmlType::kIQ2_XXS, p, n, 8, 256).status().code() == Errc::kUnsupported);
  CHECK(WeightsView::ggml(GgmlType::kQ4_0, p, n, std::int64_t{1} << 40, std::int64_t{1} << 40)
            .status()
            .code() == Errc::kOverflow);
  lowbit::PackedMatrixView pm;
  CHECK(WeightsView::packed(pm).status().code() == Errc::kInvalidArgument);
  using G = lowbit::PerGroup<lowbit::kDynamicGroup>;
  using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, G>;
  Packed<Q> good = make_packed<Q>(4, 64, kSeed + 6002, false, G{32});
  lowbit::QuantizedTensor<Q> t = good.keep.front();
  t.params().scale[3] = 0.0f;
  CHECK(WeightsView::packed(t).status().code() == Errc::kInvalidArgument);
  t.params().scale[3] = 1.0f;
  t.params().zero_point[2] = 16;
  CHECK(WeightsView::packed(t).status().code() == Errc::kOutOfRange);
}

TEST_CASE("dequant_gemm: the view reports its format, shape and streamed bytes") {
  const Weights w = make_ggml<ggml::BlockQ6_K>(3, 512, kSeed + 7000);
  CHECK(w.view.format() == lowbit::WeightFormat::kQ6_K);
  CHECK(std::string(lowbit::weight_format_name(w.view.format())) == "q6_K");
  CHECK(w.view.rows() == 3);
  CHECK(w.view.cols() == 512);
  CHECK(w.view.size_bytes() == 3 * 2 * 210);
  using G = lowbit::PerGroup<lowbit::kDynamicGroup>;
  using Q = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, G>;
  Packed<Q> p = make_packed<Q>(4, 128, kSeed + 7001, true, G{64});
  CHECK(p.w.view.format() == lowbit::WeightFormat::kPacked);
  CHECK(p.w.view.bits() == 3);
  // 4 x 128 3-bit codes, 8 scales, 8 packed 3-bit zero points.
  CHECK(p.w.view.size_bytes() == 4 * 128 * 3 / 8 + 8 * 4 + 3);
}
