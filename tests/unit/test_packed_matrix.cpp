// lowbit's packed-matrix layout: round trips, the byte layout itself, and hostile buffers.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "lowbit/format/packed_matrix.hpp"
#include "support/random.hpp"

namespace {

constexpr std::uint32_t kSeed = 4242;

template <class Q>
void check_round_trip(std::int64_t rows, std::int64_t cols, const typename Q::granularity& g = {}) {
  CAPTURE(Q::kBits);
  const std::vector<float> x = lowbit_test::gaussian(rows * cols, 1.0f, kSeed, 0.2f);
  lowbit::Result<lowbit::QuantizedTensor<Q>> t = Q::quantize(lowbit::row_major(x.data(), rows, cols), g);
  REQUIRE(t);
  lowbit::Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(*t);
  REQUIRE(bytes);
  lowbit::Result<lowbit::QuantizedTensor<Q>> back = lowbit::read_packed_matrix<Q>(bytes->data(), bytes->size(), g);
  REQUIRE(back);
  CHECK(back->packed() == t->packed());
  CHECK(back->params().scale == t->params().scale);
  CHECK(back->params().zero_point == t->params().zero_point);
  // Writing what was read gives the same bytes.
  lowbit::Result<std::vector<std::uint8_t>> again = lowbit::write_packed_matrix(*back);
  REQUIRE(again);
  CHECK(*again == *bytes);
}

using A3g = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<16>>;

std::vector<std::uint8_t> sample_file() {
  const std::vector<float> x = lowbit_test::gaussian(4 * 32, 1.0f, kSeed + 1);
  lowbit::Result<lowbit::QuantizedTensor<A3g>> t = A3g::quantize(lowbit::row_major(x.data(), 4, 32));
  REQUIRE(t);
  lowbit::Result<std::vector<std::uint8_t>> bytes = lowbit::write_packed_matrix(*t);
  REQUIRE(bytes);
  return *bytes;
}

lowbit::Errc parse_error(const std::vector<std::uint8_t>& b) {
  return lowbit::parse_packed_matrix(b.data(), b.size()).status().code();
}

}  // namespace

TEST_CASE("packed matrix round trips for every scheme and storable granularity") {
  using namespace lowbit;
  check_round_trip<Quantizer<Bits<1>, Asymmetric, PerTensor>>(3, 17);
  check_round_trip<Quantizer<Bits<3>, Asymmetric, PerGroup<16>>>(5, 64);
  check_round_trip<Quantizer<Bits<4>, Symmetric, PerChannel<0>>>(7, 9);
  check_round_trip<Quantizer<Bits<5>, SymmetricRestricted, PerChannel<1>>>(6, 11);
  check_round_trip<Quantizer<Bits<8>, Asymmetric, PerGroup<kDynamicGroup>>>(2, 96, PerGroup<kDynamicGroup>{32});
}

TEST_CASE("packed matrix byte layout: header fields and 64-byte aligned sections") {
  const std::vector<std::uint8_t> b = sample_file();
  // 4 x 32 3-bit codes = 48 bytes at 64; 8 scales = 32 bytes at 128; 8 3-bit zero points = 3
  // bytes at 192.
  CHECK(std::memcmp(b.data(), "LBPM", 4) == 0);
  CHECK(b[4] == 1);
  CHECK(b[5] == 0);
  CHECK(b[6] == 3);   // bits
  CHECK(b[7] == 0);   // asymmetric
  CHECK(b[8] == 3);   // per group
  CHECK(b[16] == 4);  // rows
  CHECK(b[24] == 32); // cols
  CHECK(b[32] == 16); // group size
  CHECK(b[40] == 64);
  CHECK(b[48] == 128);
  CHECK(b[56] == 192);
  CHECK(b.size() == 195);
}

TEST_CASE("hostile packed-matrix buffers give specific errors") {
  const std::vector<std::uint8_t> good = sample_file();
  REQUIRE(lowbit::parse_packed_matrix(good.data(), good.size()));

  SUBCASE("every truncation fails") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      CAPTURE(n);
      const lowbit::Errc e = lowbit::parse_packed_matrix(good.data(), n).status().code();
      CHECK(e == lowbit::Errc::kTruncated);
    }
  }
  SUBCASE("corrupt fields") {
    struct Edit {
      std::size_t at;
      std::uint8_t value;
      lowbit::Errc expect;
    };
    const Edit edits[] = {
        {0, 'X', lowbit::Errc::kCorrupt},       // magic
        {4, 2, lowbit::Errc::kUnsupported},     // version
        {6, 0, lowbit::Errc::kCorrupt},         // bits 0
        {6, 9, lowbit::Errc::kCorrupt},         // bits 9
        {7, 3, lowbit::Errc::kCorrupt},         // scheme
        {8, 4, lowbit::Errc::kCorrupt},         // granularity
        {9, 1, lowbit::Errc::kUnsupported},     // scale type
        {10, 1, lowbit::Errc::kCorrupt},        // reserved
        {12, 32, lowbit::Errc::kCorrupt},       // header size
        {32, 5, lowbit::Errc::kCorrupt},        // group size not dividing cols
        {40, 65, lowbit::Errc::kCorrupt},       // misaligned codes
        {48, 64, lowbit::Errc::kCorrupt},       // scales overlap codes
        {56, 0, lowbit::Errc::kCorrupt},        // zero points overlap (offset 0)
        {56, 255, lowbit::Errc::kCorrupt},      // misaligned zero points
        {131, 0x80, lowbit::Errc::kCorrupt},    // first scale negative
    };
    for (const Edit& e : edits) {
      CAPTURE(e.at);
      std::vector<std::uint8_t> b = good;
      b[e.at] = e.value;
      CHECK(parse_error(b) == e.expect);
    }
  }
  SUBCASE("a NaN or zero scale") {
    for (std::uint32_t bits : {0x7FC00000u, 0x00000000u, 0x7F800000u}) {
      CAPTURE(bits);
      std::vector<std::uint8_t> b = good;
      for (int i = 0; i < 4; ++i) b[132 + i] = static_cast<std::uint8_t>(bits >> (8 * i));
      const lowbit::Status s = lowbit::parse_packed_matrix(b.data(), b.size()).status();
      CHECK(s.code() == lowbit::Errc::kCorrupt);
      CHECK(s.index() == 132);  // the second scale's byte offset
    }
  }
  SUBCASE("sizes that overflow or run past the buffer") {
    std::vector<std::uint8_t> b = good;
    b[23] = 0x40;  // rows ~ 2^62: rows * cols overflows
    CHECK(parse_error(b) == lowbit::Errc::kOverflow);
    b = good;
    b[31] = 0x80;  // cols negative
    CHECK(parse_error(b) == lowbit::Errc::kCorrupt);
    b = good;
    b[55] = 0x10;  // scales offset far past the end
    CHECK(parse_error(b) == lowbit::Errc::kTruncated);
    b = good;
    b[16] = 100;  // more rows than the codes section holds
    CHECK(parse_error(b) != lowbit::Errc::kOk);
  }
  SUBCASE("a buffer for another quantizer is rejected by the typed reader") {
    using A4g = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<16>>;
    using A3g32 = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Asymmetric, lowbit::PerGroup<32>>;
    using S3g = lowbit::Quantizer<lowbit::Bits<3>, lowbit::Symmetric, lowbit::PerGroup<16>>;
    CHECK(lowbit::read_packed_matrix<A4g>(good.data(), good.size()).status().code() ==
          lowbit::Errc::kInvalidArgument);
    CHECK(lowbit::read_packed_matrix<A3g32>(good.data(), good.size()).status().code() ==
          lowbit::Errc::kInvalidArgument);
    CHECK(lowbit::read_packed_matrix<S3g>(good.data(), good.size()).status().code() ==
          lowbit::Errc::kInvalidArgument);
    CHECK(lowbit::read_packed_matrix<A3g>(good.data(), good.size()));
  }
}

TEST_CASE("QuantizedTensor::from_parts rejects parts that disagree") {
  const std::vector<float> x = lowbit_test::gaussian(2 * 32, 1.0f, kSeed + 2);
  lowbit::Result<lowbit::QuantizedTensor<A3g>> t = A3g::quantize(lowbit::row_major(x.data(), 2, 32));
  REQUIRE(t);
  auto packed = t->packed();
  auto params = t->params();
  CHECK(lowbit::QuantizedTensor<A3g>::from_parts(2, 32, packed, params));
  CHECK(lowbit::QuantizedTensor<A3g>::from_parts(2, 33, packed, params).status().code() ==
        lowbit::Errc::kIndivisible);
  CHECK(lowbit::QuantizedTensor<A3g>::from_parts(3, 32, packed, params).status().code() ==
        lowbit::Errc::kShapeMismatch);
  auto bad = params;
  bad.zero_point[1] = 8;  // 3-bit codes end at 7
  CHECK(lowbit::QuantizedTensor<A3g>::from_parts(2, 32, packed, bad).status().code() ==
        lowbit::Errc::kOutOfRange);
  bad = params;
  bad.scale[0] = -1.0f;
  CHECK(lowbit::QuantizedTensor<A3g>::from_parts(2, 32, packed, bad).status().code() ==
        lowbit::Errc::kInvalidArgument);
  CHECK(lowbit::QuantizedTensor<A3g>::from_parts(0, 32, {}, params).status().code() ==
        lowbit::Errc::kEmpty);
}
