// lowbit/format/packed.hpp: dense bit packing of b-bit integer codes, b = 1..8, and unpacking.
//
// A quantizer produces one code per byte (0..2^b-1, or -2^(b-1)..2^(b-1)-1 when symmetric). Storing
// them that way wastes 8-b bits per weight, so lowbit stores them densely, b bits each, with no
// padding between codes: 3-, 5-, 6- and 7-bit codes straddle byte boundaries.
//
// Layout. Code i occupies bits [i*b, (i+1)*b) of a little-endian bit stream, where bit k of the
// stream is bit (k % 8) of byte k / 8; each code is stored low bit first. Hence:
//
//   b = 4: byte j = (code[2j+1] << 4) | code[2j], the even code in the low nibble.
//
//             byte 0 (bit 7 .. 0)         byte 1 (bit 7 .. 0)
//           +--+--+--+--+--+--+--+--+   +--+--+--+--+--+--+--+--+
//   code    |c1|c1|c1|c1|c0|c0|c0|c0|   |c3|c3|c3|c3|c2|c2|c2|c2|
//   its bit | 3| 2| 1| 0| 3| 2| 1| 0|   | 3| 2| 1| 0| 3| 2| 1| 0|
//           +--+--+--+--+--+--+--+--+   +--+--+--+--+--+--+--+--+
//
//   b = 3: byte 0 holds c0, c1 and the low 2 bits of c2; c2 and c5 straddle byte boundaries.
//
//             byte 0 (bit 7 .. 0)         byte 1 (bit 7 .. 0)         byte 2 (bit 7 .. 0)
//           +--+--+--+--+--+--+--+--+   +--+--+--+--+--+--+--+--+   +--+--+--+--+--+--+--+--+
//   code    |c2|c2|c1|c1|c1|c0|c0|c0|   |c5|c4|c4|c4|c3|c3|c3|c2|   |c7|c7|c7|c6|c6|c6|c5|c5|
//   its bit | 1| 0| 2| 1| 0| 2| 1| 0|   | 0| 2| 1| 0| 2| 1| 0| 2|   | 2| 1| 0| 2| 1| 0| 2| 1|
//           +--+--+--+--+--+--+--+--+   +--+--+--+--+--+--+--+--+   +--+--+--+--+--+--+--+--+
//
// Eight b-bit codes are exactly b bytes, so the pattern repeats every 8 codes: group g (codes
// 8g..8g+7) is bytes [g*b, (g+1)*b), and read as a little-endian integer those bytes equal
// sum_i code[8g+i] << (i*b). The code below packs and unpacks one such group at a time in a
// 64-bit register (portable scalar code, no SIMD), then the last count % 8 codes one by one.
//
//   size:     packed_bytes(b, n) = ceil(n*b / 8) bytes; nothing else (no header, no alignment).
//   padding:  the unused high bits of the last byte are written as zero, so packing the same codes
//             always gives the same bytes (comparable with memcmp, hashable). Unpacking ignores
//             them, because a prefix of a longer stream is a valid input.
//   signed:   int8_t codes in [-2^(b-1), 2^(b-1)-1] are stored as their b-bit two's complement
//             (pack masks, unpack sign-extends), so the bytes do not depend on signedness:
//             4-bit -1 is stored as 0xF, the same field as unsigned 15. At b = 1 the signed
//             range is {-1, 0}.
//
// This is lowbit's own layout, for lowbit's own files and buffers. External conventions differ and
// get their own byte-exact headers (later), never this one:
//   ggml Q4_0 (format/ggml.hpp): within a block of 32, element j in the low nibble and element
//     j+16 in the high nibble of byte j;
//   GPTQ (format/gptq.hpp): codes packed into 32-bit words along the input dimension, 3-bit codes
//     straddling word boundaries;
//   AWQ (format/awq.hpp): eight 4-bit codes per 32-bit word, interleaved in the order
//     0 2 4 6 1 3 5 7;
//   bitsandbytes 4-bit: the even element in the high nibble, the reverse of ours.
//
// API. All functions are noexcept, never throw and never allocate; bad input is a Status:
//   packed_bytes(bits, count)                   constexpr size; 0 for invalid arguments
//   checked_packed_bytes(bits, count)           Result<size_t>, the same size or the reason
//   pack_codes<Bits>(codes, count, out, out_bytes)          uint8_t or int8_t codes
//   unpack_codes<Bits>(packed, packed_size, count, codes)   uint8_t or int8_t codes
//   pack_codes(bits, ...), unpack_codes(bits, ...)          width chosen at run time (file readers)
//
// Errors, each checked before anything is written (on error no output byte changes):
//   kInvalidArgument  bits outside 1..8 (run-time width), count < 0, a null pointer with count > 0;
//   kOutOfRange       a code outside the range of Bits-bit codes; index = the first such code;
//   kShapeMismatch    pack: out_bytes < packed_bytes(Bits, count): the caller sized its buffer
//                     for a different shape; index = the first code that would not fit;
//   kTruncated        unpack: packed_size < packed_bytes(Bits, count), the input ends before the
//                     codes it is said to hold (a short file); index = the first code not present;
//   kOverflow         the byte count does not fit size_t (only on 32-bit hosts).
// Larger buffers are fine: pack writes exactly packed_bytes(Bits, count) bytes and unpack writes
// exactly count codes; bytes past them are untouched. Pointers need no alignment. Input and output
// must not overlap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "lowbit/status.hpp"

namespace lowbit {

namespace detail {
// Whether v is representable in the unsigned type Size. A template so the comparison is not
// flagged as always false on hosts where Size is 64 bits wide.
template <class Size>
constexpr bool fits_in(std::uint64_t v) noexcept {
  return v <= std::numeric_limits<Size>::max();
}
}  // namespace detail

// ceil(count * bits / 8), the bytes that `count` codes of `bits` bits occupy. Computed as
// (count / 8) * bits + ceil((count % 8) * bits / 8), which cannot overflow int64 for bits <= 8.
// Returns 0 for bits outside 1..8 or count < 0: use checked_packed_bytes at an API boundary, where
// the arguments come from a file or a user, and this one for sizes known to be valid.
constexpr std::size_t packed_bytes(int bits, std::int64_t count) noexcept {
  if (bits < 1 || bits > 8 || count < 0) return 0;
  const std::int64_t bytes = (count / 8) * bits + ((count % 8) * bits + 7) / 8;
  return static_cast<std::size_t>(bytes);
}

// packed_bytes with its arguments validated: kInvalidArgument for bits outside 1..8 or count < 0,
// kOverflow when the byte count exceeds size_t (possible only where size_t is narrower than 64
// bits).
inline Result<std::size_t> checked_packed_bytes(int bits, std::int64_t count) noexcept {
  if (bits < 1 || bits > 8)
    return Status(Errc::kInvalidArgument, "packed codes: bit width must be 1..8");
  if (count < 0) return Status(Errc::kInvalidArgument, "packed codes: negative code count");
  const std::int64_t bytes = (count / 8) * bits + ((count % 8) * bits + 7) / 8;
  // bytes <= INT64_MAX, so only a size_t narrower than 64 bits can overflow (32-bit hosts).
  if (!detail::fits_in<std::size_t>(static_cast<std::uint64_t>(bytes)))
    return Status(Errc::kOverflow, "packed codes: byte count does not fit size_t");
  return static_cast<std::size_t>(bytes);
}

namespace detail {

// Everything about a code width the packing loops need. The static_assert is the only diagnostic a
// bad Bits produces: kBits falls back to 8 so nothing downstream fails with a second, obscure error
// (a shift by a negative or oversized amount in a constant expression).
template <int Bits>
struct PackedWidth {
  static_assert(Bits >= 1 && Bits <= 8,
                "pack_codes<Bits>/unpack_codes<Bits>: Bits must be 1..8, the widths lowbit packs; "
                "wider codes are stored as plain bytes or 16-bit integers, not bit-packed");
  static constexpr int kBits = (Bits >= 1 && Bits <= 8) ? Bits : 8;
  static constexpr unsigned kMask = (1u << kBits) - 1u;    // the low kBits bits
  static constexpr unsigned kSignBit = 1u << (kBits - 1);  // 2^(b-1)
};

// ---- Eight bytes in one 64-bit register (SWAR: SIMD within a register, portable C++).
//
// Loads and stores go byte by byte, so the code is right on any byte order. They are fold
// expressions, unrolled without help from the optimiser, and compilers merge them into single
// wide loads and stores on little-endian hosts.

constexpr std::uint64_t kEveryByte = 0x0101010101010101u;  // 1 in each byte
constexpr std::uint64_t kEvery16 = 0x0001000100010001u;    // 1 in each 16-bit lane
constexpr std::uint64_t kEvery32 = 0x0000000100000001u;    // 1 in each 32-bit lane

constexpr std::uint64_t low_bits(int n) noexcept { return (std::uint64_t{1} << n) - 1u; }

template <std::size_t... I>
inline std::uint64_t load_le(const unsigned char* p, std::index_sequence<I...>) noexcept {
  return ((static_cast<std::uint64_t>(p[I]) << (8 * I)) | ...);
}
template <std::size_t... I>
inline void store_le(std::uint64_t v, unsigned char* p, std::index_sequence<I...>) noexcept {
  ((p[I] = static_cast<unsigned char>(v >> (8 * I))), ...);
}

// The codes' bytes: unsigned char may alias any object, and int8_t has no padding bits and is
// two's complement, so a signed code's byte is its two's-complement pattern.
template <class Code>
inline const unsigned char* code_bytes(const Code* codes) noexcept {
  return reinterpret_cast<const unsigned char*>(codes);
}
template <class Code>
inline unsigned char* code_bytes(Code* codes) noexcept {
  return reinterpret_cast<unsigned char*>(codes);
}

// ---- Code types: how a code relates to its b-bit field. Every function is defined for every
// input byte.
//
// Validation adds a bias that maps the valid codes onto 0..2^b-1 and every invalid code (mod 256)
// to 2^b or above, so one unsigned test checks either kind of code.
template <class Code>
struct CodeField;

// Unsigned codes 0..2^b-1: the field is the code, the bias 0.
template <>
struct CodeField<std::uint8_t> {
  template <int Bits>
  static constexpr unsigned biased(std::uint8_t code) noexcept {
    return code;
  }
  template <int Bits>
  static constexpr std::uint64_t biased8(std::uint64_t bytes) noexcept {
    return bytes;
  }
  template <int Bits>
  static constexpr std::uint8_t from_field(unsigned field) noexcept {
    return static_cast<std::uint8_t>(field);
  }
};

// Signed codes -2^(b-1)..2^(b-1)-1: the field is the b-bit two's complement, i.e. the low b bits
// of the code's byte. The bias is 2^(b-1).
template <>
struct CodeField<std::int8_t> {
  template <int Bits>
  static constexpr unsigned biased(std::int8_t code) noexcept {
    return static_cast<std::uint8_t>(static_cast<std::uint8_t>(code) + PackedWidth<Bits>::kSignBit);
  }
  // The same for 8 bytes at once. Adding to the low 7 bits of each byte cannot carry into the next
  // byte (127 + 64 < 256), and XOR-ing the top bits back in completes the addition mod 256.
  template <int Bits>
  static constexpr std::uint64_t biased8(std::uint64_t bytes) noexcept {
    constexpr std::uint64_t kTop = 0x80u * kEveryByte;
    return ((bytes & ~kTop) + PackedWidth<Bits>::kSignBit * kEveryByte) ^ (bytes & kTop);
  }
  // Sign extension without shifting negative values: (f XOR 2^(b-1)) - 2^(b-1) maps
  // 0..2^(b-1)-1 to itself and 2^(b-1)..2^b-1 to -2^(b-1)..-1.
  template <int Bits>
  static constexpr std::int8_t from_field(unsigned field) noexcept {
    constexpr int kSign = static_cast<int>(PackedWidth<Bits>::kSignBit);
    return static_cast<std::int8_t>(static_cast<int>(field ^ PackedWidth<Bits>::kSignBit) - kSign);
  }
};

// Index of the first code outside the Bits-bit range, or -1. A pass of its own, so that a bad code
// leaves the output untouched. It ORs the biased codes of a 64-code chunk, 8 at a time, and looks
// for the culprit only in a chunk that holds one.
template <int Bits, class Code>
std::int64_t first_invalid_code(const Code* codes, std::int64_t count) noexcept {
  using Field = CodeField<Code>;
  constexpr unsigned kInvalid = 0xFFu & ~PackedWidth<Bits>::kMask;  // bits no valid code has
  if constexpr (kInvalid == 0) return -1;  // 8-bit codes: every byte is valid
  constexpr std::int64_t kChunk = 64;
  const unsigned char* bytes = code_bytes(codes);
  for (std::int64_t start = 0; start < count; start += kChunk) {
    const std::int64_t n = count - start < kChunk ? count - start : kChunk;
    std::uint64_t any = 0;
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const std::uint64_t eight = load_le(bytes + start + i, std::make_index_sequence<8>{});
      any |= Field::template biased8<Bits>(eight);
    }
    for (; i < n; ++i) any |= Field::template biased<Bits>(codes[start + i]);
    if ((any & kInvalid * kEveryByte) == 0) continue;
    for (i = 0; i < n; ++i)
      if ((Field::template biased<Bits>(codes[start + i]) & kInvalid) != 0) return start + i;
  }
  return -1;
}

// ---- The tail: fewer than 8 codes, one at a time. This is also the layout's plainest statement.

// Packs n < 8 codes into ceil(n*b/8) bytes; the unused high bits of the last byte come out zero.
template <int Bits, class Code>
inline void pack_tail(const Code* codes, int n, std::uint8_t* out) noexcept {
  using W = PackedWidth<Bits>;
  std::uint64_t acc = 0;
  for (int i = 0; i < n; ++i)
    acc |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(codes[i]) & W::kMask)
           << (i * W::kBits);
  const int bytes = (n * W::kBits + 7) / 8;
  for (int j = 0; j < bytes; ++j) out[j] = static_cast<std::uint8_t>(acc >> (8 * j));
}

// Unpacks n < 8 codes from ceil(n*b/8) bytes; reads no byte beyond them.
template <int Bits, class Code>
inline void unpack_tail(const std::uint8_t* packed, int n, Code* codes) noexcept {
  using W = PackedWidth<Bits>;
  const int bytes = (n * W::kBits + 7) / 8;
  std::uint64_t acc = 0;
  for (int j = 0; j < bytes; ++j) acc |= static_cast<std::uint64_t>(packed[j]) << (8 * j);
  for (int i = 0; i < n; ++i)
    codes[i] = CodeField<Code>::template from_field<W::kBits>(
        static_cast<unsigned>(acc >> (i * W::kBits)) & W::kMask);
}

// ---- Whole groups: 8 codes <-> b bytes through one 64-bit register.
//
// The 8 codes are loaded as a little-endian uint64, code i in byte i, and squeezed in three
// halving steps; unpacking runs the same steps backwards. For b = 3, lanes written high to low:
//
//   8-bit lanes   [.....c7][.....c6][.....c5][.....c4][.....c3][.....c2][.....c1][.....c0]
//   16-bit lanes  [..........c7c6][..........c5c4][..........c3c2][..........c1c0]  6 bits each
//   32-bit lanes  [....................c7c6c5c4][....................c3c2c1c0]      12 bits each
//   64 bits       [........................................c7c6c5c4c3c2c1c0]        24 bits
//
// Each step is (x & low halves) | ((x >> half-lane width) & low halves) << bits per half-lane.
// Nothing crosses a lane: in the three steps the half-lanes hold b, 2b and 4b significant bits,
// never more than their 8, 16 and 32 bits since b <= 8.

// Eight codes, one per byte, to their 8*b packed bits.
template <int Bits>
constexpr std::uint64_t squeeze8(std::uint64_t x) noexcept {
  constexpr int b = PackedWidth<Bits>::kBits;
  x &= PackedWidth<Bits>::kMask * kEveryByte;  // the fields (a signed code: its low b bits)
  x = (x & 0xFFu * kEvery16) | ((x >> 8) & 0xFFu * kEvery16) << b;
  x = (x & 0xFFFFu * kEvery32) | ((x >> 16) & 0xFFFFu * kEvery32) << (2 * b);
  return (x & 0xFFFFFFFFu) | (x >> 32) << (4 * b);
}

// The inverse: 8*b packed bits (nothing above them) to one b-bit field per byte.
template <int Bits>
constexpr std::uint64_t spread8(std::uint64_t x) noexcept {
  constexpr int b = PackedWidth<Bits>::kBits;
  x = (x & low_bits(4 * b)) | (x >> (4 * b)) << 32;
  x = (x & low_bits(2 * b) * kEvery32) | ((x >> (2 * b)) & low_bits(2 * b) * kEvery32) << 16;
  return (x & low_bits(b) * kEvery16) | ((x >> b) & low_bits(b) * kEvery16) << 8;
}

template <int Bits, class Code>
inline void pack_group8(const Code* codes, std::uint8_t* out) noexcept {
  constexpr std::size_t kBytes = static_cast<std::size_t>(PackedWidth<Bits>::kBits);
  const std::uint64_t x = load_le(code_bytes(codes), std::make_index_sequence<8>{});
  store_le(squeeze8<Bits>(x), out, std::make_index_sequence<kBytes>{});
}

template <int Bits, class Code>
inline void unpack_group8(const std::uint8_t* packed, Code* codes) noexcept {
  using W = PackedWidth<Bits>;
  constexpr std::size_t kBytes = static_cast<std::size_t>(W::kBits);
  std::uint64_t x = spread8<Bits>(load_le(packed, std::make_index_sequence<kBytes>{}));
  if constexpr (std::is_signed<Code>::value) {
    // Sign extension of all 8 bytes at once: (x & sign bits) >> (b-1) is 0 or 1 per byte, and
    // times the byte of high bits (which cannot carry into the next byte) sets the bits above a
    // negative field.
    const std::uint64_t negative = (x & W::kSignBit * kEveryByte) >> (W::kBits - 1);
    x |= negative * (0xFFu & ~W::kMask);
  }
  store_le(x, code_bytes(codes), std::make_index_sequence<8>{});
}

// How many whole codes of `bits` bits fit in `bytes` bytes: floor(8 * bytes / bits), computed as
// 8 * (bytes / bits) + floor(8 * (bytes % bits) / bits) so it cannot overflow. Called only with
// bytes < packed_bytes(bits, count) <= INT64_MAX, so the result fits int64.
inline std::int64_t codes_in_bytes(int bits, std::size_t bytes) noexcept {
  const std::uint64_t b = static_cast<std::uint64_t>(bits), n = bytes;
  return static_cast<std::int64_t>(8u * (n / b) + 8u * (n % b) / b);
}

template <int Bits, class Code>
Status pack(const Code* codes, std::int64_t count, std::uint8_t* out,
            std::size_t out_bytes) noexcept {
  using W = PackedWidth<Bits>;
  constexpr int kBits = W::kBits;
  if (count < 0) return {Errc::kInvalidArgument, "pack_codes: negative code count"};
  if (count == 0) return {};  // nothing to read or write; null pointers are fine
  const Result<std::size_t> needed = checked_packed_bytes(kBits, count);
  if (!needed) return needed.status();
  if (codes == nullptr) return {Errc::kInvalidArgument, "pack_codes: null codes pointer"};
  if (out == nullptr) return {Errc::kInvalidArgument, "pack_codes: null output pointer"};
  if (out_bytes < *needed) {
    const std::int64_t fits = codes_in_bytes(kBits, out_bytes);
    return {Errc::kShapeMismatch,
            "pack_codes: output buffer smaller than packed_bytes(Bits, count)", fits};
  }
  const std::int64_t bad = first_invalid_code<kBits>(codes, count);
  if (bad >= 0)
    return {Errc::kOutOfRange,
            std::is_signed<Code>::value
                ? "pack_codes: signed code outside [-2^(Bits-1), 2^(Bits-1)-1]"
                : "pack_codes: code outside [0, 2^Bits-1]",
            bad};

  // 8 bits: the layout is the identity, and int8_t is two's complement by definition.
  if constexpr (kBits == 8) {
    std::memcpy(out, codes, static_cast<std::size_t>(count));
    return {};
  }
  const std::int64_t groups = count / 8;
  for (std::int64_t g = 0; g < groups; ++g) pack_group8<kBits>(codes + g * 8, out + g * kBits);
  const int tail = static_cast<int>(count % 8);
  if (tail != 0) pack_tail<kBits>(codes + groups * 8, tail, out + groups * kBits);
  return {};
}

template <int Bits, class Code>
Status unpack(const std::uint8_t* packed, std::size_t packed_size, std::int64_t count,
              Code* codes) noexcept {
  using W = PackedWidth<Bits>;
  constexpr int kBits = W::kBits;
  if (count < 0) return {Errc::kInvalidArgument, "unpack_codes: negative code count"};
  if (count == 0) return {};
  const Result<std::size_t> needed = checked_packed_bytes(kBits, count);
  if (!needed) return needed.status();
  if (packed == nullptr) return {Errc::kInvalidArgument, "unpack_codes: null packed pointer"};
  if (codes == nullptr) return {Errc::kInvalidArgument, "unpack_codes: null codes pointer"};
  if (packed_size < *needed) {
    const std::int64_t present = codes_in_bytes(kBits, packed_size);
    return {Errc::kTruncated, "unpack_codes: packed input shorter than packed_bytes(Bits, count)",
            present};
  }

  if constexpr (kBits == 8) {
    std::memcpy(codes, packed, static_cast<std::size_t>(count));
    return {};
  }
  const std::int64_t groups = count / 8;
  for (std::int64_t g = 0; g < groups; ++g) unpack_group8<kBits>(packed + g * kBits, codes + g * 8);
  const int tail = static_cast<int>(count % 8);
  if (tail != 0) unpack_tail<kBits>(packed + groups * kBits, tail, codes + groups * 8);
  return {};
}

// Calls fn(std::integral_constant<int, b>{}) for a run-time width b in 1..8: the one switch behind
// every run-time-width entry point.
template <class Fn>
Status with_code_bits(int bits, Fn&& fn) noexcept {
  switch (bits) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    default: return {Errc::kInvalidArgument, "packed codes: bit width must be 1..8"};
  }
}

}  // namespace detail

// Packs `count` unsigned codes, each in [0, 2^Bits - 1], into the first packed_bytes(Bits, count)
// bytes of `out` (out_bytes bytes writable). See the header comment for layout and errors.
template <int Bits>
Status pack_codes(const std::uint8_t* codes, std::int64_t count, std::uint8_t* out,
                  std::size_t out_bytes) noexcept {
  return detail::pack<Bits>(codes, count, out, out_bytes);
}

// Packs `count` signed codes, each in [-2^(Bits-1), 2^(Bits-1) - 1], as Bits-bit two's complement.
template <int Bits>
Status pack_codes(const std::int8_t* codes, std::int64_t count, std::uint8_t* out,
                  std::size_t out_bytes) noexcept {
  return detail::pack<Bits>(codes, count, out, out_bytes);
}

// Unpacks `count` unsigned codes from `packed` (packed_size bytes readable) into codes[0, count).
template <int Bits>
Status unpack_codes(const std::uint8_t* packed, std::size_t packed_size, std::int64_t count,
                    std::uint8_t* codes) noexcept {
  return detail::unpack<Bits>(packed, packed_size, count, codes);
}

// Unpacks `count` signed codes, sign-extending each Bits-bit field to int8_t.
template <int Bits>
Status unpack_codes(const std::uint8_t* packed, std::size_t packed_size, std::int64_t count,
                    std::int8_t* codes) noexcept {
  return detail::unpack<Bits>(packed, packed_size, count, codes);
}

// Run-time-width versions, for readers that learn the width from a file: the same functions
// instantiated for bits = 1..8, and kInvalidArgument for any other width.
inline Status pack_codes(int bits, const std::uint8_t* codes, std::int64_t count, std::uint8_t* out,
                         std::size_t out_bytes) noexcept {
  return detail::with_code_bits(bits, [&](auto width) noexcept {
    return pack_codes<decltype(width)::value>(codes, count, out, out_bytes);
  });
}

inline Status pack_codes(int bits, const std::int8_t* codes, std::int64_t count, std::uint8_t* out,
                         std::size_t out_bytes) noexcept {
  return detail::with_code_bits(bits, [&](auto width) noexcept {
    return pack_codes<decltype(width)::value>(codes, count, out, out_bytes);
  });
}

inline Status unpack_codes(int bits, const std::uint8_t* packed, std::size_t packed_size,
                           std::int64_t count, std::uint8_t* codes) noexcept {
  return detail::with_code_bits(bits, [&](auto width) noexcept {
    return unpack_codes<decltype(width)::value>(packed, packed_size, count, codes);
  });
}

inline Status unpack_codes(int bits, const std::uint8_t* packed, std::size_t packed_size,
                           std::int64_t count, std::int8_t* codes) noexcept {
  return detail::with_code_bits(bits, [&](auto width) noexcept {
    return unpack_codes<decltype(width)::value>(packed, packed_size, count, codes);
  });
}

}  // namespace lowbit
