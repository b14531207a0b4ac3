// The Llama training pass of examples/llama/llama_backward.hpp: forward against llama.hpp and
// PyTorch, every backward against central finite differences, and a few optimizer steps.
//
// What each check can see:
//   * the training forward against llama.hpp's LlamaModel (the inference path) on a toy model,
//     and on tinylm against PyTorch's logits (models/tinylm/logits_ref.npy, transformers'
//     LlamaForCausalLM in float32) plus a cross-entropy computed here from those logits;
//   * gradients: the model templated on double, so central differences with step 1e-5 have a
//     truncation error ~h²·f''' ≈ 1e-10 and a rounding error ~1e-16·|f|/h ≈ 1e-11: the analytic
//     gradient must agree to 1e-6 relative (an error in any backward formula is O(1) relative).
//     Each operation alone (loss = Σ r ⊙ y for a random r), then a whole toy model, every
//     parameter tensor and the input embeddings; the float model's gradients against the
//     double model's;
//   * AdamW steps on the dense model and on a W4 fake-quantized one reduce the loss (the STE
//     carries the gradient through the quantizer, where finite differences cannot look).
//
// The toy model (hidden 16, 2 layers, 4 heads sharing 2 kv heads, head_dim 4, ffn 24, vocab 32,
// T = 7) is random with a printed seed; tinylm runs on a 24-byte prefix (the sanitized Debug
// build runs Eigen slowly).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "llama/llama_backward.hpp"
#include "lowbit/optim.hpp"
#include "lowbit/qat.hpp"
#include "support/npy.hpp"
#include "support/random.hpp"
#include "support/toy_llama.hpp"

namespace {

using lowbit::Errc;
using lowbit::Result;
using lowbit::Status;

constexpr std::uint32_t kSeed = 20260123;

using lowbit_test::random_tokens;
using lowbit_test::require_ok;
using lowbit_test::toy_config;
using lowbit_test::ToyWeights;
using lowbit_test::value_of;

template <class Scalar>
llama::TrainableLlama<Scalar> make_trainer(const llama::LlamaWeights& w) {
  return value_of(llama::TrainableLlama<Scalar>::from_weights(w));
}

// Central difference of f at x[i], restoring x[i].
template <class F>
double central_difference(double* x, std::int64_t i, double h, F&& f) {
  const double saved = x[i];
  x[i] = saved + h;
  const double up = f();
  x[i] = saved - h;
  const double down = f();
  x[i] = saved;
  return (up - down) / (2 * h);
}

// |analytic − numeric| within 1e-6 relative, with a floor for gradients that are ~0.
void check_gradient(double analytic, double numeric, const std::string& what) {
  INFO(what, ": analytic ", analytic, " numeric ", numeric);
  CHECK(std::fabs(analytic - numeric) <= 1e-6 * std::max(std::fabs(numeric), 1e-3));
}

// Indices to probe in a tensor of n values: a few at random and the largest |gradient|.
std::vector<std::int64_t> probes(const double* grad, std::int64_t n, std::mt19937& rng, int k) {
  std::vector<std::int64_t> idx;
  std::uniform_int_distribution<std::int64_t> d(0, n - 1);
  for (int i = 0; i < k; ++i) idx.push_back(d(rng));
  std::int64_t top = 0;
  for (std::int64_t i = 1; i < n; ++i)
    if (std::fabs(grad[i]) > std::fabs(grad[top])) top = i;
  idx.push_back(top);
  return idx;
}

// Σ r ⊙ y: the scalar whose gradient with respect to y is r, for testing one op's backward.
double dot(const std::vector<double>& r, const std::vector<double>& y) {
  double s = 0;
  for (std::size_t i = 0; i < r.size(); ++i) s += r[i] * y[i];
  return s;
}

std::vector<double> gaussian_d(std::int64_t n, double sigma, std::uint32_t seed) {
  const std::vector<float> f = lowbit_test::gaussian(n, static_cast<float>(sigma), seed);
  return std::vector<double>(f.begin(), f.end());
}

double nll_double(const float* row, std::int64_t vocab, std::int32_t target) {
  double top = -INFINITY;
  for (std::int64_t v = 0; v < vocab; ++v) top = std::max(top, static_cast<double>(row[v]));
  double sum = 0;
  for (std::int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - top);
  return std::log(sum) + top - static_cast<double>(row[target]);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Forward

TEST_CASE("llama_backward: the training forward equals llama.hpp's forward on a toy model") {
  std::printf("llama_backward seed %u\n", kSeed);
  const ToyWeights toy(toy_config(), kSeed);
  const std::int64_t T = 7, V = toy.config.vocab_size;
  const std::vector<std::int32_t> tokens = random_tokens(T, 32, kSeed + 1);

  llama::LlamaModel ref = value_of(llama::LlamaModel::from_weights(toy.weights()));
  llama::LlamaState state = value_of(ref.new_state(T));
  std::vector<float> logits(static_cast<std::size_t>(T * V));
  require_ok(ref.forward(tokens.data(), T, state, logits.data()));

  llama::TrainableLlama<float> trainer = make_trainer<float>(toy.weights());
  const double loss = value_of(trainer.forward(tokens.data(), T));
  REQUIRE(trainer.tokens() == T);
  double worst = 0;
  for (std::int64_t i = 0; i < T * V; ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(trainer.logits()[i]) -
                                      logits[static_cast<std::size_t>(i)]));
  CHECK(worst <= 1e-5);
  double expected = 0;
  for (std::int64_t t = 0; t + 1 < T; ++t)
    expected += nll_double(logits.data() + t * V, V, tokens[static_cast<std::size_t>(t + 1)]);
  expected /= static_cast<double>(T - 1);
  CHECK(loss == doctest::Approx(expected).epsilon(1e-6));

  // The double model computes the same function (to float rounding).
  llama::TrainableLlama<double> exact = make_trainer<double>(toy.weights());
  CHECK(value_of(exact.forward(tokens.data(), T)) == doctest::Approx(loss).epsilon(1e-5));

  // Explicit targets: only the scored positions count.
  std::vector<std::int32_t> targets(static_cast<std::size_t>(T), llama::kIgnoreTarget);
  targets[2] = tokens[3];
  CHECK(value_of(trainer.forward(tokens.data(), T, targets.data())) ==
        doctest::Approx(nll_double(logits.data() + 2 * V, V, tokens[3])).epsilon(1e-6));
}

TEST_CASE("llama_backward: tinylm's training forward matches PyTorch's logits") {
  const std::string dir = LOWBIT_TEST_DATA_DIR "/../../models/tinylm";
  Result<llama::LlamaModel> model = llama::LlamaModel::load(dir);
  INFO("loading ", dir, ": ", std::string(model.status().message()));
  REQUIRE(model.has_value());
  const lowbit_test::Npy npy = lowbit_test::load_npy_file(dir + "/logits_ref.npy");
  INFO(npy.error);
  REQUIRE(npy.error.empty());
  REQUIRE(npy.dtype == "<f4");
  REQUIRE(npy.shape == std::vector<std::int64_t>{2, 256, 256});
  std::ifstream text(dir + "/eval.txt", std::ios::binary);
  std::vector<char> bytes(256);
  REQUIRE(text.read(bytes.data(), 256));

  // Window 0 opens with 18 '=': the prefix reaches past them (as test_llama_tinylm.cpp).
  constexpr std::int64_t P = 24, V = 256;
  std::vector<std::int32_t> ids(P);
  for (std::int64_t t = 0; t < P; ++t)
    ids[static_cast<std::size_t>(t)] =
        static_cast<unsigned char>(bytes[static_cast<std::size_t>(t)]);
  llama::TrainableLlama<float> trainer = make_trainer<float>(model->weights());
  const double loss = value_of(trainer.forward(ids.data(), P));

  // Window 0, rows 0..P-1, copied out (the npy payload need not be aligned for float).
  std::vector<float> ref_rows(static_cast<std::size_t>(P * V));
  std::memcpy(ref_rows.data(), npy.bytes.data(), ref_rows.size() * sizeof(float));
  double worst = 0;
  for (std::int64_t i = 0; i < P * V; ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(trainer.logits()[i]) -
                                      ref_rows[static_cast<std::size_t>(i)]));
  MESSAGE("tinylm, 24 positions: max |logit − PyTorch| = ", worst);
  CHECK(worst <= 1e-4);  // llama.hpp's own agreement is 2.3e-5
  double expected = 0;
  for (std::int64_t t = 0; t + 1 < P; ++t)
    expected += nll_double(ref_rows.data() + t * V, V, ids[static_cast<std::size_t>(t + 1)]);
  expected /= static_cast<double>(P - 1);
  CHECK(loss == doctest::Approx(expected).epsilon(1e-5));

  // And llama.hpp's inference forward on the same bytes.
  llama::LlamaState state = value_of(model->new_state(P));
  std::vector<float> logits(static_cast<std::size_t>(P * V));
  require_ok(model->forward(ids.data(), P, state, logits.data()));
  double to_llama = 0;
  for (std::int64_t i = 0; i < P * V; ++i)
    to_llama = std::max(to_llama, std::fabs(static_cast<double>(trainer.logits()[i]) -
                                            logits[static_cast<std::size_t>(i)]));
  CHECK(to_llama <= 1e-5);

  // The backward runs on the real model and gives finite, non-zero gradients everywhere.
  require_ok(trainer.backward());
  for (const llama::TensorParam<float>& p : trainer.parameters()) {
    INFO(p.name);
    double norm = 0;
    bool finite = true;
    for (std::int64_t i = 0; i < p.size; ++i) {
      finite = finite && std::isfinite(p.grad[i]);
      norm += static_cast<double>(p.grad[i]) * p.grad[i];
    }
    CHECK(finite);
    CHECK(norm > 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Each backward alone, in double, against central differences of Σ r ⊙ y.

TEST_CASE("llama_backward: RMSNorm backward") {
  const std::int64_t rows = 3, d = 8;
  std::vector<double> x = gaussian_d(rows * d, 1.0, kSeed + 10), w = gaussian_d(d, 0.5, kSeed + 11);
  const std::vector<double> r = gaussian_d(rows * d, 1.0, kSeed + 12);
  std::vector<double> y(x.size()), inv(rows);
  const auto f = [&] {
    llama::ops::rms_norm_forward(x.data(), rows, d, w.data(), 1e-5, y.data(), inv.data());
    return dot(r, y);
  };
  f();
  std::vector<double> dx(x.size(), 0.0), dw(w.size(), 0.0);
  llama::ops::rms_norm_backward(x.data(), inv.data(), w.data(), r.data(), rows, d, dx.data(),
                                dw.data());
  for (std::int64_t i = 0; i < rows * d; ++i)
    check_gradient(dx[static_cast<std::size_t>(i)], central_difference(x.data(), i, 1e-5, f),
                   "dx[" + std::to_string(i) + "]");
  for (std::int64_t i = 0; i < d; ++i)
    check_gradient(dw[static_cast<std::size_t>(i)], central_difference(w.data(), i, 1e-5, f),
                   "dw[" + std::to_string(i) + "]");
}

TEST_CASE("llama_backward: rotary backward") {
  const std::int64_t T = 3, heads = 2, hd = 6, half = 3;
  std::vector<double> x = gaussian_d(T * heads * hd, 1.0, kSeed + 20);
  const std::vector<double> r = gaussian_d(x.size(), 1.0, kSeed + 21);
  std::vector<double> cs(T * half), sn(T * half);
  for (std::int64_t i = 0; i < T * half; ++i) {
    cs[static_cast<std::size_t>(i)] = std::cos(0.7 * static_cast<double>(i) + 0.3);
    sn[static_cast<std::size_t>(i)] = std::sin(0.7 * static_cast<double>(i) + 0.3);
  }
  const auto f = [&] {
    std::vector<double> y = x;
    llama::ops::rope_forward(y.data(), T, heads, hd, cs.data(), sn.data());
    return dot(r, y);
  };
  std::vector<double> dx = r;
  llama::ops::rope_backward(dx.data(), T, heads, hd, cs.data(), sn.data());
  for (std::int64_t i = 0; i < T * heads * hd; ++i)
    check_gradient(dx[static_cast<std::size_t>(i)], central_difference(x.data(), i, 1e-5, f),
                   "dx[" + std::to_string(i) + "]");
}

TEST_CASE("llama_backward: causal grouped-query attention backward") {
  const std::int64_t T = 5, H = 4, KV = 2, hd = 4;
  std::vector<double> q = gaussian_d(T * H * hd, 1.0, kSeed + 30);
  std::vector<double> k = gaussian_d(T * KV * hd, 1.0, kSeed + 31);
  std::vector<double> v = gaussian_d(T * KV * hd, 1.0, kSeed + 32);
  const std::vector<double> r = gaussian_d(T * H * hd, 1.0, kSeed + 33);
  std::vector<double> probs(H * T * T), out(T * H * hd);
  const auto f = [&] {
    llama::ops::attention_forward(q.data(), k.data(), v.data(), T, H, KV, hd, probs.data(),
                                  out.data());
    return dot(r, out);
  };
  f();
  // The mask: row i of each head sums to 1 over keys 0..i and is 0 after.
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t i = 0; i < T; ++i) {
      double sum = 0;
      for (std::int64_t j = 0; j < T; ++j) {
        const double p = probs[static_cast<std::size_t>((h * T + i) * T + j)];
        if (j > i) CHECK(p == 0.0);
        sum += p;
      }
      CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
    }
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size()), scratch(T * T);
  llama::ops::attention_backward(q.data(), k.data(), v.data(), probs.data(), r.data(), T, H, KV, hd,
                                 dq.data(), dk.data(), dv.data(), scratch.data());
  for (std::int64_t i = 0; i < T * H * hd; ++i)
    check_gradient(dq[static_cast<std::size_t>(i)], central_difference(q.data(), i, 1e-5, f),
                   "dq[" + std::to_string(i) + "]");
  for (std::int64_t i = 0; i < T * KV * hd; ++i) {
    check_gradient(dk[static_cast<std::size_t>(i)], central_difference(k.data(), i, 1e-5, f),
                   "dk[" + std::to_string(i) + "]");
    check_gradient(dv[static_cast<std::size_t>(i)], central_difference(v.data(), i, 1e-5, f),
                   "dv[" + std::to_string(i) + "]");
  }
}

TEST_CASE("llama_backward: SwiGLU backward, including saturated gates") {
  const std::int64_t n = 12;
  std::vector<double> g = gaussian_d(n, 2.0, kSeed + 40), u = gaussian_d(n, 1.0, kSeed + 41);
  g[0] = 40.0;   // σ = 1
  g[1] = -40.0;  // σ ≈ 0
  const std::vector<double> r = gaussian_d(n, 1.0, kSeed + 42);
  const auto f = [&] {
    std::vector<double> a(static_cast<std::size_t>(n));
    llama::ops::swiglu_forward(g.data(), u.data(), n, a.data());
    return dot(r, a);
  };
  std::vector<double> dg(static_cast<std::size_t>(n)), du(static_cast<std::size_t>(n));
  llama::ops::swiglu_backward(g.data(), u.data(), r.data(), n, dg.data(), du.data());
  for (std::int64_t i = 0; i < n; ++i) {
    check_gradient(dg[static_cast<std::size_t>(i)], central_difference(g.data(), i, 1e-5, f),
                   "dgate[" + std::to_string(i) + "]");
    check_gradient(du[static_cast<std::size_t>(i)], central_difference(u.data(), i, 1e-5, f),
                   "dup[" + std::to_string(i) + "]");
  }
  // Far in the tails: finite gradients (no inf·0).
  std::vector<double> big = {800.0, -800.0}, one = {1.0, 1.0}, d2(2), u2(2);
  llama::ops::swiglu_backward(big.data(), one.data(), one.data(), 2, d2.data(), u2.data());
  CHECK(d2[0] == 1.0);
  CHECK(d2[1] == 0.0);
}

TEST_CASE("llama_backward: cross-entropy backward, with unscored positions") {
  const std::int64_t T = 4, V = 6;
  std::vector<double> z = gaussian_d(T * V, 2.0, kSeed + 50);
  const std::vector<std::int32_t> targets = {3, llama::kIgnoreTarget, 0, 5};
  const auto f = [&] { return llama::ops::cross_entropy_forward(z.data(), targets.data(), T, V); };
  // Against a direct evaluation: mean of logsumexp − z_target over the 3 scored rows.
  double direct = 0;
  for (std::int64_t t : {0, 2, 3}) {
    double s = 0;
    for (std::int64_t i = 0; i < V; ++i) s += std::exp(z[static_cast<std::size_t>(t * V + i)]);
    direct +=
        std::log(s) - z[static_cast<std::size_t>(t * V + targets[static_cast<std::size_t>(t)])];
  }
  CHECK(f() == doctest::Approx(direct / 3).epsilon(1e-12));
  std::vector<double> dz(z.size());
  llama::ops::cross_entropy_backward(z.data(), targets.data(), T, V, dz.data());
  for (std::int64_t i = 0; i < T * V; ++i)
    check_gradient(dz[static_cast<std::size_t>(i)], central_difference(z.data(), i, 1e-5, f),
                   "dz[" + std::to_string(i) + "]");
}

TEST_CASE("llama_backward: dense linear backward") {
  const std::int64_t T = 3, in = 5, out = 4;
  const std::vector<float> w0 = lowbit_test::gaussian(out * in, 1.0f, kSeed + 60);
  auto layer = value_of(llama::DenseTrainableLinear<double>::create(w0.data(), out, in));
  std::vector<double> x = gaussian_d(T * in, 1.0, kSeed + 61);
  const std::vector<double> r = gaussian_d(T * out, 1.0, kSeed + 62);
  std::vector<double> y(static_cast<std::size_t>(T * out));
  const auto f = [&] {
    require_ok(layer->forward(x.data(), T, y.data()));
    return dot(r, y);
  };
  f();
  std::vector<double> dx(x.size());
  require_ok(layer->backward(r.data(), T, dx.data()));
  const llama::TensorParam<double> w = layer->parameters().at(0);
  CHECK(std::string(w.name) == "weight");
  const std::vector<double> dw(w.grad, w.grad + w.size);
  for (std::int64_t i = 0; i < T * in; ++i)
    check_gradient(dx[static_cast<std::size_t>(i)], central_difference(x.data(), i, 1e-5, f),
                   "dx[" + std::to_string(i) + "]");
  for (std::int64_t i = 0; i < out * in; ++i)
    check_gradient(dw[static_cast<std::size_t>(i)], central_difference(w.value, i, 1e-5, f),
                   "dW[" + std::to_string(i) + "]");
  CHECK(layer->backward(r.data(), T + 1, dx.data()).code() == Errc::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// The whole model

TEST_CASE("llama_backward: every parameter's gradient matches finite differences (double)") {
  const ToyWeights toy(toy_config(), kSeed);
  const std::int64_t T = 7;
  const std::vector<std::int32_t> tokens = random_tokens(T, 32, kSeed + 1);
  llama::TrainableLlama<double> model = make_trainer<double>(toy.weights());
  const auto loss = [&] { return value_of(model.forward(tokens.data(), T)); };
  loss();
  require_ok(model.backward());
  std::mt19937 rng(kSeed + 2);
  const std::vector<llama::TensorParam<double>> params = model.parameters();
  CHECK(params.size() == 1 + 2 * (2 + 7) + 1 + 1);  // embed, per layer 2 norms + 7, norm, lm_head
  for (const llama::TensorParam<double>& p : params) {
    const std::vector<double> grad(p.grad, p.grad + p.size);  // the next forwards keep it
    for (std::int64_t i : probes(grad.data(), p.size, rng, 3))
      check_gradient(grad[static_cast<std::size_t>(i)], central_difference(p.value, i, 1e-5, loss),
                     std::string(p.name) + "[" + std::to_string(i) + "]");
  }
  // Embedding rows of tokens not in the sequence get no gradient.
  const llama::TensorParam<double>& embed = params.front();
  CHECK(std::string(embed.name) == "model.embed_tokens.weight");
  for (std::int32_t id = 0; id < 32; ++id) {
    if (std::find(tokens.begin(), tokens.end(), id) != tokens.end()) continue;
    for (std::int64_t i = 0; i < 16; ++i) CHECK(embed.grad[id * 16 + i] == 0.0);
  }
}

TEST_CASE("llama_backward: gradients of the block inputs") {
  const ToyWeights toy(toy_config(), kSeed);
  const std::int64_t T = 7, D = 16;
  const std::vector<std::int32_t> tokens = random_tokens(T, 32, kSeed + 1);
  std::vector<std::int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(llama::kIgnoreTarget);
  llama::TrainableLlama<double> model = make_trainer<double>(toy.weights());
  const double loss = value_of(model.forward(tokens.data(), T));
  require_ok(model.backward());

  // Block 0's input is the embedding: finite differences through forward_embeddings.
  std::vector<double> h0(model.block_input(0), model.block_input(0) + T * D);
  const std::vector<double> g0(model.grad_block_input(0), model.grad_block_input(0) + T * D);
  const auto from_h0 = [&] {
    return value_of(model.forward_embeddings(h0.data(), T, targets.data()));
  };
  CHECK(from_h0() == loss);
  std::mt19937 rng(kSeed + 3);
  for (std::int64_t i : probes(g0.data(), T * D, rng, 6))
    check_gradient(g0[static_cast<std::size_t>(i)], central_difference(h0.data(), i, 1e-5, from_h0),
                   "dh0[" + std::to_string(i) + "]");

  // Block 1's input: the same as block 0's input of the one-layer model made of layer 1.
  value_of(model.forward(tokens.data(), T));
  require_ok(model.backward());
  std::vector<double> h1(model.block_input(1), model.block_input(1) + T * D);
  const std::vector<double> g1(model.grad_block_input(1), model.grad_block_input(1) + T * D);
  llama::TrainableLlama<double> tail = make_trainer<double>(toy.weights(1, 1));
  const auto from_h1 = [&] {
    return value_of(tail.forward_embeddings(h1.data(), T, targets.data()));
  };
  CHECK(from_h1() == loss);
  require_ok(tail.backward());
  for (std::int64_t i = 0; i < T * D; ++i)
    CHECK(tail.grad_block_input(0)[i] == g1[static_cast<std::size_t>(i)]);
  for (std::int64_t i : probes(g1.data(), T * D, rng, 6))
    check_gradient(g1[static_cast<std::size_t>(i)], central_difference(h1.data(), i, 1e-5, from_h1),
                   "dh1[" + std::to_string(i) + "]");
}

TEST_CASE("llama_backward: float gradients agree with the double model's; accumulation") {
  const ToyWeights toy(toy_config(), kSeed);
  const std::int64_t T = 7;
  const std::vector<std::int32_t> tokens = random_tokens(T, 32, kSeed + 1);
  llama::TrainableLlama<float> f32 = make_trainer<float>(toy.weights());
  llama::TrainableLlama<double> f64 = make_trainer<double>(toy.weights());
  value_of(f32.forward(tokens.data(), T));
  value_of(f64.forward(tokens.data(), T));
  require_ok(f32.backward());
  require_ok(f64.backward());
  const auto p32 = f32.parameters();
  const auto p64 = f64.parameters();
  REQUIRE(p32.size() == p64.size());
  for (std::size_t k = 0; k < p32.size(); ++k) {
    INFO(p32[k].name);
    REQUIRE(std::string(p32[k].name) == p64[k].name);
    double diff = 0, norm = 0;
    for (std::int64_t i = 0; i < p32[k].size; ++i) {
      diff += std::pow(static_cast<double>(p32[k].grad[i]) - p64[k].grad[i], 2);
      norm += p64[k].grad[i] * p64[k].grad[i];
    }
    CHECK(std::sqrt(diff) <= 1e-4 * std::sqrt(norm));  // float: ~1e-6 expected
  }
  // A second backward adds the same gradient again; zero_grad clears.
  const std::vector<float> once(p32[3].grad, p32[3].grad + p32[3].size);
  require_ok(f32.backward());
  for (std::int64_t i = 0; i < p32[3].size; ++i)
    CHECK(p32[3].grad[i] == 2 * once[static_cast<std::size_t>(i)]);
  f32.zero_grad();
  for (const auto& p : f32.parameters())
    for (std::int64_t i = 0; i < p.size; ++i) CHECK(p.grad[i] == 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Training

namespace {

// Four sequences with structure to learn: arithmetic progressions modulo the vocabulary.
std::vector<std::vector<std::int32_t>> toy_batch() {
  std::vector<std::vector<std::int32_t>> batch;
  for (std::int32_t b = 0; b < 4; ++b) {
    std::vector<std::int32_t> seq;
    for (std::int32_t t = 0; t < 8; ++t) seq.push_back((5 * b + (b + 1) * t) % 32);
    batch.push_back(seq);
  }
  return batch;
}

// The mean loss of the batch, with gradients accumulated when `grad`.
double batch_loss(llama::TrainableLlama<float>& m,
                  const std::vector<std::vector<std::int32_t>>& batch, bool grad) {
  double total = 0;
  for (const auto& seq : batch) {
    total += value_of(m.forward(seq.data(), static_cast<std::int64_t>(seq.size())));
    if (grad) require_ok(m.backward());
  }
  return total / static_cast<double>(batch.size());
}

using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
using W4Layer = lowbit::FakeQuantLinear<W4>;
using W4Trainable = llama::FakeQuantTrainableLinear<W4Layer>;

llama::TrainableLinearFactory<float> w4_factory(lowbit::QatMode mode) {
  return [mode](const std::string&, const float* w, std::int64_t out, std::int64_t in) {
    lowbit::QatOptions o;
    o.mode = mode;
    return W4Trainable::create(w, out, in, o);
  };
}

W4Layer& qat_layer(llama::TrainableLlama<float>& m, std::int64_t l, int slot) {
  return static_cast<W4Trainable&>(m.linear(l, slot)).layer();  // the factory made all of them
}

}  // namespace

TEST_CASE("llama_backward: AdamW steps on a batch reduce the loss (dense)") {
  const ToyWeights toy(toy_config(), kSeed);
  llama::TrainableLlama<float> m = make_trainer<float>(toy.weights());
  const auto batch = toy_batch();
  lowbit::AdamWOptions o;
  o.lr = 1e-2;
  lowbit::AdamW opt = value_of(lowbit::AdamW::create(llama::to_param_views(m.parameters()), o));
  double loss = 0;
  std::vector<double> history;
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    loss = batch_loss(m, batch, true);
    history.push_back(loss);
    require_ok(opt.step());
  }
  history.push_back(batch_loss(m, batch, false));
  MESSAGE("dense batch loss: ", history[0], " -> ", history[1], " -> ", history[2], " -> ",
          history[3]);
  for (std::size_t i = 1; i < history.size(); ++i) CHECK(history[i] < history[i - 1]);
}

TEST_CASE("llama_backward: QAT linears — fake quant off equals dense, W4 trains through the STE") {
  const ToyWeights toy(toy_config(), kSeed);
  const std::int64_t T = 7;
  const std::vector<std::int32_t> tokens = random_tokens(T, 32, kSeed + 1);
  llama::TrainableLlama<float> dense = make_trainer<float>(toy.weights());
  llama::TrainableLlama<float> qat = value_of(llama::TrainableLlama<float>::from_weights(
      toy.weights(), w4_factory(lowbit::QatMode::kFull)));

  // With fake quantization off the QAT layer is the same linear: same loss and gradients.
  for (std::int64_t l = 0; l < 2; ++l)
    for (int s = 0; s < llama::kLinearsPerLayer; ++s)
      qat_layer(qat, l, s).set_fake_quant(false, false);
  const double l_dense = value_of(dense.forward(tokens.data(), T));
  CHECK(value_of(qat.forward(tokens.data(), T)) == doctest::Approx(l_dense).epsilon(1e-6));
  require_ok(dense.backward());
  require_ok(qat.backward());
  std::vector<std::string> names;
  for (const auto& p : qat.parameters()) names.push_back(p.name);
  CHECK(std::find(names.begin(), names.end(), "model.layers.1.mlp.down_proj.weight_scale") !=
        names.end());
  const auto pd = dense.parameters();
  for (const auto& p : qat.parameters()) {
    const std::string name = p.name;
    if (name.find("weight_scale") != std::string::npos ||
        name.find("zero_point") != std::string::npos)
      continue;
    const auto it = std::find_if(
        pd.begin(), pd.end(), [&](const llama::TensorParam<float>& q) { return name == q.name; });
    REQUIRE(it != pd.end());
    INFO(name);
    double diff = 0, norm = 0;
    for (std::int64_t i = 0; i < p.size; ++i) {
      diff = std::max(diff, std::fabs(static_cast<double>(p.grad[i]) - it->grad[i]));
      norm = std::max(norm, std::fabs(static_cast<double>(it->grad[i])));
    }
    CHECK(diff <= 1e-5 * norm + 1e-9);
  }

  // At W4 the forward differs from dense, the STE carries gradient to the latent weights, LSQ to
  // the scales, and a few AdamW steps lower the batch loss.
  for (std::int64_t l = 0; l < 2; ++l)
    for (int s = 0; s < llama::kLinearsPerLayer; ++s)
      qat_layer(qat, l, s).set_fake_quant(true, false);
  qat.zero_grad();
  const double l_w4 = value_of(qat.forward(tokens.data(), T));
  CHECK(l_w4 != doctest::Approx(l_dense).epsilon(1e-4));
  require_ok(qat.backward());
  const W4Layer& down = qat_layer(qat, 1, llama::kDown);
  double g_w = 0, g_s = 0;
  for (float g : down.grad_weight()) g_w += std::fabs(g);
  for (float g : down.grad_weight_scale()) g_s += std::fabs(g);
  CHECK(g_w > 0);
  CHECK(g_s > 0);

  const auto batch = toy_batch();
  lowbit::AdamWOptions o;
  o.lr = 1e-2;
  lowbit::AdamW opt = value_of(lowbit::AdamW::create(llama::to_param_views(qat.parameters()), o));
  std::vector<double> history;
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    history.push_back(batch_loss(qat, batch, true));
    require_ok(opt.step());
    for (std::int64_t l = 0; l < 2; ++l)
      for (int s = 0; s < llama::kLinearsPerLayer; ++s) qat_layer(qat, l, s).clamp_scales();
  }
  history.push_back(batch_loss(qat, batch, false));
  MESSAGE("W4 batch loss: ", history[0], " -> ", history[1], " -> ", history[2], " -> ",
          history[3]);
  for (std::size_t i = 1; i < history.size(); ++i) CHECK(history[i] < history[i - 1]);
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST_CASE("llama_backward: bad input is a Status") {
  const ToyWeights toy(toy_config(), kSeed);
  llama::TrainableLlama<float> m = make_trainer<float>(toy.weights());
  const std::vector<std::int32_t> tokens = {1, 2, 3};
  CHECK(m.backward().code() == Errc::kInvalidArgument);  // no forward yet
  CHECK(m.forward(nullptr, 3).status().code() == Errc::kInvalidArgument);
  CHECK(m.forward(tokens.data(), 0).status().code() == Errc::kInvalidArgument);
  const std::vector<std::int32_t> bad = {1, 32, 3};
  Result<double> r = m.forward(bad.data(), 3);
  CHECK(r.status().code() == Errc::kOutOfRange);
  CHECK(r.status().index() == 1);
  CHECK(m.forward(bad.data(), 1).status().code() == Errc::kInvalidArgument);  // nothing scored
  const std::vector<std::int32_t> targets = {4, -7, 0};
  CHECK(m.forward(tokens.data(), 3, targets.data()).status().code() == Errc::kOutOfRange);
  const std::vector<std::int32_t> none(3, llama::kIgnoreTarget);
  CHECK(m.forward(tokens.data(), 3, none.data()).status().code() == Errc::kInvalidArgument);
  CHECK(m.backward().code() == Errc::kInvalidArgument);  // the failed forwards left nothing
  std::vector<float> h(3 * 16, 0.5f);
  h[17] = NAN;
  r = m.forward_embeddings(h.data(), 3, targets.data());
  CHECK(r.status().code() == Errc::kNonFinite);
  CHECK(r.status().index() == 17);
  CHECK(m.forward_embeddings(h.data(), 3, nullptr).status().code() == Errc::kInvalidArgument);
  CHECK(m.forward(tokens.data(), llama::kMaxDim + 1).status().code() == Errc::kOutOfRange);
  // A sequence whose attention probabilities alone would pass 2^32 values.
  std::vector<std::int32_t> long_ids(70000, 1);
  CHECK(m.forward(long_ids.data(), 70000).status().code() == Errc::kOutOfRange);

  // replace_linear
  h[17] = 0.5f;
  auto small = value_of(llama::DenseTrainableLinear<float>::create(h.data(), 3, 16));
  CHECK(m.replace_linear("model.layers.0.mlp.up_proj", std::move(small)).code() ==
        Errc::kShapeMismatch);
  CHECK(m.replace_linear("model.layers.9.mlp.up_proj", nullptr).code() == Errc::kInvalidArgument);
  CHECK(m.replace_linear("lm_head", nullptr).code() == Errc::kInvalidArgument);
  std::vector<float> w(32 * 16, 0.0f);
  require_ok(m.replace_linear(
      "lm_head", value_of(llama::DenseTrainableLinear<float>::create(w.data(), 32, 16))));
  // A zero lm_head: uniform predictions, loss = ln 32.
  CHECK(value_of(m.forward(tokens.data(), 3)) == doctest::Approx(std::log(32.0)).epsilon(1e-6));

  // Construction
  CHECK(llama::DenseTrainableLinear<float>::create(nullptr, 3, 16).status().code() ==
        Errc::kInvalidArgument);
  h[17] = INFINITY;
  CHECK(llama::DenseTrainableLinear<float>::create(h.data(), 3, 16).status().code() ==
        Errc::kNonFinite);
  ToyWeights broken(toy_config(), kSeed);
  broken.norms_post[1][5] = NAN;
  std::string culprit;
  Result<llama::TrainableLlama<float>> b =
      llama::TrainableLlama<float>::from_weights(broken.weights(), nullptr, &culprit);
  CHECK(b.status().code() == Errc::kNonFinite);
  CHECK(culprit == "model.layers.1.post_attention_layernorm.weight");
  llama::LlamaWeights tied = toy.weights();
  tied.config.tie_word_embeddings = true;
  CHECK(llama::TrainableLlama<float>::from_weights(tied).status().code() == Errc::kUnsupported);
  llama::LlamaWeights missing = toy.weights();
  missing.layers[0].linear[llama::kV] = nullptr;
  CHECK(llama::TrainableLlama<float>::from_weights(missing).status().code() ==
        Errc::kInvalidArgument);
  // A factory's error is passed on, naming the layer; so is a layer of the wrong shape.
  const llama::TrainableLinearFactory<float> failing =
      [](const std::string& name, const float* wt, std::int64_t out,
         std::int64_t in) -> Result<std::unique_ptr<llama::TrainableLinear<float>>> {
    if (name == "model.layers.1.self_attn.o_proj")
      return Status(Errc::kUnsupported, "test: refused");
    return llama::DenseTrainableLinear<float>::create(wt, out, in);
  };
  b = llama::TrainableLlama<float>::from_weights(toy.weights(), failing, &culprit);
  CHECK(b.status().code() == Errc::kUnsupported);
  CHECK(culprit == "model.layers.1.self_attn.o_proj");
  const llama::TrainableLinearFactory<float> wrong = [](const std::string&, const float* wt,
                                                        std::int64_t out, std::int64_t in) {
    return llama::DenseTrainableLinear<float>::create(wt, out, in - 1);
  };
  CHECK(llama::TrainableLlama<float>::from_weights(toy.weights(), wrong).status().code() ==
        Errc::kShapeMismatch);
  // A QAT layer that cannot be made: groups of 16 do not tile down_proj's 24 inputs.
  using W4G16 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<16>>;
  const llama::TrainableLinearFactory<float> g16 = [](const std::string&, const float* wt,
                                                      std::int64_t out, std::int64_t in) {
    return llama::FakeQuantTrainableLinear<lowbit::FakeQuantLinear<W4G16>>::create(wt, out, in);
  };
  b = llama::TrainableLlama<float>::from_weights(toy.weights(), g16, &culprit);
  CHECK(b.status().code() == Errc::kIndivisible);
  CHECK(culprit == "model.layers.0.mlp.down_proj");
}
