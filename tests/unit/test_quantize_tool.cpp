// Tests for lowbit/io/gguf_convert.hpp, the library side of examples/quantize (lowbit_quantize).
//
// A tiny synthetic Llama (2 layers, hidden 64, 4 query / 2 key-value heads of 16, FFN 256,
// vocabulary 256) is written with lowbit's safetensors writer, converted, and read back with
// lowbit's GGUF reader. Expected values never come from the converter:
//   - metadata: the numbers the test put into config.json; the byte tokens: GPT-2's published
//     byte characters ("Ġ" for space, "Ċ" for newline, "Ā" for byte 0, "Ń" for the soft hyphen);
//   - tensor bytes: lowbit::ggml's FormatTraits quantizers (byte-exact with ggml, tests of their
//     own) applied to the source rows, permuted here through numpy's reshape/swapaxes view;
//   - the permutation's purpose: rotary embedding with adjacent pairs (llama.cpp) on the
//     converted Q/K equals rotate_half rotary (Hugging Face) on the original, permuted.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "lowbit/format/ggml.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/io/gguf_convert.hpp"
#include "lowbit/io/safetensors.hpp"

#ifndef LOWBIT_TEST_DATA_DIR
#error "LOWBIT_TEST_DATA_DIR must name the tests/data directory"
#endif

namespace {

using namespace lowbit::io;
using lowbit::Errc;

// ---- a synthetic checkpoint -------------------------------------------------------------------

struct Spec {
  std::int64_t hidden = 64, ffn = 256, heads = 4, kv_heads = 2, layers = 2, vocab = 256;
};

struct SourceTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<float> values;  // exactly representable in dtype
  int shard = 0;
};

struct Model {
  Spec spec;
  std::string config;
  std::vector<SourceTensor> tensors;

  SourceTensor* find(const std::string& name) {
    for (SourceTensor& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

std::string config_json(const Spec& s) {
  return "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
         "\"vocab_size\": " +
         std::to_string(s.vocab) + ", \"hidden_size\": " + std::to_string(s.hidden) +
         ", \"intermediate_size\": " + std::to_string(s.ffn) +
         ", \"num_hidden_layers\": " + std::to_string(s.layers) +
         ", \"num_attention_heads\": " + std::to_string(s.heads) +
         ", \"num_key_value_heads\": " + std::to_string(s.kv_heads) +
         ", \"hidden_act\": \"silu\", \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-05, "
         "\"rope_theta\": 500000.0, \"rope_scaling\": null, \"tie_word_embeddings\": false, "
         "\"torch_dtype\": \"float32\", \"unknown_nested\": {\"a\": [1, 2.5, null]}}";
}

// Values rounded through the dtype, so the file holds them exactly.
float representable(float v, SafetensorsDtype d) {
  if (d == SafetensorsDtype::kF16) return lowbit::to_float(lowbit::to_half(v));
  if (d == SafetensorsDtype::kBF16) return lowbit::to_float(lowbit::to_bfloat16(v));
  return v;
}

Model make_model(const Spec& s = Spec(), std::uint32_t seed = 7) {
  Model m;
  m.spec = s;
  m.config = config_json(s);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const std::int64_t hd = s.hidden / s.heads, d = s.hidden, q = s.heads * hd, kv = s.kv_heads * hd;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, SafetensorsDtype dt,
                 bool norm) {
    SourceTensor t;
    t.name = name;
    t.shape = shape;
    t.dtype = dt;
    std::int64_t n = 1;
    for (std::int64_t e : shape) n *= e;
    t.values.resize(static_cast<std::size_t>(n));
    for (float& v : t.values) v = representable(norm ? 1.0f + normal(rng) : normal(rng), dt);
    m.tensors.push_back(t);
  };
  // A mix of dtypes, as real checkpoints have: the embedding F16, layer 1 BF16, the rest F32.
  add("model.embed_tokens.weight", {s.vocab, d}, SafetensorsDtype::kF16, false);
  for (std::int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const SafetensorsDtype dt = l == 1 ? SafetensorsDtype::kBF16 : SafetensorsDtype::kF32;
    add(p + "input_layernorm.weight", {d}, dt, true);
    add(p + "self_attn.q_proj.weight", {q, d}, dt, false);
    add(p + "self_attn.k_proj.weight", {kv, d}, dt, false);
    add(p + "self_attn.v_proj.weight", {kv, d}, dt, false);
    add(p + "self_attn.o_proj.weight", {d, q}, dt, false);
    add(p + "post_attention_layernorm.weight", {d}, dt, true);
    add(p + "mlp.gate_proj.weight", {s.ffn, d}, dt, false);
    add(p + "mlp.up_proj.weight", {s.ffn, d}, dt, false);
    add(p + "mlp.down_proj.weight", {d, s.ffn}, dt, false);
  }
  add("model.norm.weight", {d}, SafetensorsDtype::kF32, true);
  add("lm_head.weight", {s.vocab, d}, SafetensorsDtype::kF32, false);
  return m;
}

std::vector<std::uint8_t> encode(const SourceTensor& t) {
  std::vector<std::uint8_t> out;
  for (float v : t.values) {
    std::uint32_t bits = 0;
    int width = 4;
    if (t.dtype == SafetensorsDtype::kF32) {
      std::memcpy(&bits, &v, 4);
    } else if (t.dtype == SafetensorsDtype::kI32) {
      bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(v));
    } else if (t.dtype == SafetensorsDtype::kF16) {
      bits = lowbit::to_half(v).bits;
      width = 2;
    } else {
      bits = lowbit::to_bfloat16(v).bits;
      width = 2;
    }
    for (int b = 0; b < width; ++b) out.push_back(static_cast<std::uint8_t>(bits >> (8 * b)));
  }
  return out;
}

// The shards' safetensors files (tensor.shard picks the file; as many files as shards used).
std::vector<std::vector<std::uint8_t>> serialize(const Model& m) {
  int shards = 1;
  for (const SourceTensor& t : m.tensors) shards = std::max(shards, t.shard + 1);
  std::vector<std::vector<std::uint8_t>> files(static_cast<std::size_t>(shards));
  for (int s = 0; s < shards; ++s) {
    SafetensorsWriter w;
    std::vector<const SourceTensor*> members;
    for (const SourceTensor& t : m.tensors) {
      if (t.shard != s) continue;
      REQUIRE(w.add_tensor(t.name, t.dtype, t.shape.data(), t.shape.size()).ok());
      members.push_back(&t);
    }
    std::vector<std::vector<std::uint8_t>> data;
    std::vector<const void*> ptrs;
    for (const SourceTensor* t : members) data.push_back(encode(*t));
    for (const auto& d : data) ptrs.push_back(d.data());
    VectorSink sink{&files[static_cast<std::size_t>(s)]};
    REQUIRE(w.write(sink, ptrs.data()).ok());
  }
  return files;
}

LlamaSource load(const Model& m, const std::vector<std::vector<std::uint8_t>>& files) {
  std::vector<ByteSpan> spans;
  for (const auto& f : files) spans.push_back(ByteSpan(f));
  lowbit::Result<LlamaSource> src = llama_source_from_buffers(m.config, spans);
  REQUIRE(src.has_value());
  return std::move(*src);
}

struct Converted {
  std::vector<std::uint8_t> bytes;
  ConvertPlan plan;
};

Converted convert(const LlamaSource& src, const ConvertOptions& options) {
  std::string context;
  lowbit::Result<ConvertPlan> plan = plan_llama_gguf(src, options, &context);
  INFO("context: ", context);
  REQUIRE(plan.has_value());
  Converted c;
  c.plan = *plan;
  VectorSink sink{&c.bytes};
  const lowbit::Status s = write_llama_gguf(src, *plan, sink, nullptr, nullptr, &context);
  INFO("write: ", s.message());
  REQUIRE(s.ok());
  CHECK(c.bytes.size() == plan->output_bytes);
  return c;
}

// ---- independent expectations -------------------------------------------------------------------

// numpy: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols), through the index
// spaces of the two views.
std::vector<float> permute_like_numpy(const std::vector<float>& w, std::int64_t rows,
                                      std::int64_t cols, std::int64_t heads) {
  const std::int64_t half = rows / heads / 2;
  std::vector<float> out(w.size());
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (std::int64_t s = 0; s < 2; ++s) {
        const std::int64_t out_row = (h * half + i) * 2 + s;  // view (heads, d/2, 2)
        const std::int64_t in_row = (h * 2 + s) * half + i;   // view (heads, 2, d/2)
        for (std::int64_t c = 0; c < cols; ++c)
          out[static_cast<std::size_t>(out_row * cols + c)] =
              w[static_cast<std::size_t>(in_row * cols + c)];
      }
  return out;
}

template <class Block>
std::vector<std::uint8_t> ggml_rows(const std::vector<float>& x, std::int64_t rows,
                                    std::int64_t cols, const float* importance) {
  using Traits = lowbit::ggml::FormatTraits<Block>;
  std::vector<Block> blocks(static_cast<std::size_t>(rows * (cols / Traits::kBlockSize)));
  for (std::int64_t r = 0; r < rows; ++r)
    REQUIRE(Traits::quantize(x.data() + r * cols, cols,
                             blocks.data() + r * (cols / Traits::kBlockSize), importance)
                .ok());
  std::vector<std::uint8_t> out(blocks.size() * sizeof(Block));
  std::memcpy(out.data(), blocks.data(), out.size());
  return out;
}

std::vector<std::uint8_t> expected_bytes(GgmlType type, const std::vector<float>& x,
                                         std::int64_t rows, std::int64_t cols,
                                         const float* importance = nullptr) {
  namespace g = lowbit::ggml;
  switch (type) {
    case GgmlType::kF32: {
      std::vector<std::uint8_t> out(x.size() * 4);
      std::memcpy(out.data(), x.data(), out.size());
      return out;
    }
    case GgmlType::kF16:
      return ggml_rows<lowbit::Half>(x, rows, cols, importance);
    case GgmlType::kBF16:
      return ggml_rows<lowbit::BFloat16>(x, rows, cols, importance);
    case GgmlType::kQ4_0:
      return ggml_rows<g::BlockQ4_0>(x, rows, cols, importance);
    case GgmlType::kQ4_1:
      return ggml_rows<g::BlockQ4_1>(x, rows, cols, importance);
    case GgmlType::kQ5_0:
      return ggml_rows<g::BlockQ5_0>(x, rows, cols, importance);
    case GgmlType::kQ5_1:
      return ggml_rows<g::BlockQ5_1>(x, rows, cols, importance);
    case GgmlType::kQ8_0:
      return ggml_rows<g::BlockQ8_0>(x, rows, cols, importance);
    case GgmlType::kQ2_K:
      return ggml_rows<g::BlockQ2_K>(x, rows, cols, importance);
    case GgmlType::kQ3_K:
      return ggml_rows<g::BlockQ3_K>(x, rows, cols, importance);
    case GgmlType::kQ4_K:
      return ggml_rows<g::BlockQ4_K>(x, rows, cols, importance);
    case GgmlType::kQ5_K:
      return ggml_rows<g::BlockQ5_K>(x, rows, cols, importance);
    case GgmlType::kQ6_K:
      return ggml_rows<g::BlockQ6_K>(x, rows, cols, importance);
    case GgmlType::kIQ4_NL:
      return ggml_rows<g::BlockIQ4_NL>(x, rows, cols, importance);
    case GgmlType::kIQ4_XS:
      return ggml_rows<g::BlockIQ4_XS>(x, rows, cols, importance);
    case GgmlType::kTQ1_0:
      return ggml_rows<g::BlockTQ1_0>(x, rows, cols, importance);
    case GgmlType::kTQ2_0:
      return ggml_rows<g::BlockTQ2_0>(x, rows, cols, importance);
    default:
      FAIL("type without an expectation");
      return {};
  }
}

// The GGUF name the test expects for a Hugging Face name (its own table).
std::string gguf_name_of(const std::string& hf) {
  static const std::map<std::string, std::string> parts = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
  };
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  const std::size_t dot = hf.find('.', prefix.size());
  return "blk." + hf.substr(prefix.size(), dot - prefix.size()) + "." +
         parts.at(hf.substr(dot + 1));
}

// Every tensor of the converted file has the expected name, shape, and bytes for its type.
void check_all_tensors(const Model& m, const Converted& c, const float* importance_of_all = nullptr,
                       const ImportanceMatrix* imatrix = nullptr) {
  lowbit::Result<GgufFile> f = parse_gguf(ByteSpan(c.bytes));
  REQUIRE(f.has_value());
  std::size_t expected_count = 0;
  for (const SourceTensor& t : m.tensors) {
    ++expected_count;
    const std::string name = gguf_name_of(t.name);
    INFO("tensor ", name);
    const GgufTensorInfo* g = f->find_tensor(name);
    REQUIRE(g != nullptr);
    const std::int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const std::int64_t cols = t.shape.back();
    REQUIRE(g->n_dims == t.shape.size());
    CHECK(g->ne[0] == cols);
    if (t.shape.size() == 2) CHECK(g->ne[1] == rows);
    std::vector<float> x = t.values;
    const bool is_q = t.name.find("q_proj") != std::string::npos;
    const bool is_k = t.name.find("k_proj") != std::string::npos;
    if (is_q || is_k) {
      const std::int64_t heads = is_q ? m.spec.heads : m.spec.kv_heads;
      x = t.shape.size() == 2 ? permute_like_numpy(x, rows, cols, heads)
                              : permute_like_numpy(x, cols, 1, heads);
    }
    const float* importance = importance_of_all;
    if (imatrix != nullptr && imatrix->find(name) != nullptr && g->type != 0)
      importance = imatrix->find(name)->values.data();
    const std::vector<std::uint8_t> want =
        expected_bytes(static_cast<GgmlType>(g->type), x, rows, cols, importance);
    REQUIRE(g->data.size == want.size());
    CHECK(std::memcmp(g->data.data, want.data(), want.size()) == 0);
  }
  CHECK(f->tensors().size() == expected_count);
}

std::uint64_t kv_u32(const GgufFile& f, const char* key) {
  const GgufKv* kv = f.find_kv(key);
  REQUIRE_MESSAGE(kv != nullptr, key);
  REQUIRE(kv->value.type() == GgufType::kU32);
  return kv->value.scalar_bits();
}
std::string kv_string(const GgufFile& f, const char* key) {
  const GgufKv* kv = f.find_kv(key);
  REQUIRE_MESSAGE(kv != nullptr, key);
  lowbit::Result<std::string_view> s = kv->value.to_string();
  REQUIRE(s.has_value());
  return std::string(*s);
}
float kv_f32(const GgufFile& f, const char* key) {
  const GgufKv* kv = f.find_kv(key);
  REQUIRE_MESSAGE(kv != nullptr, key);
  REQUIRE(kv->value.type() == GgufType::kF32);
  return static_cast<float>(*kv->value.to_f64());
}

GgmlType type_of(const Converted& c, const std::string& name) {
  for (const TensorPlan& t : c.plan.tensors)
    if (t.gguf_name == name) return t.type;
  FAIL("no tensor ", name);
  return GgmlType::kF32;
}

// A legacy imatrix .dat (llama.cpp's save_imatrix_legacy layout, written from its description).
struct DatWriter {
  std::vector<std::uint8_t> bytes;
  void i32(std::int32_t v) {
    for (int b = 0; b < 4; ++b)
      bytes.push_back(static_cast<std::uint8_t>(static_cast<std::uint32_t>(v) >> (8 * b)));
  }
  void f32(float v) {
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    i32(static_cast<std::int32_t>(u));
  }
  void str(const std::string& s) {
    i32(static_cast<std::int32_t>(s.size()));
    bytes.insert(bytes.end(), s.begin(), s.end());
  }
};

}  // namespace

// ---- config.json
// ---------------------------------------------------------------------------------

TEST_CASE("quantize tool: config.json of tinylm and its errors") {
  // tinylm's config.json (models/tinylm), verbatim.
  const std::string tinylm =
      "{\n  \"architectures\": [\n    \"LlamaForCausalLM\"\n  ],\n  \"model_type\": \"llama\",\n"
      "  \"vocab_size\": 256,\n  \"hidden_size\": 256,\n  \"intermediate_size\": 768,\n"
      "  \"num_hidden_layers\": 6,\n  \"num_attention_heads\": 8,\n  \"num_key_value_heads\": 4,\n"
      "  \"head_dim\": 32,\n  \"hidden_act\": \"silu\",\n  \"max_position_embeddings\": 256,\n"
      "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n  \"rope_scaling\": null,\n"
      "  \"attention_bias\": false,\n  \"mlp_bias\": false,\n  \"tie_word_embeddings\": false,\n"
      "  \"bos_token_id\": null,\n  \"eos_token_id\": null,\n  \"pad_token_id\": null,\n"
      "  \"initializer_range\": 0.02,\n  \"torch_dtype\": \"float32\"\n}";
  lowbit::Result<LlamaHyperparameters> h = parse_llama_config(tinylm);
  REQUIRE(h.has_value());
  CHECK(h->vocab_size == 256);
  CHECK(h->hidden_size == 256);
  CHECK(h->intermediate_size == 768);
  CHECK(h->num_layers == 6);
  CHECK(h->num_heads == 8);
  CHECK(h->num_kv_heads == 4);
  CHECK(h->head_dim == 32);
  CHECK(h->context_length == 256);
  CHECK(h->rms_norm_eps == 1e-5);
  CHECK(h->rope_theta == 10000.0);
  CHECK_FALSE(h->tie_word_embeddings);

  auto code_of = [](const std::string& json) {
    lowbit::Result<LlamaHyperparameters> r = parse_llama_config(json);
    return r ? Errc::kOk : r.status().code();
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = tinylm;
    const std::size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
  };
  // Defaults: no num_key_value_heads -> MHA; no head_dim -> hidden / heads.
  lowbit::Result<LlamaHyperparameters> d =
      parse_llama_config(replace("\"num_key_value_heads\": 4,\n  \"head_dim\": 32,", ""));
  REQUIRE(d.has_value());
  CHECK(d->num_kv_heads == 8);
  CHECK(d->head_dim == 32);
  CHECK(code_of(replace("\"hidden_size\": 256,", "")) == Errc::kCorrupt);
  CHECK(code_of(replace("\"hidden_size\": 256", "\"hidden_size\": 256.5")) == Errc::kCorrupt);
  CHECK(code_of(replace("\"hidden_size\": 256", "\"hidden_size\": 0")) == Errc::kInvalidArgument);
  CHECK(code_of(replace("\"hidden_size\": 256", "\"hidden_size\": \"256\"")) == Errc::kCorrupt);
  CHECK(code_of(replace("\"model_type\": \"llama\"", "\"model_type\": \"mistral\"")) ==
        Errc::kUnsupported);
  CHECK(code_of(replace("\"rope_scaling\": null", "\"rope_scaling\": {\"factor\": 8.0}")) ==
        Errc::kUnsupported);
  CHECK(code_of(replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"")) ==
        Errc::kUnsupported);
  CHECK(code_of(replace("\"head_dim\": 32", "\"head_dim\": 31")) == Errc::kIndivisible);
  CHECK(code_of(replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3")) ==
        Errc::kIndivisible);
  CHECK(code_of(replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1e-05")) ==
        Errc::kInvalidArgument);
  CHECK(code_of(replace("\"rope_theta\": 10000.0", "\"rope_theta\": 1e999")) == Errc::kOutOfRange);
  CHECK(code_of(tinylm.substr(0, tinylm.size() / 2)) == Errc::kTruncated);
  CHECK(code_of(tinylm + "x") == Errc::kCorrupt);
  CHECK(code_of("[]") == Errc::kCorrupt);
  CHECK(code_of("") == Errc::kTruncated);
}

// ---- glob rules
// ----------------------------------------------------------------------------------

TEST_CASE("quantize tool: glob rules and type names") {
  CHECK(glob_match("*ffn_down*", "blk.3.ffn_down.weight"));
  CHECK_FALSE(glob_match("*ffn_down*", "blk.3.ffn_up.weight"));
  CHECK(glob_match("blk.?.attn_[qk].weight", "blk.7.attn_k.weight"));
  CHECK_FALSE(glob_match("blk.?.attn_[qk].weight", "blk.7.attn_v.weight"));
  CHECK_FALSE(glob_match("blk.?.attn_q.weight", "blk.12.attn_q.weight"));
  CHECK(glob_match("blk.[0-1][!5].*", "blk.13.ffn_up.weight"));
  CHECK_FALSE(glob_match("blk.[0-1][!5].*", "blk.15.ffn_up.weight"));
  CHECK(glob_match("*", ""));
  CHECK(glob_match("a*b*c", "aXbYbZc"));
  CHECK_FALSE(glob_match("a*b*c", "aXbYbZ"));
  CHECK(glob_match("output.weight", "output.weight"));
  CHECK_FALSE(glob_match("output", "output.weight"));  // whole names, not substrings

  lowbit::Result<TensorTypeRule> r = parse_tensor_type_rule("*ffn_down*=Q6_K");
  REQUIRE(r.has_value());
  CHECK(r->pattern == "*ffn_down*");
  CHECK(r->type == GgmlType::kQ6_K);
  CHECK(parse_tensor_type_rule("a=b=q4_0")->pattern == "a=b");  // split at the last '='
  CHECK(parse_tensor_type_rule("nothing").status().code() == Errc::kInvalidArgument);
  CHECK(parse_tensor_type_rule("=q4_0").status().code() == Errc::kInvalidArgument);
  CHECK(parse_tensor_type_rule("[abc=q4_0").status().code() == Errc::kInvalidArgument);
  CHECK(parse_tensor_type_rule("*=q8_1").status().code() == Errc::kUnsupported);  // activations
  CHECK(parse_tensor_type_rule("*=iq2_xxs").status().code() == Errc::kUnsupported);
  std::size_t n = 0;
  const GgufOutputType* types = gguf_output_types(&n);
  CHECK(n == 17);
  for (std::size_t i = 0; i < n; ++i) {
    // Every listed type is accepted under ggml's own spelling ("q4_K").
    lowbit::Result<GgmlType> t = parse_gguf_output_type(ggml_type_info(types[i].type)->name);
    REQUIRE(t.has_value());
    CHECK(*t == types[i].type);
  }
}

// ---- conversion ---------------------------------------------------------------------------------

TEST_CASE("quantize tool: metadata, names, shapes and bytes of a synthetic Llama") {
  const Model m = make_model();
  const auto files = serialize(m);
  const LlamaSource src = load(m, files);
  ConvertOptions options;
  options.default_type = GgmlType::kQ8_0;
  options.name = "synthetic";
  const Converted c = convert(src, options);
  lowbit::Result<GgufFile> f = parse_gguf(ByteSpan(c.bytes));
  REQUIRE(f.has_value());
  CHECK(f->version() == 3);
  CHECK(f->alignment() == 32);
  CHECK(kv_string(*f, "general.architecture") == "llama");
  CHECK(kv_string(*f, "general.name") == "synthetic");
  CHECK(kv_u32(*f, "llama.vocab_size") == 256);
  CHECK(kv_u32(*f, "llama.context_length") == 512);
  CHECK(kv_u32(*f, "llama.embedding_length") == 64);
  CHECK(kv_u32(*f, "llama.block_count") == 2);
  CHECK(kv_u32(*f, "llama.feed_forward_length") == 256);
  CHECK(kv_u32(*f, "llama.attention.head_count") == 4);
  CHECK(kv_u32(*f, "llama.attention.head_count_kv") == 2);
  CHECK(kv_u32(*f, "llama.rope.dimension_count") == 16);
  CHECK(kv_u32(*f, "llama.attention.key_length") == 16);
  CHECK(kv_u32(*f, "llama.attention.value_length") == 16);
  CHECK(kv_f32(*f, "llama.rope.freq_base") == 500000.0f);
  CHECK(kv_f32(*f, "llama.attention.layer_norm_rms_epsilon") == 1e-5f);
  CHECK(kv_u32(*f, "general.file_type") == 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
  CHECK(kv_u32(*f, "general.quantization_version") == 2);

  // The byte vocabulary.
  CHECK(kv_string(*f, "tokenizer.ggml.model") == "gpt2");
  CHECK(kv_string(*f, "tokenizer.ggml.pre") == "default");
  lowbit::Result<GgufArray> tokens = f->find_kv("tokenizer.ggml.tokens")->value.to_array();
  REQUIRE(tokens.has_value());
  REQUIRE(tokens->size() == 256);
  auto token = [&](std::uint64_t i) { return std::string(*tokens->at(i)->to_string()); };
  CHECK(token(' ') == "\xC4\xA0");   // U+0120 'Ġ'
  CHECK(token('\n') == "\xC4\x8A");  // U+010A 'Ċ'
  CHECK(token(0) == "\xC4\x80");     // U+0100 'Ā'
  CHECK(token(0xAD) == "\xC5\x83");  // U+0143 'Ń' (soft hyphen, the last moved byte)
  CHECK(token('A') == "A");
  CHECK(token(0xE9) == "\xC3\xA9");  // 'é' stands for itself
  std::vector<std::string> all;
  for (std::uint64_t i = 0; i < 256; ++i) all.push_back(token(i));
  std::sort(all.begin(), all.end());
  CHECK(std::unique(all.begin(), all.end()) == all.end());  // one token per byte
  lowbit::Result<GgufArray> types = f->find_kv("tokenizer.ggml.token_type")->value.to_array();
  REQUIRE(types.has_value());
  CHECK(types->size() == 256);
  CHECK(types->element_type() == GgufType::kI32);
  CHECK(*types->at(200)->to_i64() == 1);
  CHECK(f->find_kv("tokenizer.ggml.merges")->value.to_array()->size() == 0);
  CHECK(*f->find_kv("tokenizer.ggml.add_bos_token")->value.to_bool() == false);

  // Names in GGUF order, 1-D tensors f32, matrices q8_0, every byte as ggml quantizes it.
  REQUIRE(f->tensors().size() == 2 + 2 * 9 + 1);
  CHECK(f->tensors()[0].name == "token_embd.weight");
  CHECK(f->tensors()[1].name == "blk.0.attn_norm.weight");
  CHECK(f->tensors()[2].name == "blk.0.attn_q.weight");
  CHECK(f->tensors().back().name == "output.weight");
  for (const GgufTensorInfo& t : f->tensors())
    CHECK(t.type == (t.n_dims == 1 ? 0u : static_cast<std::uint32_t>(GgmlType::kQ8_0)));
  check_all_tensors(m, c);
}

TEST_CASE("quantize tool: the Q/K permutation turns rotate_half rotary into adjacent-pair rotary") {
  // Take layer 0's q_proj as f32 (exact), project a random x, rotate it both ways, and compare:
  // llama.cpp's rope (pairs 2i, 2i+1) on the converted rows must equal Hugging Face's
  // rotate_half rope (pairs i, i + d/2) on the original rows, up to the same permutation.
  const Model m = make_model();
  const auto files = serialize(m);
  ConvertOptions options;
  options.default_type = GgmlType::kF32;
  const Converted c = convert(load(m, files), options);
  lowbit::Result<GgufFile> f = parse_gguf(ByteSpan(c.bytes));
  REQUIRE(f.has_value());
  for (const char* which : {"q", "k"}) {
    const bool q = std::string(which) == "q";
    const SourceTensor& hf = *const_cast<Model&>(m).find(std::string("model.layers.0.self_attn.") +
                                                         which + "_proj.weight");
    const GgufTensorInfo* g = f->find_tensor(std::string("blk.0.attn_") + which + ".weight");
    REQUIRE(g != nullptr);
    const std::int64_t rows = hf.shape[0], cols = hf.shape[1], d = 16;
    const std::int64_t heads = q ? m.spec.heads : m.spec.kv_heads;
    REQUIRE(rows == heads * d);
    std::vector<float> w_gguf(static_cast<std::size_t>(rows * cols));
    std::memcpy(w_gguf.data(), g->data.data, w_gguf.size() * 4);
    std::mt19937 rng(11);
    std::normal_distribution<double> normal;
    std::vector<double> x(static_cast<std::size_t>(cols));
    for (double& v : x) v = normal(rng);
    auto project = [&](const std::vector<float>& w) {
      std::vector<double> y(static_cast<std::size_t>(rows), 0.0);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t k = 0; k < cols; ++k)
          y[static_cast<std::size_t>(r)] +=
              w[static_cast<std::size_t>(r * cols + k)] * x[static_cast<std::size_t>(k)];
      return y;
    };
    const std::vector<double> y_hf = project(hf.values), y_gguf = project(w_gguf);
    const double pos = 37.0, theta = 500000.0;
    double worst = 0.0;
    for (std::int64_t h = 0; h < heads; ++h) {
      for (std::int64_t i = 0; i < d / 2; ++i) {
        const double angle = pos * std::pow(theta, -2.0 * static_cast<double>(i) / d);
        const double co = std::cos(angle), si = std::sin(angle);
        // Hugging Face: (x_i, x_{i+d/2}) rotated.
        const double a = y_hf[static_cast<std::size_t>(h * d + i)],
                     b = y_hf[static_cast<std::size_t>(h * d + i + d / 2)];
        const double hf0 = a * co - b * si, hf1 = b * co + a * si;
        // llama.cpp NORM: (x_2i, x_2i+1) rotated.
        const double u = y_gguf[static_cast<std::size_t>(h * d + 2 * i)],
                     v = y_gguf[static_cast<std::size_t>(h * d + 2 * i + 1)];
        const double g0 = u * co - v * si, g1 = v * co + u * si;
        worst = std::max(worst, std::max(std::fabs(hf0 - g0), std::fabs(hf1 - g1)));
      }
    }
    INFO(which, " worst difference ", worst);
    CHECK(worst < 1e-12);  // same float products summed in the same order: equal
  }
}

TEST_CASE("quantize tool: every output type converts, bytes equal ggml's quantizers") {
  const Model m = make_model();
  const auto files = serialize(m);
  const LlamaSource src = load(m, files);
  std::size_t n = 0;
  const GgufOutputType* types = gguf_output_types(&n);
  for (std::size_t i = 0; i < n; ++i) {
    INFO("type ", std::string(types[i].name));
    ConvertOptions options;
    options.default_type = types[i].type;
    const Converted c = convert(src, options);
    check_all_tensors(m, c);
    lowbit::Result<GgufFile> f = parse_gguf(ByteSpan(c.bytes));
    CHECK(kv_u32(*f, "general.file_type") == types[i].file_type);
  }
}

TEST_CASE("quantize tool: rules, first match wins; norms stay f32") {
  const Model m = make_model();
  const auto files = serialize(m);
  ConvertOptions options;
  options.default_type = GgmlType::kQ8_0;
  for (const char* r : {"blk.1.*=q5_0", "*ffn_down*=q6_K", "*norm*=q4_0", "blk.*=q4_0",
                        "model.layers.0.mlp.up_proj.weight=bf16"})
    options.rules.push_back(*parse_tensor_type_rule(r));
  const Converted c = convert(load(m, files), options);
  CHECK(type_of(c, "blk.1.ffn_down.weight") == GgmlType::kQ5_0);  // rule 0 before rule 1
  CHECK(type_of(c, "blk.1.attn_q.weight") == GgmlType::kQ5_0);
  CHECK(type_of(c, "blk.0.ffn_down.weight") == GgmlType::kQ6_K);
  CHECK(type_of(c, "blk.0.attn_q.weight") == GgmlType::kQ4_0);
  CHECK(type_of(c, "blk.0.ffn_up.weight") == GgmlType::kQ4_0);  // rule 3 comes before rule 4
  CHECK(type_of(c, "blk.0.attn_norm.weight") == GgmlType::kF32);
  CHECK(type_of(c, "output_norm.weight") == GgmlType::kF32);
  CHECK(type_of(c, "token_embd.weight") == GgmlType::kQ8_0);
  CHECK(type_of(c, "output.weight") == GgmlType::kQ8_0);
  for (const TensorPlan& t : c.plan.tensors) {
    if (t.gguf_name == "blk.0.ffn_down.weight") CHECK(t.rule == 1);
    if (t.gguf_name == "output.weight") CHECK(t.rule == -1);
  }
  check_all_tensors(m, c);

  // A rule on the Hugging Face name alone.
  ConvertOptions hf;
  hf.default_type = GgmlType::kQ8_0;
  hf.rules.push_back(*parse_tensor_type_rule("model.layers.0.mlp.up_proj.weight=bf16"));
  const Converted c2 = convert(load(m, files), hf);
  CHECK(type_of(c2, "blk.0.ffn_up.weight") == GgmlType::kBF16);
  CHECK(type_of(c2, "blk.1.ffn_up.weight") == GgmlType::kQ8_0);
}

TEST_CASE("quantize tool: rows the block does not divide fall back like llama-quantize") {
  const Model m = make_model();  // rows of 64 everywhere but ffn_down (256)
  const auto files = serialize(m);
  const LlamaSource src = load(m, files);
  const struct {
    GgmlType asked, short_rows;
  } cases[] = {
      {GgmlType::kQ4_K, GgmlType::kQ5_0},   {GgmlType::kQ5_K, GgmlType::kQ5_1},
      {GgmlType::kQ6_K, GgmlType::kQ8_0},   {GgmlType::kQ2_K, GgmlType::kIQ4_NL},
      {GgmlType::kQ3_K, GgmlType::kIQ4_NL}, {GgmlType::kIQ4_XS, GgmlType::kIQ4_NL},
      {GgmlType::kTQ1_0, GgmlType::kQ4_0},  {GgmlType::kTQ2_0, GgmlType::kQ4_0},
  };
  for (const auto& k : cases) {
    INFO("asked ", std::string(ggml_type_info(k.asked)->name));
    ConvertOptions options;
    options.default_type = k.asked;
    const Converted c = convert(src, options);
    CHECK(type_of(c, "blk.0.ffn_down.weight") == k.asked);
    CHECK(type_of(c, "blk.0.attn_q.weight") == k.short_rows);
    CHECK(type_of(c, "token_embd.weight") == k.short_rows);
    CHECK(c.plan.fallbacks == 2 + 2 * 6);  // token_embd, output, all but ffn_down per layer
    for (const TensorPlan& t : c.plan.tensors)
      CHECK(t.fell_back == (t.n_dims == 2 && t.cols % 256 != 0));
    check_all_tensors(m, c);
  }

  // Rows of 48: not even a multiple of 32, so everything quantized becomes f16.
  Spec narrow;
  narrow.hidden = 48;
  narrow.heads = 4;
  narrow.kv_heads = 2;
  narrow.ffn = 96;
  const Model m48 = make_model(narrow);
  ConvertOptions options;
  options.default_type = GgmlType::kQ4_K;
  const Converted c = convert(load(m48, serialize(m48)), options);
  CHECK(type_of(c, "blk.0.ffn_down.weight") == GgmlType::kQ5_0);  // 96 = 3 x 32
  CHECK(type_of(c, "blk.0.attn_q.weight") == GgmlType::kF16);
  check_all_tensors(m48, c);
}

TEST_CASE("quantize tool: shards, chunk size and biases do not change the bytes") {
  Model m = make_model();
  // Q and K biases (attention_bias models): permuted like their rows.
  for (const char* which : {"q", "k"}) {
    SourceTensor b;
    b.name = std::string("model.layers.1.self_attn.") + which + "_proj.bias";
    b.shape = {std::string(which) == "q" ? 64 : 32};
    for (std::int64_t i = 0; i < b.shape[0]; ++i) b.values.push_back(static_cast<float>(i));
    m.tensors.push_back(b);
  }
  const auto one = serialize(m);
  ConvertOptions options;
  options.default_type = GgmlType::kQ4_1;
  const Converted whole = convert(load(m, one), options);
  check_all_tensors(m, whole);
  {
    lowbit::Result<GgufFile> f = parse_gguf(ByteSpan(whole.bytes));
    const GgufTensorInfo* b = f->find_tensor("blk.1.attn_k.bias");
    REQUIRE(b != nullptr);
    float v[4];
    std::memcpy(v, b->data.data, sizeof v);
    // Head 0 of 16: GGUF element 2i + s is HF element 8s + i.
    CHECK(v[0] == 0.0f);
    CHECK(v[1] == 8.0f);
    CHECK(v[2] == 1.0f);
    CHECK(v[3] == 9.0f);
  }

  Model sharded = m;
  for (SourceTensor& t : sharded.tensors)
    t.shard = t.name.find("layers.1.") != std::string::npos ? 1
              : t.name == "lm_head.weight"                  ? 2
                                                            : 0;
  ConvertOptions small = options;
  small.chunk_bytes = 4096;  // 16 rows of 64 at a time; Q/K chunks stay whole heads
  const Converted pieces = convert(load(sharded, serialize(sharded)), small);
  CHECK(pieces.bytes == whole.bytes);
}

TEST_CASE("quantize tool: importance matrix (legacy .dat)") {
  const Model m = make_model();
  const auto files = serialize(m);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 4.0f);
  DatWriter dat;
  const std::vector<std::pair<std::string, int>> entries = {
      {"blk.0.ffn_down.weight", 256}, {"blk.1.attn_q.weight", 64}, {"output.weight", 64}};
  dat.i32(static_cast<std::int32_t>(entries.size()));
  std::map<std::string, std::vector<float>> means;
  for (const auto& e : entries) {
    dat.str(e.first);
    dat.i32(10);  // ncall: values are sums over 10 calls
    dat.i32(e.second);
    for (int i = 0; i < e.second; ++i) {
      const float v = u(rng) * 10.0f;
      dat.f32(v);
      means[e.first].push_back(v / 10.0f);
    }
  }
  dat.i32(10);           // last chunk
  dat.str("calib.txt");  // dataset
  lowbit::Result<ImportanceMatrix> im = parse_imatrix_dat(ByteSpan(dat.bytes));
  REQUIRE(im.has_value());
  CHECK(im->entries.size() == 3);
  CHECK(im->dataset == "calib.txt");
  CHECK(im->find("blk.1.attn_q.weight")->values == means["blk.1.attn_q.weight"]);

  ConvertOptions options;
  options.default_type = GgmlType::kQ4_K;
  options.imatrix = &*im;
  const Converted c = convert(load(m, files), options);
  CHECK(c.plan.with_importance == 3);
  check_all_tensors(m, c, nullptr, &*im);
  // And the importance mattered: q4_K's imatrix path gives other bytes than its reference path.
  ConvertOptions plain = options;
  plain.imatrix = nullptr;
  CHECK(convert(load(m, files), plain).bytes != c.bytes);

  // Hostile and mismatched files.
  auto code_of = [](const std::vector<std::uint8_t>& b) {
    lowbit::Result<ImportanceMatrix> r = parse_imatrix_dat(ByteSpan(b));
    return r ? Errc::kOk : r.status().code();
  };
  for (std::size_t cut = 0; cut < dat.bytes.size(); cut += 7) {
    const std::vector<std::uint8_t> prefix(dat.bytes.begin(),
                                           dat.bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    const Errc e = code_of(prefix);
    INFO("prefix ", cut);
    CHECK((e == Errc::kTruncated || e == Errc::kCorrupt || e == Errc::kOk));
  }
  std::vector<std::uint8_t> cut_values(dat.bytes.begin(), dat.bytes.begin() + 40);
  CHECK(code_of(cut_values) == Errc::kTruncated);
  DatWriter negative;
  negative.i32(-1);
  CHECK(code_of(negative.bytes) == Errc::kCorrupt);
  DatWriter huge;
  huge.i32(1 << 30);  // more entries than bytes
  CHECK(code_of(huge.bytes) == Errc::kTruncated);
  DatWriter nan;
  nan.i32(1);
  nan.str("x");
  nan.i32(1);
  nan.i32(1);
  nan.f32(std::nanf(""));
  CHECK(code_of(nan.bytes) == Errc::kCorrupt);
  CHECK(code_of({'G', 'G', 'U', 'F', 3, 0, 0, 0}) == Errc::kUnsupported);
  DatWriter wrong;
  wrong.i32(1);
  wrong.str("blk.0.attn_q.weight");
  wrong.i32(1);
  wrong.i32(32);  // rows of 64
  for (int i = 0; i < 32; ++i) wrong.f32(1.0f);
  lowbit::Result<ImportanceMatrix> w = parse_imatrix_dat(ByteSpan(wrong.bytes));
  REQUIRE(w.has_value());
  options.imatrix = &*w;
  std::string context;
  lowbit::Result<ConvertPlan> p = plan_llama_gguf(load(m, files), options, &context);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.status().code() == Errc::kShapeMismatch);
  CHECK(context == "blk.0.attn_q.weight");
}

TEST_CASE("quantize tool: supplied tensors are written in place of the source's (Q/K permuted)") {
  // lowbit_quantize --scheme supplies GPTQ's or AWQ's blocks and rewritten norms. The expectation
  // is the file of a model whose source tensors were those values all along: quantizing rows
  // commutes with permuting them, so check_all_tensors' independent reference applies unchanged.
  const Model m = make_model();
  const auto files = serialize(m);
  Model want = m;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const auto redraw = [&](const char* name, bool norm) {
    SourceTensor* t = want.find(name);
    for (float& v : t->values) v = norm ? 1.0f + normal(rng) : normal(rng);
    return t;
  };
  const SourceTensor* q = redraw("model.layers.0.self_attn.q_proj.weight", false);
  const SourceTensor* k = redraw("model.layers.1.self_attn.k_proj.weight", false);
  const SourceTensor* down = redraw("model.layers.1.mlp.down_proj.weight", false);
  const SourceTensor* norm = redraw("model.layers.1.input_layernorm.weight", true);
  const std::vector<std::uint8_t> q_bytes =
      ggml_rows<lowbit::ggml::BlockQ4_0>(q->values, q->shape[0], q->shape[1], nullptr);
  const std::vector<std::uint8_t> k_bytes =
      ggml_rows<lowbit::ggml::BlockIQ4_NL>(k->values, k->shape[0], k->shape[1], nullptr);
  const std::vector<std::uint8_t> down_bytes =
      ggml_rows<lowbit::ggml::BlockQ2_K>(down->values, down->shape[0], down->shape[1], nullptr);
  std::vector<std::uint8_t> norm_bytes(norm->values.size() * 4);
  std::memcpy(norm_bytes.data(), norm->values.data(), norm_bytes.size());

  ConvertOptions options;
  options.default_type = GgmlType::kQ8_0;
  options.rules.push_back(*parse_tensor_type_rule("*attn_q*=q5_0"));  // supplied beats a rule
  options.supplied = {{q->name, GgmlType::kQ4_0, q_bytes.data(), q_bytes.size()},
                      {k->name, GgmlType::kIQ4_NL, k_bytes.data(), k_bytes.size()},
                      {down->name, GgmlType::kQ2_K, down_bytes.data(), down_bytes.size()},
                      {norm->name, GgmlType::kF32, norm_bytes.data(), norm_bytes.size()}};
  const Converted c = convert(load(m, files), options);
  CHECK(c.plan.supplied == 4);
  // general.file_type follows the type of most supplied elements: down_proj's Q2_K (64 × 256)
  // outweighs q_proj's Q4_0 and k_proj's IQ4_NL (64 × 64 and 32 × 64).
  CHECK(c.plan.file_type == GgmlType::kQ2_K);
  lowbit::Result<GgufFile> file = parse_gguf(ByteSpan(c.bytes));
  REQUIRE(file.has_value());
  CHECK(kv_u32(*file, "general.file_type") == 10);  // LLAMA_FTYPE_MOSTLY_Q2_K
  CHECK(type_of(c, "blk.0.attn_q.weight") == GgmlType::kQ4_0);
  CHECK(type_of(c, "blk.1.attn_q.weight") == GgmlType::kQ5_0);
  CHECK(type_of(c, "blk.1.attn_k.weight") == GgmlType::kIQ4_NL);
  CHECK(type_of(c, "blk.1.ffn_down.weight") == GgmlType::kQ2_K);
  CHECK(type_of(c, "blk.0.attn_k.weight") == GgmlType::kQ8_0);
  check_all_tensors(want, c);

  // Misuse: each a Status naming the tensor, before a byte is written.
  const LlamaSource src = load(m, files);
  const auto plan_error = [&](std::vector<SuppliedTensor> supplied, std::string* context) {
    ConvertOptions o;
    o.supplied = std::move(supplied);
    lowbit::Result<ConvertPlan> p = plan_llama_gguf(src, o, context);
    return p ? Errc::kOk : p.status().code();
  };
  std::string context;
  CHECK(plan_error({{"model.layers.7.mlp.up_proj.weight", GgmlType::kF32, norm_bytes.data(), 4}},
                   &context) == Errc::kInvalidArgument);
  CHECK(context == "model.layers.7.mlp.up_proj.weight");
  CHECK(plan_error({{q->name, GgmlType::kQ4_0, q_bytes.data(), q_bytes.size() - 1}}, &context) ==
        Errc::kShapeMismatch);
  CHECK(context == q->name);
  CHECK(plan_error({{q->name, GgmlType::kQ4_0, q_bytes.data(), q_bytes.size()},
                    {q->name, GgmlType::kQ4_0, q_bytes.data(), q_bytes.size()}},
                   &context) == Errc::kInvalidArgument);
  CHECK(plan_error({{norm->name, GgmlType::kQ8_0, norm_bytes.data(), norm_bytes.size()}},
                   &context) == Errc::kUnsupported);
  CHECK(plan_error({{q->name, GgmlType::kQ4_0, nullptr, q_bytes.size()}}, &context) ==
        Errc::kInvalidArgument);
  // o_proj's rows are 64 wide: Q4_K's 256-element block does not divide them (no fallback for
  // supplied bytes).
  CHECK(plan_error({{"model.layers.0.self_attn.o_proj.weight", GgmlType::kQ4_K,
                     down_bytes.data(), down_bytes.size()}},
                   &context) == Errc::kShapeMismatch);
  CHECK(context == "model.layers.0.self_attn.o_proj.weight");

  // Supplied values that decode to NaN are refused while writing, with the element.
  std::vector<std::uint8_t> bad = norm_bytes;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(bad.data() + 4 * 5, &nan, 4);
  ConvertOptions o;
  o.supplied = {{norm->name, GgmlType::kF32, bad.data(), bad.size()}};
  lowbit::Result<ConvertPlan> plan = plan_llama_gguf(src, o, &context);
  REQUIRE(plan.has_value());
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  const lowbit::Status s = write_llama_gguf(src, *plan, sink, nullptr, nullptr, &context);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 5);
  CHECK(context == "blk.1.attn_norm.weight");
}

TEST_CASE("quantize tool: bad checkpoints give a Status naming the tensor") {
  const Model base = make_model();
  auto plan_code = [](const Model& m, std::string* context) {
    const auto files = serialize(m);
    std::vector<ByteSpan> spans;
    for (const auto& f : files) spans.push_back(ByteSpan(f));
    lowbit::Result<LlamaSource> src = llama_source_from_buffers(m.config, spans, context);
    if (!src) return src.status().code();
    ConvertOptions options;
    options.default_type = GgmlType::kQ4_0;
    lowbit::Result<ConvertPlan> p = plan_llama_gguf(*src, options, context);
    return p ? Errc::kOk : p.status().code();
  };
  std::string context;
  {
    Model m = base;
    m.tensors.erase(m.tensors.begin() + 3);  // layer 0's k_proj
    CHECK(plan_code(m, &context) == Errc::kCorrupt);
    CHECK(context == "model.layers.0.self_attn.k_proj.weight");
  }
  {
    Model m = base;
    m.find("model.layers.1.mlp.up_proj.weight")->shape = {128, 128};
    CHECK(plan_code(m, &context) == Errc::kShapeMismatch);
    CHECK(context == "model.layers.1.mlp.up_proj.weight");
  }
  {
    Model m = base;
    SourceTensor* t = m.find("model.layers.0.mlp.up_proj.weight");
    t->dtype = SafetensorsDtype::kI32;
    for (float& v : t->values) v = 0.0f;
    CHECK(plan_code(m, &context) == Errc::kUnsupported);
    CHECK(context == "model.layers.0.mlp.up_proj.weight");
  }
  {
    Model m = base;
    SourceTensor extra = m.tensors[1];
    extra.name = "model.layers.0.self_attn.rotary_emb.inv_freq";  // skipped, as HF's buffers are
    m.tensors.push_back(extra);
    CHECK(plan_code(m, &context) == Errc::kOk);
    extra.name = "model.layers.0.mlp.experts.weight";
    m.tensors.push_back(extra);
    CHECK(plan_code(m, &context) == Errc::kUnsupported);
    CHECK(context == "model.layers.0.mlp.experts.weight");
  }
  {
    Model m = base;
    SourceTensor extra = m.tensors[1];
    extra.name = "model.layers.2.input_layernorm.weight";  // only 2 layers
    m.tensors.push_back(extra);
    CHECK(plan_code(m, &context) == Errc::kShapeMismatch);
  }
  {
    Model m = base;  // the same tensor in two shards
    SourceTensor dup = m.tensors[0];
    dup.shard = 1;
    m.tensors.push_back(dup);
    CHECK(plan_code(m, &context) == Errc::kCorrupt);
    CHECK(context == "model.embed_tokens.weight");
  }
  {
    Model m = base;  // tied embeddings may omit lm_head; untied may not
    m.tensors.pop_back();
    CHECK(plan_code(m, &context) == Errc::kCorrupt);
    CHECK(context == "lm_head.weight");
    const std::size_t at = m.config.find("\"tie_word_embeddings\": false");
    m.config.replace(at, 28, "\"tie_word_embeddings\": true");
    CHECK(plan_code(m, &context) == Errc::kOk);
  }

  // Truncated shards: the reader's kTruncated, before anything is planned.
  const auto files = serialize(base);
  const std::vector<std::uint8_t>& file = files[0];
  for (std::size_t cut :
       {std::size_t{0}, std::size_t{5}, std::size_t{100}, file.size() / 2, file.size() - 1}) {
    std::vector<ByteSpan> spans{ByteSpan(file.data(), cut)};
    lowbit::Result<LlamaSource> src = llama_source_from_buffers(base.config, spans, &context);
    INFO("cut at ", cut);
    REQUIRE_FALSE(src.has_value());
    CHECK(src.status().code() == Errc::kTruncated);
    CHECK(context == "shard 0");
  }

  // Values the output type cannot hold: found while writing, the partial output is the caller's.
  auto write_code = [&](const Model& m, GgmlType type) {
    const auto fs = serialize(m);
    const LlamaSource src = load(m, fs);
    ConvertOptions options;
    options.default_type = type;
    lowbit::Result<ConvertPlan> p = plan_llama_gguf(src, options, &context);
    REQUIRE(p.has_value());
    std::vector<std::uint8_t> out;
    VectorSink sink{&out};
    return write_llama_gguf(src, *p, sink, nullptr, nullptr, &context);
  };
  {
    Model m = base;
    m.find("model.layers.1.mlp.gate_proj.weight")->values[70] = std::nanf("");
    const lowbit::Status s = write_code(m, GgmlType::kQ4_0);
    CHECK(s.code() == Errc::kNonFinite);
    CHECK(s.index() == 70);
    CHECK(context == "blk.1.ffn_gate.weight");
  }
  {
    Model m = base;
    m.find("model.layers.0.mlp.down_proj.weight")->values[300] = 1e6f;
    const lowbit::Status s = write_code(m, GgmlType::kF16);
    CHECK(s.code() == Errc::kOutOfRange);
    CHECK(s.index() == 300);
    CHECK(context == "blk.0.ffn_down.weight");
    // q4_1 stores its block minimum in fp16: -1e6 overflows it, and the row is refused rather
    // than written as Inf (ggml itself would write it). Element 300 is row 1, block 1 of 8.
    const lowbit::Status q = write_code(m, GgmlType::kQ4_1);
    CHECK(q.code() == Errc::kOutOfRange);
    CHECK(q.index() / 32 == 300 / 32);
    CHECK(context == "blk.0.ffn_down.weight");
  }
  {
    // Finite but absurd importance weights overflow q4_0's weights imatrix * sqrt(sigma2 + x^2)
    // (sigma2 is the row's mean square, here raised by one large weight) into Inf and the scale
    // into NaN (found by fuzz_ggml_blocks); the converter refuses the row instead of writing NaN.
    Model m = base;
    m.find("model.layers.0.mlp.up_proj.weight")->values[5] = 1000.0f;
    const auto fs = serialize(m);
    const LlamaSource src = load(m, fs);
    ImportanceMatrix im;
    im.entries.push_back({"blk.0.ffn_up.weight", std::vector<float>(64, 1e37f)});
    ConvertOptions options;
    options.default_type = GgmlType::kQ4_0;
    options.imatrix = &im;
    lowbit::Result<ConvertPlan> p = plan_llama_gguf(src, options, &context);
    REQUIRE(p.has_value());
    std::vector<std::uint8_t> out;
    VectorSink sink{&out};
    const lowbit::Status s = write_llama_gguf(src, *p, sink, nullptr, nullptr, &context);
    CHECK(s.code() == Errc::kOutOfRange);
    CHECK(context == "blk.0.ffn_up.weight");
    // The same weights without that imatrix are fine (1000 / 8 fits q4_0's fp16 scale).
    options.imatrix = nullptr;
    p = plan_llama_gguf(src, options, &context);
    REQUIRE(p.has_value());
    out.clear();
    CHECK(write_llama_gguf(src, *p, sink, nullptr, nullptr, &context).ok());
  }
}

TEST_CASE("quantize tool: a model directory on disk, sharded, to a file") {
  const std::string root = "/tmp/lowbit_quantize_tool_test_" + std::to_string(::getpid());
  REQUIRE((::mkdir(root.c_str(), 0700) == 0 || errno == EEXIST));
  Model m = make_model();
  for (SourceTensor& t : m.tensors) t.shard = t.name.find("layers.1.") != std::string::npos ? 1 : 0;
  const auto files = serialize(m);
  auto save = [&](const std::string& name, const std::vector<std::uint8_t>& bytes) {
    std::FILE* f = std::fopen((root + "/" + name).c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    std::fclose(f);
  };
  auto save_text = [&](const std::string& name, const std::string& text) {
    save(name, std::vector<std::uint8_t>(text.begin(), text.end()));
  };
  save("model-00001-of-00002.safetensors", files[0]);
  save("model-00002-of-00002.safetensors", files[1]);
  save_text("config.json", m.config);
  std::string index = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {";
  for (std::size_t k = 0; k < m.tensors.size(); ++k)
    index += std::string(k ? "," : "") + "\"" + m.tensors[k].name + "\": \"model-0000" +
             std::to_string(m.tensors[k].shard + 1) + "-of-00002.safetensors\"";
  index += "}}";
  save_text("model.safetensors.index.json", index);

  std::string context;
  lowbit::Result<LlamaSource> src = open_llama_model(root, &context);
  INFO("context ", context);
  REQUIRE(src.has_value());
  CHECK(src->shards.size() == 2);
  ConvertOptions options;
  options.default_type = GgmlType::kQ5_1;
  lowbit::Result<ConvertPlan> plan = plan_llama_gguf(*src, options, &context);
  REQUIRE(plan.has_value());
  const std::string out = root + "/out.gguf";
  std::size_t calls = 0;
  const lowbit::Status s = write_llama_gguf_file(
      *src, *plan, out,
      [](const ConvertProgress&, void* user) { ++*static_cast<std::size_t*>(user); }, &calls,
      &context);
  REQUIRE(s.ok());
  CHECK(calls == plan->tensors.size());
  lowbit::Result<MappedFile> written = MappedFile::open(out);
  REQUIRE(written.has_value());
  CHECK(written->size() == plan->output_bytes);
  Converted c;
  c.bytes.assign(written->data(), written->data() + written->size());
  c.plan = *plan;
  check_all_tensors(m, c);

  // An unwritable output leaves nothing behind.
  const lowbit::Status bad =
      write_llama_gguf_file(*src, *plan, root + "/no/such/dir/x.gguf", nullptr, nullptr, &context);
  CHECK(bad.code() == Errc::kIo);

  // The index is untrusted too: a shard outside the directory is refused.
  save_text("model.safetensors.index.json",
            "{\"weight_map\": {\"lm_head.weight\": \"../../etc/passwd.safetensors\"}}");
  lowbit::Result<LlamaSource> escape = open_llama_model(root, &context);
  REQUIRE_FALSE(escape.has_value());
  CHECK(escape.status().code() == Errc::kCorrupt);
  CHECK(context == root + "/model.safetensors.index.json");
  // A shard that the index names but the directory lacks.
  save_text("model.safetensors.index.json",
            "{\"weight_map\": {\"lm_head.weight\": \"model-00003-of-00003.safetensors\"}}");
  lowbit::Result<LlamaSource> missing = open_llama_model(root, &context);
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.status().code() == Errc::kIo);
  CHECK(open_llama_model(root + "/nowhere", &context).status().code() == Errc::kIo);
  for (const char* name : {"out.gguf", "config.json", "model.safetensors.index.json",
                           "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})
    std::remove((root + "/" + name).c_str());
  ::rmdir(root.c_str());
}

TEST_CASE("quantize tool: tinylm converts (when models/tinylm is present)") {
  const std::string dir = std::string(LOWBIT_TEST_DATA_DIR) + "/../../models/tinylm";
  std::string context;
  lowbit::Result<LlamaSource> src = open_llama_model(dir, &context);
  if (!src) {
    MESSAGE("models/tinylm not found (", context, "): skipped");
    return;
  }
  ConvertOptions options;
  options.default_type = GgmlType::kQ4_K;
  options.rules.push_back(*parse_tensor_type_rule("*ffn_down*=q6_K"));
  lowbit::Result<ConvertPlan> plan = plan_llama_gguf(*src, options, &context);
  REQUIRE(plan.has_value());
  CHECK(plan->tensors.size() == 57);
  CHECK(plan->fallbacks == 0);  // tinylm's rows (256, 768) are whole K-quant super-blocks
  std::vector<std::uint8_t> out;
  VectorSink sink{&out};
  REQUIRE(write_llama_gguf(*src, *plan, sink, nullptr, nullptr, &context).ok());
  lowbit::Result<GgufFile> f = parse_gguf(ByteSpan(out));
  REQUIRE(f.has_value());
  CHECK(kv_u32(*f, "llama.attention.head_count_kv") == 4);
  CHECK(kv_u32(*f, "llama.rope.dimension_count") == 32);
  CHECK(f->find_tensor("blk.5.ffn_down.weight")->type ==
        static_cast<std::uint32_t>(GgmlType::kQ6_K));
  // One tensor's bytes against the quantizer on the source rows (layer 2's k_proj, permuted).
  const SafetensorsTensor* k = src->shards[0].find("model.layers.2.self_attn.k_proj.weight");
  REQUIRE(k != nullptr);
  std::vector<float> w(static_cast<std::size_t>(k->elements));
  std::memcpy(w.data(), k->data.data, w.size() * 4);
  const std::vector<std::uint8_t> want =
      expected_bytes(GgmlType::kQ4_K, permute_like_numpy(w, 128, 256, 4), 128, 256);
  const GgufTensorInfo* g = f->find_tensor("blk.2.attn_k.weight");
  REQUIRE(g->data.size == want.size());
  CHECK(std::memcmp(g->data.data, want.data(), want.size()) == 0);
}
