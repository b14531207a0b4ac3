// ggml's legacy 32-value formats (q4_0, q4_1, q5_0, q5_1, q8_0, q8_1) against ggml itself
// (tests/data/ggml, made by llama.cpp c392e509; see tests/data/ggml/README.md).
//
// For every type and each of the 14 oracle inputs: the reference quantizer's bytes, the chunk path
// without importance (= the reference for these types), the importance-matrix path's bytes
// (q4_0..q5_1), and the dequantization of every oracle file, bit for bit (so -0.0 is not +0.0).
// The inputs pin the conventions: `zeros` the -0.0 scale of q4_0/q5_0, `tiny` an fp16 scale that
// underflows to 0 under non-zero codes, `large` q8_1's s overflowing to Inf, `single_*` the signed
// maximum and first-wins ties, `halfnormal` min = 0 for the affine types.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/format/ggml/legacy.hpp"
#include "lowbit/tensor_view.hpp"
#include "support/raw.hpp"

namespace {

namespace ggml = lowbit::ggml;
using lowbit::Errc;
using lowbit_test::load_bytes;
using lowbit_test::load_f32;

const char* const kInputs[] = {"gauss",  "student_t3", "outliers",   "weightlike", "mixed_scale",
                               "halfnormal", "zeros",  "const",      "single_pos", "single_neg",
                               "tiny",   "large",      "alt_sign",   "ramp"};

template <class Block>
std::string type_name() {
  return ggml::FormatTraits<Block>::kName;
}

template <class Block>
std::vector<Block> load_blocks(const std::string& relative) {
  const std::vector<std::uint8_t> bytes = load_bytes(relative);
  INFO(relative);
  REQUIRE(bytes.size() % sizeof(Block) == 0);
  std::vector<Block> blocks(bytes.size() / sizeof(Block));
  if (!bytes.empty()) std::memcpy(blocks.data(), bytes.data(), bytes.size());
  return blocks;
}

// Index of the first differing block, or -1.
template <class Block>
long first_block_mismatch(const std::vector<Block>& got, const std::vector<Block>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t b = 0; b < got.size(); ++b)
    if (std::memcmp(&got[b], &want[b], sizeof(Block)) != 0) return static_cast<long>(b);
  return -1;
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Index of the first float whose bit pattern differs, or -1.
long first_bit_mismatch(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    if (bits_of(got[i]) != bits_of(want[i])) return static_cast<long>(i);
  return -1;
}

template <class Block>
std::vector<float> decode(const std::vector<Block>& blocks) {
  std::vector<float> out(blocks.size() * 32, 12345.0f);
  const lowbit::Status s = ggml::FormatTraits<Block>::dequantize(
      blocks.data(), static_cast<std::int64_t>(out.size()), out.data());
  REQUIRE(s.ok());
  return out;
}

std::vector<float> importance_for(std::size_t n) {
  std::vector<float> imatrix = load_f32("ggml/inputs/imatrix_4096.f32");
  REQUIRE(imatrix.size() == 4096);
  REQUIRE(n <= imatrix.size());
  imatrix.resize(n);  // 256-value rows use the first 256 entries, as the oracle did
  return imatrix;
}

// quality.tsv: one row per quantized oracle file.
struct Quality {
  double rmse = -1;
  double weighted_mse = -1;
};

Quality quality_of(const std::string& input, const std::string& type, const std::string& variant) {
  const std::vector<std::uint8_t> bytes = load_bytes("ggml/quality.tsv");
  const std::string text(bytes.begin(), bytes.end());
  const std::string key = input + "\t" + type + "\t" + variant + "\t";
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    if (line.compare(0, key.size(), key) == 0) {
      // columns: input type variant file rmse max_abs_err imatrix_weighted_mse
      std::vector<std::string> cols;
      std::size_t p = 0;
      while (true) {
        const std::size_t tab = line.find('\t', p);
        cols.push_back(line.substr(p, tab == std::string::npos ? std::string::npos : tab - p));
        if (tab == std::string::npos) break;
        p = tab + 1;
      }
      REQUIRE(cols.size() == 7);
      return {std::stod(cols[4]), std::stod(cols[6])};
    }
    at = end + 1;
  }
  INFO("no quality.tsv row for ", key);
  REQUIRE(false);
  return {};
}

// quality.tsv prints 6 significant digits.
void check_close(double got, double want) {
  INFO("got ", got, ", quality.tsv ", want);
  CHECK(std::fabs(got - want) <= 1e-5 * std::fabs(want) + 1e-300);
}

template <class Block>
void check_quality(const std::string& input, const std::string& variant,
                   const std::vector<float>& x, const std::vector<float>& deq) {
  const std::vector<float> w = importance_for(x.size());
  double sq = 0, wsq = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = static_cast<double>(x[i]) - static_cast<double>(deq[i]);
    sq += e * e;
    wsq += static_cast<double>(w[i]) * e * e;
  }
  const double n = static_cast<double>(x.size());
  const Quality q = quality_of(input, type_name<Block>(), variant);
  INFO(input, " ", type_name<Block>(), " ", variant);
  check_close(std::sqrt(sq / n), q.rmse);
  check_close(wsq / n, q.weighted_mse);
}

#define LEGACY_TYPES                                                                   \
  ggml::BlockQ4_0, ggml::BlockQ4_1, ggml::BlockQ5_0, ggml::BlockQ5_1, ggml::BlockQ8_0, \
      ggml::BlockQ8_1

}  // namespace

TEST_CASE("ggml legacy: layouts and traits mirror ggml-common.h") {
  static_assert(offsetof(ggml::BlockQ4_0, qs) == 2, "q4_0 codes at 2");
  static_assert(offsetof(ggml::BlockQ4_1, m) == 2 && offsetof(ggml::BlockQ4_1, qs) == 4, "q4_1");
  static_assert(offsetof(ggml::BlockQ5_0, qh) == 2 && offsetof(ggml::BlockQ5_0, qs) == 6, "q5_0");
  static_assert(offsetof(ggml::BlockQ5_1, m) == 2 && offsetof(ggml::BlockQ5_1, qh) == 4 &&
                    offsetof(ggml::BlockQ5_1, qs) == 8,
                "q5_1");
  static_assert(offsetof(ggml::BlockQ8_0, qs) == 2, "q8_0 codes at 2");
  static_assert(offsetof(ggml::BlockQ8_1, s) == 2 && offsetof(ggml::BlockQ8_1, qs) == 4, "q8_1");
  static_assert(std::is_trivially_copyable<ggml::BlockQ5_1>::value, "blocks are plain bytes");

  using std::is_same;
  CHECK(is_same<ggml::FormatTraits<ggml::BlockQ4_0>::DotPartner, ggml::BlockQ8_0>::value);
  CHECK(is_same<ggml::FormatTraits<ggml::BlockQ5_0>::DotPartner, ggml::BlockQ8_0>::value);
  CHECK(is_same<ggml::FormatTraits<ggml::BlockQ8_0>::DotPartner, ggml::BlockQ8_0>::value);
  CHECK(is_same<ggml::FormatTraits<ggml::BlockQ4_1>::DotPartner, ggml::BlockQ8_1>::value);
  CHECK(is_same<ggml::FormatTraits<ggml::BlockQ5_1>::DotPartner, ggml::BlockQ8_1>::value);
  CHECK(ggml::FormatTraits<ggml::BlockQ4_0>::kGgmlType == 2);
  CHECK(ggml::FormatTraits<ggml::BlockQ4_1>::kGgmlType == 3);
  CHECK(ggml::FormatTraits<ggml::BlockQ5_0>::kGgmlType == 6);
  CHECK(ggml::FormatTraits<ggml::BlockQ5_1>::kGgmlType == 7);
  CHECK(ggml::FormatTraits<ggml::BlockQ8_0>::kGgmlType == 8);
  CHECK(ggml::FormatTraits<ggml::BlockQ8_1>::kGgmlType == 9);
  CHECK(type_name<ggml::BlockQ5_1>() == "q5_1");
  CHECK(ggml::FormatTraits<ggml::BlockQ8_1>::kBlockSize == 32);
}

TEST_CASE_TEMPLATE("ggml legacy: reference quantizer and dequantizer are byte and bit exact", Block,
                   LEGACY_TYPES) {
  using Traits = ggml::FormatTraits<Block>;
  const std::string type = type_name<Block>();
  for (const char* input : kInputs) {
    INFO(type, " on ", input);
    const std::vector<float> x = load_f32(std::string("ggml/inputs/") + input + ".f32");
    const std::vector<Block> want = load_blocks<Block>("ggml/ref/" + std::string(input) + "." +
                                                       type + ".bin");
    REQUIRE(want.size() * 32 == x.size());
    const auto n = static_cast<std::int64_t>(x.size());

    std::vector<Block> got(want.size());
    std::memset(got.data(), 0xA5, got.size() * sizeof(Block));  // no byte may survive
    REQUIRE(Traits::quantize_reference(x.data(), n, got.data()).ok());
    CHECK(first_block_mismatch(got, want) == -1);

    // ggml_quantize_chunk without importance gave the reference bytes for all six types.
    std::memset(got.data(), 0x5A, got.size() * sizeof(Block));
    REQUIRE(Traits::quantize(x.data(), n, got.data(), nullptr).ok());
    CHECK(first_block_mismatch(got, want) == -1);

    const std::vector<float> deq = decode(want);
    const std::vector<float> want_deq =
        load_f32("ggml/ref/" + std::string(input) + "." + type + ".deq.f32");
    CHECK(first_bit_mismatch(deq, want_deq) == -1);

    // Error of lowbit's own round trip against ggml's figures for the same bytes.
    check_quality<Block>(input, "ref", x, decode(got));
  }
}

TEST_CASE_TEMPLATE("ggml legacy: importance-matrix path is byte exact with ggml_quantize_chunk",
                   Block, ggml::BlockQ4_0, ggml::BlockQ4_1, ggml::BlockQ5_0, ggml::BlockQ5_1) {
  using Traits = ggml::FormatTraits<Block>;
  const std::string type = type_name<Block>();
  for (const char* input : kInputs) {
    INFO(type, " with imatrix on ", input);
    const std::vector<float> x = load_f32(std::string("ggml/inputs/") + input + ".f32");
    const std::vector<float> imatrix = importance_for(x.size());
    const std::vector<Block> want =
        load_blocks<Block>("ggml/imatrix/" + std::string(input) + "." + type + ".imat.bin");
    REQUIRE(want.size() * 32 == x.size());

    std::vector<Block> got(want.size());
    std::memset(got.data(), 0xA5, got.size() * sizeof(Block));
    REQUIRE(Traits::quantize(x.data(), static_cast<std::int64_t>(x.size()), got.data(),
                             imatrix.data())
                .ok());
    CHECK(first_block_mismatch(got, want) == -1);

    const std::vector<float> want_deq =
        load_f32("ggml/imatrix/" + std::string(input) + "." + type + ".imat.deq.f32");
    CHECK(first_bit_mismatch(decode(want), want_deq) == -1);

    check_quality<Block>(input, "imatrix", x, decode(got));
  }
}

TEST_CASE_TEMPLATE("ggml legacy: q8 types ignore the importance matrix", Block, ggml::BlockQ8_0,
                   ggml::BlockQ8_1) {
  const std::vector<float> x = load_f32("ggml/inputs/outliers.f32");
  const std::vector<float> imatrix = importance_for(x.size());
  const std::vector<Block> want =
      load_blocks<Block>("ggml/ref/outliers." + type_name<Block>() + ".bin");
  std::vector<Block> got(want.size());
  REQUIRE(ggml::FormatTraits<Block>::quantize(x.data(), static_cast<std::int64_t>(x.size()),
                                              got.data(), imatrix.data())
              .ok());
  CHECK(first_block_mismatch(got, want) == -1);
}

TEST_CASE("ggml legacy: the edge cases the oracle files pin") {
  SUBCASE("all-zero q4_0/q5_0 blocks store d = -0.0 and the middle code") {
    const std::vector<float> x(64, 0.0f);
    ggml::BlockQ4_0 q4[2];
    ggml::BlockQ5_0 q5[2];
    REQUIRE(ggml::FormatTraits<ggml::BlockQ4_0>::quantize_reference(x.data(), 64, q4).ok());
    REQUIRE(ggml::FormatTraits<ggml::BlockQ5_0>::quantize_reference(x.data(), 64, q5).ok());
    const auto want4 = load_blocks<ggml::BlockQ4_0>("ggml/ref/zeros.q4_0.bin");
    CHECK(want4[0].d.bits == 0x8000);
    CHECK(want4[0].qs[0] == 0x88);
    CHECK(q4[1].d.bits == 0x8000);
    CHECK(q4[1].qs[15] == 0x88);
    CHECK(q5[0].d.bits == 0x8000);
    CHECK(q5[0].qs[3] == 0x00);
    CHECK(q5[0].qh[2] == 0xFF);  // code 16: low nibble 0, fifth bit set
  }
  SUBCASE("tiny: the fp16 scale underflows to 0 but the codes come from the float32 scale") {
    const std::vector<float> x = load_f32("ggml/inputs/tiny.f32");
    std::vector<ggml::BlockQ8_0> q(x.size() / 32);
    REQUIRE(ggml::FormatTraits<ggml::BlockQ8_0>::quantize_reference(x.data(), 256, q.data()).ok());
    CHECK(q[0].d.bits == 0);
    int nonzero = 0;
    for (int j = 0; j < 32; ++j) nonzero += q[0].qs[j] != 0;
    CHECK(nonzero > 0);
  }
  SUBCASE("large: q8_1's s overflows fp16 to +-Inf in 3 of 8 blocks") {
    const std::vector<float> x = load_f32("ggml/inputs/large.f32");
    std::vector<ggml::BlockQ8_1> q(x.size() / 32);
    REQUIRE(ggml::FormatTraits<ggml::BlockQ8_1>::quantize_reference(x.data(), 256, q.data()).ok());
    int infinite = 0;
    for (const auto& b : q) infinite += (b.s.bits & 0x7FFFu) == 0x7C00u;
    CHECK(infinite == 3);
  }
}

TEST_CASE("ggml legacy: subnormal blocks are defined (x86 behaviour where ggml's C is not)") {
  // max = 1e-39: d = max/-8 is subnormal and 1/d overflows to -Inf, so ggml's (int8_t) cast sees
  // -Inf (and NaN for the zeros), undefined in C; x86-64 code gives INT32_MIN, whose low byte 0 is
  // the code. lowbit reproduces that without undefined behaviour (the sanitizer build checks).
  std::vector<float> x(32, 0.0f);
  x[0] = 1e-39f;
  x[9] = -3e-40f;
  ggml::BlockQ4_0 q4;
  ggml::BlockQ5_1 q5;
  ggml::BlockQ8_0 q8;
  REQUIRE(ggml::FormatTraits<ggml::BlockQ4_0>::quantize_reference(x.data(), 32, &q4).ok());
  REQUIRE(ggml::FormatTraits<ggml::BlockQ5_1>::quantize_reference(x.data(), 32, &q5).ok());
  REQUIRE(ggml::FormatTraits<ggml::BlockQ8_0>::quantize_reference(x.data(), 32, &q8).ok());
  CHECK(q4.d.bits == 0x8000);  // -1.25e-40 rounds to fp16 -0
  int q4_codes = 0, q8_codes = 0;
  for (int j = 0; j < 16; ++j) q4_codes += q4.qs[j];
  for (int j = 0; j < 32; ++j) q8_codes += q8.qs[j] != 0;
  CHECK(q4_codes == 0);
  CHECK(q8_codes == 0);
  // q5_1: d = 1.3e-39/31 ~ 4.2e-41 and 1/d overflows as well: (x - min)*Inf is Inf or NaN,
  // so every 5-bit code is 0 (low nibbles and fifth bits alike).
  CHECK(q5.m.bits == 0x8000);  // fp16(-3e-40) = -0
  int q5_bits = q5.qh[0] | q5.qh[1] | q5.qh[2] | q5.qh[3];
  for (int j = 0; j < 16; ++j) q5_bits |= q5.qs[j];
  CHECK(q5_bits == 0);
  float deq[32];
  REQUIRE(ggml::FormatTraits<ggml::BlockQ5_1>::dequantize(&q5, 32, deq).ok());
  for (float v : deq) CHECK(v == 0.0f);  // the fp16 scale is 0 as well
}

TEST_CASE("ggml legacy: quantize_rows runs the importance path per row") {
  // Two different rows: sigma2 is per row, so quantizing them as one 8192-value row differs.
  std::vector<float> x = load_f32("ggml/inputs/gauss.f32");
  const std::vector<float> second = load_f32("ggml/inputs/weightlike.f32");
  x.insert(x.end(), second.begin(), second.end());
  const std::vector<float> imatrix = importance_for(4096);
  std::vector<ggml::BlockQ5_1> got(2 * 128);
  REQUIRE(ggml::quantize_rows(lowbit::row_major(static_cast<const float*>(x.data()), 2, 4096),
                              got.data(), imatrix.data())
              .ok());
  const auto first_want = load_blocks<ggml::BlockQ5_1>("ggml/imatrix/gauss.q5_1.imat.bin");
  const auto second_want = load_blocks<ggml::BlockQ5_1>("ggml/imatrix/weightlike.q5_1.imat.bin");
  CHECK(first_block_mismatch(std::vector<ggml::BlockQ5_1>(got.begin(), got.begin() + 128),
                             first_want) == -1);
  CHECK(first_block_mismatch(std::vector<ggml::BlockQ5_1>(got.begin() + 128, got.end()),
                             second_want) == -1);
}

TEST_CASE_TEMPLATE("ggml legacy: bad input is a Status and writes nothing", Block, LEGACY_TYPES) {
  using Traits = ggml::FormatTraits<Block>;
  std::vector<float> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.25f * static_cast<float>(i) - 7.0f;
  std::vector<float> importance(64, 1.0f);
  std::vector<Block> y(2);
  std::memset(y.data(), 0xA5, y.size() * sizeof(Block));
  const std::vector<Block> untouched = y;
  std::vector<float> out(64, 3.0f);

  SUBCASE("length not a multiple of 32") {
    CHECK(Traits::quantize_reference(x.data(), 33, y.data()).code() == Errc::kIndivisible);
    CHECK(Traits::quantize(x.data(), 48, y.data(), importance.data()).code() == Errc::kIndivisible);
    CHECK(Traits::dequantize(y.data(), 31, out.data()).code() == Errc::kIndivisible);
  }
  SUBCASE("negative length") {
    CHECK(Traits::quantize(x.data(), -32, y.data()).code() == Errc::kInvalidArgument);
    CHECK(Traits::dequantize(y.data(), -32, out.data()).code() == Errc::kInvalidArgument);
  }
  SUBCASE("NaN or Inf in the values, with its index") {
    x[40] = std::nanf("");
    lowbit::Status s = Traits::quantize_reference(x.data(), 64, y.data());
    CHECK(s.code() == Errc::kNonFinite);
    CHECK(s.index() == 40);
    x[40] = 1.0f;
    x[63] = -INFINITY;
    s = Traits::quantize(x.data(), 64, y.data(), importance.data());
    CHECK(s.code() == Errc::kNonFinite);
    CHECK(s.index() == 63);
  }
  SUBCASE("negative or non-finite importance") {
    importance[5] = -0.5f;
    lowbit::Status s = Traits::quantize(x.data(), 64, y.data(), importance.data());
    CHECK(s.code() == Errc::kInvalidArgument);
    CHECK(s.index() == 5);
    importance[5] = 1.0f;
    importance[50] = std::nanf("");
    CHECK(Traits::quantize(x.data(), 64, y.data(), importance.data()).code() ==
          Errc::kInvalidArgument);
  }
  SUBCASE("null pointers") {
    CHECK(Traits::quantize_reference(nullptr, 64, y.data()).code() == Errc::kInvalidArgument);
    CHECK(Traits::quantize(x.data(), 64, nullptr, importance.data()).code() ==
          Errc::kInvalidArgument);
    CHECK(Traits::dequantize(nullptr, 64, out.data()).code() == Errc::kInvalidArgument);
    CHECK(Traits::dequantize(y.data(), 64, nullptr).code() == Errc::kInvalidArgument);
    // Nothing to read or write: null is fine for an empty row.
    CHECK(Traits::quantize(nullptr, 0, nullptr).ok());
    CHECK(Traits::dequantize(nullptr, 0, nullptr).ok());
  }
  CHECK(std::memcmp(y.data(), untouched.data(), y.size() * sizeof(Block)) == 0);
  int changed = 0;
  for (float v : out) changed += v != 3.0f;
  CHECK(changed == 0);
}
