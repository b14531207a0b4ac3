// lowbit/io/safetensors.hpp: safetensors (Hugging Face's tensor file) reader and streaming writer.
//
//   offset   size  field
//   0        8     N: header length, u64 little-endian (at most 100,000,000, the reference's cap)
//   8        N     header: UTF-8 JSON object, starting with '{', padded with spaces (0x20)
//   8 + N    ...   data section: the tensors' bytes, little-endian, C (row-major) order
//
//   header = {"__metadata__": {"key": "value", ...},                  (optional; strings only)
//             "name": {"dtype": "F16", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//
// data_offsets are relative to the data section, end exclusive. The format requires that the
// ranges, taken in offset order, tile the data section exactly: the first begins at 0, each
// begins where the previous ends, the last ends at the end of the file. No gaps means no hidden
// payload (no polyglot files), no overlap means no aliasing. And end - begin must equal the dtype's
// size times the product of the shape (a shape [] is a scalar, a 0 extent an empty tensor).
//
// Reading treats the file as hostile. The header goes through detail/json_subset.hpp (bounded
// depth and size, strict UTF-8 and escapes, integers only where integers belong) and is walked
// against this schema as it is read, so nothing is allocated for text that does not fit it.
// Errors, with the byte offset in the file as the Status index:
//   kTruncated   the file ends before the 8-byte length, the header, or the last tensor's end
//   kCorrupt     header not an object or not JSON, a tensor entry missing or repeating a field,
//                a negative extent or offset, data_offsets not two integers or not matching
//                dtype x shape, a gap or overlap between tensors, bytes after the last tensor,
//                duplicate names or metadata keys, metadata values that are not strings
//   kOverflow    an integer past int64, an element count or byte size past int64
//   kUnsupported a header longer than the cap, JSON nested deeper than 64, an unknown dtype
//                (the sub-byte F4/F6 and the rarer F8 variants included)
//
// The tensors returned view the parsed bytes (data is a ByteSpan into them): keep the bytes (the
// MappedFile) alive while you use them. Pointers are not aligned beyond what the file gives.
//
// The writer produces what the reference implementation's serialize() produces for the same
// tensors: compact JSON with "__metadata__" first, entries as {"dtype","shape","data_offsets"},
// strings escaped like serde_json, the header padded with spaces to a multiple of 8, tensors in
// the reference's order (descending dtype alignment, then name) or in the order given. Write the
// header, then stream each tensor's bytes in that order, in chunks if you like.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/detail/json_subset.hpp"
#include "lowbit/detail/utf8.hpp"
#include "lowbit/io/mapped_file.hpp"
#include "lowbit/status.hpp"

namespace lowbit {
namespace io {

// In the order of the reference implementation's Dtype enum (increasing alignment), which its
// writer sorts by; the numeric values are lowbit's own.
// clang-format off
enum class SafetensorsDtype : std::uint8_t {
  kBool, kU8, kI8, kF8_E5M2, kF8_E4M3, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64,
};
// clang-format on

constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100000000;
constexpr int kSafetensorsMaxJsonDepth = 64;

namespace detail {
struct SafetensorsDtypeInfo {
  const char* name;
  std::int64_t bytes;
};
// clang-format off
constexpr SafetensorsDtypeInfo kSafetensorsDtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},
    {"I32", 4},  {"U32", 4}, {"F32", 4},
    {"F64", 8},  {"I64", 8}, {"U64", 8},
};
// clang-format on
static_assert(sizeof(kSafetensorsDtypes) / sizeof(kSafetensorsDtypes[0]) ==
                  static_cast<std::size_t>(SafetensorsDtype::kU64) + 1,
              "one entry per SafetensorsDtype");
}  // namespace detail

constexpr const char* safetensors_dtype_name(SafetensorsDtype d) noexcept {
  return detail::kSafetensorsDtypes[static_cast<std::size_t>(d)].name;
}
constexpr std::int64_t safetensors_dtype_bytes(SafetensorsDtype d) noexcept {
  return detail::kSafetensorsDtypes[static_cast<std::size_t>(d)].bytes;
}
// The dtype spelt `name` in a header; kUnsupported for any other spelling.
inline Result<SafetensorsDtype> parse_safetensors_dtype(std::string_view name) noexcept {
  for (std::size_t i = 0;
       i < sizeof(detail::kSafetensorsDtypes) / sizeof(detail::kSafetensorsDtypes[0]); ++i) {
    if (name == detail::kSafetensorsDtypes[i].name) return static_cast<SafetensorsDtype>(i);
  }
  return Status(Errc::kUnsupported, "safetensors: unknown dtype");
}

namespace detail {
struct SafetensorsParser;
}  // namespace detail

struct SafetensorsTensor {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kU8;
  std::vector<std::int64_t> shape;
  std::int64_t elements = 1;
  std::uint64_t begin = 0;  // data_offsets, relative to the data section
  std::uint64_t end = 0;
  ByteSpan data;                   // inside the parsed buffer
  std::uint64_t entry_offset = 0;  // of the name's opening quote in the file
};

struct SafetensorsMetadata {
  std::string key;
  std::string value;
  std::uint64_t entry_offset = 0;
};

class SafetensorsFile {
 public:
  // N, the header length field.
  std::uint64_t header_bytes() const noexcept { return header_bytes_; }
  // 8 + N: where the data section starts.
  std::uint64_t data_offset() const noexcept { return 8 + header_bytes_; }
  ByteSpan bytes() const noexcept { return bytes_; }
  // Tensors in header order.
  const std::vector<SafetensorsTensor>& tensors() const noexcept { return tensors_; }
  // "__metadata__" pairs in header order.
  const std::vector<SafetensorsMetadata>& metadata() const noexcept { return metadata_; }

  const SafetensorsTensor* find(std::string_view name) const noexcept {
    auto it =
        std::lower_bound(order_.begin(), order_.end(), name,
                         [&](std::uint32_t k, std::string_view v) { return tensors_[k].name < v; });
    return it == order_.end() || tensors_[*it].name != name ? nullptr : &tensors_[*it];
  }
  const std::string* find_metadata(std::string_view key) const noexcept {
    for (const SafetensorsMetadata& m : metadata_)
      if (m.key == key) return &m.value;
    return nullptr;
  }

 private:
  friend struct detail::SafetensorsParser;
  std::uint64_t header_bytes_ = 0;
  ByteSpan bytes_;
  std::vector<SafetensorsTensor> tensors_;
  std::vector<SafetensorsMetadata> metadata_;
  std::vector<std::uint32_t> order_;  // tensor indices sorted by name
};

namespace detail {

struct SafetensorsParser {
  using JsonCursor = ::lowbit::detail::JsonCursor;
  using JsonType = ::lowbit::detail::JsonType;

  JsonCursor* c;

  static Status at(Errc code, const char* message, std::uint64_t offset) noexcept {
    return Status(code, message, static_cast<std::int64_t>(offset));
  }
  // JSON offsets are relative to the header text, which starts at byte 8.
  static Status rebase(Status s) noexcept {
    if (s.ok() || s.index() < 0) return s;
    return Status(s.code(), s.message(), s.index() + 8);
  }
  // File offset of the next value (after whitespace); a peek error stays sticky in the cursor.
  std::uint64_t value_at() noexcept {
    (void)c->peek();
    return 8 + c->offset();
  }
  Status expect(JsonType type, const char* message) noexcept {
    const std::uint64_t where = value_at();
    Result<JsonType> t = c->peek();
    if (!t) return rebase(t.status());
    if (*t != type) return at(Errc::kCorrupt, message, where);
    return {};
  }
  // A non-negative integer.
  Status count(std::int64_t* out, const char* negative) {
    const std::uint64_t where = value_at();
    Result<std::int64_t> v = c->read_integer();
    if (!v) return rebase(v.status());
    if (*v < 0) return at(Errc::kCorrupt, negative, where);
    *out = *v;
    return {};
  }

  Status metadata(std::vector<SafetensorsMetadata>* out) {
    LOWBIT_TRY(expect(JsonType::kObject, "safetensors: __metadata__ is not an object"));
    LOWBIT_TRY(rebase(c->begin_object()));
    for (;;) {
      SafetensorsMetadata m;
      Result<bool> more = c->next_member(&m.key);
      if (!more) return rebase(more.status());
      if (!*more) return {};
      m.entry_offset = 8 + c->key_offset();
      LOWBIT_TRY(expect(JsonType::kString, "safetensors: __metadata__ value is not a string"));
      LOWBIT_TRY(rebase(c->read_string(&m.value)));
      out->push_back(std::move(m));
    }
  }

  Status tensor(SafetensorsTensor* t) {
    LOWBIT_TRY(expect(JsonType::kObject, "safetensors: tensor entry is not an object"));
    LOWBIT_TRY(rebase(c->begin_object()));
    bool have_dtype = false, have_shape = false, have_offsets = false;
    std::string field, text;
    for (;;) {
      Result<bool> more = c->next_member(&field);
      if (!more) return rebase(more.status());
      if (!*more) break;
      const std::uint64_t field_at = 8 + c->key_offset();
      if (field == "dtype") {
        if (have_dtype) return at(Errc::kCorrupt, "safetensors: repeated dtype", field_at);
        have_dtype = true;
        const std::uint64_t where = value_at();
        LOWBIT_TRY(expect(JsonType::kString, "safetensors: dtype is not a string"));
        LOWBIT_TRY(rebase(c->read_string(&text)));
        const Result<SafetensorsDtype> d = parse_safetensors_dtype(text);
        if (!d) return at(d.status().code(), d.status().message(), where);
        t->dtype = *d;
      } else if (field == "shape") {
        if (have_shape) return at(Errc::kCorrupt, "safetensors: repeated shape", field_at);
        have_shape = true;
        LOWBIT_TRY(expect(JsonType::kArray, "safetensors: shape is not an array"));
        LOWBIT_TRY(rebase(c->begin_array()));
        for (;;) {
          Result<bool> next = c->next_element();
          if (!next) return rebase(next.status());
          if (!*next) break;
          std::int64_t extent = 0;
          LOWBIT_TRY(count(&extent, "safetensors: negative extent in shape"));
          t->shape.push_back(extent);
        }
      } else if (field == "data_offsets") {
        if (have_offsets) return at(Errc::kCorrupt, "safetensors: repeated data_offsets", field_at);
        have_offsets = true;
        LOWBIT_TRY(expect(JsonType::kArray, "safetensors: data_offsets is not an array"));
        const std::uint64_t where = value_at();
        LOWBIT_TRY(rebase(c->begin_array()));
        std::int64_t v[2] = {0, 0};
        for (int i = 0; i < 3; ++i) {
          Result<bool> next = c->next_element();
          if (!next) return rebase(next.status());
          if (*next != (i < 2))
            return at(Errc::kCorrupt, "safetensors: data_offsets needs exactly two integers",
                      where);
          if (i < 2) LOWBIT_TRY(count(&v[i], "safetensors: negative data offset"));
        }
        t->begin = static_cast<std::uint64_t>(v[0]);
        t->end = static_cast<std::uint64_t>(v[1]);
      } else {
        LOWBIT_TRY(rebase(c->skip_value()));  // unknown fields are ignored, as serde does
      }
    }
    if (!have_dtype || !have_shape || !have_offsets)
      return at(Errc::kCorrupt, "safetensors: tensor entry lacks dtype, shape or data_offsets",
                t->entry_offset);
    return {};
  }

  // Sorts indices by key and reports the later of two equal keys.
  template <class Key>
  static Status sort_unique(std::vector<std::uint32_t>* order, std::size_t n, Key key_of,
                            const char* message) {
    order->resize(n);
    for (std::size_t i = 0; i < n; ++i) (*order)[i] = static_cast<std::uint32_t>(i);
    std::sort(order->begin(), order->end(), [&](std::uint32_t a, std::uint32_t b) {
      const std::string_view x = key_of(a).first, y = key_of(b).first;
      return x < y || (x == y && a < b);
    });
    for (std::size_t i = 1; i < n; ++i)
      if (key_of((*order)[i]).first == key_of((*order)[i - 1]).first)
        return at(Errc::kCorrupt, message, key_of((*order)[i]).second);
    return {};
  }

  static Result<SafetensorsFile> parse(ByteSpan bytes) {
    if (bytes.data == nullptr && bytes.size != 0)
      return Status(Errc::kInvalidArgument, "safetensors: null buffer");
    SafetensorsFile f;
    f.bytes_ = bytes;
    if (bytes.size < 8)
      return at(Errc::kTruncated, "safetensors: file ends inside the header length", 0);
    const std::uint64_t n = ::lowbit::detail::le_load<std::uint64_t>(bytes.data);
    // Truncation first: a mapped file is all there, so a length past its end is a short file.
    if (n > bytes.size - 8)
      return at(Errc::kTruncated, "safetensors: header longer than the file", 0);
    if (n > kSafetensorsMaxHeaderBytes)
      return at(Errc::kUnsupported, "safetensors: header longer than 100 MB", 0);
    if (n == 0 || bytes.data[8] != '{')
      return at(Errc::kCorrupt, "safetensors: header does not start with '{'", 8);
    f.header_bytes_ = n;

    ::lowbit::detail::JsonLimits limits;
    limits.max_bytes = static_cast<std::size_t>(kSafetensorsMaxHeaderBytes);
    limits.max_depth = kSafetensorsMaxJsonDepth;
    JsonCursor cursor(std::string_view(reinterpret_cast<const char*>(bytes.data + 8),
                                       static_cast<std::size_t>(n)),
                      limits);
    SafetensorsParser p{&cursor};
    LOWBIT_TRY(rebase(cursor.begin_object()));
    bool seen_metadata = false;
    std::string key;
    for (;;) {
      Result<bool> more = cursor.next_member(&key);
      if (!more) return rebase(more.status());
      if (!*more) break;
      const std::uint64_t entry_at = 8 + cursor.key_offset();
      if (key == "__metadata__") {
        if (seen_metadata)
          return at(Errc::kCorrupt, "safetensors: repeated __metadata__", entry_at);
        seen_metadata = true;
        LOWBIT_TRY(p.metadata(&f.metadata_));
        continue;
      }
      SafetensorsTensor t;
      t.name = key;
      t.entry_offset = entry_at;
      LOWBIT_TRY(p.tensor(&t));
      f.tensors_.push_back(std::move(t));
    }
    LOWBIT_TRY(rebase(cursor.finish()));

    std::vector<std::uint32_t> meta_order;
    LOWBIT_TRY(sort_unique(
        &meta_order, f.metadata_.size(),
        [&](std::uint32_t k) {
          return std::make_pair(std::string_view(f.metadata_[k].key), f.metadata_[k].entry_offset);
        },
        "safetensors: duplicate __metadata__ key"));
    LOWBIT_TRY(sort_unique(
        &f.order_, f.tensors_.size(),
        [&](std::uint32_t k) {
          return std::make_pair(std::string_view(f.tensors_[k].name), f.tensors_[k].entry_offset);
        },
        "safetensors: duplicate tensor name"));

    // Sizes: the product of the shape, in the shape's order, must not overflow (as the
    // reference's checked fold), nor its byte size.
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
    for (SafetensorsTensor& t : f.tensors_) {
      std::int64_t elements = 1;
      for (std::int64_t e : t.shape) {
        if (e != 0 && elements > kMax / e)
          return at(Errc::kOverflow, "safetensors: element count overflows int64", t.entry_offset);
        elements *= e;
      }
      const std::int64_t size = safetensors_dtype_bytes(t.dtype);
      if (elements > kMax / size)
        return at(Errc::kOverflow, "safetensors: byte size overflows int64", t.entry_offset);
      t.elements = elements;
      if (t.end < t.begin || t.end - t.begin != static_cast<std::uint64_t>(elements * size))
        return at(Errc::kCorrupt, "safetensors: data_offsets do not match dtype and shape",
                  t.entry_offset);
    }
    // In offset order the ranges must tile [0, data size) exactly.
    std::vector<std::uint32_t> by_offset(f.tensors_.size());
    for (std::size_t i = 0; i < by_offset.size(); ++i) by_offset[i] = static_cast<std::uint32_t>(i);
    std::sort(by_offset.begin(), by_offset.end(), [&](std::uint32_t a, std::uint32_t b) {
      const SafetensorsTensor &x = f.tensors_[a], &y = f.tensors_[b];
      return x.begin != y.begin ? x.begin < y.begin : x.end != y.end ? x.end < y.end : a < b;
    });
    std::uint64_t end = 0;
    for (std::uint32_t k : by_offset) {
      const SafetensorsTensor& t = f.tensors_[k];
      if (t.begin != end)
        return at(
            Errc::kCorrupt,
            t.begin > end ? "safetensors: gap between tensors" : "safetensors: tensors overlap",
            t.entry_offset);
      end = t.end;
    }
    const std::uint64_t data_size = bytes.size - 8 - n;
    if (end > data_size)
      return at(Errc::kTruncated, "safetensors: file ends before the last tensor", bytes.size);
    if (end < data_size)
      return at(Errc::kCorrupt, "safetensors: bytes after the last tensor", 8 + n + end);
    for (SafetensorsTensor& t : f.tensors_)
      t.data = ByteSpan(bytes.data + 8 + n + t.begin, static_cast<std::size_t>(t.end - t.begin));
    return f;
  }
};

}  // namespace detail

// Parses a safetensors file held in `bytes` (see the header comment for what is checked).
inline Result<SafetensorsFile> parse_safetensors(ByteSpan bytes) {
  return detail::SafetensorsParser::parse(bytes);
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace detail {
// serde_json's string escaping: quote, backslash and control characters; nothing else.
inline void safetensors_put_json_string(std::string* out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 15]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}
inline void safetensors_put_uint(std::string* out, std::uint64_t v) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) out->push_back(digits[--n]);
}
inline bool safetensors_valid_utf8(std::string_view s) noexcept {
  return ::lowbit::detail::is_valid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}
}  // namespace detail

class SafetensorsWriter {
 public:
  enum class Order {
    kReference,  // descending dtype alignment, then name (bytewise): the reference's serialize()
    kGiven,      // the order of add_tensor()
  };

  explicit SafetensorsWriter(Order order = Order::kReference) noexcept : order_(order) {}

  // A "__metadata__" pair. kInvalidArgument for text that is not UTF-8, a repeated key, or after
  // the header was written.
  Status add_metadata(std::string_view key, std::string_view value) {
    if (header_written_)
      return Status(Errc::kInvalidArgument, "safetensors writer: header already written");
    if (!detail::safetensors_valid_utf8(key) || !detail::safetensors_valid_utf8(value))
      return Status(Errc::kInvalidArgument, "safetensors writer: metadata is not UTF-8");
    if (!metadata_keys_.insert(std::string(key)).second)
      return Status(Errc::kInvalidArgument, "safetensors writer: duplicate metadata key");
    metadata_.emplace_back(std::string(key), std::string(value));
    return {};
  }

  // Describes a tensor. kInvalidArgument for a name that is not UTF-8, is "__metadata__" or is
  // repeated, a negative extent, or after the header; kOverflow when the byte size passes int64.
  Status add_tensor(std::string_view name, SafetensorsDtype dtype, const std::int64_t* shape,
                    std::size_t rank) {
    if (header_written_)
      return Status(Errc::kInvalidArgument, "safetensors writer: header already written");
    if (!detail::safetensors_valid_utf8(name) || name == "__metadata__")
      return Status(Errc::kInvalidArgument,
                    "safetensors writer: tensor name is not UTF-8 or is __metadata__");
    if (static_cast<std::size_t>(dtype) > static_cast<std::size_t>(SafetensorsDtype::kU64))
      return Status(Errc::kInvalidArgument, "safetensors writer: unknown dtype");
    if (rank > 0 && shape == nullptr)
      return Status(Errc::kInvalidArgument, "safetensors writer: null shape");
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
    std::int64_t elements = 1;
    for (std::size_t d = 0; d < rank; ++d) {
      if (shape[d] < 0)
        return Status(Errc::kInvalidArgument, "safetensors writer: negative extent",
                      static_cast<std::int64_t>(d));
      if (shape[d] != 0 && elements > kMax / shape[d])
        return Status(Errc::kOverflow, "safetensors writer: element count overflows int64",
                      static_cast<std::int64_t>(d));
      elements *= shape[d];
    }
    if (elements > kMax / safetensors_dtype_bytes(dtype))
      return Status(Errc::kOverflow, "safetensors writer: byte size overflows int64");
    if (!names_.insert(std::string(name)).second)
      return Status(Errc::kInvalidArgument, "safetensors writer: duplicate tensor name");
    Tensor t;
    t.name.assign(name.data(), name.size());
    t.dtype = dtype;
    t.shape.assign(shape, shape + rank);
    t.bytes = static_cast<std::uint64_t>(elements * safetensors_dtype_bytes(dtype));
    tensors_.push_back(std::move(t));
    return {};
  }

  // Adds the metadata and tensor descriptions of `file`, in its header order.
  Status copy_metadata_from(const SafetensorsFile& file) {
    for (const SafetensorsMetadata& m : file.metadata()) LOWBIT_TRY(add_metadata(m.key, m.value));
    for (const SafetensorsTensor& t : file.tensors())
      LOWBIT_TRY(add_tensor(t.name, t.dtype, t.shape.data(), t.shape.size()));
    return {};
  }

  std::size_t tensor_count() const noexcept { return tensors_.size(); }
  std::uint64_t tensor_bytes(std::size_t i) const noexcept { return tensors_[i].bytes; }
  // The tensor (index in add order) whose bytes come k-th in the data section.
  std::size_t tensor_at(std::size_t k) const { return file_order()[k]; }

  // The 8-byte length and the padded JSON header; kUnsupported past the 100 MB header cap.
  Result<std::vector<std::uint8_t>> header() const {
    const std::vector<std::size_t> order = file_order();
    std::string json = "{";
    bool first = true;
    if (!metadata_.empty()) {
      json += "\"__metadata__\":{";
      for (std::size_t i = 0; i < metadata_.size(); ++i) {
        if (i != 0) json.push_back(',');
        detail::safetensors_put_json_string(&json, metadata_[i].first);
        json.push_back(':');
        detail::safetensors_put_json_string(&json, metadata_[i].second);
      }
      json.push_back('}');
      first = false;
    }
    std::uint64_t offset = 0;
    for (std::size_t k : order) {
      const Tensor& t = tensors_[k];
      if (!first) json.push_back(',');
      first = false;
      detail::safetensors_put_json_string(&json, t.name);
      json += ":{\"dtype\":\"";
      json += safetensors_dtype_name(t.dtype);
      json += "\",\"shape\":[";
      for (std::size_t d = 0; d < t.shape.size(); ++d) {
        if (d != 0) json.push_back(',');
        detail::safetensors_put_uint(&json, static_cast<std::uint64_t>(t.shape[d]));
      }
      json += "],\"data_offsets\":[";
      detail::safetensors_put_uint(&json, offset);
      json.push_back(',');
      offset += t.bytes;
      detail::safetensors_put_uint(&json, offset);
      json += "]}";
    }
    json.push_back('}');
    json.resize((json.size() + 7) / 8 * 8, ' ');  // the reference pads to 8 with spaces
    if (json.size() > kSafetensorsMaxHeaderBytes)
      return Status(Errc::kUnsupported, "safetensors writer: header longer than 100 MB");
    std::vector<std::uint8_t> out(8 + json.size());
    ::lowbit::detail::le_store<std::uint64_t>(out.data(), json.size());
    std::memcpy(out.data() + 8, json.data(), json.size());
    return out;
  }

  template <class Sink>
  Status write_header(Sink& sink) {
    if (header_written_)
      return Status(Errc::kInvalidArgument, "safetensors writer: header already written");
    Result<std::vector<std::uint8_t>> h = header();
    if (!h) return h.status();
    LOWBIT_TRY(sink.write(h->data(), h->size()));
    header_written_ = true;
    order_cache_ = file_order();
    current_ = 0;
    written_ = 0;
    skip_complete();
    return {};
  }

  // The next n bytes of the data section: tensor tensor_at(0) first, then tensor_at(1), ...;
  // a tensor may come in several calls. kInvalidArgument before the header, past the end, or for
  // more bytes than the current tensor has left.
  template <class Sink>
  Status write_tensor_data(Sink& sink, const void* data, std::size_t n) {
    if (!header_written_)
      return Status(Errc::kInvalidArgument, "safetensors writer: header not written yet");
    if (n == 0) return {};
    if (data == nullptr)
      return Status(Errc::kInvalidArgument, "safetensors writer: null tensor data");
    if (current_ >= order_cache_.size())
      return Status(Errc::kInvalidArgument, "safetensors writer: every tensor is written");
    if (n > tensors_[order_cache_[current_]].bytes - written_)
      return Status(Errc::kInvalidArgument, "safetensors writer: more bytes than the tensor holds",
                    static_cast<std::int64_t>(order_cache_[current_]));
    LOWBIT_TRY(sink.write(static_cast<const std::uint8_t*>(data), n));
    written_ += n;
    skip_complete();
    return {};
  }

  Status finish() const noexcept {
    if (!header_written_ || current_ < order_cache_.size())
      return Status(Errc::kInvalidArgument, "safetensors writer: tensor data missing");
    return {};
  }

  // Header and every tensor; data[i] holds tensor_bytes(i) bytes of tensor i (add order).
  template <class Sink>
  Status write(Sink& sink, const void* const* data) {
    LOWBIT_TRY(write_header(sink));
    for (std::size_t k = 0; k < order_cache_.size(); ++k) {
      const std::size_t i = order_cache_[k];
      LOWBIT_TRY(write_tensor_data(sink, data[i], static_cast<std::size_t>(tensors_[i].bytes)));
    }
    return finish();
  }

 private:
  struct Tensor {
    std::string name;
    SafetensorsDtype dtype = SafetensorsDtype::kU8;
    std::vector<std::int64_t> shape;
    std::uint64_t bytes = 0;
  };

  std::vector<std::size_t> file_order() const {
    std::vector<std::size_t> order(tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (order_ == Order::kReference) {
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        const Tensor &x = tensors_[a], &y = tensors_[b];
        if (x.dtype != y.dtype) return x.dtype > y.dtype;
        return x.name < y.name;  // char_traits<char> compares as unsigned char: bytewise, as Rust
      });
    }
    return order;
  }

  void skip_complete() noexcept {
    while (current_ < order_cache_.size() && written_ == tensors_[order_cache_[current_]].bytes) {
      ++current_;
      written_ = 0;
    }
  }

  Order order_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::set<std::string> metadata_keys_;
  std::set<std::string> names_;
  std::vector<Tensor> tensors_;
  bool header_written_ = false;
  std::vector<std::size_t> order_cache_;
  std::size_t current_ = 0;
  std::uint64_t written_ = 0;
};

}  // namespace io
}  // namespace lowbit
