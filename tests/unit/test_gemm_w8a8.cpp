// The W8A8 GEMM (gemm_w8a8.hpp): the scalar reference against an independent computation in this
// file, every ISA path this CPU runs against the reference bit for bit, and the whole product
// against mit-han-lab/smoothquant's W8A8Linear (tests/data/torch/smoothquant, see its README).
//
// Why bit-exact: every path sums the same int8 products exactly in int32 and then applies the
// same three correctly rounded float operations (s = sx·sw, v = float(acc), fma(v, s, b) or v·s),
// so fp32 outputs must be identical, NaN positions included. The independent computation below
// sums in int64 from the unpacked codes and quantizes with std::nearbyint, so packing, padding,
// the VNNI correction and the sign trick are all checked against arithmetic that shares none of
// their code.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "lowbit/cpu.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/gemm_w8a8.hpp"
#include "lowbit/quantizer.hpp"
#include "support/oracle.hpp"

namespace {

using lowbit::Errc;
using lowbit::Isa;

constexpr std::uint32_t kSeed = 20240605;

// Restores automatic dispatch when a test case ends, even on a failed REQUIRE.
struct ForcedIsa {
  explicit ForcedIsa(Isa isa) { REQUIRE(lowbit::force_isa_for_testing(isa)); }
  ~ForcedIsa() { lowbit::reset_forced_isa(); }
  ForcedIsa(const ForcedIsa&) = delete;
  ForcedIsa& operator=(const ForcedIsa&) = delete;
};

struct Layer {
  std::int64_t out = 0, in = 0;
  std::vector<std::int8_t> codes;  // out × in row-major
  std::vector<float> scales, bias;
};

// Random codes over the whole int8 range (-128 included, as Symmetric quantizers produce),
// positive scales spanning a few binades, and an optional bias.
Layer random_layer(std::int64_t out, std::int64_t in, bool with_bias, std::mt19937& rng) {
  Layer l;
  l.out = out;
  l.in = in;
  std::uniform_int_distribution<int> code(-128, 127);
  std::uniform_real_distribution<float> unit(0.25f, 4.0f), signed_unit(-2.0f, 2.0f);
  l.codes.resize(static_cast<std::size_t>(out * in));
  for (std::int8_t& c : l.codes) c = static_cast<std::int8_t>(code(rng));
  for (std::int64_t o = 0; o < out; ++o) l.scales.push_back(unit(rng) * 1e-3f);
  if (with_bias)
    for (std::int64_t o = 0; o < out; ++o) l.bias.push_back(signed_unit(rng));
  return l;
}

lowbit::W8A8Weights prepare(const Layer& l) {
  lowbit::Result<lowbit::W8A8Weights> w = lowbit::W8A8Weights::prepare(
      lowbit::row_major<const std::int8_t>(l.codes.data(), l.out, l.in),
      lowbit::flat<const float>(l.scales.data(), l.out),
      l.bias.empty() ? lowbit::MatrixView<const float>()
                     : lowbit::flat<const float>(l.bias.data(), l.out));
  REQUIRE(w);
  return *w;
}

// Activations with per-token magnitudes that differ by orders of magnitude and an outlier channel,
// as LLM activations have.
std::vector<float> random_activations(std::int64_t tokens, std::int64_t in, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(tokens * in));
  for (std::int64_t t = 0; t < tokens; ++t) {
    const float magnitude = std::ldexp(1.0f, static_cast<int>(t % 7) - 3);
    for (std::int64_t k = 0; k < in; ++k)
      x[static_cast<std::size_t>(t * in + k)] = n(rng) * magnitude * (k % 13 == 5 ? 30.0f : 1.0f);
  }
  return x;
}

// The activation quantizer written out independently (std::nearbyint, not lowbit's rounding).
struct Quantized {
  std::vector<std::int32_t> codes;
  std::vector<float> scales;
};
Quantized independent_quantize(const std::vector<float>& x, std::int64_t tokens, std::int64_t in) {
  Quantized q;
  for (std::int64_t t = 0; t < tokens; ++t) {
    float absmax = 0.0f;
    for (std::int64_t k = 0; k < in; ++k)
      absmax = std::max(absmax, std::fabs(x[static_cast<std::size_t>(t * in + k)]));
    const float step = std::max(absmax, 1e-5f) / 127.0f;
    q.scales.push_back(step);
    for (std::int64_t k = 0; k < in; ++k) {
      const float r = std::nearbyint(x[static_cast<std::size_t>(t * in + k)] / step);
      q.codes.push_back(static_cast<std::int32_t>(std::min(127.0f, std::max(-127.0f, r))));
    }
  }
  return q;
}

// Y from codes: int64 sums, then the documented epilogue.
std::vector<float> independent_gemm(const Quantized& q, const Layer& l, std::int64_t tokens,
                                    std::vector<std::int64_t>* sums = nullptr) {
  std::vector<float> y(static_cast<std::size_t>(tokens * l.out));
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t o = 0; o < l.out; ++o) {
      std::int64_t acc = 0;
      for (std::int64_t k = 0; k < l.in; ++k)
        acc += std::int64_t{q.codes[static_cast<std::size_t>(t * l.in + k)]} *
               l.codes[static_cast<std::size_t>(o * l.in + k)];
      if (sums != nullptr) sums->push_back(acc);
      const float s = q.scales[static_cast<std::size_t>(t)] * l.scales[static_cast<std::size_t>(o)];
      const auto v = static_cast<float>(acc);
      y[static_cast<std::size_t>(t * l.out + o)] =
          l.bias.empty() ? v * s : std::fma(v, s, l.bias[static_cast<std::size_t>(o)]);
    }
  return y;
}

std::vector<float> run(const std::vector<float>& x, std::int64_t tokens, const lowbit::W8A8Weights& w,
                       lowbit::Executor& executor) {
  std::vector<float> y(static_cast<std::size_t>(tokens * w.out_features()), -1.0f);
  const lowbit::Status s = lowbit::gemm_w8a8(
      w, lowbit::row_major(x.data(), tokens, w.in_features()),
      lowbit::row_major(y.data(), tokens, w.out_features()), executor);
  REQUIRE_MESSAGE(s.ok(), s.message());
  return y;
}

// Bit-for-bit equality (NaN payloads and signs included); reports the first difference.
std::int64_t count_bit_differences(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  std::int64_t n = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      if (n == 0) MESSAGE("first difference at ", i, ": ", got[i], " vs ", want[i]);
      ++n;
    }
  }
  return n;
}

struct Shape {
  std::int64_t tokens, out, in;
};
// Tokens 1, 2, 3, 17 and tiles' tails (4, 5, 6, 7, 13); rows below, at and past the 16-row panel
// and 64-row block; K not a multiple of 4, 16, 32 or 64.
const Shape kShapes[] = {
    {1, 1, 1},     {1, 17, 3},    {2, 64, 16},   {3, 65, 33},   {17, 130, 100}, {4, 16, 64},
    {5, 15, 65},   {6, 63, 31},   {7, 129, 257}, {13, 200, 48}, {1, 300, 515},  {2, 1, 127},
    {12, 64, 128}, {3, 80, 4},    {17, 33, 63},  {6, 128, 1},
};

std::string isa_list_not_runnable() {
  std::string s;
  for (int i = 0; i < lowbit::kIsaCount; ++i)
    if (!lowbit::isa_supported(static_cast<Isa>(i))) s += std::string(" ") + lowbit::isa_name(static_cast<Isa>(i));
  return s;
}

}  // namespace

TEST_CASE("w8a8: the scalar reference equals an independent int64 computation, and real-valued Y") {
  const ForcedIsa scalar(Isa::kScalar);
  CHECK(lowbit::gemm_w8a8_isa() == Isa::kScalar);
  std::mt19937 rng(kSeed);
  MESSAGE("seed ", kSeed);
  lowbit::SerialExecutor serial;
  for (const Shape& sh : kShapes)
    for (bool bias : {false, true}) {
      CAPTURE(sh.tokens);
      CAPTURE(sh.out);
      CAPTURE(sh.in);
      CAPTURE(bias);
      const Layer l = random_layer(sh.out, sh.in, bias, rng);
      const std::vector<float> x = random_activations(sh.tokens, sh.in, rng);
      const lowbit::W8A8Weights w = prepare(l);
      const std::vector<float> y = run(x, sh.tokens, w, serial);
      std::vector<std::int64_t> sums;
      const Quantized q = independent_quantize(x, sh.tokens, sh.in);
      CHECK(count_bit_differences(y, independent_gemm(q, l, sh.tokens, &sums)) == 0);
      // And against the real value sx·sw·acc + b in double: three float roundings (float(acc),
      // s, the fma) each contribute at most 2^-24 relative of |sx·sw·acc| or of |y|.
      for (std::int64_t t = 0; t < sh.tokens; ++t)
        for (std::int64_t o = 0; o < sh.out; ++o) {
          const auto i = static_cast<std::size_t>(t * sh.out + o);
          const double prod = double{q.scales[static_cast<std::size_t>(t)]} *
                              l.scales[static_cast<std::size_t>(o)] * static_cast<double>(sums[i]);
          const double exact = prod + (bias ? l.bias[static_cast<std::size_t>(o)] : 0.0);
          const double u = std::ldexp(1.0, -24);
          CHECK(std::fabs(y[i] - exact) <= 2.0 * u * std::fabs(prod) + u * std::fabs(exact) + 1e-30);
        }
    }
}

TEST_CASE("w8a8: every ISA path equals the scalar reference bit for bit (odd shapes, threads)") {
  MESSAGE("paths this CPU cannot run (not tested here):", isa_list_not_runnable());
  std::mt19937 rng(kSeed + 1);
  lowbit::SerialExecutor serial;
  lowbit::ThreadPool pool2(2), pool3(3);
  lowbit::Executor* executors[] = {&serial, &pool2, &pool3};
  for (const Shape& sh : kShapes)
    for (bool bias : {false, true}) {
      CAPTURE(sh.tokens);
      CAPTURE(sh.out);
      CAPTURE(sh.in);
      CAPTURE(bias);
      const Layer l = random_layer(sh.out, sh.in, bias, rng);
      const std::vector<float> x = random_activations(sh.tokens, sh.in, rng);
      const lowbit::W8A8Weights w = prepare(l);
      std::vector<float> want;
      {
        const ForcedIsa scalar(Isa::kScalar);
        want = run(x, sh.tokens, w, serial);
      }
      for (const Isa isa : lowbit::available_isas()) {
        const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
        const ForcedIsa forced(isa);
        for (lowbit::Executor* e : executors) {
          CAPTURE(e->concurrency());
          CHECK(count_bit_differences(run(x, sh.tokens, w, *e), want) == 0);
        }
      }
    }
}

TEST_CASE("w8a8: each ISA resolves to its own kernel or its documented fallback") {
  for (const Isa isa : lowbit::available_isas()) {
    const ForcedIsa forced(isa);
    Isa want = isa;
    if (isa == Isa::kAvx512) want = lowbit::isa_supported(Isa::kAvxVnni) ? Isa::kAvxVnni : Isa::kAvx2;
    CHECK_MESSAGE(lowbit::gemm_w8a8_isa() == want, std::string(lowbit::isa_name(isa)));
  }
  MESSAGE("automatic dispatch runs ", std::string(lowbit::isa_name(lowbit::gemm_w8a8_isa())));
}

TEST_CASE("w8a8: activation ties round half to even by division on every path") {
  // absmax 128 makes the step 128/127 (float), and x = float((j + 0.5) · step) divides back to
  // exactly j + 0.5 for these j, a tie that goes to the even neighbour; multiplying by the float
  // reciprocal instead lands an ulp short (j + 0.49999) and would round the other way (found by
  // search over float32 steps). Token 1 is token 0 negated. Through an identity weight (code 1,
  // scale 1) each output is code · step, so y shows the codes.
  const std::int64_t in = 100;
  const int ties[] = {-120, -104, -88, 87, 103, 119};
  const float step = 128.0f / 127.0f;
  std::vector<float> x(static_cast<std::size_t>(2 * in));
  for (std::int64_t k = 0; k < in; ++k) {
    const double j = ties[k % 6];
    x[static_cast<std::size_t>(k)] = static_cast<float>((j + 0.5) * step);
    x[static_cast<std::size_t>(in + k)] = -x[static_cast<std::size_t>(k)];
  }
  x[7] = 128.0f;
  x[static_cast<std::size_t>(in + 7)] = -128.0f;
  Layer eye;
  eye.out = eye.in = in;
  eye.codes.assign(static_cast<std::size_t>(in * in), 0);
  for (std::int64_t k = 0; k < in; ++k) eye.codes[static_cast<std::size_t>(k * in + k)] = 1;
  eye.scales.assign(static_cast<std::size_t>(in), 1.0f);
  const lowbit::W8A8Weights w = prepare(eye);
  const Quantized q = independent_quantize(x, 2, in);
  REQUIRE(q.scales[0] == step);
  REQUIRE(q.codes[0] == -120);  // -119.5 -> -120 (even), not -119
  lowbit::SerialExecutor serial;
  for (const Isa isa : lowbit::available_isas()) {
    const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
    const ForcedIsa forced(isa);
    CHECK(count_bit_differences(run(x, 2, w, serial), independent_gemm(q, eye, 2)) == 0);
  }
}

TEST_CASE("w8a8: extreme codes at the largest K stay exact in int32 on every path") {
  // All weights -128 and all activations -127: acc = 128 · 127 · K = 2130706432 at K = 2^17, just
  // below 2^31, and the VNNI correction 128 · Σ qw = -2^31 exactly.
  const std::int64_t in = lowbit::kW8A8MaxInFeatures, tokens = 2;
  Layer l;
  l.out = 3;
  l.in = in;
  l.codes.assign(static_cast<std::size_t>(l.out * in), static_cast<std::int8_t>(-128));
  for (std::int64_t k = 0; k < in; ++k) l.codes[static_cast<std::size_t>(2 * in + k)] = 127;  // row 2: mixed
  for (std::int64_t k = 0; k < in; k += 2) l.codes[static_cast<std::size_t>(1 * in + k)] = 127;
  l.scales = {1.0f, 1.0f, 1.0f};
  const lowbit::W8A8Weights w = prepare(l);
  std::vector<float> x(static_cast<std::size_t>(tokens * in), -1.0f);
  for (std::int64_t k = 0; k < in; ++k) x[static_cast<std::size_t>(in + k)] = 1.0f;  // token 1: +127
  const double want[2][3] = {{128.0 * 127 * in, 128.0 * 127 * in / 2 - 127.0 * 127 * in / 2, -127.0 * 127 * in},
                             {-128.0 * 127 * in, 127.0 * 127 * in / 2 - 128.0 * 127 * in / 2, 127.0 * 127 * in}};
  lowbit::SerialExecutor serial;
  for (const Isa isa : lowbit::available_isas()) {
    const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
    const ForcedIsa forced(isa);
    const std::vector<float> y = run(x, tokens, w, serial);
    for (int t = 0; t < 2; ++t)
      for (int o = 0; o < 3; ++o) {
        // y = float(acc) · (1/127 · 1): compare with the same two roundings of the exact sum.
        const float s = 1.0f / 127.0f;
        CHECK(y[static_cast<std::size_t>(t * 3 + o)] == static_cast<float>(want[t][o]) * s);
      }
  }
  // One more k and int32 could overflow: refused.
  std::vector<std::int8_t> big(static_cast<std::size_t>(in + 1), 1);
  const float one = 1.0f;
  CHECK(lowbit::W8A8Weights::prepare(lowbit::row_major<const std::int8_t>(big.data(), 1, in + 1),
                                     lowbit::flat(&one, 1))
            .status()
            .code() == Errc::kUnsupported);
}

TEST_CASE("w8a8: a token with NaN or Inf gives NaN in exactly its own outputs") {
  std::mt19937 rng(kSeed + 2);
  const std::int64_t tokens = 9, out = 70, in = 45;
  const Layer l = random_layer(out, in, true, rng);
  const lowbit::W8A8Weights w = prepare(l);
  std::vector<float> x = random_activations(tokens, in, rng);
  x[static_cast<std::size_t>(2 * in + 44)] = std::numeric_limits<float>::quiet_NaN();  // in the scalar tail
  x[static_cast<std::size_t>(5 * in + 3)] = std::numeric_limits<float>::infinity();
  x[static_cast<std::size_t>(8 * in + 40)] = -std::numeric_limits<float>::infinity();
  const Quantized q = independent_quantize(x, tokens, in);
  lowbit::ThreadPool pool(2);
  for (const Isa isa : lowbit::available_isas()) {
    const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
    const ForcedIsa forced(isa);
    const std::vector<float> y = run(x, tokens, w, pool);
    for (std::int64_t t = 0; t < tokens; ++t) {
      const bool bad = t == 2 || t == 5 || t == 8;
      for (std::int64_t o = 0; o < out; ++o) {
        const float v = y[static_cast<std::size_t>(t * out + o)];
        if (bad) {
          CHECK(std::isnan(v));
        } else {
          // Clean tokens are computed exactly as if the bad ones were absent.
          Quantized one;
          one.codes.assign(q.codes.begin() + t * in, q.codes.begin() + (t + 1) * in);
          one.scales = {q.scales[static_cast<std::size_t>(t)]};
          const std::vector<float> want = independent_gemm(one, l, 1);
          CHECK(v == want[static_cast<std::size_t>(o)]);
        }
      }
    }
  }
}

TEST_CASE("w8a8: strided, unaligned and column-major activations; strided and transposed outputs") {
  std::mt19937 rng(kSeed + 3);
  const std::int64_t tokens = 11, out = 77, in = 70;
  const Layer l = random_layer(out, in, true, rng);
  const lowbit::W8A8Weights w = prepare(l);
  const std::vector<float> x = random_activations(tokens, in, rng);
  lowbit::SerialExecutor serial;
  std::vector<float> want;
  {
    const ForcedIsa scalar(Isa::kScalar);
    want = run(x, tokens, w, serial);
  }
  // x with padded rows starting one float past an aligned address, and x stored column-major.
  const std::int64_t ld = in + 5;
  std::vector<float> padded(static_cast<std::size_t>(tokens * ld + 1), 7.0f);
  std::vector<float> colmajor(static_cast<std::size_t>(tokens * in));
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t k = 0; k < in; ++k) {
      padded[static_cast<std::size_t>(1 + t * ld + k)] = x[static_cast<std::size_t>(t * in + k)];
      colmajor[static_cast<std::size_t>(k * tokens + t)] = x[static_cast<std::size_t>(t * in + k)];
    }
  const lowbit::MatrixView<const float> xs[] = {
      lowbit::strided_rows<const float>(padded.data() + 1, tokens, in, ld),
      lowbit::col_major<const float>(colmajor.data(), tokens, in)};
  for (const Isa isa : lowbit::available_isas()) {
    const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
    const ForcedIsa forced(isa);
    for (const auto& xv : xs) {
      // y with padded rows (offset by one float) and y column-major (col_stride = tokens).
      std::vector<float> yp(static_cast<std::size_t>(tokens * (out + 3) + 1), 5.0f);
      std::vector<float> yc(static_cast<std::size_t>(tokens * out), 5.0f);
      REQUIRE(lowbit::gemm_w8a8(w, xv, lowbit::strided_rows(yp.data() + 1, tokens, out, out + 3), serial));
      REQUIRE(lowbit::gemm_w8a8(w, xv, lowbit::col_major(yc.data(), tokens, out), serial));
      std::vector<float> got_p, got_c;
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t o = 0; o < out; ++o) {
          got_p.push_back(yp[static_cast<std::size_t>(1 + t * (out + 3) + o)]);
          got_c.push_back(yc[static_cast<std::size_t>(o * tokens + t)]);
        }
      CHECK(count_bit_differences(got_p, want) == 0);
      CHECK(count_bit_differences(got_c, want) == 0);
      // Padding between rows is untouched.
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t o = out; o < out + 3; ++o)
          CHECK(yp[static_cast<std::size_t>(1 + t * (out + 3) + o)] == 5.0f);
    }
  }
}

TEST_CASE("w8a8: pre-quantized activations, per token and per tensor, equal the fp32 path") {
  std::mt19937 rng(kSeed + 4);
  const std::int64_t tokens = 10, out = 90, in = 37;
  const Layer l = random_layer(out, in, true, rng);
  const lowbit::W8A8Weights w = prepare(l);
  const std::vector<float> x = random_activations(tokens, in, rng);
  std::vector<std::int8_t> codes(static_cast<std::size_t>(tokens * in));
  std::vector<float> scales(static_cast<std::size_t>(tokens));
  REQUIRE(lowbit::quantize_activations_w8a8(lowbit::row_major(x.data(), tokens, in),
                                            lowbit::row_major(codes.data(), tokens, in),
                                            lowbit::flat(scales.data(), tokens)));
  const Quantized q = independent_quantize(x, tokens, in);
  for (std::size_t i = 0; i < codes.size(); ++i) REQUIRE(codes[i] == q.codes[i]);
  for (std::size_t t = 0; t < scales.size(); ++t) REQUIRE(scales[t] == q.scales[t]);

  // A static per-tensor scale: every token's codes share one step.
  const float static_step = 0.05f;
  Quantized qs;
  std::vector<std::int8_t> static_codes;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float r = std::min(127.0f, std::max(-127.0f, std::nearbyint(x[i] / static_step)));
    static_codes.push_back(static_cast<std::int8_t>(r));
    qs.codes.push_back(static_cast<std::int32_t>(r));
  }
  qs.scales.assign(static_cast<std::size_t>(tokens), static_step);

  lowbit::ThreadPool pool(3);
  lowbit::W8A8Workspace workspace;
  for (const Isa isa : lowbit::available_isas()) {
    const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
    const ForcedIsa forced(isa);
    std::vector<float> y(static_cast<std::size_t>(tokens * out));
    REQUIRE(lowbit::gemm_w8a8(w, lowbit::row_major<const std::int8_t>(codes.data(), tokens, in),
                              lowbit::flat<const float>(scales.data(), tokens),
                              lowbit::row_major(y.data(), tokens, out), pool, &workspace));
    CHECK(count_bit_differences(y, independent_gemm(q, l, tokens)) == 0);
    REQUIRE(lowbit::gemm_w8a8(w, lowbit::row_major<const std::int8_t>(static_codes.data(), tokens, in),
                              lowbit::flat<const float>(&static_step, 1),
                              lowbit::row_major(y.data(), tokens, out), pool, &workspace));
    CHECK(count_bit_differences(y, independent_gemm(qs, l, tokens)) == 0);
  }
  CHECK(workspace.capacity_bytes() >= static_cast<std::size_t>(tokens * 48));
}

TEST_CASE("w8a8: weights from lowbit's Symmetric per-channel quantizer, codes of -128 included") {
  using W8 = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Symmetric, lowbit::PerChannel<0>>;
  std::mt19937 rng(kSeed + 6);
  const std::int64_t tokens = 5, out = 40, in = 72;
  std::vector<float> wf = random_activations(out, in, rng);
  for (std::int64_t o = 0; o < out; o += 2) wf[static_cast<std::size_t>(o * in + 1)] = -50.0f;  // -amax
  lowbit::Result<lowbit::QuantParams> p = W8::compute_params(lowbit::row_major<const float>(wf.data(), out, in));
  REQUIRE(p);
  Layer l;
  l.out = out;
  l.in = in;
  l.codes.resize(wf.size());
  REQUIRE(W8::quantize(lowbit::row_major<const float>(wf.data(), out, in), p->view(),
                       lowbit::row_major(l.codes.data(), out, in)));
  CHECK(std::count(l.codes.begin(), l.codes.end(), static_cast<std::int8_t>(-128)) >= out / 2);
  l.scales = p->scale;
  const lowbit::W8A8Weights w = prepare(l);
  const std::vector<float> x = random_activations(tokens, in, rng);
  const Quantized q = independent_quantize(x, tokens, in);
  lowbit::SerialExecutor serial;
  for (const Isa isa : lowbit::available_isas()) {
    const std::string path = lowbit::isa_name(isa);
    CAPTURE(path);
    const ForcedIsa forced(isa);
    CHECK(count_bit_differences(run(x, tokens, w, serial), independent_gemm(q, l, tokens)) == 0);
  }
}

TEST_CASE("w8a8: bad input is a Status and leaves y untouched") {
  std::mt19937 rng(kSeed + 5);
  const std::int64_t tokens = 4, out = 20, in = 24;
  const Layer l = random_layer(out, in, false, rng);
  const lowbit::W8A8Weights w = prepare(l);
  const std::vector<float> x = random_activations(tokens, in, rng);
  std::vector<float> y(static_cast<std::size_t>(tokens * out), 3.0f);
  const auto xv = lowbit::row_major(x.data(), tokens, in);
  const auto yv = lowbit::row_major(y.data(), tokens, out);
  auto code = [](lowbit::Status s) { return s.code(); };
  CHECK(code(lowbit::gemm_w8a8(w, lowbit::row_major(x.data(), tokens, in - 1), yv)) == Errc::kShapeMismatch);
  CHECK(code(lowbit::gemm_w8a8(w, xv, lowbit::row_major(y.data(), tokens, out - 1))) == Errc::kShapeMismatch);
  CHECK(code(lowbit::gemm_w8a8(w, xv, lowbit::row_major(y.data(), tokens - 1, out))) == Errc::kShapeMismatch);
  // An empty batch is a valid product with nothing to do (as in dequant_gemm and gemm).
  CHECK(lowbit::gemm_w8a8(w, lowbit::row_major(x.data(), 0, in), lowbit::row_major(y.data(), 0, out)).ok());
  CHECK(code(lowbit::gemm_w8a8(w, lowbit::row_major(x.data(), 0, in), lowbit::row_major(y.data(), 0, out - 1))) ==
        Errc::kShapeMismatch);
  CHECK(code(lowbit::gemm_w8a8(w, lowbit::row_major<const float>(nullptr, tokens, in), yv)) ==
        Errc::kInvalidArgument);
  CHECK(code(lowbit::gemm_w8a8(w, xv, lowbit::MatrixView<float>(y.data(), tokens, out, -1, 1))) ==
        Errc::kInvalidArgument);
  CHECK(code(lowbit::gemm_w8a8(lowbit::W8A8Weights(), xv, yv)) == Errc::kInvalidArgument);
  // Rows of y on top of each other (row stride 1 < out) or a zero stride.
  CHECK(code(lowbit::gemm_w8a8(w, xv, lowbit::MatrixView<float>(y.data(), tokens, out, 1, 1))) ==
        Errc::kInvalidArgument);
  CHECK(code(lowbit::gemm_w8a8(w, xv, lowbit::MatrixView<float>(y.data(), tokens, out, 0, 1))) ==
        Errc::kInvalidArgument);
  // Pre-quantized: -128 is refused with its flat index, scales must match the tokens.
  std::vector<std::int8_t> codes(static_cast<std::size_t>(tokens * in), 1);
  codes[static_cast<std::size_t>(2 * in + 7)] = -128;
  std::vector<float> scales(static_cast<std::size_t>(tokens), 0.5f);
  const lowbit::Status minus128 = lowbit::gemm_w8a8(
      w, lowbit::row_major<const std::int8_t>(codes.data(), tokens, in),
      lowbit::flat<const float>(scales.data(), tokens), yv);
  CHECK(minus128.code() == Errc::kOutOfRange);
  CHECK(minus128.index() == 2 * in + 7);
  codes[static_cast<std::size_t>(2 * in + 7)] = -127;
  CHECK(code(lowbit::gemm_w8a8(w, lowbit::row_major<const std::int8_t>(codes.data(), tokens, in),
                               lowbit::flat<const float>(scales.data(), tokens - 1), yv)) ==
        Errc::kShapeMismatch);
  for (float v : y) REQUIRE(v == 3.0f);

  // Weights: wrong lengths, NaN scale or bias, no codes.
  std::vector<float> sc(static_cast<std::size_t>(out), 1.0f), bias(static_cast<std::size_t>(out), 0.0f);
  const auto cv = lowbit::row_major<const std::int8_t>(l.codes.data(), out, in);
  CHECK(lowbit::W8A8Weights::prepare(cv, lowbit::flat<const float>(sc.data(), out - 1)).status().code() ==
        Errc::kShapeMismatch);
  CHECK(lowbit::W8A8Weights::prepare(cv, lowbit::flat<const float>(sc.data(), out),
                                     lowbit::flat<const float>(bias.data(), out + 1 - 2))
            .status()
            .code() == Errc::kShapeMismatch);
  sc[7] = std::numeric_limits<float>::quiet_NaN();
  const lowbit::Status nan_scale =
      lowbit::W8A8Weights::prepare(cv, lowbit::flat<const float>(sc.data(), out)).status();
  CHECK(nan_scale.code() == Errc::kNonFinite);
  CHECK(nan_scale.index() == 7);
  sc[7] = 1.0f;
  bias[3] = std::numeric_limits<float>::infinity();
  CHECK(lowbit::W8A8Weights::prepare(cv, lowbit::flat<const float>(sc.data(), out),
                                     lowbit::flat<const float>(bias.data(), out))
            .status()
            .code() == Errc::kNonFinite);
  CHECK(lowbit::W8A8Weights::prepare(lowbit::row_major<const std::int8_t>(l.codes.data(), 0, in),
                                     lowbit::flat<const float>(sc.data(), 0))
            .status()
            .code() == Errc::kEmpty);
  std::vector<float> wf(static_cast<std::size_t>(out * in), 0.5f);
  wf[9] = std::numeric_limits<float>::quiet_NaN();
  const lowbit::Status nan_weight =
      lowbit::W8A8Weights::quantize(lowbit::row_major<const float>(wf.data(), out, in)).status();
  CHECK(nan_weight.code() == Errc::kNonFinite);
  CHECK(nan_weight.index() == 9);
  // The activation quantizer's own checks.
  std::vector<std::int8_t> qc(static_cast<std::size_t>(tokens * in));
  CHECK(code(lowbit::quantize_activations_w8a8(xv, lowbit::row_major(qc.data(), tokens, in),
                                               lowbit::flat(scales.data(), tokens - 1))) ==
        Errc::kShapeMismatch);
  CHECK(code(lowbit::quantize_activations_w8a8(xv, lowbit::row_major(qc.data(), tokens, in - 1),
                                               lowbit::flat(scales.data(), tokens))) ==
        Errc::kShapeMismatch);
}

TEST_CASE("w8a8: mit-han-lab/smoothquant W8A8Linear (per-channel weights, per-token activations)") {
  using lowbit_test::load;
  const std::string dir = "torch/smoothquant/";
  constexpr std::int64_t kTokens = 64, kIn = 512, kOut = 1024;
  const std::vector<float> bias = load<float>(dir + "fc1_bias.npy");
  for (const std::string variant : {"orig", "a0p5"}) {
    CAPTURE(variant);
    const std::string v = dir + variant + "/";
    const std::vector<float> x = load<float>(variant == "orig" ? dir + "ln_out.npy" : v + "ln_out.npy");
    const std::vector<std::int8_t> wcodes = load<std::int8_t>(v + "fc1_w_per_channel_codes.npy");
    const std::vector<float> wsteps = load<float>(v + "fc1_w_per_channel_scale.npy");
    const std::vector<std::int8_t> xcodes = load<std::int8_t>(v + "act_per_token_codes.npy");
    const std::vector<float> xsteps = load<float>(v + "act_per_token_scale.npy");
    const std::vector<float> want = load<float>(v + "fc1_w8a8_out.npy");
    REQUIRE(x.size() == static_cast<std::size_t>(kTokens * kIn));
    REQUIRE(wcodes.size() == static_cast<std::size_t>(kOut * kIn));
    REQUIRE(want.size() == static_cast<std::size_t>(kTokens * kOut));

    // The activation quantizer reproduces the reference's codes and steps exactly.
    std::vector<std::int8_t> codes(x.size());
    std::vector<float> steps(static_cast<std::size_t>(kTokens));
    REQUIRE(lowbit::quantize_activations_w8a8(lowbit::row_major(x.data(), kTokens, kIn),
                                              lowbit::row_major(codes.data(), kTokens, kIn),
                                              lowbit::flat(steps.data(), kTokens)));
    CHECK(codes == xcodes);
    CHECK(steps == xsteps);
    if (variant == "orig") {  // the fp32 weights are shipped for the unsmoothed layer
      lowbit::Result<lowbit::W8A8Weights> wq = lowbit::W8A8Weights::quantize(
          lowbit::row_major<const float>(load<float>(dir + "fc1_weight.npy").data(), kOut, kIn));
      REQUIRE(wq);
      std::int64_t wrong = 0;
      for (std::int64_t o = 0; o < kOut; ++o) {
        wrong += wq->scale(o) != wsteps[static_cast<std::size_t>(o)];
        for (std::int64_t k = 0; k < kIn; ++k)
          wrong += wq->code(o, k) != wcodes[static_cast<std::size_t>(o * kIn + k)];
      }
      CHECK(wrong == 0);
    }
    lowbit::Result<lowbit::W8A8Weights> w = lowbit::W8A8Weights::prepare(
        lowbit::row_major<const std::int8_t>(wcodes.data(), kOut, kIn),
        lowbit::flat<const float>(wsteps.data(), kOut), lowbit::flat<const float>(bias.data(), kOut));
    REQUIRE(w);

    // The reference multiplies fake-quantized float32 values (code · step) in a float32 GEMM; we
    // sum codes exactly and scale once. Per output the two differ by the reference's rounding:
    // K + 2 roundings of at most 2^-24 · Σ_k |x̂_k ŵ_k| (the products and the summation; code·step
    // costs one more each), plus ours (three) and the bias addition: bound (K + 8)·2^-24·Σ|x̂ŵ| +
    // 2^-23·|y|.
    std::vector<float> y(want.size());
    lowbit::ThreadPool pool(2);
    REQUIRE(lowbit::gemm_w8a8(*w, lowbit::row_major(x.data(), kTokens, kIn),
                              lowbit::row_major(y.data(), kTokens, kOut), pool));
    double worst = 0.0, worst_bound_ratio = 0.0;
    for (std::int64_t t = 0; t < kTokens; ++t)
      for (std::int64_t o = 0; o < kOut; ++o) {
        double magnitude = 0.0;
        for (std::int64_t k = 0; k < kIn; ++k)
          magnitude += std::fabs(static_cast<double>(xcodes[static_cast<std::size_t>(t * kIn + k)]) *
                                 wcodes[static_cast<std::size_t>(o * kIn + k)]);
        magnitude *= double{xsteps[static_cast<std::size_t>(t)]} * wsteps[static_cast<std::size_t>(o)];
        const auto i = static_cast<std::size_t>(t * kOut + o);
        const double bound = (kIn + 8) * std::ldexp(magnitude, -24) + std::ldexp(std::fabs(want[i]), -23);
        const double diff = std::fabs(double{y[i]} - want[i]);
        worst = std::max(worst, diff);
        worst_bound_ratio = std::max(worst_bound_ratio, diff / bound);
        CHECK(diff <= bound);
      }
    MESSAGE(variant, ": max |y - reference| = ", worst, ", at most ", worst_bound_ratio,
            " of the derived bound");
  }
}
