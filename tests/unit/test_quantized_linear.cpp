// Tests for examples/llama/quantized_linear.hpp: the quantized Linear layers of the Llama example.
//
// What is checked, and against what (every expected value comes from another implementation):
//   1. DequantLinear on ggml's own blocks (tests/data/ggml/ref/weightlike.<type>.bin, made by
//      llama.cpp's reference quantizers) against ggml's dequantized floats (.deq.f32) times the
//      oracle activation row (inputs/act.f32): on the scalar path exactly float32's rounding of
//      the double-precision dot product; on the dispatched SIMD path within the bound below.
//   2. DequantLinear and Int8ActLinear on GPTQ's codes, group scales and zero points
//      (torch/gptq/small/w4_g64_asym_bs128, IST-DASLab/gptq) against GPTQ's own dequantized
//      matrix Q (DenseLinear on Q).
//   3. Int8ActLinear on ggml Q4_0 / Q4_1 / IQ4_NL / Q8_0 blocks against DenseLinear on ggml's
//      dequantized floats, within the activation-rounding bound.
//   4. W8A8Linear on SmoothQuant's int8 codes and steps (torch/smoothquant/a0p5, with the bias)
//      against mit-han-lab/smoothquant's W8A8Linear output, and against DenseLinear on code·step
//      within the per-token activation-rounding bound.
//   5. Every constructor's and forward's bad-input Status; forward from two threads at once.
//   6. tinylm with every decoder linear as Q8_0 DequantLinear: the loss on evaluation window 0
//      within 0.5% of the loss of PyTorch's fp32 logits (models/tinylm/logits_ref.npy), and the
//      size report (Q8_0 is 34 bytes per 32 weights).
//
// Bounds (y = what the layer returns, s = Σ_k ŵ_k x_k exactly, u = 2^-24):
//   fp32 activations (dequant_gemm's header and tests/unit/test_dequant_gemm.cpp): the SIMD paths
//     sum in float32 in some order with at most K + 16 roundings per term, so |y − s| ≤ (K + 32)
//     u M, M = Σ_k (|ŵ_k| + 2|o_k|)|x_k|, where o_k is the block offset some kernels factor out
//     (8d for Q4_0, dmin·m for Q4_K, 32·d·sc for Q6_K, s·z for packed codes). Every offset is the
//     magnitude of a value the block's codes can take, at most its largest |ŵ| plus one step, so
//     |o_k| ≤ 2·max|ŵ| over k's offset block (32 weights for ggml, the group for packed codes).
//   int8 activations per 32-block (gemm.hpp): each x is replaced by dx·qx with |x − dx·qx| ≤
//     dx(1/2 + 2^-16), dx = amax/127 of the block, so |y − s| ≤ Σ_b dx_b(1/2 + 2^-16)Σ_b|ŵ| plus
//     the float32 rounding of nb + 2 block terms: (nb + 2) u (Σ|ŵx| + that). Doubled for margin.
//   int8 activations per token (gemm_w8a8.hpp): the same with one sx = max(amax, 1e-5)/127 per
//     token over all of K, and the float epilogue: 3 roundings of |y|.
// A single wrong code moves an output by about |x_k|·step ≈ M/K, far above every bound here.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "llama/llama.hpp"
#include "llama/quantized_linear.hpp"
#include "lowbit/cpu.hpp"
#include "support/npy.hpp"
#include "support/oracle.hpp"
#include "support/raw.hpp"

namespace {

using lowbit::Errc;
using lowbit::Result;
using lowbit::Status;
using lowbit::io::GgmlType;

// The ggml oracle rows (4096 values) seen as an [8, 512] matrix: ggml quantizes each row
// independently and every block type's size divides 512, so the blocks of one 4096-row are
// exactly those of eight 512-rows.
constexpr std::int64_t kRows = 8, kCols = 512;

struct ForcedIsa {
  explicit ForcedIsa(lowbit::Isa isa) { REQUIRE(lowbit::force_isa_for_testing(isa)); }
  ~ForcedIsa() { lowbit::reset_forced_isa(); }
  ForcedIsa(const ForcedIsa&) = delete;
  ForcedIsa& operator=(const ForcedIsa&) = delete;
};

// The DenseLinear (fp32 Eigen) output on the oracle's dequantized weights, and the exact
// (double) products for the bounds.
std::vector<float> dense(const std::vector<float>& w, std::int64_t out, std::int64_t in,
                         const float* x, std::int64_t tokens) {
  llama::DenseLinear d(w.data(), out, in);
  std::vector<float> y(static_cast<std::size_t>(tokens * out));
  REQUIRE(d.forward(x, tokens, y.data()).ok());
  return y;
}

double exact_dot(const float* w, const float* x, std::int64_t k) {
  double s = 0.0;
  for (std::int64_t i = 0; i < k; ++i) s += static_cast<double>(w[i]) * x[i];
  return s;
}

// (K + 32) u Σ(|ŵ| + 2|o|)|x| with |o| ≤ 2 max|ŵ| over the offset block (see the header).
double fp32_bound(const float* w, const float* x, std::int64_t k, std::int64_t offset_block) {
  double m = 0.0;
  for (std::int64_t b = 0; b < k; b += offset_block) {
    double top = 0.0;
    for (std::int64_t i = b; i < b + offset_block; ++i)
      top = std::max(top, std::fabs(static_cast<double>(w[i])));
    for (std::int64_t i = b; i < b + offset_block; ++i)
      m += (std::fabs(static_cast<double>(w[i])) + 4.0 * top) * std::fabs(static_cast<double>(x[i]));
  }
  return static_cast<double>(k + 32) * 0x1p-24 * m + 1e-30;
}

// Per-32-block int8 activation bound (gemm.hpp), doubled.
double int8_block_bound(const float* w, const float* x, std::int64_t k) {
  double act = 0.0, magnitude = 0.0;
  const std::int64_t nb = k / 32;
  for (std::int64_t b = 0; b < nb; ++b) {
    double amax = 0.0, wsum = 0.0;
    for (std::int64_t e = 32 * b; e < 32 * b + 32; ++e) {
      amax = std::max(amax, std::fabs(static_cast<double>(x[e])));
      wsum += std::fabs(static_cast<double>(w[e]));
      magnitude += std::fabs(static_cast<double>(w[e]) * x[e]);
    }
    act += static_cast<double>(static_cast<float>(amax) / 127.0f) * (0.5 + 0x1p-16) * wsum;
  }
  return 2.0 * (act + static_cast<double>(nb + 2) * 0x1p-24 * (magnitude + act)) + 1e-30;
}

// Per-token int8 activation bound (gemm_w8a8.hpp), doubled.
double int8_token_bound(const float* w, const float* x, std::int64_t k) {
  double amax = 0.0, wsum = 0.0, magnitude = 0.0;
  for (std::int64_t e = 0; e < k; ++e) {
    amax = std::max(amax, std::fabs(static_cast<double>(x[e])));
    wsum += std::fabs(static_cast<double>(w[e]));
    magnitude += std::fabs(static_cast<double>(w[e]) * x[e]);
  }
  const double sx = std::max(amax, 1e-5) / 127.0;
  const double act = sx * (0.5 + 0x1p-16) * wsum;
  return 2.0 * (act + static_cast<double>(k + 8) * 0x1p-24 * (magnitude + act)) + 1e-30;
}

// Runs `layer` on `tokens` rows of x and checks every output against the exact product of the
// oracle weights `w` within bound(w_row, x_row); returns the worst error / bound.
template <class Bound>
double check_layer(const llama::Linear& layer, const std::vector<float>& w, const float* x,
                   std::int64_t tokens, Bound bound) {
  const std::int64_t out = layer.out_features(), in = layer.in_features();
  REQUIRE(w.size() == static_cast<std::size_t>(out * in));
  std::vector<float> y(static_cast<std::size_t>(tokens * out), -7.0f);
  REQUIRE(layer.forward(x, tokens, y.data()).ok());
  const std::vector<float> ref = dense(w, out, in, x, tokens);
  double worst = 0.0;
  std::int64_t outside = 0, dense_outside = 0;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t r = 0; r < out; ++r) {
      const float* wr = w.data() + r * in;
      const double s = exact_dot(wr, x + t * in, in);
      const double b = bound(wr, x + t * in, in);
      const double got = y[static_cast<std::size_t>(t * out + r)];
      const double err = std::fabs(got - s);
      outside += !(err <= b);
      worst = std::max(worst, err / b);
      // DenseLinear itself is float32 GEMM: within (K + 2) u Σ|ŵx| of s, so both are close.
      double m = 0.0;
      for (std::int64_t k = 0; k < in; ++k) m += std::fabs(static_cast<double>(wr[k]) * x[t * in + k]);
      const double dense_err = std::fabs(static_cast<double>(ref[static_cast<std::size_t>(t * out + r)]) - s);
      dense_outside += !(dense_err <= static_cast<double>(in + 2) * 0x1p-24 * m + 1e-30);
    }
  }
  CHECK(outside == 0);
  CHECK(dense_outside == 0);
  return worst;
}

std::string ggml_file(const char* input, const char* type, const char* suffix) {
  return std::string("ggml/ref/") + input + "." + type + suffix;
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("DequantLinear on ggml blocks equals DenseLinear on ggml's dequantized weights") {
  const std::vector<float> act = lowbit_test::load_f32("ggml/inputs/act.f32");
  REQUIRE(act.size() == static_cast<std::size_t>(kRows * kCols));
  struct Case {
    GgmlType type;
    const char* name;
    std::int64_t offset_block;
  };
  const Case cases[] = {{GgmlType::kQ8_0, "q8_0", 32},   {GgmlType::kQ6_K, "q6_K", 32},
                        {GgmlType::kQ4_K, "q4_K", 32},   {GgmlType::kQ4_0, "q4_0", 32},
                        {GgmlType::kIQ4_NL, "iq4_nl", 32}, {GgmlType::kQ5_K, "q5_K", 32},
                        {GgmlType::kQ4_1, "q4_1", 32}};
  lowbit::ThreadPool pool(2);
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const std::vector<std::uint8_t> blocks =
        lowbit_test::load_bytes(ggml_file("weightlike", c.name, ".bin"));
    const std::vector<float> deq = lowbit_test::load_f32(ggml_file("weightlike", c.name, ".deq.f32"));
    Result<std::unique_ptr<llama::DequantLinear>> l =
        llama::DequantLinear::from_ggml(c.type, blocks, kRows, kCols, &pool);
    REQUIRE(l);
    const llama::DequantLinear& layer = **l;
    CHECK(layer.weight_bytes() == blocks.size());
    CHECK(layer.format() == std::string("dequant ") + c.name);

    // Scalar path: float32's rounding of the double dot product, bit for bit.
    {
      ForcedIsa scalar(lowbit::Isa::kScalar);
      for (std::int64_t tokens : {std::int64_t{1}, std::int64_t{3}, kRows}) {
        std::vector<float> y(static_cast<std::size_t>(tokens * kRows));
        REQUIRE(layer.forward(act.data(), tokens, y.data()).ok());
        std::int64_t differ = 0;
        for (std::int64_t t = 0; t < tokens; ++t)
          for (std::int64_t r = 0; r < kRows; ++r)
            differ += y[static_cast<std::size_t>(t * kRows + r)] !=
                      static_cast<float>(exact_dot(deq.data() + r * kCols, act.data() + t * kCols, kCols));
        CHECK(differ == 0);
      }
    }
    // The dispatched path, GEMV (1 and 3 tokens) and GEMM tiles (8 tokens).
    for (std::int64_t tokens : {std::int64_t{1}, std::int64_t{3}, kRows}) {
      const double worst =
          check_layer(layer, deq, act.data(), tokens, [&](const float* w, const float* x, std::int64_t k) {
            return fp32_bound(w, x, k, c.offset_block);
          });
      MESSAGE(std::string(c.name), " tokens ", tokens, ": worst error / bound ", worst);
    }
  }
}

struct GptqCase {
  std::vector<float> q, x, scale;
  std::vector<std::uint8_t> codes;
  std::vector<std::int32_t> zero;
  std::int64_t rows = 64, cols = 256, group = 64, tokens = 5;
};

GptqCase load_gptq() {
  using lowbit_test::load;
  const std::string dir = "torch/gptq/small/";
  GptqCase c;
  std::vector<std::int64_t> shape;
  c.q = load<float>(dir + "w4_g64_asym_bs128/Q.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{c.rows, c.cols});
  c.codes = load<std::uint8_t>(dir + "w4_g64_asym_bs128/codes.npy");
  c.scale = load<float>(dir + "w4_g64_asym_bs128/scale.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{c.rows, c.cols / c.group});
  c.zero = load<std::int32_t>(dir + "w4_g64_asym_bs128/zero.npy");
  c.x = load<float>(dir + "X.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{512, c.cols});
  REQUIRE(c.codes.size() == c.q.size());
  REQUIRE(c.zero.size() == c.scale.size());
  return c;
}

TEST_CASE("DequantLinear and Int8ActLinear on GPTQ codes equal DenseLinear on GPTQ's Q") {
  const GptqCase g = load_gptq();
  lowbit::ThreadPool pool(2);
  Result<std::unique_ptr<llama::DequantLinear>> d = llama::DequantLinear::from_codes(
      4, g.rows, g.cols, g.group, g.codes.data(), g.scale.data(), g.zero.data(), &pool);
  REQUIRE(d);
  // 4-bit codes, a float32 scale and a 4-bit zero point per 64 weights.
  CHECK((*d)->weight_bytes() == static_cast<std::size_t>(g.rows * g.cols / 2 + g.rows * 4 * 4 + g.rows * 4 / 2));
  CHECK((*d)->bits_per_weight() == doctest::Approx(4.0 + 32.0 / 64 + 4.0 / 64));
  CHECK((*d)->format() == "dequant packed 4-bit asym g64");
  {
    ForcedIsa scalar(lowbit::Isa::kScalar);
    std::vector<float> y(static_cast<std::size_t>(g.tokens * g.rows));
    REQUIRE((*d)->forward(g.x.data(), g.tokens, y.data()).ok());
    std::int64_t differ = 0;
    for (std::int64_t t = 0; t < g.tokens; ++t)
      for (std::int64_t r = 0; r < g.rows; ++r)
        differ += y[static_cast<std::size_t>(t * g.rows + r)] !=
                  static_cast<float>(exact_dot(g.q.data() + r * g.cols, g.x.data() + t * g.cols, g.cols));
    CHECK(differ == 0);
  }
  for (std::int64_t tokens : {std::int64_t{1}, g.tokens}) {
    const double worst = check_layer(**d, g.q, g.x.data(), tokens,
                                     [&](const float* w, const float* x, std::int64_t k) {
                                       return fp32_bound(w, x, k, g.group);
                                     });
    MESSAGE("gptq dequant tokens ", tokens, ": worst error / bound ", worst);
  }

  Result<std::unique_ptr<llama::Int8ActLinear>> i = llama::Int8ActLinear::from_codes(
      4, g.rows, g.cols, g.group, g.codes.data(), g.scale.data(), g.zero.data(), &pool);
  REQUIRE(i);
  CHECK((*i)->format() == "int8-act lowbit-u4-asym");
  for (std::int64_t tokens : {std::int64_t{1}, g.tokens}) {
    const double worst = check_layer(**i, g.q, g.x.data(), tokens, int8_block_bound);
    MESSAGE("gptq int8-act tokens ", tokens, ": worst error / bound ", worst);
  }

  // Through lowbit's own GptqResult shape: consecutive groups are deployable, act-order ones not.
  lowbit::GptqResult r;
  r.rows = g.rows;
  r.cols = g.cols;
  r.group_size = g.group;
  r.groups = g.cols / g.group;
  r.codes = g.codes;
  r.scales = g.scale;
  r.zeros = g.zero;
  for (std::int64_t c = 0; c < g.cols; ++c) r.g_idx.push_back(c / g.group);
  CHECK(llama::DequantLinear::from_gptq(r, 4, &pool));
  CHECK(llama::Int8ActLinear::from_gptq(r, 4, &pool));
  std::swap(r.g_idx[0], r.g_idx[200]);
  CHECK(llama::DequantLinear::from_gptq(r, 4).status().code() == Errc::kUnsupported);
  CHECK(llama::Int8ActLinear::from_gptq(r, 4).status().code() == Errc::kUnsupported);
}

TEST_CASE("Int8ActLinear on ggml blocks equals DenseLinear within the activation-rounding bound") {
  const std::vector<float> act = lowbit_test::load_f32("ggml/inputs/act.f32");
  lowbit::ThreadPool pool(2);
  struct Case {
    GgmlType type;
    const char* name;
    const char* format;
  };
  for (const Case& c : {Case{GgmlType::kQ4_0, "q4_0", "int8-act q4_0"},
                        Case{GgmlType::kQ4_1, "q4_1", "int8-act q4_1"},
                        Case{GgmlType::kIQ4_NL, "iq4_nl", "int8-act iq4_nl"},
                        Case{GgmlType::kQ8_0, "q8_0", "int8-act q8_0"}}) {
    CAPTURE(c.name);
    const std::vector<std::uint8_t> blocks =
        lowbit_test::load_bytes(ggml_file("weightlike", c.name, ".bin"));
    const std::vector<float> deq = lowbit_test::load_f32(ggml_file("weightlike", c.name, ".deq.f32"));
    // Unaligned source bytes are fine (copied into block structs).
    std::vector<std::uint8_t> shifted(blocks.size() + 1);
    std::memcpy(shifted.data() + 1, blocks.data(), blocks.size());
    Result<std::unique_ptr<llama::Int8ActLinear>> l = llama::Int8ActLinear::from_ggml(
        c.type, shifted.data() + 1, blocks.size(), kRows, kCols, &pool);
    REQUIRE(l);
    CHECK((*l)->format() == c.format);
    // 8 rows pad to one 16-row block: the interleaved size is twice the ggml bytes here.
    CHECK((*l)->weight_bytes() == 2 * blocks.size());
    for (std::int64_t tokens : {std::int64_t{1}, std::int64_t{3}, kRows}) {
      const double worst = check_layer(**l, deq, act.data(), tokens, int8_block_bound);
      MESSAGE(std::string(c.name), " tokens ", tokens, ": worst error / bound ", worst);
    }
  }
}

TEST_CASE("W8A8Linear equals SmoothQuant's W8A8Linear and DenseLinear within the per-token bound") {
  using lowbit_test::load;
  const std::string dir = "torch/smoothquant/";
  constexpr std::int64_t kTokens = 64, kIn = 512, kOut = 1024;
  const std::vector<float> bias = load<float>(dir + "fc1_bias.npy");
  const std::vector<float> x = load<float>(dir + "a0p5/ln_out.npy");
  const std::vector<std::int8_t> codes = load<std::int8_t>(dir + "a0p5/fc1_w_per_channel_codes.npy");
  const std::vector<float> steps = load<float>(dir + "a0p5/fc1_w_per_channel_scale.npy");
  const std::vector<float> want = load<float>(dir + "a0p5/fc1_w8a8_out.npy");
  const std::vector<std::int8_t> xcodes = load<std::int8_t>(dir + "a0p5/act_per_token_codes.npy");
  const std::vector<float> xsteps = load<float>(dir + "a0p5/act_per_token_scale.npy");
  REQUIRE(x.size() == static_cast<std::size_t>(kTokens * kIn));
  REQUIRE(codes.size() == static_cast<std::size_t>(kOut * kIn));
  REQUIRE(want.size() == static_cast<std::size_t>(kTokens * kOut));
  lowbit::ThreadPool pool(2);

  // With the bias: the reference's output (float32 fake-quantized GEMM) within its rounding.
  Result<std::unique_ptr<llama::W8A8Linear>> with_bias = llama::W8A8Linear::from_codes(
      codes.data(), steps.data(), kOut, kIn, &pool, bias.data());
  REQUIRE(with_bias);
  std::vector<float> y(want.size());
  REQUIRE((*with_bias)->forward(x.data(), kTokens, y.data()).ok());
  std::int64_t outside = 0;
  for (std::int64_t t = 0; t < kTokens; ++t)
    for (std::int64_t o = 0; o < kOut; ++o) {
      double magnitude = 0.0;
      for (std::int64_t k = 0; k < kIn; ++k)
        magnitude += std::fabs(static_cast<double>(xcodes[static_cast<std::size_t>(t * kIn + k)]) *
                               codes[static_cast<std::size_t>(o * kIn + k)]);
      magnitude *= static_cast<double>(xsteps[static_cast<std::size_t>(t)]) * steps[static_cast<std::size_t>(o)];
      const auto i = static_cast<std::size_t>(t * kOut + o);
      const double bound = static_cast<double>(kIn + 8) * std::ldexp(magnitude, -24) +
                           std::ldexp(std::fabs(static_cast<double>(want[i])), -23);
      outside += !(std::fabs(static_cast<double>(y[i]) - want[i]) <= bound);
    }
  CHECK(outside == 0);

  // Without the bias (a Llama linear): DenseLinear on code·step within the activation bound.
  Result<std::unique_ptr<llama::W8A8Linear>> l =
      llama::W8A8Linear::from_codes(codes.data(), steps.data(), kOut, kIn, &pool);
  REQUIRE(l);
  CHECK((*l)->weight_bytes() == static_cast<std::size_t>(kOut * kIn + kOut * 8));
  CHECK((*l)->format() == "w8a8 per-channel");
  std::vector<float> deq(codes.size());
  for (std::int64_t o = 0; o < kOut; ++o)
    for (std::int64_t k = 0; k < kIn; ++k)
      deq[static_cast<std::size_t>(o * kIn + k)] =
          static_cast<float>(codes[static_cast<std::size_t>(o * kIn + k)]) * steps[static_cast<std::size_t>(o)];
  for (std::int64_t tokens : {std::int64_t{1}, std::int64_t{5}}) {
    const double worst = check_layer(**l, deq, x.data(), tokens, int8_token_bound);
    MESSAGE("w8a8 tokens ", tokens, ": worst error / bound ", worst);
  }

  // W8A8Linear::quantize on the fp32 weight reproduces the reference's codes (orig variant).
  const std::vector<float> w = load<float>(dir + "fc1_weight.npy");
  const std::vector<std::int8_t> orig_codes = load<std::int8_t>(dir + "orig/fc1_w_per_channel_codes.npy");
  Result<std::unique_ptr<llama::W8A8Linear>> q = llama::W8A8Linear::quantize(w.data(), kOut, kIn);
  REQUIRE(q);
  std::int64_t wrong = 0;
  for (std::int64_t o = 0; o < kOut; ++o)
    for (std::int64_t k = 0; k < kIn; ++k)
      wrong += (*q)->weights().code(o, k) != orig_codes[static_cast<std::size_t>(o * kIn + k)];
  CHECK(wrong == 0);
}

TEST_CASE("quantized linears: bad input is a Status") {
  const std::int64_t out = 4, in = 64;
  std::vector<float> w(static_cast<std::size_t>(out * in));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(static_cast<int>(i % 17) - 8);
  std::vector<float> x(static_cast<std::size_t>(2 * in), 0.5f), y(static_cast<std::size_t>(2 * out));

  // ggml: wrong byte counts, K not a multiple of the block, types without a kernel.
  Result<std::unique_ptr<llama::DequantLinear>> q8 =
      llama::DequantLinear::quantize_ggml(GgmlType::kQ8_0, w.data(), out, in);
  REQUIRE(q8);
  CHECK((*q8)->weight_bytes() == static_cast<std::size_t>(out * in / 32 * 34));
  CHECK(llama::DequantLinear::from_ggml(GgmlType::kQ8_0, std::vector<std::uint8_t>(271), out, in)
            .status()
            .code() == Errc::kTruncated);
  CHECK(llama::DequantLinear::from_ggml(GgmlType::kQ8_0, std::vector<std::uint8_t>(273), out, in)
            .status()
            .code() == Errc::kShapeMismatch);
  CHECK(llama::DequantLinear::quantize_ggml(GgmlType::kQ4_K, w.data(), out, in).status().code() ==
        Errc::kIndivisible);
  CHECK(llama::DequantLinear::quantize_ggml(GgmlType::kIQ2_XXS, w.data(), out, in).status().code() ==
        Errc::kUnsupported);
  CHECK(llama::DequantLinear::quantize_ggml(GgmlType::kQ8_0, w.data(), 0, in).status().code() ==
        Errc::kShapeMismatch);
  CHECK(llama::DequantLinear::quantize_ggml(GgmlType::kQ8_0, nullptr, out, in).status().code() ==
        Errc::kInvalidArgument);
  CHECK(llama::Int8ActLinear::quantize_ggml(GgmlType::kQ4_K, w.data(), out, 256).status().code() ==
        Errc::kUnsupported);
  CHECK(llama::Int8ActLinear::quantize_ggml(GgmlType::kQ4_0, w.data(), out, 48).status().code() ==
        Errc::kIndivisible);
  std::vector<std::uint8_t> short_bytes(10);
  CHECK(llama::Int8ActLinear::from_ggml(GgmlType::kQ4_0, short_bytes.data(), short_bytes.size(),
                                        out, in)
            .status()
            .code() == Errc::kTruncated);
  // NaN weights.
  std::vector<float> bad = w;
  bad[70] = std::numeric_limits<float>::quiet_NaN();
  const Status nan_q8 = llama::DequantLinear::quantize_ggml(GgmlType::kQ8_0, bad.data(), out, in).status();
  CHECK(nan_q8.code() == Errc::kNonFinite);
  CHECK(nan_q8.index() == 70);
  CHECK(llama::Int8ActLinear::quantize_ggml(GgmlType::kQ4_0, bad.data(), out, in).status().code() ==
        Errc::kNonFinite);
  CHECK(llama::W8A8Linear::quantize(bad.data(), out, in).status().code() == Errc::kNonFinite);

  // Codes + group parameters: codes or zero points outside the width, bad scales, bad groups.
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(out * in), 3);
  std::vector<float> scales(static_cast<std::size_t>(out * 2), 0.1f);
  std::vector<std::int32_t> zeros(scales.size(), 8);
  CHECK(llama::DequantLinear::from_codes(4, out, in, 32, codes.data(), scales.data(), zeros.data()));
  CHECK(llama::DequantLinear::from_codes(3, out, in, 32, codes.data(), scales.data(), zeros.data())
            .status()
            .code() == Errc::kOutOfRange);  // zero point 8 is not a 3-bit code
  CHECK(llama::DequantLinear::from_codes(9, out, in, 32, codes.data(), scales.data(), zeros.data())
            .status()
            .code() == Errc::kInvalidArgument);
  CHECK(llama::DequantLinear::from_codes(4, out, in, 48, codes.data(), scales.data(), zeros.data())
            .status()
            .code() == Errc::kIndivisible);
  CHECK(llama::DequantLinear::from_codes(4, out, in, 32, nullptr, scales.data(), zeros.data())
            .status()
            .code() == Errc::kInvalidArgument);
  codes[5] = 16;
  CHECK(llama::DequantLinear::from_codes(4, out, in, 32, codes.data(), scales.data(), zeros.data())
            .status()
            .code() == Errc::kOutOfRange);
  codes[5] = 3;
  scales[3] = std::numeric_limits<float>::infinity();
  const Status inf_scale =
      llama::DequantLinear::from_codes(4, out, in, 32, codes.data(), scales.data(), zeros.data()).status();
  CHECK(inf_scale.code() == Errc::kNonFinite);
  CHECK(inf_scale.index() == 3);
  scales[3] = 0.0f;
  CHECK_FALSE(llama::Int8ActLinear::from_codes(4, out, in, 32, codes.data(), scales.data(), zeros.data()));
  scales[3] = 0.1f;
  CHECK(llama::Int8ActLinear::from_codes(3, out, in, 32, codes.data(), scales.data(), zeros.data())
            .status()
            .code() == Errc::kUnsupported);
  const std::vector<float> scales16(static_cast<std::size_t>(out * 4), 0.1f);
  const std::vector<std::int32_t> zeros16(scales16.size(), 8);
  CHECK(llama::DequantLinear::from_codes(4, out, in, 16, codes.data(), scales16.data(), zeros16.data()));
  CHECK(llama::Int8ActLinear::from_codes(4, out, in, 16, codes.data(), scales16.data(), zeros16.data())
            .status()
            .code() == Errc::kUnsupported);  // groups must be a multiple of 32 (16 is 4 per row)
  std::vector<std::int8_t> icodes(static_cast<std::size_t>(out * in), 1);
  std::vector<float> row_scales(static_cast<std::size_t>(out), 0.1f);
  row_scales[2] = std::numeric_limits<float>::quiet_NaN();
  CHECK(llama::W8A8Linear::from_codes(icodes.data(), row_scales.data(), out, in).status().code() ==
        Errc::kNonFinite);
  CHECK(llama::W8A8Linear::from_codes(nullptr, row_scales.data(), out, in).status().code() ==
        Errc::kInvalidArgument);

  // forward: negative tokens or null buffers; zero tokens does nothing (DenseLinear's contract).
  Result<std::unique_ptr<llama::Int8ActLinear>> i8 =
      llama::Int8ActLinear::quantize_ggml(GgmlType::kQ8_0, w.data(), out, in);
  Result<std::unique_ptr<llama::W8A8Linear>> w8 = llama::W8A8Linear::quantize(w.data(), out, in);
  REQUIRE(i8);
  REQUIRE(w8);
  const llama::Linear* layers[] = {q8->get(), i8->get(), w8->get()};
  for (const llama::Linear* l : layers) {
    CHECK(l->forward(x.data(), -1, y.data()).code() == Errc::kInvalidArgument);
    CHECK(l->forward(nullptr, 2, y.data()).code() == Errc::kInvalidArgument);
    CHECK(l->forward(x.data(), 2, nullptr).code() == Errc::kInvalidArgument);
    CHECK(l->forward(nullptr, 0, nullptr).ok());
    // y overlapping x is kInvalidArgument for dequant_gemm and gemm; gemm_w8a8 quantizes x into
    // its workspace before writing y, and documents that y may alias x.
    std::vector<float> xy(static_cast<std::size_t>(2 * in), 0.25f);
    if (l != w8->get()) CHECK(l->forward(xy.data(), 1, xy.data() + 1).code() == Errc::kInvalidArgument);
    CHECK(l->forward(x.data(), 2, y.data()).ok());
  }
}

TEST_CASE("quantized linears: forward from two threads at once on one pool") {
  const std::vector<float> act = lowbit_test::load_f32("ggml/inputs/act.f32");
  const std::vector<float> w = lowbit_test::load_f32("ggml/inputs/weightlike.f32");
  lowbit::ThreadPool pool(2);
  std::vector<std::unique_ptr<llama::Linear>> layers;
  layers.push_back(std::move(*llama::DequantLinear::quantize_ggml(GgmlType::kQ4_K, w.data(), kRows, kCols, &pool)));
  layers.push_back(std::move(*llama::Int8ActLinear::quantize_ggml(GgmlType::kQ4_0, w.data(), kRows, kCols, &pool)));
  layers.push_back(std::move(*llama::W8A8Linear::quantize(w.data(), kRows, kCols, &pool)));
  for (const std::unique_ptr<llama::Linear>& l : layers) {
    std::vector<float> serial(static_cast<std::size_t>(kRows * kRows));
    REQUIRE(l->forward(act.data(), kRows, serial.data()).ok());
    std::vector<float> a(serial.size()), b(serial.size());
    std::atomic<int> failures{0};
    const auto run = [&](std::vector<float>* out) {
      for (int rep = 0; rep < 20; ++rep)
        if (!l->forward(act.data(), kRows, out->data()).ok() || *out != serial) ++failures;
    };
    std::thread other(run, &a);
    run(&b);
    other.join();
    CHECK(failures.load() == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// tinylm with every decoder linear in Q8_0.

const std::string kModelDir = LOWBIT_TEST_DATA_DIR "/../../models/tinylm";
constexpr std::int64_t kWindow = 256, kVocab = 256;

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  INFO("reading ", path);
  REQUIRE(f.good());
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// -ln softmax(row)[target], in double (independent of llama.hpp's helper).
double nll(const float* row, std::int64_t target) {
  double top = row[0];
  for (std::int64_t i = 1; i < kVocab; ++i) top = std::max(top, static_cast<double>(row[i]));
  double sum = 0.0;
  for (std::int64_t i = 0; i < kVocab; ++i) sum += std::exp(static_cast<double>(row[i]) - top);
  return top + std::log(sum) - static_cast<double>(row[target]);
}

double window_loss(const float* logits, const std::vector<std::int32_t>& ids) {
  double s = 0.0;
  for (std::int64_t t = 0; t + 1 < kWindow; ++t) s += nll(logits + t * kVocab, ids[static_cast<std::size_t>(t + 1)]);
  return s / static_cast<double>(kWindow - 1);
}

TEST_CASE("tinylm with Q8_0 DequantLinear: window loss within 0.5% of PyTorch fp32") {
  const std::vector<std::uint8_t> text = read_file(kModelDir + "/eval.txt");
  REQUIRE(text.size() >= static_cast<std::size_t>(kWindow));
  const std::vector<std::int32_t> ids(text.begin(), text.begin() + kWindow);

  // The fp32 reference: PyTorch's logits of window 0.
  const lowbit_test::Npy ref = lowbit_test::load_npy_file(kModelDir + "/logits_ref.npy");
  INFO("logits_ref.npy: ", ref.error);
  REQUIRE(ref.error.empty());
  REQUIRE(ref.dtype == "<f4");
  REQUIRE(ref.shape == std::vector<std::int64_t>{2, kWindow, kVocab});
  std::vector<float> ref_logits(static_cast<std::size_t>(kWindow * kVocab));
  std::memcpy(ref_logits.data(), ref.bytes.data(), ref_logits.size() * sizeof(float));
  const double fp32_loss = window_loss(ref_logits.data(), ids);

  lowbit::ThreadPool pool(2);
  std::vector<llama::LinearSize> sizes;
  Result<llama::LlamaModel> model =
      llama::LlamaModel::load(kModelDir, llama::dequant_factory(GgmlType::kQ8_0, &pool, &sizes));
  INFO("loading ", kModelDir, ": ", model.status().message());
  REQUIRE(model);
  const llama::LlamaConfig& c = model->config();
  REQUIRE(sizes.size() == static_cast<std::size_t>(c.num_layers * llama::kLinearsPerLayer));
  std::size_t bytes = 0, fp32_bytes = 0;
  for (const llama::LinearSize& s : sizes) {
    CHECK(s.format == "dequant q8_0");
    CHECK(s.bytes == static_cast<std::size_t>(s.out_features * s.in_features / 32 * 34));
    bytes += s.bytes;
    fp32_bytes += s.fp32_bytes;
  }
  CHECK(sizes.front().name == "model.layers.0.self_attn.q_proj");
  MESSAGE("tinylm decoder linears: fp32 ", fp32_bytes, " bytes, Q8_0 ", bytes, " bytes");

  Result<llama::LlamaState> state = model->new_state(kWindow);
  REQUIRE(state);
  std::vector<float> logits(static_cast<std::size_t>(kWindow * kVocab));
  REQUIRE(model->forward(ids.data(), kWindow, *state, logits.data()).ok());
  const double q8_loss = window_loss(logits.data(), ids);
  MESSAGE("window 0 loss: PyTorch fp32 ", fp32_loss, ", lowbit Q8_0 ", q8_loss, " (",
          100.0 * (q8_loss - fp32_loss) / fp32_loss, "%)");
  CHECK(std::fabs(q8_loss - fp32_loss) <= 0.005 * fp32_loss);

  // Replacing a linear with one of the wrong shape is the model's kShapeMismatch.
  const std::vector<float> w = lowbit_test::load_f32("ggml/inputs/weightlike.f32");
  Result<std::unique_ptr<llama::DequantLinear>> wrong =
      llama::DequantLinear::quantize_ggml(GgmlType::kQ8_0, w.data(), kRows, kCols, &pool);
  REQUIRE(wrong);
  CHECK(model->replace_linear("model.layers.0.mlp.down_proj", std::move(*wrong)).code() ==
        Errc::kShapeMismatch);
}

}  // namespace
