// The training recipes of examples/llama/distill.hpp and the pieces of llama_backward.hpp they
// added: the KL loss, a decoder block run alone, data-parallel training on replicas, block-wise
// distillation, data-free sampling, and the export of a trained QAT model to deployed layers.
//
// What each check can see:
//   * kl_divergence against central differences (float logits, so h = 1e-2 and a 1e-3
//     relative tolerance: an error in the formula is O(1)), and its zero at p = softmax(z);
//   * forward_block/backward_block against the whole-model pass they were cut from: same
//     output, same input gradient, same parameter gradients, bit for bit (the same code runs on
//     the same numbers), and no gradient outside the block;
//   * two replicas against one: the same parameters after three steps up to the order of the
//     gradient sum (1e-6 absolute + 1e-5 relative; Adam's steps are ~1e-2);
//   * training lowers its loss (dense and W4 QAT students, logits and block-wise);
//   * sampling: deterministic for a seed, whichever executor runs it; the greedy prefix is the
//     teacher's argmax, recomputed here with llama.hpp's forward;
//   * tinylm trained one step as W4 g128 QAT and exported: the deployed model's logits (lowbit's
//     dequant_gemm on the packed codes) equal the fake-quant training model's to float summation
//     order.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "llama/distill.hpp"
#include "llama/llama.hpp"
#include "llama/llama_backward.hpp"
#include "llama/quantized_linear.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/qat.hpp"
#include "support/random.hpp"
#include "support/toy_llama.hpp"

namespace {

using lowbit::Errc;
using lowbit::Result;
using lowbit::Status;
using lowbit_test::random_tokens;
using lowbit_test::require_ok;
using lowbit_test::toy_config;
using lowbit_test::ToyWeights;
using lowbit_test::value_of;

constexpr std::uint32_t kSeed = 20261124;

using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<8>>;
using W4Trainable = llama::FakeQuantTrainableLinear<lowbit::FakeQuantLinear<W4>>;

llama::TrainableLinearFactory<float> w4_factory() {
  return [](const std::string&, const float* w, std::int64_t out, std::int64_t in) {
    return W4Trainable::create(w, out, in);
  };
}

std::vector<llama::TrainableLlama<float>> replicas_of(const llama::LlamaWeights& w, int count,
                                                      const llama::TrainableLinearFactory<float>& f) {
  std::vector<llama::TrainableLlama<float>> r;
  for (int i = 0; i < count; ++i) r.push_back(value_of(llama::TrainableLlama<float>::from_weights(w, f)));
  return r;
}

llama::TokenWindows toy_windows(std::int64_t count, std::int64_t length) {
  llama::TokenWindows w;
  w.count = count;
  w.length = length;
  w.tokens = random_tokens(count * length, 32, kSeed + 7);
  return w;
}

// softmax of each row of random logits: a teacher's probabilities.
std::vector<float> random_probabilities(std::int64_t rows, std::int64_t vocab, std::uint32_t seed) {
  std::vector<float> p = lowbit_test::gaussian(rows * vocab, 2.0f, seed);
  for (std::int64_t t = 0; t < rows; ++t) {
    float* row = p.data() + t * vocab;
    const float top = *std::max_element(row, row + vocab);
    double sum = 0;
    for (std::int64_t v = 0; v < vocab; ++v) sum += row[v] = std::exp(row[v] - top);
    for (std::int64_t v = 0; v < vocab; ++v) row[v] = static_cast<float>(row[v] / sum);
  }
  return p;
}

}  // namespace

TEST_CASE("distill: KL divergence — zero at the teacher, gradient by central differences") {
  const std::int64_t rows = 3, V = 7;
  std::vector<float> z = lowbit_test::gaussian(rows * V, 1.5f, kSeed);
  const std::vector<float> p = random_probabilities(rows, V, kSeed + 1);
  std::vector<float> dz(z.size()), scratch(z.size());
  const double kl = llama::kl_divergence(z.data(), p.data(), rows, V, dz.data());
  CHECK(kl > 0.0);
  for (std::size_t i = 0; i < z.size(); ++i) {
    const float saved = z[i], h = 1e-2f;
    z[i] = saved + h;
    const double up = llama::kl_divergence(z.data(), p.data(), rows, V, scratch.data());
    z[i] = saved - h;
    const double down = llama::kl_divergence(z.data(), p.data(), rows, V, scratch.data());
    z[i] = saved;
    const double numeric = (up - down) / (2.0 * static_cast<double>(h));
    CHECK(dz[i] == doctest::Approx(numeric).epsilon(1e-3).scale(1e-3));
  }
  // The student that is the teacher: KL 0, gradient 0; a zero probability adds nothing.
  std::vector<float> q = random_probabilities(rows, V, kSeed + 2);
  const float dropped = q[3];
  q[3] = 0.0f;
  for (std::int64_t v = 0; v < V; ++v) q[static_cast<std::size_t>(v)] /= 1.0f - dropped;  // row 0
  std::vector<float> logits(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) logits[i] = q[i] > 0 ? std::log(q[i]) : -1e30f;
  CHECK(std::fabs(llama::kl_divergence(logits.data(), q.data(), rows, V, dz.data())) < 1e-6);
  for (float g : dz) CHECK(std::fabs(g) < 1e-6f);
}

TEST_CASE("distill: a block alone is the block inside the model, forward and backward") {
  const ToyWeights toy(toy_config(), kSeed);
  const std::int64_t T = 7;
  const std::vector<std::int32_t> tokens = random_tokens(T, 32, kSeed + 1);
  llama::TrainableLlama<float> full = value_of(llama::TrainableLlama<float>::from_weights(toy.weights()));
  llama::TrainableLlama<float> part = value_of(llama::TrainableLlama<float>::from_weights(toy.weights()));
  value_of(full.forward(tokens.data(), T));
  require_ok(full.backward());
  const std::int64_t n = T * toy.config.hidden_size;
  for (std::int64_t l = 0; l < toy.config.num_layers; ++l) {
    CAPTURE(l);
    part.zero_grad();
    const float* out = value_of(part.forward_block(l, full.block_input(l), T));
    CHECK(std::memcmp(out, full.block_input(l + 1), static_cast<std::size_t>(n) * sizeof(float)) == 0);
    const float* din = value_of(part.backward_block(full.grad_block_input(l + 1)));
    CHECK(std::memcmp(din, full.grad_block_input(l), static_cast<std::size_t>(n) * sizeof(float)) == 0);
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    const auto pf = full.parameters();
    const auto pp = part.parameters();
    REQUIRE(pf.size() == pp.size());
    for (std::size_t i = 0; i < pf.size(); ++i) {
      CAPTURE(std::string(pp[i].name));
      const bool inside = std::string(pp[i].name).compare(0, prefix.size(), prefix) == 0;
      for (std::int64_t k = 0; k < pp[i].size; ++k) {
        if (inside) {
          CHECK(pp[i].grad[k] == pf[i].grad[k]);
        } else {
          CHECK(pp[i].grad[k] == 0.0f);
        }
      }
    }
  }
  // A whole-model backward after forward_block is refused, and the other way round.
  CHECK(part.backward().code() == Errc::kInvalidArgument);
  value_of(part.forward(tokens.data(), T));
  CHECK(part.backward_block(full.grad_block_input(1)).status().code() == Errc::kInvalidArgument);
}

TEST_CASE("distill: forward_block's bad input") {
  const ToyWeights toy(toy_config(), kSeed);
  llama::TrainableLlama<float> m = value_of(llama::TrainableLlama<float>::from_weights(toy.weights()));
  std::vector<float> x(static_cast<std::size_t>(3 * toy.config.hidden_size), 0.5f);
  CHECK(m.forward_block(2, x.data(), 3).status().code() == Errc::kOutOfRange);
  CHECK(m.forward_block(-1, x.data(), 3).status().code() == Errc::kOutOfRange);
  CHECK(m.forward_block(0, nullptr, 3).status().code() == Errc::kInvalidArgument);
  CHECK(m.forward_block(0, x.data(), 0).status().code() == Errc::kInvalidArgument);
  x[5] = std::nanf("");
  const Status nan = m.forward_block(0, x.data(), 3).status();
  CHECK(nan.code() == Errc::kNonFinite);
  CHECK(nan.index() == 5);
  CHECK(m.backward_block(x.data()).status().code() == Errc::kInvalidArgument);
  CHECK(m.backward(static_cast<const float*>(nullptr)).code() == Errc::kInvalidArgument);
}

TEST_CASE("distill: two replicas train to the same parameters as one; the loss falls") {
  const ToyWeights toy(toy_config(), kSeed);
  const llama::TokenWindows data = toy_windows(6, 8);
  llama::TrainOptions o;
  o.steps = 3;
  o.batch = 4;
  o.lr = 1e-2;
  o.warmup_fraction = 0;
  SUBCASE("dense, next-token cross-entropy") {
    auto one = replicas_of(toy.weights(), 1, nullptr);
    auto two = replicas_of(toy.weights(), 2, nullptr);
    const llama::TrainReport r1 = value_of(llama::train_model(one, data, nullptr, o));
    const llama::TrainReport r2 = value_of(llama::train_model(two, data, nullptr, o));
    MESSAGE("dense CE: ", r1.first_loss, " -> ", r1.last_loss);
    CHECK(r1.last_loss < r1.first_loss);
    CHECK(r2.first_loss == doctest::Approx(r1.first_loss).epsilon(1e-6));
    const auto p1 = one.front().parameters();
    for (int r = 0; r < 2; ++r) {
      const auto p2 = two[static_cast<std::size_t>(r)].parameters();
      for (std::size_t i = 0; i < p1.size(); ++i)
        for (std::int64_t k = 0; k < p1[i].size; ++k)
          REQUIRE(std::fabs(p2[i].value[k] - p1[i].value[k]) <= 1e-6 + 1e-5 * std::fabs(p1[i].value[k]));
    }
    // Only the decoder linears trained: the embedding and the norms are the checkpoint's.
    for (const auto& p : one.front().parameters()) {
      const std::string name = p.name;
      if (name == "model.embed_tokens.weight")
        CHECK(std::memcmp(p.value, toy.embed.data(), toy.embed.size() * sizeof(float)) == 0);
      if (name == "model.norm.weight")
        CHECK(std::memcmp(p.value, toy.norm.data(), toy.norm.size() * sizeof(float)) == 0);
    }
  }
  SUBCASE("W4 QAT, KL to a teacher") {
    const ToyWeights teacher_weights(toy_config(), kSeed + 100);
    const llama::LlamaModel teacher = value_of(llama::LlamaModel::from_weights(teacher_weights.weights()));
    lowbit::ThreadPool pool(2);
    const std::vector<float> probs = value_of(llama::teacher_probabilities(teacher, data, &pool));
    CHECK(probs == value_of(llama::teacher_probabilities(teacher, data)));
    auto two = replicas_of(toy.weights(), 2, w4_factory());
    o.steps = 6;
    const llama::TrainReport r = value_of(llama::train_model(two, data, probs.data(), o));
    MESSAGE("W4 QAT KL: ", r.first_loss, " -> ", r.last_loss);
    CHECK(r.last_loss < r.first_loss);
    // The replicas hold the same trained values, scales included.
    const auto a = two[0].parameters(), b = two[1].parameters();
    for (std::size_t i = 0; i < a.size(); ++i)
      CHECK(std::memcmp(a[i].value, b[i].value, static_cast<std::size_t>(a[i].size) * sizeof(float)) == 0);

    // train_zero_points = false: the zero points keep their starting values, the scales move.
    auto held = replicas_of(toy.weights(), 1, w4_factory());
    std::vector<std::vector<float>> before;
    for (const auto& p : held.front().parameters()) before.emplace_back(p.value, p.value + p.size);
    o.train_zero_points = false;
    value_of(llama::train_model(held, data, probs.data(), o));
    int zero_points = 0, scales_moved = 0;
    const auto after = held.front().parameters();
    for (std::size_t i = 0; i < after.size(); ++i) {
      const std::string name = after[i].name;
      const bool same = std::memcmp(after[i].value, before[i].data(), before[i].size() * sizeof(float)) == 0;
      if (name.find("zero_point") != std::string::npos) {
        ++zero_points;
        CHECK_MESSAGE(same, name);
      } else if (name.find("scale") != std::string::npos) {
        scales_moved += !same;
      }
    }
    CHECK(zero_points > 0);
    CHECK(scales_moved > 0);
  }
}

TEST_CASE("distill: block-wise distillation of a W4 student lowers every block's error") {
  const ToyWeights toy(toy_config(), kSeed);
  const llama::TokenWindows data = toy_windows(4, 8);
  llama::TrainableLlama<float> teacher = value_of(llama::TrainableLlama<float>::from_weights(toy.weights()));
  auto students = replicas_of(toy.weights(), 2, w4_factory());
  llama::TrainOptions o;
  o.steps = 8;
  o.batch = 2;
  o.lr = 3e-3;
  o.scale_lr_ratio = 0.1;  // fixed here: the default is tuned for tinylm's 200-step runs
  o.warmup_fraction = 0;
  const llama::TrainReport r = value_of(llama::train_blocks(students, teacher, data, o));
  MESSAGE("block-wise W4: mean block MSE ", r.first_loss, " -> ", r.last_loss);
  CHECK(r.steps == 16);
  CHECK(r.first_loss > 0);
  CHECK(r.last_loss < r.first_loss);
}

TEST_CASE("distill: sampled windows are the teacher's, deterministic for a seed") {
  const ToyWeights toy(toy_config(), kSeed);
  const llama::LlamaModel model = value_of(llama::LlamaModel::from_weights(toy.weights()));
  llama::SampleOptions o;
  o.count = 3;
  o.length = 10;
  o.greedy_tokens = 2;
  o.seed = 5;
  o.start_bytes = std::string("\x01\x05\x1f", 3);
  const llama::TokenWindows a = value_of(llama::sample_windows(model, o));
  lowbit::ThreadPool pool(2);
  o.executor = &pool;
  const llama::TokenWindows b = value_of(llama::sample_windows(model, o));
  CHECK(a.tokens == b.tokens);
  o.seed = 6;
  CHECK(value_of(llama::sample_windows(model, o)).tokens != a.tokens);
  const std::int64_t V = model.config().vocab_size;
  std::vector<float> logits(static_cast<std::size_t>(o.length * V));
  for (std::int64_t i = 0; i < a.count; ++i) {
    const std::int32_t* seq = a.window(i);
    CHECK(o.start_bytes.find(static_cast<char>(seq[0])) != std::string::npos);
    for (std::int64_t t = 0; t < a.length; ++t) CHECK((seq[t] >= 0 && seq[t] < V));
    llama::LlamaState state = value_of(model.new_state(o.length));
    require_ok(model.forward(seq, o.length, state, logits.data()));
    for (std::int64_t t = 1; t <= o.greedy_tokens; ++t) {
      const float* row = logits.data() + (t - 1) * V;
      CHECK(seq[t] == std::max_element(row, row + V) - row);
    }
  }
  o.start_bytes = "\x40";  // 64: outside a vocabulary of 32
  CHECK(llama::sample_windows(model, o).status().code() == Errc::kOutOfRange);
  o.start_bytes.clear();
  CHECK(llama::sample_windows(model, o).status().code() == Errc::kInvalidArgument);
}

TEST_CASE("distill: bad input and a diverging run") {
  const ToyWeights toy(toy_config(), kSeed);
  const std::uint8_t text[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  CHECK(llama::text_windows(text, sizeof text, 3, 4).status().code() == Errc::kOutOfRange);
  CHECK(value_of(llama::text_windows(text, sizeof text, 2, 5)).tokens.size() == 10);
  CHECK(llama::text_windows(nullptr, 10, 1, 4).status().code() == Errc::kInvalidArgument);
  llama::TokenWindows data = toy_windows(2, 8);
  llama::TrainOptions o;
  o.steps = 2;
  std::vector<llama::TrainableLlama<float>> none;
  CHECK(llama::train_model(none, data, nullptr, o).status().code() == Errc::kInvalidArgument);
  auto one = replicas_of(toy.weights(), 1, nullptr);
  data.tokens[3] = 32;
  CHECK(llama::train_model(one, data, nullptr, o).status().code() == Errc::kOutOfRange);
  data.tokens[3] = 1;
  o.steps = 0;
  CHECK(llama::train_model(one, data, nullptr, o).status().code() == Errc::kInvalidArgument);
  // A teacher whose probabilities hold a NaN at window 0: the loss of the first step that
  // draws it is NaN, reported as kNonFinite with that step's number.
  o.steps = 4;
  o.batch = 1;
  std::vector<float> probs = random_probabilities(2 * 8, 32, kSeed + 3);
  probs[5] = std::nanf("");
  const Status diverged = llama::train_model(one, data, probs.data(), o).status();
  CHECK(diverged.code() == Errc::kNonFinite);
  CHECK((diverged.index() >= 0 && diverged.index() <= 1));  // window 0 is drawn in the first pass
  // Replicas that differ: a dense one and a QAT one.
  std::vector<llama::TrainableLlama<float>> mixed = replicas_of(toy.weights(), 1, nullptr);
  mixed.push_back(value_of(llama::TrainableLlama<float>::from_weights(toy.weights(), w4_factory())));
  CHECK(llama::train_model(mixed, data, nullptr, o).status().code() == Errc::kShapeMismatch);
}

TEST_CASE("distill: tinylm trained as W4 g128 QAT and exported runs the same numbers deployed") {
  const std::string dir = LOWBIT_TEST_DATA_DIR "/../../models/tinylm";
  const llama::LlamaConfig config = value_of(llama::LlamaConfig::load(dir + "/config.json"));
  const llama::LlamaWeights weights = value_of(llama::LlamaWeights::load(dir + "/model.safetensors", config));
  using W4g128 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<128>>;
  using Trainable = llama::FakeQuantTrainableLinear<lowbit::FakeQuantLinear<W4g128>>;
  const llama::TrainableLinearFactory<float> factory = [](const std::string&, const float* w,
                                                          std::int64_t out, std::int64_t in) {
    return Trainable::create(w, out, in);
  };
  auto replicas = replicas_of(weights, 1, factory);
  const std::int64_t T = 24;
  const std::vector<std::uint8_t> bytes = [&] {
    std::vector<std::uint8_t> b(static_cast<std::size_t>(2 * T));
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>("The kernel's memory map "[i % 24]);
    return b;
  }();
  const llama::TokenWindows data = value_of(llama::text_windows(bytes.data(), bytes.size(), 2, T));
  llama::TrainOptions o;
  o.steps = 1;
  o.batch = 2;
  o.lr = 1e-3;  // large enough that one step moves codes
  o.warmup_fraction = 0;
  value_of(llama::train_model(replicas, data, nullptr, o));

  // Deploy: every decoder linear from its exported packed codes, on lowbit's dequant_gemm.
  std::size_t next = 0;
  std::vector<std::unique_ptr<llama::Linear>> deployed;
  for (std::int64_t l = 0; l < config.num_layers; ++l)
    for (int s = 0; s < llama::kLinearsPerLayer; ++s) {
      const auto& layer = static_cast<Trainable&>(replicas[0].linear(l, s)).layer();
      deployed.push_back(value_of(llama::DequantLinear::from_quantized(value_of(layer.export_weights()))));
    }
  const llama::LinearFactory take = [&](const std::string&, const float*, std::int64_t,
                                        std::int64_t) -> Result<std::unique_ptr<llama::Linear>> {
    return std::move(deployed[next++]);
  };
  const llama::LlamaModel model = value_of(
      llama::LlamaModel::from_weights(value_of(llama::LlamaWeights::load(dir + "/model.safetensors", config)), take));
  llama::LlamaState state = value_of(model.new_state(T));
  std::vector<float> logits(static_cast<std::size_t>(T * config.vocab_size));
  require_ok(model.forward(data.window(0), T, state, logits.data()));
  value_of(replicas[0].forward(data.window(0), T));
  double worst = 0;
  for (std::size_t i = 0; i < logits.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::fabs(logits[i] - replicas[0].logits()[i])));
  MESSAGE("tinylm W4 QAT: deployed vs fake-quant logits, max |diff| ", worst);
  CHECK(worst < 1e-3);  // logits up to ~20: float summation order of two different GEMMs
  // And the step changed the model: the deployed logits are not RTN's.
  auto rtn = replicas_of(weights, 1, factory);
  value_of(rtn[0].forward(data.window(0), T));
  double moved = 0;
  for (std::size_t i = 0; i < logits.size(); ++i)
    moved = std::max(moved, static_cast<double>(std::fabs(logits[i] - rtn[0].logits()[i])));
  CHECK(moved > 1e-2);
}
