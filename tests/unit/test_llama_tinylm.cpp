// The fp32 Llama forward pass of examples/llama/llama.hpp on tinylm (models/tinylm), against
// PyTorch's logits and residual stream (logits_ref.npy, hidden_ref.npy: transformers'
// LlamaForCausalLM, float32), plus the KV cache, the perplexity protocol, the swappable linears,
// the calibration hook, and the Status of every bad input.
//
// Cost: a 256-token window of tinylm is ~2.5 GFLOP, ~0.1 s optimised but ~40 s in the sanitized
// -O0 Debug build (Eigen uninlined, ASan on every load). So unoptimised or sanitized builds check
// tinylm on prefixes of the reference windows (the model is causal: the logits at positions 0..P-1
// do not depend on later bytes, so the reference values of a prefix are the same) and runs the
// whole-window properties (decode over 256 positions, perplexity over 8 windows) on a toy model
// the test writes; optimised builds (the Release -fno-exceptions run of the suite) also run them
// on tinylm in full.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "support/npy.hpp"

namespace {

using lowbit::Errc;
using lowbit::Result;
using lowbit::Status;

const std::string kModelDir = LOWBIT_TEST_DATA_DIR "/../../models/tinylm";
constexpr std::int64_t kWindow = 256, kVocab = 256;
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOWBIT_LLAMA_TEST_SANITIZED 1
#endif
#endif
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__) && !defined(LOWBIT_LLAMA_TEST_SANITIZED)
constexpr bool kOptimized = true;  // tinylm in full: ~2 s
#else
constexpr bool kOptimized = false;  // -O0 or ASan: prefixes, and the toy model for whole windows
#endif
// Positions of tinylm checked against the reference per window (window 0 opens with 18 '=', on
// which attention cannot tell positions apart: the prefix must reach past them), and decoded.
constexpr std::int64_t kPositions = kOptimized ? kWindow : 24;
constexpr std::int64_t kDecodePositions = kOptimized ? kWindow : 8;

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  INFO("reading ", path);
  REQUIRE(f.good());
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(f.tellg()));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
  return bytes;
}

void write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  REQUIRE(f.good());
}

// A fresh directory for files this test writes, removed on destruction.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag) {
    std::error_code ec;
    path = (std::filesystem::temp_directory_path(ec) /
            ("lowbit_llama_" + tag + "_" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(path, ec);
    REQUIRE(std::filesystem::create_directories(path, ec));
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

const llama::LlamaModel& tinylm() {
  static Result<llama::LlamaModel> model = llama::LlamaModel::load(kModelDir);
  INFO("loading ", kModelDir, ": ", model.status().message());
  REQUIRE(model.has_value());
  return *model;
}

const std::vector<std::uint8_t>& eval_text() {
  static const std::vector<std::uint8_t> text = read_file(kModelDir + "/eval.txt");
  return text;
}

std::vector<std::int32_t> window_ids(std::int64_t w) {
  const std::vector<std::uint8_t>& text = eval_text();
  REQUIRE(static_cast<std::int64_t>(text.size()) >= (w + 1) * kWindow);
  return std::vector<std::int32_t>(text.begin() + w * kWindow, text.begin() + (w + 1) * kWindow);
}

// The float32 payload of a reference .npy (memcpy: Npy::as<> converts element by element, slow
// in the -O0 build for half a million values).
std::vector<float> load_f32(const std::string& path, const std::vector<std::int64_t>& shape) {
  const lowbit_test::Npy npy = lowbit_test::load_npy_file(path);
  INFO("loading ", path, ": ", npy.error);
  REQUIRE(npy.error.empty());
  REQUIRE(npy.dtype == "<f4");
  REQUIRE(npy.shape == shape);
  std::vector<float> out(static_cast<std::size_t>(npy.size()));
  std::memcpy(out.data(), npy.bytes.data(), out.size() * sizeof(float));
  return out;
}

// -ln softmax(row)[target], written here in double independently of llama.hpp.
double nll(const float* row, std::int64_t target) {
  double top = -INFINITY;
  for (std::int64_t v = 0; v < kVocab; ++v) top = std::max(top, static_cast<double>(row[v]));
  double sum = 0;
  for (std::int64_t v = 0; v < kVocab; ++v) sum += std::exp(static_cast<double>(row[v]) - top);
  return -(static_cast<double>(row[target]) - top - std::log(sum));
}

double max_abs_diff(const float* a, const float* b, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

const char* kTinylmConfig = R"({"vocab_size": 256, "hidden_size": 256, "intermediate_size": 768,
  "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32,
  "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0})";

}  // namespace

TEST_CASE("llama: tinylm's config.json gives the README's architecture") {
  std::string culprit = "x";
  Result<llama::LlamaConfig> c = llama::LlamaConfig::load(kModelDir + "/config.json", &culprit);
  REQUIRE(c.has_value());
  CHECK(culprit.empty());
  CHECK(c->vocab_size == 256);
  CHECK(c->hidden_size == 256);
  CHECK(c->intermediate_size == 768);
  CHECK(c->num_layers == 6);
  CHECK(c->num_heads == 8);
  CHECK(c->num_kv_heads == 4);
  CHECK(c->head_dim == 32);
  CHECK(c->max_positions == 256);
  CHECK(c->rms_norm_eps == 1e-5);
  CHECK(c->rope_theta == 10000.0);
  CHECK_FALSE(c->tie_word_embeddings);
}

TEST_CASE("llama: bad configs are Status values naming the key") {
  const std::string base = kTinylmConfig;
  const auto with = [&](const std::string& extra) {
    return base.substr(0, base.size() - 1) + ", " + extra + "}";
  };
  struct Case {
    std::string json;
    Errc code;
    const char* culprit;
  };
  const Case cases[] = {
      {R"({"hidden_size": 256})", Errc::kCorrupt, "vocab_size"},
      {base.substr(0, 40), Errc::kTruncated, ""},
      {"[1, 2]", Errc::kCorrupt, ""},
      {with(R"("hidden_act": "gelu")"), Errc::kUnsupported, "hidden_act"},
      {with(R"("attention_bias": true)"), Errc::kUnsupported, "attention_bias"},
      {with(R"("rope_scaling": {"type": "linear", "factor": 2.0})"), Errc::kUnsupported,
       "rope_scaling"},
      {with(R"("vocab_size": 256)"), Errc::kCorrupt, "vocab_size"},  // repeated key
      {with(R"("tie_word_embeddings": 1)"), Errc::kCorrupt, "tie_word_embeddings"},
      {R"({"vocab_size": 256.5})", Errc::kCorrupt, "vocab_size"},
      {R"({"rms_norm_eps": 1e999})", Errc::kOutOfRange, "rms_norm_eps"},
  };
  for (const Case& k : cases) {
    INFO(k.json);
    std::string culprit;
    Result<llama::LlamaConfig> c = llama::LlamaConfig::parse(k.json, &culprit);
    REQUIRE_FALSE(c.has_value());
    CHECK(c.status().code() == k.code);
    if (k.culprit[0] != '\0') CHECK(culprit == k.culprit);
  }
  // Values outside the domain, found by validate() after parsing.
  std::string changed = base;
  changed.replace(changed.find("\"num_key_value_heads\": 4"), 24, "\"num_key_value_heads\": 3");
  CHECK(llama::LlamaConfig::parse(changed).status().code() == Errc::kIndivisible);
  changed = base;
  changed.replace(changed.find("10000.0"), 7, "-1.0");
  CHECK(llama::LlamaConfig::parse(changed).status().code() == Errc::kInvalidArgument);
  changed = base;
  changed.replace(changed.find("\"head_dim\": 32"), 14, "\"head_dim\": 33");
  CHECK(llama::LlamaConfig::parse(changed).status().code() == Errc::kInvalidArgument);
  changed = base;
  changed.replace(changed.find("\"num_hidden_layers\": 6"), 22, "\"num_hidden_layers\": 0");
  CHECK(llama::LlamaConfig::parse(changed).status().code() == Errc::kInvalidArgument);
  // Optional keys take Hugging Face's defaults; null means absent.
  changed = base;
  changed.replace(changed.find("\"head_dim\": 32"), 14, "\"head_dim\": null");
  Result<llama::LlamaConfig> c = llama::LlamaConfig::parse(with(R"("rope_scaling": null)"));
  REQUIRE(c.has_value());
  CHECK(c->head_dim == 32);
  c = llama::LlamaConfig::parse(changed);
  REQUIRE(c.has_value());
  CHECK(c->head_dim == 256 / 8);
  CHECK(llama::LlamaConfig::load("/nonexistent/config.json").status().code() == Errc::kIo);
}

TEST_CASE("llama: model files that disagree with the config, or are truncated, are refused") {
  Result<llama::LlamaConfig> good = llama::LlamaConfig::parse(kTinylmConfig);
  REQUIRE(good.has_value());
  const std::string weights = kModelDir + "/model.safetensors";
  struct Case {
    std::int64_t llama::LlamaConfig::*field;
    std::int64_t value;
    Errc code;
    const char* culprit;
  };
  const Case cases[] = {
      {&llama::LlamaConfig::hidden_size, 128, Errc::kShapeMismatch, "model.embed_tokens.weight"},
      {&llama::LlamaConfig::vocab_size, 512, Errc::kShapeMismatch, "model.embed_tokens.weight"},
      {&llama::LlamaConfig::intermediate_size, 512, Errc::kShapeMismatch,
       "model.layers.0.mlp.gate_proj.weight"},
      {&llama::LlamaConfig::num_kv_heads, 8, Errc::kShapeMismatch,
       "model.layers.0.self_attn.k_proj.weight"},
      {&llama::LlamaConfig::num_layers, 7, Errc::kCorrupt, "model.layers.6.input_layernorm.weight"},
  };
  for (const Case& k : cases) {
    llama::LlamaConfig c = *good;
    c.*(k.field) = k.value;
    std::string culprit;
    Result<llama::LlamaWeights> w = llama::LlamaWeights::load(weights, c, &culprit);
    INFO(k.culprit);
    REQUIRE_FALSE(w.has_value());
    CHECK(w.status().code() == k.code);
    CHECK(culprit == k.culprit);
  }
  llama::LlamaConfig tied = *good;  // tinylm's lm_head is its own tensor; tying reads the embedding
  tied.tie_word_embeddings = true;
  Result<llama::LlamaWeights> w = llama::LlamaWeights::load(weights, tied);
  REQUIRE(w.has_value());
  CHECK(w->lm_head == w->embed_tokens);

  llama::LlamaWeights empty;  // not loaded: no config, then no tensors
  CHECK(llama::LlamaModel::from_weights(std::move(empty)).status().code() ==
        Errc::kInvalidArgument);
  llama::LlamaWeights unloaded;
  unloaded.config = *good;
  CHECK(llama::LlamaModel::from_weights(std::move(unloaded)).status().code() ==
        Errc::kInvalidArgument);

  std::string culprit;
  Result<llama::LlamaModel> missing =
      llama::LlamaModel::load("/nonexistent/tinylm", nullptr, &culprit);
  CHECK(missing.status().code() == Errc::kIo);
  CHECK(culprit == "/nonexistent/tinylm/config.json");

  // Truncated: the header survives, the last tensors do not.
  TempDir dir("truncated");
  const std::vector<std::uint8_t> bytes = read_file(weights);
  const std::vector<std::uint8_t> config = read_file(kModelDir + "/config.json");
  write_file(dir.path + "/config.json", config.data(), config.size());
  write_file(dir.path + "/model.safetensors", bytes.data(), bytes.size() / 2);
  CHECK(llama::LlamaModel::load(dir.path).status().code() == Errc::kTruncated);
  write_file(dir.path + "/model.safetensors", bytes.data(), 7);
  CHECK(llama::LlamaModel::load(dir.path).status().code() == Errc::kTruncated);
}

namespace {

// A toy Llama with tinylm's vocabulary (so eval.txt is its input): 2 layers, 4 heads over 2 kv
// heads of dim 4, tied embeddings. Every weight is k/64 with |k| <= 64, exact in bf16 and fp16,
// so files in the three dtypes hold the same numbers.
const char* kToyConfig = R"({"vocab_size": 256, "hidden_size": 16, "intermediate_size": 24,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": true})";

// Writes the toy model into `dir` in `dtype`, leaving out the tensor `skip` and putting `poison`
// at element 3 of layer 1's up_proj.
void write_toy_model(const std::string& dir, lowbit::io::SafetensorsDtype dtype,
                     const std::string& skip = "", float poison = 0.5f) {
  using lowbit::io::SafetensorsDtype;
  Result<llama::LlamaConfig> c = llama::LlamaConfig::parse(kToyConfig);
  REQUIRE(c.has_value());
  lowbit::io::SafetensorsWriter writer;
  std::vector<std::vector<std::uint8_t>> data;
  std::uint32_t seed = 12345;  // a fixed LCG: the same toy model on every platform
  const auto add = [&](const std::string& name, std::vector<std::int64_t> shape) {
    if (name == skip) return;
    REQUIRE(writer.add_tensor(name, dtype, shape.data(), shape.size()).ok());
    std::int64_t n = 1;
    for (std::int64_t e : shape) n *= e;
    std::vector<std::uint8_t> raw;
    for (std::int64_t i = 0; i < n; ++i) {
      seed = seed * 1664525u + 1013904223u;
      float v = static_cast<float>(static_cast<int>(seed >> 25) - 64) / 64.0f;
      if (i == 3 && name == "model.layers.1.mlp.up_proj.weight") v = poison;
      std::uint32_t bits = lowbit::detail::float_bits(v);
      if (dtype == SafetensorsDtype::kF16) bits = lowbit::to_half(v).bits;
      if (dtype == SafetensorsDtype::kBF16) bits = lowbit::to_bfloat16(v).bits;
      for (std::int64_t b = 0; b < lowbit::io::safetensors_dtype_bytes(dtype); ++b)
        raw.push_back(static_cast<std::uint8_t>(bits >> (8 * b)));
    }
    data.push_back(raw);
  };
  add("model.embed_tokens.weight", {c->vocab_size, c->hidden_size});
  add("model.norm.weight", {c->hidden_size});
  for (int l = 0; l < c->num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {c->hidden_size});
    add(p + "post_attention_layernorm.weight", {c->hidden_size});
    for (int s = 0; s < llama::kLinearsPerLayer; ++s) {
      const auto shape = llama::linear_shape(*c, s);
      add(llama::linear_name(l, s) + ".weight", {shape.first, shape.second});
    }
  }
  std::vector<const void*> ptrs;
  for (const auto& d : data) ptrs.push_back(d.data());
  std::vector<std::uint8_t> file;
  lowbit::io::VectorSink sink{&file};
  REQUIRE(writer.write(sink, ptrs.data()).ok());
  write_file(dir + "/model.safetensors", file.data(), file.size());
  const std::string config = kToyConfig;
  write_file(dir + "/config.json", reinterpret_cast<const std::uint8_t*>(config.data()),
             config.size());
}

// Decodes ids[0 .. n) one token at a time, except a chunk of n/4 tokens (a prefill on a
// non-empty cache) in the middle; returns the largest difference to a prefill of all n.
double decode_vs_prefill(const llama::LlamaModel& model, const std::int32_t* ids, std::int64_t n) {
  const std::int64_t vocab = model.config().vocab_size;
  Result<llama::LlamaState> prefill = model.new_state(n), decode = model.new_state(n);
  REQUIRE(prefill.has_value());
  REQUIRE(decode.has_value());
  std::vector<float> all(static_cast<std::size_t>(n * vocab)), some(all.size());
  REQUIRE(model.forward(ids, n, *prefill, all.data()).ok());
  double worst = 0;
  for (std::int64_t t = 0; t < n;) {
    const std::int64_t count = t == n / 2 ? n / 4 : 1;
    if (count == 1)
      REQUIRE(model.decode(ids[t], *decode, some.data()).ok());
    else
      REQUIRE(model.forward(ids + t, count, *decode, some.data()).ok());
    REQUIRE(decode->position() == t + count);
    worst = std::max(worst, max_abs_diff(some.data(), all.data() + t * vocab, count * vocab));
    t += count;
  }
  return worst;
}

// The first `windows` windows scored here: the model's logits, this file's log-softmax.
double mean_nll(const llama::LlamaModel& model, const std::uint8_t* text, std::int64_t window,
                std::int64_t windows) {
  const std::int64_t vocab = model.config().vocab_size;
  Result<llama::LlamaState> state = model.new_state(window);
  REQUIRE(state.has_value());
  std::vector<float> logits(static_cast<std::size_t>(window * vocab));
  double sum = 0;
  for (std::int64_t w = 0; w < windows; ++w) {
    const std::vector<std::int32_t> ids(text + w * window, text + (w + 1) * window);
    state->reset();
    REQUIRE(model.forward(ids.data(), window, *state, logits.data()).ok());
    for (std::int64_t t = 0; t + 1 < window; ++t)
      sum += nll(logits.data() + t * vocab, ids[static_cast<std::size_t>(t + 1)]);
  }
  return sum / static_cast<double>(windows * (window - 1));
}

}  // namespace

TEST_CASE(
    "llama: F32, F16 and BF16 files of one model give identical logits; bad tensors refused") {
  using lowbit::io::SafetensorsDtype;
  TempDir dir("toy_dtypes");
  const std::vector<std::int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 200, 255, 0};
  const std::int64_t n = static_cast<std::int64_t>(ids.size());
  std::vector<std::vector<float>> logits;
  for (SafetensorsDtype dtype :
       {SafetensorsDtype::kF32, SafetensorsDtype::kF16, SafetensorsDtype::kBF16}) {
    write_toy_model(dir.path, dtype);
    Result<llama::LlamaModel> m = llama::LlamaModel::load(dir.path);
    REQUIRE(m.has_value());
    CHECK(m->weights().lm_head == m->weights().embed_tokens);
    Result<llama::LlamaState> s = m->new_state(n);
    REQUIRE(s.has_value());
    logits.emplace_back(static_cast<std::size_t>(n * kVocab));
    REQUIRE(m->forward(ids.data(), n, *s, logits.back().data()).ok());
    for (float x : logits.back()) REQUIRE(std::isfinite(x));
  }
  CHECK(logits[1] == logits[0]);
  CHECK(logits[2] == logits[0]);
  CHECK(max_abs_diff(logits[0].data(), logits[0].data() + kVocab, kVocab) > 0);  // positions differ

  std::string culprit;
  write_toy_model(dir.path, SafetensorsDtype::kF32, "model.layers.1.mlp.down_proj.weight");
  CHECK(llama::LlamaModel::load(dir.path, nullptr, &culprit).status().code() == Errc::kCorrupt);
  CHECK(culprit == "model.layers.1.mlp.down_proj.weight");
  write_toy_model(dir.path, SafetensorsDtype::kF32, "", NAN);
  Status s = llama::LlamaModel::load(dir.path, nullptr, &culprit).status();
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 3);
  CHECK(culprit == "model.layers.1.mlp.up_proj.weight");
  write_toy_model(dir.path, SafetensorsDtype::kF16, "", 1e6f);  // overflows fp16 to Inf
  CHECK(llama::LlamaModel::load(dir.path).status().code() == Errc::kNonFinite);
  write_toy_model(dir.path, SafetensorsDtype::kI32);
  CHECK(llama::LlamaModel::load(dir.path).status().code() == Errc::kUnsupported);
}

TEST_CASE("llama: tinylm reproduces PyTorch's logits and residual stream") {
  const llama::LlamaModel& model = tinylm();
  const std::vector<float> want = load_f32(kModelDir + "/logits_ref.npy", {2, kWindow, kVocab});
  const std::vector<float> hidden_want = load_f32(kModelDir + "/hidden_ref.npy", {7, kWindow, 256});

  Result<llama::LlamaState> state = model.new_state(kWindow);
  REQUIRE(state.has_value());
  std::vector<float> logits(static_cast<std::size_t>(kPositions * kVocab));
  for (std::int64_t w = 0; w < 2; ++w) {
    const std::vector<std::int32_t> ids = window_ids(w);
    // Residual stream after the embedding and each layer (window 0). Its scale grows to ~30, so
    // the bound is relative to the entry where it exceeds 1.
    std::vector<double> hidden_err(7, -1.0);
    llama::ForwardHooks hooks;
    hooks.residual = [&](std::int64_t index, const float* h, std::int64_t tokens,
                         std::int64_t width) {
      REQUIRE(tokens == kPositions);
      REQUIRE(width == 256);
      double worst = 0;
      for (std::int64_t i = 0; i < tokens * width; ++i) {
        const float r = hidden_want[static_cast<std::size_t>(index * kWindow * 256 + i)];
        worst = std::max(worst,
                         std::fabs(static_cast<double>(h[i]) - r) / std::max(1.0f, std::fabs(r)));
      }
      hidden_err[static_cast<std::size_t>(index)] = worst;
    };
    state->reset();
    REQUIRE(model.forward(ids.data(), kPositions, *state, logits.data(), w == 0 ? &hooks : nullptr)
                .ok());
    CHECK(state->position() == kPositions);
    const double err =
        max_abs_diff(logits.data(), want.data() + w * kWindow * kVocab, kPositions * kVocab);
    MESSAGE("window ", w, ", positions 0..", kPositions - 1, ": max |logit - PyTorch| = ", err);
    CHECK(err <= 1e-4);
    if (w == 0) {
      MESSAGE("residual stream: max relative error ",
              *std::max_element(hidden_err.begin(), hidden_err.end()));
      for (std::size_t i = 0; i < hidden_err.size(); ++i) {
        INFO("hidden state ", i, " error ", hidden_err[i]);
        CHECK(hidden_err[i] >= 0);  // the hook ran
        CHECK(hidden_err[i] <= 5e-5);
      }
    }
  }
}

TEST_CASE("llama: decoding with the KV cache gives the prefill's logits position by position") {
  {  // The toy model over a whole window: the cache at every position up to 256.
    TempDir dir("toy_decode");
    write_toy_model(dir.path, lowbit::io::SafetensorsDtype::kF32);
    Result<llama::LlamaModel> toy = llama::LlamaModel::load(dir.path);
    REQUIRE(toy.has_value());
    const std::vector<std::int32_t> ids = window_ids(3);
    const double worst = decode_vs_prefill(*toy, ids.data(), kWindow);
    MESSAGE("toy model, 256 positions: max |decode - prefill| = ", worst);
    CHECK(worst <= 1e-4);
  }
  const std::vector<std::int32_t> ids = window_ids(1);
  const double worst = decode_vs_prefill(tinylm(), ids.data(), kDecodePositions);
  MESSAGE("tinylm, ", kDecodePositions, " positions: max |decode - prefill| = ", worst);
  CHECK(worst <= 1e-4);
}

TEST_CASE("llama: the perplexity evaluator follows the protocol") {
  const std::vector<std::uint8_t>& text = eval_text();
  REQUIRE(text.size() == 262144);
  {  // The toy model: 8 windows (of 256 bytes; Debug: 64), 1 and 2 threads, against this test's
     // scoring.
    TempDir dir("toy_ppl");
    write_toy_model(dir.path, lowbit::io::SafetensorsDtype::kF32);
    Result<llama::LlamaModel> toy = llama::LlamaModel::load(dir.path);
    REQUIRE(toy.has_value());
    const std::int64_t window = kOptimized ? kWindow : 64;
    const double want = mean_nll(*toy, text.data(), window, 8);
    for (int threads : {1, 2}) {
      llama::PerplexityOptions o;
      o.window = window;
      o.max_windows = 8;
      o.threads = threads;
      Result<llama::Perplexity> p = llama::evaluate_perplexity(*toy, text.data(), text.size(), o);
      REQUIRE(p.has_value());
      CHECK(p->windows == 8);
      CHECK(p->predictions == 8 * (window - 1));
      CHECK(p->cross_entropy == doctest::Approx(want).epsilon(1e-12));
      CHECK(p->perplexity == doctest::Approx(std::exp(want)).epsilon(1e-12));
    }
  }
  const llama::LlamaModel& model = tinylm();
  if (kOptimized) {
    // Windows 0 and 1 scored from PyTorch's logits: an oracle for the protocol and the loss.
    const std::vector<float> ref = load_f32(kModelDir + "/logits_ref.npy", {2, kWindow, kVocab});
    double ref_sum = 0;
    for (std::int64_t w = 0; w < 2; ++w)
      for (std::int64_t t = 0; t + 1 < kWindow; ++t)
        ref_sum += nll(ref.data() + (w * kWindow + t) * kVocab,
                       text[static_cast<std::size_t>(w * kWindow + t + 1)]);
    llama::PerplexityOptions two;
    two.max_windows = 2;
    Result<llama::Perplexity> p2 = llama::evaluate_perplexity(model, text.data(), text.size(), two);
    REQUIRE(p2.has_value());
    CHECK(p2->predictions == 2 * 255);
    CHECK(p2->cross_entropy == doctest::Approx(ref_sum / 510).epsilon(1e-6));
  }
  // tinylm's first 8 windows on 2 threads against this test's scoring (Debug: 2 windows of 4
  // bytes).
  llama::PerplexityOptions eight;
  eight.window = kOptimized ? kWindow : 4;
  eight.max_windows = kOptimized ? 8 : 2;
  eight.threads = 2;
  Result<llama::Perplexity> p8 = llama::evaluate_perplexity(model, text.data(), text.size(), eight);
  REQUIRE(p8.has_value());
  const double want = mean_nll(model, text.data(), eight.window, eight.max_windows);
  CHECK(p8->windows == eight.max_windows);
  CHECK(p8->predictions == eight.max_windows * (eight.window - 1));
  CHECK(p8->cross_entropy == doctest::Approx(want).epsilon(1e-12));
  CHECK(p8->perplexity == doctest::Approx(std::exp(want)).epsilon(1e-12));

  // Token by token (the mode a quantized KV cache needs) scores the same predictions: with the
  // fp32 cache it equals the prefill up to float summation order; an 8-bit cache stays close,
  // and one with no fp32 window and 2 bits moves it (the cache really is read).
  {
    llama::PerplexityOptions o;
    o.window = kOptimized ? 128 : 32;
    o.max_windows = 2;
    o.threads = 2;
    Result<llama::Perplexity> prefill = llama::evaluate_perplexity(model, text.data(), text.size(), o);
    REQUIRE(prefill.has_value());
    o.token_by_token = true;
    Result<llama::Perplexity> steps = llama::evaluate_perplexity(model, text.data(), text.size(), o);
    REQUIRE(steps.has_value());
    CHECK(steps->predictions == prefill->predictions);
    CHECK(steps->cross_entropy == doctest::Approx(prefill->cross_entropy).epsilon(1e-5));
    lowbit::KvQuantConfig kv;
    kv.bits = 8;
    kv.group_tokens = 8;
    kv.residual = 8;
    o.kv = &kv;
    Result<llama::Perplexity> kv8 = llama::evaluate_perplexity(model, text.data(), text.size(), o);
    REQUIRE(kv8.has_value());
    CHECK(kv8->cross_entropy == doctest::Approx(prefill->cross_entropy).epsilon(2e-3));
    kv.bits = 2;
    kv.residual = 0;
    Result<llama::Perplexity> kv2 = llama::evaluate_perplexity(model, text.data(), text.size(), o);
    REQUIRE(kv2.has_value());
    CHECK(std::fabs(kv2->cross_entropy - prefill->cross_entropy) > 1e-4);
    kv.bits = 3;  // a bad cache config is the state's error, passed on
    CHECK(llama::evaluate_perplexity(model, text.data(), text.size(), o).status().code() ==
          Errc::kUnsupported);
  }

  // A trailing partial window is not scored; bad options and short text are Status values.
  llama::PerplexityOptions small;
  small.window = 5;
  Result<llama::Perplexity> partial =
      llama::evaluate_perplexity(model, text.data(), 14, small);  // 2 windows
  REQUIRE(partial.has_value());
  CHECK(partial->windows == 2);
  CHECK(partial->predictions == 8);
  CHECK(llama::evaluate_perplexity(model, text.data(), 255).status().code() == Errc::kEmpty);
  small.window = 1;
  CHECK(llama::evaluate_perplexity(model, text.data(), 1000, small).status().code() ==
        Errc::kInvalidArgument);
  small.window = 100;
  small.threads = 0;
  CHECK(llama::evaluate_perplexity(model, text.data(), 1000, small).status().code() ==
        Errc::kInvalidArgument);
  CHECK(llama::evaluate_perplexity(model, nullptr, 1000).status().code() == Errc::kInvalidArgument);
}

namespace {
// Wraps the fp32 layer and counts calls; optionally fails, to test error propagation.
class CountingLinear final : public llama::Linear {
 public:
  CountingLinear(const float* w, std::int64_t out, std::int64_t in, int* calls, bool fail = false)
      : Linear(in, out), dense_(w, out, in), calls_(calls), fail_(fail) {}
  Status forward(const float* x, std::int64_t tokens, float* y) const override {
    ++*calls_;
    if (fail_) return Status(Errc::kNumericalIssue, "test: this layer fails");
    return dense_.forward(x, tokens, y);
  }

 private:
  llama::DenseLinear dense_;
  int* calls_;
  bool fail_;
};
}  // namespace

TEST_CASE("llama: linears are swappable by name and their inputs observable") {
  const llama::LlamaModel& reference = tinylm();
  int calls = 0;
  std::vector<std::string> built;
  Result<llama::LlamaModel> model = llama::LlamaModel::load(
      kModelDir,
      [&](const std::string& name, const float* w, std::int64_t out,
          std::int64_t in) -> Result<std::unique_ptr<llama::Linear>> {
        built.push_back(name);
        return std::unique_ptr<llama::Linear>(new CountingLinear(w, out, in, &calls));
      });
  REQUIRE(model.has_value());
  REQUIRE(built.size() == 42);
  CHECK(built[0] == "model.layers.0.self_attn.q_proj");
  CHECK(built[6] == "model.layers.0.mlp.down_proj");
  CHECK(built[41] == "model.layers.5.mlp.down_proj");

  const std::vector<std::int32_t> ids = window_ids(0);
  const std::int64_t n = kOptimized ? 24 : 2;
  Result<llama::LlamaState> s = reference.new_state(n);
  REQUIRE(s.has_value());
  std::vector<float> want(static_cast<std::size_t>(n * kVocab)), got(want.size());
  REQUIRE(reference.forward(ids.data(), n, *s, want.data()).ok());

  // The hook: every linear once per forward, in order, with its input shape; q/k/v share one input.
  std::vector<std::string> seen;
  std::vector<const float*> inputs;
  std::vector<float> q_input;
  llama::ForwardHooks hooks;
  hooks.linear_input = [&](const std::string& name, const float* x, std::int64_t tokens,
                           std::int64_t in) {
    seen.push_back(name);
    inputs.push_back(x);
    CHECK(tokens == n);
    CHECK(in == (name.find("o_proj") != std::string::npos ? 256
                 : name.find("down") != std::string::npos ? 768
                                                          : 256));
    if (name == "model.layers.0.self_attn.q_proj") q_input.assign(x, x + tokens * in);
  };
  s->reset();
  REQUIRE(model->forward(ids.data(), n, *s, got.data(), &hooks).ok());
  CHECK(got == want);  // the same Eigen product behind the wrapper: bit-identical
  CHECK(calls == 42);
  REQUIRE(seen.size() == 42);
  for (std::size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == built[i]);
  CHECK(inputs[0] == inputs[1]);
  CHECK(inputs[1] == inputs[2]);
  CHECK(inputs[4] == inputs[5]);
  CHECK(inputs[3] != inputs[0]);
  // q_proj's input in layer 0 is RMSNorm(embedding) · input_layernorm: computed here from
  // PyTorch's embedding output (hidden_ref[0]) and the stored norm weights.
  const std::vector<float> h0 = load_f32(kModelDir + "/hidden_ref.npy", {7, kWindow, 256});
  const float* norm = reference.weights().layers[0].input_norm;
  double worst = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    double ss = 0;
    for (std::int64_t i = 0; i < 256; ++i)
      ss += static_cast<double>(h0[static_cast<std::size_t>(t * 256 + i)]) *
            h0[static_cast<std::size_t>(t * 256 + i)];
    const double inv = 1.0 / std::sqrt(ss / 256 + 1e-5);
    for (std::int64_t i = 0; i < 256; ++i)
      worst = std::max(worst, std::fabs(norm[i] * h0[static_cast<std::size_t>(t * 256 + i)] * inv -
                                        q_input[static_cast<std::size_t>(t * 256 + i)]));
  }
  CHECK(worst <= 1e-5);

  // replace_linear: checked by name and shape; a failing layer fails the forward pass and leaves
  // the cache where it was.
  const float* w = reference.weights().layers[2].linear[llama::kUp];
  CHECK(model
            ->replace_linear("model.layers.2.mlp.upproj",
                             std::make_unique<llama::DenseLinear>(w, 768, 256))
            .code() == Errc::kInvalidArgument);
  CHECK(model->replace_linear("model.layers.2.mlp.up_proj", nullptr).code() ==
        Errc::kInvalidArgument);
  CHECK(model
            ->replace_linear("model.layers.2.mlp.up_proj",
                             std::make_unique<llama::DenseLinear>(w, 256, 768))
            .code() == Errc::kShapeMismatch);
  int failing_calls = 0;
  REQUIRE(model
              ->replace_linear("model.layers.2.mlp.up_proj",
                               std::make_unique<CountingLinear>(w, 768, 256, &failing_calls, true))
              .ok());
  s->reset();
  CHECK(model->forward(ids.data(), n, *s, got.data()).code() == Errc::kNumericalIssue);
  CHECK(failing_calls == 1);
  CHECK(s->position() == 0);
  REQUIRE(model
              ->replace_linear("model.layers.2.mlp.up_proj",
                               std::make_unique<llama::DenseLinear>(w, 768, 256))
              .ok());
  REQUIRE(model->forward(ids.data(), n, *s, got.data()).ok());
  CHECK(got == want);

  // A factory's error reaches the caller, naming the layer; so does a layer of the wrong shape.
  std::string culprit;
  Result<llama::LlamaModel> bad = llama::LlamaModel::load(
      kModelDir,
      [](const std::string& name, const float* wt, std::int64_t out,
         std::int64_t in) -> Result<std::unique_ptr<llama::Linear>> {
        if (name == "model.layers.1.self_attn.v_proj")
          return Status(Errc::kNonFinite, "test: refused");
        return std::unique_ptr<llama::Linear>(new llama::DenseLinear(wt, out, in));
      },
      &culprit);
  CHECK(bad.status().code() == Errc::kNonFinite);
  CHECK(culprit == "model.layers.1.self_attn.v_proj");
  bad = llama::LlamaModel::load(
      kModelDir,
      [](const std::string&, const float* wt, std::int64_t out,
         std::int64_t in) -> Result<std::unique_ptr<llama::Linear>> {
        return std::unique_ptr<llama::Linear>(new llama::DenseLinear(wt, in, out));
      });
  CHECK(bad.status().code() == Errc::kShapeMismatch);
}

TEST_CASE("llama: forward refuses bad tokens, a full cache and a foreign state before writing") {
  const llama::LlamaModel& model = tinylm();
  Result<llama::LlamaState> s = model.new_state(8);
  REQUIRE(s.has_value());
  std::vector<float> logits(static_cast<std::size_t>(16 * kVocab));
  const std::int32_t ids[] = {1, 2, 3, 256, 5, 6, 7, 8, 9, 10};
  Status st = model.forward(ids, 5, *s, logits.data());
  CHECK(st.code() == Errc::kOutOfRange);
  CHECK(st.index() == 3);
  const std::int32_t negative[] = {-1};
  CHECK(model.forward(negative, 1, *s, logits.data()).code() == Errc::kOutOfRange);
  CHECK(s->position() == 0);
  CHECK(model.forward(ids, 0, *s, logits.data()).code() == Errc::kInvalidArgument);
  CHECK(model.forward(ids, 3, *s, nullptr).code() == Errc::kInvalidArgument);
  REQUIRE(model.forward(ids, 3, *s, logits.data()).ok());
  st = model.forward(ids + 4, 6, *s, logits.data());  // 3 + 6 > 8
  CHECK(st.code() == Errc::kOutOfRange);
  CHECK(s->position() == 3);
  CHECK(model.new_state(0).status().code() == Errc::kOutOfRange);
  CHECK(model.new_state(llama::kMaxDim + 1).status().code() == Errc::kOutOfRange);
  // A state of the toy model (2 layers, hidden 16), and one never made by a model.
  TempDir dir("toy_state");
  write_toy_model(dir.path, lowbit::io::SafetensorsDtype::kF32);
  Result<llama::LlamaModel> toy = llama::LlamaModel::load(dir.path);
  REQUIRE(toy.has_value());
  Result<llama::LlamaState> foreign = toy->new_state(8);
  REQUIRE(foreign.has_value());
  CHECK(model.forward(ids, 1, *foreign, logits.data()).code() == Errc::kShapeMismatch);
  CHECK(toy->forward(ids, 1, *foreign, logits.data()).ok());
  llama::LlamaState blank;
  CHECK(model.forward(ids, 1, blank, logits.data()).code() == Errc::kShapeMismatch);
  CHECK(s->cache().capacity() == 8);
  CHECK(s->cache().length() == 3);
  CHECK(s->cache().bytes() == 2 * 6 * 4 * 8 * 32 * sizeof(float));
  llama::DenseLinear dense(model.weights().lm_head, 256, 256);
  CHECK(dense.forward(nullptr, 1, logits.data()).code() == Errc::kInvalidArgument);
  CHECK(dense.forward(nullptr, 0, nullptr).ok());
}
