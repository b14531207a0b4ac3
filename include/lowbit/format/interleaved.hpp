// lowbit/format/interleaved.hpp: weights repacked once, at load time, into the layout the
// int8-activation GEMM kernels (lowbit/gemm.hpp) stream best. Files keep their own formats; this
// is an in-memory form, built from ggml Q4_0, Q4_1, IQ4_NL, Q8_0, Q4_K blocks or from lowbit's 4-
// and 8-bit packed matrices, and never written to disk.
//
// The math. Every source format is, per output row r and 32-wide block of K, an affine map of a
// small integer code c (the "stored code"):
//
//   zero-point form   w = d · (v(c) − z)        Q4_0, Q8_0, IQ4_NL, lowbit 4/8-bit
//   min form          w = d · c + m             Q4_1, Q4_K
//
// with v(c) = c, except IQ4_NL where v(c) = kIq4NlValues[c] (a 16-entry int8 table). With the
// activations quantized per 32-block as x ≈ dx · qx (int8 codes, sx = Σ qx; see
// lowbit/gemm.hpp), one block contributes
//
//   Σ w·x ≈ d·dx · (Σ v(c)·qx − z·sx)           (zero-point form: one exact int32, one scale)
//   Σ w·x ≈ d·dx · Σ c·qx + m · (dx·sx)          (min form)
//
// so the kernels multiply small integers and touch floats once per block. The codes are chosen
// so that one operand of the hardware dot product is unsigned where that is free:
//
//   source                    stored code c             v(c)        z per block
//   Q4_0                      q ∈ [0, 15]               c           8 (implicit)
//   lowbit 4-bit symmetric    q + 8 ∈ [0, 15]           c           8 (implicit)
//   lowbit 4-bit asymmetric   q ∈ [0, 15]               c           the group's zero point
//   Q4_1                      q ∈ [0, 15]               c           (min form: m = the fp16 min)
//   Q4_K                      q ∈ [0, 15]               c           (min form: d = d·sc_j and
//                                                                    m = −(dmin·m_j), float32)
//   IQ4_NL                    index ∈ [0, 15]           table[c]    0 (implicit)
//   Q8_0, lowbit 8-bit sym.   q ∈ [−128, 127] (int8)    c           0 (implicit)
//   lowbit 8-bit asymmetric   q − 128 (int8)            c           zero point − 128
//
// The weight each element stands for, weight(r, k), is computed exactly as the source format's
// own dequantizer does (ggml's to_float, lowbit's float(q − zp) · scale), bit for bit.
//
// Q4_K. A 256-value super-block holds fp16 d and dmin and, per 32-value sub-block j, a 6-bit
// scale sc_j and a 6-bit min m_j; ggml decodes q as (d·sc_j)·q − (dmin·m_j), both products rounded
// to float32 first. Those products are exact (an 11-bit significand times a 6-bit integer fits
// float32's 24 bits) but not fp16-representable, so each sub-block becomes one k-block with a
// FLOAT32 scale d·sc_j and a float32 min −(dmin·m_j): the min form with float parameters, and
// c·(d·sc_j) + (−(dmin·m_j)) is ggml's subtraction exactly (IEEE defines a − b as a + (−b)). This
// costs 4 + 64/32 = 6 bits per weight instead of Q4_K's 4.5: the price of keeping the kernels'
// one-scale-per-32-block contract instead of a two-level scale.
//
// Layout. Rows are taken 16 at a time ("row blocks"; the last one is padded with code 0 and scale
// 0) and K 32 at a time ("k-blocks"), k-block b holding elements 32b .. 32b+31. The unit of the
// kernels is a 4-byte chunk: chunk j of a k-block is its elements 4j .. 4j+3, the operand of one
// vpdpbusd / pmaddubsw+pmaddwd / sdot lane. A 64-byte vector holds one chunk for all 16 rows, so
// a 32-bit lane is a row and one broadcast activation chunk feeds 16 rows:
//
//   64-byte vector:  | row 0: 4 bytes | row 1: 4 bytes | ...... | row 15: 4 bytes |
//                      lane 0           lane 1                   lane 15
//   AVX2 and AVX-VNNI read it as two ymm (rows 0-7, 8-15), AVX-512 as one zmm, NEON as four q.
//
//   4-bit codes (Q4_0, Q4_1, IQ4_NL, lowbit 4-bit), 256 bytes per row block and k-block:
//     vector v = 0..3 (bytes 64v .. 64v+63), byte 4·r + i:
//       low nibble  = code of row r, element 4v + i        (chunk v)
//       high nibble = code of row r, element 16 + 4v + i   (chunk v + 4)
//     so one load, a mask and a shift give two chunks for 16 rows (ggml's split-nibble order:
//     element j and element j + 16 share a byte).
//   8-bit codes (Q8_0, lowbit 8-bit), 512 bytes per row block and k-block:
//     vector j = 0..7, byte 4·r + i = code of row r, element 4j + i (int8).
//
//   sections (each starting at a 64-byte boundary of one allocation):
//     codes    [row block][k-block][256 or 512 bytes]
//     scales   [row block][group][16 rows]  fp16 (ggml sources: their own fp16 d, so the prepared
//              size stays the format's size) or float32 (lowbit sources: their float32 scales)
//     offsets  [row block][group][16 rows]  int8 zero points (lowbit asymmetric) or the scale
//              type's min (Q4_1: fp16, Q4_K: float32); absent when z is implicit
//   A group is `group_size` = 32 · n consecutive elements of K sharing one scale (32 for ggml;
//   lowbit's group, or K for per-row and per-tensor scales).
//
//   bits per weight (16-row blocks, K = 4096): Q4_0 4.5, Q4_1 5.0, IQ4_NL 4.5, Q8_0 8.5,
//   lowbit 4-bit g128 asymmetric 4 + 32/128 + 8/128 = 4.31 — each the source's own size up to the
//   width of the zero point (8 bits here instead of 4) and the row padding; Q4_K 6.0 (see above).
//
// Errors (before anything is allocated): kInvalidArgument for null data or non-positive shapes,
// kIndivisible when K is not a multiple of 32 (of 256 for Q4_K), kUnsupported for other widths
// (lowbit 1-3, 5-7 bits), per-column scales or groups that are not a multiple of 32, kNonFinite
// for a NaN or Inf scale or min (index: the flat block, super-block or parameter index),
// kOutOfRange for a zero point outside the code range, kOverflow when the sizes overflow.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "lowbit/format/ggml/iq4.hpp"
#include "lowbit/format/ggml/k_quants.hpp"
#include "lowbit/format/ggml/legacy.hpp"
#include "lowbit/format/packed_matrix.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/quantized_tensor.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// What a stored code is.
enum class InterleavedCodes : std::uint8_t {
  kUnsigned4 = 0,   // v(c) = c ∈ [0, 15]
  kNonLinear4 = 1,  // v(c) = ggml::kIq4NlValues[c], c ∈ [0, 15]
  kSigned8 = 2,     // v(c) = c ∈ [−128, 127]
};
enum class InterleavedScale : std::uint8_t { kHalf = 0, kFloat = 1 };
// How the block's offset is given.
enum class InterleavedOffset : std::uint8_t {
  kImplicit = 0,   // z = 8 for kUnsigned4, 0 otherwise
  kZeroPoint = 1,  // z per row and group, int8
  kMin = 2,        // min form w = d·c + m, m per row and group in the scale type
};
// Where the weights came from; decides the exact dequantization formula.
enum class InterleavedSource : std::uint8_t {
  kGgmlQ4_0,
  kGgmlQ4_1,
  kGgmlIQ4_NL,
  kGgmlQ8_0,
  kLowbit,
  kGgmlQ4_K,  // after kLowbit: the existing values keep their numbers
};

inline constexpr std::int64_t kInterleaveRows = 16;   // rows per row block: one 64-byte vector
inline constexpr std::int64_t kInterleaveBlock = 32;  // K per k-block: one activation block

class InterleavedWeights;

namespace detail {
namespace interleave {

constexpr std::size_t kAlign = 64;
struct Writer;

constexpr std::int64_t block_bytes(InterleavedCodes codes) noexcept {
  return codes == InterleavedCodes::kSigned8 ? 512 : 256;
}

// Byte offset, within one row block and k-block, of element e (0..31) of row r (0..15), and
// whether it is the high nibble (4-bit codes).
struct CodePlace {
  std::int64_t byte;
  bool high;
};
constexpr CodePlace code_place(InterleavedCodes codes, std::int64_t r, std::int64_t e) noexcept {
  if (codes == InterleavedCodes::kSigned8) return {64 * (e / 4) + 4 * r + e % 4, false};
  const std::int64_t low = e % 16;
  return {64 * (low / 4) + 4 * r + low % 4, e >= 16};
}

// a·b ≤ limit, decided without overflow, for non-negative operands.
inline bool fits(std::int64_t a, std::int64_t b, std::int64_t limit) noexcept {
  return a == 0 || b <= limit / a;
}

// What a builder knows before it fills the codes.
struct Shape {
  InterleavedSource source;
  InterleavedCodes codes;
  InterleavedScale scale;
  InterleavedOffset offset;
  std::int64_t rows, cols, group_size;
  const char* name;
};

template <class Fill>
Result<InterleavedWeights> build(const Shape& shape, Fill&& fill);

}  // namespace interleave
}  // namespace detail

class InterleavedWeights {
 public:
  InterleavedWeights() = default;
  // Move-only: the allocation is aligned by an offset into it, which a copy would break, and a
  // layer's weights are too large to copy by accident.
  InterleavedWeights(const InterleavedWeights&) = delete;
  InterleavedWeights& operator=(const InterleavedWeights&) = delete;
  // A moved-from object is empty (gemm() refuses it), never a shape without storage.
  InterleavedWeights(InterleavedWeights&& other) noexcept { *this = std::move(other); }
  InterleavedWeights& operator=(InterleavedWeights&& other) noexcept {
    if (this != &other) {
      rows_ = other.rows_;
      cols_ = other.cols_;
      row_blocks_ = other.row_blocks_;
      group_size_ = other.group_size_;
      codes_ = other.codes_;
      scale_ = other.scale_;
      offset_ = other.offset_;
      source_ = other.source_;
      name_ = other.name_;
      storage_ = std::move(other.storage_);  // keeps the buffer, so align_ stays valid
      align_ = other.align_;
      code_bytes_ = other.code_bytes_;
      scale_bytes_ = other.scale_bytes_;
      offset_bytes_ = other.offset_bytes_;
      scales_at_ = other.scales_at_;
      offsets_at_ = other.offsets_at_;
      other.reset();
    }
    return *this;
  }

  bool empty() const noexcept { return rows_ == 0; }
  std::int64_t rows() const noexcept { return rows_; }  // out_features
  std::int64_t cols() const noexcept { return cols_; }  // in_features, K
  std::int64_t row_blocks() const noexcept { return row_blocks_; }
  std::int64_t k_blocks() const noexcept { return cols_ / kInterleaveBlock; }
  std::int64_t group_size() const noexcept { return group_size_; }
  std::int64_t groups() const noexcept { return group_size_ == 0 ? 0 : cols_ / group_size_; }
  InterleavedCodes codes_kind() const noexcept { return codes_; }
  InterleavedScale scale_kind() const noexcept { return scale_; }
  InterleavedOffset offset_kind() const noexcept { return offset_; }
  InterleavedSource source() const noexcept { return source_; }
  // "q4_0", "q4_1", "iq4_nl", "q8_0", "q4_K", "lowbit-u4-sym", "lowbit-u4-asym", ...
  const char* format_name() const noexcept { return name_; }

  // Bytes the kernels stream for the whole matrix (codes, scales, offsets; padding rows included).
  std::size_t size_bytes() const noexcept { return code_bytes_ + scale_bytes_ + offset_bytes_; }
  double bits_per_weight() const noexcept {
    return empty() ? 0.0
                   : 8.0 * static_cast<double>(size_bytes()) / static_cast<double>(rows_ * cols_);
  }

  // The sections: codes() .. codes() + span_bytes() (with the alignment gaps between them).
  std::size_t span_bytes() const noexcept { return offsets_at_ + offset_bytes_; }
  const std::uint8_t* codes() const noexcept { return base(); }
  const void* scales() const noexcept { return base() + scales_at_; }
  const void* offsets() const noexcept {
    return offset_ == InterleavedOffset::kImplicit ? nullptr : base() + offsets_at_;
  }
  std::size_t row_block_code_bytes() const noexcept {
    return static_cast<std::size_t>(k_blocks() * detail::interleave::block_bytes(codes_));
  }

  // Element access, for references, tests and dequantization (slow: one element per call).
  // Preconditions: 0 <= r < rows(), 0 <= k < cols().
  int code(std::int64_t r, std::int64_t k) const noexcept {
    const detail::interleave::CodePlace at =
        detail::interleave::code_place(codes_, r % kInterleaveRows, k % kInterleaveBlock);
    const std::uint8_t byte = base()[code_offset(r, k) + static_cast<std::size_t>(at.byte)];
    if (codes_ == InterleavedCodes::kSigned8) return static_cast<std::int8_t>(byte);
    return at.high ? byte >> 4 : byte & 0x0F;
  }
  // v(c): the integer the kernels multiply.
  int value(std::int64_t r, std::int64_t k) const noexcept {
    const int c = code(r, k);
    return codes_ == InterleavedCodes::kNonLinear4 ? ggml::kIq4NlValues[c] : c;
  }
  float scale(std::int64_t r, std::int64_t k) const noexcept {
    const std::size_t i = param_index(r, k);
    if (scale_ == InterleavedScale::kHalf) {
      Half h;
      std::memcpy(&h, base() + scales_at_ + 2 * i, 2);
      return to_float(h);
    }
    float f;
    std::memcpy(&f, base() + scales_at_ + 4 * i, 4);
    return f;
  }
  // z in the zero-point form (0 in the min form).
  int zero_point(std::int64_t r, std::int64_t k) const noexcept {
    switch (offset_) {
      case InterleavedOffset::kImplicit:
        return codes_ == InterleavedCodes::kUnsigned4 ? 8 : 0;
      case InterleavedOffset::kZeroPoint:
        return static_cast<std::int8_t>(base()[offsets_at_ + param_index(r, k)]);
      case InterleavedOffset::kMin:
        return 0;
    }
    return 0;
  }
  // m in the min form (0 otherwise).
  float min(std::int64_t r, std::int64_t k) const noexcept {
    if (offset_ != InterleavedOffset::kMin) return 0.0f;
    const std::size_t i = param_index(r, k);
    if (scale_ == InterleavedScale::kHalf) {
      Half h;
      std::memcpy(&h, base() + offsets_at_ + 2 * i, 2);
      return to_float(h);
    }
    float f;
    std::memcpy(&f, base() + offsets_at_ + 4 * i, 4);
    return f;
  }
  // The weight as the source format's dequantizer computes it, bit for bit:
  //   zero-point form  float(v − z) · d    (ggml q4_0/q8_0/iq4_nl to_float; lowbit dequantize)
  //   min form         float(c) · d + m    (ggml q4_1 to_float; q4_K's (d·sc)·q − dmin·m)
  float weight(std::int64_t r, std::int64_t k) const noexcept {
    const float d = scale(r, k);
    if (offset_ == InterleavedOffset::kMin) return static_cast<float>(code(r, k)) * d + min(r, k);
    return static_cast<float>(value(r, k) - zero_point(r, k)) * d;
  }

 private:
  friend struct detail::interleave::Writer;
  template <class Fill>
  friend Result<InterleavedWeights> detail::interleave::build(const detail::interleave::Shape&,
                                                              Fill&&);

  void reset() noexcept {
    rows_ = cols_ = row_blocks_ = group_size_ = 0;
    name_ = "empty";
    storage_.clear();
    align_ = code_bytes_ = scale_bytes_ = offset_bytes_ = scales_at_ = offsets_at_ = 0;
  }
  const std::uint8_t* base() const noexcept { return storage_.data() + align_; }
  std::uint8_t* base() noexcept { return storage_.data() + align_; }
  std::size_t code_offset(std::int64_t r, std::int64_t k) const noexcept {
    return static_cast<std::size_t>(r / kInterleaveRows) * row_block_code_bytes() +
           static_cast<std::size_t>((k / kInterleaveBlock) *
                                    detail::interleave::block_bytes(codes_));
  }
  std::size_t param_index(std::int64_t r, std::int64_t k) const noexcept {
    return static_cast<std::size_t>(((r / kInterleaveRows) * groups() + k / group_size_) *
                                        kInterleaveRows +
                                    r % kInterleaveRows);
  }

  std::int64_t rows_ = 0, cols_ = 0, row_blocks_ = 0, group_size_ = 0;
  InterleavedCodes codes_ = InterleavedCodes::kUnsigned4;
  InterleavedScale scale_ = InterleavedScale::kHalf;
  InterleavedOffset offset_ = InterleavedOffset::kImplicit;
  InterleavedSource source_ = InterleavedSource::kLowbit;
  const char* name_ = "empty";
  std::vector<std::uint8_t> storage_;
  std::size_t align_ = 0;  // storage_.data() + align_ is 64-byte aligned
  std::size_t code_bytes_ = 0, scale_bytes_ = 0, offset_bytes_ = 0;
  std::size_t scales_at_ = 0, offsets_at_ = 0;

  // Row r's k-block b from 32 stored codes (4-bit: 0..15; 8-bit: the int8 bit pattern).
  void put_block(std::int64_t r, std::int64_t b, const std::uint8_t* codes32) noexcept {
    std::uint8_t* out = base() + code_offset(r, b * kInterleaveBlock);
    const std::int64_t rr = r % kInterleaveRows;
    for (std::int64_t e = 0; e < kInterleaveBlock; ++e) {
      const detail::interleave::CodePlace at = detail::interleave::code_place(codes_, rr, e);
      std::uint8_t& byte = out[at.byte];
      if (codes_ == InterleavedCodes::kSigned8) {
        byte = codes32[e];
      } else if (at.high) {
        byte = static_cast<std::uint8_t>((byte & 0x0F) | (codes32[e] & 0x0F) << 4);
      } else {
        byte = static_cast<std::uint8_t>((byte & 0xF0) | (codes32[e] & 0x0F));
      }
    }
  }
  // Row r's parameters of group g.
  void put_param(std::size_t section, std::int64_t r, std::int64_t g, const void* value,
                 std::size_t bytes) noexcept {
    std::memcpy(base() + section + bytes * param_index(r, g * group_size_), value, bytes);
  }
};

namespace detail {
namespace interleave {

// The builders' access to the private layout.
struct Writer {
  static void block(InterleavedWeights& w, std::int64_t r, std::int64_t b,
                    const std::uint8_t* codes32) noexcept {
    w.put_block(r, b, codes32);
  }
  static void scale(InterleavedWeights& w, std::int64_t r, std::int64_t g, Half h) noexcept {
    w.put_param(w.scales_at_, r, g, &h, 2);
  }
  static void scale(InterleavedWeights& w, std::int64_t r, std::int64_t g, float f) noexcept {
    w.put_param(w.scales_at_, r, g, &f, 4);
  }
  static void zero_point(InterleavedWeights& w, std::int64_t r, std::int64_t g, int z) noexcept {
    const auto byte = static_cast<std::uint8_t>(static_cast<std::int8_t>(z));
    w.put_param(w.offsets_at_, r, g, &byte, 1);
  }
  static void min(InterleavedWeights& w, std::int64_t r, std::int64_t g, Half h) noexcept {
    w.put_param(w.offsets_at_, r, g, &h, 2);
  }
  static void min(InterleavedWeights& w, std::int64_t r, std::int64_t g, float f) noexcept {
    w.put_param(w.offsets_at_, r, g, &f, 4);
  }
};

}  // namespace interleave
}  // namespace detail

namespace detail {
namespace interleave {

// Allocates the layout for `shape` and lets `fill(weights)` write every row; returns the error
// `fill` returns, or the weights.
template <class Fill>
Result<InterleavedWeights> build(const Shape& shape, Fill&& fill) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max() / 4;
  if (shape.rows <= 0 || shape.cols <= 0)
    return Status(Errc::kInvalidArgument, "interleave: rows and cols must be positive");
  if (shape.cols % kInterleaveBlock != 0)
    return Status(Errc::kIndivisible, "interleave: in_features must be a multiple of 32");
  if (shape.group_size <= 0 || shape.group_size % kInterleaveBlock != 0 ||
      shape.cols % shape.group_size != 0)
    return Status(Errc::kUnsupported,
                  "interleave: the scale group must be a multiple of 32 that divides in_features");
  const std::int64_t row_blocks = (shape.rows + kInterleaveRows - 1) / kInterleaveRows;
  const std::int64_t k_blocks = shape.cols / kInterleaveBlock;
  const std::int64_t groups = shape.cols / shape.group_size;
  const std::int64_t block = block_bytes(shape.codes);
  const std::int64_t param = shape.scale == InterleavedScale::kHalf ? 2 : 4;
  const std::int64_t offset_param = shape.offset == InterleavedOffset::kImplicit    ? 0
                                    : shape.offset == InterleavedOffset::kZeroPoint ? 1
                                                                                    : param;
  if (!fits(row_blocks, k_blocks * block, kMax) ||
      !fits(row_blocks * kInterleaveRows, groups * param, kMax))
    return Status(Errc::kOverflow, "interleave: the prepared size overflows");
  const auto align_up = [](std::size_t n) {
    return (n + detail::interleave::kAlign - 1) / detail::interleave::kAlign *
           detail::interleave::kAlign;
  };
  InterleavedWeights w;
  w.rows_ = shape.rows;
  w.cols_ = shape.cols;
  w.row_blocks_ = row_blocks;
  w.group_size_ = shape.group_size;
  w.codes_ = shape.codes;
  w.scale_ = shape.scale;
  w.offset_ = shape.offset;
  w.source_ = shape.source;
  w.name_ = shape.name;
  w.code_bytes_ = static_cast<std::size_t>(row_blocks * k_blocks * block);
  w.scale_bytes_ = static_cast<std::size_t>(row_blocks * kInterleaveRows * groups * param);
  w.offset_bytes_ = static_cast<std::size_t>(row_blocks * kInterleaveRows * groups * offset_param);
  w.scales_at_ = align_up(w.code_bytes_);
  w.offsets_at_ = align_up(w.scales_at_ + w.scale_bytes_);
  const std::size_t total = w.offsets_at_ + w.offset_bytes_;
  // Zero-filled, so padding rows hold code 0 with scale 0 (and min 0): they add nothing.
  w.storage_.assign(total + detail::interleave::kAlign, 0);
  const auto address = reinterpret_cast<std::uintptr_t>(w.storage_.data());
  w.align_ =
      static_cast<std::size_t>((detail::interleave::kAlign - address % detail::interleave::kAlign) %
                               detail::interleave::kAlign);
  LOWBIT_TRY(fill(w));
  return w;
}

// Common body of the four ggml builders: `Block` blocks, rows × cols/32 of them, row-major.
// `params(block, r, g, w)` writes one block's scale (and min) after checking them.
template <class Block, class Params, class Codes>
Result<InterleavedWeights> from_ggml(const Block* blocks, std::int64_t rows, std::int64_t cols,
                                     const Shape& shape, Params&& params, Codes&& codes) {
  if (blocks == nullptr) return Status(Errc::kInvalidArgument, "interleave: null blocks");
  return build(shape, [&](InterleavedWeights& w) -> Status {
    const std::int64_t per_row = cols / kInterleaveBlock;
    std::uint8_t c[kInterleaveBlock];
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t b = 0; b < per_row; ++b) {
        const Block& blk = blocks[r * per_row + b];
        LOWBIT_TRY(params(blk, r, b, w, r * per_row + b));
        codes(blk, c);
        Writer::block(w, r, b, c);
      }
    }
    return {};
  });
}

inline void split_nibbles(const std::uint8_t* qs, std::uint8_t* c) noexcept {
  for (int j = 0; j < 16; ++j) {
    c[j] = qs[j] & 0x0F;
    c[j + 16] = qs[j] >> 4;
  }
}

inline Status finite_half(Half h, std::int64_t index) noexcept {
  if (!std::isfinite(to_float(h)))
    return {Errc::kNonFinite, "interleave: scale is NaN or Inf", index};
  return {};
}

// lowbit sources in one form: dense row-major codes, float scales and int zero points on a
// param_rows × param_cols grid.
struct LowbitSource {
  int bits;
  bool asymmetric;
  std::int64_t rows, cols, param_rows, param_cols;
  const std::uint8_t* codes;              // packed_bytes(bits, rows*cols) bytes, dense
  std::vector<float> scales;              // param_rows * param_cols
  std::vector<std::int32_t> zero_points;  // same, or empty when symmetric
};

inline Result<InterleavedWeights> from_lowbit(const LowbitSource& s) {
  if (s.codes == nullptr) return Status(Errc::kInvalidArgument, "interleave: null codes");
  if (s.bits != 4 && s.bits != 8)
    return Status(Errc::kUnsupported, "interleave: the int8 kernels take 4-bit and 8-bit codes");
  if (s.param_rows <= 0 || s.param_cols <= 0 || s.rows % s.param_rows != 0 ||
      s.cols % s.param_cols != 0)
    return Status(Errc::kInvalidArgument,
                  "interleave: the parameter grid does not tile the matrix");
  const std::int64_t rows_per_param = s.rows / s.param_rows;
  const std::int64_t group = s.cols / s.param_cols;
  if (group % kInterleaveBlock != 0)
    return Status(
        Errc::kUnsupported,
        "interleave: scale groups along K must be a multiple of 32 (no per-column scales)");
  const std::int64_t n = s.param_rows * s.param_cols;
  for (std::int64_t i = 0; i < n; ++i) {
    const float d = s.scales[static_cast<std::size_t>(i)];
    if (!std::isfinite(d)) return Status(Errc::kNonFinite, "interleave: scale is NaN or Inf", i);
    const std::int32_t z = s.asymmetric ? s.zero_points[static_cast<std::size_t>(i)] : 0;
    if (s.asymmetric ? (z < 0 || z >= (1 << s.bits)) : z != 0)
      return Status(Errc::kOutOfRange, "interleave: zero point outside the code range", i);
  }
  Shape shape{InterleavedSource::kLowbit,
              s.bits == 4 ? InterleavedCodes::kUnsigned4 : InterleavedCodes::kSigned8,
              InterleavedScale::kFloat,
              s.asymmetric ? InterleavedOffset::kZeroPoint : InterleavedOffset::kImplicit,
              s.rows,
              s.cols,
              group,
              s.bits == 4 ? (s.asymmetric ? "lowbit-u4-asym" : "lowbit-u4-sym")
                          : (s.asymmetric ? "lowbit-s8-asym" : "lowbit-s8-sym")};
  return build(shape, [&](InterleavedWeights& w) -> Status {
    const std::int64_t per_row = s.cols / kInterleaveBlock;
    const std::int64_t groups = s.cols / group;
    std::uint8_t c[kInterleaveBlock];
    for (std::int64_t r = 0; r < s.rows; ++r) {
      const std::int64_t pr = r / rows_per_param;
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::size_t i = static_cast<std::size_t>(pr * s.param_cols + g);
        Writer::scale(w, r, g, s.scales[i]);
        if (s.asymmetric)
          Writer::zero_point(w, r, g, s.bits == 4 ? s.zero_points[i] : s.zero_points[i] - 128);
      }
      for (std::int64_t b = 0; b < per_row; ++b) {
        const std::int64_t first = r * s.cols + b * kInterleaveBlock;  // flat code index
        if (s.bits == 4) {
          // Dense 4-bit: code 2j in the low nibble of byte j. first is even (cols % 32 == 0).
          const std::uint8_t* p = s.codes + first / 2;
          for (int j = 0; j < 16; ++j) {
            const std::uint8_t lo = p[j] & 0x0F, hi = p[j] >> 4;
            // Symmetric codes are 4-bit two's complement; + 8 is a flip of the top bit.
            c[2 * j] = s.asymmetric ? lo : static_cast<std::uint8_t>(lo ^ 8);
            c[2 * j + 1] = s.asymmetric ? hi : static_cast<std::uint8_t>(hi ^ 8);
          }
        } else {
          // Symmetric: the int8 itself. Asymmetric: u − 128, the same flip of the top bit.
          for (int j = 0; j < 32; ++j)
            c[j] = s.asymmetric ? static_cast<std::uint8_t>(s.codes[first + j] ^ 0x80)
                                : s.codes[first + j];
        }
        Writer::block(w, r, b, c);
      }
    }
    return {};
  });
}

}  // namespace interleave
}  // namespace detail

// ggml Q4_0 (rows × cols/32 blocks, row-major): w = (q − 8) · d.
inline Result<InterleavedWeights> interleave_weights(const ggml::BlockQ4_0* blocks,
                                                     std::int64_t rows, std::int64_t cols) {
  using namespace detail::interleave;
  const Shape shape{InterleavedSource::kGgmlQ4_0,
                    InterleavedCodes::kUnsigned4,
                    InterleavedScale::kHalf,
                    InterleavedOffset::kImplicit,
                    rows,
                    cols,
                    kInterleaveBlock,
                    "q4_0"};
  return from_ggml(
      blocks, rows, cols, shape,
      [](const ggml::BlockQ4_0& b, std::int64_t r, std::int64_t g, InterleavedWeights& w,
         std::int64_t index) -> Status {
        LOWBIT_TRY(finite_half(b.d, index));
        Writer::scale(w, r, g, b.d);
        return {};
      },
      [](const ggml::BlockQ4_0& b, std::uint8_t* c) { split_nibbles(b.qs, c); });
}

// ggml Q4_1: w = q · d + m.
inline Result<InterleavedWeights> interleave_weights(const ggml::BlockQ4_1* blocks,
                                                     std::int64_t rows, std::int64_t cols) {
  using namespace detail::interleave;
  const Shape shape{InterleavedSource::kGgmlQ4_1,
                    InterleavedCodes::kUnsigned4,
                    InterleavedScale::kHalf,
                    InterleavedOffset::kMin,
                    rows,
                    cols,
                    kInterleaveBlock,
                    "q4_1"};
  return from_ggml(
      blocks, rows, cols, shape,
      [](const ggml::BlockQ4_1& b, std::int64_t r, std::int64_t g, InterleavedWeights& w,
         std::int64_t index) -> Status {
        LOWBIT_TRY(finite_half(b.d, index));
        LOWBIT_TRY(finite_half(b.m, index));
        Writer::scale(w, r, g, b.d);
        Writer::min(w, r, g, b.m);
        return {};
      },
      [](const ggml::BlockQ4_1& b, std::uint8_t* c) { split_nibbles(b.qs, c); });
}

// ggml IQ4_NL: w = d · kIq4NlValues[q].
inline Result<InterleavedWeights> interleave_weights(const ggml::BlockIQ4_NL* blocks,
                                                     std::int64_t rows, std::int64_t cols) {
  using namespace detail::interleave;
  const Shape shape{InterleavedSource::kGgmlIQ4_NL,
                    InterleavedCodes::kNonLinear4,
                    InterleavedScale::kHalf,
                    InterleavedOffset::kImplicit,
                    rows,
                    cols,
                    kInterleaveBlock,
                    "iq4_nl"};
  return from_ggml(
      blocks, rows, cols, shape,
      [](const ggml::BlockIQ4_NL& b, std::int64_t r, std::int64_t g, InterleavedWeights& w,
         std::int64_t index) -> Status {
        LOWBIT_TRY(finite_half(b.d, index));
        Writer::scale(w, r, g, b.d);
        return {};
      },
      [](const ggml::BlockIQ4_NL& b, std::uint8_t* c) { split_nibbles(b.qs, c); });
}

// ggml Q8_0: w = q · d.
inline Result<InterleavedWeights> interleave_weights(const ggml::BlockQ8_0* blocks,
                                                     std::int64_t rows, std::int64_t cols) {
  using namespace detail::interleave;
  const Shape shape{InterleavedSource::kGgmlQ8_0,
                    InterleavedCodes::kSigned8,
                    InterleavedScale::kHalf,
                    InterleavedOffset::kImplicit,
                    rows,
                    cols,
                    kInterleaveBlock,
                    "q8_0"};
  return from_ggml(
      blocks, rows, cols, shape,
      [](const ggml::BlockQ8_0& b, std::int64_t r, std::int64_t g, InterleavedWeights& w,
         std::int64_t index) -> Status {
        LOWBIT_TRY(finite_half(b.d, index));
        Writer::scale(w, r, g, b.d);
        return {};
      },
      [](const ggml::BlockQ8_0& b, std::uint8_t* c) { std::memcpy(c, b.qs, kInterleaveBlock); });
}

// ggml Q4_K (rows × cols/256 super-blocks, row-major): sub-block j of a super-block is one k-block
// with w = q · (d·sc_j) + (−(dmin·m_j)), both parameters float32 (see the header comment). cols
// must be a multiple of 256 (kIndivisible); a NaN or Inf d or dmin is kNonFinite, indexed by the
// flat super-block.
inline Result<InterleavedWeights> interleave_weights(const ggml::BlockQ4_K* blocks,
                                                     std::int64_t rows, std::int64_t cols) {
  using namespace detail::interleave;
  constexpr std::int64_t kSuper = ggml::FormatTraits<ggml::BlockQ4_K>::kBlockSize;  // 256
  constexpr std::int64_t kSubBlocks = kSuper / kInterleaveBlock;                     // 8
  static_assert(kSuper == 256 && kSubBlocks == 8, "Q4_K: 8 sub-blocks of 32 per super-block");
  if (blocks == nullptr) return Status(Errc::kInvalidArgument, "interleave: null blocks");
  if (cols > 0 && cols % kSuper != 0)
    return Status(Errc::kIndivisible, "interleave: q4_K in_features must be a multiple of 256");
  const Shape shape{InterleavedSource::kGgmlQ4_K,
                    InterleavedCodes::kUnsigned4,
                    InterleavedScale::kFloat,
                    InterleavedOffset::kMin,
                    rows,
                    cols,
                    kInterleaveBlock,
                    "q4_K"};
  return build(shape, [&](InterleavedWeights& w) -> Status {
    const std::int64_t per_row = cols / kSuper;
    std::uint8_t c[kInterleaveBlock];
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t s = 0; s < per_row; ++s) {
        const std::int64_t index = r * per_row + s;
        const ggml::BlockQ4_K& blk = blocks[index];
        LOWBIT_TRY(finite_half(blk.d, index));
        LOWBIT_TRY(finite_half(blk.dmin, index));
        const float d = to_float(blk.d);
        const float dmin = to_float(blk.dmin);
        for (int j = 0; j < kSubBlocks; ++j) {
          int sc = 0, m = 0;
          ggml::detail::kquant::unpack_k4_scale(blk.scales, j, &sc, &m);
          const std::int64_t b = kSubBlocks * s + j;
          // The two products ggml's dequantizer rounds to float32 (exact here, see above).
          Writer::scale(w, r, b, d * static_cast<float>(sc));
          Writer::min(w, r, b, -(dmin * static_cast<float>(m)));
          for (int l = 0; l < kInterleaveBlock; ++l)
            c[l] = static_cast<std::uint8_t>(ggml::detail::kquant::k45_code(blk, j, l));
          Writer::block(w, r, b, c);
        }
      }
    }
    return {};
  });
}

// A lowbit packed matrix (format/packed_matrix.hpp, already validated by parse_packed_matrix):
// 4- or 8-bit codes, any scheme, per-tensor, per-row or per-group scales (groups a multiple of 32).
inline Result<InterleavedWeights> interleave_weights(const PackedMatrixView& m) {
  if (m.granularity == PackedGranularity::kPerColumn)
    return Status(Errc::kUnsupported,
                  "interleave: per-column scales cannot be factored out of a dot");
  if (m.scales == nullptr || m.param_rows <= 0 || m.param_cols <= 0)
    return Status(Errc::kInvalidArgument, "interleave: packed matrix view has no parameters");
  if (m.bits != 4 && m.bits != 8)
    return Status(Errc::kUnsupported, "interleave: the int8 kernels take 4-bit and 8-bit codes");
  detail::interleave::LowbitSource s{m.bits,
                                     m.scheme == PackedScheme::kAsymmetric,
                                     m.rows,
                                     m.cols,
                                     m.param_rows,
                                     m.param_cols,
                                     m.codes,
                                     {},
                                     {}};
  const std::int64_t n = m.param_rows * m.param_cols;
  s.scales.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint32_t bits = detail::load_le<std::uint32_t>(m.scales + 4 * i);
    std::memcpy(&s.scales[static_cast<std::size_t>(i)], &bits, 4);
  }
  if (s.asymmetric) {
    if (m.zero_points == nullptr)
      return Status(Errc::kInvalidArgument, "interleave: asymmetric matrix without zero points");
    std::vector<std::uint8_t> zps(static_cast<std::size_t>(n));
    LOWBIT_TRY(unpack_codes(m.bits, m.zero_points, packed_bytes(m.bits, n), n, zps.data()));
    s.zero_points.assign(zps.begin(), zps.end());
  }
  return detail::interleave::from_lowbit(s);
}

// A lowbit QuantizedTensor of 4- or 8-bit codes.
template <class Q>
Result<InterleavedWeights> interleave_weights(const QuantizedTensor<Q>& t) {
  static_assert(Q::kBits == 4 || Q::kBits == 8,
                "interleave_weights: the int8 kernels take Bits<4> or Bits<8> weights");
  static_assert(!Q::granularity::kDynamic,
                "interleave_weights: weights need stored parameters, not PerToken");
  const BlockShape grid = param_grid(t.granularity(), t.rows(), t.cols());
  detail::interleave::LowbitSource s{
      Q::kBits,  !Q::symmetry::kSymmetric, t.rows(), t.cols(), grid.rows,
      grid.cols, t.packed().data(),        {},       {}};
  const QuantParams& p = t.params();
  if (p.size() != grid.rows * grid.cols || p.scale.size() != static_cast<std::size_t>(p.size()) ||
      p.zero_point.size() != static_cast<std::size_t>(p.size()))
    return Status(Errc::kShapeMismatch, "interleave: parameters do not match the tensor's grid");
  s.scales = p.scale;
  if (s.asymmetric) {
    s.zero_points = p.zero_point;
  } else {
    for (std::size_t i = 0; i < p.zero_point.size(); ++i)
      if (p.zero_point[i] != 0)
        return Status(Errc::kOutOfRange, "interleave: symmetric tensor with a nonzero zero point",
                      static_cast<std::int64_t>(i));
  }
  return detail::interleave::from_lowbit(s);
}

// Every weight, as the source format's dequantizer gives it, into a rows × cols view.
inline Status dequantize(const InterleavedWeights& w, MatrixView<float> out) {
  LOWBIT_TRY(out.validate());
  if (w.empty()) return {Errc::kInvalidArgument, "dequantize: empty interleaved weights"};
  if (out.rows() != w.rows() || out.cols() != w.cols())
    return {Errc::kShapeMismatch, "dequantize: output view does not match the weights"};
  for (std::int64_t r = 0; r < w.rows(); ++r)
    for (std::int64_t k = 0; k < w.cols(); ++k) out(r, k) = w.weight(r, k);
  return {};
}

}  // namespace lowbit
