// lowbit/io/gguf.hpp: GGUF (llama.cpp's model file) reader and streaming writer.
//
// A GGUF file is a header of typed key-value metadata and tensor descriptions, then the tensor
// data, each tensor aligned so a mapped file feeds kernels in place. All integers little-endian.
//
//   offset        size      field
//   0             4         magic "GGUF" (47 47 55 46)
//   4             4         version, u32: 3 (2 is read too: same layout; 1 had 32-bit counts)
//   8             8         tensor count, u64
//   16            8         metadata key-value count, u64
//   24            ...       key-value pairs:  key (string) | value type (u32) | value
//                 ...       tensor infos:     name (string) | n_dims (u32) | ne[n_dims] (u64 each)
//                                             | ggml type (u32) | offset (u64)
//                 ...       zero padding to a multiple of `alignment`
//   data_offset   ...       tensor data: tensor i at data_offset + offset_i; each offset is a
//                           multiple of `alignment`, each tensor padded to one
//
//   string  = length (u64) | bytes (UTF-8, no terminator)
//   value   = u8 i8 u16 i16 u32 i32 f32 (type ids 0..6) | bool (7: one byte, 0 or 1)
//           | string (8) | array (9) | u64 i64 f64 (10..12)
//   array   = element type (u32) | count (u64) | count values of that type (arrays may nest)
//
// `alignment` is the u32 value of the key "general.alignment" (a power of two), 32 without it.
// ne[0] is the contiguous (row) extent, ggml order; the tensor's bytes follow from its ggml type
// (io/ggml_types.hpp).
//
// Reading treats the file as hostile and allocates nothing a count merely claims: every read is
// bounds-checked, each count is checked against the bytes left (a KV takes at least 14 bytes, a
// tensor info 25, an array element its minimum size) before anything is reserved, element counts
// and byte sizes are overflow-checked, keys and names must be strict UTF-8 and unique, array
// nesting is bounded (kGgufMaxArrayDepth) and walked with bounded recursion. Tensor ranges must
// be aligned, lie inside the file, not overlap, and the file must hold the last tensor's padding
// (ggml reads the padded data section whole, so it rejects such a file too). Errors, with the
// byte offset of the field at fault as the Status index:
//   kTruncated   the file ends before something it announces (also: a count too large for the
//                bytes that remain, a tensor range past the end)
//   kCorrupt     bad magic, empty or non-UTF-8 or duplicate key or name, a bool byte other than
//                0/1, n_dims > 4, a row not a whole number of blocks, "general.alignment" not a
//                u32 power of two, a misaligned or overlapping tensor
//   kOverflow    an extent past int64, an element count or byte size past int64
//   kUnsupported another version, an unknown value type or ggml type, arrays nested deeper than
//                kGgufMaxArrayDepth
//
// What the reader returns views the parsed bytes (zero-copy): keys, names and strings are
// string_views into them and each tensor's data is a ByteSpan of them. Keep the bytes (the
// MappedFile) alive while you use the result. String *values* are returned as stored: GGUF says
// UTF-8, but vocabularies in the wild hold arbitrary bytes, so only keys and names are checked.
//
// The writer builds the same layout (always version 3): add metadata and tensor descriptions,
// write the header (its size is known up front), then stream each tensor's bytes in order, in as
// many chunks as you like, so a converter never holds more than one tensor. It pads exactly as
// ggml does (header and every tensor to the alignment, with zeros), so write -> read -> write is
// byte-identical. Tensor names may be 64 bytes (the spec's limit); ggml itself loads only 63.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/detail/utf8.hpp"
#include "lowbit/io/ggml_types.hpp"
#include "lowbit/io/mapped_file.hpp"
#include "lowbit/status.hpp"

namespace lowbit {
namespace io {

// clang-format off
enum class GgufType : std::uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};
// clang-format on

constexpr std::uint32_t kGgufVersion = 3;
constexpr std::uint32_t kGgufDefaultAlignment = 32;
constexpr std::uint32_t kGgufMaxDims = 4;        // ggml's GGML_MAX_DIMS
constexpr std::size_t kGgufMaxNameBytes = 64;    // the spec's limit on tensor names
constexpr std::size_t kGgufMaxKeyBytes = 65535;  // the spec's limit on keys
constexpr int kGgufMaxArrayDepth = 8;            // arrays of arrays of ... ; ggml allows 1
constexpr const char* kGgufAlignmentKey = "general.alignment";

// The fixed part of the header, as laid out in the diagram.
namespace detail {
using ::lowbit::detail::le_load;
using ::lowbit::detail::le_store;

constexpr std::size_t kGgufMagicAt = 0, kGgufVersionAt = 4, kGgufTensorCountAt = 8,
                      kGgufKvCountAt = 16, kGgufFixedHeaderBytes = 24;
static_assert(kGgufVersionAt == kGgufMagicAt + 4 && kGgufTensorCountAt == kGgufVersionAt + 4 &&
                  kGgufKvCountAt == kGgufTensorCountAt + 8 &&
                  kGgufFixedHeaderBytes == kGgufKvCountAt + 8,
              "GGUF fixed header: magic(4) version(4) tensor count(8) kv count(8)");
// Smallest encodings, which cap the counts a file can hold: a KV is a key length (8), a key
// byte, a type (4) and a one-byte value; a tensor info a name length (8), a name byte, n_dims
// (4), a type (4) and an offset (8), with n_dims = 0.
constexpr std::uint64_t kGgufMinKvBytes = 8 + 1 + 4 + 1;
constexpr std::uint64_t kGgufMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;
static_assert(kGgufMinKvBytes == 14 && kGgufMinTensorInfoBytes == 25, "minimum entry sizes");

// Bytes of one scalar of type t; 0 for string, array and unknown ids.
constexpr std::size_t gguf_scalar_bytes(std::uint32_t t) noexcept {
  switch (t) {
    case 0:
    case 1:
    case 7:
      return 1;
    case 2:
    case 3:
      return 2;
    case 4:
    case 5:
    case 6:
      return 4;
    case 10:
    case 11:
    case 12:
      return 8;
    default:
      return 0;
  }
}
// Smallest encoding of one array element of type t: a scalar, a string's length, or a nested
// array's element type and count.
constexpr std::size_t gguf_min_value_bytes(std::uint32_t t) noexcept {
  return t == 8 ? 8 : t == 9 ? 12 : gguf_scalar_bytes(t);
}
constexpr bool gguf_known_type(std::uint32_t t) noexcept { return t <= 12; }

inline Status rebase(Status s, std::uint64_t base) noexcept {
  if (s.ok() || s.index() < 0) return s;
  return Status(s.code(), s.message(), s.index() + static_cast<std::int64_t>(base));
}

struct GgufParser;
class GgufValueReader;
}  // namespace detail

class GgufArray;
class GgufArrayBuilder;
class GgufWriter;

// One metadata value: a scalar, a string (a view of its bytes) or an array (a view of its
// encoded elements). From a parsed file it views the file; from the factories below it views the
// caller's string or builder.
class GgufValue {
 public:
  GgufValue() noexcept = default;  // u8 0

  static GgufValue u8(std::uint8_t v) noexcept { return scalar(GgufType::kU8, v); }
  static GgufValue i8(std::int8_t v) noexcept {
    return scalar(GgufType::kI8, static_cast<std::uint8_t>(v));
  }
  static GgufValue u16(std::uint16_t v) noexcept { return scalar(GgufType::kU16, v); }
  static GgufValue i16(std::int16_t v) noexcept {
    return scalar(GgufType::kI16, static_cast<std::uint16_t>(v));
  }
  static GgufValue u32(std::uint32_t v) noexcept { return scalar(GgufType::kU32, v); }
  static GgufValue i32(std::int32_t v) noexcept {
    return scalar(GgufType::kI32, static_cast<std::uint32_t>(v));
  }
  static GgufValue u64(std::uint64_t v) noexcept { return scalar(GgufType::kU64, v); }
  static GgufValue i64(std::int64_t v) noexcept {
    return scalar(GgufType::kI64, static_cast<std::uint64_t>(v));
  }
  static GgufValue f32(float v) noexcept {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    return scalar(GgufType::kF32, bits);
  }
  static GgufValue f64(double v) noexcept {
    std::uint64_t bits;
    std::memcpy(&bits, &v, 8);
    return scalar(GgufType::kF64, bits);
  }
  static GgufValue boolean(bool v) noexcept { return scalar(GgufType::kBool, v ? 1u : 0u); }
  // Views `s`, which must outlive the value (the writer copies it).
  static GgufValue string(std::string_view s) noexcept {
    GgufValue v;
    v.type_ = GgufType::kString;
    v.ptr_ = reinterpret_cast<const std::uint8_t*>(s.data());
    v.size_ = s.size();
    return v;
  }

  GgufType type() const noexcept { return type_; }

  // An unsigned integer type (u8, u16, u32, u64), widened.
  Result<std::uint64_t> to_u64() const noexcept {
    if (type_ == GgufType::kU8 || type_ == GgufType::kU16 || type_ == GgufType::kU32 ||
        type_ == GgufType::kU64)
      return bits_;
    return mismatch();
  }
  // Any integer type whose value fits int64 (a u64 above 2^63 - 1 is kOverflow).
  Result<std::int64_t> to_i64() const noexcept {
    switch (type_) {
      case GgufType::kU8:
      case GgufType::kU16:
      case GgufType::kU32:
        return static_cast<std::int64_t>(bits_);
      case GgufType::kU64:
        if (bits_ > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          return Status(Errc::kOverflow, "gguf value: u64 does not fit int64");
        return static_cast<std::int64_t>(bits_);
      case GgufType::kI8:
        return static_cast<std::int64_t>(static_cast<std::int8_t>(bits_));
      case GgufType::kI16:
        return static_cast<std::int64_t>(static_cast<std::int16_t>(bits_));
      case GgufType::kI32:
        return static_cast<std::int64_t>(static_cast<std::int32_t>(bits_));
      case GgufType::kI64:
        return static_cast<std::int64_t>(bits_);
      default:
        return mismatch();
    }
  }
  // f32 (exactly) or f64.
  Result<double> to_f64() const noexcept {
    if (type_ == GgufType::kF32) {
      const std::uint32_t b = static_cast<std::uint32_t>(bits_);
      float f;
      std::memcpy(&f, &b, 4);
      return static_cast<double>(f);
    }
    if (type_ == GgufType::kF64) {
      double d;
      std::memcpy(&d, &bits_, 8);
      return d;
    }
    return mismatch();
  }
  Result<bool> to_bool() const noexcept {
    if (type_ == GgufType::kBool) return bits_ != 0;
    return mismatch();
  }
  Result<std::string_view> to_string() const noexcept {
    if (type_ == GgufType::kString)
      return std::string_view(reinterpret_cast<const char*>(ptr_), size_);
    return mismatch();
  }
  inline Result<GgufArray> to_array() const noexcept;

  // A scalar's stored bits, zero-extended (an f32 is its IEEE-754 pattern); 0 otherwise.
  std::uint64_t scalar_bits() const noexcept {
    return type_ == GgufType::kString || type_ == GgufType::kArray ? 0 : bits_;
  }

 private:
  friend class GgufArray;
  friend class GgufArrayBuilder;
  friend class GgufWriter;
  friend class detail::GgufValueReader;

  static GgufValue scalar(GgufType t, std::uint64_t bits) noexcept {
    GgufValue v;
    v.type_ = t;
    v.bits_ = bits;
    return v;
  }
  static Status mismatch() noexcept {
    return Status(Errc::kInvalidArgument,
                  "gguf value: requested type differs from the stored type");
  }

  GgufType type_ = GgufType::kU8;
  GgufType element_type_ = GgufType::kU8;  // arrays
  std::uint8_t depth_ = 0;                 // arrays: 1 + the nesting depth of their elements
  std::uint64_t bits_ = 0;                 // scalars: the value; arrays: the element count
  const std::uint8_t* ptr_ = nullptr;      // strings: the bytes; arrays: the encoded elements
  std::size_t size_ = 0;
};

namespace detail {

// Decodes and validates one value from [p, p + avail): the one routine behind parsing and
// array iteration, so what the parser accepted the iterator decodes the same way. Status indices
// are relative to p. Recursion only for nested arrays, at most kGgufMaxArrayDepth deep.
class GgufValueReader {
 public:
  static Status read(std::uint32_t type, const std::uint8_t* p, std::size_t avail, int depth,
                     GgufValue* out, std::size_t* used) noexcept {
    if (!gguf_known_type(type)) return Status(Errc::kUnsupported, "gguf: unknown value type", 0);
    GgufValue v;
    v.type_ = static_cast<GgufType>(type);
    const std::size_t scalar = gguf_scalar_bytes(type);
    if (scalar != 0) {
      if (avail < scalar) return Status(Errc::kTruncated, "gguf: file ends inside a value", 0);
      v.bits_ = scalar == 1   ? p[0]
                : scalar == 2 ? le_load<std::uint16_t>(p)
                : scalar == 4 ? le_load<std::uint32_t>(p)
                              : le_load<std::uint64_t>(p);
      if (v.type_ == GgufType::kBool && v.bits_ > 1)
        return Status(Errc::kCorrupt, "gguf: bool value is neither 0 nor 1", 0);
      *out = v;
      *used = scalar;
      return {};
    }
    if (v.type_ == GgufType::kString) {
      if (avail < 8) return Status(Errc::kTruncated, "gguf: file ends inside a string length", 0);
      const std::uint64_t len = le_load<std::uint64_t>(p);
      if (len > avail - 8)
        return Status(Errc::kTruncated, "gguf: string longer than the bytes left", 0);
      v.ptr_ = p + 8;
      v.size_ = static_cast<std::size_t>(len);
      *out = v;
      *used = 8 + v.size_;
      return {};
    }
    // An array: element type, count, then the elements.
    if (depth >= kGgufMaxArrayDepth)
      return Status(Errc::kUnsupported, "gguf: arrays nested deeper than the limit", 0);
    if (avail < 12) return Status(Errc::kTruncated, "gguf: file ends inside an array header", 0);
    const std::uint32_t elem = le_load<std::uint32_t>(p);
    const std::uint64_t count = le_load<std::uint64_t>(p + 4);
    if (!gguf_known_type(elem))
      return Status(Errc::kUnsupported, "gguf: unknown array element type", 0);
    const std::size_t rest = avail - 12;
    // Checked before walking: a count the remaining bytes cannot hold is refused in O(1).
    if (count > rest / gguf_min_value_bytes(elem))
      return Status(Errc::kTruncated, "gguf: array count larger than the bytes left", 4);
    const std::uint8_t* q = p + 12;
    std::size_t pos = 0;
    std::uint8_t inner_depth = 0;
    const std::size_t elem_scalar = gguf_scalar_bytes(elem);
    if (elem_scalar != 0) {
      pos = static_cast<std::size_t>(count) * elem_scalar;  // <= rest, checked above
      if (elem == static_cast<std::uint32_t>(GgufType::kBool)) {
        for (std::size_t i = 0; i < pos; ++i)
          if (q[i] > 1)
            return Status(Errc::kCorrupt, "gguf: bool value is neither 0 nor 1",
                          static_cast<std::int64_t>(12 + i));
      }
    } else {
      for (std::uint64_t i = 0; i < count; ++i) {
        GgufValue e;
        std::size_t n = 0;
        LOWBIT_TRY(rebase(read(elem, q + pos, rest - pos, depth + 1, &e, &n), 12 + pos));
        if (e.depth_ > inner_depth) inner_depth = e.depth_;
        pos += n;
      }
    }
    v.element_type_ = static_cast<GgufType>(elem);
    v.bits_ = count;
    v.ptr_ = q;
    v.size_ = pos;
    v.depth_ = static_cast<std::uint8_t>(1 + inner_depth);
    *out = v;
    *used = 12 + pos;
    return {};
  }
};

}  // namespace detail

// The elements of an array value, decoded on demand from its encoded bytes.
class GgufArray {
 public:
  // A forward iterator that copies what it needs, so it stays valid after the GgufArray it came
  // from is gone (the bytes it views must live on). Do not range-for over `*value.to_array()`
  // directly: that binds the loop to a member of a destroyed temporary; name the array first.
  class iterator {
   public:
    GgufValue operator*() const noexcept { return current_; }
    iterator& operator++() noexcept {
      pos_ += used_;
      ++index_;
      decode();
      return *this;
    }
    bool operator==(const iterator& other) const noexcept { return index_ == other.index_; }
    bool operator!=(const iterator& other) const noexcept { return index_ != other.index_; }

   private:
    friend class GgufArray;
    iterator(const GgufArray& array, std::uint64_t index) noexcept
        : element_type_(array.element_type_),
          count_(array.count_),
          ptr_(array.ptr_),
          size_(array.size_),
          depth_(array.depth_),
          index_(index) {
      decode();
    }
    void decode() noexcept {
      used_ = 0;
      if (index_ >= count_) return;
      // Elements of an array of depth d nest at most d - 1 deep: start their reader so that the
      // innermost one sits just inside the limit.
      const Status s = detail::GgufValueReader::read(
          static_cast<std::uint32_t>(element_type_), ptr_ + pos_, size_ - pos_,
          kGgufMaxArrayDepth + 1 - depth_, &current_, &used_);
      // Cannot fail on bytes the parser or a builder validated; stop rather than read on.
      if (!s.ok()) index_ = count_;
    }
    GgufType element_type_;
    std::uint64_t count_;
    const std::uint8_t* ptr_;
    std::size_t size_;
    std::uint8_t depth_;
    std::uint64_t index_;
    std::size_t pos_ = 0;
    std::size_t used_ = 0;
    GgufValue current_;
  };

  GgufType element_type() const noexcept { return element_type_; }
  std::uint64_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  // The encoded elements: for a scalar type, size() little-endian values back to back.
  ByteSpan payload() const noexcept { return ByteSpan(ptr_, size_); }
  iterator begin() const noexcept { return iterator(*this, 0); }
  iterator end() const noexcept { return iterator(*this, count_); }

  // Element i: O(1) for scalar element types, O(i) for strings and arrays (walks the encoding).
  Result<GgufValue> at(std::uint64_t i) const noexcept {
    if (i >= count_) return Status(Errc::kInvalidArgument, "gguf array: index out of range");
    const std::size_t scalar = detail::gguf_scalar_bytes(static_cast<std::uint32_t>(element_type_));
    if (scalar != 0) {
      GgufValue v;
      std::size_t used = 0;
      LOWBIT_TRY(detail::GgufValueReader::read(static_cast<std::uint32_t>(element_type_),
                                               ptr_ + static_cast<std::size_t>(i) * scalar, scalar,
                                               0, &v, &used));
      return v;
    }
    iterator it = begin();
    for (std::uint64_t k = 0; k < i; ++k) ++it;
    if (it == end()) return Status(Errc::kCorrupt, "gguf array: encoding ends early");
    return *it;
  }

 private:
  friend class GgufValue;
  GgufType element_type_ = GgufType::kU8;
  std::uint64_t count_ = 0;
  const std::uint8_t* ptr_ = nullptr;
  std::size_t size_ = 0;
  std::uint8_t depth_ = 1;
};

inline Result<GgufArray> GgufValue::to_array() const noexcept {
  if (type_ != GgufType::kArray) return mismatch();
  GgufArray a;
  a.element_type_ = element_type_;
  a.count_ = bits_;
  a.ptr_ = ptr_;
  a.size_ = size_;
  a.depth_ = depth_;
  return a;
}

struct GgufKv {
  std::string_view key;
  GgufValue value;
  std::uint64_t offset = 0;  // of the key's length field in the file
};

struct GgufTensorInfo {
  std::string_view name;
  std::uint32_t type = 0;    // ggml type id (io/ggml_types.hpp)
  std::uint32_t n_dims = 0;  // as stored (ggml writes trailing 1s away, but a file may keep them)
  std::int64_t ne[kGgufMaxDims] = {1, 1, 1, 1};  // extents, ne[0] contiguous; 1 past n_dims
  std::int64_t elements = 0;
  std::uint64_t offset = 0;       // from the start of the data section, a multiple of the alignment
  std::uint64_t bytes = 0;        // from the type's block size and bytes per block
  ByteSpan data;                  // the bytes, inside the parsed buffer
  std::uint64_t info_offset = 0;  // of the name's length field in the file
};

// A parsed GGUF file: views into the bytes it was parsed from.
class GgufFile {
 public:
  std::uint32_t version() const noexcept { return version_; }
  std::uint32_t alignment() const noexcept { return alignment_; }
  // Offset of the data section in the file.
  std::uint64_t data_offset() const noexcept { return data_offset_; }
  const std::vector<GgufKv>& kvs() const noexcept { return kvs_; }
  const std::vector<GgufTensorInfo>& tensors() const noexcept { return tensors_; }
  ByteSpan bytes() const noexcept { return bytes_; }

  // Binary search over the names (they are unique); nullptr when absent.
  const GgufKv* find_kv(std::string_view key) const noexcept {
    const std::uint32_t* i = find(kv_order_, key, [this](std::uint32_t k) { return kvs_[k].key; });
    return i == nullptr ? nullptr : &kvs_[*i];
  }
  const GgufTensorInfo* find_tensor(std::string_view name) const noexcept {
    const std::uint32_t* i =
        find(tensor_order_, name, [this](std::uint32_t k) { return tensors_[k].name; });
    return i == nullptr ? nullptr : &tensors_[*i];
  }

 private:
  friend struct detail::GgufParser;

  template <class Name>
  static const std::uint32_t* find(const std::vector<std::uint32_t>& order, std::string_view key,
                                   Name name) noexcept {
    auto it = std::lower_bound(order.begin(), order.end(), key,
                               [&](std::uint32_t k, std::string_view v) { return name(k) < v; });
    if (it == order.end() || name(*it) != key) return nullptr;
    return &*it;
  }

  std::uint32_t version_ = kGgufVersion;
  std::uint32_t alignment_ = kGgufDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::vector<GgufKv> kvs_;
  std::vector<GgufTensorInfo> tensors_;
  std::vector<std::uint32_t> kv_order_;      // indices sorted by key
  std::vector<std::uint32_t> tensor_order_;  // indices sorted by name
  ByteSpan bytes_;
};

namespace detail {

struct GgufParser {
  const std::uint8_t* p;
  std::size_t n;
  std::size_t pos = 0;

  Status need(std::size_t bytes, const char* message) const noexcept {
    if (bytes > n - pos) return Status(Errc::kTruncated, message, static_cast<std::int64_t>(pos));
    return {};
  }
  Status u32(std::uint32_t* v, const char* message) noexcept {
    LOWBIT_TRY(need(4, message));
    *v = le_load<std::uint32_t>(p + pos);
    pos += 4;
    return {};
  }
  Status u64(std::uint64_t* v, const char* message) noexcept {
    LOWBIT_TRY(need(8, message));
    *v = le_load<std::uint64_t>(p + pos);
    pos += 8;
    return {};
  }
  // A key or tensor name: non-empty, at most max_bytes, strict UTF-8.
  Status name(std::string_view* out, std::size_t max_bytes, const char* what_empty,
              const char* what_long, const char* what_utf8) noexcept {
    const std::size_t at = pos;
    std::uint64_t len = 0;
    LOWBIT_TRY(u64(&len, "gguf: file ends inside a string length"));
    if (len > n - pos)
      return Status(Errc::kTruncated, "gguf: string longer than the bytes left",
                    static_cast<std::int64_t>(at));
    if (len == 0) return Status(Errc::kCorrupt, what_empty, static_cast<std::int64_t>(at));
    if (len > max_bytes) return Status(Errc::kCorrupt, what_long, static_cast<std::int64_t>(at));
    const std::size_t bad =
        ::lowbit::detail::utf8_invalid_offset(p + pos, static_cast<std::size_t>(len));
    if (bad != len) return Status(Errc::kCorrupt, what_utf8, static_cast<std::int64_t>(pos + bad));
    *out = std::string_view(reinterpret_cast<const char*>(p + pos), static_cast<std::size_t>(len));
    pos += static_cast<std::size_t>(len);
    return {};
  }

  // Sorts indices by name and reports the later of any two equal names as kCorrupt.
  template <class Name>
  static Status sort_unique(std::vector<std::uint32_t>* order, std::size_t count, Name name_of,
                            const char* message) {
    order->resize(count);
    for (std::size_t i = 0; i < count; ++i) (*order)[i] = static_cast<std::uint32_t>(i);
    std::sort(order->begin(), order->end(), [&](std::uint32_t a, std::uint32_t b) {
      const std::string_view x = name_of(a).first, y = name_of(b).first;
      return x < y || (x == y && a < b);
    });
    for (std::size_t i = 1; i < count; ++i) {
      if (name_of((*order)[i]).first == name_of((*order)[i - 1]).first)
        return Status(Errc::kCorrupt, message,
                      static_cast<std::int64_t>(name_of((*order)[i]).second));
    }
    return {};
  }

  Result<GgufFile> parse(ByteSpan bytes) {
    GgufFile f;
    f.bytes_ = bytes;
    if (n < 4) return Status(Errc::kTruncated, "gguf: file ends inside the magic", 0);
    if (std::memcmp(p, "GGUF", 4) != 0) return Status(Errc::kCorrupt, "gguf: bad magic", 0);
    pos = 4;
    LOWBIT_TRY(u32(&f.version_, "gguf: file ends inside the version"));
    // Version 1 counted in u32; 2 and 3 share one layout (3 only allowed big-endian files, which
    // read here as a huge version number and are refused with it).
    if (f.version_ != 2 && f.version_ != 3)
      return Status(Errc::kUnsupported, "gguf: version other than 2 or 3 (or a big-endian file)",
                    4);
    std::uint64_t n_tensors = 0, n_kv = 0;
    LOWBIT_TRY(u64(&n_tensors, "gguf: file ends inside the tensor count"));
    LOWBIT_TRY(u64(&n_kv, "gguf: file ends inside the key-value count"));
    const std::uint64_t left = n - pos;
    if (n_tensors > left / kGgufMinTensorInfoBytes)
      return Status(Errc::kTruncated, "gguf: tensor count larger than the file can hold", 8);
    if (n_kv > left / kGgufMinKvBytes)
      return Status(Errc::kTruncated, "gguf: key-value count larger than the file can hold", 16);
    // Reserve only a little up front: a count that fits the file can still be far larger than
    // what a crafted file holds, and a mapped multi-gigabyte file is not in memory. The vectors
    // then grow only with entries actually parsed, each of which consumed file bytes.
    constexpr std::uint64_t kReserveCap = 4096;
    f.kvs_.reserve(static_cast<std::size_t>(std::min(n_kv, kReserveCap)));
    f.tensors_.reserve(static_cast<std::size_t>(std::min(n_tensors, kReserveCap)));

    for (std::uint64_t i = 0; i < n_kv; ++i) {
      GgufKv kv;
      kv.offset = pos;
      LOWBIT_TRY(name(&kv.key, kGgufMaxKeyBytes, "gguf: empty key",
                      "gguf: key longer than 65535 bytes", "gguf: key is not valid UTF-8"));
      std::uint32_t type = 0;
      const std::size_t type_at = pos;
      LOWBIT_TRY(u32(&type, "gguf: file ends inside a value type"));
      if (!gguf_known_type(type))
        return Status(Errc::kUnsupported, "gguf: unknown value type",
                      static_cast<std::int64_t>(type_at));
      std::size_t used = 0;
      LOWBIT_TRY(rebase(GgufValueReader::read(type, p + pos, n - pos, 0, &kv.value, &used), pos));
      pos += used;
      f.kvs_.push_back(kv);
    }
    LOWBIT_TRY(sort_unique(
        &f.kv_order_, f.kvs_.size(),
        [&](std::uint32_t k) { return std::make_pair(f.kvs_[k].key, f.kvs_[k].offset); },
        "gguf: duplicate key"));
    if (const GgufKv* a = f.find_kv(kGgufAlignmentKey)) {
      if (a->value.type() != GgufType::kU32)
        return Status(Errc::kCorrupt, "gguf: general.alignment is not a u32",
                      static_cast<std::int64_t>(a->offset));
      const std::uint64_t v = a->value.scalar_bits();
      if (v == 0 || (v & (v - 1)) != 0)
        return Status(Errc::kCorrupt, "gguf: general.alignment is not a power of two",
                      static_cast<std::int64_t>(a->offset));
      f.alignment_ = static_cast<std::uint32_t>(v);
    }

    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo t;
      t.info_offset = pos;
      LOWBIT_TRY(name(&t.name, kGgufMaxNameBytes, "gguf: empty tensor name",
                      "gguf: tensor name longer than 64 bytes",
                      "gguf: tensor name is not valid UTF-8"));
      const std::size_t dims_at = pos;
      LOWBIT_TRY(u32(&t.n_dims, "gguf: file ends inside n_dims"));
      if (t.n_dims > kGgufMaxDims)
        return Status(Errc::kCorrupt, "gguf: tensor has more than 4 dimensions",
                      static_cast<std::int64_t>(dims_at));
      for (std::uint32_t d = 0; d < t.n_dims; ++d) {
        const std::size_t at = pos;
        std::uint64_t ne = 0;
        LOWBIT_TRY(u64(&ne, "gguf: file ends inside a tensor extent"));
        if (ne > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          return Status(Errc::kOverflow, "gguf: tensor extent does not fit int64",
                        static_cast<std::int64_t>(at));
        t.ne[d] = static_cast<std::int64_t>(ne);
      }
      const std::size_t type_at = pos;
      LOWBIT_TRY(u32(&t.type, "gguf: file ends inside a tensor type"));
      const Result<GgmlTensorSize> size = ggml_tensor_size(t.type, t.ne, t.n_dims);
      if (!size) {
        const Errc code = size.status().code();
        const std::size_t at = code == Errc::kUnsupported ? type_at : dims_at;
        return Status(code == Errc::kUnsupported || code == Errc::kOverflow ? code : Errc::kCorrupt,
                      size.status().message(), static_cast<std::int64_t>(at));
      }
      t.elements = size->elements;
      t.bytes = size->bytes;
      LOWBIT_TRY(u64(&t.offset, "gguf: file ends inside a tensor offset"));
      f.tensors_.push_back(t);
    }
    LOWBIT_TRY(sort_unique(
        &f.tensor_order_, f.tensors_.size(),
        [&](std::uint32_t k) {
          return std::make_pair(f.tensors_[k].name, f.tensors_[k].info_offset);
        },
        "gguf: duplicate tensor name"));

    // The data section starts at the header's end rounded up to the alignment.
    const std::uint64_t align = f.alignment_;
    const std::uint64_t header_end = pos;
    f.data_offset_ = (header_end + align - 1) / align * align;  // header_end < 2^63: no overflow
    if (n_tensors == 0) return f;  // ggml does not require the header padding then
    if (f.data_offset_ > n)
      return Status(Errc::kTruncated, "gguf: file ends inside the header padding",
                    static_cast<std::int64_t>(header_end));
    const std::uint64_t data_size = n - f.data_offset_;
    for (GgufTensorInfo& t : f.tensors_) {
      const std::int64_t offset_at =
          static_cast<std::int64_t>(t.info_offset + 8 + t.name.size() + 4 + 8 * t.n_dims + 4);
      if (t.offset % align != 0)
        return Status(Errc::kCorrupt, "gguf: tensor offset is not aligned", offset_at);
      if (t.offset > data_size || t.bytes > data_size - t.offset)
        return Status(Errc::kTruncated, "gguf: tensor data extends past the end of the file",
                      offset_at);
      t.data = ByteSpan(p + f.data_offset_ + t.offset, static_cast<std::size_t>(t.bytes));
    }
    // No two ranges overlap: sorted by (start, end), each starts at or after the previous end
    // (empty tensors may share an offset with their neighbour, as ggml's writer places them).
    std::vector<std::uint32_t> by_offset(f.tensors_.size());
    for (std::size_t i = 0; i < by_offset.size(); ++i) by_offset[i] = static_cast<std::uint32_t>(i);
    std::sort(by_offset.begin(), by_offset.end(), [&](std::uint32_t a, std::uint32_t b) {
      const GgufTensorInfo &x = f.tensors_[a], &y = f.tensors_[b];
      return x.offset != y.offset ? x.offset < y.offset
             : x.bytes != y.bytes ? x.bytes < y.bytes
                                  : a < b;
    });
    std::uint64_t end = 0;
    for (std::uint32_t k : by_offset) {
      const GgufTensorInfo& t = f.tensors_[k];
      if (t.offset < end)
        return Status(
            Errc::kCorrupt, "gguf: tensor data overlaps another tensor",
            static_cast<std::int64_t>(t.info_offset + 8 + t.name.size() + 4 + 8 * t.n_dims + 4));
      end = t.offset + t.bytes;
    }
    const std::uint64_t padded_end = (end + align - 1) / align * align;
    if (padded_end > data_size)
      return Status(Errc::kTruncated, "gguf: file ends inside the last tensor's padding",
                    static_cast<std::int64_t>(n));
    return f;
  }
};

}  // namespace detail

// Parses a GGUF file held in `bytes` (see the header comment for what is checked).
inline Result<GgufFile> parse_gguf(ByteSpan bytes) {
  if (bytes.data == nullptr && bytes.size != 0)
    return Status(Errc::kInvalidArgument, "gguf: null buffer");
  detail::GgufParser parser{bytes.data, bytes.size};
  return parser.parse(bytes);
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace detail {
inline void gguf_put_u32(std::vector<std::uint8_t>* out, std::uint32_t v) {
  std::uint8_t b[4];
  le_store(b, v);
  out->insert(out->end(), b, b + 4);
}
inline void gguf_put_u64(std::vector<std::uint8_t>* out, std::uint64_t v) {
  std::uint8_t b[8];
  le_store(b, v);
  out->insert(out->end(), b, b + 8);
}
inline void gguf_put_string(std::vector<std::uint8_t>* out, std::string_view s) {
  gguf_put_u64(out, s.size());
  out->insert(out->end(), s.begin(), s.end());
}
// The encoding of a value without its type tag.
inline void gguf_put_value(std::vector<std::uint8_t>* out, GgufType type, GgufType element_type,
                           std::uint64_t bits, const std::uint8_t* ptr, std::size_t size) {
  const std::size_t scalar = gguf_scalar_bytes(static_cast<std::uint32_t>(type));
  if (scalar != 0) {
    std::uint8_t b[8];
    le_store(b, bits);
    out->insert(out->end(), b, b + scalar);
  } else if (type == GgufType::kString) {
    gguf_put_u64(out, size);
    out->insert(out->end(), ptr, ptr + size);
  } else {
    gguf_put_u32(out, static_cast<std::uint32_t>(element_type));
    gguf_put_u64(out, bits);
    out->insert(out->end(), ptr, ptr + size);
  }
}
inline bool gguf_valid_name(std::string_view s, std::size_t max_bytes) noexcept {
  return !s.empty() && s.size() <= max_bytes &&
         ::lowbit::detail::is_valid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}
}  // namespace detail

// Builds an array value element by element (elements of one type; arrays may nest).
class GgufArrayBuilder {
 public:
  explicit GgufArrayBuilder(GgufType element_type) noexcept : element_type_(element_type) {}

  // Appends v, which must have the element type. kInvalidArgument otherwise, or when nesting
  // would pass kGgufMaxArrayDepth.
  Status push(const GgufValue& v) {
    if (!detail::gguf_known_type(static_cast<std::uint32_t>(element_type_)))
      return Status(Errc::kInvalidArgument, "gguf array builder: unknown element type");
    if (v.type_ != element_type_)
      return Status(Errc::kInvalidArgument,
                    "gguf array builder: value type differs from the element type");
    if (v.type_ == GgufType::kArray) {
      if (v.depth_ + 1 > kGgufMaxArrayDepth)
        return Status(Errc::kInvalidArgument,
                      "gguf array builder: arrays nested deeper than the limit");
      if (v.depth_ + 1 > depth_) depth_ = static_cast<std::uint8_t>(v.depth_ + 1);
    }
    detail::gguf_put_value(&payload_, v.type_, v.element_type_, v.bits_, v.ptr_, v.size_);
    ++count_;
    return {};
  }

  std::uint64_t size() const noexcept { return count_; }

  // The array, viewing this builder: valid while the builder lives and is not pushed to.
  GgufValue value() const noexcept {
    GgufValue v;
    v.type_ = GgufType::kArray;
    v.element_type_ = element_type_;
    v.depth_ = depth_;
    v.bits_ = count_;
    v.ptr_ = payload_.data();
    v.size_ = payload_.size();
    return v;
  }

 private:
  GgufType element_type_;
  std::uint64_t count_ = 0;
  std::uint8_t depth_ = 1;
  std::vector<std::uint8_t> payload_;
};

// Builds a GGUF file: add() metadata and add_tensor() descriptions, then write_header() and
// write_tensor_data() for each tensor in the order added, then finish(). Any Sink with
// `Status write(const std::uint8_t*, std::size_t)` works (VectorSink, FileSink, your own).
class GgufWriter {
 public:
  // Adds a key-value pair (copying strings and arrays). kInvalidArgument for an empty,
  // over-long, non-UTF-8 or repeated key, for general.alignment that is not a u32 power of two,
  // and after the header was written.
  Status add(std::string_view key, const GgufValue& value) {
    if (header_written_)
      return Status(Errc::kInvalidArgument, "gguf writer: header already written");
    if (!detail::gguf_valid_name(key, kGgufMaxKeyBytes))
      return Status(Errc::kInvalidArgument,
                    "gguf writer: key empty, longer than 65535 bytes or not UTF-8");
    if (keys_.count(std::string(key)) != 0)
      return Status(Errc::kInvalidArgument, "gguf writer: duplicate key");
    if (key == kGgufAlignmentKey) {
      const std::uint64_t v = value.scalar_bits();
      if (value.type() != GgufType::kU32 || v == 0 || (v & (v - 1)) != 0)
        return Status(Errc::kInvalidArgument,
                      "gguf writer: general.alignment must be a u32 power of two");
      alignment_ = static_cast<std::uint32_t>(v);
    }
    keys_.insert(std::string(key));
    detail::gguf_put_string(&kv_bytes_, key);
    detail::gguf_put_u32(&kv_bytes_, static_cast<std::uint32_t>(value.type_));
    detail::gguf_put_value(&kv_bytes_, value.type_, value.element_type_, value.bits_, value.ptr_,
                           value.size_);
    ++kv_count_;
    return {};
  }

  // Describes the next tensor: ggml type id, n_dims (0..4) extents ne (ne[0] contiguous).
  // Errors as ggml_tensor_size (kUnsupported type, kIndivisible row, kOverflow, kInvalidArgument
  // shape), plus kInvalidArgument for a bad or repeated name (1..64 bytes of UTF-8; ggml itself
  // loads names up to 63) and after the header was written.
  Status add_tensor(std::string_view name, std::uint32_t ggml_type, const std::int64_t* ne,
                    std::uint32_t n_dims) {
    if (header_written_)
      return Status(Errc::kInvalidArgument, "gguf writer: header already written");
    if (!detail::gguf_valid_name(name, kGgufMaxNameBytes))
      return Status(Errc::kInvalidArgument,
                    "gguf writer: tensor name empty, longer than 64 bytes or not UTF-8");
    if (n_dims > 0 && ne == nullptr)
      return Status(Errc::kInvalidArgument, "gguf writer: null extents");
    const Result<GgmlTensorSize> size = ggml_tensor_size(ggml_type, ne, n_dims);
    if (!size) return size.status();
    if (names_.count(std::string(name)) != 0)
      return Status(Errc::kInvalidArgument, "gguf writer: duplicate tensor name");
    names_.insert(std::string(name));
    Tensor t;
    t.name.assign(name.data(), name.size());
    t.type = ggml_type;
    t.n_dims = n_dims;
    for (std::uint32_t d = 0; d < n_dims; ++d) t.ne[d] = ne[d];
    t.bytes = size->bytes;
    tensors_.push_back(t);
    return {};
  }

  // Adds every key-value pair and tensor description of `file`, in its order.
  Status copy_metadata_from(const GgufFile& file) {
    for (const GgufKv& kv : file.kvs()) LOWBIT_TRY(add(kv.key, kv.value));
    for (const GgufTensorInfo& t : file.tensors())
      LOWBIT_TRY(add_tensor(t.name, t.type, t.ne, t.n_dims));
    return {};
  }

  std::uint32_t alignment() const noexcept { return alignment_; }
  std::size_t tensor_count() const noexcept { return tensors_.size(); }
  std::uint64_t tensor_bytes(std::size_t i) const noexcept { return tensors_[i].bytes; }
  // Offset of tensor i in the data section.
  std::uint64_t tensor_offset(std::size_t i) const noexcept {
    std::uint64_t at = 0;
    for (std::size_t k = 0; k < i; ++k) at += padded(tensors_[k].bytes);
    return at;
  }
  // Bytes before the data section (header and its padding).
  std::uint64_t header_bytes() const noexcept {
    std::uint64_t n = detail::kGgufFixedHeaderBytes + kv_bytes_.size();
    for (const Tensor& t : tensors_) n += 8 + t.name.size() + 4 + 8 * t.n_dims + 4 + 8;
    return padded(n);
  }
  // Bytes of the whole file.
  std::uint64_t total_bytes() const noexcept {
    return header_bytes() + tensor_offset(tensors_.size());
  }

  template <class Sink>
  Status write_header(Sink& sink) {
    if (header_written_)
      return Status(Errc::kInvalidArgument, "gguf writer: header already written");
    std::vector<std::uint8_t> h;
    h.reserve(static_cast<std::size_t>(header_bytes()));
    h.insert(h.end(), {'G', 'G', 'U', 'F'});
    detail::gguf_put_u32(&h, kGgufVersion);
    detail::gguf_put_u64(&h, tensors_.size());
    detail::gguf_put_u64(&h, kv_count_);
    h.insert(h.end(), kv_bytes_.begin(), kv_bytes_.end());
    std::uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      detail::gguf_put_string(&h, t.name);
      detail::gguf_put_u32(&h, t.n_dims);
      for (std::uint32_t d = 0; d < t.n_dims; ++d)
        detail::gguf_put_u64(&h, static_cast<std::uint64_t>(t.ne[d]));
      detail::gguf_put_u32(&h, t.type);
      detail::gguf_put_u64(&h, offset);
      offset += padded(t.bytes);
    }
    h.resize(static_cast<std::size_t>(padded(h.size())), 0);
    LOWBIT_TRY(sink.write(h.data(), h.size()));
    header_written_ = true;
    current_ = 0;
    written_ = 0;
    return skip_empty(sink);
  }

  // The next n bytes of the current tensor (tensors in the order added; a tensor may come in
  // several calls). Pads each completed tensor. kInvalidArgument before the header, past the
  // last tensor, or for more bytes than the current tensor has left.
  template <class Sink>
  Status write_tensor_data(Sink& sink, const void* data, std::size_t n) {
    if (!header_written_)
      return Status(Errc::kInvalidArgument, "gguf writer: header not written yet");
    if (n == 0) return {};
    if (data == nullptr) return Status(Errc::kInvalidArgument, "gguf writer: null tensor data");
    if (current_ >= tensors_.size())
      return Status(Errc::kInvalidArgument, "gguf writer: every tensor is written");
    if (n > tensors_[current_].bytes - written_)
      return Status(Errc::kInvalidArgument, "gguf writer: more bytes than the tensor holds",
                    static_cast<std::int64_t>(current_));
    LOWBIT_TRY(sink.write(static_cast<const std::uint8_t*>(data), n));
    written_ += n;
    return skip_empty(sink);
  }

  // ok once every tensor's bytes were written; kInvalidArgument before.
  Status finish() const noexcept {
    if (!header_written_ || current_ < tensors_.size())
      return Status(Errc::kInvalidArgument, "gguf writer: tensor data missing",
                    static_cast<std::int64_t>(current_));
    return {};
  }

  // Header and all tensors at once; data[i] points to tensor_bytes(i) bytes.
  template <class Sink>
  Status write(Sink& sink, const void* const* data) {
    LOWBIT_TRY(write_header(sink));
    for (std::size_t i = 0; i < tensors_.size(); ++i)
      LOWBIT_TRY(write_tensor_data(sink, data[i], static_cast<std::size_t>(tensors_[i].bytes)));
    return finish();
  }

 private:
  struct Tensor {
    std::string name;
    std::uint32_t type = 0;
    std::uint32_t n_dims = 0;
    std::int64_t ne[kGgufMaxDims] = {1, 1, 1, 1};
    std::uint64_t bytes = 0;
  };

  std::uint64_t padded(std::uint64_t n) const noexcept {
    return (n + alignment_ - 1) / alignment_ * alignment_;
  }

  // Pads and moves past the current tensor while it is complete (so empty tensors need no call).
  template <class Sink>
  Status skip_empty(Sink& sink) {
    static const std::uint8_t kZeros[256] = {};
    while (current_ < tensors_.size() && written_ == tensors_[current_].bytes) {
      std::uint64_t pad = padded(written_) - written_;
      while (pad > 0) {
        const std::size_t chunk =
            static_cast<std::size_t>(std::min<std::uint64_t>(pad, sizeof kZeros));
        LOWBIT_TRY(sink.write(kZeros, chunk));
        pad -= chunk;
      }
      ++current_;
      written_ = 0;
    }
    return {};
  }

  std::vector<std::uint8_t> kv_bytes_;
  std::uint64_t kv_count_ = 0;
  std::set<std::string> keys_;
  std::set<std::string> names_;
  std::vector<Tensor> tensors_;
  std::uint32_t alignment_ = kGgufDefaultAlignment;
  bool header_written_ = false;
  std::size_t current_ = 0;
  std::uint64_t written_ = 0;
};

}  // namespace io
}  // namespace lowbit
