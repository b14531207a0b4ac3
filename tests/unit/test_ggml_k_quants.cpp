// Tests for lowbit/format/ggml/k_quants.hpp against ggml's own outputs (tests/data/ggml, made by
// llama.cpp c392e509; see tests/data/ggml/README.md): for q2_K..q6_K and q8_K and all 14 inputs,
// the reference quantizer's bytes, the importance-matrix path's bytes (q2_K..q6_K) and the
// dequantized floats of both must match bit for bit; the reconstruction error must equal the one
// ggml's run reported in quality.tsv; and every bad-input path returns its specific Status
// without writing.
#include "lowbit/format/ggml/k_quants.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "support/ggml_blocks.hpp"
#include "support/raw.hpp"

namespace {

using lowbit_test::bytes_of;
using lowbit_test::blocks_from;

using lowbit::Errc;
using lowbit::Status;
namespace ggml = lowbit::ggml;

const char* const kInputs[] = {"gauss",      "student_t3", "outliers", "weightlike", "mixed_scale",
                               "halfnormal", "zeros",      "const",    "single_pos", "single_neg",
                               "tiny",       "large",      "alt_sign", "ramp"};

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Byte equality, reporting the first differing byte as (block, offset) on failure.
template <class Block>
void require_same_bytes(const std::vector<std::uint8_t>& got,
                        const std::vector<std::uint8_t>& expected) {
  REQUIRE(got.size() == expected.size());
  std::size_t first = got.size();
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != expected[i]) {
      if (first == got.size()) first = i;
      ++differing;
    }
  }
  INFO("differing bytes: ", differing, ", first at block ", first / sizeof(Block), " offset ",
       first % sizeof(Block));
  CHECK(differing == 0);
}

// Bit equality of floats (so -0 and +0 differ), reporting the first mismatch.
void require_same_bits(const std::vector<float>& got, const std::vector<float>& expected) {
  REQUIRE(got.size() == expected.size());
  std::size_t first = got.size();
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (bits_of(got[i]) != bits_of(expected[i])) {
      if (first == got.size()) first = i;
      ++differing;
    }
  }
  if (differing != 0) {
    INFO("first mismatch at ", first, ": got ", got[first], " expected ", expected[first]);
    CHECK(differing == 0);
  } else {
    CHECK(differing == 0);
  }
}

// One row of quality.tsv.
struct Quality {
  double rmse = -1;
  double weighted_mse = -1;
};

Quality quality_of(const std::string& input, const std::string& type, const std::string& variant) {
  std::ifstream file(std::string(LOWBIT_TEST_DATA_DIR) + "/ggml/quality.tsv");
  REQUIRE(file.good());
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream fields(line);
    std::string in, ty, va, path, rmse, max_abs, wmse;
    if (!std::getline(fields, in, '\t') || !std::getline(fields, ty, '\t') ||
        !std::getline(fields, va, '\t') || !std::getline(fields, path, '\t') ||
        !std::getline(fields, rmse, '\t') || !std::getline(fields, max_abs, '\t') ||
        !std::getline(fields, wmse, '\t'))
      continue;
    if (in == input && ty == type && va == variant) return {std::stod(rmse), std::stod(wmse)};
  }
  FAIL("no quality.tsv row for ", input, " ", type, " ", variant);
  return {};
}

// Our reconstruction error must be ggml's (quality.tsv prints 6 significant digits).
void check_quality(const std::vector<float>& x, const std::vector<float>& deq,
                   const std::vector<float>& imatrix, const Quality& ggml_quality) {
  double se = 0;
  double wse = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = static_cast<double>(x[i]) - static_cast<double>(deq[i]);
    se += e * e;
    wse += static_cast<double>(imatrix[i]) * e * e;
  }
  const double n = static_cast<double>(x.size());
  const double rmse = std::sqrt(se / n);
  const double wmse = wse / n;
  CHECK(std::fabs(rmse - ggml_quality.rmse) <= 1e-5 * ggml_quality.rmse);
  CHECK(std::fabs(wmse - ggml_quality.weighted_mse) <= 1e-5 * ggml_quality.weighted_mse);
}

// The reference quantizer and the chunk path without importance reproduce ref/<in>.<type>.bin;
// our dequantizer reproduces ref/<in>.<type>.deq.f32 from ggml's bytes; the error is ggml's.
template <class Block>
void check_reference_oracles() {
  using Traits = ggml::FormatTraits<Block>;
  const std::vector<float> imatrix = lowbit_test::load_f32("ggml/inputs/imatrix_4096.f32");
  for (const char* input : kInputs) {
    const std::string stem = std::string(input) + "." + Traits::kName;
    CAPTURE(stem);
    const std::vector<float> x =
        lowbit_test::load_f32("ggml/inputs/" + std::string(input) + ".f32");
    const std::vector<std::uint8_t> expected = lowbit_test::load_bytes("ggml/ref/" + stem + ".bin");
    const std::vector<float> expected_deq = lowbit_test::load_f32("ggml/ref/" + stem + ".deq.f32");
    const auto n = static_cast<std::int64_t>(x.size());
    REQUIRE(n % 256 == 0);

    std::vector<Block> y(x.size() / 256);
    REQUIRE(Traits::quantize_reference(x.data(), n, y.data()).ok());
    require_same_bytes<Block>(bytes_of(y), expected);

    std::vector<Block> chunk(x.size() / 256);
    REQUIRE(Traits::quantize(x.data(), n, chunk.data(), nullptr).ok());
    require_same_bytes<Block>(bytes_of(chunk), expected);

    const std::vector<Block> theirs = blocks_from<Block>(expected);
    std::vector<float> deq(x.size());
    REQUIRE(Traits::dequantize(theirs.data(), n, deq.data()).ok());
    require_same_bits(deq, expected_deq);

    if (std::string(Traits::kName) != "q8_K")  // quality.tsv has no q8_K rows
      check_quality(x, deq, imatrix, quality_of(input, Traits::kName, "ref"));
  }
}

// The importance path reproduces imatrix/<in>.<type>.imat.bin and its dequantization.
template <class Block>
void check_importance_oracles() {
  using Traits = ggml::FormatTraits<Block>;
  const std::vector<float> imatrix = lowbit_test::load_f32("ggml/inputs/imatrix_4096.f32");
  for (const char* input : kInputs) {
    const std::string stem = std::string(input) + "." + Traits::kName + ".imat";
    CAPTURE(stem);
    const std::vector<float> x =
        lowbit_test::load_f32("ggml/inputs/" + std::string(input) + ".f32");
    const std::vector<std::uint8_t> expected =
        lowbit_test::load_bytes("ggml/imatrix/" + stem + ".bin");
    const std::vector<float> expected_deq =
        lowbit_test::load_f32("ggml/imatrix/" + stem + ".deq.f32");
    const auto n = static_cast<std::int64_t>(x.size());
    REQUIRE(imatrix.size() >= x.size());  // 256-value rows use the first 256 weights

    std::vector<Block> y(x.size() / 256);
    REQUIRE(Traits::quantize(x.data(), n, y.data(), imatrix.data()).ok());
    require_same_bytes<Block>(bytes_of(y), expected);

    const std::vector<Block> theirs = blocks_from<Block>(expected);
    std::vector<float> deq(x.size());
    REQUIRE(Traits::dequantize(theirs.data(), n, deq.data()).ok());
    require_same_bits(deq, expected_deq);

    check_quality(x, deq, imatrix, quality_of(input, Traits::kName, "imatrix"));
  }
}

// Every bad input yields its Status and leaves the output untouched.
template <class Block>
void check_bad_input() {
  using Traits = ggml::FormatTraits<Block>;
  std::vector<float> x(512);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
  std::vector<float> importance(512, 1.0f);
  std::vector<Block> y(2);
  std::memset(y.data(), 0xA5, y.size() * sizeof(Block));
  const std::vector<std::uint8_t> untouched = bytes_of(y);
  const auto unchanged = [&] { CHECK(bytes_of(y) == untouched); };

  Status s = Traits::quantize_reference(x.data(), 255, y.data());
  CHECK(s.code() == Errc::kIndivisible);
  s = Traits::quantize(x.data(), 300, y.data(), importance.data());
  CHECK(s.code() == Errc::kIndivisible);
  s = Traits::quantize_reference(x.data(), -256, y.data());
  CHECK(s.code() == Errc::kInvalidArgument);
  s = Traits::quantize_reference(nullptr, 256, y.data());
  CHECK(s.code() == Errc::kInvalidArgument);
  s = Traits::quantize(x.data(), 256, nullptr, nullptr);
  CHECK(s.code() == Errc::kInvalidArgument);
  unchanged();

  x[300] = std::numeric_limits<float>::quiet_NaN();
  s = Traits::quantize_reference(x.data(), 512, y.data());
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 300);
  s = Traits::quantize(x.data(), 512, y.data(), importance.data());
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 300);
  x[300] = -std::numeric_limits<float>::infinity();
  s = Traits::quantize(x.data(), 512, y.data(), nullptr);
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 300);
  x[300] = 0.5f;
  unchanged();

  importance[7] = -1.0f;
  s = Traits::quantize(x.data(), 512, y.data(), importance.data());
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.index() == 7);
  importance[7] = std::numeric_limits<float>::quiet_NaN();
  s = Traits::quantize(x.data(), 512, y.data(), importance.data());
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.index() == 7);
  unchanged();

  // An empty row is valid and touches nothing, even with null pointers.
  CHECK(Traits::quantize_reference(nullptr, 0, nullptr).ok());
  CHECK(Traits::quantize(nullptr, 0, nullptr, nullptr).ok());
  CHECK(Traits::dequantize(nullptr, 0, nullptr).ok());

  std::vector<float> out(512, 42.0f);
  CHECK(Traits::dequantize(y.data(), 257, out.data()).code() == Errc::kIndivisible);
  CHECK(Traits::dequantize(y.data(), -256, out.data()).code() == Errc::kInvalidArgument);
  CHECK(Traits::dequantize(nullptr, 256, out.data()).code() == Errc::kInvalidArgument);
  CHECK(Traits::dequantize(y.data(), 256, nullptr).code() == Errc::kInvalidArgument);
  for (float v : out) REQUIRE(v == 42.0f);
}

template <class Block>
constexpr bool dots_with_q8_K() {
  return std::is_same<typename ggml::FormatTraits<Block>::DotPartner, ggml::BlockQ8_K>::value;
}

}  // namespace

TEST_CASE("ggml K-quant blocks mirror ggml's layout and type ids") {
  using ggml::FormatTraits;
  static_assert(std::is_trivially_copyable<ggml::BlockQ2_K>::value, "blocks are raw bytes");
  static_assert(std::is_trivially_copyable<ggml::BlockQ8_K>::value, "blocks are raw bytes");
  static_assert(dots_with_q8_K<ggml::BlockQ2_K>() && dots_with_q8_K<ggml::BlockQ3_K>() &&
                    dots_with_q8_K<ggml::BlockQ4_K>() && dots_with_q8_K<ggml::BlockQ5_K>() &&
                    dots_with_q8_K<ggml::BlockQ6_K>() && dots_with_q8_K<ggml::BlockQ8_K>(),
                "every K-quant's vec_dot partner is q8_K");
  CHECK(FormatTraits<ggml::BlockQ2_K>::kGgmlType == 10);
  CHECK(FormatTraits<ggml::BlockQ3_K>::kGgmlType == 11);
  CHECK(FormatTraits<ggml::BlockQ4_K>::kGgmlType == 12);
  CHECK(FormatTraits<ggml::BlockQ5_K>::kGgmlType == 13);
  CHECK(FormatTraits<ggml::BlockQ6_K>::kGgmlType == 14);
  CHECK(FormatTraits<ggml::BlockQ8_K>::kGgmlType == 15);
  CHECK(std::string(FormatTraits<ggml::BlockQ2_K>::kName) == "q2_K");
  CHECK(std::string(FormatTraits<ggml::BlockQ6_K>::kName) == "q6_K");
  CHECK(std::string(FormatTraits<ggml::BlockQ8_K>::kName) == "q8_K");
  CHECK(FormatTraits<ggml::BlockQ4_K>::kBlockSize == 256);
  CHECK(FormatTraits<ggml::BlockQ8_K>::kBlockSize == 256);
  // Sizes per super-block as ggml-common.h, i.e. the oracle's bytes per block (manifest.tsv).
  CHECK(sizeof(ggml::BlockQ2_K) == 84);
  CHECK(sizeof(ggml::BlockQ3_K) == 110);
  CHECK(sizeof(ggml::BlockQ4_K) == 144);
  CHECK(sizeof(ggml::BlockQ5_K) == 176);
  CHECK(sizeof(ggml::BlockQ6_K) == 210);
  CHECK(sizeof(ggml::BlockQ8_K) == 292);
}

TEST_CASE("q2_K matches ggml: reference bytes, importance bytes, dequantization") {
  check_reference_oracles<ggml::BlockQ2_K>();
  check_importance_oracles<ggml::BlockQ2_K>();
}

TEST_CASE("q3_K matches ggml: reference bytes, importance bytes, dequantization") {
  check_reference_oracles<ggml::BlockQ3_K>();
  check_importance_oracles<ggml::BlockQ3_K>();
}

TEST_CASE("q4_K matches ggml: reference bytes, importance bytes, dequantization") {
  check_reference_oracles<ggml::BlockQ4_K>();
  check_importance_oracles<ggml::BlockQ4_K>();
}

TEST_CASE("q5_K matches ggml: reference bytes, importance bytes, dequantization") {
  check_reference_oracles<ggml::BlockQ5_K>();
  check_importance_oracles<ggml::BlockQ5_K>();
}

TEST_CASE("q6_K matches ggml: reference bytes, importance bytes, dequantization") {
  check_reference_oracles<ggml::BlockQ6_K>();
  check_importance_oracles<ggml::BlockQ6_K>();
}

TEST_CASE("q8_K matches ggml's reference quantizer and dequantizer") {
  check_reference_oracles<ggml::BlockQ8_K>();
}

TEST_CASE("q8_K: importance is checked then ignored; all-zero blocks get zero bsums") {
  using Traits = ggml::FormatTraits<ggml::BlockQ8_K>;
  const std::vector<float> x = lowbit_test::load_f32("ggml/inputs/gauss.f32");
  const std::vector<float> imatrix = lowbit_test::load_f32("ggml/inputs/imatrix_4096.f32");
  const std::vector<std::uint8_t> expected = lowbit_test::load_bytes("ggml/ref/gauss.q8_K.bin");
  std::vector<ggml::BlockQ8_K> y(16);
  REQUIRE(Traits::quantize(x.data(), 4096, y.data(), imatrix.data()).ok());
  require_same_bytes<ggml::BlockQ8_K>(bytes_of(y), expected);

  // ggml would leave bsums as whatever the buffer held; lowbit zeroes them.
  const std::vector<float> zeros(256, 0.0f);
  std::memset(y.data(), 0x5A, sizeof(ggml::BlockQ8_K));
  REQUIRE(Traits::quantize_reference(zeros.data(), 256, y.data()).ok());
  const std::vector<std::uint8_t> zero_block = lowbit_test::load_bytes("ggml/ref/zeros.q8_K.bin");
  REQUIRE(zero_block.size() == sizeof(ggml::BlockQ8_K));
  CHECK(std::memcmp(y.data(), zero_block.data(), sizeof(ggml::BlockQ8_K)) == 0);
  for (std::int16_t s : y[0].bsums) CHECK(s == 0);
}

TEST_CASE("ggml K-quants: quantize_rows applies the importance row to every row") {
  // Two 4096-value rows (gauss, student_t3) through common.hpp's matrix entry point must give
  // the single-row oracles back to back.
  const std::vector<float> a = lowbit_test::load_f32("ggml/inputs/gauss.f32");
  const std::vector<float> b = lowbit_test::load_f32("ggml/inputs/student_t3.f32");
  const std::vector<float> imatrix = lowbit_test::load_f32("ggml/inputs/imatrix_4096.f32");
  std::vector<float> both(a);
  both.insert(both.end(), b.begin(), b.end());
  std::vector<ggml::BlockQ4_K> y(32);
  REQUIRE(ggml::quantize_rows(lowbit::row_major<const float>(both.data(), 2, 4096), y.data(),
                              imatrix.data())
              .ok());
  std::vector<std::uint8_t> expected = lowbit_test::load_bytes("ggml/imatrix/gauss.q4_K.imat.bin");
  const std::vector<std::uint8_t> second =
      lowbit_test::load_bytes("ggml/imatrix/student_t3.q4_K.imat.bin");
  expected.insert(expected.end(), second.begin(), second.end());
  require_same_bytes<ggml::BlockQ4_K>(bytes_of(y), expected);

  // An error in row 1 is reported at its flat index.
  both[4096 + 17] = std::numeric_limits<float>::infinity();
  const Status s = ggml::quantize_rows(lowbit::row_major<const float>(both.data(), 2, 4096),
                                       y.data(), imatrix.data());
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 4096 + 17);
}

TEST_CASE("ggml K-quants: bad input is a Status and writes nothing") {
  SUBCASE("q2_K") { check_bad_input<ggml::BlockQ2_K>(); }
  SUBCASE("q3_K") { check_bad_input<ggml::BlockQ3_K>(); }
  SUBCASE("q4_K") { check_bad_input<ggml::BlockQ4_K>(); }
  SUBCASE("q5_K") { check_bad_input<ggml::BlockQ5_K>(); }
  SUBCASE("q6_K") { check_bad_input<ggml::BlockQ6_K>(); }
  SUBCASE("q8_K") { check_bad_input<ggml::BlockQ8_K>(); }
}
