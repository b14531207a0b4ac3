// lowbit_quantize --scheme end to end on a small random Llama: the scheme built for export
// (examples/llama/schemes.hpp), written as a GGUF by the converter (supplied tensors) or as a
// lowbit checkpoint (examples/llama/checkpoint.hpp), read back (gguf_model.hpp, checkpoint.hpp),
// must compute exactly the logits of the model the scheme built. The GGUF read-back undoes the
// Q/K permutation from its definition, not with the converter's helper, so a row out of place on
// either side fails here; so would a rewritten norm (AWQ, SmoothQuant) the file lost.
#include <doctest/doctest.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "llama/checkpoint.hpp"
#include "llama/gguf_model.hpp"
#include "llama/schemes.hpp"
#include "lowbit/io/gguf_convert.hpp"
#include "lowbit/io/safetensors.hpp"
#include "support/toy_llama.hpp"

namespace {

using lowbit_test::require_ok;
using lowbit_test::value_of;

// Rows of 64, 128 and 256 (ggml's 32-blocks and GPTQ's groups of 128 divide them); 256
// positions for the calibration windows; a byte-level vocabulary, as the calibration text is
// read as bytes.
llama::LlamaConfig export_config() {
  llama::LlamaConfig c = lowbit_test::toy_config();
  c.vocab_size = 256;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
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

  // GGUF: GPTQ's values in Q4_0, AWQ (norms rewritten) in IQ4_NL, an imatrix Q4_0, bf16.
  // Checkpoint: GPTQ's packed 4-bit codes, SmoothQuant's (norms rewritten) 8-bit per-channel
  // codes, mixed precision (packed at several widths), and ggml blocks too.
  const std::pair<const char*, const char*> files[] = {
      {"gptq-q4_0", ".gguf"},        {"awq-iq4_nl", ".gguf"},          {"q4_0-imat", ".gguf"},
      {"bf16", ".gguf"},             {"gptq-w4-g128", ".safetensors"}, {"w8a8-sq", ".safetensors"},
      {"mixed-3.0", ".safetensors"}, {"gptq-q4_0", ".safetensors"}};
  for (const auto& [name, extension] : files) {
    const bool gguf = std::strcmp(extension, ".gguf") == 0;
    INFO("scheme ", name, extension);
    const SchemeBuilder::Scheme* scheme = nullptr;
    const std::vector<SchemeBuilder::Scheme> all = SchemeBuilder::schemes();
    for (const SchemeBuilder::Scheme& s : all)
      if (std::strcmp(s.name, name) == 0) scheme = &s;
    REQUIRE(scheme != nullptr);
    CHECK((scheme->stores == llama::schemes::Stores::kGgml) == (std::strstr(name, "-w") == nullptr &&
                                                                std::strncmp(name, "w8a8", 4) != 0 &&
                                                                std::strncmp(name, "mixed", 5) != 0));
    llama::schemes::Built built = value_of(scheme->build(builder, llama::schemes::Deploy::kExport));
    const bool rewrites_norms = std::strncmp(name, "awq", 3) == 0 || std::strncmp(name, "w8a8", 4) == 0;
    CHECK(built.norms.empty() == !rewrites_norms);

    const std::string path = dir + "/" + name + extension;
    if (gguf) {
      lowbit::io::ConvertOptions options;
      options.default_type = lowbit::io::GgmlType::kF32;
      options.supplied = value_of(llama::schemes::gguf_tensors(built));
      CHECK(options.supplied.size() == 2 * 7 + built.norms.size());
      const lowbit::io::LlamaSource src = value_of(lowbit::io::open_llama_model(dir));
      const lowbit::io::ConvertPlan plan = value_of(lowbit::io::plan_llama_gguf(src, options));
      CHECK(plan.supplied == options.supplied.size());
      require_ok(lowbit::io::write_llama_gguf_file(src, plan, path));
    } else {
      require_ok(llama::write_checkpoint(path, builder.fp32(), built, name));
    }
    const std::unique_ptr<llama::FileModel> read =
        value_of(gguf ? llama::load_gguf_model(path, dir) : llama::load_checkpoint(path, dir));
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
    std::remove(path.c_str());
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

  // No file, or a checkpoint missing a linear: clear errors naming what is at fault.
  std::string culprit;
  CHECK(llama::load_gguf_model(dir + "/no-such.gguf", dir, &culprit).status().code() == lowbit::Errc::kIo);
  CHECK(culprit == dir + "/no-such.gguf");
  CHECK(llama::load_checkpoint(dir + "/no-such.safetensors", dir, &culprit).status().code() == lowbit::Errc::kIo);

  // The fp32 checkpoint itself is a checkpoint without quantized linears: the fp32 model.
  {
    const std::unique_ptr<llama::FileModel> fp32 = value_of(llama::load_checkpoint(dir + "/model.safetensors", dir));
    CHECK(logits_of(fp32->model, ids) == logits_of(builder.fp32(), ids));
  }
  // A packed linear whose bytes were damaged: kCorrupt, naming it.
  for (const SchemeBuilder::Scheme& s : SchemeBuilder::schemes())
    if (std::strcmp(s.name, "rtn-w8") == 0) {
      const llama::schemes::Built packed = value_of(s.build(builder, llama::schemes::Deploy::kExport));
      const std::string path = dir + "/damaged.safetensors";
      require_ok(llama::write_checkpoint(path, builder.fp32(), packed, s.name));
      std::vector<std::uint8_t> bytes;
      {
        const lowbit::io::MappedFile f = value_of(lowbit::io::MappedFile::open(path));
        bytes.assign(f.bytes().data, f.bytes().data + f.bytes().size);
      }
      const std::uint8_t magic[4] = {'L', 'B', 'P', 'M'};
      auto at = std::search(bytes.begin(), bytes.end(), magic, magic + 4);
      REQUIRE(at != bytes.end());
      *at = 'X';
      save(path, bytes.data(), bytes.size());
      CHECK(llama::load_checkpoint(path, dir, &culprit).status().code() == lowbit::Errc::kCorrupt);
      CHECK(culprit.rfind("model.layers.", 0) == 0);
      std::remove(path.c_str());
    }
  std::remove((dir + "/model.safetensors").c_str());
  std::remove((dir + "/config.json").c_str());
  ::rmdir(dir.c_str());
}
