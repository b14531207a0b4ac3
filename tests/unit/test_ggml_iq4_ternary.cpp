// ggml's IQ4_NL, IQ4_XS, TQ1_0, TQ2_0 blocks and F16/BF16 rows against ggml's own outputs
// (tests/data/ggml, llama.cpp c392e50): quantized bytes exactly, dequantized floats bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/format/ggml/float16.hpp"
#include "lowbit/format/ggml/iq4.hpp"
#include "lowbit/format/ggml/ternary.hpp"
#include "support/ggml_blocks.hpp"
#include "support/raw.hpp"

namespace {

namespace g = lowbit::ggml;
using lowbit::Errc;

// The 14 oracle inputs (tests/data/ggml/README.md): six of 4096 values, eight of 256.
const char* const kInputs[] = {"gauss",      "student_t3", "outliers", "weightlike", "mixed_scale",
                               "halfnormal", "zeros",      "const",    "single_pos", "single_neg",
                               "tiny",       "large",      "alt_sign", "ramp"};

std::vector<float> input(const std::string& name) { return lowbit_test::load_f32("ggml/inputs/" + name + ".f32"); }

// The first n entries of the shared importance matrix, as the oracle used them.
std::vector<float> importance(std::size_t n) {
  std::vector<float> all = lowbit_test::load_f32("ggml/inputs/imatrix_4096.f32");
  REQUIRE(all.size() >= n);
  all.resize(n);
  return all;
}

using lowbit_test::blocks_from;
using lowbit_test::bytes_of;

// Index of the first differing byte, or -1 when equal (a size mismatch counts at the shorter end).
std::int64_t first_byte_difference(const std::vector<std::uint8_t>& a,
                                   const std::vector<std::uint8_t>& b) {
  const std::size_t n = a.size() < b.size() ? a.size() : b.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<std::int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<std::int64_t>(n);
}

// Index of the first float whose bits differ, or -1.
std::int64_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
  const std::size_t n = a.size() < b.size() ? a.size() : b.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return static_cast<std::int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<std::int64_t>(n);
}

// Quantizes x with `importance` (nullptr: none) through quantize, or through quantize_reference.
template <class Block>
std::vector<std::uint8_t> quantized(const std::vector<float>& x, bool reference,
                                    const float* weights = nullptr) {
  using Traits = g::FormatTraits<Block>;
  const auto n = static_cast<std::int64_t>(x.size());
  std::vector<Block> y(static_cast<std::size_t>(n / Traits::kBlockSize));
  const lowbit::Status s = reference ? Traits::quantize_reference(x.data(), n, y.data())
                                     : Traits::quantize(x.data(), n, y.data(), weights);
  INFO(s.message());
  REQUIRE(s.ok());
  return bytes_of(y);
}

// Decodes the oracle file `bin` and compares with its `deq` file bit for bit.
template <class Block>
void check_dequantization(const std::string& bin, const std::string& deq) {
  INFO(bin);
  const std::vector<Block> blocks = blocks_from<Block>(lowbit_test::load_bytes("ggml/" + bin));
  const std::vector<float> expected = lowbit_test::load_f32("ggml/" + deq);
  REQUIRE(expected.size() == blocks.size() * g::FormatTraits<Block>::kBlockSize);
  std::vector<float> out(expected.size(), -1.0f);
  REQUIRE(g::FormatTraits<Block>::dequantize(blocks.data(), static_cast<std::int64_t>(out.size()),
                                             out.data())
              .ok());
  CHECK(first_bit_difference(out, expected) == -1);
}

}  // namespace

TEST_CASE("ggml iq4/ternary/f16 traits name ggml's types, sizes and activation partners") {
  static_assert(std::is_same<g::FormatTraits<g::BlockIQ4_NL>::DotPartner, g::BlockQ8_0>::value, "");
  static_assert(std::is_same<g::FormatTraits<g::BlockIQ4_XS>::DotPartner, g::BlockQ8_K>::value, "");
  static_assert(std::is_same<g::FormatTraits<g::BlockTQ1_0>::DotPartner, g::BlockQ8_K>::value, "");
  static_assert(std::is_same<g::FormatTraits<g::BlockTQ2_0>::DotPartner, g::BlockQ8_K>::value, "");
  static_assert(std::is_same<g::FormatTraits<lowbit::Half>::DotPartner, lowbit::Half>::value, "");
  CHECK(g::FormatTraits<g::BlockIQ4_NL>::kGgmlType == 20);
  CHECK(g::FormatTraits<g::BlockIQ4_XS>::kGgmlType == 23);
  CHECK(g::FormatTraits<g::BlockTQ1_0>::kGgmlType == 34);
  CHECK(g::FormatTraits<g::BlockTQ2_0>::kGgmlType == 35);
  CHECK(g::FormatTraits<lowbit::Half>::kGgmlType == 1);
  CHECK(g::FormatTraits<lowbit::BFloat16>::kGgmlType == 30);
  CHECK(g::FormatTraits<g::BlockIQ4_NL>::kBlockSize == 32);
  CHECK(g::FormatTraits<g::BlockIQ4_XS>::kBlockSize == 256);
  CHECK(g::FormatTraits<g::BlockTQ1_0>::kBlockSize == 256);
  CHECK(g::FormatTraits<g::BlockTQ2_0>::kBlockSize == 256);
  CHECK(std::string(g::FormatTraits<g::BlockIQ4_XS>::kName) == "iq4_xs");
  CHECK(std::string(g::FormatTraits<g::BlockTQ1_0>::kName) == "tq1_0");
  CHECK(std::string(g::FormatTraits<lowbit::BFloat16>::kName) == "bf16");
}

TEST_CASE("iq4_nl reference quantizer: ggml's bytes, code bytes of d = 0 blocks masked") {
  int masked_blocks = 0;
  for (const char* name : kInputs) {
    INFO(name);
    const std::vector<float> x = input(name);
    const std::vector<std::uint8_t> expected =
        lowbit_test::load_bytes(std::string("ggml/ref/") + name + ".iq4_nl.bin");
    std::vector<std::uint8_t> ours = quantized<g::BlockIQ4_NL>(x, true);
    REQUIRE(ours.size() == expected.size());
    std::vector<std::uint8_t> masked = expected;
    for (std::size_t b = 0; b < expected.size() / 18; ++b) {
      const std::size_t at = 18 * b;
      if (((expected[at] | (expected[at + 1] << 8)) & 0x7FFF) != 0) continue;
      // ggml's code bytes here come from an uninitialised buffer; lowbit writes code 8.
      ++masked_blocks;
      for (std::size_t j = 2; j < 18; ++j) {
        CHECK(ours[at + j] == 0x88);
        masked[at + j] = ours[at + j];
      }
    }
    CHECK(first_byte_difference(ours, masked) == -1);
  }
  // zeros, tiny: 8 blocks each; single_pos, single_neg: 7 each.
  CHECK(masked_blocks == 30);
}

TEST_CASE("iq4_nl quantize without importance is ggml_quantize_chunk, not the reference") {
  int differs_from_reference = 0;
  for (const char* name : kInputs) {
    INFO(name);
    const std::vector<float> x = input(name);
    const bool has_chunk = std::string(name) != "const";  // const: chunk == ref, not stored
    const std::vector<std::uint8_t> expected = lowbit_test::load_bytes(
        std::string("ggml/") + (has_chunk ? "chunk/" : "ref/") + name + ".iq4_nl.bin");
    const std::vector<std::uint8_t> ours = quantized<g::BlockIQ4_NL>(x, false);
    CHECK(first_byte_difference(ours, expected) == -1);
    // The two paths of lowbit differ exactly where ggml's differ, ignoring the unspecified code
    // bytes of ggml's reference d = 0 blocks (chunk writes 0x88 there, as lowbit's reference).
    std::vector<std::uint8_t> reference =
        lowbit_test::load_bytes(std::string("ggml/ref/") + name + ".iq4_nl.bin");
    for (std::size_t at = 0; at < reference.size(); at += 18) {
      if (((reference[at] | (reference[at + 1] << 8)) & 0x7FFF) == 0)
        std::memset(reference.data() + at + 2, 0x88, 16);
    }
    const bool ggml_differs = first_byte_difference(reference, expected) != -1;
    const bool lowbit_differs = first_byte_difference(quantized<g::BlockIQ4_NL>(x, true), ours) != -1;
    CHECK(lowbit_differs == ggml_differs);
    if (lowbit_differs) ++differs_from_reference;
  }
  // All but const, zeros, tiny (all blocks negligible) and single_neg (its one non-zero block
  // gets the same bytes from both searches).
  CHECK(differs_from_reference == 10);
}

TEST_CASE("iq4_nl and iq4_xs with an importance matrix: ggml_quantize_chunk's bytes") {
  for (const char* name : kInputs) {
    INFO(name);
    const std::vector<float> x = input(name);
    const std::vector<float> w = importance(x.size());
    CHECK(first_byte_difference(quantized<g::BlockIQ4_NL>(x, false, w.data()),
                                lowbit_test::load_bytes(std::string("ggml/imatrix/") + name +
                                                        ".iq4_nl.imat.bin")) == -1);
    CHECK(first_byte_difference(quantized<g::BlockIQ4_XS>(x, false, w.data()),
                                lowbit_test::load_bytes(std::string("ggml/imatrix/") + name +
                                                        ".iq4_xs.imat.bin")) == -1);
  }
}

TEST_CASE("iq4_xs, tq1_0, tq2_0 reference quantizers: ggml's bytes; quantize() without importance too") {
  for (const char* name : kInputs) {
    INFO(name);
    const std::vector<float> x = input(name);
    const std::string ref = std::string("ggml/ref/") + name;
    const std::vector<std::uint8_t> xs = lowbit_test::load_bytes(ref + ".iq4_xs.bin");
    const std::vector<std::uint8_t> tq1 = lowbit_test::load_bytes(ref + ".tq1_0.bin");
    const std::vector<std::uint8_t> tq2 = lowbit_test::load_bytes(ref + ".tq2_0.bin");
    CHECK(first_byte_difference(quantized<g::BlockIQ4_XS>(x, true), xs) == -1);
    CHECK(first_byte_difference(quantized<g::BlockIQ4_XS>(x, false), xs) == -1);
    CHECK(first_byte_difference(quantized<g::BlockTQ1_0>(x, true), tq1) == -1);
    CHECK(first_byte_difference(quantized<g::BlockTQ2_0>(x, true), tq2) == -1);
    // ggml_quantize_chunk ignores the importance matrix for the ternary types.
    const std::vector<float> w = importance(x.size());
    CHECK(first_byte_difference(quantized<g::BlockTQ1_0>(x, false, w.data()), tq1) == -1);
    CHECK(first_byte_difference(quantized<g::BlockTQ2_0>(x, false, w.data()), tq2) == -1);
  }
}

TEST_CASE("dequantization of every oracle file is bit-exact") {
  for (const char* name : kInputs) {
    INFO(name);
    const std::string n = name;
    check_dequantization<g::BlockIQ4_NL>("ref/" + n + ".iq4_nl.bin", "ref/" + n + ".iq4_nl.deq.f32");
    if (n != "const")
      check_dequantization<g::BlockIQ4_NL>("chunk/" + n + ".iq4_nl.bin",
                                           "chunk/" + n + ".iq4_nl.deq.f32");
    check_dequantization<g::BlockIQ4_NL>("imatrix/" + n + ".iq4_nl.imat.bin",
                                         "imatrix/" + n + ".iq4_nl.imat.deq.f32");
    check_dequantization<g::BlockIQ4_XS>("ref/" + n + ".iq4_xs.bin", "ref/" + n + ".iq4_xs.deq.f32");
    check_dequantization<g::BlockIQ4_XS>("imatrix/" + n + ".iq4_xs.imat.bin",
                                         "imatrix/" + n + ".iq4_xs.imat.deq.f32");
    check_dequantization<g::BlockTQ1_0>("ref/" + n + ".tq1_0.bin", "ref/" + n + ".tq1_0.deq.f32");
    check_dequantization<g::BlockTQ2_0>("ref/" + n + ".tq2_0.bin", "ref/" + n + ".tq2_0.deq.f32");
    check_dequantization<lowbit::Half>("ref/" + n + ".f16.bin", "ref/" + n + ".f16.deq.f32");
    check_dequantization<lowbit::BFloat16>("ref/" + n + ".bf16.bin", "ref/" + n + ".bf16.deq.f32");
  }
}

TEST_CASE("f16 and bf16 rows: ggml's reference conversions") {
  for (const char* name : kInputs) {
    INFO(name);
    const std::vector<float> x = input(name);
    const auto n = static_cast<std::int64_t>(x.size());
    const std::string ref = std::string("ggml/ref/") + name;
    std::vector<lowbit::Half> h(x.size());
    std::vector<lowbit::BFloat16> b(x.size());
    REQUIRE(g::f32_to_f16_row(x.data(), n, h.data()).ok());
    REQUIRE(g::f32_to_bf16_row(x.data(), n, b.data()).ok());
    CHECK(first_byte_difference(bytes_of(h), lowbit_test::load_bytes(ref + ".f16.bin")) == -1);
    CHECK(first_byte_difference(bytes_of(b), lowbit_test::load_bytes(ref + ".bf16.bin")) == -1);
    CHECK(first_byte_difference(quantized<lowbit::Half>(x, true),
                                lowbit_test::load_bytes(ref + ".f16.bin")) == -1);
    CHECK(first_byte_difference(quantized<lowbit::BFloat16>(x, false),
                                lowbit_test::load_bytes(ref + ".bf16.bin")) == -1);
    std::vector<float> back(x.size());
    REQUIRE(g::f16_to_f32_row(h.data(), n, back.data()).ok());
    CHECK(first_bit_difference(back, lowbit_test::load_f32(ref + ".f16.deq.f32")) == -1);
    REQUIRE(g::bf16_to_f32_row(b.data(), n, back.data()).ok());
    CHECK(first_bit_difference(back, lowbit_test::load_f32(ref + ".bf16.deq.f32")) == -1);
  }
}

TEST_CASE("f16 and bf16 rows keep NaN and Inf like ggml; the quantizer form rejects them") {
  const float nan_signalling = lowbit::detail::bits_float(0xFF800001u);  // -sNaN, payload 1
  const float inf = std::numeric_limits<float>::infinity();
  const float x[4] = {nan_signalling, inf, 70000.0f, -1.0f};
  lowbit::Half h[4];
  lowbit::BFloat16 b[4];
  REQUIRE(g::f32_to_f16_row(x, 4, h).ok());
  REQUIRE(g::f32_to_bf16_row(x, 4, b).ok());
  CHECK(h[0].bits == 0xFE00);  // sign kept, quiet, payload dropped
  CHECK(h[1].bits == 0x7C00);
  CHECK(h[2].bits == 0x7C00);  // finite overflow rounds to Inf
  CHECK(h[3].bits == 0xBC00);
  CHECK(b[0].bits == 0xFFC0);  // top half 0xFF80 with the quiet bit forced
  CHECK(b[1].bits == 0x7F80);
  CHECK(b[3].bits == 0xBF80);

  using H = g::FormatTraits<lowbit::Half>;
  using B = g::FormatTraits<lowbit::BFloat16>;
  lowbit::Half hs[2] = {{0x1234}, {0x1234}};
  const float big[2] = {1.0f, 70000.0f};
  const lowbit::Status over = H::quantize(big, 2, hs);
  CHECK(over.code() == Errc::kOutOfRange);
  CHECK(over.index() == 1);
  CHECK(hs[0].bits == 0x1234);  // nothing written
  CHECK(H::quantize_reference(x + 1, 1, hs).code() == Errc::kNonFinite);
  const float max_float[1] = {std::numeric_limits<float>::max()};  // rounds to Inf in bf16
  lowbit::BFloat16 bs[1] = {{0x1234}};
  CHECK(B::quantize(max_float, 1, bs).code() == Errc::kOutOfRange);
  CHECK(bs[0].bits == 0x1234);
  CHECK(g::f32_to_f16_row(x, -1, h).code() == Errc::kInvalidArgument);
  CHECK(g::f32_to_bf16_row(nullptr, 4, b).code() == Errc::kInvalidArgument);
  CHECK(g::f16_to_f32_row(h, 4, nullptr).code() == Errc::kInvalidArgument);
  CHECK(g::bf16_to_f32_row(b, 0, nullptr).ok());
}

namespace {

// Bad input must be a specific Status, and the output must be untouched.
template <class Block>
void check_bad_input() {
  using Traits = g::FormatTraits<Block>;
  INFO(Traits::kName);
  const std::int64_t n = 2 * Traits::kBlockSize;
  std::vector<float> x(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = std::sin(0.37f * static_cast<float>(i));
  std::vector<float> w(x.size(), 1.0f);
  std::vector<Block> y(2);
  std::memset(static_cast<void*>(y.data()), 0xAB, y.size() * sizeof(Block));
  const std::vector<std::uint8_t> untouched = bytes_of(y);

  if (Traits::kBlockSize > 1) {
    CHECK(Traits::quantize(x.data(), n - 1, y.data(), nullptr).code() == Errc::kIndivisible);
    CHECK(Traits::quantize_reference(x.data(), n + 1, y.data()).code() == Errc::kIndivisible);
    std::vector<float> out(x.size() + 1);
    CHECK(Traits::dequantize(y.data(), n - 1, out.data()).code() == Errc::kIndivisible);
  }
  CHECK(Traits::quantize(x.data(), -Traits::kBlockSize, y.data(), nullptr).code() ==
        Errc::kInvalidArgument);
  CHECK(Traits::quantize(nullptr, n, y.data(), nullptr).code() == Errc::kInvalidArgument);
  CHECK(Traits::quantize_reference(x.data(), n, nullptr).code() == Errc::kInvalidArgument);
  CHECK(Traits::dequantize(nullptr, n, x.data()).code() == Errc::kInvalidArgument);
  CHECK(Traits::dequantize(y.data(), n, nullptr).code() == Errc::kInvalidArgument);

  const std::int64_t bad = n - 1 - Traits::kBlockSize / 2;  // in the last block: a block-by-block
                                                            // writer would already have written
  x[static_cast<std::size_t>(bad)] = std::nanf("");
  lowbit::Status s = Traits::quantize_reference(x.data(), n, y.data());
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == bad);
  x[static_cast<std::size_t>(bad)] = -std::numeric_limits<float>::infinity();
  s = Traits::quantize(x.data(), n, y.data(), w.data());
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == bad);
  x[static_cast<std::size_t>(bad)] = 0.5f;

  w[static_cast<std::size_t>(bad)] = -1.0f;
  s = Traits::quantize(x.data(), n, y.data(), w.data());
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.index() == bad);
  w[static_cast<std::size_t>(bad)] = std::nanf("");
  s = Traits::quantize(x.data(), n, y.data(), w.data());
  CHECK(s.code() == Errc::kInvalidArgument);
  CHECK(s.index() == bad);
  CHECK(first_byte_difference(bytes_of(y), untouched) == -1);

  // Empty rows are fine, even with null pointers.
  CHECK(Traits::quantize(nullptr, 0, nullptr, nullptr).ok());
  CHECK(Traits::dequantize(nullptr, 0, nullptr).ok());
}

}  // namespace

TEST_CASE("bad input is a Status and leaves the output untouched") {
  check_bad_input<g::BlockIQ4_NL>();
  check_bad_input<g::BlockIQ4_XS>();
  check_bad_input<g::BlockTQ1_0>();
  check_bad_input<g::BlockTQ2_0>();
  check_bad_input<lowbit::Half>();
  check_bad_input<lowbit::BFloat16>();
}

TEST_CASE("a block scale that overflows fp16 is kOutOfRange at the block's first element") {
  // The fp16 scale holds at most 65504: d ~ max/127 for IQ4_NL, max/(127*32) for IQ4_XS, max for
  // the ternary types.
  std::vector<float> x(512, 0.25f);
  x[300] = 3.0e9f;
  std::vector<g::BlockIQ4_NL> nl(16);
  lowbit::Status s = g::FormatTraits<g::BlockIQ4_NL>::quantize(x.data(), 512, nl.data());
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.index() == 288);
  s = g::FormatTraits<g::BlockIQ4_NL>::quantize_reference(x.data(), 512, nl.data());
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.index() == 288);
  std::vector<g::BlockIQ4_XS> xs(2);
  s = g::FormatTraits<g::BlockIQ4_XS>::quantize(x.data(), 512, xs.data());
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.index() == 256);

  x[300] = 65520.0f;  // the smallest float that rounds to Inf in fp16
  std::vector<g::BlockTQ1_0> tq1(2);
  std::memset(static_cast<void*>(tq1.data()), 0xAB, tq1.size() * sizeof(g::BlockTQ1_0));
  const std::vector<std::uint8_t> untouched = bytes_of(tq1);
  s = g::FormatTraits<g::BlockTQ1_0>::quantize_reference(x.data(), 512, tq1.data());
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.index() == 256);
  CHECK(first_byte_difference(bytes_of(tq1), untouched) == -1);  // checked before writing
  std::vector<g::BlockTQ2_0> tq2(2);
  s = g::FormatTraits<g::BlockTQ2_0>::quantize(x.data(), 512, tq2.data());
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.index() == 256);
  x[300] = 65504.0f;  // the largest finite fp16 is accepted
  CHECK(g::FormatTraits<g::BlockTQ2_0>::quantize(x.data(), 512, tq2.data()).ok());
  CHECK(g::FormatTraits<g::BlockTQ1_0>::quantize(x.data(), 512, tq1.data()).ok());
}

TEST_CASE("all-zero importance in a sub-block falls back to the weights x^2 (ggml: NaN scale)") {
  const std::vector<float> x = input("gauss");
  std::vector<float> w = importance(x.size());
  for (std::size_t i = 32; i < 64; ++i) w[i] = 0.0f;  // IQ4_NL block 1, IQ4_XS sub-block 1
  const std::vector<std::uint8_t> nl = quantized<g::BlockIQ4_NL>(x, false, w.data());
  const std::vector<std::uint8_t> nl_plain = quantized<g::BlockIQ4_NL>(x, false);
  // Block 1 equals the no-importance result; blocks 0 and 2 keep their importance-matrix bytes.
  CHECK(std::memcmp(nl.data() + 18, nl_plain.data() + 18, 18) == 0);
  const std::vector<std::uint8_t> nl_oracle =
      lowbit_test::load_bytes("ggml/imatrix/gauss.iq4_nl.imat.bin");
  CHECK(std::memcmp(nl.data(), nl_oracle.data(), 18) == 0);
  CHECK(std::memcmp(nl.data() + 36, nl_oracle.data() + 36, nl.size() - 36) == 0);

  // A whole IQ4_XS super-block without importance is quantized as without an importance matrix.
  for (std::size_t i = 0; i < 256; ++i) w[i] = 0.0f;
  const std::vector<std::uint8_t> xs = quantized<g::BlockIQ4_XS>(x, false, w.data());
  const std::vector<std::uint8_t> xs_plain = quantized<g::BlockIQ4_XS>(x, false);
  CHECK(std::memcmp(xs.data(), xs_plain.data(), 136) == 0);
  std::vector<float> back(x.size());
  const std::vector<g::BlockIQ4_XS> xs_blocks = blocks_from<g::BlockIQ4_XS>(xs);
  REQUIRE(g::FormatTraits<g::BlockIQ4_XS>::dequantize(
              xs_blocks.data(), static_cast<std::int64_t>(back.size()), back.data())
              .ok());
  for (float v : back) REQUIRE(std::isfinite(v));
}

TEST_CASE("quantize_rows over a strided matrix equals quantize row by row") {
  const std::vector<float> x = input("student_t3");  // 4096 values: 4 rows of 512 at stride 1024
  const std::vector<float> w = importance(512);
  const auto view = lowbit::MatrixView<const float>(x.data(), 4, 512, 1024, 1);
  std::vector<g::BlockIQ4_XS> all(8);
  REQUIRE(g::quantize_rows(view, all.data(), w.data()).ok());
  for (int r = 0; r < 4; ++r) {
    const std::vector<float> row(x.begin() + 1024 * r, x.begin() + 1024 * r + 512);
    const std::vector<std::uint8_t> one = quantized<g::BlockIQ4_XS>(row, false, w.data());
    CHECK(std::memcmp(all.data() + 2 * r, one.data(), one.size()) == 0);
  }
}

// The rules below are ggml's, read from its source and README; the oracle inputs never hit them
// exactly, so they are pinned here by hand-built blocks.
TEST_CASE("iq4 code search: an exact midpoint between two table entries takes the larger one") {
  // max = -127 makes the reference pass's inverse scale exactly 1, so x is compared with the
  // table as is: -4.5 lies halfway between -10 (code 7) and 1 (code 8).
  std::vector<float> x(32, 0.0f);
  x[0] = -127.0f;
  x[1] = -4.5f;
  x[2] = 31.5f;  // halfway between 25 (code 10) and 38 (code 11)
  g::BlockIQ4_NL block;
  REQUIRE(g::FormatTraits<g::BlockIQ4_NL>::quantize_reference(x.data(), 32, &block).ok());
  CHECK(block.qs[0] == 0x80);  // code 0 (-127), element 16 code 8 (x = 0 -> value 1)
  CHECK(block.qs[1] == 0x88);  // element 1: code 8
  CHECK(block.qs[2] == 0x8B);  // element 2: code 11
}

TEST_CASE("ternary trits round x/d half away from zero (ggml's lroundf)") {
  std::vector<float> x(256, 0.0f);
  x[0] = 1.0f;          // d = 1, trit 2
  x[32] = 0.5f;         // trit 2
  x[64] = -0.5f;        // trit 0
  x[96] = 0.49999997f;  // trit 1
  g::BlockTQ2_0 tq2;
  REQUIRE(g::FormatTraits<g::BlockTQ2_0>::quantize_reference(x.data(), 256, &tq2).ok());
  CHECK(tq2.qs[0] == (2 | 2 << 2 | 0 << 4 | 1 << 6));
  CHECK(tq2.d.bits == 0x3C00);
}

TEST_CASE("tq1_0 stores five trits as ceil(N * 256 / 243), for all 243 patterns") {
  // Pattern N goes to byte m = N % 48 of block N / 48: trit n (most significant first) is
  // element m + 32n (m < 32) or 160 + (m - 32) + 16n (m >= 32).
  std::vector<float> x(6 * 256, 0.0f);
  for (int number = 0; number < 243; ++number) {
    const int block = number / 48, m = number % 48;
    int rest = number;
    for (int n = 4; n >= 0; --n, rest /= 3) {
      const int element = m < 32 ? m + 32 * n : 160 + (m - 32) + 16 * n;
      x[static_cast<std::size_t>(256 * block + element)] = static_cast<float>(rest % 3 - 1);
    }
  }
  std::vector<g::BlockTQ1_0> y(6);
  REQUIRE(g::FormatTraits<g::BlockTQ1_0>::quantize_reference(x.data(), 6 * 256, y.data()).ok());
  for (int number = 0; number < 243; ++number) {
    INFO(number);
    const auto expected = static_cast<int>(std::ceil(number * 256.0 / 243.0));
    CHECK(y[static_cast<std::size_t>(number / 48)].qs[number % 48] == expected);
  }
  std::vector<float> back(x.size());
  REQUIRE(g::FormatTraits<g::BlockTQ1_0>::dequantize(y.data(), 6 * 256, back.data()).ok());
  CHECK(first_bit_difference(back, x) == -1);  // d = 1: the trits come back as -1, 0, +1
}

TEST_CASE("iq4_xs rounds a sub-block scale level that is exactly halfway to even (ggml's nearest_int)") {
  // Sub-block 0 holds table values (those a first pass from max = 113 maps back to themselves),
  // so its least-squares scale is exactly 1 and the super-block scale d = -1/32. Sub-block 1 holds
  // the same values times 1/64: its level is -32 * (1/64) = -0.5, which rounds to 0, stored as 32.
  const float levels[14] = {-83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  std::vector<float> x(256, 0.0f);
  for (int j = 0; j < 32; ++j) {
    x[static_cast<std::size_t>(j)] = levels[j % 14];
    x[static_cast<std::size_t>(32 + j)] = levels[j % 14] / 64.0f;
  }
  g::BlockIQ4_XS block;
  REQUIRE(g::FormatTraits<g::BlockIQ4_XS>::quantize_reference(x.data(), 256, &block).ok());
  CHECK(block.d.bits == lowbit::to_half(-1.0f / 32.0f).bits);
  CHECK(block.scales_l[0] == 0x00);  // sub-block 0: level -32 -> 0; sub-block 1: level 0 -> 32
  CHECK(block.scales_h == 0xAAA8);   // high bits: 0, 2, then 2 for the six empty sub-blocks
}
