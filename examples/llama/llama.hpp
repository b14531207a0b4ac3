// examples/llama/llama.hpp: a small fp32 Llama forward pass, with swappable linear layers, an
// activation hook for calibration, a KV cache, and the byte-level perplexity protocol of tinylm.
//
// An example, not an engine: one header, one code path for prefill and decode, Eigen for the
// matrix products (it is also the fp32 baseline that quantized layers are timed against). The
// computation is Hugging Face's LlamaForCausalLM in float32 (models/tinylm/README.md):
//
// clang-format off
//   h = embed_tokens[ids]                                      [T, hidden]
//   each layer:
//     u = rms_norm(h) ⊙ w_in;  q = u·Wqᵀ, k = u·Wkᵀ, v = u·Wvᵀ    (q, k, v read the same u)
//     q, k = rope(q, k, position)        rotate_half (NeoX) pairs (i, i + d/2) of each head
//     a_h = Σ_{j ≤ i} softmax_j(q_h·k_jᵀ / √d) v_j               head h reads kv head h / (H/KV)
//     h += a·Woᵀ
//     u = rms_norm(h) ⊙ w_post;  h += (silu(u·Wgateᵀ) ⊙ u·Wupᵀ)·Wdownᵀ
//   logits = (rms_norm(h) ⊙ w_final)·W_lm_headᵀ                [T, vocab]
//   rms_norm(x) = x / sqrt(mean(x²) + eps),   silu(x) = x / (1 + e^-x)
// clang-format on
//
// Every linear y = x·Wᵀ (W is [out, in] row-major, as stored by Hugging Face) runs behind the
// `Linear` interface, so quantized layers can replace any of the seven per decoder layer, by
// module name ("model.layers.3.mlp.down_proj"), through a factory at load time or
// LlamaModel::replace_linear afterwards. ForwardHooks::linear_input sees the input of every linear
// ([tokens, in_features]) for GPTQ/AWQ/SmoothQuant calibration.
//
// Positions: forward() appends `count` tokens to the KV cache at positions length .. length+count-1
// and attends over everything cached so far; prefill is forward() on an empty cache, decode is
// forward() of one token. The cache stores keys and values as [layer][kv_head][position][head_dim]
// fp32, so one head's keys are a contiguous [positions, head_dim] matrix for the score product.
//
// Errors are lowbit::Status values: bad config (kCorrupt, kUnsupported, kInvalidArgument,
// kIndivisible), missing tensor (kCorrupt), wrong shape (kShapeMismatch), NaN/Inf weights
// (kNonFinite), unreadable file (kIo), truncated file (kTruncated), token id outside the vocabulary
// or a full cache (kOutOfRange). The load functions can also name the key or tensor at fault.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "lowbit/detail/json_subset.hpp"
#include "lowbit/io/mapped_file.hpp"
#include "lowbit/io/safetensors.hpp"
#include "lowbit/kv_cache.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"

namespace llama {

using lowbit::Errc;
using lowbit::Result;
using lowbit::Status;

// Every size in a config must lie in [1, kMaxDim]: enough for any Llama, small enough that
// products of two sizes cannot overflow int64.
constexpr std::int64_t kMaxDim = std::int64_t{1} << 20;

namespace detail {
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMatrix>;
using MutMap = Eigen::Map<RowMatrix>;
// One head's columns inside a [tokens, heads*head_dim] buffer.
using ConstStrided = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
using MutStrided = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

inline void set(std::string* out, std::string_view text) {
  if (out != nullptr) out->assign(text.data(), text.size());
}

// A JSON number of any form (the cursor validates the grammar; from_chars is locale-free and
// correctly rounded). 1e999 is kOutOfRange.
inline Result<double> read_json_number(lowbit::detail::JsonCursor& c, std::string_view text) {
  Result<lowbit::detail::JsonType> type = c.peek();
  if (!type) return type.status();
  const std::size_t begin = c.offset();
  if (*type != lowbit::detail::JsonType::kNumber)
    return Status(Errc::kCorrupt, "json: expected a number", static_cast<std::int64_t>(begin));
  LOWBIT_TRY(c.skip_value());
  double value = 0;
  const char* first = text.data() + begin;
  const char* last = text.data() + c.offset();
  const std::from_chars_result r = std::from_chars(first, last, value);
  if (r.ec != std::errc() || r.ptr != last)
    return Status(Errc::kOutOfRange, "json: number outside the double range",
                  static_cast<std::int64_t>(begin));
  return value;
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Configuration: the fields of a Hugging Face LlamaConfig that change the computation.

struct LlamaConfig {
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;     // num_hidden_layers
  std::int64_t num_heads = 0;      // num_attention_heads
  std::int64_t num_kv_heads = 0;   // num_key_value_heads (default: num_heads)
  std::int64_t head_dim = 0;       // default: hidden_size / num_heads
  std::int64_t max_positions = 0;  // max_position_embeddings (the trained context)
  double rms_norm_eps = 0;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;  // lm_head shares embed_tokens' matrix

  Status validate() const {
    for (std::int64_t v : {vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
                           num_kv_heads, head_dim, max_positions})
      if (v < 1 || v > kMaxDim)
        return Status(Errc::kInvalidArgument, "config: a size is outside [1, 2^20]", v);
    if (num_heads % num_kv_heads != 0)
      return Status(Errc::kIndivisible, "config: num_key_value_heads does not divide the heads");
    if (head_dim % 2 != 0)  // rotary embeddings rotate pairs (i, i + head_dim/2)
      return Status(Errc::kInvalidArgument, "config: head_dim must be even", head_dim);
    if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps) || !(rope_theta > 0) ||
        !std::isfinite(rope_theta))
      return Status(Errc::kInvalidArgument, "config: rms_norm_eps and rope_theta must be > 0");
    return {};
  }

  // Parses config.json: the keys above (Hugging Face's names), others ignored. Keys that would
  // change the computation in ways not implemented (biases, another activation, rope scaling)
  // are kUnsupported. `culprit`, when given, receives the key at fault.
  static Result<LlamaConfig> parse(std::string_view json, std::string* culprit = nullptr) {
    using lowbit::detail::JsonType;
    // clang-format off
    enum Key { kVocab, kHidden, kInter, kLayers, kHeads, kKvHeads, kHeadDim, kMaxPos,  // integers
               kEps, kTheta, kTied, kAct, kAttnBias, kMlpBias, kRopeScaling, kKeys };
    static const char* const kNames[kKeys] = {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
        "rms_norm_eps", "rope_theta", "tie_word_embeddings", "hidden_act", "attention_bias",
        "mlp_bias", "rope_scaling"};
    // clang-format on
    LlamaConfig cfg;
    std::int64_t* const ints[] = {&cfg.vocab_size, &cfg.hidden_size,  &cfg.intermediate_size,
                                  &cfg.num_layers, &cfg.num_heads,    &cfg.num_kv_heads,
                                  &cfg.head_dim,   &cfg.max_positions};
    bool seen[kKeys] = {};
    lowbit::detail::JsonLimits limits;
    limits.max_bytes = 1 << 20;
    limits.max_depth = 16;
    lowbit::detail::JsonCursor c(json, limits);
    LOWBIT_TRY(c.begin_object());
    std::string key;
    for (;;) {
      Result<bool> more = c.next_member(&key);
      if (!more) return more.status();
      if (!*more) break;
      int k = 0;
      while (k < kKeys && key != kNames[k]) ++k;
      if (k == kKeys) {
        LOWBIT_TRY(c.skip_value());
        continue;
      }
      detail::set(culprit, key);
      if (seen[k]) return Status(Errc::kCorrupt, "config: repeated key");
      seen[k] = true;
      Result<JsonType> type = c.peek();
      if (!type) return type.status();
      if (*type == JsonType::kNull && (k == kKvHeads || k == kHeadDim || k == kRopeScaling)) {
        LOWBIT_TRY(c.read_null());  // null: the default
        seen[k] = false;
      } else if (k <= kMaxPos) {
        Result<std::int64_t> v = c.read_integer();
        if (!v) return v.status();
        *ints[k] = *v;
      } else if (k == kEps || k == kTheta) {
        Result<double> v = detail::read_json_number(c, json);
        if (!v) return v.status();
        (k == kEps ? cfg.rms_norm_eps : cfg.rope_theta) = *v;
      } else if (k == kAct) {
        std::string act;
        LOWBIT_TRY(c.read_string(&act));
        if (act != "silu") return Status(Errc::kUnsupported, "config: hidden_act is not silu");
      } else if (k == kRopeScaling) {
        return Status(Errc::kUnsupported, "config: rope_scaling is not implemented");
      } else {
        Result<bool> v = c.read_bool();
        if (!v) return v.status();
        if (k == kTied) cfg.tie_word_embeddings = *v;
        if (k != kTied && *v)
          return Status(Errc::kUnsupported, "config: biases are not implemented");
      }
    }
    LOWBIT_TRY(c.finish());
    for (int k : {kVocab, kHidden, kInter, kLayers, kHeads, kMaxPos, kEps}) {
      if (!seen[k]) {
        detail::set(culprit, kNames[k]);
        return Status(Errc::kCorrupt, "config: a required key is missing");
      }
    }
    detail::set(culprit, "");
    if (!seen[kKvHeads]) cfg.num_kv_heads = cfg.num_heads;
    if (!seen[kHeadDim] && cfg.num_heads > 0) {
      if (cfg.hidden_size % cfg.num_heads != 0)
        return Status(Errc::kIndivisible, "config: heads do not divide hidden_size");
      cfg.head_dim = cfg.hidden_size / cfg.num_heads;
    }
    LOWBIT_TRY(cfg.validate());
    return cfg;
  }

  static Result<LlamaConfig> load(const std::string& path, std::string* culprit = nullptr) {
    detail::set(culprit, path);
    Result<lowbit::io::MappedFile> f = lowbit::io::MappedFile::load(path);
    if (!f) return f.status();
    return parse(std::string_view(reinterpret_cast<const char*>(f->data()), f->size()), culprit);
  }
};

// ---------------------------------------------------------------------------------------------
// Weights: fp32 views of model.safetensors. F32 tensors are used in place in the memory map when
// the file aligns them (little-endian hosts); F16, BF16 and misaligned F32 are converted once.

enum LinearSlot : int { kQ, kK, kV, kO, kGate, kUp, kDown, kLinearsPerLayer };
inline const char* linear_suffix(int slot) {
  static const char* const kNames[kLinearsPerLayer] = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  return kNames[slot];
}
// The module name Hugging Face gives a decoder linear; its weight is name + ".weight".
inline std::string linear_name(std::int64_t layer, int slot) {
  return "model.layers." + std::to_string(layer) + "." + linear_suffix(slot);
}
// {out_features, in_features} of a decoder linear.
inline std::pair<std::int64_t, std::int64_t> linear_shape(const LlamaConfig& c, int slot) {
  const std::int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const std::int64_t d = c.hidden_size, f = c.intermediate_size;
  const std::int64_t out[] = {q, kv, kv, d, f, f, d}, in[] = {d, d, d, q, d, d, f};
  return {out[slot], in[slot]};
}

class LlamaWeights {
 public:
  struct Layer {
    const float* input_norm = nullptr;           // [hidden]
    const float* post_attention_norm = nullptr;  // [hidden]
    const float* linear[kLinearsPerLayer] = {};  // [out, in] each, see linear_shape()
  };

  LlamaConfig config;
  const float* embed_tokens = nullptr;  // [vocab, hidden], row = token id
  std::vector<Layer> layers;
  const float* norm = nullptr;     // [hidden]
  const float* lm_head = nullptr;  // [vocab, hidden]

  static Result<LlamaWeights> load(const std::string& path, const LlamaConfig& config,
                                   std::string* culprit = nullptr) {
    LOWBIT_TRY(config.validate());
    detail::set(culprit, path);
    Result<lowbit::io::MappedFile> mapped = lowbit::io::MappedFile::open(path);
    if (!mapped) return mapped.status();
    LlamaWeights w;
    w.config = config;
    w.file_.emplace(std::move(*mapped));
    Result<lowbit::io::SafetensorsFile> st = lowbit::io::parse_safetensors(w.file_->bytes());
    if (!st) return st.status();
    const std::int64_t d = config.hidden_size, v = config.vocab_size;
    LOWBIT_TRY(w.fetch(*st, "model.embed_tokens.weight", v, d, &w.embed_tokens, culprit));
    LOWBIT_TRY(w.fetch(*st, "model.norm.weight", d, 0, &w.norm, culprit));
    if (config.tie_word_embeddings)
      w.lm_head = w.embed_tokens;
    else
      LOWBIT_TRY(w.fetch(*st, "lm_head.weight", v, d, &w.lm_head, culprit));
    w.layers.resize(static_cast<std::size_t>(config.num_layers));
    for (std::int64_t l = 0; l < config.num_layers; ++l) {
      Layer& layer = w.layers[static_cast<std::size_t>(l)];
      const std::string prefix = "model.layers." + std::to_string(l) + ".";
      LOWBIT_TRY(w.fetch(*st, prefix + "input_layernorm.weight", d, 0, &layer.input_norm, culprit));
      LOWBIT_TRY(w.fetch(*st, prefix + "post_attention_layernorm.weight", d, 0,
                         &layer.post_attention_norm, culprit));
      for (int s = 0; s < kLinearsPerLayer; ++s) {
        const auto shape = linear_shape(config, s);
        LOWBIT_TRY(w.fetch(*st, linear_name(l, s) + ".weight", shape.first, shape.second,
                           &layer.linear[s], culprit));
      }
    }
    detail::set(culprit, "");
    return w;
  }

 private:
  // The tensor `name` of shape [rows] (cols == 0) or [rows, cols] as fp32, all finite.
  Status fetch(const lowbit::io::SafetensorsFile& st, const std::string& name, std::int64_t rows,
               std::int64_t cols, const float** out, std::string* culprit) {
    using lowbit::io::SafetensorsDtype;
    detail::set(culprit, name);
    const lowbit::io::SafetensorsTensor* t = st.find(name);
    if (t == nullptr)
      return Status(Errc::kCorrupt, "weights: a tensor the config needs is missing");
    const std::int64_t at = static_cast<std::int64_t>(t->entry_offset);
    const bool shape_ok = cols == 0
                              ? t->shape.size() == 1 && t->shape[0] == rows
                              : t->shape.size() == 2 && t->shape[0] == rows && t->shape[1] == cols;
    if (!shape_ok)
      return Status(Errc::kShapeMismatch, "weights: tensor shape differs from the config", at);
    if (t->dtype != SafetensorsDtype::kF32 && t->dtype != SafetensorsDtype::kF16 &&
        t->dtype != SafetensorsDtype::kBF16)
      return Status(Errc::kUnsupported, "weights: dtype is not F32, F16 or BF16", at);
    const std::size_t n = static_cast<std::size_t>(t->elements);
    const std::uint8_t* src = t->data.data;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const bool in_place = t->dtype == SafetensorsDtype::kF32 &&
                          reinterpret_cast<std::uintptr_t>(src) % alignof(float) == 0;
#else
    const bool in_place = false;
#endif
    const float* data = reinterpret_cast<const float*>(src);
    if (!in_place) {
      owned_.emplace_back(n);
      float* dst = owned_.back().data();
      using lowbit::detail::bits_float;
      using lowbit::detail::le_load;
      for (std::size_t i = 0; i < n; ++i) {
        if (t->dtype == SafetensorsDtype::kF32)
          dst[i] = bits_float(le_load<std::uint32_t>(src + 4 * i));
        else if (t->dtype == SafetensorsDtype::kF16)
          dst[i] = lowbit::to_float(lowbit::Half{le_load<std::uint16_t>(src + 2 * i)});
        else
          dst[i] = lowbit::to_float(lowbit::BFloat16{le_load<std::uint16_t>(src + 2 * i)});
      }
      data = dst;
    }
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(data[i]))
        return Status(Errc::kNonFinite, "weights: NaN or Inf in a tensor",
                      static_cast<std::int64_t>(i));
    *out = data;
    return {};
  }

  std::optional<lowbit::io::MappedFile> file_;  // keeps the in-place views alive
  std::vector<std::vector<float>> owned_;       // converted tensors (heap buffers move with us)
};

// ---------------------------------------------------------------------------------------------
// Linear layers

// What a layer's weights are as a file stores them (lowbit_quantize --scheme, checkpoint.hpp):
// fp32 [out, in], ggml blocks of a ggml type (GGUF tensor data), or a lowbit packed matrix
// (LBPM). kNone for layers that keep only a kernel-specific repacking. A virtual rather than a
// dynamic_cast, so that the writers build where RTTI is off.
struct StoredWeights {
  enum class Kind { kNone, kFp32, kGgml, kPacked };
  Kind kind = Kind::kNone;
  const float* fp32 = nullptr;          // kFp32
  const std::uint8_t* bytes = nullptr;  // kGgml, kPacked
  std::size_t size = 0;                 // bytes
  std::uint32_t ggml_type = 0;          // kGgml: the ggml type id (lowbit/io/ggml_types.hpp)
};

// y [tokens, out_features] = x [tokens, in_features] · Wᵀ, both row-major. forward() is const and
// is called from several threads at once (perplexity workers share one model): an implementation
// must keep per-call scratch on its own stack or heap, never in unsynchronised members.
class Linear {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features) noexcept
      : in_features_(in_features), out_features_(out_features) {}
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;
  virtual ~Linear() = default;

  virtual Status forward(const float* x, std::int64_t tokens, float* y) const = 0;
  // Bytes of the weights the layer reads, for size reports: fp32 unless a quantized layer says
  // otherwise (quantized_linear.hpp).
  virtual std::size_t weight_bytes() const noexcept {
    return static_cast<std::size_t>(in_features_ * out_features_) * sizeof(float);
  }
  virtual StoredWeights stored() const noexcept { return {}; }

  std::int64_t in_features() const noexcept { return in_features_; }
  std::int64_t out_features() const noexcept { return out_features_; }

 private:
  std::int64_t in_features_;
  std::int64_t out_features_;
};

// The fp32 baseline: Eigen's GEMM (GEMV for one token) on the [out, in] matrix as stored.
class DenseLinear final : public Linear {
 public:
  // A view of `weight` [out, in], which must outlive the layer (the model's own weights do).
  DenseLinear(const float* weight, std::int64_t out_features, std::int64_t in_features) noexcept
      : Linear(in_features, out_features), weight_(weight) {}
  // Owns `weight` (e.g. weights quantized and dequantized back to fp32).
  DenseLinear(std::vector<float> weight, std::int64_t out_features, std::int64_t in_features)
      : Linear(in_features, out_features), owned_(std::move(weight)), weight_(owned_.data()) {}

  Status forward(const float* x, std::int64_t tokens, float* y) const override {
    if (tokens < 0 || (tokens > 0 && (x == nullptr || y == nullptr)))
      return Status(Errc::kInvalidArgument, "linear: negative token count or null buffer", tokens);
    if (tokens == 0) return {};
    detail::ConstMap xm(x, tokens, in_features()), w(weight_, out_features(), in_features());
    detail::MutMap ym(y, tokens, out_features());
    ym.noalias() = xm * w.transpose();
    return {};
  }
  const float* weight() const noexcept { return weight_; }
  StoredWeights stored() const noexcept override {
    StoredWeights w;
    w.kind = StoredWeights::Kind::kFp32;
    w.fp32 = weight_;
    return w;
  }

 private:
  std::vector<float> owned_;
  const float* weight_;
};

// Builds the layer for a decoder linear at load time. `name` is the module name
// ("model.layers.0.self_attn.q_proj"); `weight` is its fp32 [out, in] matrix, valid for the
// model's lifetime. The result must have exactly these in/out features.
using LinearFactory = std::function<Result<std::unique_ptr<Linear>>(
    const std::string& name, const float* weight, std::int64_t out_features,
    std::int64_t in_features)>;

struct ForwardHooks {
  // The input of every decoder linear, [tokens, in_features], called once per linear name in the
  // order q, k, v, o, gate, up, down. q/k/v receive the same pointer (one RMSNorm output), as do
  // gate/up, so a consumer that keys statistics by input can skip the repeats.
  std::function<void(const std::string& linear, const float* x, std::int64_t tokens,
                     std::int64_t in_features)>
      linear_input;
  // The residual stream [tokens, hidden]: index 0 after the embedding, l + 1 after layer l.
  std::function<void(std::int64_t index, const float* h, std::int64_t tokens, std::int64_t hidden)>
      residual;
};

// ---------------------------------------------------------------------------------------------
// KV cache and per-sequence state

// Keys (after rotary embedding) and values of the positions processed so far, by default fp32,
// [layer][kv_head][position][head_dim]: one head's keys are one [length, head_dim] matrix for the
// score GEMM, and view() hands attention pointers into that storage.
//
// Made with a lowbit::KvQuantConfig (LlamaModel::new_state(capacity, config)), the cache is a
// lowbit::QuantizedKvCache instead (KIVI: keys per channel over groups of G tokens, values per
// token, the most recent R..R+G-1 positions in fp32; lowbit/kv_cache.hpp). store() appends to its
// fp32 window without quantizing, so a forward pass attends to its own new tokens in fp32 as
// KIVI's prefill does, and to older positions as stored (dequantized by view() into a scratch
// [capacity, head_dim] pair, valid until the next view()); the model then commits the pass, which
// quantizes the groups that left the window. A pass that fails before committing leaves only fp32
// tokens past length(), and the next store() at that position drops them. keys() and values() are
// null for a quantized cache; bytes() is the quantized store's (codes, fp16 scales and minima, fp32
// window; the scratch, 2·capacity·head_dim floats, is not counted).
class KvCache {
 public:
  // [count, head_dim] row-major keys and values of positions 0 .. count-1 of one kv head.
  struct HeadView {
    const float* keys = nullptr;
    const float* values = nullptr;
  };

  KvCache() = default;
  // Sizes are checked by LlamaModel::new_state().
  KvCache(std::int64_t layers, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t capacity)
      : layers_(layers),
        kv_heads_(kv_heads),
        head_dim_(head_dim),
        capacity_(capacity),
        k_(static_cast<std::size_t>(layers * kv_heads * capacity * head_dim)),
        v_(k_.size()) {}
  explicit KvCache(lowbit::QuantizedKvCache quantized)
      : layers_(quantized.layers()),
        kv_heads_(quantized.kv_heads()),
        head_dim_(quantized.head_dim()),
        capacity_(quantized.capacity()),
        k_(static_cast<std::size_t>(capacity_ * head_dim_)),  // dequantization scratch
        v_(k_.size()),
        quantized_(std::move(quantized)) {}

  std::int64_t layers() const noexcept { return layers_; }
  std::int64_t kv_heads() const noexcept { return kv_heads_; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t capacity() const noexcept { return capacity_; }
  // Positions filled; the next token goes to position length().
  std::int64_t length() const noexcept { return length_; }
  bool quantized() const noexcept { return quantized_.has_value(); }
  // The quantized store, or null for an fp32 cache.
  const lowbit::QuantizedKvCache* quantized_store() const noexcept {
    return quantized_ ? &*quantized_ : nullptr;
  }
  std::size_t bytes() const noexcept {
    return quantized_ ? quantized_->bytes() : (k_.size() + v_.size()) * sizeof(float);
  }
  void clear() noexcept {
    length_ = 0;
    if (quantized_) quantized_->clear();
  }

  // Stores one position's key and value (head_dim floats each). A quantized cache appends them
  // to its fp32 window after dropping anything at >= pos (left by a failed pass); its errors
  // (kNonFinite under KvNonFinite::kReject, kOutOfRange for |x| > 65504) are returned.
  Status store(std::int64_t layer, std::int64_t head, std::int64_t pos, const float* key,
               const float* value) {
    if (quantized_) {
      Result<lowbit::KvStreamInfo> info = quantized_->info(layer, head);
      if (!info) return info.status();
      if (info->length > pos) LOWBIT_TRY(quantized_->truncate(layer, head, pos));
      return quantized_->append(layer, head, lowbit::row_major(key, 1, head_dim_),
                                lowbit::row_major(value, 1, head_dim_), lowbit::KvFlush::kDefer);
    }
    const std::size_t i = index(layer, head, pos), n = static_cast<std::size_t>(head_dim_);
    std::memcpy(k_.data() + i, key, n * sizeof(float));
    std::memcpy(v_.data() + i, value, n * sizeof(float));
    return {};
  }
  // fp32 storage of one head (null for a quantized cache: use view()).
  const float* keys(std::int64_t layer, std::int64_t head) const noexcept {
    return quantized_ ? nullptr : k_.data() + index(layer, head, 0);
  }
  const float* values(std::int64_t layer, std::int64_t head) const noexcept {
    return quantized_ ? nullptr : v_.data() + index(layer, head, 0);
  }
  // Positions 0 .. count-1 of (layer, head) in fp32: the storage itself, or dequantized into the
  // scratch (overwritten by the next view()).
  Result<HeadView> view(std::int64_t layer, std::int64_t head, std::int64_t count) {
    if (!quantized_) return HeadView{keys(layer, head), values(layer, head)};
    if (count < 0 || count > capacity_)
      return Status(Errc::kOutOfRange, "kv cache: view past the capacity", count);
    LOWBIT_TRY(quantized_->dequantize(layer, head, count,
                                      lowbit::row_major(k_.data(), count, head_dim_),
                                      lowbit::row_major(v_.data(), count, head_dim_)));
    return HeadView{k_.data(), v_.data()};
  }

 private:
  friend class LlamaModel;  // commits a forward pass once it has succeeded
  // The pass's `count` positions become part of the sequence; a quantized cache quantizes the
  // groups that left its window.
  Status commit(std::int64_t count) {
    length_ += count;
    return quantized_ ? quantized_->flush_all() : Status();
  }
  std::size_t index(std::int64_t layer, std::int64_t head, std::int64_t pos) const noexcept {
    return static_cast<std::size_t>(((layer * kv_heads_ + head) * capacity_ + pos) * head_dim_);
  }
  std::int64_t layers_ = 0, kv_heads_ = 0, head_dim_ = 0, capacity_ = 0, length_ = 0;
  std::vector<float> k_, v_;  // fp32: the cache; quantized: the view() scratch, [capacity, hd]
  std::optional<lowbit::QuantizedKvCache> quantized_;
};

// One sequence: its KV cache, the rotary tables for its capacity and the forward pass's scratch.
// Make one per thread with LlamaModel::new_state().
class LlamaState {
 public:
  const KvCache& cache() const noexcept { return cache_; }
  std::int64_t capacity() const noexcept { return cache_.capacity(); }
  std::int64_t position() const noexcept { return cache_.length(); }
  void reset() noexcept { cache_.clear(); }

 private:
  friend class LlamaModel;
  KvCache cache_;
  std::vector<float> cos_, sin_;  // [capacity, head_dim/2]
  std::vector<float> h_, u_, q_, k_, v_, attn_, gate_, up_, out_, scores_;
};

// ---------------------------------------------------------------------------------------------
// The model

class LlamaModel {
 public:
  // Reads <dir>/config.json and <dir>/model.safetensors. `culprit` receives the file, key or
  // tensor at fault on error.
  static Result<LlamaModel> load(const std::string& dir, const LinearFactory& factory = nullptr,
                                 std::string* culprit = nullptr) {
    Result<LlamaConfig> config = LlamaConfig::load(dir + "/config.json", culprit);
    if (!config) return config.status();
    Result<LlamaWeights> w = LlamaWeights::load(dir + "/model.safetensors", *config, culprit);
    if (!w) return w.status();
    return from_weights(std::move(*w), factory, culprit);
  }

  static Result<LlamaModel> from_weights(LlamaWeights weights,
                                         const LinearFactory& factory = nullptr,
                                         std::string* culprit = nullptr) {
    LOWBIT_TRY(weights.config.validate());
    bool complete = weights.embed_tokens && weights.norm && weights.lm_head &&
                    weights.layers.size() == static_cast<std::size_t>(weights.config.num_layers);
    for (const LlamaWeights::Layer& layer : weights.layers) {
      complete = complete && layer.input_norm && layer.post_attention_norm;
      for (const float* w : layer.linear) complete = complete && w;
    }
    if (!complete) return Status(Errc::kInvalidArgument, "model: weights with a null tensor");
    LlamaModel m;
    m.weights_ = std::move(weights);
    const LlamaConfig& c = m.weights_.config;
    m.lm_head_ = std::make_unique<DenseLinear>(m.weights_.lm_head, c.vocab_size, c.hidden_size);
    for (std::int64_t l = 0; l < c.num_layers; ++l) {
      for (int s = 0; s < kLinearsPerLayer; ++s) {
        m.names_.push_back(::llama::linear_name(l, s));
        const auto shape = linear_shape(c, s);
        const float* w = m.weights_.layers[static_cast<std::size_t>(l)].linear[s];
        std::unique_ptr<Linear> layer;
        if (factory) {
          Result<std::unique_ptr<Linear>> made =
              factory(m.names_.back(), w, shape.first, shape.second);
          detail::set(culprit, m.names_.back());
          if (!made) return made.status();
          layer = std::move(*made);
        } else {
          layer = std::make_unique<DenseLinear>(w, shape.first, shape.second);
        }
        LOWBIT_TRY(check_linear(layer.get(), shape));
        m.linears_.push_back(std::move(layer));
      }
    }
    detail::set(culprit, "");
    return m;
  }

  const LlamaConfig& config() const noexcept { return weights_.config; }
  const LlamaWeights& weights() const noexcept { return weights_; }
  const std::string& linear_name(std::int64_t layer, int slot) const {
    return names_[static_cast<std::size_t>(layer * kLinearsPerLayer + slot)];
  }
  const Linear& linear(std::int64_t layer, int slot) const {
    return *linears_[static_cast<std::size_t>(layer * kLinearsPerLayer + slot)];
  }

  // Replaces the decoder linear `name` ("model.layers.2.mlp.up_proj"). kInvalidArgument for an
  // unknown name or a null layer, kShapeMismatch for other in/out features.
  Status replace_linear(const std::string& name, std::unique_ptr<Linear> layer) {
    const auto it = std::find(names_.begin(), names_.end(), name);
    if (it == names_.end())
      return Status(Errc::kInvalidArgument, "replace_linear: no linear of that name");
    const std::size_t i = static_cast<std::size_t>(it - names_.begin());
    LOWBIT_TRY(
        check_linear(layer.get(), linear_shape(config(), static_cast<int>(i % kLinearsPerLayer))));
    linears_[i] = std::move(layer);
    return {};
  }

  // A state for sequences of up to `capacity` positions (may exceed max_positions: rotary
  // embeddings extrapolate, though the model was not trained there). kOutOfRange past 2^20
  // positions or 2^32 floats of memory.
  Result<LlamaState> new_state(std::int64_t capacity) const {
    return make_state(capacity, nullptr);
  }
  // The same with a quantized KV cache (KvCache; lowbit/kv_cache.hpp); the config's errors too.
  Result<LlamaState> new_state(std::int64_t capacity, const lowbit::KvQuantConfig& kv) const {
    return make_state(capacity, &kv);
  }

  // Appends tokens[0 .. count) at positions state.position() onward and writes their logits,
  // [count, vocab], to `logits`. Everything is checked before anything is written; a failing
  // Linear leaves the cache length unchanged.
  Status forward(const std::int32_t* tokens, std::int64_t count, LlamaState& s, float* logits,
                 const ForwardHooks* hooks = nullptr) const {
    const LlamaConfig& c = config();
    if (count < 1 || tokens == nullptr || logits == nullptr)
      return Status(Errc::kInvalidArgument, "forward: no tokens or a null buffer", count);
    const KvCache& cache = s.cache_;
    if (!made_for_me(s))
      return Status(Errc::kShapeMismatch, "forward: the state was made for another model");
    if (count > cache.capacity() - cache.length())
      return Status(Errc::kOutOfRange, "forward: the KV cache is full", cache.length() + count);
    for (std::int64_t t = 0; t < count; ++t)
      if (tokens[t] < 0 || tokens[t] >= c.vocab_size)
        return Status(Errc::kOutOfRange, "forward: token id outside the vocabulary", t);

    const std::int64_t T = count, D = c.hidden_size, F = c.intermediate_size;
    const std::int64_t q_width = c.num_heads * c.head_dim, kv_width = c.num_kv_heads * c.head_dim;
    float* h = s.h_.data();
    float* u = s.u_.data();
    for (std::int64_t t = 0; t < T; ++t)
      std::memcpy(h + t * D, weights_.embed_tokens + tokens[t] * D,
                  static_cast<std::size_t>(D) * sizeof(float));
    if (hooks != nullptr && hooks->residual) hooks->residual(0, h, T, D);

    for (std::int64_t l = 0; l < c.num_layers; ++l) {
      const LlamaWeights::Layer& lw = weights_.layers[static_cast<std::size_t>(l)];
      const auto run = [&](int slot, const float* x, std::int64_t in, float* y) -> Status {
        if (hooks != nullptr && hooks->linear_input)
          hooks->linear_input(linear_name(l, slot), x, T, in);
        return linear(l, slot).forward(x, T, y);
      };
      rms_norm(h, T, lw.input_norm, u);
      LOWBIT_TRY(run(kQ, u, D, s.q_.data()));
      LOWBIT_TRY(run(kK, u, D, s.k_.data()));
      LOWBIT_TRY(run(kV, u, D, s.v_.data()));
      rope(s.q_.data(), T, c.num_heads, s);
      rope(s.k_.data(), T, c.num_kv_heads, s);
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t g = 0; g < c.num_kv_heads; ++g)
          LOWBIT_TRY(s.cache_.store(l, g, cache.length() + t,
                                    s.k_.data() + t * kv_width + g * c.head_dim,
                                    s.v_.data() + t * kv_width + g * c.head_dim));
      LOWBIT_TRY(attention(l, T, s));
      LOWBIT_TRY(run(kO, s.attn_.data(), q_width, s.out_.data()));
      add(h, s.out_.data(), T * D);

      rms_norm(h, T, lw.post_attention_norm, u);
      LOWBIT_TRY(run(kGate, u, D, s.gate_.data()));
      LOWBIT_TRY(run(kUp, u, D, s.up_.data()));
      // silu(gate) ⊙ up, with Eigen's vectorised exp (within a few ulp of std::exp).
      Eigen::Map<Eigen::ArrayXf> g(s.gate_.data(), T * F);
      g = g / (1.0f + (-g).exp()) * Eigen::Map<const Eigen::ArrayXf>(s.up_.data(), T * F);
      LOWBIT_TRY(run(kDown, s.gate_.data(), F, s.out_.data()));
      add(h, s.out_.data(), T * D);
      if (hooks != nullptr && hooks->residual) hooks->residual(l + 1, h, T, D);
    }
    rms_norm(h, T, weights_.norm, u);
    LOWBIT_TRY(lm_head_->forward(u, T, logits));
    return s.cache_.commit(T);
  }

  // One token at position state.position(): forward() with count 1.
  Status decode(std::int32_t token, LlamaState& s, float* logits) const {
    return forward(&token, 1, s, logits);
  }

 private:
  LlamaModel() = default;

  // new_state(): an fp32 cache when kv_config is null, else a quantized one.
  Result<LlamaState> make_state(std::int64_t capacity,
                                const lowbit::KvQuantConfig* kv_config) const {
    const LlamaConfig& c = config();
    if (capacity < 1 || capacity > kMaxDim)
      return Status(Errc::kOutOfRange, "new_state: capacity outside [1, 2^20]", capacity);
    const std::int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    const double floats =
        static_cast<double>(capacity) *
        (3.0 * static_cast<double>(c.hidden_size) + 2.0 * static_cast<double>(q + kv) +
         2.0 * static_cast<double>(c.intermediate_size) + static_cast<double>(capacity) +
         static_cast<double>(c.head_dim) + 2.0 * static_cast<double>(c.num_layers * kv));
    if (floats > 4294967296.0)
      return Status(Errc::kOutOfRange, "new_state: more than 2^32 floats", capacity);
    LlamaState s;
    if (kv_config != nullptr) {
      Result<lowbit::QuantizedKvCache> store = lowbit::QuantizedKvCache::create(
          c.num_layers, c.num_kv_heads, c.head_dim, capacity, *kv_config);
      if (!store) return store.status();
      s.cache_ = KvCache(std::move(*store));
    } else {
      s.cache_ = KvCache(c.num_layers, c.num_kv_heads, c.head_dim, capacity);
    }
    const auto rows = [&](std::int64_t width) {
      return static_cast<std::size_t>(capacity * width);
    };
    const std::int64_t d = c.hidden_size, f = c.intermediate_size;
    std::vector<float>* const buffers[] = {&s.h_, &s.u_, &s.out_,  &s.q_,  &s.attn_,
                                           &s.k_, &s.v_, &s.gate_, &s.up_, &s.scores_};
    const std::int64_t widths[] = {d, d, d, q, q, kv, kv, f, f, capacity};
    for (int i = 0; i < 10; ++i) buffers[i]->resize(rows(widths[i]));
    // Rotary angles as transformers computes them in float32: inv_freq_i = 1 / theta^(2i/d),
    // angle = float(p) * inv_freq_i rounded to float, then cos/sin of that float angle.
    const std::int64_t half = c.head_dim / 2;
    s.cos_.resize(rows(half));
    s.sin_.resize(rows(half));
    for (std::int64_t i = 0; i < half; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
      const float inv_freq =
          1.0f / static_cast<float>(std::pow(c.rope_theta, static_cast<double>(exponent)));
      for (std::int64_t p = 0; p < capacity; ++p) {
        const float angle = static_cast<float>(p) * inv_freq;
        s.cos_[static_cast<std::size_t>(p * half + i)] =
            static_cast<float>(std::cos(static_cast<double>(angle)));
        s.sin_[static_cast<std::size_t>(p * half + i)] =
            static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    }
    return s;
  }

  bool made_for_me(const LlamaState& s) const {
    const LlamaConfig& c = config();
    const auto rows = [&](std::int64_t width) {
      return static_cast<std::size_t>(s.capacity() * width);
    };
    return s.cache_.layers() == c.num_layers && s.cache_.kv_heads() == c.num_kv_heads &&
           s.cache_.head_dim() == c.head_dim && s.h_.size() == rows(c.hidden_size) &&
           s.q_.size() == rows(c.num_heads * c.head_dim) &&
           s.gate_.size() == rows(c.intermediate_size);
  }

  static Status check_linear(const Linear* layer, std::pair<std::int64_t, std::int64_t> shape) {
    if (layer == nullptr) return Status(Errc::kInvalidArgument, "linear: null layer");
    if (layer->out_features() != shape.first || layer->in_features() != shape.second)
      return Status(Errc::kShapeMismatch, "linear: in/out features differ from the model's");
    return {};
  }

  static void add(float* h, const float* x, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) h[i] += x[i];
  }

  // y = w ⊙ x / sqrt(mean(x²) + eps) per row; the mean in double, the rest in float as torch.
  void rms_norm(const float* x, std::int64_t tokens, const float* w, float* y) const {
    const std::int64_t d = config().hidden_size;
    const float eps = static_cast<float>(config().rms_norm_eps);
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float* xr = x + t * d;
      double ss = 0;
      for (std::int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + eps);
      for (std::int64_t i = 0; i < d; ++i) y[t * d + i] = w[i] * (xr[i] * inv);
    }
  }

  // Rotates pairs (i, i + d/2) of every head of row t by the angles of position length + t.
  void rope(float* x, std::int64_t tokens, std::int64_t heads, const LlamaState& s) const {
    const std::int64_t hd = config().head_dim, half = hd / 2;
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float* cs = s.cos_.data() + (s.cache_.length() + t) * half;
      const float* sn = s.sin_.data() + (s.cache_.length() + t) * half;
      for (std::int64_t hh = 0; hh < heads; ++hh) {
        float* xh = x + (t * heads + hh) * hd;
        for (std::int64_t i = 0; i < half; ++i) {
          const float a = xh[i], b = xh[i + half];
          xh[i] = a * cs[i] - b * sn[i];
          xh[i + half] = b * cs[i] + a * sn[i];
        }
      }
    }
  }

  // Causal grouped-query attention of the T new rows (positions p0 .. p0+T-1, p0 = cache length)
  // over the cached positions: per head and per block of query rows, S = Q·Kᵀ over the keys the
  // block can see (one GEMM; blocks skip most of the masked upper triangle), a masked softmax per
  // row, then A = S·V (a second GEMM).
  Status attention(std::int64_t layer, std::int64_t T, LlamaState& s) const {
    const LlamaConfig& c = config();
    const std::int64_t hd = c.head_dim, width = c.num_heads * hd, p0 = s.cache_.length();
    const std::int64_t group = c.num_heads / c.num_kv_heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    constexpr std::int64_t kBlock = 64;
    KvCache::HeadView cached;  // keys and values of kv head `head / group`, positions 0 .. p0+T-1
    for (std::int64_t head = 0; head < c.num_heads; ++head) {
      const std::int64_t kv = head / group;
      if (head % group == 0) {  // a quantized cache dequantizes once per kv head
        Result<KvCache::HeadView> view = s.cache_.view(layer, kv, p0 + T);
        if (!view) return view.status();
        cached = *view;
      }
      for (std::int64_t i0 = 0; i0 < T; i0 += kBlock) {
        const std::int64_t rows = std::min(kBlock, T - i0), P = p0 + i0 + rows;
        detail::ConstStrided q(s.q_.data() + i0 * width + head * hd, rows, hd,
                               Eigen::OuterStride<>(width));
        detail::ConstMap keys(cached.keys, P, hd), values(cached.values, P, hd);
        detail::MutMap scores(s.scores_.data(), rows, P);
        scores.noalias() = q * keys.transpose();
        for (std::int64_t i = 0; i < rows; ++i) {
          const std::int64_t seen = p0 + i0 + i + 1;  // causal: keys 0 .. its own position
          Eigen::Map<Eigen::ArrayXf> row(s.scores_.data() + i * P, seen);
          row = (row * scale - row.maxCoeff() * scale).exp();  // max(x)·s = max(x·s) for s > 0
          row /= row.sum();
          std::fill(s.scores_.data() + i * P + seen, s.scores_.data() + (i + 1) * P, 0.0f);
        }
        detail::MutStrided out(s.attn_.data() + i0 * width + head * hd, rows, hd,
                               Eigen::OuterStride<>(width));
        out.noalias() = scores * values;
      }
    }
    return {};
  }

  LlamaWeights weights_;
  std::vector<std::string> names_;                // [layer * 7 + slot]
  std::vector<std::unique_ptr<Linear>> linears_;  // [layer * 7 + slot]
  std::unique_ptr<Linear> lm_head_;               // fp32 always (as the reference baselines)
};

// ---------------------------------------------------------------------------------------------
// Perplexity (models/tinylm/README.md, "Evaluation protocol"): the text is cut into windows of
// `window` bytes, each one forward pass from position 0; the logits at position t score byte t+1,
// for t = 0 .. window-2. A trailing partial window is not used. Byte value = token id.

struct PerplexityOptions {
  std::int64_t window = 256;
  std::int64_t max_windows = 0;  // evaluate only the first N windows; 0 = all
  int threads = 1;               // windows are shared out; each thread has its own state
  // A quantized KV cache (null: fp32). A window's prefill attends to its own tokens in fp32, so
  // a quantized cache is only exercised by decoding: set token_by_token to run each window as
  // window − 1 single-token passes (every score then reads earlier positions from the cache).
  const lowbit::KvQuantConfig* kv = nullptr;
  bool token_by_token = false;
};

struct Perplexity {
  double cross_entropy = 0;  // mean -ln p(byte), nats per byte
  double perplexity = 0;     // exp(cross_entropy)
  std::int64_t predictions = 0;
  std::int64_t windows = 0;
};

// -ln softmax(logits)[target], in double.
inline double negative_log_likelihood(const float* logits, std::int64_t vocab,
                                      std::int64_t target) {
  double top = logits[0];
  for (std::int64_t i = 1; i < vocab; ++i) top = std::max(top, static_cast<double>(logits[i]));
  double sum = 0;
  for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - top);
  return top + std::log(sum) - static_cast<double>(logits[target]);
}

inline Result<Perplexity> evaluate_perplexity(const LlamaModel& model, const std::uint8_t* text,
                                              std::size_t size,
                                              const PerplexityOptions& options = {}) {
  if (options.window < 2 || options.window > kMaxDim || options.threads < 1 ||
      options.max_windows < 0)
    return Status(Errc::kInvalidArgument, "perplexity: window < 2, threads < 1 or max_windows < 0");
  if (text == nullptr && size != 0) return Status(Errc::kInvalidArgument, "perplexity: null text");
  std::int64_t windows = static_cast<std::int64_t>(size / static_cast<std::size_t>(options.window));
  if (options.max_windows > 0) windows = std::min(windows, options.max_windows);
  if (windows == 0) return Status(Errc::kEmpty, "perplexity: the text is shorter than one window");
  const std::int64_t n = options.window, vocab = model.config().vocab_size;
  const int threads = static_cast<int>(std::min<std::int64_t>(options.threads, windows));

  std::vector<double> nll(static_cast<std::size_t>(windows), 0.0);  // summed in window order below,
  std::vector<Status> failed(static_cast<std::size_t>(threads));    // so any thread count agrees
  std::atomic<std::int64_t> next{0};
  const auto worker = [&](int id) {
    Status& status = failed[static_cast<std::size_t>(id)];
    Result<LlamaState> state = options.kv ? model.new_state(n, *options.kv) : model.new_state(n);
    if (!state) {
      status = state.status();
      next.store(windows);
      return;
    }
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    std::vector<float> logits(static_cast<std::size_t>(n * vocab));
    for (std::int64_t w = next.fetch_add(1); w < windows; w = next.fetch_add(1)) {
      for (std::int64_t t = 0; t < n; ++t) ids[static_cast<std::size_t>(t)] = text[w * n + t];
      state->reset();
      if (options.token_by_token) {
        for (std::int64_t t = 0; t + 1 < n && status; ++t)
          status = model.decode(ids[static_cast<std::size_t>(t)], *state, logits.data() + t * vocab);
      } else {
        status = model.forward(ids.data(), n, *state, logits.data());
      }
      if (!status) {
        next.store(windows);
        return;
      }
      double sum = 0;
      for (std::int64_t t = 0; t + 1 < n; ++t)
        sum += negative_log_likelihood(logits.data() + t * vocab, vocab,
                                       ids[static_cast<std::size_t>(t + 1)]);
      nll[static_cast<std::size_t>(w)] = sum;
    }
  };
  std::vector<std::thread> pool;
  for (int id = 1; id < threads; ++id) pool.emplace_back(worker, id);
  worker(0);
  for (std::thread& t : pool) t.join();
  for (const Status& st : failed) LOWBIT_TRY(st);

  Perplexity r;
  r.windows = windows;
  r.predictions = windows * (n - 1);
  double total = 0;
  for (double x : nll) total += x;
  r.cross_entropy = total / static_cast<double>(r.predictions);
  r.perplexity = std::exp(r.cross_entropy);
  return r;
}

}  // namespace llama
