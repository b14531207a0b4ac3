// bitsandbytes' NF4/FP4 blockwise 4-bit formats, its dynamic 8-bit map and double quantization
// (lowbit/format/nf4.hpp) against bitsandbytes' own outputs (tests/data/torch/bnb, bitsandbytes
// 95f9af3, default backend): tables, codes, packed bytes, absmax and dequantized values exactly.
// Inputs the oracle does not cover (partial blocks, odd lengths, FP4 tensors, exact midpoints) are
// checked against a plain restatement of the backend's procedure written here, over the oracle's
// tables.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "lowbit/format/nf4.hpp"
#include "support/oracle.hpp"
#include "support/random.hpp"

namespace {

namespace bnb = lowbit::bnb;
using lowbit::Errc;

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// ---- An independent restatement of bitsandbytes' default backend (backends/default/ops.py),
// written from its source, over a table loaded from the oracle.

struct Reference {
  std::vector<float> table;       // index = code
  std::vector<int> sorted_codes;  // codes by ascending value, equal values in code order
  std::vector<float> midpoints;   // (t[k] + t[k+1]) / 2 in float32, over sorted values

  explicit Reference(const std::vector<float>& t) : table(t) {
    for (int c = 0; c < static_cast<int>(t.size()); ++c) {
      // Insert after every code whose value is <= t[c]: a stable order.
      std::size_t pos = 0;
      while (pos < sorted_codes.size() &&
             t[static_cast<std::size_t>(sorted_codes[pos])] <= t[static_cast<std::size_t>(c)])
        ++pos;
      sorted_codes.insert(sorted_codes.begin() + static_cast<std::ptrdiff_t>(pos), c);
    }
    for (std::size_t k = 0; k + 1 < sorted_codes.size(); ++k)
      midpoints.push_back((t[static_cast<std::size_t>(sorted_codes[k])] +
                           t[static_cast<std::size_t>(sorted_codes[k + 1])]) /
                          2.0f);
  }

  // torch.bucketize(x, midpoints, right=False): how many midpoints lie strictly below x.
  int code(float x) const {
    std::size_t below = 0;
    for (float m : midpoints) below += (m < x) ? 1 : 0;
    return sorted_codes[below];
  }

  // Codes (one per value) and absmax per block of the flattened input.
  void quantize(const std::vector<float>& x, std::int64_t block, std::vector<int>& codes,
                std::vector<float>& absmax) const {
    const std::int64_t n = static_cast<std::int64_t>(x.size());
    codes.assign(x.size(), -1);
    absmax.clear();
    for (std::int64_t first = 0; first < n; first += block) {
      const std::int64_t len = std::min(block, n - first);
      float amax = 0.0f;
      for (std::int64_t j = 0; j < len; ++j)
        amax = std::max(amax, std::fabs(x[static_cast<std::size_t>(first + j)]));
      const float clamped = std::max(amax, 1e-38f);
      const bool tail = len < block;
      absmax.push_back(tail ? clamped : amax);
      const float recip = 1.0f / clamped;
      for (std::int64_t j = 0; j < len; ++j) {
        const float v = x[static_cast<std::size_t>(first + j)];
        float s = tail ? v / clamped : v * recip;
        s = std::min(1.0f, std::max(-1.0f, s));
        codes[static_cast<std::size_t>(first + j)] = code(s);
      }
    }
  }
};

std::vector<std::uint8_t> pack_bnb(const std::vector<int>& codes, int pad_code) {
  std::vector<std::uint8_t> out((codes.size() + 1) / 2);
  for (std::size_t k = 0; k < out.size(); ++k) {
    const int lo = 2 * k + 1 < codes.size() ? codes[2 * k + 1] : pad_code;
    out[k] = static_cast<std::uint8_t>((codes[2 * k] << 4) | lo);
  }
  return out;
}

std::vector<float> table_from_oracle(const char* path, std::size_t size) {
  std::vector<float> t = lowbit_test::load<float>(path);
  REQUIRE(t.size() == size);
  return t;
}

void check_table_bits(const std::array<float, 16>& mine, const std::vector<float>& oracle) {
  REQUIRE(oracle.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) {
    INFO("code ", i, ": lowbit ", mine[i], " oracle ", oracle[i]);
    if (oracle[i] == 0.0f) {
      CHECK(mine[i] == 0.0f);  // the oracle stores "-0" as 0.0 (README); compare by value
    } else {
      CHECK(bits_of(mine[i]) == bits_of(oracle[i]));
    }
  }
}

// The W of gptq/main (256 x 1024, fp16 storage) as its exact float32 upcast.
std::vector<float> oracle_weight() {
  std::vector<std::int64_t> shape;
  std::vector<float> w = lowbit_test::load<float>("torch/gptq/main/W.npy", &shape);
  REQUIRE(shape == std::vector<std::int64_t>{256, 1024});
  return w;
}

TEST_CASE("bnb tables: NF4 derived from its definition, FP4, dynamic map, bit for bit") {
  check_table_bits(bnb::kNf4Table, table_from_oracle("torch/bnb/nf4_table.npy", 16));
  // The same 16 values recomputed by the reference with scipy's norm.ppf.
  check_table_bits(bnb::kNf4Table,
                   table_from_oracle("torch/bnb/nf4_table_from_normal_map.npy", 16));
  check_table_bits(bnb::kFp4Table, table_from_oracle("torch/bnb/fp4_table.npy", 16));
  CHECK(std::signbit(bnb::kFp4Table[8]));  // get_4bit_type's -0 (the .npy stores +0.0)

  const std::vector<float> map = table_from_oracle("torch/bnb/dynamic_map.npy", 256);
  int mismatches = 0;
  for (std::size_t i = 0; i < 256; ++i) {
    if (bits_of(bnb::kDynamicMap[i]) != bits_of(map[i])) {
      ++mismatches;
      INFO("dynamic map entry ", i, ": lowbit ", bnb::kDynamicMap[i], " oracle ", map[i]);
      CHECK(bits_of(bnb::kDynamicMap[i]) == bits_of(map[i]));
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bnb NF4 of gptq/main/W (blocksize 64): codes, packed, absmax, dequant exact") {
  const std::vector<float> w = oracle_weight();
  const std::vector<std::uint8_t> codes =
      lowbit_test::load<std::uint8_t>("torch/bnb/nf4/codes.npy");
  const std::vector<std::uint8_t> packed_oracle =
      lowbit_test::load<std::uint8_t>("torch/bnb/nf4/packed.npy");
  const std::vector<float> absmax_oracle = lowbit_test::load<float>("torch/bnb/nf4/absmax.npy");
  const std::vector<float> dequant_oracle = lowbit_test::load<float>("torch/bnb/nf4/dequant.npy");
  REQUIRE(codes.size() == w.size());
  REQUIRE(packed_oracle.size() == w.size() / 2);
  REQUIRE(absmax_oracle.size() == 4096);
  REQUIRE(dequant_oracle.size() == w.size());

  std::vector<std::uint8_t> packed(bnb::packed_4bit_bytes(static_cast<std::int64_t>(w.size())));
  std::vector<float> absmax(
      static_cast<std::size_t>(bnb::block_count(static_cast<std::int64_t>(w.size()), 64)));
  REQUIRE(packed.size() == 131072);
  REQUIRE(absmax.size() == 4096);
  const auto view = lowbit::row_major(w.data(), 256, 1024);
  REQUIRE(bnb::quantize_4bit(bnb::QuantType::kNf4, view, bnb::kDefaultBlockSize, packed.data(),
                             packed.size(), absmax.data(), static_cast<std::int64_t>(absmax.size()))
              .ok());

  std::int64_t code_mismatch = -1;
  for (std::size_t i = 0; i < w.size() && code_mismatch < 0; ++i) {
    const int mine = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
    if (mine != codes[i]) code_mismatch = static_cast<std::int64_t>(i);
  }
  CHECK(code_mismatch == -1);
  CHECK(packed == packed_oracle);
  std::int64_t absmax_mismatch = -1;
  for (std::size_t b = 0; b < absmax.size() && absmax_mismatch < 0; ++b)
    if (bits_of(absmax[b]) != bits_of(absmax_oracle[b]))
      absmax_mismatch = static_cast<std::int64_t>(b);
  CHECK(absmax_mismatch == -1);

  std::vector<float> dequant(w.size(), std::numeric_limits<float>::quiet_NaN());
  REQUIRE(bnb::dequantize_4bit(bnb::QuantType::kNf4, packed_oracle.data(), packed_oracle.size(),
                               absmax_oracle.data(), 4096, 64,
                               lowbit::row_major(dequant.data(), 256, 1024))
              .ok());
  std::int64_t dequant_mismatch = -1;
  for (std::size_t i = 0; i < w.size() && dequant_mismatch < 0; ++i)
    if (!(dequant[i] == dequant_oracle[i])) dequant_mismatch = static_cast<std::int64_t>(i);
  CHECK(dequant_mismatch == -1);

  SUBCASE("the same tensor through padded rows and a column-major view") {
    std::vector<float> padded(256 * 1031, 99.0f);
    for (std::size_t r = 0; r < 256; ++r)
      std::memcpy(&padded[r * 1031], &w[r * 1024], 1024 * sizeof(float));
    std::vector<float> transposed(w.size());
    for (std::size_t r = 0; r < 256; ++r)
      for (std::size_t c = 0; c < 1024; ++c) transposed[c * 256 + r] = w[r * 1024 + c];
    const lowbit::MatrixView<const float> views[] = {
        lowbit::strided_rows<const float>(padded.data(), 256, 1024, 1031),
        lowbit::col_major<const float>(transposed.data(), 256, 1024)};
    for (const auto& v : views) {
      std::vector<std::uint8_t> p2(packed.size());
      std::vector<float> a2(absmax.size());
      REQUIRE(bnb::quantize_4bit(bnb::QuantType::kNf4, v, 64, p2.data(), p2.size(), a2.data(), 4096)
                  .ok());
      CHECK(p2 == packed_oracle);
      CHECK(a2 == absmax_oracle);
    }
  }
}

TEST_CASE("bnb double quantization of the NF4 absmax (blocks of 256, dynamic map)") {
  const std::vector<float> absmax = lowbit_test::load<float>("torch/bnb/nf4/absmax.npy");
  const std::vector<float> offset_oracle = lowbit_test::load<float>("torch/bnb/nf4/dq_offset.npy");
  const std::vector<std::uint8_t> codes_oracle =
      lowbit_test::load<std::uint8_t>("torch/bnb/nf4/dq_codes.npy");
  const std::vector<float> absmax2_oracle =
      lowbit_test::load<float>("torch/bnb/nf4/dq_absmax2.npy");
  const std::vector<float> recovered_oracle =
      lowbit_test::load<float>("torch/bnb/nf4/dq_absmax_dequant.npy");
  REQUIRE(absmax.size() == 4096);
  REQUIRE(offset_oracle.size() == 1);
  REQUIRE(codes_oracle.size() == 4096);
  REQUIRE(absmax2_oracle.size() == 16);
  REQUIRE(recovered_oracle.size() == 4096);

  // The offset is a float32 mean whose summation order differs from torch's: 1e-6 relative.
  const lowbit::Result<float> offset = bnb::double_quant_offset(absmax.data(), 4096);
  REQUIRE(offset.has_value());
  CHECK(std::fabs(*offset - offset_oracle[0]) <= 1e-6f * std::fabs(offset_oracle[0]));

  // Given the stored offset, codes and absmax2 are exact.
  std::vector<std::uint8_t> codes(4096);
  std::vector<float> absmax2(16);
  REQUIRE(bnb::double_quantize(absmax.data(), 4096, offset_oracle[0], codes.data(), codes.size(),
                               absmax2.data(), 16)
              .ok());
  CHECK(codes == codes_oracle);
  CHECK(absmax2 == absmax2_oracle);

  std::vector<float> recovered(4096);
  REQUIRE(bnb::double_dequantize(codes_oracle.data(), codes_oracle.size(), absmax2_oracle.data(),
                                 16, offset_oracle[0], recovered.data(), 4096)
              .ok());
  CHECK(recovered == recovered_oracle);

  // With lowbit's own offset the result is still a faithful double quantization.
  std::vector<std::uint8_t> codes_own(4096);
  std::vector<float> absmax2_own(16), recovered_own(4096);
  REQUIRE(bnb::double_quantize(absmax.data(), 4096, *offset, codes_own.data(), codes_own.size(),
                               absmax2_own.data(), 16)
              .ok());
  REQUIRE(bnb::double_dequantize(codes_own.data(), codes_own.size(), absmax2_own.data(), 16,
                                 *offset, recovered_own.data(), 4096)
              .ok());
  double err = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < 4096; ++i) {
    err += (static_cast<double>(recovered_own[i]) - absmax[i]) *
           (static_cast<double>(recovered_own[i]) - absmax[i]);
    norm += static_cast<double>(absmax[i]) * absmax[i];
  }
  // The oracle's README reports ||recovered - absmax||^2 / ||absmax||^2 = 5.4e-5 for its run.
  CHECK(err / norm < 6e-5);
}

TEST_CASE("bnb ties: a value exactly on a float32 midpoint takes the lower table value") {
  for (const bnb::QuantType type : {bnb::QuantType::kNf4, bnb::QuantType::kFp4}) {
    const Reference ref(table_from_oracle(
        type == bnb::QuantType::kNf4 ? "torch/bnb/nf4_table.npy" : "torch/bnb/fp4_table.npy", 16));
    // One block of 64 with absmax exactly 1 (so scaled == x): the 15 midpoints, the float just
    // above each, the float just below each, then padding with 1.0.
    std::vector<float> x;
    for (float m : ref.midpoints) {
      x.push_back(m);
      x.push_back(std::nextafter(m, 2.0f));
      x.push_back(std::nextafter(m, -2.0f));
    }
    while (x.size() < 64) x.push_back(1.0f);
    std::vector<std::uint8_t> packed(32);
    float absmax = 0.0f;
    REQUIRE(bnb::quantize_4bit(type, lowbit::flat<const float>(x.data(), 64), 64, packed.data(), 32,
                               &absmax, 1)
                .ok());
    CHECK(absmax == 1.0f);
    for (std::size_t k = 0; k < ref.midpoints.size(); ++k) {
      INFO("type ", static_cast<int>(type), " midpoint ", k, " = ", ref.midpoints[k]);
      const auto code_at = [&](std::size_t i) {
        return i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
      };
      CHECK(code_at(3 * k) == ref.sorted_codes[k]);          // on the midpoint: the lower value
      CHECK(code_at(3 * k + 1) == ref.sorted_codes[k + 1]);  // just above: the upper value
      CHECK(code_at(3 * k + 2) == ref.sorted_codes[k]);      // just below: the lower value
    }
  }
  // The FP4 zero pair: (-t/2, 0] is +0 (code 0), (0, t/2] is "-0" (code 8), t = 1/192.
  CHECK(bnb::encode_4bit(bnb::QuantType::kFp4, 0.0f) == 0);
  CHECK(bnb::encode_4bit(bnb::QuantType::kFp4, -1e-4f) == 0);
  CHECK(bnb::encode_4bit(bnb::QuantType::kFp4, 1e-4f) == 8);
  CHECK(bnb::encode_4bit(bnb::QuantType::kNf4, 0.0f) == 7);
}

TEST_CASE("bnb 4-bit on partial blocks, odd lengths and FP4 match the backend's procedure") {
  const std::uint32_t seed = 20240611;
  INFO("seed ", seed);
  for (const bnb::QuantType type : {bnb::QuantType::kNf4, bnb::QuantType::kFp4}) {
    const Reference ref(table_from_oracle(
        type == bnb::QuantType::kNf4 ? "torch/bnb/nf4_table.npy" : "torch/bnb/fp4_table.npy", 16));
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{63}, std::int64_t{999},
                                 std::int64_t{4096}, std::int64_t{5001}}) {
      for (const std::int64_t block :
           {std::int64_t{32}, std::int64_t{64}, std::int64_t{128}, std::int64_t{4096}}) {
        INFO("type ", static_cast<int>(type), " n ", n, " block ", block);
        std::vector<float> x =
            lowbit_test::gaussian(n, 0.02f, seed + static_cast<std::uint32_t>(n));
        if (n > 100) x[50] = 0.3f;  // an outlier
        std::vector<int> codes;
        std::vector<float> absmax_ref;
        ref.quantize(x, block, codes, absmax_ref);
        const std::vector<std::uint8_t> packed_ref = pack_bnb(codes, ref.code(0.0f));

        std::vector<std::uint8_t> packed(bnb::packed_4bit_bytes(n) + 1, 0xAB);
        std::vector<float> absmax(static_cast<std::size_t>(bnb::block_count(n, block)) + 1, -5.0f);
        REQUIRE(bnb::quantize_4bit(type, lowbit::flat<const float>(x.data(), n), block,
                                   packed.data(), packed.size() - 1, absmax.data(),
                                   static_cast<std::int64_t>(absmax.size()) - 1)
                    .ok());
        CHECK(packed.back() == 0xAB);  // nothing past the packed bytes
        CHECK(absmax.back() == -5.0f);
        packed.pop_back();
        absmax.pop_back();
        CHECK(packed == packed_ref);
        CHECK(absmax == absmax_ref);

        std::vector<float> y(static_cast<std::size_t>(n));
        REQUIRE(bnb::dequantize_4bit(type, packed.data(), packed.size(), absmax.data(),
                                     static_cast<std::int64_t>(absmax.size()), block,
                                     lowbit::flat(y.data(), n))
                    .ok());
        for (std::int64_t i = 0; i < n; ++i) {
          const float expected =
              ref.table[static_cast<std::size_t>(codes[static_cast<std::size_t>(i)])] *
              absmax_ref[static_cast<std::size_t>(i / block)];
          if (!(y[static_cast<std::size_t>(i)] == expected)) {
            FAIL_CHECK("dequantized value ", i, ": ", y[static_cast<std::size_t>(i)], " expected ",
                       expected);
            break;
          }
        }
      }
    }
  }
}

TEST_CASE("bnb full blocks multiply by the float32 reciprocal, the partial block divides") {
  const Reference ref(table_from_oracle("torch/bnb/nf4_table.npy", 16));
  // Values x whose code differs between x * (1 / am) and x / am: near a midpoint m, walk a few
  // ulps around m * am until the two scalings fall on different sides of m.
  std::vector<float> amaxes, xs;
  for (float am = 0.731f; am < 3.0f && xs.size() < 16; am = std::nextafter(am * 1.013f, 9.0f)) {
    const float recip = 1.0f / am;
    for (const float m : ref.midpoints) {
      float x = m * am;
      for (int k = 0; k < 8; ++k, x = std::nextafter(x, 9.0f)) {
        if (std::fabs(x) >= am) break;
        if (ref.code(x * recip) != ref.code(x / am)) {
          amaxes.push_back(am);
          xs.push_back(x);
          break;
        }
      }
    }
  }
  REQUIRE(xs.size() >= 4);
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const float am = amaxes[k], x = xs[k];
    INFO("absmax ", am, " x ", x);
    // Block 0 (full, 64 values) and block 1 (partial, 3 values) both hold am and x.
    std::vector<float> v(67, 0.0f);
    v[0] = am;
    v[1] = x;
    v[64] = -am;
    v[65] = x;
    std::vector<std::uint8_t> packed(34);
    std::vector<float> absmax(2);
    REQUIRE(bnb::quantize_4bit(bnb::QuantType::kNf4, lowbit::flat<const float>(v.data(), 67), 64,
                               packed.data(), packed.size(), absmax.data(), 2)
                .ok());
    CHECK((packed[0] & 0xF) == ref.code(x * (1.0f / am)));  // element 1: full block
    CHECK((packed[32] & 0xF) == ref.code(x / am));          // element 65: partial block
  }
}

TEST_CASE("bnb 8-bit blockwise with the dynamic map matches the backend's procedure") {
  const Reference ref(table_from_oracle("torch/bnb/dynamic_map.npy", 256));
  const std::uint32_t seed = 77;
  INFO("seed ", seed);
  for (const std::int64_t n : {std::int64_t{256}, std::int64_t{1000}, std::int64_t{4096}}) {
    for (const std::int64_t block : {std::int64_t{64}, std::int64_t{256}, std::int64_t{4096}}) {
      INFO("n ", n, " block ", block);
      std::vector<float> x =
          lowbit_test::gaussian(n, 1.5f, seed + static_cast<std::uint32_t>(n), 0.25f);
      std::vector<int> codes_ref;
      std::vector<float> absmax_ref;
      ref.quantize(x, block, codes_ref, absmax_ref);
      std::vector<std::uint8_t> codes(static_cast<std::size_t>(n));
      std::vector<float> absmax(absmax_ref.size());
      REQUIRE(bnb::quantize_blockwise_8bit(lowbit::flat<const float>(x.data(), n), block,
                                           codes.data(), codes.size(), absmax.data(),
                                           static_cast<std::int64_t>(absmax.size()))
                  .ok());
      CHECK(absmax == absmax_ref);
      std::int64_t mismatch = -1;
      for (std::int64_t i = 0; i < n && mismatch < 0; ++i)
        if (codes[static_cast<std::size_t>(i)] != codes_ref[static_cast<std::size_t>(i)])
          mismatch = i;
      CHECK(mismatch == -1);
      std::vector<float> y(static_cast<std::size_t>(n));
      REQUIRE(bnb::dequantize_blockwise_8bit(codes.data(), codes.size(), absmax.data(),
                                             static_cast<std::int64_t>(absmax.size()), block,
                                             lowbit::flat(y.data(), n))
                  .ok());
      for (std::int64_t i = 0; i < n; ++i)
        REQUIRE(y[static_cast<std::size_t>(i)] == ref.table[codes[static_cast<std::size_t>(i)]] *
                                                      absmax[static_cast<std::size_t>(i / block)]);
    }
  }
}

TEST_CASE("bnb zero blocks: absmax 0 for a full block, 1e-38 for a partial one") {
  std::vector<float> x(64 + 10, 0.0f);
  std::vector<std::uint8_t> packed(37, 0xCD);
  std::vector<float> absmax(2, -1.0f);
  REQUIRE(bnb::quantize_4bit(bnb::QuantType::kNf4, lowbit::flat<const float>(x.data(), 74), 64,
                             packed.data(), packed.size(), absmax.data(), 2)
              .ok());
  CHECK(absmax[0] == 0.0f);
  CHECK(absmax[1] == 1e-38f);
  for (std::uint8_t b : packed) CHECK(b == 0x77);  // NF4 code 7 is 0.0
  std::vector<float> y(74, 1.0f);
  REQUIRE(bnb::dequantize_4bit(bnb::QuantType::kNf4, packed.data(), packed.size(), absmax.data(), 2,
                               64, lowbit::flat(y.data(), 74))
              .ok());
  for (float v : y) CHECK(v == 0.0f);
  REQUIRE(bnb::quantize_4bit(bnb::QuantType::kFp4, lowbit::flat<const float>(x.data(), 74), 64,
                             packed.data(), packed.size(), absmax.data(), 2)
              .ok());
  for (std::uint8_t b : packed) CHECK(b == 0x00);  // FP4 code 0 is +0
}

TEST_CASE("bnb errors are specific and leave the outputs untouched") {
  std::vector<float> x = lowbit_test::gaussian(130, 1.0f, 5);
  std::vector<std::uint8_t> packed(65, 0x5A);
  std::vector<float> absmax(3, 7.0f);
  const auto view = lowbit::flat<const float>(x.data(), 130);
  const auto untouched = [&] {
    for (std::uint8_t b : packed) REQUIRE(b == 0x5A);
    for (float a : absmax) REQUIRE(a == 7.0f);
  };
  for (const std::int64_t bad : {std::int64_t{0}, std::int64_t{-64}, std::int64_t{16},
                                 std::int64_t{48}, std::int64_t{100}, std::int64_t{8192}}) {
    INFO("block size ", bad);
    CHECK(bnb::quantize_4bit(bnb::QuantType::kNf4, view, bad, packed.data(), 65, absmax.data(), 3)
              .code() == Errc::kInvalidArgument);
  }
  CHECK(bnb::quantize_4bit(static_cast<bnb::QuantType>(9), view, 64, packed.data(), 65,
                           absmax.data(), 3)
            .code() == Errc::kInvalidArgument);
  CHECK(bnb::quantize_blockwise_8bit(view, 32, packed.data(), 65, absmax.data(), 3).code() ==
        Errc::kInvalidArgument);

  x[37] = std::numeric_limits<float>::quiet_NaN();
  lowbit::Status s =
      bnb::quantize_4bit(bnb::QuantType::kNf4, view, 64, packed.data(), 65, absmax.data(), 3);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 37);
  x[37] = 0.5f;
  x[129] = -std::numeric_limits<float>::infinity();
  s = bnb::quantize_4bit(bnb::QuantType::kFp4, view, 32, packed.data(), 65, absmax.data(), 3);
  CHECK(s.code() == Errc::kShapeMismatch);  // 3 absmax for 5 blocks of 32: sizes are checked first
  s = bnb::quantize_4bit(bnb::QuantType::kFp4, view, 64, packed.data(), 65, absmax.data(), 3);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 129);
  x[129] = 1.0f;
  untouched();

  s = bnb::quantize_4bit(bnb::QuantType::kNf4, view, 64, packed.data(), 64, absmax.data(), 3);
  CHECK(s.code() == Errc::kShapeMismatch);
  CHECK(s.index() == 128);
  s = bnb::quantize_4bit(bnb::QuantType::kNf4, view, 64, packed.data(), 65, absmax.data(), 2);
  CHECK(s.code() == Errc::kShapeMismatch);
  CHECK(s.index() == 128);
  CHECK(bnb::quantize_4bit(bnb::QuantType::kNf4, view, 64, nullptr, 65, absmax.data(), 3).code() ==
        Errc::kInvalidArgument);
  CHECK(bnb::quantize_4bit(bnb::QuantType::kNf4,
                           lowbit::MatrixView<const float>(x.data(), -1, 5, 5, 1), 64,
                           packed.data(), 65, absmax.data(), 3)
            .code() == Errc::kInvalidArgument);
  untouched();
  CHECK(bnb::quantize_4bit(bnb::QuantType::kNf4, lowbit::flat<const float>(nullptr, 0), 64, nullptr,
                           0, nullptr, 0)
            .ok());

  std::vector<float> y(130, -3.0f);
  s = bnb::dequantize_4bit(bnb::QuantType::kNf4, packed.data(), 64, absmax.data(), 3, 64,
                           lowbit::flat(y.data(), 130));
  CHECK(s.code() == Errc::kTruncated);
  CHECK(s.index() == 128);
  s = bnb::dequantize_4bit(bnb::QuantType::kNf4, packed.data(), 65, absmax.data(), 2, 64,
                           lowbit::flat(y.data(), 130));
  CHECK(s.code() == Errc::kTruncated);
  CHECK(s.index() == 128);
  s = bnb::dequantize_blockwise_8bit(packed.data(), 65, absmax.data(), 3, 64,
                                     lowbit::flat(y.data(), 130));
  CHECK(s.code() == Errc::kTruncated);
  CHECK(s.index() == 65);
  CHECK(bnb::dequantize_4bit(bnb::QuantType::kNf4, packed.data(), 65, absmax.data(), 3, 63,
                             lowbit::flat(y.data(), 130))
            .code() == Errc::kInvalidArgument);
  for (float v : y) REQUIRE(v == -3.0f);

  CHECK(bnb::double_quant_offset(absmax.data(), 0).status().code() == Errc::kEmpty);
  CHECK(bnb::double_quant_offset(absmax.data(), -1).status().code() == Errc::kInvalidArgument);
  std::vector<float> am = {1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f};
  CHECK(bnb::double_quant_offset(am.data(), 4).status().index() == 2);
  std::vector<std::uint8_t> dq(4, 0x11);
  float absmax2 = 9.0f;
  s = bnb::double_quantize(am.data(), 4, 1.0f, dq.data(), 4, &absmax2, 1);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 2);
  am[2] = 3e38f;
  s = bnb::double_quantize(am.data(), 4, -3e38f, dq.data(), 4, &absmax2, 1);  // 3e38 + 3e38 = Inf
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(bnb::double_quantize(am.data(), 4, std::numeric_limits<float>::infinity(), dq.data(), 4,
                             &absmax2, 1)
            .code() == Errc::kNonFinite);
  CHECK(bnb::double_quantize(am.data(), 4, 1.0f, dq.data(), 3, &absmax2, 1).code() ==
        Errc::kShapeMismatch);
  CHECK(bnb::double_quantize(am.data(), 4, 1.0f, dq.data(), 4, &absmax2, 0).code() ==
        Errc::kShapeMismatch);
  for (std::uint8_t b : dq) CHECK(b == 0x11);
  CHECK(absmax2 == 9.0f);
  std::vector<float> rec(4, 0.0f);
  CHECK(bnb::double_dequantize(dq.data(), 3, &absmax2, 1, 0.0f, rec.data(), 4).code() ==
        Errc::kTruncated);
  CHECK(bnb::double_dequantize(dq.data(), 4, &absmax2, 0, 0.0f, rec.data(), 4).code() ==
        Errc::kTruncated);
}

}  // namespace
