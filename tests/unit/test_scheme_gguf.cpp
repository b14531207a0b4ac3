// lowbit_quantize --scheme end to end on a small random Llama: the scheme built for export
// (examples/llama/schemes.hpp), written by the GGUF converter as supplied tensors, read back by
// examples/llama/gguf_model.hpp, must compute exactly the logits of the model the scheme built.
// The read-back undoes the Q/K permutation from its definition, not with the converter's helper,
// so a row out of place on either side fails here; so would a rewritten norm (AWQ) the file lost.
#include <doctest/doctest.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "llama/gguf_model.hpp"
#include "llama/schemes.hpp"
#include "lowbit/io/gguf_convert.hpp"
#include "lowbit/io/safetensors.hpp"
#include "support/toy_llama.hpp"

namespace {

using lowbit_test::require_ok;
using lowbit_test::value_of;

// Rows of 64 and 128 (ggml's 32-blocks divide them); 256 positions for the calibration windows;
// a byte-level vocabulary, as the calibration text is read as bytes.
llama::LlamaConfig export_config() {
  llama::LlamaConfig c = lowbit_test::toy_config();
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.max_positions = 256;
  return c;
}

std::string config_json(const llama::LlamaConfig& c) {
  return "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": " +
         std::to_string(c.vocab_size) + ", \"hidden_size\": " + std::to_string(c.hidden_size) +
         ", \"intermediate_size\": " + std::to_string(c.intermediate_size) +
         ", \"num_hidden_layers\": " + std::to_string(c.num_layers) +
         ", \"num_attention_heads\": " + std::to_string(c.num_heads) +
         ", \"num_key_value_heads\": " + std::to_string(c.num_kv_heads) +
         ", \"head_dim\": " + std::to_string(c.head_dim) +
         ", \"max_position_embeddings\": " + std::to_string(c.max_positions) +
         ", \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": false}";
}

void save(const std::string& path, const void* data, std::size_t n) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(std::fwrite(data, 1, n, f) == n);
  REQUIRE(std::fclose(f) == 0);
}

// The toy weights as a Hugging Face checkpoint directory (config.json, model.safetensors).
void write_checkpoint(const std::string& dir, const lowbit_test::ToyWeights& w) {
  const llama::LlamaConfig& c = w.config;
  lowbit::io::SafetensorsWriter writer;
  std::vector<const void*> data;
  const auto add = [&](const std::string& name, const std::vector<float>& v, std::int64_t rows,
                       std::int64_t cols) {
    const std::int64_t shape[2] = {rows, cols};
    require_ok(writer.add_tensor(name, lowbit::io::SafetensorsDtype::kF32, shape, cols == 0 ? 1 : 2));
    data.push_back(v.data());
  };
  add("model.embed_tokens.weight", w.embed, c.vocab_size, c.hidden_size);
  add("model.norm.weight", w.norm, c.hidden_size, 0);
  add("lm_head.weight", w.lm_head, c.vocab_size, c.hidden_size);
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const std::size_t li = static_cast<std::size_t>(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", w.norms_in[li], c.hidden_size, 0);
    add(p + "post_attention_layernorm.weight", w.norms_post[li], c.hidden_size, 0);
    for (int s = 0; s < llama::kLinearsPerLayer; ++s) {
      const auto shape = llama::linear_shape(c, s);
      add(llama::linear_name(l, s) + ".weight", w.linears[li * llama::kLinearsPerLayer + s],
          shape.first, shape.second);
    }
  }
  std::vector<std::uint8_t> bytes;
  lowbit::io::VectorSink sink{&bytes};
  require_ok(writer.write(sink, data.data()));
  save(dir + "/model.safetensors", bytes.data(), bytes.size());
  const std::string json = config_json(c);
  save(dir + "/config.json", json.data(), json.size());
}

// The model a scheme built: its linears, and its norms where it rewrote them (as lowbit_evaluate
// loads it).
llama::LlamaModel model_of(const std::string& dir, llama::schemes::Built* built) {
  llama::LlamaConfig c = value_of(llama::LlamaConfig::load(dir + "/config.json"));
  llama::LlamaWeights w = value_of(llama::LlamaWeights::load(dir + "/model.safetensors", c));
  for (std::size_t i = 0; i < built->norms.size(); ++i) {
    llama::LlamaWeights::Layer& layer = w.layers[i / 2];
    (i % 2 == 0 ? layer.input_norm : layer.post_attention_norm) = built->norms[i].data();
  }
  std::size_t index = 0;
  const llama::LinearFactory factory = [&](const std::string&, const float*, std::int64_t,
                                           std::int64_t) -> lowbit::Result<std::unique_ptr<llama::Linear>> {
    return std::move(built->linears[index++]);
  };
  return value_of(llama::LlamaModel::from_weights(std::move(w), factory));
}

std::vector<float> logits_of(const llama::LlamaModel& m, const std::vector<std::int32_t>& ids) {
  llama::LlamaState state = value_of(m.new_state(static_cast<std::int64_t>(ids.size())));
  std::vector<float> logits(ids.size() * static_cast<std::size_t>(m.config().vocab_size));
  require_ok(m.forward(ids.data(), static_cast<std::int64_t>(ids.size()), state, logits.data()));
  return logits;
}

}  // namespace

TEST_CASE("schemes: a scheme's GGUF reads back as the model the scheme built, logit for logit") {
  const std::string dir = "/tmp/lowbit_test_scheme_gguf_" + std::to_string(::getpid());
  REQUIRE((::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST));
  llama::LlamaConfig c = export_config();
  const lowbit_test::ToyWeights toy(c, 21);
  write_checkpoint(dir, toy);

  using llama::schemes::SchemeBuilder;
  llama::schemes::SchemeOptions so;
  so.calib_windows = 2;
  so.train_windows = 2;
  const std::vector<std::int32_t> text_ids = lowbit_test::random_tokens(2 * 256, 256, 3);
  std::vector<std::uint8_t> text(text_ids.begin(), text_ids.end());
  SchemeBuilder builder(so, value_of(llama::LlamaModel::load(dir)), text);
  require_ok(builder.calibrate());
  const std::vector<std::int32_t> ids = lowbit_test::random_tokens(24, 256, 9);

  // GPTQ's values in Q4_0, AWQ (norms rewritten) in IQ4_NL, an imatrix Q4_0, and bf16.
  for (const char* name : {"gptq-q4_0", "awq-iq4_nl", "q4_0-imat", "bf16"}) {
    INFO("scheme ", name);
    const SchemeBuilder::Scheme* scheme = nullptr;
    const std::vector<SchemeBuilder::Scheme> all = SchemeBuilder::schemes();
    for (const SchemeBuilder::Scheme& s : all)
      if (std::strcmp(s.name, name) == 0) scheme = &s;
    REQUIRE(scheme != nullptr);
    CHECK(scheme->stores == llama::schemes::Stores::kGgml);
    llama::schemes::Built built = value_of(scheme->build(builder, llama::schemes::Deploy::kExport));
    CHECK(built.norms.empty() == (std::strncmp(name, "awq", 3) != 0));

    lowbit::io::ConvertOptions options;
    options.default_type = lowbit::io::GgmlType::kF32;
    options.supplied = value_of(llama::schemes::gguf_tensors(built));
    CHECK(options.supplied.size() == 2 * 7 + built.norms.size());
    const lowbit::io::LlamaSource src = value_of(lowbit::io::open_llama_model(dir));
    const lowbit::io::ConvertPlan plan = value_of(lowbit::io::plan_llama_gguf(src, options));
    CHECK(plan.supplied == options.supplied.size());
    const std::string gguf = dir + "/" + name + ".gguf";
    require_ok(lowbit::io::write_llama_gguf_file(src, plan, gguf));

    const std::unique_ptr<llama::GgufModel> read = value_of(llama::load_gguf_model(gguf, dir));
    const llama::LlamaModel built_model = model_of(dir, &built);
    const std::vector<float> want = logits_of(built_model, ids), got = logits_of(read->model, ids);
    REQUIRE(want.size() == got.size());
    std::size_t differ = 0;
    for (std::size_t i = 0; i < want.size(); ++i) differ += want[i] != got[i];
    CHECK(differ == 0);
    // And the scheme did quantize: the fp32 model computes something else.
    const std::vector<float> fp32 = logits_of(builder.fp32(), ids);
    std::size_t same = 0;
    for (std::size_t i = 0; i < want.size(); ++i) same += want[i] == fp32[i];
    CHECK(same < want.size() / 2);
    std::remove(gguf.c_str());
  }

  // Packed codes have no GGUF type: a clear error naming the first linear.
  for (const SchemeBuilder::Scheme& s : SchemeBuilder::schemes())
    if (std::strcmp(s.name, "rtn-w8") == 0) {
      CHECK(s.stores == llama::schemes::Stores::kPacked);
      const llama::schemes::Built packed = value_of(s.build(builder, llama::schemes::Deploy::kExport));
      const lowbit::Result<std::vector<lowbit::io::SuppliedTensor>> r = llama::schemes::gguf_tensors(packed);
      CHECK(r.status().code() == lowbit::Errc::kUnsupported);
      CHECK(r.status().index() == 0);
    }

  // No file: a clear error naming it.
  std::string culprit;
  CHECK(llama::load_gguf_model(dir + "/no-such.gguf", dir, &culprit).status().code() == lowbit::Errc::kIo);
  CHECK(culprit == dir + "/no-such.gguf");
  std::remove((dir + "/model.safetensors").c_str());
  std::remove((dir + "/config.json").c_str());
  ::rmdir(dir.c_str());
}
