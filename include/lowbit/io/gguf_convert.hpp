// lowbit/io/gguf_convert.hpp: a Hugging Face Llama checkpoint (safetensors + config.json) to a
// GGUF file that llama.cpp loads as architecture "llama", streamed tensor by tensor.
//
// What it offers, in the order a converter uses it (examples/quantize/ is the command line):
//   parse_llama_config      config.json -> LlamaHyperparameters (bounded JSON cursor)
//   open_llama_model        a model directory: model.safetensors, or the shards named by
//                           model.safetensors.index.json, memory-mapped -> LlamaSource
//   llama_source_from_buffers   the same from bytes you hold (tests, engines)
//   parse_imatrix_dat       llama.cpp's legacy importance-matrix file (imatrix .dat)
//   plan_llama_gguf         names, shapes, output type and byte size of every tensor, the GGUF
//                           metadata, and the output size, before a byte is written (--dry-run)
//   write_llama_gguf        header, then each tensor converted and written in row chunks
//   write_llama_gguf_file   the same into a file, atomically (a ".part" file renamed at the end)
//   SuppliedTensor          a tensor's output computed elsewhere (GPTQ's or AWQ's blocks, a
//                           rewritten norm: lowbit_quantize --scheme), via ConvertOptions::supplied
//
// Names (convert_hf_to_gguf.py's table for LlamaModel; ".weight" or ".bias" is kept):
//   model.embed_tokens                      token_embd
//   model.layers.N.input_layernorm          blk.N.attn_norm
//   model.layers.N.self_attn.{q,k,v}_proj   blk.N.attn_{q,k,v}
//   model.layers.N.self_attn.o_proj         blk.N.attn_output
//   model.layers.N.post_attention_layernorm blk.N.ffn_norm
//   model.layers.N.mlp.{gate,up,down}_proj  blk.N.ffn_{gate,up,down}
//   model.norm                              output_norm
//   lm_head                                 output        (absent and tied: llama.cpp reuses
//                                                          token_embd)
//   *.rotary_emb.inv_freq                   dropped (recomputed by every engine)
// Shapes are reversed: a Hugging Face [out, in] matrix is GGUF ne = {in, out}, ne[0] being the
// contiguous row that ggml's blocks tile.
//
// The Q/K row permutation. Rotary embeddings rotate pairs of features of each head. Meta's
// original Llama rotated adjacent pairs (2i, 2i+1); Hugging Face's port rotates (i, i + d/2)
// ("rotate_half"), and its checkpoint converter permuted the rows of Wq and Wk so that the same
// model computes the same thing under the other pairing. llama.cpp runs architecture "llama"
// with adjacent pairs (its ROPE_TYPE_NORM), so its converter undoes that permutation on
// q_proj and k_proj (weights and biases), and so must we. Within each head of d = head_dim rows:
//
//   GGUF row  2*i + s   =   HF row  s*(d/2) + i        for i < d/2, s in {0, 1}
//
//   HF head:    [ x0 x1 ... x(d/2-1) | y0 y1 ... y(d/2-1) ]     rotated pairs (x_i, y_i)
//   GGUF head:  [ x0 y0 x1 y1 ... x(d/2-1) y(d/2-1) ]           rotated pairs adjacent
//
// (numpy: w.reshape(n_head, 2, d/2, in).swapaxes(1, 2).reshape(w.shape)). Q uses
// num_attention_heads heads; K num_key_value_heads (grouped-query attention). The unit test checks
// the reason, not just the formula: rotary-with-adjacent-pairs of the permuted projection equals
// the permuted rotate_half of the original one.
//
// Tensor types. Every 1-D tensor (the RMSNorm weights, biases) stays f32, as llama.cpp keeps
// them. A matrix gets ConvertOptions::default_type unless a rule matches: rules are tried in
// order and the first whose glob matches the GGUF name or the Hugging Face name wins (as
// llama-quantize's --tensor-type does). A row length that the chosen type's block does not divide
// falls back as llama-quantize does, and TensorPlan::fell_back says so:
//   q2_K q3_K iq4_xs -> iq4_nl    q4_K -> q5_0    q5_K -> q5_1    q6_K -> q8_0
//   tq1_0 tq2_0 -> q4_0
// and to f16 when even that block (32) does not divide the row. Quantized bytes come from
// lowbit::ggml's FormatTraits<...>::quantize (ggml_quantize_chunk's path, byte-exact with ggml),
// with the importance row of the tensor when an imatrix names it.
//
// Tokenizer. tinylm-like models are byte-level: 256 tokens, token id = byte. For vocab_size 256
// the file gets a GPT-2-style byte vocabulary that llama.cpp's BPE tokenizer maps 1:1 onto bytes:
// tokenizer.ggml.model "gpt2", pre "default", token i = the GPT-2 printable character of byte i
// (bytes_to_unicode), all NORMAL, no merges, no BOS/EOS added. Any other vocabulary size gets
// tokenizer.ggml.model "none" (llama.cpp then loads the weights without a vocabulary): this tool
// does not translate tokenizer.json.
//
// Memory. Inputs are memory-mapped. Each tensor is converted in chunks of whole rows (whole
// heads for Q/K, so a chunk's source rows are exactly its output rows) of at most
// ConvertOptions::chunk_bytes of fp32, written as soon as quantized, and the mapped input pages
// of the chunk are handed back to the kernel (madvise MADV_DONTNEED on Linux; the mapping is
// read-only and private, so a later touch re-reads the file). Peak memory is therefore two chunk
// buffers plus the header, whatever the size of the model or of its largest tensor.
//
// Errors are Status values; the functions taking `std::string* context` also name the file or
// tensor at fault there. kIo (files), kTruncated / kCorrupt / kOverflow (hostile files, from the
// readers), kUnsupported (not a llama config, rope_scaling, an unsupported dtype or type name,
// an unknown tensor), kShapeMismatch (a tensor whose shape contradicts config.json, an imatrix row
// of the wrong length), kCorrupt (a tensor missing or given twice), kNonFinite (a weight NaN or
// Inf), kOutOfRange (weights, or importance weights, so large that f16 or a block's fp16 scale
// overflows: every quantized row is decoded again and must be finite), kInvalidArgument (a bad
// rule).
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/detail/json_subset.hpp"
#include "lowbit/format/ggml.hpp"
#include "lowbit/io/ggml_types.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/io/mapped_file.hpp"
#include "lowbit/io/safetensors.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#define LOWBIT_IO_CAN_RELEASE_PAGES 1
#else
#define LOWBIT_IO_CAN_RELEASE_PAGES 0
#endif

namespace lowbit {
namespace io {

// ---------------------------------------------------------------------------------------------
// config.json

struct LlamaHyperparameters {
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;      // num_hidden_layers
  std::int64_t num_heads = 0;       // num_attention_heads
  std::int64_t num_kv_heads = 0;    // num_key_value_heads (default: num_heads)
  std::int64_t head_dim = 0;        // head_dim (default: hidden_size / num_heads)
  std::int64_t context_length = 0;  // max_position_embeddings
  double rms_norm_eps = 1e-6;       // Hugging Face LlamaConfig's default
  double rope_theta = 10000.0;      // likewise
  bool tie_word_embeddings = false;
};

namespace detail {

// Largest value written to llama.cpp's u32 hyper-parameter keys; also keeps products in int64.
constexpr std::int64_t kLlamaMaxDim = std::numeric_limits<std::int32_t>::max();

// A JSON number at the cursor, as a double (the text is validated by skip_value first).
inline Status json_read_double(::lowbit::detail::JsonCursor* c, std::string_view text,
                               double* out) {
  const std::size_t begin = c->offset();
  LOWBIT_TRY(c->skip_value());
  std::size_t end = c->offset();
  while (end > begin && (text[end - 1] == ' ' || text[end - 1] == '\t' || text[end - 1] == '\n' ||
                         text[end - 1] == '\r'))
    --end;
  const char* first = text.data() + begin;
  const char* last = text.data() + end;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  // Locale-independent, and exact (correctly rounded).
  const std::from_chars_result r = std::from_chars(first, last, *out);
  if (r.ec == std::errc::result_out_of_range)
    return Status(Errc::kOutOfRange, "config.json: number out of the range of double",
                  static_cast<std::int64_t>(begin));
  if (r.ec != std::errc() || r.ptr != last)
    return Status(Errc::kCorrupt, "config.json: malformed number",
                  static_cast<std::int64_t>(begin));
#else
  // strtod reads the C locale's decimal point: this fallback assumes the program did not
  // change LC_NUMERIC.
  const std::string copy(first, last);
  char* stop = nullptr;
  *out = std::strtod(copy.c_str(), &stop);
  if (stop != copy.c_str() + copy.size())
    return Status(Errc::kCorrupt, "config.json: malformed number",
                  static_cast<std::int64_t>(begin));
#endif
  return {};
}

}  // namespace detail

// Reads the hyper-parameters of a Llama config.json. Required: hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, vocab_size, max_position_embeddings; optional (null
// allowed): num_key_value_heads, head_dim, rms_norm_eps, rope_theta, tie_word_embeddings. The
// model must say it is a Llama (model_type "llama", or architectures holding
// "LlamaForCausalLM"); rope_scaling must be absent or null, hidden_act absent or "silu". Unknown
// keys are skipped. Status index: byte offset in `json`.
inline Result<LlamaHyperparameters> parse_llama_config(std::string_view json) {
  using ::lowbit::detail::JsonCursor;
  using ::lowbit::detail::JsonLimits;
  using ::lowbit::detail::JsonType;
  JsonLimits limits;
  limits.max_bytes = std::size_t{1} << 24;  // a config is a few KB; 16 MB is generous
  limits.max_depth = 64;
  JsonCursor c(json, limits);
  LlamaHyperparameters h;
  std::int64_t vocab = -1, hidden = -1, ffn = -1, layers = -1, heads = -1, kv = -1, hd = -1,
               ctx = -1;
  bool is_llama = false, saw_type = false;
  LOWBIT_TRY(c.begin_object());
  std::string key, text;
  for (;;) {
    Result<bool> more = c.next_member(&key);
    if (!more) return more.status();
    if (!*more) break;
    Result<JsonType> t = c.peek();
    if (!t) return t.status();
    const std::int64_t at = static_cast<std::int64_t>(c.offset());
    std::int64_t* integer = key == "vocab_size"                ? &vocab
                            : key == "hidden_size"             ? &hidden
                            : key == "intermediate_size"       ? &ffn
                            : key == "num_hidden_layers"       ? &layers
                            : key == "num_attention_heads"     ? &heads
                            : key == "num_key_value_heads"     ? &kv
                            : key == "head_dim"                ? &hd
                            : key == "max_position_embeddings" ? &ctx
                                                               : nullptr;
    if (integer != nullptr) {
      if (*t == JsonType::kNull) {
        LOWBIT_TRY(c.read_null());
        *integer = -1;
        continue;
      }
      if (*t != JsonType::kNumber)
        return Status(Errc::kCorrupt, "config.json: a dimension is not a number", at);
      Result<std::int64_t> v = c.read_integer();
      if (!v) return v.status();
      if (*v <= 0 || *v > detail::kLlamaMaxDim)
        return Status(Errc::kInvalidArgument, "config.json: a dimension is not in 1..2^31-1", at);
      *integer = *v;
    } else if (key == "rms_norm_eps" || key == "rope_theta") {
      double* target = key == "rms_norm_eps" ? &h.rms_norm_eps : &h.rope_theta;
      if (*t == JsonType::kNull) {
        LOWBIT_TRY(c.read_null());
        continue;
      }
      if (*t != JsonType::kNumber)
        return Status(Errc::kCorrupt, "config.json: rms_norm_eps or rope_theta is not a number",
                      at);
      LOWBIT_TRY(detail::json_read_double(&c, json, target));
      if (!(*target > 0.0) || !std::isfinite(*target) ||
          *target > static_cast<double>(std::numeric_limits<float>::max()))
        return Status(Errc::kInvalidArgument,
                      "config.json: rms_norm_eps or rope_theta is not a positive float", at);
    } else if (key == "tie_word_embeddings") {
      if (*t == JsonType::kNull) {
        LOWBIT_TRY(c.read_null());
        continue;
      }
      Result<bool> b = c.read_bool();
      if (!b) return b.status();
      h.tie_word_embeddings = *b;
    } else if (key == "model_type") {
      if (*t != JsonType::kString)
        return Status(Errc::kCorrupt, "config.json: model_type is not a string", at);
      LOWBIT_TRY(c.read_string(&text));
      saw_type = true;
      if (text != "llama")
        return Status(Errc::kUnsupported, "config.json: model_type is not \"llama\"", at);
      is_llama = true;
    } else if (key == "architectures") {
      if (*t != JsonType::kArray)
        return Status(Errc::kCorrupt, "config.json: architectures is not an array", at);
      LOWBIT_TRY(c.begin_array());
      for (;;) {
        Result<bool> next = c.next_element();
        if (!next) return next.status();
        if (!*next) break;
        Result<JsonType> et = c.peek();
        if (!et) return et.status();
        if (*et != JsonType::kString) {
          LOWBIT_TRY(c.skip_value());
          continue;
        }
        LOWBIT_TRY(c.read_string(&text));
        if (text == "LlamaForCausalLM") is_llama = true;
      }
    } else if (key == "rope_scaling") {
      if (*t != JsonType::kNull)
        return Status(Errc::kUnsupported,
                      "config.json: rope_scaling is not supported (only null or absent)", at);
      LOWBIT_TRY(c.read_null());
    } else if (key == "hidden_act") {
      if (*t != JsonType::kString)
        return Status(Errc::kCorrupt, "config.json: hidden_act is not a string", at);
      LOWBIT_TRY(c.read_string(&text));
      if (text != "silu")
        return Status(Errc::kUnsupported, "config.json: hidden_act is not \"silu\"", at);
    } else {
      LOWBIT_TRY(c.skip_value());
    }
  }
  LOWBIT_TRY(c.finish());
  if (!is_llama)
    return Status(Errc::kUnsupported,
                  saw_type ? "config.json: model_type is not \"llama\""
                           : "config.json: neither model_type nor architectures names a Llama");
  if (vocab < 0 || hidden < 0 || ffn < 0 || layers < 0 || heads < 0 || ctx < 0)
    return Status(Errc::kCorrupt,
                  "config.json: vocab_size, hidden_size, intermediate_size, num_hidden_layers, "
                  "num_attention_heads or max_position_embeddings is missing");
  h.vocab_size = vocab;
  h.hidden_size = hidden;
  h.intermediate_size = ffn;
  h.num_layers = layers;
  h.num_heads = heads;
  h.num_kv_heads = kv < 0 ? heads : kv;
  h.context_length = ctx;
  if (hd < 0) {
    if (hidden % heads != 0)
      return Status(Errc::kIndivisible,
                    "config.json: hidden_size is not a multiple of num_attention_heads");
    hd = hidden / heads;
  }
  h.head_dim = hd;
  if (h.num_kv_heads > heads || heads % h.num_kv_heads != 0)
    return Status(Errc::kIndivisible,
                  "config.json: num_attention_heads is not a multiple of num_key_value_heads");
  if (hd % 2 != 0)
    return Status(Errc::kIndivisible, "config.json: head_dim is odd (rotary pairs need it even)");
  if (heads > detail::kLlamaMaxDim / hd)
    return Status(Errc::kOverflow, "config.json: num_attention_heads * head_dim overflows");
  return h;
}

// ---------------------------------------------------------------------------------------------
// Output types and rules

struct GgufOutputType {
  const char* name;  // lowercase spelling accepted by parse_gguf_output_type (ggml's, lowercased)
  GgmlType type;
  std::uint32_t file_type;  // llama.cpp's llama_ftype for a file mostly of this type
};

namespace detail {
// llama_ftype values from llama.h; K-quants map to their _S mix (a single type plus rules is
// what this tool makes, not llama-quantize's _M mixes). general.file_type is informational.
constexpr GgufOutputType kGgufOutputTypes[] = {
    {"f32", GgmlType::kF32, 0},        {"f16", GgmlType::kF16, 1},
    {"bf16", GgmlType::kBF16, 32},     {"q4_0", GgmlType::kQ4_0, 2},
    {"q4_1", GgmlType::kQ4_1, 3},      {"q5_0", GgmlType::kQ5_0, 8},
    {"q5_1", GgmlType::kQ5_1, 9},      {"q8_0", GgmlType::kQ8_0, 7},
    {"q2_k", GgmlType::kQ2_K, 10},     {"q3_k", GgmlType::kQ3_K, 11},
    {"q4_k", GgmlType::kQ4_K, 14},     {"q5_k", GgmlType::kQ5_K, 16},
    {"q6_k", GgmlType::kQ6_K, 18},     {"iq4_nl", GgmlType::kIQ4_NL, 25},
    {"iq4_xs", GgmlType::kIQ4_XS, 30}, {"tq1_0", GgmlType::kTQ1_0, 36},
    {"tq2_0", GgmlType::kTQ2_0, 37},
};

inline char ascii_lower(char ch) noexcept {
  return ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch;
}
}  // namespace detail

// The weight types this converter writes (every type lowbit::ggml quantizes, minus the
// activation-only q8_1 and q8_K).
inline const GgufOutputType* gguf_output_types(std::size_t* count) noexcept {
  *count = sizeof(detail::kGgufOutputTypes) / sizeof(detail::kGgufOutputTypes[0]);
  return detail::kGgufOutputTypes;
}

inline const GgufOutputType* find_gguf_output_type(GgmlType t) noexcept {
  for (const GgufOutputType& o : detail::kGgufOutputTypes)
    if (o.type == t) return &o;
  return nullptr;
}

// "q4_K", "Q4_K", "q4_k" -> kQ4_K. kUnsupported for any other name.
inline Result<GgmlType> parse_gguf_output_type(std::string_view name) noexcept {
  for (const GgufOutputType& o : detail::kGgufOutputTypes) {
    const std::string_view want(o.name);
    if (want.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < want.size() && same; ++i)
      same = detail::ascii_lower(name[i]) == want[i];
    if (same) return o.type;
  }
  return Status(Errc::kUnsupported, "unknown or unsupported output type");
}

// Glob over a whole name: '*' any run (also empty, also across '.'), '?' one byte, '[abc]',
// '[a-z]', '[!abc]' (or '[^abc]') one byte of / not of the set; anything else matches itself.
// Iterative with one backtrack point, so O(|pattern| * |name|) at worst.
namespace detail {
// Matches a bracket set at pattern[p] (the '[') against ch; sets *next to the byte after ']'.
// The caller validated the pattern, so the ']' exists.
inline bool glob_set(std::string_view pattern, std::size_t p, char ch, std::size_t* next) noexcept {
  std::size_t i = p + 1;
  bool negate = false;
  if (i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^')) {
    negate = true;
    ++i;
  }
  bool hit = false;
  bool first = true;
  while (i < pattern.size() && (pattern[i] != ']' || first)) {
    first = false;
    const char lo = pattern[i];
    if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
      const char hi = pattern[i + 2];
      if (static_cast<unsigned char>(ch) >= static_cast<unsigned char>(lo) &&
          static_cast<unsigned char>(ch) <= static_cast<unsigned char>(hi))
        hit = true;
      i += 3;
    } else {
      if (ch == lo) hit = true;
      ++i;
    }
  }
  *next = i + 1;
  return hit != negate;
}
}  // namespace detail

// kInvalidArgument for an empty pattern or an unterminated '['.
inline Status validate_glob(std::string_view pattern) noexcept {
  if (pattern.empty()) return Status(Errc::kInvalidArgument, "rule: empty pattern");
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '[') continue;
    std::size_t j = i + 1;
    if (j < pattern.size() && (pattern[j] == '!' || pattern[j] == '^')) ++j;
    if (j < pattern.size() && pattern[j] == ']') ++j;  // a ']' first is a member
    while (j < pattern.size() && pattern[j] != ']') ++j;
    if (j >= pattern.size())
      return Status(Errc::kInvalidArgument, "rule: '[' without a closing ']'",
                    static_cast<std::int64_t>(i));
    i = j;
  }
  return {};
}

// True when `pattern` (validated by validate_glob) matches all of `name`.
inline bool glob_match(std::string_view pattern, std::string_view name) noexcept {
  std::size_t p = 0, n = 0;
  std::size_t star_p = std::string_view::npos, star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star_p = p++;
      star_n = n;
      continue;
    }
    if (p < pattern.size()) {
      std::size_t next = p + 1;
      bool ok = false;
      if (pattern[p] == '?') {
        ok = true;
      } else if (pattern[p] == '[') {
        ok = detail::glob_set(pattern, p, name[n], &next);
      } else {
        ok = pattern[p] == name[n];
      }
      if (ok) {
        p = next;
        ++n;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p + 1;  // let the last '*' swallow one more byte
    n = ++star_n;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

struct TensorTypeRule {
  std::string pattern;  // a glob (see glob_match), matched against the GGUF and the HF name
  GgmlType type = GgmlType::kF16;
};

// "PATTERN=TYPE", split at the last '='.
inline Result<TensorTypeRule> parse_tensor_type_rule(std::string_view text) {
  const std::size_t eq = text.rfind('=');
  if (eq == std::string_view::npos)
    return Status(Errc::kInvalidArgument, "rule: expected PATTERN=TYPE");
  TensorTypeRule rule;
  rule.pattern.assign(text.data(), eq);
  LOWBIT_TRY(validate_glob(rule.pattern));
  Result<GgmlType> t = parse_gguf_output_type(text.substr(eq + 1));
  if (!t) return t.status();
  rule.type = *t;
  return rule;
}

// The type llama-quantize substitutes when `t`'s block does not divide a row (see the header).
inline GgmlType gguf_fallback_type(GgmlType t) noexcept {
  switch (t) {
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kIQ4_XS:
      return GgmlType::kIQ4_NL;
    case GgmlType::kQ4_K:
      return GgmlType::kQ5_0;
    case GgmlType::kQ5_K:
      return GgmlType::kQ5_1;
    case GgmlType::kQ6_K:
      return GgmlType::kQ8_0;
    case GgmlType::kTQ1_0:
    case GgmlType::kTQ2_0:
      return GgmlType::kQ4_0;
    default:
      return GgmlType::kF16;
  }
}

// ---------------------------------------------------------------------------------------------
// Importance matrix (llama.cpp's legacy imatrix .dat)
//
// All integers little-endian int32, floats IEEE binary32:
//   n_entries
//   n_entries times:  name_len | name (bytes) | ncall | nval | nval floats
//   optional:         last_chunk (int32), then optional dataset_len | dataset (bytes)
// Each name is a GGUF tensor name ("blk.0.attn_q.weight") and its nval values are the summed
// squared activations of that tensor's input channels, divided by ncall on loading (llama-quantize
// does the same), so they are mean squares: importance[j] for column j of every row.
// Bounded like the other readers: counts are checked against the bytes left before anything is
// reserved; names are 1..1024 bytes; values must be finite and >= 0 (kCorrupt otherwise).

struct ImportanceMatrix {
  struct Entry {
    std::string name;
    std::vector<float> values;
  };
  std::vector<Entry> entries;
  std::string dataset;

  const Entry* find(std::string_view name) const noexcept {
    for (const Entry& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }
};

inline Result<ImportanceMatrix> parse_imatrix_dat(ByteSpan bytes) {
  if (bytes.data == nullptr && bytes.size != 0)
    return Status(Errc::kInvalidArgument, "imatrix: null buffer");
  if (bytes.size >= 4 && std::memcmp(bytes.data, "GGUF", 4) == 0)
    return Status(Errc::kUnsupported,
                  "imatrix: GGUF imatrix files are not supported; use the legacy .dat format", 0);
  const std::uint8_t* p = bytes.data;
  const std::size_t n = bytes.size;
  std::size_t pos = 0;
  auto i32 = [&](std::int32_t* v, const char* message) -> Status {
    if (n - pos < 4) return Status(Errc::kTruncated, message, static_cast<std::int64_t>(pos));
    *v = static_cast<std::int32_t>(::lowbit::detail::le_load<std::uint32_t>(p + pos));
    pos += 4;
    return {};
  };
  std::int32_t count = 0;
  LOWBIT_TRY(i32(&count, "imatrix: file ends inside the entry count"));
  if (count < 0) return Status(Errc::kCorrupt, "imatrix: negative entry count", 0);
  // An entry takes at least 4 + 1 + 4 + 4 + 4 bytes: refused before anything is reserved.
  if (static_cast<std::uint64_t>(count) > (n - pos) / 17)
    return Status(Errc::kTruncated, "imatrix: more entries than the bytes left can hold", 0);
  ImportanceMatrix m;
  m.entries.reserve(static_cast<std::size_t>(count));
  for (std::int32_t e = 0; e < count; ++e) {
    ImportanceMatrix::Entry entry;
    const std::size_t at = pos;
    std::int32_t len = 0, ncall = 0, nval = 0;
    LOWBIT_TRY(i32(&len, "imatrix: file ends inside a name length"));
    if (len <= 0 || len > 1024)
      return Status(Errc::kCorrupt, "imatrix: name length not in 1..1024",
                    static_cast<std::int64_t>(at));
    if (n - pos < static_cast<std::size_t>(len))
      return Status(Errc::kTruncated, "imatrix: file ends inside a name",
                    static_cast<std::int64_t>(pos));
    entry.name.assign(reinterpret_cast<const char*>(p + pos), static_cast<std::size_t>(len));
    pos += static_cast<std::size_t>(len);
    const std::size_t ncall_at = pos;
    LOWBIT_TRY(i32(&ncall, "imatrix: file ends inside a call count"));
    if (ncall < 0)
      return Status(Errc::kCorrupt, "imatrix: negative call count",
                    static_cast<std::int64_t>(ncall_at));
    const std::size_t nval_at = pos;
    LOWBIT_TRY(i32(&nval, "imatrix: file ends inside a value count"));
    if (nval <= 0)
      return Status(Errc::kCorrupt, "imatrix: value count not positive",
                    static_cast<std::int64_t>(nval_at));
    if (static_cast<std::uint64_t>(nval) > (n - pos) / 4)
      return Status(Errc::kTruncated, "imatrix: file ends inside the values",
                    static_cast<std::int64_t>(nval_at));
    entry.values.resize(static_cast<std::size_t>(nval));
    for (std::int32_t i = 0; i < nval; ++i) {
      const std::uint32_t b = ::lowbit::detail::le_load<std::uint32_t>(p + pos);
      float v;
      std::memcpy(&v, &b, 4);
      if (!std::isfinite(v) || v < 0.0f)
        return Status(Errc::kCorrupt, "imatrix: value NaN, Inf or negative",
                      static_cast<std::int64_t>(pos));
      if (ncall > 0) v /= static_cast<float>(ncall);
      entry.values[static_cast<std::size_t>(i)] = v;
      pos += 4;
    }
    for (const ImportanceMatrix::Entry& other : m.entries)
      if (other.name == entry.name)
        return Status(Errc::kCorrupt, "imatrix: duplicate name", static_cast<std::int64_t>(at));
    m.entries.push_back(std::move(entry));
  }
  if (pos == n) return m;
  std::int32_t last_chunk = 0;
  LOWBIT_TRY(i32(&last_chunk, "imatrix: file ends inside the chunk count"));
  if (pos == n) return m;
  const std::size_t at = pos;
  std::int32_t len = 0;
  LOWBIT_TRY(i32(&len, "imatrix: file ends inside the dataset name length"));
  if (len < 0 || static_cast<std::size_t>(len) != n - pos)
    return Status(Errc::kCorrupt, "imatrix: dataset name length does not match the file end",
                  static_cast<std::int64_t>(at));
  m.dataset.assign(reinterpret_cast<const char*>(p + pos), static_cast<std::size_t>(len));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Source model

// The checkpoint: its hyper-parameters and its parsed safetensors shards. When opened from a
// directory it also owns the mapped files the shards view; keep it alive while writing.
struct LlamaSource {
  LlamaHyperparameters hparams;
  std::vector<SafetensorsFile> shards;
  std::vector<std::string> shard_names;
  // True for shards that are read-only private file mappings, whose pages the writer may hand
  // back to the kernel once converted. Never set it for memory you own.
  std::vector<bool> shard_releasable;
  std::vector<MappedFile> files;
};

// Parses config.json and each shard from bytes the caller keeps alive; shard_names label errors.
inline Result<LlamaSource> llama_source_from_buffers(std::string_view config_json,
                                                     const std::vector<ByteSpan>& shards,
                                                     std::string* context = nullptr) {
  LlamaSource s;
  Result<LlamaHyperparameters> h = parse_llama_config(config_json);
  if (!h) {
    if (context != nullptr) *context = "config.json";
    return h.status();
  }
  s.hparams = *h;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    Result<SafetensorsFile> f = parse_safetensors(shards[i]);
    if (!f) {
      if (context != nullptr) *context = "shard " + std::to_string(i);
      return f.status();
    }
    s.shards.push_back(std::move(*f));
    s.shard_names.push_back("shard " + std::to_string(i));
    s.shard_releasable.push_back(false);
  }
  return s;
}

namespace detail {

inline bool file_exists(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  std::fclose(f);
  return true;
}

// The shard file names of model.safetensors.index.json's "weight_map", each once, in order of
// first appearance. A name must be a plain file name ending in ".safetensors" (no directory
// part: the index is as untrusted as the shards).
inline Status parse_shard_index(std::string_view json, std::vector<std::string>* files) {
  using ::lowbit::detail::JsonCursor;
  using ::lowbit::detail::JsonLimits;
  using ::lowbit::detail::JsonType;
  JsonLimits limits;
  limits.max_bytes = std::size_t{1} << 26;
  limits.max_depth = 64;
  JsonCursor c(json, limits);
  LOWBIT_TRY(c.begin_object());
  std::string key, value;
  bool seen = false;
  for (;;) {
    Result<bool> more = c.next_member(&key);
    if (!more) return more.status();
    if (!*more) break;
    if (key != "weight_map") {
      LOWBIT_TRY(c.skip_value());
      continue;
    }
    const std::int64_t at = static_cast<std::int64_t>(c.offset());
    Result<JsonType> t = c.peek();
    if (!t) return t.status();
    if (*t != JsonType::kObject || seen)
      return Status(Errc::kCorrupt, "index: weight_map is not one object", at);
    seen = true;
    LOWBIT_TRY(c.begin_object());
    for (;;) {
      Result<bool> m = c.next_member(&key);
      if (!m) return m.status();
      if (!*m) break;
      const std::int64_t vat = static_cast<std::int64_t>(c.offset());
      Result<JsonType> vt = c.peek();
      if (!vt) return vt.status();
      if (*vt != JsonType::kString)
        return Status(Errc::kCorrupt, "index: a weight_map value is not a string", vat);
      LOWBIT_TRY(c.read_string(&value));
      const std::string suffix = ".safetensors";
      if (value.empty() || value[0] == '.' || value.find('/') != std::string::npos ||
          value.find('\\') != std::string::npos || value.size() <= suffix.size() ||
          value.compare(value.size() - suffix.size(), suffix.size(), suffix) != 0)
        return Status(Errc::kCorrupt,
                      "index: a shard is not a plain file name ending in .safetensors", vat);
      if (std::find(files->begin(), files->end(), value) == files->end()) files->push_back(value);
    }
  }
  LOWBIT_TRY(c.finish());
  if (!seen || files->empty())
    return Status(Errc::kCorrupt, "index: no weight_map, or an empty one");
  return {};
}

}  // namespace detail

// Opens a Hugging Face model directory: config.json, and model.safetensors.index.json's shards
// when that file exists, else model.safetensors. Every file is memory-mapped.
inline Result<LlamaSource> open_llama_model(const std::string& dir,
                                            std::string* context = nullptr) {
  const std::string base = dir.empty() ? std::string(".") : dir;
  auto path = [&](const std::string& name) { return base + "/" + name; };
  auto fail = [&](const std::string& where, Status s) -> Status {
    if (context != nullptr) *context = where;
    return s;
  };
  Result<MappedFile> config = MappedFile::open(path("config.json"));
  if (!config) return fail(path("config.json"), config.status());
  std::vector<std::string> names;
  const std::string index = path("model.safetensors.index.json");
  if (detail::file_exists(index)) {
    Result<MappedFile> idx = MappedFile::open(index);
    if (!idx) return fail(index, idx.status());
    const Status s = detail::parse_shard_index(
        std::string_view(reinterpret_cast<const char*>(idx->data()), idx->size()), &names);
    if (!s.ok()) return fail(index, s);
  } else {
    names.push_back("model.safetensors");
  }
  LlamaSource src;
  Result<LlamaHyperparameters> h = parse_llama_config(
      std::string_view(reinterpret_cast<const char*>(config->data()), config->size()));
  if (!h) return fail(path("config.json"), h.status());
  src.hparams = *h;
  for (const std::string& name : names) {
    Result<MappedFile> f = MappedFile::open(path(name));
    if (!f) return fail(path(name), f.status());
    Result<SafetensorsFile> st = parse_safetensors(f->bytes());
    if (!st) return fail(path(name), st.status());
    src.shard_releasable.push_back(f->is_mapped());
    src.files.push_back(std::move(*f));  // the mapping does not move: st's views stay valid
    src.shards.push_back(std::move(*st));
    src.shard_names.push_back(path(name));
  }
  return src;
}

// ---------------------------------------------------------------------------------------------
// Plan

// A tensor's output computed elsewhere, written instead of quantizing the source: GPTQ's or AWQ's
// values in a ggml block format, or a norm that AWQ or SmoothQuant rewrote (lowbit_quantize
// --scheme). `data` holds the whole tensor in `type` with its rows in Hugging Face order: the
// writer applies the Q/K permutation to these rows as to any others. Every row is decoded
// again and must be finite, like a quantized one. The source tensor must still exist (it gives
// the name, shape and place); its values are not read.
struct SuppliedTensor {
  std::string source_name;  // Hugging Face name, "model.layers.0.self_attn.q_proj.weight"
  GgmlType type = GgmlType::kF32;  // a 1-D tensor (a norm) must be kF32
  const std::uint8_t* data = nullptr;  // must outlive the plan and the writing
  std::size_t size = 0;                // bytes: exactly what rows × cols of `type` need
};

struct TensorPlan {
  std::string gguf_name;
  std::string source_name;
  std::size_t shard = 0;         // index into LlamaSource::shards
  std::size_t source_index = 0;  // index into that shard's tensors()
  SafetensorsDtype source_dtype = SafetensorsDtype::kF32;
  std::int64_t rows = 1;  // HF shape [rows, cols]; a 1-D tensor is one row
  std::int64_t cols = 0;
  std::uint32_t n_dims = 2;             // 1 or 2
  GgmlType requested = GgmlType::kF32;  // the default type or the matching rule's
  GgmlType type = GgmlType::kF32;       // what is written (after a fallback)
  bool fell_back = false;
  int rule = -1;                      // index of the rule that matched, -1 for none
  std::int64_t rope_heads = 0;        // > 0: Q/K row permutation over this many heads
  const float* importance = nullptr;  // cols weights from the imatrix, or nullptr
  const SuppliedTensor* supplied = nullptr;  // ConvertOptions::supplied's entry, or nullptr
  std::uint64_t source_bytes = 0;
  std::uint64_t bytes = 0;  // in the GGUF file, unpadded
};

struct ConvertOptions {
  GgmlType default_type = GgmlType::kF16;
  std::vector<TensorTypeRule> rules;                // first match wins
  std::vector<SuppliedTensor> supplied;             // override the rules, the type, the imatrix
  const ImportanceMatrix* imatrix = nullptr;        // must outlive the plan
  std::string name;                                 // general.name; not written when empty
  std::size_t chunk_bytes = std::size_t{16} << 20;  // fp32 staging per chunk
};

struct ConvertPlan {
  LlamaHyperparameters hparams;
  GgmlType default_type = GgmlType::kF16;
  // general.file_type's type: default_type, or with supplied matrices the type most of their
  // elements have (a --scheme file of f32 embeddings and q4_K linears is a q4_K file).
  GgmlType file_type = GgmlType::kF16;
  std::string name;
  std::vector<TensorPlan> tensors;
  std::size_t chunk_bytes = 0;
  std::uint64_t source_bytes = 0;   // tensor bytes read
  std::uint64_t output_bytes = 0;   // the whole GGUF file
  std::size_t fallbacks = 0;        // tensors written in a fallback type
  std::size_t with_importance = 0;  // tensors quantized with an imatrix row
  std::size_t supplied = 0;         // tensors written from ConvertOptions::supplied
};

namespace detail {

enum class LlamaRole : std::uint8_t { kEmbed, kOutputNorm, kOutput, kLayer };

// Parses "model.layers.<N>.<rest>"; false when `name` does not start that way.
inline bool split_layer_name(std::string_view name, std::int64_t* layer, std::string_view* rest) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  std::size_t i = kPrefix.size();
  std::int64_t v = 0;
  const std::size_t digits_at = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
    if (v > (kLlamaMaxDim - 9) / 10) return false;
    v = v * 10 + (name[i] - '0');
    ++i;
  }
  if (i == digits_at || i >= name.size() || name[i] != '.') return false;
  if (i - digits_at > 1 && name[digits_at] == '0') return false;  // "01" is not a layer number
  *layer = v;
  *rest = name.substr(i + 1);
  return true;
}

struct LayerPart {
  const char* hf;    // after "model.layers.N."
  const char* gguf;  // after "blk.N."
};
// clang-format off
constexpr LayerPart kLayerParts[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    // Optional biases (attention_bias / mlp_bias models); llama.cpp's llama graph reads them.
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"mlp.gate_proj.bias", "ffn_gate.bias"},
    {"mlp.up_proj.bias", "ffn_up.bias"},
    {"mlp.down_proj.bias", "ffn_down.bias"},
};
// clang-format on
constexpr std::size_t kRequiredLayerParts = 9;  // the weights; the biases are optional

// Expected HF shape of layer part k (rank 1 or 2) for hyper-parameters h.
inline void layer_part_shape(std::size_t k, const LlamaHyperparameters& h, std::int64_t* shape,
                             std::size_t* rank) {
  const std::int64_t q = h.num_heads * h.head_dim, kv = h.num_kv_heads * h.head_dim;
  const std::int64_t d = h.hidden_size, f = h.intermediate_size;
  const std::int64_t table[][3] = {
      {1, d, 0}, {2, q, d}, {2, kv, d}, {2, kv, d}, {2, d, q}, {1, d, 0}, {2, f, d}, {2, f, d},
      {2, d, f}, {1, q, 0}, {1, kv, 0}, {1, kv, 0}, {1, d, 0}, {1, f, 0}, {1, f, 0}, {1, d, 0},
  };
  *rank = static_cast<std::size_t>(table[k][0]);
  shape[0] = table[k][1];
  shape[1] = table[k][2];
}

}  // namespace detail

// Builds the conversion plan: every tensor of `src` mapped, shape-checked against the
// hyper-parameters, typed, sized; then the size of the whole GGUF file. Nothing is read but
// headers. `context` receives the name of the tensor (or rule) at fault.
inline Result<ConvertPlan> plan_llama_gguf(const LlamaSource& src, const ConvertOptions& options,
                                           std::string* context = nullptr);

namespace detail {

// The GPT-2 printable character for byte b (its bytes_to_unicode table): printable Latin-1
// bytes stand for themselves, the other 68 (controls, space, DEL, NBSP, soft hyphen) are moved
// to U+0100 and up, in byte order, so every token is a visible, whitespace-free string.
inline std::string gpt2_byte_token(int b) {
  auto printable = [](int v) {
    return (v >= 33 && v <= 126) || (v >= 161 && v <= 172) || (v >= 174 && v <= 255);
  };
  int cp = b;
  if (!printable(b)) {
    int shifted = 0;
    for (int v = 0; v < b; ++v)
      if (!printable(v)) ++shifted;
    cp = 256 + shifted;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {  // all code points here are below 0x800
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// Every key-value pair and tensor description of `plan` into `w`.
inline Status build_gguf_writer(const ConvertPlan& plan, GgufWriter* w) {
  const LlamaHyperparameters& h = plan.hparams;
  auto u32 = [](std::int64_t v) { return GgufValue::u32(static_cast<std::uint32_t>(v)); };
  LOWBIT_TRY(w->add("general.architecture", GgufValue::string("llama")));
  if (!plan.name.empty()) LOWBIT_TRY(w->add("general.name", GgufValue::string(plan.name)));
  LOWBIT_TRY(w->add("llama.vocab_size", u32(h.vocab_size)));
  LOWBIT_TRY(w->add("llama.context_length", u32(h.context_length)));
  LOWBIT_TRY(w->add("llama.embedding_length", u32(h.hidden_size)));
  LOWBIT_TRY(w->add("llama.block_count", u32(h.num_layers)));
  LOWBIT_TRY(w->add("llama.feed_forward_length", u32(h.intermediate_size)));
  LOWBIT_TRY(w->add("llama.attention.head_count", u32(h.num_heads)));
  LOWBIT_TRY(w->add("llama.attention.head_count_kv", u32(h.num_kv_heads)));
  LOWBIT_TRY(w->add("llama.attention.key_length", u32(h.head_dim)));
  LOWBIT_TRY(w->add("llama.attention.value_length", u32(h.head_dim)));
  LOWBIT_TRY(w->add("llama.rope.dimension_count", u32(h.head_dim)));
  LOWBIT_TRY(w->add("llama.rope.freq_base", GgufValue::f32(static_cast<float>(h.rope_theta))));
  LOWBIT_TRY(w->add("llama.attention.layer_norm_rms_epsilon",
                    GgufValue::f32(static_cast<float>(h.rms_norm_eps))));
  const GgufOutputType* ft = find_gguf_output_type(plan.file_type);
  LOWBIT_TRY(w->add("general.file_type", GgufValue::u32(ft != nullptr ? ft->file_type : 0)));
  LOWBIT_TRY(w->add("general.quantization_version", GgufValue::u32(2)));
  if (h.vocab_size == 256) {
    LOWBIT_TRY(w->add("tokenizer.ggml.model", GgufValue::string("gpt2")));
    LOWBIT_TRY(w->add("tokenizer.ggml.pre", GgufValue::string("default")));
    std::vector<std::string> pieces;
    pieces.reserve(256);
    for (int b = 0; b < 256; ++b) pieces.push_back(gpt2_byte_token(b));
    GgufArrayBuilder tokens(GgufType::kString), types(GgufType::kI32), merges(GgufType::kString);
    for (int b = 0; b < 256; ++b) {
      LOWBIT_TRY(tokens.push(GgufValue::string(pieces[static_cast<std::size_t>(b)])));
      LOWBIT_TRY(types.push(GgufValue::i32(1)));  // LLAMA_TOKEN_TYPE_NORMAL
    }
    LOWBIT_TRY(w->add("tokenizer.ggml.tokens", tokens.value()));
    LOWBIT_TRY(w->add("tokenizer.ggml.token_type", types.value()));
    LOWBIT_TRY(w->add("tokenizer.ggml.merges", merges.value()));
    LOWBIT_TRY(w->add("tokenizer.ggml.add_bos_token", GgufValue::boolean(false)));
    LOWBIT_TRY(w->add("tokenizer.ggml.add_eos_token", GgufValue::boolean(false)));
  } else {
    LOWBIT_TRY(w->add("tokenizer.ggml.model", GgufValue::string("none")));
  }
  for (const TensorPlan& t : plan.tensors) {
    const std::int64_t ne[2] = {t.cols, t.rows};
    LOWBIT_TRY(w->add_tensor(t.gguf_name, static_cast<std::uint32_t>(t.type), ne, t.n_dims));
  }
  return {};
}

}  // namespace detail

inline Result<ConvertPlan> plan_llama_gguf(const LlamaSource& src, const ConvertOptions& options,
                                           std::string* context) {
  auto fail = [&](const std::string& where, Status s) -> Status {
    if (context != nullptr) *context = where;
    return s;
  };
  const LlamaHyperparameters& h = src.hparams;
  if (find_gguf_output_type(options.default_type) == nullptr)
    return fail("--type", Status(Errc::kUnsupported, "unsupported output type"));
  for (std::size_t r = 0; r < options.rules.size(); ++r) {
    const Status s = validate_glob(options.rules[r].pattern);
    if (!s.ok()) return fail(options.rules[r].pattern, s);
    if (find_gguf_output_type(options.rules[r].type) == nullptr)
      return fail(options.rules[r].pattern, Status(Errc::kUnsupported, "unsupported output type"));
  }
  for (const SuppliedTensor& t : options.supplied) {
    if (find_gguf_output_type(t.type) == nullptr)
      return fail(t.source_name, Status(Errc::kUnsupported, "supplied tensor: unsupported type"));
    if (t.data == nullptr)
      return fail(t.source_name, Status(Errc::kInvalidArgument, "supplied tensor: null data"));
  }
  ConvertPlan plan;
  plan.hparams = h;
  plan.default_type = options.default_type;
  plan.name = options.name;
  plan.chunk_bytes = std::max<std::size_t>(options.chunk_bytes, 4096);

  // Slots in GGUF order: token_embd, the layers part by part, output_norm, output.
  const std::size_t parts = sizeof(detail::kLayerParts) / sizeof(detail::kLayerParts[0]);
  const std::size_t n_layers = static_cast<std::size_t>(h.num_layers);
  if (n_layers > (std::numeric_limits<std::size_t>::max() - 3) / parts)
    return fail("config.json", Status(Errc::kOverflow, "too many layers"));
  const std::size_t n_slots = 1 + n_layers * parts + 2;
  std::vector<TensorPlan> slots(n_slots);
  std::vector<bool> filled(n_slots, false);

  for (std::size_t s = 0; s < src.shards.size(); ++s) {
    const std::vector<SafetensorsTensor>& tensors = src.shards[s].tensors();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const SafetensorsTensor& t = tensors[i];
      const std::string_view name = t.name;
      constexpr std::string_view kInvFreq = "rotary_emb.inv_freq";
      if (name.size() >= kInvFreq.size() && name.substr(name.size() - kInvFreq.size()) == kInvFreq)
        continue;  // convert_hf_to_gguf.py skips these buffers too
      std::size_t slot = 0;
      std::string gguf;
      std::int64_t want[2] = {0, 0};
      std::size_t rank = 0;
      std::int64_t rope_heads = 0;
      std::int64_t layer = 0;
      std::string_view rest;
      if (name == "model.embed_tokens.weight") {
        slot = 0;
        gguf = "token_embd.weight";
        rank = 2;
        want[0] = h.vocab_size;
        want[1] = h.hidden_size;
      } else if (name == "model.norm.weight") {
        slot = n_slots - 2;
        gguf = "output_norm.weight";
        rank = 1;
        want[0] = h.hidden_size;
      } else if (name == "lm_head.weight") {
        slot = n_slots - 1;
        gguf = "output.weight";
        rank = 2;
        want[0] = h.vocab_size;
        want[1] = h.hidden_size;
      } else if (detail::split_layer_name(name, &layer, &rest)) {
        if (layer >= h.num_layers)
          return fail(t.name,
                      Status(Errc::kShapeMismatch, "tensor of a layer past num_hidden_layers"));
        std::size_t k = 0;
        while (k < parts && rest != detail::kLayerParts[k].hf) ++k;
        if (k == parts)
          return fail(t.name,
                      Status(Errc::kUnsupported, "tensor name not in the llama architecture"));
        slot = 1 + static_cast<std::size_t>(layer) * parts + k;
        gguf = "blk." + std::to_string(layer) + "." + detail::kLayerParts[k].gguf;
        detail::layer_part_shape(k, h, want, &rank);
        const std::string_view part(detail::kLayerParts[k].hf);
        if (part.substr(0, 16) == "self_attn.q_proj") rope_heads = h.num_heads;
        if (part.substr(0, 16) == "self_attn.k_proj") rope_heads = h.num_kv_heads;
      } else {
        return fail(t.name,
                    Status(Errc::kUnsupported, "tensor name not in the llama architecture"));
      }
      if (filled[slot])
        return fail(t.name, Status(Errc::kCorrupt, "tensor given twice (in two shards)"));
      if (t.shape.size() != rank || t.shape[0] != want[0] || (rank == 2 && t.shape[1] != want[1]))
        return fail(t.name, Status(Errc::kShapeMismatch, "tensor shape contradicts config.json"));
      if (t.dtype != SafetensorsDtype::kF32 && t.dtype != SafetensorsDtype::kF16 &&
          t.dtype != SafetensorsDtype::kBF16)
        return fail(t.name, Status(Errc::kUnsupported, "tensor dtype is not F32, F16 or BF16"));
      TensorPlan p;
      p.gguf_name = std::move(gguf);
      p.source_name = t.name;
      p.shard = s;
      p.source_index = i;
      p.source_dtype = t.dtype;
      p.n_dims = static_cast<std::uint32_t>(rank);
      p.rows = rank == 2 ? want[0] : 1;
      p.cols = rank == 2 ? want[1] : want[0];
      p.rope_heads = rope_heads;
      p.source_bytes = t.data.size;
      slots[slot] = std::move(p);
      filled[slot] = true;
    }
  }

  // Completeness: the embedding, the final norm, every layer's weights; lm_head unless tied.
  if (!filled[0])
    return fail("model.embed_tokens.weight", Status(Errc::kCorrupt, "tensor missing"));
  if (!filled[n_slots - 2])
    return fail("model.norm.weight", Status(Errc::kCorrupt, "tensor missing"));
  if (!filled[n_slots - 1] && !h.tie_word_embeddings)
    return fail("lm_head.weight",
                Status(Errc::kCorrupt, "tensor missing (and tie_word_embeddings is false)"));
  for (std::size_t l = 0; l < n_layers; ++l)
    for (std::size_t k = 0; k < detail::kRequiredLayerParts; ++k)
      if (!filled[1 + l * parts + k])
        return fail("model.layers." + std::to_string(l) + "." + detail::kLayerParts[k].hf,
                    Status(Errc::kCorrupt, "tensor missing"));

  for (std::size_t slot = 0; slot < n_slots; ++slot) {
    if (!filled[slot]) continue;
    TensorPlan& p = slots[slot];
    for (const SuppliedTensor& t : options.supplied)
      if (t.source_name == p.source_name) p.supplied = &t;
    if (p.supplied != nullptr) {
      const GgmlType type = p.supplied->type;
      if (p.n_dims == 1 && (type != GgmlType::kF32 || p.rope_heads > 0))
        return fail(p.source_name, Status(Errc::kUnsupported,
                                          "supplied tensor: a 1-D tensor must be f32, and not a "
                                          "Q/K bias (its elements are permuted)"));
      if (p.cols % ggml_type_info(type)->block_size != 0)
        return fail(p.source_name, Status(Errc::kShapeMismatch,
                                          "supplied tensor: row not a multiple of the type's block"));
      p.requested = p.type = type;
      ++plan.supplied;
    } else if (p.n_dims == 1) {
      p.requested = p.type = GgmlType::kF32;
    } else {
      p.requested = options.default_type;
      for (std::size_t r = 0; r < options.rules.size(); ++r) {
        if (glob_match(options.rules[r].pattern, p.gguf_name) ||
            glob_match(options.rules[r].pattern, p.source_name)) {
          p.requested = options.rules[r].type;
          p.rule = static_cast<int>(r);
          break;
        }
      }
      p.type = p.requested;
      const GgmlTypeInfo* info = ggml_type_info(p.type);
      if (p.cols % info->block_size != 0) {
        p.type = gguf_fallback_type(p.type);
        if (p.cols % ggml_type_info(p.type)->block_size != 0) p.type = GgmlType::kF16;
        p.fell_back = true;
        ++plan.fallbacks;
      }
      if (options.imatrix != nullptr && p.type != GgmlType::kF32) {
        const ImportanceMatrix::Entry* e = options.imatrix->find(p.gguf_name);
        if (e != nullptr) {
          if (static_cast<std::int64_t>(e->values.size()) != p.cols)
            return fail(p.gguf_name,
                        Status(Errc::kShapeMismatch,
                               "imatrix entry length differs from the tensor's row length"));
          p.importance = e->values.data();
          ++plan.with_importance;
        }
      }
    }
    const std::int64_t ne[2] = {p.cols, p.rows};
    const Result<GgmlTensorSize> size =
        ggml_tensor_size(static_cast<std::uint32_t>(p.type), ne, p.n_dims);
    if (!size) return fail(p.gguf_name, size.status());
    p.bytes = size->bytes;
    if (p.supplied != nullptr && p.supplied->size != p.bytes)
      return fail(p.source_name, Status(Errc::kShapeMismatch,
                                        "supplied tensor: byte count differs from its shape and type",
                                        static_cast<std::int64_t>(p.bytes)));
    plan.source_bytes += p.source_bytes;
    plan.tensors.push_back(std::move(p));
  }

  plan.file_type = plan.default_type;
  if (plan.supplied != 0) {
    std::vector<std::pair<GgmlType, std::int64_t>> elements;  // per type, of supplied matrices
    for (const TensorPlan& p : plan.tensors) {
      if (p.supplied == nullptr || p.n_dims != 2) continue;
      std::size_t i = 0;
      while (i < elements.size() && elements[i].first != p.type) ++i;
      if (i == elements.size()) elements.push_back({p.type, 0});
      elements[i].second += p.rows * p.cols;
    }
    std::int64_t most = 0;
    for (const auto& e : elements)
      if (e.second > most) {
        most = e.second;
        plan.file_type = e.first;
      }
  }
  if (plan.supplied != options.supplied.size()) {  // a name twice, or not in the model
    for (std::size_t i = 0; i < options.supplied.size(); ++i) {
      bool used = false;
      for (const TensorPlan& p : plan.tensors) used = used || p.supplied == &options.supplied[i];
      if (!used)
        return fail(options.supplied[i].source_name,
                    Status(Errc::kInvalidArgument,
                           "supplied tensor: not in the model, or supplied twice"));
    }
  }

  GgufWriter w;
  const Status s = detail::build_gguf_writer(plan, &w);
  if (!s.ok()) return fail("gguf metadata", s);
  plan.output_bytes = w.total_bytes();
  return plan;
}

// ---------------------------------------------------------------------------------------------
// Writing

struct ConvertProgress {
  std::size_t index = 0;  // of the tensor just written
  std::size_t count = 0;
  const TensorPlan* tensor = nullptr;
  std::uint64_t bytes_written = 0;  // file bytes so far
};
using ConvertProgressFn = void (*)(const ConvertProgress& progress, void* user);

namespace detail {

// Row `src_row` of a tensor of `cols` columns as fp32 (little-endian input, any alignment).
inline void widen_row(const std::uint8_t* data, SafetensorsDtype dtype, std::int64_t cols,
                      std::int64_t src_row, float* out) {
  const std::size_t count = static_cast<std::size_t>(cols);
  if (dtype == SafetensorsDtype::kF32) {
    const std::uint8_t* p = data + static_cast<std::size_t>(src_row) * count * 4;
    for (std::size_t j = 0; j < count; ++j) {
      const std::uint32_t b = ::lowbit::detail::le_load<std::uint32_t>(p + 4 * j);
      std::memcpy(out + j, &b, 4);
    }
  } else {
    const std::uint8_t* p = data + static_cast<std::size_t>(src_row) * count * 2;
    for (std::size_t j = 0; j < count; ++j) {
      const std::uint16_t b = ::lowbit::detail::le_load<std::uint16_t>(p + 2 * j);
      out[j] = dtype == SafetensorsDtype::kF16 ? to_float(Half{b}) : to_float(BFloat16{b});
    }
  }
}

// The HF row that becomes GGUF row r of a Q/K projection with `heads` heads (see the header);
// for a Q/K bias, the element.
inline std::int64_t rope_source_row(std::int64_t r, std::int64_t rows, std::int64_t heads) {
  const std::int64_t d = rows / heads, half = d / 2;
  const std::int64_t head = r / d, j = r % d;
  return head * d + (j % 2) * half + j / 2;
}

// ggml's block formats keep their scales in fp16: values (or importance weights) large enough
// to overflow them quantize, in ggml as here, to Inf/NaN blocks. Each quantized row is therefore
// decoded again and must come back finite, or the tensor is refused with kOutOfRange: a GGUF from
// this tool never holds a non-finite weight. (Costs one dequantization per row.)
template <class Block>
Status quantize_block_rows(const float* x, std::int64_t rows, std::int64_t cols, std::uint8_t* out,
                           const float* importance, std::vector<float>* scratch) {
  using Traits = ::lowbit::ggml::FormatTraits<Block>;
  const std::size_t row_bytes = static_cast<std::size_t>(cols / Traits::kBlockSize) * sizeof(Block);
  scratch->resize(static_cast<std::size_t>(cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    Block* y = reinterpret_cast<Block*>(out + static_cast<std::size_t>(r) * row_bytes);
    Status s = Traits::quantize(x + r * cols, cols, y, importance);
    if (s.ok()) s = Traits::dequantize(y, cols, scratch->data());
    if (!s.ok())
      return Status(s.code(), s.message(), s.index() < 0 ? s.index() : r * cols + s.index());
    for (std::int64_t i = 0; i < cols; ++i)
      if (!std::isfinite((*scratch)[static_cast<std::size_t>(i)]))
        return Status(Errc::kOutOfRange,
                      "quantized value not finite: weights or importance too large for the "
                      "type's fp16 scales",
                      r * cols + i);
  }
  return {};
}

// Calls f(Block{}) with the block struct of `type` (Half and BFloat16 for f16 and bf16), for every
// output type but f32.
template <class F>
Status with_output_block(GgmlType type, F&& f) {
  namespace g = ::lowbit::ggml;
  switch (type) {
    case GgmlType::kF16: return f(Half{});
    case GgmlType::kBF16: return f(BFloat16{});
    case GgmlType::kQ4_0: return f(g::BlockQ4_0{});
    case GgmlType::kQ4_1: return f(g::BlockQ4_1{});
    case GgmlType::kQ5_0: return f(g::BlockQ5_0{});
    case GgmlType::kQ5_1: return f(g::BlockQ5_1{});
    case GgmlType::kQ8_0: return f(g::BlockQ8_0{});
    case GgmlType::kQ2_K: return f(g::BlockQ2_K{});
    case GgmlType::kQ3_K: return f(g::BlockQ3_K{});
    case GgmlType::kQ4_K: return f(g::BlockQ4_K{});
    case GgmlType::kQ5_K: return f(g::BlockQ5_K{});
    case GgmlType::kQ6_K: return f(g::BlockQ6_K{});
    case GgmlType::kIQ4_NL: return f(g::BlockIQ4_NL{});
    case GgmlType::kIQ4_XS: return f(g::BlockIQ4_XS{});
    case GgmlType::kTQ1_0: return f(g::BlockTQ1_0{});
    case GgmlType::kTQ2_0: return f(g::BlockTQ2_0{});
    default: return Status(Errc::kUnsupported, "unsupported output type");
  }
}

inline Status check_finite(const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return Status(Errc::kNonFinite, "input is NaN or Inf", i);
  return {};
}

// rows x cols floats into `type`'s row-major blocks; Status index: element within the chunk.
inline Status quantize_rows_as(GgmlType type, const float* x, std::int64_t rows, std::int64_t cols,
                               std::uint8_t* out, const float* importance,
                               std::vector<float>* scratch) {
  if (type == GgmlType::kF32) {
    LOWBIT_TRY(check_finite(x, rows * cols));
    std::memcpy(out, x, static_cast<std::size_t>(rows * cols) * sizeof(float));
    return {};
  }
  return with_output_block(type, [&](auto block) {
    return quantize_block_rows<decltype(block)>(x, rows, cols, out, importance, scratch);
  });
}

inline std::size_t row_bytes_of(GgmlType type, std::int64_t cols) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  return static_cast<std::size_t>(cols / info->block_size * info->block_bytes);
}

// Supplied rows of `type` (ConvertOptions::supplied), decoded and checked like quantized ones.
inline Status check_rows_as(GgmlType type, const std::uint8_t* data, std::int64_t rows,
                            std::int64_t cols, std::vector<float>* scratch) {
  scratch->resize(static_cast<std::size_t>(cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint8_t* row = data + static_cast<std::size_t>(r) * row_bytes_of(type, cols);
    Status s;
    if (type == GgmlType::kF32) {
      std::memcpy(scratch->data(), row, static_cast<std::size_t>(cols) * sizeof(float));
    } else {
      s = with_output_block(type, [&](auto block) {
        using Block = decltype(block);
        // Copied into typed storage: the caller's bytes need not be aligned for the block.
        std::vector<Block> blocks(static_cast<std::size_t>(row_bytes_of(type, cols)) / sizeof(Block));
        std::memcpy(blocks.data(), row, blocks.size() * sizeof(Block));
        return ::lowbit::ggml::FormatTraits<Block>::dequantize(blocks.data(), cols, scratch->data());
      });
    }
    if (s.ok() && !check_finite(scratch->data(), cols).ok())
      s = Status(Errc::kNonFinite, "supplied tensor decodes to NaN or Inf",
                 check_finite(scratch->data(), cols).index());
    if (!s.ok()) return Status(s.code(), s.message(), r * cols + std::max<std::int64_t>(s.index(), 0));
  }
  return {};
}

// Hands the whole pages of [p, p + n) back to the kernel (a private read-only file mapping
// re-reads them from the file on the next touch). A no-op elsewhere.
inline void release_pages(const std::uint8_t* p, std::size_t n) noexcept {
#if LOWBIT_IO_CAN_RELEASE_PAGES
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (page_size <= 0 || n == 0) return;
  const std::uintptr_t page = static_cast<std::uintptr_t>(page_size);
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(p) / page * page;
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(p) + n) / page * page;
  if (end > begin)
    (void)::madvise(reinterpret_cast<void*>(begin), static_cast<std::size_t>(end - begin),
                    MADV_DONTNEED);
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace detail

// Writes the planned GGUF to `sink`: the header, then each tensor chunk by chunk. `progress`
// (may be null) is called after each tensor. On error `context` names the tensor.
template <class Sink>
Status write_llama_gguf(const LlamaSource& src, const ConvertPlan& plan, Sink& sink,
                        ConvertProgressFn progress = nullptr, void* user = nullptr,
                        std::string* context = nullptr) {
  auto fail = [&](const std::string& where, Status s) -> Status {
    if (context != nullptr) *context = where;
    return s;
  };
  GgufWriter w;
  Status s = detail::build_gguf_writer(plan, &w);
  if (!s.ok()) return fail("gguf metadata", s);
  s = w.write_header(sink);
  if (!s.ok()) return fail("gguf header", s);
  std::uint64_t written = w.header_bytes();
  std::vector<float> staging, permute_tmp, scratch;
  std::vector<std::uint8_t> out;
  for (std::size_t k = 0; k < plan.tensors.size(); ++k) {
    const TensorPlan& t = plan.tensors[k];
    // The plan must describe this source (same shard, name and size), or nothing is read.
    if (t.shard >= src.shards.size() || t.source_index >= src.shards[t.shard].tensors().size())
      return fail(t.gguf_name, Status(Errc::kInvalidArgument, "plan does not match the source"));
    const SafetensorsTensor& st = src.shards[t.shard].tensors()[t.source_index];
    const std::int64_t width = st.dtype == SafetensorsDtype::kF32 ? 4 : 2;
    if (st.name != t.source_name || st.dtype != t.source_dtype ||
        st.data.size != static_cast<std::uint64_t>(t.rows * t.cols * width))
      return fail(t.gguf_name, Status(Errc::kInvalidArgument, "plan does not match the source"));
    const std::size_t row_bytes = detail::row_bytes_of(t.type, t.cols);
    // Chunk rows: as many as fit chunk_bytes of fp32, a whole number of heads for Q/K.
    const std::int64_t unit = t.n_dims == 2 && t.rope_heads > 0 ? t.rows / t.rope_heads : 1;
    std::int64_t chunk = static_cast<std::int64_t>(plan.chunk_bytes / sizeof(float)) /
                         std::max<std::int64_t>(t.cols, 1);
    chunk = std::max<std::int64_t>(chunk / unit, 1) * unit;
    chunk = std::min(chunk, t.rows);
    staging.resize(std::max(staging.size(), static_cast<std::size_t>(chunk * t.cols)));
    out.resize(std::max(out.size(), static_cast<std::size_t>(chunk) * row_bytes));
    const std::size_t src_row_bytes = static_cast<std::size_t>(t.cols * width);
    for (std::int64_t r0 = 0; r0 < t.rows; r0 += chunk) {
      const std::int64_t n = std::min(chunk, t.rows - r0);
      if (t.supplied != nullptr) {
        // Rows computed elsewhere, in Hugging Face order: copied with the Q/K permutation.
        for (std::int64_t r = r0; r < r0 + n; ++r) {
          const std::int64_t from =
              t.rope_heads > 0 ? detail::rope_source_row(r, t.rows, t.rope_heads) : r;
          std::memcpy(out.data() + static_cast<std::size_t>(r - r0) * row_bytes,
                      t.supplied->data + static_cast<std::size_t>(from) * row_bytes, row_bytes);
        }
        s = detail::check_rows_as(t.type, out.data(), n, t.cols, &scratch);
      } else {
        if (t.n_dims == 1 && t.rope_heads > 0) {
          // A Q/K bias: the permutation acts on its elements.
          permute_tmp.resize(static_cast<std::size_t>(t.cols));
          detail::widen_row(st.data.data, st.dtype, t.cols, 0, permute_tmp.data());
          for (std::int64_t j = 0; j < t.cols; ++j)
            staging[static_cast<std::size_t>(j)] = permute_tmp[static_cast<std::size_t>(
                detail::rope_source_row(j, t.cols, t.rope_heads))];
        } else {
          for (std::int64_t r = r0; r < r0 + n; ++r) {
            const std::int64_t from =
                t.rope_heads > 0 ? detail::rope_source_row(r, t.rows, t.rope_heads) : r;
            detail::widen_row(st.data.data, st.dtype, t.cols, from,
                              staging.data() + static_cast<std::size_t>((r - r0) * t.cols));
          }
        }
        s = detail::quantize_rows_as(t.type, staging.data(), n, t.cols, out.data(), t.importance,
                                     &scratch);
      }
      if (!s.ok())
        return fail(t.gguf_name, Status(s.code(), s.message(),
                                        s.index() < 0 ? s.index() : r0 * t.cols + s.index()));
      s = w.write_tensor_data(sink, out.data(), static_cast<std::size_t>(n) * row_bytes);
      if (!s.ok()) return fail(t.gguf_name, s);
      // The chunk's source rows are exactly rows [r0, r0 + n) (Q/K permute within heads).
      if (src.shard_releasable.size() > t.shard && src.shard_releasable[t.shard])
        detail::release_pages(st.data.data + static_cast<std::size_t>(r0) * src_row_bytes,
                              static_cast<std::size_t>(n) * src_row_bytes);
    }
    written += (t.bytes + w.alignment() - 1) / w.alignment() * w.alignment();
    if (progress != nullptr) {
      ConvertProgress pr;
      pr.index = k;
      pr.count = plan.tensors.size();
      pr.tensor = &t;
      pr.bytes_written = written;
      progress(pr, user);
    }
  }
  s = w.finish();
  if (!s.ok()) return fail("gguf data", s);
  return {};
}

// write_llama_gguf into `path`: written to path + ".part", flushed, then renamed over `path`;
// the partial file is removed on any error. kIo when the file cannot be written.
inline Status write_llama_gguf_file(const LlamaSource& src, const ConvertPlan& plan,
                                    const std::string& path, ConvertProgressFn progress = nullptr,
                                    void* user = nullptr, std::string* context = nullptr) {
  const std::string part = path + ".part";
  std::FILE* f = std::fopen(part.c_str(), "wb");
  if (f == nullptr) {
    if (context != nullptr) *context = part;
    return Status(Errc::kIo, "cannot open the output file for writing");
  }
  std::vector<char> buffer(std::size_t{1} << 20);
  std::setvbuf(f, buffer.data(), _IOFBF, buffer.size());
  FileSink sink{f};
  Status s = write_llama_gguf(src, plan, sink, progress, user, context);
  const bool flushed = std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  if (s.ok() && (!flushed || !closed)) {
    if (context != nullptr) *context = part;
    s = Status(Errc::kIo, "writing the output file failed");
  }
  if (s.ok() && std::rename(part.c_str(), path.c_str()) != 0) {
    if (context != nullptr) *context = path;
    s = Status(Errc::kIo, "cannot rename the finished output file into place");
  }
  if (!s.ok()) std::remove(part.c_str());
  return s;
}

}  // namespace io
}  // namespace lowbit
