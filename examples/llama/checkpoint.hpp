// llama/checkpoint.hpp: a quantized Llama as one safetensors file, for the schemes whose weights
// no GGUF type holds (lowbit's packed codes: rtn-*, gptq-w*, awq-w4-g128, mixed-*, w8a8-sq,
// w4a8-gptq, the training schemes). lowbit_quantize --scheme writes it when the output ends in
// ".safetensors"; lowbit_evaluate --file reads it back.
//
// The file is a Hugging Face checkpoint with its decoder linears replaced:
//   model.layers.N.<linear>.weight   U8 [bytes]: what the layer stores, a lowbit packed matrix
//                                    (LBPM, lowbit/format/packed_matrix.hpp: shape, bits, scales
//                                    and zero points are in it) or ggml blocks ([out, in] rows of
//                                    blocks end to end, as a GGUF tensor's data)
//   __metadata__ "lowbit.format.<that name>"   "lbpm", or the ggml type's name ("q4_K")
//   __metadata__ "lowbit.scheme"               the scheme's name
// and every other tensor (embedding, norms, lm_head; fp32 linears) F32 under its own name, the
// norms as the scheme left them (AWQ and SmoothQuant rewrite them). config.json is the
// original model's. Rows are in Hugging Face order: no rotary permutation.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "llama/gguf_model.hpp"  // FileModel
#include "llama/llama.hpp"
#include "llama/quantized_linear.hpp"
#include "llama/schemes.hpp"
#include "lowbit/io/gguf_convert.hpp"
#include "lowbit/io/mapped_file.hpp"
#include "lowbit/io/safetensors.hpp"

namespace llama {

// Writes `built` (a scheme built with Deploy::kExport from `fp32`) to `path` as above; the file
// appears whole or not at all (written to path + ".part", then renamed). kUnsupported for a
// linear with no StoredWeights (one that keeps only a kernel repacking); kIo when the file
// cannot be written.
inline Status write_checkpoint(const std::string& path, const LlamaModel& fp32,
                               const schemes::Built& built, const std::string& scheme) {
  using lowbit::io::SafetensorsDtype;
  const LlamaConfig& c = fp32.config();
  const LlamaWeights& w = fp32.weights();
  lowbit::io::SafetensorsWriter writer;
  std::vector<const void*> data;
  const auto add = [&](const std::string& name, SafetensorsDtype dtype, const void* p,
                       std::int64_t rows, std::int64_t cols) -> Status {
    const std::int64_t shape[2] = {rows, cols};
    LOWBIT_TRY(writer.add_tensor(name, dtype, shape, cols == 0 ? 1 : 2));
    data.push_back(p);
    return {};
  };
  LOWBIT_TRY(writer.add_metadata("lowbit.scheme", scheme));
  LOWBIT_TRY(add("model.embed_tokens.weight", SafetensorsDtype::kF32, w.embed_tokens, c.vocab_size, c.hidden_size));
  LOWBIT_TRY(add("model.norm.weight", SafetensorsDtype::kF32, w.norm, c.hidden_size, 0));
  if (!c.tie_word_embeddings)
    LOWBIT_TRY(add("lm_head.weight", SafetensorsDtype::kF32, w.lm_head, c.vocab_size, c.hidden_size));
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    const std::size_t i = static_cast<std::size_t>(l);
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const bool rewritten = !built.norms.empty();
    LOWBIT_TRY(add(p + "input_layernorm.weight", SafetensorsDtype::kF32,
                   rewritten ? built.norms[2 * i].data() : w.layers[i].input_norm, c.hidden_size, 0));
    LOWBIT_TRY(add(p + "post_attention_layernorm.weight", SafetensorsDtype::kF32,
                   rewritten ? built.norms[2 * i + 1].data() : w.layers[i].post_attention_norm,
                   c.hidden_size, 0));
    for (int s = 0; s < kLinearsPerLayer; ++s) {
      const std::string name = linear_name(l, s) + ".weight";
      const Linear& linear = *built.linears[i * kLinearsPerLayer + static_cast<std::size_t>(s)];
      const StoredWeights stored = linear.stored();
      if (stored.kind == StoredWeights::Kind::kFp32) {
        LOWBIT_TRY(add(name, SafetensorsDtype::kF32, stored.fp32, linear.out_features(), linear.in_features()));
      } else if (stored.kind != StoredWeights::Kind::kNone) {
        const bool ggml = stored.kind == StoredWeights::Kind::kGgml;
        LOWBIT_TRY(writer.add_metadata("lowbit.format." + name,
                                       ggml ? lowbit::io::ggml_type_info(stored.ggml_type)->name : "lbpm"));
        LOWBIT_TRY(add(name, SafetensorsDtype::kU8, stored.bytes, static_cast<std::int64_t>(stored.size), 0));
      } else {
        return Status(Errc::kUnsupported, "checkpoint: a linear with nothing a file can store",
                      l * kLinearsPerLayer + s);
      }
    }
  }
  const std::string part = path + ".part";
  std::FILE* file = std::fopen(part.c_str(), "wb");
  if (file == nullptr) return Status(Errc::kIo, "checkpoint: cannot open the output file");
  lowbit::io::FileSink sink{file};
  Status s = writer.write(sink, data.data());
  if (std::fclose(file) != 0 && s.ok()) s = Status(Errc::kIo, "checkpoint: writing the file failed");
  if (s.ok() && std::rename(part.c_str(), path.c_str()) != 0)
    s = Status(Errc::kIo, "checkpoint: cannot rename the finished file into place");
  if (!s.ok()) std::remove(part.c_str());
  return s;
}

// Reads `path` (written by write_checkpoint) as the model of `model_dir`'s config.json, whose
// model.safetensors gives only the fp32 pointers LlamaModel::from_weights insists on (the linear
// factory ignores them). Errors: those of the readers (kIo, kTruncated, kCorrupt, ...),
// kCorrupt for a tensor missing, kShapeMismatch for one of the wrong shape or size, kUnsupported
// for an unknown lowbit.format; `culprit` names the file or tensor.
inline Result<std::unique_ptr<FileModel>> load_checkpoint(const std::string& path,
                                                                const std::string& model_dir,
                                                                std::string* culprit = nullptr) {
  using lowbit::io::SafetensorsDtype;
  Result<LlamaConfig> config = LlamaConfig::load(model_dir + "/config.json", culprit);
  if (!config) return config.status();
  Result<LlamaWeights> weights = LlamaWeights::load(model_dir + "/model.safetensors", *config, culprit);
  if (!weights) return weights.status();
  detail::set(culprit, path);
  Result<lowbit::io::MappedFile> mapped = lowbit::io::MappedFile::open(path);
  if (!mapped) return mapped.status();
  Result<lowbit::io::SafetensorsFile> file = lowbit::io::parse_safetensors(mapped->bytes());
  if (!file) return file.status();
  const LlamaConfig& c = *config;
  std::vector<std::vector<float>> f32;
  // Pointers into it must stay valid: room for every f32 tensor (fp32 linears included).
  f32.reserve(static_cast<std::size_t>(3 + (2 + kLinearsPerLayer) * c.num_layers));

  const auto tensor = [&](const std::string& name, SafetensorsDtype dtype, std::int64_t rows,
                          std::int64_t cols) -> Result<const lowbit::io::SafetensorsTensor*> {
    detail::set(culprit, name);
    const lowbit::io::SafetensorsTensor* t = file->find(name);
    if (t == nullptr) return Status(Errc::kCorrupt, "checkpoint: a tensor the config needs is missing");
    // rows < 0: bytes of a quantized linear, any count (the layer's parser checks it).
    const bool shape_ok = t->dtype == dtype &&
                          (cols == 0 ? t->shape.size() == 1 && (rows < 0 || t->shape[0] == rows)
                                     : t->shape.size() == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!shape_ok) return Status(Errc::kShapeMismatch, "checkpoint: tensor dtype or shape differs from the config");
    return t;
  };
  const auto fetch = [&](const std::string& name, std::int64_t rows, std::int64_t cols,
                         const float** out) -> Status {
    Result<const lowbit::io::SafetensorsTensor*> t = tensor(name, SafetensorsDtype::kF32, rows, cols);
    if (!t) return t.status();
    f32.emplace_back(static_cast<std::size_t>(rows * (cols == 0 ? 1 : cols)));
    std::memcpy(f32.back().data(), (*t)->data.data, f32.back().size() * sizeof(float));
    for (std::size_t i = 0; i < f32.back().size(); ++i)
      if (!std::isfinite(f32.back()[i]))
        return Status(Errc::kNonFinite, "checkpoint: NaN or Inf in a tensor", static_cast<std::int64_t>(i));
    *out = f32.back().data();
    return {};
  };
  LOWBIT_TRY(fetch("model.embed_tokens.weight", c.vocab_size, c.hidden_size, &weights->embed_tokens));
  LOWBIT_TRY(fetch("model.norm.weight", c.hidden_size, 0, &weights->norm));
  if (c.tie_word_embeddings)
    weights->lm_head = weights->embed_tokens;
  else
    LOWBIT_TRY(fetch("lm_head.weight", c.vocab_size, c.hidden_size, &weights->lm_head));
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    LlamaWeights::Layer& layer = weights->layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LOWBIT_TRY(fetch(p + "input_layernorm.weight", c.hidden_size, 0, &layer.input_norm));
    LOWBIT_TRY(fetch(p + "post_attention_layernorm.weight", c.hidden_size, 0, &layer.post_attention_norm));
  }

  const auto format_of = [&](const std::string& name) -> const std::string* {
    for (const lowbit::io::SafetensorsMetadata& m : file->metadata())
      if (m.key == "lowbit.format." + name) return &m.value;
    return nullptr;
  };
  const LinearFactory factory = [&](const std::string& linear, const float* /*fp32, unused*/,
                                    std::int64_t out, std::int64_t in) -> Result<std::unique_ptr<Linear>> {
    const std::string name = linear + ".weight";
    const std::string* format = format_of(name);
    if (format == nullptr) {  // an fp32 linear
      const float* w = nullptr;
      LOWBIT_TRY(fetch(name, out, in, &w));
      return std::unique_ptr<Linear>(new DenseLinear(w, out, in));
    }
    Result<const lowbit::io::SafetensorsTensor*> t = tensor(name, SafetensorsDtype::kU8, -1, 0);
    if (!t) return t.status();
    std::vector<std::uint8_t> bytes((*t)->data.data, (*t)->data.data + (*t)->data.size);
    std::unique_ptr<DequantLinear> layer;
    if (*format == "lbpm") {
      Result<std::unique_ptr<DequantLinear>> d = DequantLinear::from_packed(std::move(bytes));
      if (!d) return d.status();
      layer = std::move(*d);
    } else {
      Result<lowbit::io::GgmlType> type = lowbit::io::parse_gguf_output_type(*format);
      if (!type) return Status(Errc::kUnsupported, "checkpoint: unknown lowbit.format of a linear");
      Result<std::unique_ptr<DequantLinear>> d = DequantLinear::from_ggml(*type, std::move(bytes), out, in);
      if (!d) return d.status();
      layer = std::move(*d);
    }
    if (layer->out_features() != out || layer->in_features() != in)
      return Status(Errc::kShapeMismatch, "checkpoint: a packed linear's shape differs from the config");
    return std::unique_ptr<Linear>(std::move(layer));
  };
  Result<LlamaModel> model = LlamaModel::from_weights(std::move(*weights), factory, culprit);
  if (!model) return model.status();
  detail::set(culprit, "");
  return std::unique_ptr<FileModel>(new FileModel{std::move(f32), std::move(*model)});
}

}  // namespace llama
