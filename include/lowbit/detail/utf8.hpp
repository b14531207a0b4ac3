// lowbit/detail/utf8.hpp: strict UTF-8 validation and encoding for the file readers.
//
// GGUF keys and tensor names, and every string in a safetensors JSON header, must be UTF-8
// (RFC 3629). "Strict" means what the RFC means, and what Rust's str (the safetensors reference)
// accepts: no overlong forms, no encoded surrogates U+D800..U+DFFF, nothing above U+10FFFF.
// Accepting less would let two byte strings that decode to the same text compare unequal (a
// duplicate-name check that a crafted file walks around).
//
//   code points          byte 1   byte 2   byte 3   byte 4
//   U+0000..U+007F       00..7F
//   U+0080..U+07FF       C2..DF   80..BF
//   U+0800..U+0FFF       E0       A0..BF   80..BF
//   U+1000..U+CFFF       E1..EC   80..BF   80..BF
//   U+D000..U+D7FF       ED       80..9F   80..BF              (ED A0.. would be a surrogate)
//   U+E000..U+FFFF       EE..EF   80..BF   80..BF
//   U+10000..U+3FFFF     F0       90..BF   80..BF   80..BF
//   U+40000..U+FFFFF     F1..F3   80..BF   80..BF   80..BF
//   U+100000..U+10FFFF   F4       80..8F   80..BF   80..BF
#pragma once

#include <cstddef>
#include <cstdint>

namespace lowbit {
namespace detail {

// Length (1..4) of the well-formed UTF-8 sequence at p, reading at most n bytes; 0 when the
// bytes there are not one (also when the sequence would run past n).
inline std::size_t utf8_sequence_length(const std::uint8_t* p, std::size_t n) noexcept {
  if (n == 0) return 0;
  const std::uint8_t b0 = p[0];
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  std::uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // below is overlong
    if (b0 == 0xED) hi = 0x9F;  // above is a surrogate
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // below is overlong
    if (b0 == 0xF4) hi = 0x8F;  // above is past U+10FFFF
  } else {
    return 0;  // a continuation byte, C0/C1 (always overlong) or F5..FF
  }
  if (n < len) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (std::size_t i = 2; i < len; ++i) {
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  }
  return len;
}

// Offset of the first byte that does not start a well-formed sequence, or n when all n bytes
// are valid UTF-8.
inline std::size_t utf8_invalid_offset(const std::uint8_t* p, std::size_t n) noexcept {
  std::size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {  // ASCII runs dominate names and keys
      ++i;
      continue;
    }
    const std::size_t len = utf8_sequence_length(p + i, n - i);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

inline bool is_valid_utf8(const std::uint8_t* p, std::size_t n) noexcept {
  return utf8_invalid_offset(p, n) == n;
}

// Writes the UTF-8 encoding of a scalar value (not a surrogate, at most U+10FFFF; the caller
// checks) to out and returns its length.
inline std::size_t utf8_encode(std::uint32_t cp, char out[4]) noexcept {
  if (cp < 0x80) {
    out[0] = static_cast<char>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<char>(0xC0 | (cp >> 6));
    out[1] = static_cast<char>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<char>(0xE0 | (cp >> 12));
    out[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out[2] = static_cast<char>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<char>(0xF0 | (cp >> 18));
  out[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
  out[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  out[3] = static_cast<char>(0x80 | (cp & 0x3F));
  return 4;
}

}  // namespace detail
}  // namespace lowbit
