// The int8-activation GEMM (lowbit/gemm.hpp), its activation quantizer and the interleaved weight
// layout (format/interleaved.hpp).
//
//   * activation quantization: every path this CPU runs equals the scalar reference byte for byte
//     (codes, sums) and bit for bit (scales); ties round to even; |x − d·q| ≤ d/2; NaN/Inf and
//     zero/tiny blocks follow the documented rules;
//   * interleaving: the weights the kernels use equal ggml's own dequantization (the oracle files
//     in tests/data/ggml) and lowbit's dequantize(), bit for bit, for every supported source;
//   * GEMM: every path's output equals the scalar reference bit for bit (the integer sums are
//     exact and the float sequence is fixed, detail/kernels/int8_gemm/problem.hpp), over odd shapes,
//     N = 1, 2, 3, 4, 5, 17, strided, unaligned and column-major X, strided Y, bias, 1-3 threads;
//     and the reference is within the bound the activation rounding allows of a double-precision
//     product of independently dequantized weights (derivation at `error_bound`);
//   * NaN and Inf in one token give NaN in that token's outputs only; bad input gives the
//     documented Errc.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lowbit/cpu.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/format/ggml/iq4.hpp"
#include "lowbit/format/ggml/k_quants.hpp"
#include "lowbit/format/ggml/legacy.hpp"
#include "lowbit/format/interleaved.hpp"
#include "lowbit/format/packed_matrix.hpp"
#include "lowbit/gemm.hpp"
#include "lowbit/quantizer.hpp"
#include "support/random.hpp"
#include "support/raw.hpp"

namespace {

namespace ggml = lowbit::ggml;
namespace qa = lowbit::detail::quantize_activations;
using lowbit::Errc;
using lowbit::Isa;
using lowbit_test::load_bytes;

constexpr std::uint32_t kSeed = 20250523;

// Restores automatic dispatch when a test leaves, even on failure.
struct ForcedIsa {
  explicit ForcedIsa(Isa isa) { REQUIRE(lowbit::force_isa_for_testing(isa).ok()); }
  ~ForcedIsa() { lowbit::reset_forced_isa(); }
  ForcedIsa(const ForcedIsa&) = delete;
  ForcedIsa& operator=(const ForcedIsa&) = delete;
};

std::uint32_t bits_of(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

// Paths with int8 kernels compiled for this architecture that this CPU cannot run: printed, so a
// skip is visible.
void report_skipped_isas() {
  static bool reported = false;
  if (reported) return;
  reported = true;
#if defined(LOWBIT_HAVE_X86_KERNELS)
  // (kAvx512 without VNNI has no kernel of its own: it runs the AVX2 one.)
  const Isa compiled[] = {Isa::kSse41, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni};
#elif defined(LOWBIT_HAVE_ARM_KERNELS)
  const Isa compiled[] = {Isa::kNeon, Isa::kNeonDotprod};
#else
  const Isa compiled[] = {Isa::kScalar};
#endif
  for (Isa isa : compiled)
    if (!lowbit::isa_supported(isa))
      MESSAGE("int8 gemm path compiled but not runnable on this CPU (not tested here): "
              << std::string(lowbit::isa_name(isa)));
}

// ---------------------------------------------------------------------------------------------
// The SSE4.1 paths' two emulations: F16C's conversion and the fused multiply-add
// (detail/kernels/sse41_fma.hpp, which the W8A8 SSE4.1 kernel shares)
// ---------------------------------------------------------------------------------------------

#if defined(LOWBIT_HAVE_X86_KERNELS)
namespace sse41 = lowbit::detail::int8_gemm::sse41;

// Wrappers compiled for SSE4.1 (the kernels' helpers inline only into such functions).
LOWBIT_TARGET_SSE41 __attribute__((noinline)) void sse41_halves(const lowbit::Half* h,
                                                                float* out) {
  _mm_storeu_ps(out, sse41::load_params(h));
}
LOWBIT_TARGET_SSE41 __attribute__((noinline)) void emulated_fma(const float* a, const float* b,
                                                               const float* c, float* out) {
  _mm_storeu_ps(out, lowbit::detail::sse41_fma::fma_float(_mm_loadu_ps(a), _mm_loadu_ps(b),
                                                         _mm_loadu_ps(c)));
}

TEST_CASE("int8 gemm sse4.1: half scales convert exactly as lowbit::to_float, all 65536") {
  if (!lowbit::isa_supported(Isa::kSse41)) return;
  for (std::uint32_t first = 0; first < 65536; first += 4) {
    lowbit::Half h[4];
    for (std::uint32_t i = 0; i < 4; ++i) h[i].bits = static_cast<std::uint16_t>(first + i);
    float got[4];
    sse41_halves(h, got);
    for (int i = 0; i < 4; ++i) {
      INFO("half bits ", first + static_cast<std::uint32_t>(i));
      CHECK(bits_of(got[i]) == bits_of(lowbit::to_float(h[i])));
    }
  }
}

TEST_CASE("int8 gemm sse4.1: the emulated fma rounds once, as std::fma") {
  if (!lowbit::isa_supported(Isa::kSse41)) return;
  // Where multiply-then-add in double rounds twice and lands on a float tie: a·b + c =
  // 1 + 2^-24 + 2^-60 exactly, which std::fma rounds up to 1 + 2^-23; the double sum is 1 + 2^-24
  // and would round to even, 1. Then the same mirrored; one whose double sum reaches the tie
  // from above (1 + 2^-22 − 2^-24 − 2^-60: std::fma gives 1 + 2^-23, the tie's even side is
  // 1 + 2^-22); and one far from any tie.
  const float a1 = 1.0f + 0x1p-12f, b1 = 0x1p-24f * (1.0f - 0x1p-12f + 0x1p-24f);
  const float a[4] = {a1, -a1, a1, a1};
  const float b[4] = {b1, b1, -b1, b1};
  const float c[4] = {1.0f, -1.0f, 1.0f + 0x1p-22f, 2.0f};
  float got[4];
  emulated_fma(a, b, c, got);
  CHECK(got[0] == 1.0f + 0x1p-23f);
  CHECK(static_cast<float>(static_cast<double>(a1) * b1 + 1.0) == 1.0f);  // what double gives
  for (int i = 0; i < 4; ++i) CHECK(bits_of(got[i]) == bits_of(std::fma(a[i], b[i], c[i])));

  // Random operands over wide exponent ranges, near-cancellation, integers times scales (the
  // kernel's case), and Inf/NaN/zero/subnormal operands.
  std::mt19937 rng(kSeed + 9);
  std::uniform_int_distribution<int> exponent(-40, 40);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::uniform_int_distribution<int> integer(-4000000, 4000000);
  const auto number = [&] {
    return std::ldexp(mantissa(rng), exponent(rng)) * (rng() % 2 ? 1.0f : -1.0f);
  };
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 1e-40f, -3e-39f, 1.0f};
  int wrong = 0;
  for (int trial = 0; trial < 200000; ++trial) {
    float x[4], y[4], z[4], out[4];
    for (int i = 0; i < 4; ++i) {
      switch (trial % 4) {
        case 0: x[i] = number(), y[i] = number(), z[i] = number(); break;
        case 1:  // c ≈ −a·b
          x[i] = number(), y[i] = number();
          z[i] = -x[i] * y[i] *
                 (1.0f + static_cast<float>(static_cast<int>(rng() % 64) - 32) * 0x1p-23f);
          break;
        case 2:  // the kernel's operands: float(isum) · (d·dx) + acc
          x[i] = static_cast<float>(integer(rng)), y[i] = number() * 0x1p-20f, z[i] = number();
          break;
        default:
          x[i] = specials[rng() % 8], y[i] = number();
          z[i] = rng() % 2 ? specials[rng() % 8] : number();
      }
    }
    emulated_fma(x, y, z, out);
    for (int i = 0; i < 4; ++i) {
      const float want = std::fma(x[i], y[i], z[i]);
      wrong += std::isnan(want) ? !std::isnan(out[i]) : bits_of(out[i]) != bits_of(want);
    }
  }
  CHECK(wrong == 0);
}
#endif

// ---------------------------------------------------------------------------------------------
// Activation quantization
// ---------------------------------------------------------------------------------------------

struct QuantizedRow {
  std::vector<std::int8_t> codes;
  std::vector<float> scale, scaled_sum;
  std::vector<std::int32_t> sum, pad;
};

QuantizedRow quantize_with(lowbit::detail::int8_gemm::QuantizeRow* fn,
                           const std::vector<float>& x) {
  const std::int64_t k = static_cast<std::int64_t>(x.size());
  qa::ActivationBlock junk;
  std::memset(&junk, 0x5A, sizeof junk);
  std::vector<qa::ActivationBlock> blocks(x.size() / 32, junk);
  fn(x.data(), k, blocks.data());
  QuantizedRow q;
  for (const qa::ActivationBlock& b : blocks) {
    q.codes.insert(q.codes.end(), b.q, b.q + 32);
    q.scale.push_back(b.d);
    q.sum.push_back(b.s);
    q.scaled_sum.push_back(b.ds);
    q.pad.push_back(b.pad);
  }
  return q;
}

// A row exercising every rule: ties, zero, tiny and non-finite blocks, subnormals, outliers.
std::vector<float> tricky_activations() {
  std::vector<float> x = lowbit_test::gaussian(32 * 24, 1.0f, kSeed);
  // Block 0: amax 127 makes id exactly 1, so k + 0.5 are exact ties.
  const float ties[8] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f};
  for (int i = 0; i < 32; ++i) x[i] = i < 8 ? ties[i] : 0.25f * static_cast<float>(i % 5);
  x[31] = 127.0f;
  for (int i = 32; i < 64; ++i) x[i] = 0.0f;                             // block 1: zero
  for (int i = 64; i < 96; ++i) x[i] = (i % 2 ? -1.0f : 1.0f) * 1e-38f;  // block 2: subnormal-ish
  x[100] = std::numeric_limits<float>::quiet_NaN();                      // block 3: NaN
  x[140] = std::numeric_limits<float>::infinity();                       // block 4: +Inf
  x[170] = -std::numeric_limits<float>::infinity();                      // block 5: -Inf
  for (int i = 192; i < 224; ++i) x[i] = -0.0f;                          // block 6: -0
  x[230] = 1e30f;                                                        // block 7: outlier
  for (int i = 256; i < 288; ++i) x[i] = 5e-37f * static_cast<float>(i - 255);  // block 8: small
  x[300] = std::numeric_limits<float>::denorm_min();                            // block 9
  return x;
}

TEST_CASE("int8 gemm: activation quantization rules, on the reference") {
  const std::vector<float> x = tricky_activations();
  const QuantizedRow q = quantize_with(&qa::reference::quantize_row, x);
  // Ties to even (values chosen so that x·id is exactly k + 0.5).
  const int expected_ties[8] = {0, 2, 2, 0, -2, -2, 126, -126};
  for (int i = 0; i < 8; ++i) CHECK(q.codes[i] == expected_ties[i]);
  CHECK(q.codes[31] == 127);
  CHECK(q.scale[0] == 1.0f);
  // Zero blocks: scale 0, codes 0.
  for (int b : {1, 6}) {
    CHECK(q.scale[b] == 0.0f);
    CHECK(q.sum[b] == 0);
    for (int i = 0; i < 32; ++i) CHECK(q.codes[32 * b + i] == 0);
  }
  // amax = 1e-38: 127/amax overflows float, so the block counts as zero.
  CHECK(q.scale[2] == 0.0f);
  CHECK(q.scaled_sum[2] == 0.0f);
  // Non-finite blocks: NaN scale, codes 0, sum 0, NaN scaled sum.
  for (int b : {3, 4, 5}) {
    CHECK(std::isnan(q.scale[b]));
    CHECK(std::isnan(q.scaled_sum[b]));
    CHECK(q.sum[b] == 0);
    for (int i = 0; i < 32; ++i) CHECK(q.codes[32 * b + i] == 0);
  }
  // amax 1.6e-35 (block 8) is representable: 127/amax is finite.
  CHECK(q.scale[8] > 0.0f);
  // Every other block: codes in [-127, 127], |x − d·q| ≤ d/2 (plus the float rounding of x·id,
  // at most 127·2^-23 codes), sum and scaled sum consistent.
  for (std::size_t b = 0; b < q.scale.size(); ++b) {
    const float d = q.scale[b];
    if (!(d > 0.0f)) continue;
    std::int32_t total = 0;
    for (int i = 0; i < 32; ++i) {
      const int c = q.codes[32 * b + i];
      CHECK(c >= -127);
      CHECK(c <= 127);
      total += c;
      const double err = std::fabs(static_cast<double>(x[32 * b + i]) - static_cast<double>(d) * c);
      CHECK(err <= static_cast<double>(d) * (0.5 + 127.0 * 0x1p-23) + 1e-45);
    }
    CHECK(q.sum[b] == total);
    CHECK(bits_of(q.scaled_sum[b]) == bits_of(d * static_cast<float>(total)));
    // The scale is amax/127 of the block (computed here independently).
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[32 * b + i]));
    CHECK(bits_of(d) == bits_of(amax / 127.0f));
  }
  // Symmetry: −x gives −codes and the same scales.
  std::vector<float> neg(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) neg[i] = -x[i];
  const QuantizedRow qn = quantize_with(&qa::reference::quantize_row, neg);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(qn.codes[i] == -q.codes[i]);
}

TEST_CASE("int8 gemm: every activation quantizer path equals the reference bit for bit") {
  report_skipped_isas();
  std::vector<std::vector<float>> rows = {tricky_activations()};
  // Many random rows at scales where ties and large outliers occur.
  for (std::uint32_t s = 0; s < 8; ++s) {
    std::vector<float> v = lowbit_test::gaussian(32 * 64, s % 2 ? 3.0f : 0.01f, kSeed + s);
    for (std::size_t i = 0; i < v.size(); i += 97) v[i] *= 50.0f;
    // Quantized inputs: multiples of amax/254 put x·id on exact halves often.
    if (s >= 6)
      for (float& f : v) f = std::nearbyint(f * 20.0f) / 20.0f;
    rows.push_back(v);
  }
  for (Isa isa : lowbit::available_isas()) {
    auto* fn = lowbit::detail::int8_gemm::quantize_table().lookup(isa);
    INFO("isa ", std::string(lowbit::isa_name(isa)));
    for (const std::vector<float>& x : rows) {
      const QuantizedRow want = quantize_with(&qa::reference::quantize_row, x);
      const QuantizedRow got = quantize_with(fn, x);
      int wrong = 0;
      for (std::size_t i = 0; i < x.size(); ++i) wrong += got.codes[i] != want.codes[i];
      for (std::size_t b = 0; b < want.scale.size(); ++b) {
        wrong += bits_of(got.scale[b]) != bits_of(want.scale[b]);
        wrong += got.sum[b] != want.sum[b];
        wrong += bits_of(got.scaled_sum[b]) != bits_of(want.scaled_sum[b]);
        wrong += got.pad[b] != 0;
      }
      CHECK(wrong == 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Weights: builders for every source, with an independent dequantization
// ---------------------------------------------------------------------------------------------

struct Weights {
  lowbit::InterleavedWeights w;
  std::vector<float> deq;  // rows × cols from the source format's own dequantizer
  std::int64_t rows = 0, cols = 0;
};

template <class Block>
Weights ggml_weights(std::int64_t rows, std::int64_t cols, std::uint32_t seed, float mean = 0.0f) {
  using Traits = ggml::FormatTraits<Block>;
  std::vector<float> x = lowbit_test::gaussian(rows * cols, 1.0f, seed, mean);
  // Row-to-row scale changes, so the per-row scales differ a lot.
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      x[static_cast<std::size_t>(r * cols + c)] *= 0.05f * static_cast<float>(1 + r % 7);
  std::vector<Block> blocks(static_cast<std::size_t>(rows * cols / Traits::kBlockSize));
  REQUIRE(ggml::quantize_rows<Block>(lowbit::row_major(x.data(), rows, cols), blocks.data()).ok());
  Weights out;
  out.rows = rows;
  out.cols = cols;
  out.deq.resize(x.size());
  REQUIRE(Traits::dequantize(blocks.data(), rows * cols, out.deq.data()).ok());
  lowbit::Result<lowbit::InterleavedWeights> w =
      lowbit::interleave_weights(blocks.data(), rows, cols);
  REQUIRE(w.has_value());
  out.w = std::move(*w);
  return out;
}

template <class Q, class G = typename Q::granularity>
Weights lowbit_weights(std::int64_t rows, std::int64_t cols, std::uint32_t seed, G g = {},
                       bool via_file = false) {
  std::vector<float> x = lowbit_test::gaussian(rows * cols, 0.1f, seed, 0.02f);
  lowbit::Result<lowbit::QuantizedTensor<Q>> q =
      Q::quantize(lowbit::row_major(static_cast<const float*>(x.data()), rows, cols), g);
  REQUIRE(q.has_value());
  Weights out;
  out.rows = rows;
  out.cols = cols;
  out.deq.resize(x.size());
  REQUIRE(q->dequantize(lowbit::row_major(out.deq.data(), rows, cols)).ok());
  if (via_file) {
    lowbit::Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(*q);
    REQUIRE(bytes.has_value());
    lowbit::Result<lowbit::PackedMatrixView> v =
        lowbit::parse_packed_matrix(bytes->data(), bytes->size());
    REQUIRE(v.has_value());
    lowbit::Result<lowbit::InterleavedWeights> w = lowbit::interleave_weights(*v);
    REQUIRE(w.has_value());
    out.w = std::move(*w);
  } else {
    lowbit::Result<lowbit::InterleavedWeights> w = lowbit::interleave_weights(*q);
    REQUIRE(w.has_value());
    out.w = std::move(*w);
  }
  return out;
}

// Every weight the kernels use equals the independent dequantization, bit for bit.
int weight_mismatches(const Weights& w) {
  int wrong = 0;
  for (std::int64_t r = 0; r < w.rows; ++r)
    for (std::int64_t c = 0; c < w.cols; ++c)
      wrong +=
          bits_of(w.w.weight(r, c)) != bits_of(w.deq[static_cast<std::size_t>(r * w.cols + c)]);
  return wrong;
}

using W4Asym128 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
using W4Asym64 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<64>>;
using W4Sym32 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Symmetric, lowbit::PerGroup<32>>;
using W4SymR128 =
    lowbit::Quantizer<lowbit::Bits<4>, lowbit::SymmetricRestricted, lowbit::PerGroup<128>>;
using W4AsymRow = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerChannel<0>>;
using W8Sym64 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, lowbit::PerGroup<64>>;
using W8Asym32 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerGroup<32>>;
using W8SymTensor =
    lowbit::Quantizer<lowbit::Bits<8>, lowbit::SymmetricRestricted, lowbit::PerTensor>;
using W4AsymDyn =
    lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<lowbit::kDynamicGroup>>;

// One weight matrix per supported source and variant, rows × cols (cols a multiple of 128).
std::vector<Weights> all_sources(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::vector<Weights> v;
  v.push_back(ggml_weights<ggml::BlockQ4_0>(rows, cols, seed + 1));
  v.push_back(ggml_weights<ggml::BlockQ4_1>(rows, cols, seed + 2, 0.7f));
  v.push_back(ggml_weights<ggml::BlockIQ4_NL>(rows, cols, seed + 3));
  v.push_back(ggml_weights<ggml::BlockQ8_0>(rows, cols, seed + 4));
  v.push_back(lowbit_weights<W4Asym128>(rows, cols, seed + 5));
  v.push_back(lowbit_weights<W4Asym64>(rows, cols, seed + 6, {}, true));
  v.push_back(lowbit_weights<W4Sym32>(rows, cols, seed + 7));
  v.push_back(lowbit_weights<W4SymR128>(rows, cols, seed + 8, {}, true));
  v.push_back(lowbit_weights<W4AsymRow>(rows, cols, seed + 9));
  v.push_back(lowbit_weights<W8Sym64>(rows, cols, seed + 10));
  v.push_back(lowbit_weights<W8Asym32>(rows, cols, seed + 11, {}, true));
  v.push_back(lowbit_weights<W8SymTensor>(rows, cols, seed + 12));
  return v;
}

TEST_CASE("int8 gemm: interleaved weights equal each source's own dequantization") {
  for (std::int64_t rows : {1, 16, 23}) {
    for (std::int64_t cols : {128, 384}) {
      for (const Weights& w :
           all_sources(rows, cols, kSeed + static_cast<std::uint32_t>(rows + cols))) {
        INFO(std::string(w.w.format_name()), " ", rows, "x", cols);
        CHECK(w.w.rows() == rows);
        CHECK(w.w.cols() == cols);
        CHECK(weight_mismatches(w) == 0);
        std::vector<float> out(static_cast<std::size_t>(rows * cols));
        REQUIRE(lowbit::dequantize(w.w, lowbit::row_major(out.data(), rows, cols)).ok());
        CHECK(std::memcmp(out.data(), w.deq.data(), out.size() * 4) == 0);
      }
    }
  }
  // A run-time group size takes the same path.
  lowbit::PerGroup<lowbit::kDynamicGroup> g;
  g.group_size = 96;
  const Weights dyn = lowbit_weights<W4AsymDyn>(5, 192, kSeed, g);
  CHECK(dyn.w.group_size() == 96);
  CHECK(weight_mismatches(dyn) == 0);
}

// The six 4096-value oracle inputs' ggml blocks, stacked as rows.
const char* const kOracleRows[] = {"gauss",      "student_t3",  "outliers",
                                   "weightlike", "mixed_scale", "halfnormal"};
const char* const kSmallRows[] = {"zeros", "const", "single_pos", "single_neg",
                                  "tiny",  "large", "alt_sign",   "ramp"};

template <class Block>
struct OracleMatrix {
  std::vector<Block> blocks;
  std::vector<float> deq;
  std::int64_t rows = 0, cols = 0;
};

template <class Block>
OracleMatrix<Block> load_oracle(const char* const* names, int count, const std::string& dir,
                                const std::string& type) {
  OracleMatrix<Block> m;
  for (int i = 0; i < count; ++i) {
    const std::vector<std::uint8_t> bytes =
        load_bytes("ggml/" + dir + "/" + names[i] + "." + type + ".bin");
    const std::vector<float> deq =
        lowbit_test::load_f32("ggml/" + dir + "/" + names[i] + "." + type + ".deq.f32");
    REQUIRE(bytes.size() == deq.size() / ggml::FormatTraits<Block>::kBlockSize * sizeof(Block));
    if (m.cols == 0) m.cols = static_cast<std::int64_t>(deq.size());
    REQUIRE(static_cast<std::int64_t>(deq.size()) == m.cols);
    const std::size_t at = m.blocks.size();
    m.blocks.resize(at + bytes.size() / sizeof(Block));
    std::memcpy(m.blocks.data() + at, bytes.data(), bytes.size());
    m.deq.insert(m.deq.end(), deq.begin(), deq.end());
    ++m.rows;
  }
  return m;
}

template <class Block>
void check_oracle_weights(const std::string& dir, const std::string& type) {
  for (int set = 0; set < 2; ++set) {
    const OracleMatrix<Block> m = set == 0 ? load_oracle<Block>(kOracleRows, 6, dir, type)
                                           : load_oracle<Block>(kSmallRows, 8, dir, type);
    lowbit::Result<lowbit::InterleavedWeights> w =
        lowbit::interleave_weights(m.blocks.data(), m.rows, m.cols);
    REQUIRE(w.has_value());
    int wrong = 0;
    for (std::int64_t r = 0; r < m.rows; ++r)
      for (std::int64_t c = 0; c < m.cols; ++c)
        wrong +=
            bits_of(w->weight(r, c)) != bits_of(m.deq[static_cast<std::size_t>(r * m.cols + c)]);
    INFO(dir, "/", type, " set ", set);
    CHECK(wrong == 0);
  }
}

TEST_CASE("int8 gemm: interleaved ggml weights equal ggml's to_float (oracle files)") {
  check_oracle_weights<ggml::BlockQ4_0>("ref", "q4_0");
  check_oracle_weights<ggml::BlockQ4_1>("ref", "q4_1");
  check_oracle_weights<ggml::BlockQ8_0>("ref", "q8_0");
  check_oracle_weights<ggml::BlockIQ4_NL>("ref", "iq4_nl");
  check_oracle_weights<ggml::BlockQ4_K>("ref", "q4_K");
  // The chunk path (what llama-quantize writes) has no file for `const`.
  const OracleMatrix<ggml::BlockIQ4_NL> m =
      load_oracle<ggml::BlockIQ4_NL>(kOracleRows, 6, "chunk", "iq4_nl");
  lowbit::Result<lowbit::InterleavedWeights> w =
      lowbit::interleave_weights(m.blocks.data(), m.rows, m.cols);
  REQUIRE(w.has_value());
  int wrong = 0;
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c)
      wrong += bits_of(w->weight(r, c)) != bits_of(m.deq[static_cast<std::size_t>(r * m.cols + c)]);
  CHECK(wrong == 0);
}

TEST_CASE("int8 gemm: sizes stay the formats' sizes") {
  const Weights q4 = ggml_weights<ggml::BlockQ4_0>(64, 4096, kSeed);
  CHECK(q4.w.bits_per_weight() == doctest::Approx(4.5));
  const Weights q8 = ggml_weights<ggml::BlockQ8_0>(64, 4096, kSeed);
  CHECK(q8.w.bits_per_weight() == doctest::Approx(8.5));
  const Weights q41 = ggml_weights<ggml::BlockQ4_1>(64, 4096, kSeed);
  CHECK(q41.w.bits_per_weight() == doctest::Approx(5.0));
  const Weights l4 = lowbit_weights<W4Asym128>(64, 4096, kSeed);
  CHECK(l4.w.bits_per_weight() == doctest::Approx(4.0 + 32.0 / 128 + 8.0 / 128));
  // Q4_K: float32 scale and min per 32 (format/interleaved.hpp says why).
  const Weights q4k = ggml_weights<ggml::BlockQ4_K>(64, 4096, kSeed);
  CHECK(q4k.w.bits_per_weight() == doctest::Approx(6.0));
}

TEST_CASE("int8 gemm: interleave_weights rejects what it cannot represent") {
  std::vector<ggml::BlockQ4_0> blocks(8);
  for (auto& b : blocks) b.d = lowbit::to_half(1.0f);
  CHECK(lowbit::interleave_weights(blocks.data(), 0, 32).status().code() == Errc::kInvalidArgument);
  CHECK(lowbit::interleave_weights(blocks.data(), 2, -32).status().code() ==
        Errc::kInvalidArgument);
  CHECK(lowbit::interleave_weights(static_cast<const ggml::BlockQ4_0*>(nullptr), 2, 32)
            .status()
            .code() == Errc::kInvalidArgument);
  CHECK(lowbit::interleave_weights(blocks.data(), 1, 48).status().code() == Errc::kIndivisible);
  blocks[5].d = lowbit::Half{0x7E00};  // NaN
  lowbit::Result<lowbit::InterleavedWeights> bad =
      lowbit::interleave_weights(blocks.data(), 2, 128);
  CHECK(bad.status().code() == Errc::kNonFinite);
  CHECK(bad.status().index() == 5);
  std::vector<ggml::BlockQ4_1> b41(2);
  b41[0].d = lowbit::to_half(1.0f);
  b41[1].d = lowbit::to_half(1.0f);
  b41[1].m = lowbit::Half{0x7C00};  // +Inf min
  CHECK(lowbit::interleave_weights(b41.data(), 1, 64).status().code() == Errc::kNonFinite);
  // Q4_K: K in whole 256-value super-blocks; NaN/Inf d or dmin, indexed by super-block.
  std::vector<ggml::BlockQ4_K> b4k(4);
  for (auto& b : b4k) {
    b.d = lowbit::to_half(0.5f);
    b.dmin = lowbit::to_half(0.25f);
  }
  CHECK(lowbit::interleave_weights(b4k.data(), 2, 512).has_value());
  CHECK(lowbit::interleave_weights(b4k.data(), 1, 128).status().code() == Errc::kIndivisible);
  CHECK(lowbit::interleave_weights(b4k.data(), 1, 288).status().code() == Errc::kIndivisible);
  CHECK(lowbit::interleave_weights(b4k.data(), 0, 256).status().code() == Errc::kInvalidArgument);
  CHECK(lowbit::interleave_weights(b4k.data(), 1, -256).status().code() ==
        Errc::kInvalidArgument);
  CHECK(lowbit::interleave_weights(static_cast<const ggml::BlockQ4_K*>(nullptr), 1, 256)
            .status()
            .code() == Errc::kInvalidArgument);
  b4k[3].dmin = lowbit::Half{0xFC00};  // -Inf min
  lowbit::Result<lowbit::InterleavedWeights> bad4k = lowbit::interleave_weights(b4k.data(), 2, 512);
  CHECK(bad4k.status().code() == Errc::kNonFinite);
  CHECK(bad4k.status().index() == 3);
  b4k[1].d = lowbit::Half{0x7E00};  // NaN scale
  bad4k = lowbit::interleave_weights(b4k.data(), 2, 512);
  CHECK(bad4k.status().code() == Errc::kNonFinite);
  CHECK(bad4k.status().index() == 1);

  // lowbit sources: widths other than 4 and 8, per-column scales, groups not a multiple of 32.
  const std::vector<float> x = lowbit_test::gaussian(4 * 64, 1.0f, kSeed);
  const auto xv = lowbit::row_major(x.data(), 4, 64);
  using W3 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<32>>;
  using W4Col = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerChannel<1>>;
  using W4G16 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<16>>;
  const auto w3 = W3::quantize(xv);
  REQUIRE(w3.has_value());
  const auto f3 = lowbit::write_packed_matrix(*w3);
  REQUIRE(f3.has_value());
  const auto v3 = lowbit::parse_packed_matrix(f3->data(), f3->size());
  REQUIRE(v3.has_value());
  CHECK(lowbit::interleave_weights(*v3).status().code() == Errc::kUnsupported);
  const auto wc = W4Col::quantize(xv);
  REQUIRE(wc.has_value());
  CHECK(lowbit::interleave_weights(*wc).status().code() == Errc::kUnsupported);
  const auto g16 = W4G16::quantize(xv);
  REQUIRE(g16.has_value());
  CHECK(lowbit::interleave_weights(*g16).status().code() == Errc::kUnsupported);
  // A symmetric tensor whose zero point was edited is refused, not silently shifted.
  auto s4 = W4Sym32::quantize(xv);
  REQUIRE(s4.has_value());
  s4->params().zero_point[3] = 1;
  CHECK(lowbit::interleave_weights(*s4).status().code() == Errc::kOutOfRange);
  auto s4nan = W4Sym32::quantize(xv);
  REQUIRE(s4nan.has_value());
  s4nan->params().scale[2] = std::numeric_limits<float>::quiet_NaN();
  CHECK(lowbit::interleave_weights(*s4nan).status().code() == Errc::kNonFinite);
}

// ---------------------------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------------------------

// Activations in a buffer with padded rows, one float off 32-byte alignment, or column-major.
struct Activations {
  std::vector<float> storage;
  lowbit::MatrixView<const float> view;
};
enum class Layout { kRowMajor, kPaddedUnaligned, kColumnMajor };

Activations make_activations(std::int64_t tokens, std::int64_t k, std::uint32_t seed,
                             Layout layout) {
  const std::vector<float> v = lowbit_test::gaussian(tokens * k, 1.0f, seed);
  Activations a;
  switch (layout) {
    case Layout::kRowMajor:
      a.storage = v;
      a.view = lowbit::row_major(static_cast<const float*>(a.storage.data()), tokens, k);
      break;
    case Layout::kPaddedUnaligned: {
      const std::int64_t stride = k + 3;
      a.storage.assign(static_cast<std::size_t>(tokens * stride + 1), 1e30f);
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t c = 0; c < k; ++c)
          a.storage[static_cast<std::size_t>(1 + t * stride + c)] =
              v[static_cast<std::size_t>(t * k + c)];
      a.view =
          lowbit::strided_rows(static_cast<const float*>(a.storage.data() + 1), tokens, k, stride);
      break;
    }
    case Layout::kColumnMajor:
      a.storage.resize(v.size());
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t c = 0; c < k; ++c)
          a.storage[static_cast<std::size_t>(c * tokens + t)] =
              v[static_cast<std::size_t>(t * k + c)];
      a.view = lowbit::col_major(static_cast<const float*>(a.storage.data()), tokens, k);
      break;
  }
  return a;
}

// Y = X·Wᵀ on the path `isa` with `threads` threads; y has padded rows (stride out + 5).
std::vector<float> run_gemm(const lowbit::InterleavedWeights& w, lowbit::MatrixView<const float> x,
                            Isa isa, int threads, const float* bias, lowbit::GemmWorkspace* ws) {
  const std::int64_t stride = w.rows() + 5;
  std::vector<float> y(static_cast<std::size_t>(x.rows() * stride), -7.0f);
  ForcedIsa forced(isa);
  lowbit::ThreadPool pool(threads);
  lowbit::GemmOptions options;
  if (bias != nullptr) options.bias = lowbit::flat(bias, w.rows());
  options.workspace = ws;
  const lowbit::Status s =
      lowbit::gemm(w, x, lowbit::strided_rows(y.data(), x.rows(), w.rows(), stride), pool, options);
  REQUIRE(s.ok());
  // Padding between rows is untouched.
  for (std::int64_t t = 0; t < x.rows(); ++t)
    for (std::int64_t c = w.rows(); c < stride; ++c)
      REQUIRE(y[static_cast<std::size_t>(t * stride + c)] == -7.0f);
  return y;
}

// The bound on |y_ref − Σ w·x| (double, from independently dequantized weights):
//   activations: each x differs from dx·qx by at most dx/2 (plus the float rounding of x·id, at
//     most 127·2^-23 of a code, so dx·(0.5 + 2^-16)); dx = amax/127 of the block, computed here;
//     so block b contributes at most dx_b·(0.5 + 2^-16)·Σ_block |w|;
//   floats: y is a chain of nb fused multiply-adds of terms T_b = float(isum)·fl(d·dx) (plus the
//     min term for Q4_1 and Q4_K); fl(d·dx) and each fma add a relative 2^-24, so the chain errs
//     by at most (nb + 2)·2^-24·Σ_b |T_b| (|isum|, d, dx exact otherwise), and Σ|T_b| ≤ Σ|w|·|x|
//     + the activation bound. Doubled for margin, with a floor for subnormal products.
// `block` is the activation quantizer's block: 32 for ours; 256 bounds ggml's q8_K the same way
// (one scale amax/127 per 256 values, rounded to nearest).
double error_bound(const std::vector<float>& deq, std::int64_t row, std::int64_t k, const float* x,
                   std::int64_t block = 32) {
  double act = 0.0, magnitude = 0.0;
  const std::int64_t nb = k / block;
  for (std::int64_t b = 0; b < nb; ++b) {
    double amax = 0.0, wsum = 0.0;
    for (std::int64_t e = 0; e < block; ++e) {
      const double wv = deq[static_cast<std::size_t>(row * k + block * b + e)];
      amax = std::fmax(amax, std::fabs(static_cast<double>(x[block * b + e])));
      wsum += std::fabs(wv);
      magnitude += std::fabs(wv * x[block * b + e]);
    }
    act += static_cast<double>(static_cast<float>(amax) / 127.0f) * (0.5 + 0x1p-16) * wsum;
  }
  return 2.0 * (act + static_cast<double>(nb + 2) * 0x1p-24 * (magnitude + act)) + 1e-30;
}

// Rows of X as contiguous float vectors (whatever the view's strides).
std::vector<float> token_row(lowbit::MatrixView<const float> x, std::int64_t t) {
  std::vector<float> row(static_cast<std::size_t>(x.cols()));
  for (std::int64_t c = 0; c < x.cols(); ++c) row[static_cast<std::size_t>(c)] = x(t, c);
  return row;
}

void check_against_double(const Weights& w, lowbit::MatrixView<const float> x,
                          const std::vector<float>& y, std::int64_t y_stride, const float* bias) {
  int outside = 0;
  double worst = 0.0;
  for (std::int64_t t = 0; t < x.rows(); ++t) {
    const std::vector<float> row = token_row(x, t);
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double exact = bias != nullptr ? bias[r] : 0.0;
      for (std::int64_t c = 0; c < w.cols; ++c)
        exact += static_cast<double>(w.deq[static_cast<std::size_t>(r * w.cols + c)]) *
                 row[static_cast<std::size_t>(c)];
      const double bound =
          error_bound(w.deq, r, w.cols, row.data()) +
          (bias != nullptr ? std::fabs(static_cast<double>(bias[r])) * 0x1p-23 : 0.0);
      const double err =
          std::fabs(static_cast<double>(y[static_cast<std::size_t>(t * y_stride + r)]) - exact);
      outside += !(err <= bound);
      worst = std::fmax(worst, err / bound);
    }
  }
  INFO("worst error / bound = ", worst);
  CHECK(outside == 0);
}

int bit_mismatches(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  int wrong = 0;
  for (std::size_t i = 0; i < a.size(); ++i) wrong += bits_of(a[i]) != bits_of(b[i]);
  return wrong;
}

// For N = 1, 2, 3, 4, 5, 17 tokens (row-major, padded and unaligned, column-major X; with and
// without bias): the reference is within the bound of the double product, and every other path
// with 1 and 3 threads equals it bit for bit. `seed` advances once per token count.
void check_every_path(const Weights& w, const std::vector<float>& bias, std::uint32_t& seed,
                      lowbit::GemmWorkspace& workspace) {
  for (std::int64_t tokens : {1, 2, 3, 4, 5, 17}) {
    const Layout layout = tokens == 3  ? Layout::kColumnMajor
                          : tokens % 2 ? Layout::kPaddedUnaligned
                                       : Layout::kRowMajor;
    const Activations a = make_activations(tokens, w.cols, seed++, layout);
    const float* b = tokens % 2 == 0 ? bias.data() : nullptr;
    INFO(std::string(w.w.format_name()), " ", w.rows, "x", w.cols, ", tokens ", tokens);
    const std::vector<float> want = run_gemm(w.w, a.view, Isa::kScalar, 1, b, nullptr);
    check_against_double(w, a.view, want, w.rows + 5, b);
    for (Isa isa : lowbit::available_isas()) {
      if (isa == Isa::kScalar) continue;
      INFO("isa ", std::string(lowbit::isa_name(isa)));
      for (int threads : {1, 3}) {
        const std::vector<float> got =
            run_gemm(w.w, a.view, isa, threads, b, threads == 1 ? &workspace : nullptr);
        CHECK(bit_mismatches(got, want) == 0);
      }
    }
  }
}

TEST_CASE("int8 gemm: every path equals the reference bit for bit, which is within the bound") {
  report_skipped_isas();
  struct Shape {
    std::int64_t rows, cols;
  };
  // 125 and 509 rows: 8 and 32 row blocks, the last one partial, so that decode's interleaved
  // streams (AVX2) cover a partial row block and leave row blocks over on 3 threads.
  const Shape shapes[] = {{1, 128}, {17, 128}, {40, 384}, {125, 256}, {509, 128}};
  lowbit::GemmWorkspace workspace;
  std::uint32_t seed = kSeed;
  for (const Shape& shape : shapes) {
    const std::vector<Weights> sources = all_sources(shape.rows, shape.cols, seed++);
    const std::vector<float> bias = lowbit_test::gaussian(shape.rows, 1.0f, seed++);
    for (const Weights& w : sources) check_every_path(w, bias, seed, workspace);
  }
}

// Q4_K (K in 256-value super-blocks, float scale and min per 32): its weights equal ggml's own
// dequantizer's (FormatTraits<BlockQ4_K>::dequantize) bit for bit, and the GEMM passes the same
// checks as the other formats, on rows that are not a multiple of 16 and nonzero mins (mean 0.7).
TEST_CASE("int8 gemm: ggml Q4_K on every path equals the reference, within the bound") {
  report_skipped_isas();
  struct Shape {
    std::int64_t rows, cols;
  };
  const Shape shapes[] = {{1, 256}, {17, 256}, {40, 512}, {3, 768}, {133, 256}};
  lowbit::GemmWorkspace workspace;
  std::uint32_t seed = kSeed + 500;
  for (const Shape& shape : shapes) {
    const Weights w = ggml_weights<ggml::BlockQ4_K>(shape.rows, shape.cols, seed++, 0.7f);
    INFO("q4_K ", shape.rows, "x", shape.cols);
    CHECK(std::string(w.w.format_name()) == "q4_K");
    CHECK(w.w.source() == lowbit::InterleavedSource::kGgmlQ4_K);
    CHECK(weight_mismatches(w) == 0);
    const std::vector<float> bias = lowbit_test::gaussian(shape.rows, 1.0f, seed++);
    check_every_path(w, bias, seed, workspace);
  }
}

TEST_CASE("int8 gemm: stored-row order, threads and the executor do not change the output") {
  // A larger case where tasks split row blocks unevenly (rows not a multiple of 16, 2 threads).
  const Weights w = ggml_weights<ggml::BlockQ4_0>(150, 256, kSeed + 77);
  const Activations a = make_activations(9, 256, kSeed + 78, Layout::kRowMajor);
  const Isa best = lowbit::best_isa();
  const std::vector<float> one = run_gemm(w.w, a.view, best, 1, nullptr, nullptr);
  const std::vector<float> two = run_gemm(w.w, a.view, best, 2, nullptr, nullptr);
  CHECK(bit_mismatches(one, two) == 0);
  // Token t alone gives the same row as in the batch.
  for (std::int64_t t : {0, 4, 8}) {
    const std::vector<float> single =
        run_gemm(w.w, a.view.row_block(t, 1), best, 1, nullptr, nullptr);
    int wrong = 0;
    for (std::int64_t r = 0; r < 150; ++r)
      wrong += bits_of(single[static_cast<std::size_t>(r)]) !=
               bits_of(one[static_cast<std::size_t>(t * 155 + r)]);
    CHECK(wrong == 0);
  }
}

TEST_CASE("int8 gemm: NaN and Inf in one token make exactly that token's outputs NaN") {
  for (const Weights& w : all_sources(20, 128, kSeed + 5)) {
    Activations a = make_activations(5, 128, kSeed + 6, Layout::kRowMajor);
    const std::vector<float> clean_y = run_gemm(w.w, a.view, Isa::kScalar, 1, nullptr, nullptr);
    a.storage[1 * 128 + 70] = std::numeric_limits<float>::quiet_NaN();
    a.storage[3 * 128 + 5] = -std::numeric_limits<float>::infinity();
    for (Isa isa : lowbit::available_isas()) {
      INFO(std::string(w.w.format_name()), " isa ", std::string(lowbit::isa_name(isa)));
      const std::vector<float> y = run_gemm(w.w, a.view, isa, 2, nullptr, nullptr);
      int wrong = 0;
      for (std::int64_t t = 0; t < 5; ++t)
        for (std::int64_t r = 0; r < 20; ++r) {
          const float v = y[static_cast<std::size_t>(t * 25 + r)];
          if (t == 1 || t == 3) {
            wrong += !std::isnan(v);
          } else {
            wrong += bits_of(v) != bits_of(clean_y[static_cast<std::size_t>(t * 25 + r)]);
          }
        }
      CHECK(wrong == 0);
    }
  }
}

// The oracle weight rows (ggml's own blocks) against the oracle activation row act.f32.
struct DotRow {
  std::string x_file;
  double vec_dot;
};

std::vector<DotRow> load_dots() {
  const std::vector<std::uint8_t> bytes = load_bytes("ggml/dot/dots.tsv");
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  std::string line;
  std::getline(in, line);  // header
  std::vector<DotRow> rows;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    DotRow d;
    std::string x_type, y_file, y_type, n;
    fields >> d.x_file >> x_type >> y_file >> y_type >> n >> d.vec_dot;
    rows.push_back(d);
  }
  return rows;
}

template <class Block>
void check_oracle_gemm(const std::string& type) {
  const OracleMatrix<Block> m = load_oracle<Block>(kOracleRows, 6, "ref", type);
  const std::vector<float> act = lowbit_test::load_f32("ggml/inputs/act.f32");
  REQUIRE(static_cast<std::int64_t>(act.size()) == m.cols);
  lowbit::Result<lowbit::InterleavedWeights> w =
      lowbit::interleave_weights(m.blocks.data(), m.rows, m.cols);
  REQUIRE(w.has_value());
  const std::vector<DotRow> dots = load_dots();
  for (Isa isa : lowbit::available_isas()) {
    std::vector<float> y(static_cast<std::size_t>(m.rows));
    {
      ForcedIsa forced(isa);
      REQUIRE(lowbit::gemm(*w, lowbit::row_major(act.data(), 1, m.cols),
                           lowbit::row_major(y.data(), 1, m.rows))
                  .ok());
    }
    for (std::int64_t r = 0; r < m.rows; ++r) {
      double exact = 0.0;
      for (std::int64_t c = 0; c < m.cols; ++c)
        exact += static_cast<double>(m.deq[static_cast<std::size_t>(r * m.cols + c)]) *
                 act[static_cast<std::size_t>(c)];
      const double bound = error_bound(m.deq, r, m.cols, act.data());
      INFO(type, " row ", std::string(kOracleRows[r]), " isa ", std::string(lowbit::isa_name(isa)),
           ": lowbit ", y[static_cast<std::size_t>(r)], ", exact ", exact, ", bound ", bound);
      CHECK(std::fabs(y[static_cast<std::size_t>(r)] - exact) <= bound);
      // ggml's vec_dot quantizes the activations its own way (fp16 scale, roundf); both results
      // are within their activation bounds of the exact product, so within twice ours (plus the
      // fp16 rounding of ggml's scale, 2^-11 relative) of each other.
      // q4_K pairs with q8_K, one fp32 scale per 256 activations: its own bound is that of
      // 256-blocks, and the two results are within the sum of both bounds.
      const double ggml_bound = type == "q4_K"
                                    ? error_bound(m.deq, r, m.cols, act.data(), 256)
                                    : 1.01 * bound;
      const std::string file = std::string("ref/") + kOracleRows[r] + "." + type + ".bin";
      for (const DotRow& d : dots)
        if (d.x_file == file)
          CHECK(std::fabs(y[static_cast<std::size_t>(r)] - d.vec_dot) <= bound + ggml_bound);
    }
  }
}

TEST_CASE("int8 gemm: ggml's own weight rows against the oracle activations") {
  check_oracle_gemm<ggml::BlockQ4_0>("q4_0");
  check_oracle_gemm<ggml::BlockQ4_1>("q4_1");
  check_oracle_gemm<ggml::BlockQ8_0>("q8_0");
  check_oracle_gemm<ggml::BlockIQ4_NL>("iq4_nl");
  check_oracle_gemm<ggml::BlockQ4_K>("q4_K");
}

TEST_CASE("int8 gemm: bad input gives a Status before anything is written") {
  const Weights w = ggml_weights<ggml::BlockQ8_0>(20, 64, kSeed);
  std::vector<float> x(3 * 64, 1.0f), y(3 * 20, 5.0f), bias(20, 0.0f);
  const auto xv = lowbit::row_major(static_cast<const float*>(x.data()), 3, 64);
  const auto yv = lowbit::row_major(y.data(), 3, 20);
  lowbit::InterleavedWeights empty;
  CHECK(lowbit::gemm(empty, xv, yv).code() == Errc::kInvalidArgument);
  // A moved-from matrix is empty, not a shape without storage.
  Weights moved = ggml_weights<ggml::BlockQ8_0>(20, 64, kSeed);
  lowbit::InterleavedWeights taken = std::move(moved.w);
  CHECK(moved.w.empty());
  CHECK(lowbit::gemm(moved.w, xv, yv).code() == Errc::kInvalidArgument);
  CHECK(lowbit::gemm(taken, xv, yv).ok());
  for (float& v : y) v = 5.0f;
  CHECK(
      lowbit::gemm(w.w, lowbit::row_major(static_cast<const float*>(x.data()), 2, 96), yv).code() ==
      Errc::kShapeMismatch);
  CHECK(lowbit::gemm(w.w, xv, lowbit::row_major(y.data(), 2, 20)).code() == Errc::kShapeMismatch);
  CHECK(lowbit::gemm(w.w, xv, lowbit::row_major(y.data(), 3, 19)).code() == Errc::kShapeMismatch);
  lowbit::GemmOptions short_bias;
  short_bias.bias = lowbit::flat(static_cast<const float*>(bias.data()), 19);
  CHECK(lowbit::gemm(w.w, xv, yv, short_bias).code() == Errc::kShapeMismatch);
  CHECK(lowbit::gemm(w.w, lowbit::MatrixView<const float>(nullptr, 3, 64, 64, 1), yv).code() ==
        Errc::kInvalidArgument);
  // y overlapping x, y overlapping itself.
  std::vector<float> shared(3 * 64 + 60, 1.0f);
  CHECK(lowbit::gemm(w.w, lowbit::row_major(static_cast<const float*>(shared.data()), 3, 64),
                     lowbit::row_major(shared.data() + 100, 3, 20))
            .code() == Errc::kInvalidArgument);
  CHECK(lowbit::gemm(w.w, xv, lowbit::strided_rows(y.data(), 3, 20, 10)).code() ==
        Errc::kInvalidArgument);
  lowbit::GemmOptions overlapping_bias;
  overlapping_bias.bias = lowbit::flat(static_cast<const float*>(y.data()), 20);
  CHECK(lowbit::gemm(w.w, xv, yv, overlapping_bias).code() == Errc::kInvalidArgument);
  for (float v : y) CHECK(v == 5.0f);
  // No tokens: nothing to do, not an error.
  CHECK(lowbit::gemm(w.w, lowbit::row_major(static_cast<const float*>(x.data()), 0, 64),
                     lowbit::row_major(y.data(), 0, 20))
            .ok());
}

}  // namespace
