// lowbit/kv_cache.hpp: a quantized key/value cache for attention, after KIVI (Liu et al., 2024,
// "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache").
//
// What it offers. QuantizedKvCache holds the keys and values of every (layer, kv head) of one
// sequence in 8, 4 or 2 bits, keeps the most recent tokens in fp32, and hands attention an fp32
// [length, head_dim] copy of any prefix (dequantize()). bytes() is the memory really held: packed
// codes, fp16 scales and minima, and the fp32 window.
//
// Why keys and values are grouped differently (KIVI, section 3). Keys carry a few outlier
// *channels* whose magnitude is large for every token; a scale shared along a token would be set by
// those channels and crush the rest, so keys get one scale per channel, shared by G consecutive
// tokens. Values have no such channels, and attention mixes them *per token* (output = Σ_j p_j
// v_j), so the error of one token's value stays in that token: values get one scale per token (per
// `value_group` channels of it). Both use asymmetric min-max over their group:
//
//   m = min(x over the group),  M = max(x over the group),  n = 2^bits - 1
//   s = (M - m) / n,   q = round_half_even((x - m) / s) clamped to [0, n],   x̂ = q·s + m
//
// so |x - x̂| <= s/2 for every element (the rounding error; the clamp never bites, see below).
//
// Why a full-precision window. Per-channel key groups need G tokens before their min/max exist,
// and the most recent tokens get the most attention, so they stay exact: a token is stored in fp32
// until it is both older than the R most recent tokens (R a multiple of G) and part of a complete
// group of G tokens; then the G tokens of that group are quantized together (keys per channel
// across the G tokens, values per token). After every flush a stream of length L holds
//
//   quantized = G·floor(max(L - R, 0) / G) tokens,   fp32 = L - quantized,  R <= fp32 < R + G
//
// (fp32 = L while L < R + G). R = 0 keeps only the incomplete group in fp32.
//
// Scale and minimum are stored as IEEE fp16 (2 bytes each, as KIVI keeps them), with directed
// rounding so that the bound above holds for the *stored* parameters: m_h is the largest half
// <= m, and s_h the smallest half >= (M - m_h)/n (computed in double). Then every x of the group
// satisfies 0 <= x - m_h <= n·s_h, so (x - m_h)/s_h never leaves [0, n] and |x - x̂| <= s_h/2,
// up to the one float rounding of x̂ = q·s_h + m_h (q·s_h itself is exact: 11 + 8 significant
// bits). fp16 caps magnitudes: a finite key or value with |x| > 65504 is kOutOfRange. A group
// whose values are all equal to a half has s_h = 0 and is stored exactly (all codes 0).
//
// Non-finite input (KvQuantConfig::non_finite). kReject (the default): append() returns
// kNonFinite and writes nothing. kPoisonGroup: the token is accepted, stays as-is in the fp32
// window, and when its group is quantized exactly the quantization groups that contain it (its key
// channel across the G tokens; its value's channel group of that token) get NaN scale and minimum,
// so those elements, and no others, dequantize to NaN; Inf also becomes NaN (an affine code cannot
// hold it). Attention in fp32 propagates a NaN key the same way, so a model can keep its fp32
// behaviour.
//
// Layout. Streams are indexed [layer][kv_head]; each holds its quantized groups back to back in
// one byte vector and its fp32 window as two [tokens, head_dim] row-major float vectors. One
// quantized group of G tokens (hd = head_dim, vg = value_group, cb = ceil(G·hd·bits/8)):
//
//   offset                       size           contents
//   0                            cb             key codes,   index t·hd + c (token t of the group,
//                                                            channel c), packed as below
//   cb                           cb             value codes, same index
//   2·cb                         4·hd           key params: KvScaleMin per channel c
//   2·cb + 4·hd                  4·G·(hd/vg)    value params: KvScaleMin per (token t, channel
//                                                            group j), index t·(hd/vg) + j
//
//   KvScaleMin (4 bytes, host byte order, memcpy'd: the block has no alignment):
//     +----------------+----------------+
//     | scale   (fp16) | minimum (fp16) |      x̂ = code · scale + minimum
//     +----------------+----------------+
//
//   codes: the little-endian bit stream of format/packed.hpp (code i in bits [i·b, (i+1)·b) of
//   the stream, bit k in bit k%8 of byte k/8). For b = 2, byte j holds codes 4j..4j+3:
//     bit  7 6 | 5 4 | 3 2 | 1 0
//         c4j+3 c4j+2 c4j+1 c4j
//
// Appending and flushing. append() copies tokens into the fp32 window and, with KvFlush::kNow,
// quantizes every group that has become ready. KvFlush::kDefer leaves them in fp32 until flush():
// an engine appends the keys of the tokens it is processing, runs attention over them in fp32 (as
// KIVI's prefill does), and flushes once the step has succeeded; until then truncate() can still
// drop them, because only fp32 tokens can be dropped (a quantized group cannot be taken back).
// Memory: storage for `capacity` tokens of codes and for R + G tokens of fp32 window is reserved
// at creation; a deferred append longer than the window grows the window until the next flush.
//
// Every function that takes data returns a Status; each checks everything before writing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "lowbit/format/packed.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// What append() does with NaN or Inf in a key or value; see the header comment.
enum class KvNonFinite : std::uint8_t { kReject, kPoisonGroup };
// Whether append() quantizes the groups it completes at once, or leaves that to flush().
enum class KvFlush : std::uint8_t { kNow, kDefer };

// The parameters of a QuantizedKvCache. Defaults: 4 bits, G = 32, one value scale per token,
// R = 128, non-finite input rejected.
struct KvQuantConfig {
  int bits = 4;                    // 2, 4 or 8
  std::int64_t group_tokens = 32;  // G: tokens sharing one key scale per channel
  std::int64_t value_group = 0;    // channels sharing one value scale per token; 0 = head_dim
  std::int64_t residual = 128;     // R: the most recent R tokens (at least) stay fp32
  KvNonFinite non_finite = KvNonFinite::kReject;

  static constexpr std::int64_t kMaxGroupTokens = std::int64_t{1} << 16;
  static constexpr std::int64_t kMaxResidual = std::int64_t{1} << 24;
  static constexpr std::int64_t kMaxHeadDim = std::int64_t{1} << 16;

  // Checks the parameters for heads of `head_dim` channels:
  //   kUnsupported      bits in 1..8 but not 2, 4 or 8;
  //   kInvalidArgument  other bits, G outside [1, 2^16], R outside [0, 2^24], head_dim outside
  //                     [1, 2^16], value_group < 0, non_finite not an enumerator;
  //   kIndivisible      R not a multiple of G, value_group not dividing head_dim.
  Status validate(std::int64_t head_dim) const noexcept {
    if (bits >= 1 && bits <= 8 && bits != 2 && bits != 4 && bits != 8)
      return {Errc::kUnsupported, "kv cache: bits must be 2, 4 or 8", bits};
    if (bits != 2 && bits != 4 && bits != 8)
      return {Errc::kInvalidArgument, "kv cache: bits must be 2, 4 or 8", bits};
    if (group_tokens < 1 || group_tokens > kMaxGroupTokens)
      return {Errc::kInvalidArgument, "kv cache: group_tokens outside [1, 2^16]", group_tokens};
    if (residual < 0 || residual > kMaxResidual)
      return {Errc::kInvalidArgument, "kv cache: residual outside [0, 2^24]", residual};
    if (residual % group_tokens != 0)
      return {Errc::kIndivisible, "kv cache: residual is not a multiple of group_tokens", residual};
    if (head_dim < 1 || head_dim > kMaxHeadDim)
      return {Errc::kInvalidArgument, "kv cache: head_dim outside [1, 2^16]", head_dim};
    if (value_group < 0)
      return {Errc::kInvalidArgument, "kv cache: negative value_group", value_group};
    if (value_group != 0 && head_dim % value_group != 0)
      return {Errc::kIndivisible, "kv cache: value_group does not divide head_dim", value_group};
    if (non_finite != KvNonFinite::kReject && non_finite != KvNonFinite::kPoisonGroup)
      return {Errc::kInvalidArgument, "kv cache: unknown non_finite policy"};
    return {};
  }
};

// One stored (scale, minimum) pair; see the layout in the header comment.
struct KvScaleMin {
  Half scale;
  Half minimum;
};
static_assert(sizeof(Half) == 2, "Half must be 2 bytes");
static_assert(sizeof(KvScaleMin) == 4, "KvScaleMin must be 4 bytes: it is a storage format");

// Where one stream (layer, kv head) stands.
struct KvStreamInfo {
  std::int64_t length = 0;     // tokens appended (positions 0 .. length-1)
  std::int64_t quantized = 0;  // positions 0 .. quantized-1 are in quantized groups
};

namespace detail {

constexpr float kHalfMax = 65504.0f;

// The largest half <= v, for finite v with |v| <= 65504.
inline Half half_at_most(float v) noexcept {
  Half h = to_half(v);
  if (to_float(h) > v) {
    // One step toward -inf: a larger magnitude for negative halves (bits + 1, which also takes -0
    // to the smallest negative subnormal), a smaller one for positive halves (v >= 0 here, so h
    // is not +0).
    h.bits = static_cast<std::uint16_t>((h.bits & 0x8000u) ? h.bits + 1u : h.bits - 1u);
  }
  return h;
}

// The smallest half >= v, for 0 <= v <= 65504 (so the result is finite).
inline Half half_at_least(double v) noexcept {
  Half h = to_half(static_cast<float>(v));
  if (h.bits & 0x8000u) h.bits = 0;  // -0 from a tiny float: use +0, then step up if needed
  while (static_cast<double>(to_float(h)) < v) h.bits = static_cast<std::uint16_t>(h.bits + 1u);
  return h;
}

// The stored parameters of one quantization group of finite values in [lo, hi].
inline KvScaleMin kivi_params(float lo, float hi, int max_code) noexcept {
  KvScaleMin p;
  p.minimum = half_at_most(lo);
  const double span = static_cast<double>(hi) - static_cast<double>(to_float(p.minimum));
  p.scale = half_at_least(span / max_code);
  return p;
}

// round_half_even((x - m)/s) clamped to [0, max_code], in double; 0 when s = 0.
inline std::uint8_t kivi_code(float x, float scale, float minimum, int max_code) noexcept {
  if (!(scale > 0)) return 0;
  const double r = (static_cast<double>(x) - static_cast<double>(minimum)) / scale;
  double q = std::floor(r);
  const double frac = r - q;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(q, 2.0) != 0.0)) q += 1.0;  // ties to even
  if (q < 0) q = 0;
  if (q > max_code) q = max_code;
  return static_cast<std::uint8_t>(q);
}

inline KvScaleMin poisoned_params() noexcept {
  return KvScaleMin{Half{0x7E00u}, Half{0x7E00u}};  // quiet NaN, NaN: every x̂ = q·NaN + NaN
}

// Code i of a bit stream of b-bit codes, b in {2, 4, 8} (b divides 8: no code straddles bytes).
inline unsigned code_at(const std::uint8_t* codes, std::int64_t i, int bits) noexcept {
  const std::int64_t bit = i * bits;
  return (static_cast<unsigned>(codes[bit >> 3]) >> (bit & 7)) & ((1u << bits) - 1u);
}

}  // namespace detail

class QuantizedKvCache {
 public:
  static constexpr std::int64_t kMaxDim = std::int64_t{1} << 20;

  QuantizedKvCache() = default;

  // A cache for `layers` x `kv_heads` streams of heads with `head_dim` channels, each up to
  // `capacity` tokens. kInvalidArgument for sizes outside [1, 2^20] (head_dim: [1, 2^16]), the
  // config's own errors (KvQuantConfig::validate), kOverflow when the reserved storage would pass
  // 2^40 bytes.
  static Result<QuantizedKvCache> create(std::int64_t layers, std::int64_t kv_heads,
                                         std::int64_t head_dim, std::int64_t capacity,
                                         const KvQuantConfig& config) {
    for (std::int64_t v : {layers, kv_heads, capacity})
      if (v < 1 || v > kMaxDim)
        return Status(Errc::kInvalidArgument, "kv cache: a size is outside [1, 2^20]", v);
    LOWBIT_TRY(config.validate(head_dim));
    QuantizedKvCache c;
    c.layers_ = layers;
    c.kv_heads_ = kv_heads;
    c.head_dim_ = head_dim;
    c.capacity_ = capacity;
    c.config_ = config;
    c.value_group_ = config.value_group == 0 ? head_dim : config.value_group;
    const std::int64_t g = config.group_tokens;
    c.code_bytes_ = packed_bytes(config.bits, g * head_dim);  // g·hd <= 2^32: no overflow
    c.group_bytes_ =
        2 * c.code_bytes_ +
        static_cast<std::size_t>(head_dim + g * (head_dim / c.value_group_)) * sizeof(KvScaleMin);
    // Reserved bytes per stream: the codes of every complete group that fits, and the window.
    const std::int64_t window = std::min(capacity, config.residual + g);
    const double per_stream =
        static_cast<double>(capacity / g) * static_cast<double>(c.group_bytes_) +
        2.0 * static_cast<double>(window * head_dim) * sizeof(float);
    if (per_stream * static_cast<double>(layers * kv_heads) > 1099511627776.0)
      return Status(Errc::kOverflow, "kv cache: more than 2^40 bytes of storage", capacity);
    c.streams_.resize(static_cast<std::size_t>(layers * kv_heads));
    for (Stream& s : c.streams_) {
      s.groups.reserve(static_cast<std::size_t>(capacity / g) * c.group_bytes_);
      s.keys.reserve(static_cast<std::size_t>(window * head_dim));
      s.values.reserve(static_cast<std::size_t>(window * head_dim));
    }
    c.codes_.resize(static_cast<std::size_t>(g * head_dim));
    return c;
  }

  std::int64_t layers() const noexcept { return layers_; }
  std::int64_t kv_heads() const noexcept { return kv_heads_; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t capacity() const noexcept { return capacity_; }
  const KvQuantConfig& config() const noexcept { return config_; }
  // Bytes of one quantized group of G tokens: codes, key and value parameters.
  std::size_t group_bytes() const noexcept { return group_bytes_; }

  // Memory held by the data: quantized groups plus fp32 window, over every stream.
  std::size_t bytes() const noexcept {
    std::size_t n = 0;
    for (const Stream& s : streams_)
      n += s.groups.size() + (s.keys.size() + s.values.size()) * sizeof(float);
    return n;
  }
  // Memory allocated (vector capacities), at least bytes().
  std::size_t reserved_bytes() const noexcept {
    std::size_t n = 0;
    for (const Stream& s : streams_)
      n += s.groups.capacity() + (s.keys.capacity() + s.values.capacity()) * sizeof(float);
    return n;
  }

  // kInvalidArgument for a layer or head outside the cache.
  Result<KvStreamInfo> info(std::int64_t layer, std::int64_t head) const noexcept {
    LOWBIT_TRY(check_stream(layer, head));
    const Stream& s = stream(layer, head);
    return KvStreamInfo{s.quantized + fp_tokens(s), s.quantized};
  }

  // Appends n tokens to stream (layer, head): keys and values are [n, head_dim] views (any
  // strides). n = 0 is a no-op. Errors, checked before anything is written:
  //   kInvalidArgument  layer or head outside the cache, a bad view (tensor_view.hpp);
  //   kShapeMismatch    a view without head_dim columns, or keys and values with different rows;
  //   kOutOfRange       the stream would pass `capacity` tokens (index: that length), or a finite
  //                     |x| > 65504 (index: flat position in the view; the message says which);
  //   kNonFinite        NaN or Inf under KvNonFinite::kReject (index as above).
  Status append(std::int64_t layer, std::int64_t head, MatrixView<const float> keys,
                MatrixView<const float> values, KvFlush flush = KvFlush::kNow) {
    LOWBIT_TRY(check_stream(layer, head));
    LOWBIT_TRY(check_rows(keys, values, head_dim_));
    Stream& s = stream(layer, head);
    LOWBIT_TRY(check_room(s, keys.rows()));
    for (std::int64_t t = 0; t < keys.rows(); ++t) push_row(s, keys, values, t, 0);
    if (flush == KvFlush::kNow) return flush_stream(s);
    return {};
  }

  // Appends n tokens to every kv head of `layer`: keys and values are [n, kv_heads·head_dim],
  // head h in columns [h·head_dim, (h+1)·head_dim) (the layout of a k_proj output). Errors as
  // append(), checked for every head before any is written; index = flat position in the view.
  Status append_layer(std::int64_t layer, MatrixView<const float> keys,
                      MatrixView<const float> values, KvFlush flush = KvFlush::kNow) {
    LOWBIT_TRY(check_stream(layer, 0));
    LOWBIT_TRY(check_rows(keys, values, kv_heads_ * head_dim_));
    for (std::int64_t h = 0; h < kv_heads_; ++h)
      LOWBIT_TRY(check_room(stream(layer, h), keys.rows()));
    for (std::int64_t h = 0; h < kv_heads_; ++h) {
      Stream& s = stream(layer, h);
      for (std::int64_t t = 0; t < keys.rows(); ++t) push_row(s, keys, values, t, h * head_dim_);
      if (flush == KvFlush::kNow) LOWBIT_TRY(flush_stream(s));
    }
    return {};
  }

  // Quantizes the groups of stream (layer, head) that are ready (complete and older than the
  // window). kInvalidArgument for a stream outside the cache.
  Status flush(std::int64_t layer, std::int64_t head) {
    LOWBIT_TRY(check_stream(layer, head));
    return flush_stream(stream(layer, head));
  }
  // flush() of every stream.
  Status flush_all() {
    for (Stream& s : streams_) LOWBIT_TRY(flush_stream(s));
    return {};
  }

  // Drops positions >= length from stream (layer, head). kInvalidArgument for a stream outside
  // the cache; kOutOfRange when length > the stream's length or < its quantized length (quantized
  // groups cannot be taken back into fp32).
  Status truncate(std::int64_t layer, std::int64_t head, std::int64_t length) {
    LOWBIT_TRY(check_stream(layer, head));
    Stream& s = stream(layer, head);
    if (length < s.quantized || length > s.quantized + fp_tokens(s))
      return Status(Errc::kOutOfRange,
                    "kv cache: truncate below the quantized tokens or past the end", length);
    resize_fp(s, length - s.quantized);
    return {};
  }
  // Drops positions >= length from every stream (shorter streams are left alone); kOutOfRange,
  // before anything changes, when length < 0 or a stream has quantized positions >= length.
  Status truncate_all(std::int64_t length) {
    if (length < 0) return Status(Errc::kOutOfRange, "kv cache: negative length", length);
    for (const Stream& s : streams_)
      if (s.quantized > length)
        return Status(Errc::kOutOfRange, "kv cache: truncate below the quantized tokens", length);
    for (Stream& s : streams_)
      if (s.quantized + fp_tokens(s) > length) resize_fp(s, length - s.quantized);
    return {};
  }

  // Empties every stream (storage stays reserved).
  void clear() noexcept {
    for (Stream& s : streams_) {
      s.groups.clear();
      s.keys.clear();
      s.values.clear();
      s.quantized = 0;
    }
  }

  // Writes positions 0 .. count-1 of stream (layer, head) in fp32 to keys_out and values_out,
  // [count, head_dim] views: quantized groups dequantized (x̂ = q·s + m), window tokens copied.
  // kInvalidArgument for a stream outside the cache or a bad view, kOutOfRange for count < 0 or
  // past the stream's length, kShapeMismatch for views that are not [count, head_dim].
  Status dequantize(std::int64_t layer, std::int64_t head, std::int64_t count,
                    MatrixView<float> keys_out, MatrixView<float> values_out) const {
    LOWBIT_TRY(check_stream(layer, head));
    const Stream& s = stream(layer, head);
    if (count < 0 || count > s.quantized + fp_tokens(s))
      return Status(Errc::kOutOfRange, "kv cache: dequantize past the stream's length", count);
    LOWBIT_TRY(keys_out.validate());
    LOWBIT_TRY(values_out.validate());
    if (keys_out.rows() != count || keys_out.cols() != head_dim_ ||
        !same_shape(keys_out, values_out))
      return Status(Errc::kShapeMismatch, "kv cache: output views are not [count, head_dim]");
    const std::int64_t g_tokens = config_.group_tokens, hd = head_dim_;
    const std::int64_t vgroups = hd / value_group_;
    const int bits = config_.bits;
    const std::int64_t from_groups = std::min(count, s.quantized);
    for (std::int64_t g = 0; g * g_tokens < from_groups; ++g) {
      const std::uint8_t* block = s.groups.data() + static_cast<std::size_t>(g) * group_bytes_;
      const std::uint8_t* kcodes = block;
      const std::uint8_t* vcodes = block + code_bytes_;
      const std::uint8_t* kparams = block + 2 * code_bytes_;
      const std::uint8_t* vparams = kparams + static_cast<std::size_t>(hd) * sizeof(KvScaleMin);
      const std::int64_t rows = std::min(g_tokens, from_groups - g * g_tokens);
      for (std::int64_t t = 0; t < rows; ++t) {
        const std::int64_t row = g * g_tokens + t;
        for (std::int64_t c = 0; c < hd; ++c) {
          const KvScaleMin p = load_params(kparams, c);
          keys_out(row, c) = decode(detail::code_at(kcodes, t * hd + c, bits), p);
        }
        for (std::int64_t j = 0; j < vgroups; ++j) {
          const KvScaleMin p = load_params(vparams, t * vgroups + j);
          for (std::int64_t c = j * value_group_; c < (j + 1) * value_group_; ++c)
            values_out(row, c) = decode(detail::code_at(vcodes, t * hd + c, bits), p);
        }
      }
    }
    for (std::int64_t row = from_groups; row < count; ++row) {
      const std::size_t at = static_cast<std::size_t>((row - s.quantized) * hd);
      for (std::int64_t c = 0; c < hd; ++c) {
        keys_out(row, c) = s.keys[at + static_cast<std::size_t>(c)];
        values_out(row, c) = s.values[at + static_cast<std::size_t>(c)];
      }
    }
    return {};
  }

 private:
  struct Stream {
    std::vector<std::uint8_t> groups;  // [quantized / G][group_bytes]
    std::vector<float> keys, values;   // fp32 window, [tokens, head_dim] row-major
    std::int64_t quantized = 0;
  };

  Stream& stream(std::int64_t layer, std::int64_t head) noexcept {
    return streams_[static_cast<std::size_t>(layer * kv_heads_ + head)];
  }
  const Stream& stream(std::int64_t layer, std::int64_t head) const noexcept {
    return streams_[static_cast<std::size_t>(layer * kv_heads_ + head)];
  }
  std::int64_t fp_tokens(const Stream& s) const noexcept {
    return static_cast<std::int64_t>(s.keys.size()) / head_dim_;
  }
  void resize_fp(Stream& s, std::int64_t tokens) {
    s.keys.resize(static_cast<std::size_t>(tokens * head_dim_));
    s.values.resize(static_cast<std::size_t>(tokens * head_dim_));
  }

  Status check_stream(std::int64_t layer, std::int64_t head) const noexcept {
    if (streams_.empty()) return {Errc::kInvalidArgument, "kv cache: not created"};
    if (layer < 0 || layer >= layers_)
      return {Errc::kInvalidArgument, "kv cache: layer outside the cache", layer};
    if (head < 0 || head >= kv_heads_)
      return {Errc::kInvalidArgument, "kv cache: kv head outside the cache", head};
    return {};
  }

  Status check_rows(const MatrixView<const float>& keys, const MatrixView<const float>& values,
                    std::int64_t cols) const noexcept {
    LOWBIT_TRY(keys.validate());
    LOWBIT_TRY(values.validate());
    if (keys.cols() != cols || !same_shape(keys, values))
      return {Errc::kShapeMismatch, "kv cache: keys and values must both be [tokens, head width]"};
    LOWBIT_TRY(check_values(keys, "kv cache: a key is NaN or Inf",
                            "kv cache: a key's magnitude exceeds 65504 (fp16 scale and minimum)"));
    LOWBIT_TRY(
        check_values(values, "kv cache: a value is NaN or Inf",
                     "kv cache: a value's magnitude exceeds 65504 (fp16 scale and minimum)"));
    return {};
  }

  Status check_values(const MatrixView<const float>& x, const char* non_finite,
                      const char* too_large) const noexcept {
    for (std::int64_t r = 0; r < x.rows(); ++r)
      for (std::int64_t c = 0; c < x.cols(); ++c) {
        const float v = x(r, c);
        if (!std::isfinite(v)) {
          if (config_.non_finite == KvNonFinite::kReject)
            return {Errc::kNonFinite, non_finite, r * x.cols() + c};
        } else if (std::fabs(v) > detail::kHalfMax) {
          return {Errc::kOutOfRange, too_large, r * x.cols() + c};
        }
      }
    return {};
  }

  Status check_room(const Stream& s, std::int64_t n) const noexcept {
    const std::int64_t length = s.quantized + fp_tokens(s);
    if (n > capacity_ - length)
      return {Errc::kOutOfRange, "kv cache: the stream is full", length + n};
    return {};
  }

  void push_row(Stream& s, const MatrixView<const float>& keys,
                const MatrixView<const float>& values, std::int64_t t, std::int64_t col0) {
    for (std::int64_t c = 0; c < head_dim_; ++c) s.keys.push_back(keys(t, col0 + c));
    for (std::int64_t c = 0; c < head_dim_; ++c) s.values.push_back(values(t, col0 + c));
  }

  static KvScaleMin load_params(const std::uint8_t* params, std::int64_t i) noexcept {
    KvScaleMin p;
    std::memcpy(&p, params + static_cast<std::size_t>(i) * sizeof(KvScaleMin), sizeof p);
    return p;
  }
  static void store_params(std::uint8_t* params, std::int64_t i, KvScaleMin p) noexcept {
    std::memcpy(params + static_cast<std::size_t>(i) * sizeof(KvScaleMin), &p, sizeof p);
  }
  // q·s is exact in float (<= 8 + 11 significant bits), so a fused multiply-add gives the same.
  static float decode(unsigned code, KvScaleMin p) noexcept {
    return static_cast<float>(code) * to_float(p.scale) + to_float(p.minimum);
  }

  // Quantizes the ready groups: while the window holds at least R + G tokens, its oldest G.
  Status flush_stream(Stream& s) {
    const std::int64_t g_tokens = config_.group_tokens, hd = head_dim_;
    const std::int64_t ready = (fp_tokens(s) - config_.residual) / g_tokens;  // may be negative
    if (ready <= 0) return {};
    for (std::int64_t g = 0; g < ready; ++g) {
      const std::size_t at = s.groups.size();
      s.groups.resize(at + group_bytes_);
      LOWBIT_TRY(quantize_group(s.keys.data() + g * g_tokens * hd,
                                s.values.data() + g * g_tokens * hd, s.groups.data() + at));
    }
    const std::size_t done = static_cast<std::size_t>(ready * g_tokens * hd);
    s.keys.erase(s.keys.begin(), s.keys.begin() + static_cast<std::ptrdiff_t>(done));
    s.values.erase(s.values.begin(), s.values.begin() + static_cast<std::ptrdiff_t>(done));
    s.quantized += ready * g_tokens;
    return {};
  }

  // One group: keys [G, hd] and values [G, hd], row-major, into `block` (group_bytes_).
  Status quantize_group(const float* keys, const float* values, std::uint8_t* block) {
    const std::int64_t g_tokens = config_.group_tokens, hd = head_dim_;
    const std::int64_t vgroups = hd / value_group_;
    const int max_code = (1 << config_.bits) - 1;
    std::uint8_t* kparams = block + 2 * code_bytes_;
    std::uint8_t* vparams = kparams + static_cast<std::size_t>(hd) * sizeof(KvScaleMin);
    std::uint8_t* codes = codes_.data();
    // Keys: one (scale, minimum) per channel c over the G tokens.
    for (std::int64_t c = 0; c < hd; ++c) {
      const KvScaleMin p = group_params(keys + c, g_tokens, hd, max_code);
      store_params(kparams, c, p);
      for (std::int64_t t = 0; t < g_tokens; ++t)
        codes[t * hd + c] = code_of(keys[t * hd + c], p, max_code);
    }
    LOWBIT_TRY(pack_codes(config_.bits, codes, g_tokens * hd, block, code_bytes_));
    // Values: one (scale, minimum) per token t and channel group j.
    for (std::int64_t t = 0; t < g_tokens; ++t)
      for (std::int64_t j = 0; j < vgroups; ++j) {
        const float* x = values + t * hd + j * value_group_;
        const KvScaleMin p = group_params(x, value_group_, 1, max_code);
        store_params(vparams, t * vgroups + j, p);
        for (std::int64_t c = 0; c < value_group_; ++c)
          codes[t * hd + j * value_group_ + c] = code_of(x[c], p, max_code);
      }
    return pack_codes(config_.bits, codes, g_tokens * hd, block + code_bytes_, code_bytes_);
  }

  // Parameters of the n values x[0], x[stride], ...; NaN ones when any is non-finite (only
  // reachable under kPoisonGroup: kReject refused them in append()).
  static KvScaleMin group_params(const float* x, std::int64_t n, std::int64_t stride,
                                 int max_code) noexcept {
    float lo = x[0], hi = x[0];
    for (std::int64_t i = 0; i < n; ++i) {
      const float v = x[i * stride];
      if (!std::isfinite(v)) return detail::poisoned_params();
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    return detail::kivi_params(lo, hi, max_code);
  }
  static std::uint8_t code_of(float x, KvScaleMin p, int max_code) noexcept {
    const float scale = to_float(p.scale);
    if (std::isnan(scale)) return 0;  // a poisoned group: the code is never meaningful
    return detail::kivi_code(x, scale, to_float(p.minimum), max_code);
  }

  std::int64_t layers_ = 0, kv_heads_ = 0, head_dim_ = 0, capacity_ = 0, value_group_ = 0;
  KvQuantConfig config_;
  std::size_t code_bytes_ = 0, group_bytes_ = 0;
  std::vector<Stream> streams_;      // [layer * kv_heads + head]
  std::vector<std::uint8_t> codes_;  // [G * head_dim] one code per byte, before packing
};

}  // namespace lowbit
