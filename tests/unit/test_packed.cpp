// Tests for lowbit/format/packed.hpp: the layout is pinned by hand-computed bytes and by a bit-by-bit
// reference packer written here from the layout's definition; round trips, every error path, and
// the promises about bytes the functions must not touch.
#include "lowbit/format/packed.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using lowbit::Errc;
using lowbit::Status;

// Fixed seed, reported by INFO with every failure so a red run can be reproduced. std::mt19937's
// output sequence is fixed by the standard; its raw output is masked, not fed to a distribution,
// whose algorithm differs between standard libraries.
constexpr std::uint32_t kSeed = 0x10B17u;

// Counts that hit the edges of the 8-code groups: 0, short tails, exact groups, primes, and
// enough to leave the first 64-code validation chunk.
const std::int64_t kCounts[] = {0,  1,  2,  3,  5,  7,   8,   9,   13,  15,   16,  17,
                                31, 63, 64, 65, 97, 127, 128, 129, 1000, 1009, 4099};

constexpr std::uint8_t kSentinel = 0xA5;

// Calls fn(std::integral_constant<int, b>{}) for b = 1..8.
template <class Fn, int... I>
void for_each_width_impl(Fn& fn, std::integer_sequence<int, I...>) {
  (fn(std::integral_constant<int, I + 1>{}), ...);
}
template <class Fn>
void for_each_width(Fn fn) {
  for_each_width_impl(fn, std::make_integer_sequence<int, 8>{});
}

// The layout's definition, one bit at a time: bit t of code i is stream bit k = i*b + t, which is
// bit k % 8 of byte k / 8. `fields` are the b-bit fields (for signed codes, their two's complement).
std::vector<std::uint8_t> reference_pack(int bits, const std::vector<unsigned>& fields) {
  const std::size_t n = fields.size();
  std::vector<std::uint8_t> out((n * static_cast<std::size_t>(bits) + 7) / 8, 0);
  for (std::size_t i = 0; i < n; ++i)
    for (int t = 0; t < bits; ++t) {
      const std::size_t k = i * static_cast<std::size_t>(bits) + static_cast<std::size_t>(t);
      if ((fields[i] >> t) & 1u) out[k / 8] = static_cast<std::uint8_t>(out[k / 8] | (1u << (k % 8)));
    }
  return out;
}

std::vector<std::uint8_t> random_unsigned(int bits, std::int64_t count, std::mt19937& rng) {
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(count));
  for (auto& c : codes) c = static_cast<std::uint8_t>(rng() & ((1u << bits) - 1u));
  return codes;
}

std::vector<std::int8_t> random_signed(int bits, std::int64_t count, std::mt19937& rng) {
  const int lo = -(1 << (bits - 1));
  std::vector<std::int8_t> codes(static_cast<std::size_t>(count));
  for (auto& c : codes) c = static_cast<std::int8_t>(lo + static_cast<int>(rng() % (1u << bits)));
  return codes;
}

std::vector<unsigned> fields_of(int bits, const std::vector<std::int8_t>& codes) {
  std::vector<unsigned> f;
  for (std::int8_t c : codes) f.push_back(static_cast<unsigned>(c + 256) & ((1u << bits) - 1u));
  return f;
}
std::vector<unsigned> fields_of(int, const std::vector<std::uint8_t>& codes) {
  return std::vector<unsigned>(codes.begin(), codes.end());
}

template <int Bits>
std::vector<std::uint8_t> pack_ok(const std::vector<std::uint8_t>& codes) {
  std::vector<std::uint8_t> out(lowbit::packed_bytes(Bits, static_cast<std::int64_t>(codes.size())));
  const Status s = lowbit::pack_codes<Bits>(codes.data(), static_cast<std::int64_t>(codes.size()),
                                            out.data(), out.size());
  REQUIRE_MESSAGE(s.ok(), s.message());
  return out;
}
template <int Bits>
std::vector<std::uint8_t> pack_ok(const std::vector<std::int8_t>& codes) {
  std::vector<std::uint8_t> out(lowbit::packed_bytes(Bits, static_cast<std::int64_t>(codes.size())));
  const Status s = lowbit::pack_codes<Bits>(codes.data(), static_cast<std::int64_t>(codes.size()),
                                            out.data(), out.size());
  REQUIRE_MESSAGE(s.ok(), s.message());
  return out;
}

using Bytes = std::vector<std::uint8_t>;

}  // namespace

// ------------------------------------------------------------------------------------------------
TEST_CASE("packed_bytes is ceil(count * bits / 8)") {
  static_assert(lowbit::packed_bytes(3, 8) == 3, "8 three-bit codes are 3 bytes");
  static_assert(lowbit::packed_bytes(4, 3) == 2, "3 nibbles need 2 bytes");
  static_assert(lowbit::packed_bytes(7, 1) == 1, "one code needs one byte");
  static_assert(lowbit::packed_bytes(1, 0) == 0, "no codes, no bytes");
  static_assert(lowbit::packed_bytes(0, 8) == 0 && lowbit::packed_bytes(9, 8) == 0 &&
                    lowbit::packed_bytes(4, -1) == 0,
                "invalid arguments give 0");
  for (int bits = 1; bits <= 8; ++bits)
    for (std::int64_t count = 0; count <= 200; ++count) {
      const auto expected = static_cast<std::size_t>((count * bits + 7) / 8);
      CHECK(lowbit::packed_bytes(bits, count) == expected);
      const lowbit::Result<std::size_t> checked = lowbit::checked_packed_bytes(bits, count);
      REQUIRE(checked.has_value());
      CHECK(*checked == expected);
    }
  // count * bits would overflow int64; the formula does not.
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (sizeof(std::size_t) >= sizeof(std::int64_t)) {
    CHECK(lowbit::packed_bytes(8, kMax) == static_cast<std::size_t>(kMax));
    CHECK(lowbit::packed_bytes(1, kMax) == static_cast<std::size_t>(kMax / 8 + 1));
    CHECK(lowbit::packed_bytes(3, kMax) == static_cast<std::size_t>(kMax / 8 * 3 + 3));
    const lowbit::Result<std::size_t> big = lowbit::checked_packed_bytes(7, kMax);
    REQUIRE(big.has_value());
    CHECK(*big == static_cast<std::size_t>(kMax / 8 * 7 + 7));  // kMax % 8 == 7: 49 bits, 7 bytes
  }
}

TEST_CASE("checked_packed_bytes reports invalid arguments") {
  for (int bits : {0, 9, -1, 16, INT_MIN, INT_MAX}) {
    CAPTURE(bits);
    const lowbit::Result<std::size_t> r = lowbit::checked_packed_bytes(bits, 10);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == Errc::kInvalidArgument);
  }
  for (std::int64_t count : {std::int64_t{-1}, std::numeric_limits<std::int64_t>::min()}) {
    const lowbit::Result<std::size_t> r = lowbit::checked_packed_bytes(4, count);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == Errc::kInvalidArgument);
  }
  // kOverflow exists only where size_t is narrower than int64; a 64-bit host cannot reach it.
  if (sizeof(std::size_t) < sizeof(std::int64_t)) {
    const lowbit::Result<std::size_t> r =
        lowbit::checked_packed_bytes(8, std::numeric_limits<std::int64_t>::max());
    REQUIRE_FALSE(r.has_value());
    CHECK(r.status().code() == Errc::kOverflow);
  }
}

// ------------------------------------------------------------------------------------------------
// The layout itself, from bytes worked out by hand (not by any packer), so that a change of bit
// order or nibble order fails here even if pack and unpack change together.
TEST_CASE("layout: hand-computed bytes") {
  SUBCASE("1-bit: code i is bit i % 8 of byte i / 8") {
    // codes 1 0 1 1 0 0 0 1 | 1 1  ->  byte 0 = 0b1000'1101 = 0x8D, byte 1 = 0b0000'0011 = 0x03
    CHECK(pack_ok<1>(Bytes{1, 0, 1, 1, 0, 0, 0, 1, 1, 1}) == Bytes{0x8D, 0x03});
  }
  SUBCASE("2-bit") {
    // codes 3 0 1 2 -> 0b10'01'00'11 = 0x93 (code 0 in bits 1..0)
    CHECK(pack_ok<2>(Bytes{3, 0, 1, 2}) == Bytes{0x93});
  }
  SUBCASE("3-bit: codes straddle byte boundaries") {
    // codes 1 2 3 4 5 6 7 0 (binary 001 010 011 100 101 110 111 000), stream bits 0..23:
    //   byte 0 = bits 7..0  = c2[1:0] c1[2:0] c0[2:0] = 11 010 001     = 0xD1
    //   byte 1 = bits 15..8 = c5[0] c4 c3 c2[2]        = 0 101 100 0    = 0x58
    //   byte 2 = bits 23..16 = c7 c6 c5[2:1]           = 000 111 11     = 0x1F
    // Cross-check: 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 | 6<<15 | 7<<18 = 0x1F58D1, little-endian.
    CHECK(pack_ok<3>(Bytes{1, 2, 3, 4, 5, 6, 7, 0}) == Bytes{0xD1, 0x58, 0x1F});
    // A tail: codes 7 7 7 -> 9 bits: byte 0 = 11 111 111 = 0xFF, byte 1 = 0000000 1 = 0x01.
    CHECK(pack_ok<3>(Bytes{7, 7, 7}) == Bytes{0xFF, 0x01});
  }
  SUBCASE("4-bit: even code in the low nibble") {
    // codes 1 2 3 4 0xA -> 0x21 0x43 0x0A (the high nibble of the last byte is padding, zero)
    CHECK(pack_ok<4>(Bytes{0x1, 0x2, 0x3, 0x4, 0xA}) == Bytes{0x21, 0x43, 0x0A});
  }
  SUBCASE("5-bit") {
    // codes 0x1F 0x00 0x11 (11111 00000 10001), 15 bits:
    //   byte 0 = c1[2:0] c0 = 000 11111 = 0x1F; byte 1 = pad c2 c1[4:3] = 0 10001 00 = 0x44
    CHECK(pack_ok<5>(Bytes{0x1F, 0x00, 0x11}) == Bytes{0x1F, 0x44});
  }
  SUBCASE("6-bit") {
    // codes 0x3F 0x01 0x20 0x15 (111111 000001 100000 010101), 24 bits:
    //   byte 0 = c1[1:0] c0       = 01 111111     = 0x7F
    //   byte 1 = c2[3:0] c1[5:2]  = 0000 0000     = 0x00
    //   byte 2 = c3 c2[5:4]       = 010101 10     = 0x56
    CHECK(pack_ok<6>(Bytes{0x3F, 0x01, 0x20, 0x15}) == Bytes{0x7F, 0x00, 0x56});
  }
  SUBCASE("7-bit") {
    // codes 0x7F 0x00 0x55 0x01 (1111111 0000000 1010101 0000001), 28 bits in 4 bytes:
    //   byte 0 = c1[0] c0           = 0 1111111         = 0x7F
    //   byte 1 = c2[1:0] c1[6:1]    = 01 000000         = 0x40
    //   byte 2 = c3[2:0] c2[6:2]    = 001 10101         = 0x35
    //   byte 3 = pad c3[6:3]        = 0000 0000         = 0x00
    CHECK(pack_ok<7>(Bytes{0x7F, 0x00, 0x55, 0x01}) == Bytes{0x7F, 0x40, 0x35, 0x00});
  }
  SUBCASE("8-bit: the identity") {
    CHECK(pack_ok<8>(Bytes{0x00, 0xFF, 0x12, 0x80}) == Bytes{0x00, 0xFF, 0x12, 0x80});
  }
  SUBCASE("signed codes are stored as b-bit two's complement") {
    // 4-bit -1 7 -8 0 1 -> fields F 7 8 0 1 -> 0x7F 0x08 0x01
    CHECK(pack_ok<4>(std::vector<std::int8_t>{-1, 7, -8, 0, 1}) == Bytes{0x7F, 0x08, 0x01});
    // 3-bit -4 -1 3 -> fields 100 111 011 -> byte 0 = 11 111 100 = 0xFC, byte 1 = 0x00
    CHECK(pack_ok<3>(std::vector<std::int8_t>{-4, -1, 3}) == Bytes{0xFC, 0x00});
    // 1-bit: the range is {-1, 0}; -1 is the field 1
    CHECK(pack_ok<1>(std::vector<std::int8_t>{-1, 0, 0, -1}) == Bytes{0x09});
    // 8-bit: the bytes of the int8 values
    CHECK(pack_ok<8>(std::vector<std::int8_t>{-128, -1, 127}) == Bytes{0x80, 0xFF, 0x7F});
  }
  SUBCASE("unpack reads the same hand-computed bytes back") {
    const Bytes packed{0xD1, 0x58, 0x1F};
    Bytes codes(8);
    REQUIRE(lowbit::unpack_codes<3>(packed.data(), packed.size(), 8, codes.data()).ok());
    CHECK(codes == Bytes{1, 2, 3, 4, 5, 6, 7, 0});
    std::vector<std::int8_t> signed_codes(8);
    REQUIRE(lowbit::unpack_codes<3>(packed.data(), packed.size(), 8, signed_codes.data()).ok());
    CHECK(signed_codes == std::vector<std::int8_t>{1, 2, 3, -4, -3, -2, -1, 0});
    const Bytes nibbles{0x7F, 0x08, 0x01};
    std::vector<std::int8_t> s4(5);
    REQUIRE(lowbit::unpack_codes<4>(nibbles.data(), nibbles.size(), 5, s4.data()).ok());
    CHECK(s4 == std::vector<std::int8_t>{-1, 7, -8, 0, 1});
  }
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("pack matches the bit-by-bit reference and round-trips, every width and many counts") {
  std::mt19937 rng(kSeed);
  INFO("seed = " << kSeed);
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    for (std::int64_t count : kCounts) {
      INFO("bits = " << kBits << ", count = " << count);
      const std::vector<std::uint8_t> codes = random_unsigned(kBits, count, rng);
      const Bytes packed = pack_ok<kBits>(codes);
      CHECK(packed == reference_pack(kBits, fields_of(kBits, codes)));

      std::vector<std::uint8_t> back(codes.size());
      REQUIRE(lowbit::unpack_codes<kBits>(packed.data(), packed.size(), count, back.data()).ok());
      CHECK(back == codes);
    }
    // Every code value appears, not only the ones the generator happened to draw.
    std::vector<std::uint8_t> all;
    for (int rep = 0; rep < 3; ++rep)
      for (unsigned v = 0; v < (1u << kBits); ++v) all.push_back(static_cast<std::uint8_t>(v));
    const Bytes packed = pack_ok<kBits>(all);
    CHECK(packed == reference_pack(kBits, fields_of(kBits, all)));
    std::vector<std::uint8_t> back(all.size());
    REQUIRE(lowbit::unpack_codes<kBits>(packed.data(), packed.size(),
                                        static_cast<std::int64_t>(all.size()), back.data())
                .ok());
    CHECK(back == all);
  });
}

TEST_CASE("signed codes round-trip and sign-extend, every width") {
  std::mt19937 rng(kSeed + 1);
  INFO("seed = " << kSeed + 1);
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    for (std::int64_t count : kCounts) {
      INFO("bits = " << kBits << ", count = " << count);
      const std::vector<std::int8_t> codes = random_signed(kBits, count, rng);
      const Bytes packed = pack_ok<kBits>(codes);
      CHECK(packed == reference_pack(kBits, fields_of(kBits, codes)));

      std::vector<std::int8_t> back(codes.size());
      REQUIRE(lowbit::unpack_codes<kBits>(packed.data(), packed.size(), count, back.data()).ok());
      CHECK(back == codes);
    }
    // Both ends of the range, and their neighbours toward zero.
    const int lo = -(1 << (kBits - 1)), hi = (1 << (kBits - 1)) - 1;
    std::vector<std::int8_t> edges;
    for (int v : {lo, hi, lo + 1, hi - 1, 0, -1})
      if (v >= lo && v <= hi) edges.push_back(static_cast<std::int8_t>(v));
    const Bytes packed = pack_ok<kBits>(edges);
    std::vector<std::int8_t> back(edges.size());
    REQUIRE(lowbit::unpack_codes<kBits>(packed.data(), packed.size(),
                                        static_cast<std::int64_t>(edges.size()), back.data())
                .ok());
    CHECK(back == edges);
  });
}

TEST_CASE("run-time width gives the same bytes and codes as the template") {
  std::mt19937 rng(kSeed + 2);
  INFO("seed = " << kSeed + 2);
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    for (std::int64_t count : {std::int64_t{0}, std::int64_t{1}, std::int64_t{9},
                               std::int64_t{1009}}) {
      INFO("bits = " << kBits << ", count = " << count);
      const std::vector<std::uint8_t> codes = random_unsigned(kBits, count, rng);
      Bytes packed(lowbit::packed_bytes(kBits, count));
      REQUIRE(lowbit::pack_codes(kBits, codes.data(), count, packed.data(), packed.size()).ok());
      CHECK(packed == pack_ok<kBits>(codes));
      std::vector<std::uint8_t> back(codes.size());
      REQUIRE(lowbit::unpack_codes(kBits, packed.data(), packed.size(), count, back.data()).ok());
      CHECK(back == codes);

      const std::vector<std::int8_t> scodes = random_signed(kBits, count, rng);
      REQUIRE(lowbit::pack_codes(kBits, scodes.data(), count, packed.data(), packed.size()).ok());
      CHECK(packed == pack_ok<kBits>(scodes));
      std::vector<std::int8_t> sback(scodes.size());
      REQUIRE(lowbit::unpack_codes(kBits, packed.data(), packed.size(), count, sback.data()).ok());
      CHECK(sback == scodes);
    }
  });
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("a code outside the range is kOutOfRange with its index, and nothing is written") {
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    if (kBits == 8) return;  // every byte is a valid 8-bit code; see the next test
    constexpr std::int64_t kCount = 150;  // three validation chunks, a tail of 6 codes
    // First position of a group, inside one, in the tail, in a later chunk, the last code.
    for (std::int64_t bad : {0, 5, 8, 13, 63, 64, 100, 144, 149}) {
      for (unsigned value : {1u << kBits, 0xFFu}) {
        INFO("bits = " << kBits << ", bad index = " << bad << ", value = " << value);
        std::vector<std::uint8_t> codes(kCount, 1);
        codes[static_cast<std::size_t>(bad)] = static_cast<std::uint8_t>(value);
        if (bad + 7 < kCount) codes[static_cast<std::size_t>(bad + 7)] = 0xFF;  // a later one too
        Bytes out(lowbit::packed_bytes(kBits, kCount) + 4, kSentinel);
        const Status s = lowbit::pack_codes<kBits>(codes.data(), kCount, out.data(), out.size());
        CHECK(s.code() == Errc::kOutOfRange);
        CHECK(s.index() == bad);  // the first bad code, not the later one
        CHECK(out == Bytes(out.size(), kSentinel));
        const Status r = lowbit::pack_codes(kBits, codes.data(), kCount, out.data(), out.size());
        CHECK(r.code() == Errc::kOutOfRange);
        CHECK(r.index() == bad);
      }
    }
    // Signed: one past each end, and the most negative int8.
    const int lo = -(1 << (kBits - 1)), hi = (1 << (kBits - 1)) - 1;
    for (int value : {lo - 1, hi + 1, -128, 127}) {
      if (value >= lo && value <= hi) continue;
      INFO("bits = " << kBits << ", signed value = " << value);
      std::vector<std::int8_t> codes(kCount, static_cast<std::int8_t>(lo));
      codes[37] = static_cast<std::int8_t>(value);
      Bytes out(lowbit::packed_bytes(kBits, kCount), kSentinel);
      const Status s = lowbit::pack_codes<kBits>(codes.data(), kCount, out.data(), out.size());
      CHECK(s.code() == Errc::kOutOfRange);
      CHECK(s.index() == 37);
      CHECK(out == Bytes(out.size(), kSentinel));
    }
  });
}

TEST_CASE("every byte value is accepted or rejected exactly as the range says") {
  // Position 37 is checked 8 codes at a time, 149 one at a time (the last, partial chunk).
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    constexpr std::int64_t kCount = 150;
    Bytes out(lowbit::packed_bytes(kBits, kCount));
    for (std::int64_t at : {37, 149}) {
      for (int v = 0; v < 256; ++v) {
        INFO("bits = " << kBits << ", index = " << at << ", unsigned value = " << v);
        std::vector<std::uint8_t> codes(kCount, 0);
        codes[static_cast<std::size_t>(at)] = static_cast<std::uint8_t>(v);
        const Status s = lowbit::pack_codes<kBits>(codes.data(), kCount, out.data(), out.size());
        if (v < (1 << kBits)) {
          CHECK(s.ok());
        } else {
          CHECK(s.code() == Errc::kOutOfRange);
          CHECK(s.index() == at);
        }
      }
      for (int v = -128; v < 128; ++v) {
        INFO("bits = " << kBits << ", index = " << at << ", signed value = " << v);
        std::vector<std::int8_t> codes(kCount, 0);
        codes[static_cast<std::size_t>(at)] = static_cast<std::int8_t>(v);
        const Status s = lowbit::pack_codes<kBits>(codes.data(), kCount, out.data(), out.size());
        if (v >= -(1 << (kBits - 1)) && v < (1 << (kBits - 1))) {
          CHECK(s.ok());
        } else {
          CHECK(s.code() == Errc::kOutOfRange);
          CHECK(s.index() == at);
        }
      }
    }
  });
}

TEST_CASE("8-bit codes accept every byte") {
  std::vector<std::uint8_t> codes(256);
  std::vector<std::int8_t> scodes(256);
  for (int v = 0; v < 256; ++v) {
    codes[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(v);
    scodes[static_cast<std::size_t>(v)] = static_cast<std::int8_t>(v - 128);
  }
  CHECK(pack_ok<8>(codes) == codes);
  const Bytes packed = pack_ok<8>(scodes);
  std::vector<std::int8_t> back(256);
  REQUIRE(lowbit::unpack_codes<8>(packed.data(), packed.size(), 256, back.data()).ok());
  CHECK(back == scodes);
}

TEST_CASE("too small a buffer: kShapeMismatch to pack, kTruncated to unpack, nothing written") {
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    for (std::int64_t count : {std::int64_t{1}, std::int64_t{8}, std::int64_t{13},
                               std::int64_t{1000}}) {
      INFO("bits = " << kBits << ", count = " << count);
      const std::size_t needed = lowbit::packed_bytes(kBits, count);
      const std::vector<std::uint8_t> codes(static_cast<std::size_t>(count), 1);
      for (std::size_t given : {std::size_t{0}, needed / 2, needed - 1}) {
        INFO("bytes given = " << given);
        // The index is the first code that does not fit: floor(8 * given / bits).
        const auto first_missing = static_cast<std::int64_t>(given * 8 / kBits);
        Bytes out(needed + 1, kSentinel);
        const Status s = lowbit::pack_codes<kBits>(codes.data(), count, out.data(), given);
        CHECK(s.code() == Errc::kShapeMismatch);
        CHECK(s.index() == first_missing);
        CHECK(out == Bytes(out.size(), kSentinel));

        const Bytes packed = pack_ok<kBits>(codes);
        std::vector<std::uint8_t> back(codes.size(), kSentinel);
        const Status u = lowbit::unpack_codes<kBits>(packed.data(), given, count, back.data());
        CHECK(u.code() == Errc::kTruncated);
        CHECK(u.index() == first_missing);
        CHECK(back == std::vector<std::uint8_t>(codes.size(), kSentinel));
        std::vector<std::int8_t> sback(codes.size(), 9);
        CHECK(lowbit::unpack_codes(kBits, packed.data(), given, count, sback.data()).code() ==
              Errc::kTruncated);
        CHECK(sback == std::vector<std::int8_t>(codes.size(), 9));
      }
    }
  });
}

TEST_CASE("bad width at run time is kInvalidArgument") {
  std::vector<std::uint8_t> codes(16, 0);
  std::vector<std::int8_t> scodes(16, 0);
  Bytes buf(64, kSentinel);
  for (int bits : {0, 9, -1, -8, 16, 32, 64, INT_MIN, INT_MAX}) {
    CAPTURE(bits);
    CHECK(lowbit::pack_codes(bits, codes.data(), 16, buf.data(), buf.size()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::pack_codes(bits, scodes.data(), 16, buf.data(), buf.size()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::unpack_codes(bits, buf.data(), buf.size(), 16, codes.data()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::unpack_codes(bits, buf.data(), buf.size(), 16, scodes.data()).code() ==
          Errc::kInvalidArgument);
    // Even with nothing to pack: a width outside 1..8 is never valid.
    CHECK(lowbit::pack_codes(bits, codes.data(), 0, buf.data(), 0).code() ==
          Errc::kInvalidArgument);
  }
  CHECK(buf == Bytes(64, kSentinel));
  CHECK(codes == std::vector<std::uint8_t>(16, 0));
}

TEST_CASE("negative counts and null pointers are kInvalidArgument; count 0 needs no buffers") {
  std::vector<std::uint8_t> codes(16, 1);
  std::vector<std::int8_t> scodes(16, 1);
  Bytes buf(16, kSentinel);
  for (std::int64_t count : {std::int64_t{-1}, std::int64_t{-8},
                             std::numeric_limits<std::int64_t>::min()}) {
    CAPTURE(count);
    CHECK(lowbit::pack_codes<4>(codes.data(), count, buf.data(), buf.size()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::pack_codes<3>(scodes.data(), count, buf.data(), buf.size()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::unpack_codes<5>(buf.data(), buf.size(), count, codes.data()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::unpack_codes<5>(buf.data(), buf.size(), count, scodes.data()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::pack_codes(6, codes.data(), count, buf.data(), buf.size()).code() ==
          Errc::kInvalidArgument);
    CHECK(lowbit::unpack_codes(6, buf.data(), buf.size(), count, codes.data()).code() ==
          Errc::kInvalidArgument);
  }
  const std::uint8_t* no_codes = nullptr;
  std::uint8_t* no_out = nullptr;
  CHECK(lowbit::pack_codes<4>(no_codes, 3, buf.data(), buf.size()).code() ==
        Errc::kInvalidArgument);
  CHECK(lowbit::pack_codes<4>(codes.data(), 3, no_out, 16).code() == Errc::kInvalidArgument);
  CHECK(lowbit::unpack_codes<4>(nullptr, 16, 3, codes.data()).code() == Errc::kInvalidArgument);
  CHECK(lowbit::unpack_codes<4>(buf.data(), buf.size(), 3, no_out).code() ==
        Errc::kInvalidArgument);
  CHECK(buf == Bytes(16, kSentinel));
  CHECK(codes == std::vector<std::uint8_t>(16, 1));

  // Zero codes: nothing is read or written, so null pointers and empty buffers are fine.
  CHECK(lowbit::pack_codes<3>(no_codes, 0, no_out, 0).ok());
  CHECK(lowbit::unpack_codes<3>(nullptr, 0, 0, no_out).ok());
  CHECK(lowbit::pack_codes(7, no_codes, 0, no_out, 0).ok());
  CHECK(lowbit::unpack_codes(8, nullptr, 0, 0, no_out).ok());
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("exactly packed_bytes bytes are written, padding bits are zero, the rest untouched") {
  std::mt19937 rng(kSeed + 3);
  INFO("seed = " << kSeed + 3);
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    for (std::int64_t count : kCounts) {
      INFO("bits = " << kBits << ", count = " << count);
      const std::vector<std::uint8_t> codes = random_unsigned(kBits, count, rng);
      const std::size_t needed = lowbit::packed_bytes(kBits, count);
      // Output starts as all ones: padding must come out zero, not inherited.
      Bytes out(needed + 9, 0xFF);
      REQUIRE(lowbit::pack_codes<kBits>(codes.data(), count, out.data(), out.size()).ok());
      CHECK(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(needed)) ==
            reference_pack(kBits, fields_of(kBits, codes)));
      CHECK(Bytes(out.begin() + static_cast<std::ptrdiff_t>(needed), out.end()) == Bytes(9, 0xFF));
      const int used = static_cast<int>((count * kBits) % 8);
      if (used != 0) CHECK((out[needed - 1] >> used) == 0);

      // Unpack writes count codes and nothing after them.
      std::vector<std::uint8_t> back(codes.size() + 5, kSentinel);
      REQUIRE(lowbit::unpack_codes<kBits>(out.data(), out.size(), count, back.data()).ok());
      CHECK(std::vector<std::uint8_t>(back.begin(), back.begin() + count) == codes);
      CHECK(std::vector<std::uint8_t>(back.begin() + count, back.end()) ==
            std::vector<std::uint8_t>(5, kSentinel));
    }
  });
}

TEST_CASE("unpack ignores padding bits and reads a prefix of a longer stream") {
  std::mt19937 rng(kSeed + 4);
  INFO("seed = " << kSeed + 4);
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    const std::vector<std::uint8_t> codes = random_unsigned(kBits, 101, rng);
    const Bytes packed = pack_ok<kBits>(codes);
    for (std::int64_t prefix : {1, 7, 8, 9, 50, 100}) {
      INFO("bits = " << kBits << ", prefix = " << prefix);
      // Exactly the prefix's bytes: the last one holds bits of later codes, which are ignored.
      const std::size_t bytes = lowbit::packed_bytes(kBits, prefix);
      std::vector<std::uint8_t> back(static_cast<std::size_t>(prefix));
      REQUIRE(lowbit::unpack_codes<kBits>(packed.data(), bytes, prefix, back.data()).ok());
      CHECK(back == std::vector<std::uint8_t>(codes.begin(), codes.begin() + prefix));
    }
    // Padding set to ones in the last byte changes nothing.
    Bytes dirty = packed;
    const int used = (101 * kBits) % 8;
    if (used != 0) dirty.back() = static_cast<std::uint8_t>(dirty.back() | (0xFFu << used));
    std::vector<std::uint8_t> back(codes.size());
    REQUIRE(lowbit::unpack_codes<kBits>(dirty.data(), dirty.size(), 101, back.data()).ok());
    CHECK(back == codes);
  });
}

TEST_CASE("unaligned pointers") {
  std::mt19937 rng(kSeed + 5);
  INFO("seed = " << kSeed + 5);
  for_each_width([&](auto width) {
    constexpr int kBits = decltype(width)::value;
    constexpr std::int64_t kCount = 203;
    const std::vector<std::uint8_t> codes = random_unsigned(kBits, kCount, rng);
    const Bytes expected = pack_ok<kBits>(codes);
    const std::size_t needed = expected.size();
    for (std::size_t in_off = 0; in_off < 8; ++in_off)
      for (std::size_t out_off = 1; out_off < 8; out_off += 2) {
        INFO("bits = " << kBits << ", input offset = " << in_off << ", output offset = " << out_off);
        std::vector<std::uint8_t> src(in_off + codes.size());
        std::copy(codes.begin(), codes.end(), src.begin() + static_cast<std::ptrdiff_t>(in_off));
        Bytes dst(out_off + needed, kSentinel);
        REQUIRE(lowbit::pack_codes<kBits>(src.data() + in_off, kCount, dst.data() + out_off,
                                          needed)
                    .ok());
        CHECK(Bytes(dst.begin() + static_cast<std::ptrdiff_t>(out_off), dst.end()) == expected);
        CHECK(Bytes(dst.begin(), dst.begin() + static_cast<std::ptrdiff_t>(out_off)) ==
              Bytes(out_off, kSentinel));

        std::vector<std::uint8_t> back(in_off + codes.size());
        REQUIRE(lowbit::unpack_codes<kBits>(dst.data() + out_off, needed, kCount,
                                            back.data() + in_off)
                    .ok());
        CHECK(std::vector<std::uint8_t>(back.begin() + static_cast<std::ptrdiff_t>(in_off),
                                        back.end()) == codes);
      }
  });
}

TEST_CASE("the API is noexcept") {
  const std::uint8_t* c = nullptr;
  const std::int8_t* sc = nullptr;
  std::uint8_t* o = nullptr;
  std::int8_t* so = nullptr;
  static_assert(noexcept(lowbit::pack_codes<4>(c, 0, o, 0)), "");
  static_assert(noexcept(lowbit::pack_codes<4>(sc, 0, o, 0)), "");
  static_assert(noexcept(lowbit::unpack_codes<4>(c, 0, 0, o)), "");
  static_assert(noexcept(lowbit::unpack_codes<4>(c, 0, 0, so)), "");
  static_assert(noexcept(lowbit::pack_codes(4, c, 0, o, 0)), "");
  static_assert(noexcept(lowbit::unpack_codes(4, c, 0, 0, so)), "");
  static_assert(noexcept(lowbit::checked_packed_bytes(4, 0)), "");
  CHECK(true);
}
