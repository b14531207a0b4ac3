// lowbit/detail/json_subset.hpp: a small pull parser for the JSON in safetensors headers.
//
// Safetensors headers are JSON (RFC 8259) written by serde_json. A header comes from the
// internet, so this parser is built for hostile text rather than for convenience:
//   - it is a cursor, not a document tree: the caller walks the schema it expects and the text
//     is rejected at the first byte that does not fit, so no allocation ever depends on a count
//     the text merely claims (decoded strings are the only allocation, at most as long as the
//     text they come from, and only the calls taking a std::string* make one);
//   - nesting is bounded (JsonLimits::max_depth, default 64) and nothing recurses: the cursor
//     keeps one byte of state per open container in a fixed array, and skip_value() is a loop;
//   - the text is bounded (JsonLimits::max_bytes, default 100 MB, the safetensors reference's
//     header cap);
//   - strings are validated completely: raw bytes must be strict UTF-8 (detail/utf8.hpp), control
//     characters must be escaped, escapes are the eight of RFC 8259 §7 and \uXXXX, and a \u
//     surrogate must come as a high-low pair (a lone half is not a character);
//   - numbers follow the RFC grammar exactly (no leading zeros, no '+', no bare '.'); integers are
//     read as int64, and a number outside int64 or with a fraction or exponent is refused where
//     an integer is needed (serde_json refuses 1e3 or 2.0 for a usize as well).
//
// Errors are sticky: after the first, every call returns it. Each carries the byte offset of the
// culprit from the start of the text: kTruncated when the text ends inside a value, kCorrupt for
// a byte that breaks the grammar (or a value of the wrong type for the schema the caller asks
// for), kOverflow for an integer outside int64, kUnsupported when a limit is exceeded, and
// kInvalidArgument when the caller breaks the protocol (next_member() outside an object, ...).
//
// Walking an object (the caller consumes exactly one value per member):
//
//   JsonCursor c(text, limits);
//   LOWBIT_TRY(c.begin_object());
//   std::string key;
//   for (;;) {
//     Result<bool> more = c.next_member(&key);     // reads `"key":`, or the closing '}'
//     if (!more) return more.status();
//     if (!*more) break;
//     if (key == "shape") { ... c.begin_array(); while (next_element) read_integer(); ... }
//     else LOWBIT_TRY(c.skip_value());
//   }
//   LOWBIT_TRY(c.finish());                        // only whitespace may follow
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>

#include "lowbit/detail/utf8.hpp"
#include "lowbit/status.hpp"

namespace lowbit {
namespace detail {

struct JsonLimits {
  std::size_t max_bytes = 100000000;  // the safetensors reference's MAX_HEADER_SIZE
  int max_depth = 64;                 // open objects and arrays at once; at most kJsonDepthCap
};

// The cursor's fixed per-level state array bounds any JsonLimits::max_depth.
constexpr int kJsonDepthCap = 256;

enum class JsonType : std::uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };

class JsonCursor {
 public:
  JsonCursor(std::string_view text, JsonLimits limits = {}) noexcept
      : p_(reinterpret_cast<const std::uint8_t*>(text.data())),
        n_(text.size()),
        max_depth_(limits.max_depth < 0               ? 0
                   : limits.max_depth > kJsonDepthCap ? kJsonDepthCap
                                                      : limits.max_depth) {
    if (n_ > limits.max_bytes)
      error_ = Status(Errc::kUnsupported, "json: text larger than the size limit",
                      static_cast<std::int64_t>(limits.max_bytes));
  }

  // The first error, or ok.
  Status status() const noexcept { return error_; }
  // Bytes consumed so far.
  std::size_t offset() const noexcept { return pos_; }
  // Objects and arrays open at the cursor.
  int depth() const noexcept { return depth_; }
  // Offset of the opening quote of the key that next_member() read last.
  std::size_t key_offset() const noexcept { return key_offset_; }

  // The type of the value that starts at the next non-whitespace byte (consumes nothing else).
  Result<JsonType> peek() noexcept {
    if (!error_.ok()) return error_;
    skip_whitespace();
    if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends where a value should start");
    switch (p_[pos_]) {
      case '{':
        return JsonType::kObject;
      case '[':
        return JsonType::kArray;
      case '"':
        return JsonType::kString;
      case 't':
      case 'f':
        return JsonType::kBool;
      case 'n':
        return JsonType::kNull;
      default:
        if (p_[pos_] == '-' || (p_[pos_] >= '0' && p_[pos_] <= '9')) return JsonType::kNumber;
        return fail(Errc::kCorrupt, "json: a value cannot start with this byte");
    }
  }

  // Consumes '{' (or '['), opening a container.
  Status begin_object() noexcept { return open(JsonType::kObject); }
  Status begin_array() noexcept { return open(JsonType::kArray); }

  // In an object: reads the next member's key and its ':' and returns true (then the caller
  // consumes the value), or reads the closing '}' and returns false. `key` may be nullptr.
  Result<bool> next_member(std::string* key) {
    if (!error_.ok()) return error_;
    if (depth_ == 0 || (stack_[depth_ - 1] & kObjectBit) == 0)
      return fail(Errc::kInvalidArgument, "json: next_member() outside an object");
    LOWBIT_TRY(separator('}'));
    if (closed_) return false;
    if (p_[pos_] != '"') return fail(Errc::kCorrupt, "json: expected a string key");
    key_offset_ = pos_;
    if (key != nullptr) key->clear();
    LOWBIT_TRY(scan_string(key));
    skip_whitespace();
    if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends after a key");
    if (p_[pos_] != ':') return fail(Errc::kCorrupt, "json: expected ':' after a key");
    ++pos_;
    return true;
  }

  // In an array: returns true when another element follows (the caller consumes it), or reads
  // the closing ']' and returns false.
  Result<bool> next_element() noexcept {
    if (!error_.ok()) return error_;
    if (depth_ == 0 || (stack_[depth_ - 1] & kObjectBit) != 0)
      return fail(Errc::kInvalidArgument, "json: next_element() outside an array");
    LOWBIT_TRY(separator(']'));
    return !closed_;
  }

  // A string value, decoded (escapes resolved) into *out.
  Status read_string(std::string* out) {
    LOWBIT_TRY(expect(JsonType::kString, "json: expected a string"));
    if (out != nullptr) out->clear();
    return scan_string(out);
  }

  // An integer value in int64. A fraction or exponent is kCorrupt, a magnitude past int64
  // kOverflow; both at the number's first byte.
  Result<std::int64_t> read_integer() noexcept {
    LOWBIT_TRY(expect(JsonType::kNumber, "json: expected an integer"));
    const std::size_t start = pos_;
    Number num;
    LOWBIT_TRY(scan_number(&num));
    if (!num.integral)
      return fail(Errc::kCorrupt, "json: expected an integer, found a fraction or exponent", start);
    constexpr std::uint64_t kMaxPositive =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    if (num.too_large || num.magnitude > kMaxPositive + (num.negative ? 1u : 0u))
      return fail(Errc::kOverflow, "json: integer outside the int64 range", start);
    if (!num.negative) return static_cast<std::int64_t>(num.magnitude);
    if (num.magnitude == kMaxPositive + 1u) return std::numeric_limits<std::int64_t>::min();
    return -static_cast<std::int64_t>(num.magnitude);
  }

  Result<bool> read_bool() noexcept {
    LOWBIT_TRY(expect(JsonType::kBool, "json: expected true or false"));
    if (p_[pos_] == 't') {
      LOWBIT_TRY(literal("true"));
      return true;
    }
    LOWBIT_TRY(literal("false"));
    return false;
  }

  Status read_null() noexcept {
    LOWBIT_TRY(expect(JsonType::kNull, "json: expected null"));
    return literal("null");
  }

  // Consumes one whole value of any type, validating it exactly as the read_* calls would.
  // A loop over the same primitives: its stack is the cursor's, bounded by max_depth.
  Status skip_value() {
    const int base = depth_;
    for (;;) {
      Result<JsonType> type = peek();
      if (!type) return type.status();
      switch (*type) {
        case JsonType::kObject:
          LOWBIT_TRY(begin_object());
          break;
        case JsonType::kArray:
          LOWBIT_TRY(begin_array());
          break;
        case JsonType::kString:
          LOWBIT_TRY(scan_string(nullptr));
          break;
        case JsonType::kNumber: {
          Number ignored;
          LOWBIT_TRY(scan_number(&ignored));
          break;
        }
        case JsonType::kBool:
          LOWBIT_TRY(read_bool());
          break;
        case JsonType::kNull:
          LOWBIT_TRY(read_null());
          break;
      }
      // Find the next value to read, closing finished containers on the way back to `base`.
      for (;;) {
        if (depth_ == base) return {};
        const Result<bool> more =
            (stack_[depth_ - 1] & kObjectBit) != 0 ? next_member(nullptr) : next_element();
        if (!more) return more.status();
        if (*more) break;
      }
    }
  }

  // After the top-level value: only whitespace may remain.
  Status finish() noexcept {
    if (!error_.ok()) return error_;
    if (depth_ != 0) return fail(Errc::kInvalidArgument, "json: finish() inside a container");
    skip_whitespace();
    if (pos_ != n_) return fail(Errc::kCorrupt, "json: bytes after the top-level value");
    return {};
  }

 private:
  static constexpr std::uint8_t kObjectBit = 1;    // the open container is an object
  static constexpr std::uint8_t kNotEmptyBit = 2;  // it has had a member or element

  struct Number {
    bool negative = false;
    bool integral = true;    // no fraction, no exponent
    bool too_large = false;  // the digits overflowed uint64
    std::uint64_t magnitude = 0;
  };

  Status fail(Errc code, const char* message) noexcept { return fail(code, message, pos_); }
  Status fail(Errc code, const char* message, std::size_t at) noexcept {
    if (error_.ok()) error_ = Status(code, message, static_cast<std::int64_t>(at));
    return error_;
  }

  void skip_whitespace() noexcept {
    while (pos_ < n_ &&
           (p_[pos_] == ' ' || p_[pos_] == '\n' || p_[pos_] == '\r' || p_[pos_] == '\t'))
      ++pos_;
  }

  Status expect(JsonType want, const char* message) noexcept {
    Result<JsonType> type = peek();
    if (!type) return type.status();
    if (*type != want) return fail(Errc::kCorrupt, message);
    return {};
  }

  Status open(JsonType kind) noexcept {
    LOWBIT_TRY(expect(
        kind, kind == JsonType::kObject ? "json: expected an object" : "json: expected an array"));
    if (depth_ >= max_depth_)
      return fail(Errc::kUnsupported, "json: nesting deeper than the limit");
    stack_[depth_++] = kind == JsonType::kObject ? kObjectBit : 0;
    ++pos_;
    return {};
  }

  // Between the values of the open container: reads `close` (setting closed_ and popping) or,
  // after the first value, a ',' and the whitespace after it. Leaves pos_ at the next value.
  Status separator(char close) noexcept {
    closed_ = false;
    skip_whitespace();
    if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends inside an object or array");
    std::uint8_t& state = stack_[depth_ - 1];
    if (p_[pos_] == static_cast<std::uint8_t>(close)) {
      ++pos_;
      --depth_;
      closed_ = true;
      return {};
    }
    if ((state & kNotEmptyBit) != 0) {
      if (p_[pos_] != ',')
        return fail(Errc::kCorrupt,
                    close == '}' ? "json: expected ',' or '}'" : "json: expected ',' or ']'");
      ++pos_;
      skip_whitespace();
      if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends after ','");
    }
    state = static_cast<std::uint8_t>(state | kNotEmptyBit);
    return {};
  }

  Status literal(const char* word) noexcept {
    const std::size_t len = std::strlen(word);
    for (std::size_t i = 0; i < len; ++i) {
      if (pos_ + i >= n_) return fail(Errc::kTruncated, "json: text ends inside a literal", n_);
      if (p_[pos_ + i] != static_cast<std::uint8_t>(word[i]))
        return fail(Errc::kCorrupt, "json: misspelt true, false or null", pos_ + i);
    }
    pos_ += len;
    return {};
  }

  static int hex_value(std::uint8_t c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits at pos_ (after "\u").
  Status hex4(std::uint32_t* unit) noexcept {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends inside a \\u escape");
      const int h = hex_value(p_[pos_]);
      if (h < 0) return fail(Errc::kCorrupt, "json: \\u needs four hex digits");
      v = v * 16 + static_cast<std::uint32_t>(h);
      ++pos_;
    }
    *unit = v;
    return {};
  }

  // The string starting at pos_ (a '"'), decoded into *out unless out is nullptr.
  Status scan_string(std::string* out) {
    ++pos_;  // the opening quote
    for (;;) {
      // A run of bytes that need no decoding, appended at once.
      const std::size_t run = pos_;
      while (pos_ < n_ && p_[pos_] >= 0x20 && p_[pos_] < 0x80 && p_[pos_] != '"' &&
             p_[pos_] != '\\')
        ++pos_;
      if (out != nullptr && pos_ > run)
        out->append(reinterpret_cast<const char*>(p_ + run), pos_ - run);
      if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends inside a string");
      const std::uint8_t c = p_[pos_];
      if (c == '"') {
        ++pos_;
        return {};
      }
      if (c < 0x20) return fail(Errc::kCorrupt, "json: unescaped control character in a string");
      if (c >= 0x80) {
        const std::size_t len = utf8_sequence_length(p_ + pos_, n_ - pos_);
        if (len == 0) return fail(Errc::kCorrupt, "json: invalid UTF-8 in a string");
        if (out != nullptr) out->append(reinterpret_cast<const char*>(p_ + pos_), len);
        pos_ += len;
        continue;
      }
      LOWBIT_TRY(escape(out));  // c == '\\'
    }
  }

  // The escape at pos_ (a '\\').
  Status escape(std::string* out) {
    const std::size_t start = pos_;
    ++pos_;
    if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends inside an escape");
    char simple = 0;
    switch (p_[pos_]) {
      case '"':
        simple = '"';
        break;
      case '\\':
        simple = '\\';
        break;
      case '/':
        simple = '/';
        break;
      case 'b':
        simple = '\b';
        break;
      case 'f':
        simple = '\f';
        break;
      case 'n':
        simple = '\n';
        break;
      case 'r':
        simple = '\r';
        break;
      case 't':
        simple = '\t';
        break;
      case 'u':
        break;
      default:
        return fail(Errc::kCorrupt, "json: unknown escape");
    }
    ++pos_;
    if (simple != 0) {
      if (out != nullptr) out->push_back(simple);
      return {};
    }
    std::uint32_t cp = 0;
    LOWBIT_TRY(hex4(&cp));
    if (cp >= 0xDC00 && cp <= 0xDFFF)
      return fail(Errc::kCorrupt, "json: \\u low surrogate without a high one", start);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      // A high surrogate stands for nothing alone: a low one must follow at once.
      for (const char want : {'\\', 'u'}) {
        if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends after a high surrogate");
        if (p_[pos_] != static_cast<std::uint8_t>(want))
          return fail(Errc::kCorrupt, "json: \\u high surrogate without a low one", start);
        ++pos_;
      }
      std::uint32_t low = 0;
      LOWBIT_TRY(hex4(&low));
      if (low < 0xDC00 || low > 0xDFFF)
        return fail(Errc::kCorrupt, "json: \\u high surrogate without a low one", start);
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    if (out != nullptr) {
      char utf8[4];
      out->append(utf8, utf8_encode(cp, utf8));
    }
    return {};
  }

  bool digit_at(std::size_t i) const noexcept { return i < n_ && p_[i] >= '0' && p_[i] <= '9'; }

  // The number at pos_: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  Status scan_number(Number* num) noexcept {
    if (p_[pos_] == '-') {
      num->negative = true;
      ++pos_;
    }
    if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends inside a number");
    if (p_[pos_] == '0') {
      ++pos_;
      if (digit_at(pos_)) return fail(Errc::kCorrupt, "json: number with a leading zero");
    } else if (digit_at(pos_)) {
      while (digit_at(pos_)) {
        const std::uint64_t d = p_[pos_] - '0';
        if (num->magnitude > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
          num->too_large = true;
        else
          num->magnitude = num->magnitude * 10 + d;
        ++pos_;
      }
    } else {
      return fail(Errc::kCorrupt, "json: expected a digit");
    }
    if (pos_ < n_ && p_[pos_] == '.') {
      num->integral = false;
      ++pos_;
      LOWBIT_TRY(digits("json: expected a digit after '.'"));
    }
    if (pos_ < n_ && (p_[pos_] == 'e' || p_[pos_] == 'E')) {
      num->integral = false;
      ++pos_;
      if (pos_ < n_ && (p_[pos_] == '+' || p_[pos_] == '-')) ++pos_;
      LOWBIT_TRY(digits("json: expected a digit in the exponent"));
    }
    return {};
  }

  Status digits(const char* message) noexcept {
    if (pos_ >= n_) return fail(Errc::kTruncated, "json: text ends inside a number");
    if (!digit_at(pos_)) return fail(Errc::kCorrupt, message);
    while (digit_at(pos_)) ++pos_;
    return {};
  }

  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
  std::size_t key_offset_ = 0;
  int depth_ = 0;
  int max_depth_;
  bool closed_ = false;
  Status error_;
  std::uint8_t stack_[kJsonDepthCap] = {};
};

// Checks that `text` is one JSON value (and whitespace) within the limits.
inline Status validate_json(std::string_view text, JsonLimits limits = {}) {
  JsonCursor cursor(text, limits);
  LOWBIT_TRY(cursor.skip_value());
  return cursor.finish();
}

}  // namespace detail
}  // namespace lowbit
