// llama/gguf_model.hpp: a Llama read back from a GGUF file that lowbit_quantize wrote, so that
// lowbit_evaluate --gguf can measure the file itself next to the scheme that produced it.
//
// Everything the model computes with comes from the file: the embedding, the norms, lm_head and
// the decoder linears (DequantLinear on the file's ggml blocks, or DenseLinear for f32). The
// checkpoint directory gives only the configuration (config.json) and, because
// LlamaModel::from_weights wants a complete set of fp32 pointers, the fp32 weights, which the
// linear factory below ignores.
//
// llama.cpp's "llama" architecture rotates adjacent pairs, so lowbit_quantize stored the rows of
// q_proj and k_proj permuted within each head of d rows: GGUF row 2i + s holds Hugging Face row
// s·d/2 + i. Reading back undoes that here, written from the definition rather than with the
// converter's own helper, so that a wrong permutation in either shows up as a wrong perplexity.
//
// The embedding, lm_head and norms must be f32 in the file (lowbit_quantize --scheme's default);
// any ggml type lowbit dequantizes is accepted for the decoder linears.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "llama/quantized_linear.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/io/mapped_file.hpp"

namespace llama {

// A model read back from a file (a GGUF here, a lowbit checkpoint in checkpoint.hpp): the model
// and the f32 tensors its weights point into (every tensor is copied out of the file, which is
// closed again).
struct FileModel {
  std::vector<std::vector<float>> f32;
  LlamaModel model;
};

namespace detail {

// The GGUF name of decoder linear `slot` of `layer` (gguf_convert.hpp's table).
inline std::string gguf_linear_name(std::int64_t layer, int slot) {
  static const char* const kParts[kLinearsPerLayer] = {"attn_q",   "attn_k",  "attn_v",  "attn_output",
                                                       "ffn_gate", "ffn_up", "ffn_down"};
  return "blk." + std::to_string(layer) + "." + kParts[slot] + ".weight";
}

// The file's tensor `name` with extents {cols, rows} (rows 1: a vector), or an error naming it.
inline Result<const lowbit::io::GgufTensorInfo*> gguf_tensor(const lowbit::io::GgufFile& f,
                                                             const std::string& name,
                                                             std::int64_t rows, std::int64_t cols,
                                                             std::string* culprit) {
  set(culprit, name);
  const lowbit::io::GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) return Status(Errc::kCorrupt, "gguf: a tensor the config needs is missing");
  if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
    return Status(Errc::kShapeMismatch, "gguf: tensor shape differs from the config");
  return t;
}

}  // namespace detail

// Reads `gguf_path` as the model of `model_dir`'s config.json. Errors: those of the readers
// (kIo, kTruncated, kCorrupt, ...), kShapeMismatch for a tensor of the wrong shape, kUnsupported
// for an embedding, lm_head or norm not stored f32 or a linear in a type lowbit cannot run;
// `culprit` names the file or tensor.
inline Result<std::unique_ptr<FileModel>> load_gguf_model(const std::string& gguf_path,
                                                          const std::string& model_dir,
                                                          std::string* culprit = nullptr) {
  Result<LlamaConfig> config = LlamaConfig::load(model_dir + "/config.json", culprit);
  if (!config) return config.status();
  Result<LlamaWeights> weights = LlamaWeights::load(model_dir + "/model.safetensors", *config, culprit);
  if (!weights) return weights.status();
  detail::set(culprit, gguf_path);
  Result<lowbit::io::MappedFile> mapped = lowbit::io::MappedFile::open(gguf_path);
  if (!mapped) return mapped.status();
  Result<lowbit::io::GgufFile> file = lowbit::io::parse_gguf(mapped->bytes());
  if (!file) return file.status();
  const lowbit::io::GgufFile& f = *file;
  const LlamaConfig& c = *config;
  std::vector<std::vector<float>> f32;

  // An f32 tensor of the file, copied into `f32`: *out points at the copy.
  const auto fetch = [&](const std::string& name, std::int64_t rows, std::int64_t cols,
                         const float** out) -> Status {
    Result<const lowbit::io::GgufTensorInfo*> t = detail::gguf_tensor(f, name, rows, cols, culprit);
    if (!t) return t.status();
    if ((*t)->type != static_cast<std::uint32_t>(lowbit::io::GgmlType::kF32))
      return Status(Errc::kUnsupported, "gguf: embedding, lm_head and norms must be f32");
    f32.emplace_back(static_cast<std::size_t>(rows * cols));
    std::memcpy(f32.back().data(), (*t)->data.data, f32.back().size() * sizeof(float));
    for (std::size_t i = 0; i < f32.back().size(); ++i)
      if (!std::isfinite(f32.back()[i]))
        return Status(Errc::kNonFinite, "gguf: NaN or Inf in a tensor", static_cast<std::int64_t>(i));
    *out = f32.back().data();
    return {};
  };
  f32.reserve(static_cast<std::size_t>(3 + 2 * c.num_layers));  // pointers into it stay valid
  LOWBIT_TRY(fetch("token_embd.weight", c.vocab_size, c.hidden_size, &weights->embed_tokens));
  LOWBIT_TRY(fetch("output_norm.weight", 1, c.hidden_size, &weights->norm));
  if (f.find_tensor("output.weight") != nullptr)
    LOWBIT_TRY(fetch("output.weight", c.vocab_size, c.hidden_size, &weights->lm_head));
  else
    weights->lm_head = weights->embed_tokens;  // tied, as llama.cpp reads it
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    LlamaWeights::Layer& layer = weights->layers[static_cast<std::size_t>(l)];
    const std::string blk = "blk." + std::to_string(l) + ".";
    LOWBIT_TRY(fetch(blk + "attn_norm.weight", 1, c.hidden_size, &layer.input_norm));
    LOWBIT_TRY(fetch(blk + "ffn_norm.weight", 1, c.hidden_size, &layer.post_attention_norm));
  }

  std::int64_t index = 0;
  const LinearFactory factory = [&](const std::string&, const float* /*fp32, unused*/, std::int64_t out,
                                    std::int64_t in) -> Result<std::unique_ptr<Linear>> {
    const std::int64_t l = index / kLinearsPerLayer;
    const int slot = static_cast<int>(index++ % kLinearsPerLayer);
    Result<const lowbit::io::GgufTensorInfo*> t =
        detail::gguf_tensor(f, detail::gguf_linear_name(l, slot), out, in, culprit);
    if (!t) return t.status();
    const lowbit::io::GgmlTypeInfo* info = lowbit::io::ggml_type_info(static_cast<lowbit::io::GgmlType>((*t)->type));
    if (info == nullptr) return Status(Errc::kUnsupported, "gguf: unknown tensor type");
    const std::size_t row_bytes = static_cast<std::size_t>((*t)->bytes / static_cast<std::uint64_t>(out));
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>((*t)->bytes));
    const std::int64_t heads = slot == kQ ? c.num_heads : slot == kK ? c.num_kv_heads : 0;
    for (std::int64_t r = 0; r < out; ++r) {
      std::int64_t from = r;  // the GGUF row holding Hugging Face row r
      if (heads > 0) {
        const std::int64_t d = out / heads, half = d / 2, head = r / d, j = r % d;
        from = head * d + 2 * (j % half) + j / half;
      }
      std::memcpy(bytes.data() + static_cast<std::size_t>(r) * row_bytes,
                  (*t)->data.data + static_cast<std::size_t>(from) * row_bytes, row_bytes);
    }
    if ((*t)->type == static_cast<std::uint32_t>(lowbit::io::GgmlType::kF32)) {
      std::vector<float> w(static_cast<std::size_t>(out * in));
      std::memcpy(w.data(), bytes.data(), bytes.size());
      return std::unique_ptr<Linear>(new DenseLinear(std::move(w), out, in));
    }
    Result<std::unique_ptr<DequantLinear>> d = DequantLinear::from_ggml(
        static_cast<lowbit::io::GgmlType>((*t)->type), std::move(bytes), out, in);
    if (!d) return d.status();
    return std::unique_ptr<Linear>(std::move(*d));
  };
  Result<LlamaModel> model = LlamaModel::from_weights(std::move(*weights), factory, culprit);
  if (!model) return model.status();
  detail::set(culprit, "");
  return std::unique_ptr<FileModel>(new FileModel{std::move(f32), std::move(*model)});
}

}  // namespace llama
