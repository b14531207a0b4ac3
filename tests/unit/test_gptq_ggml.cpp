// GPTQ writing ggml blocks (algo/gptq_ggml.hpp).
//
// 1. With a diagonal H there is nothing to propagate, so the blocks must be ggml's own: checked
//    against the bytes ggml itself wrote (tests/data/ggml, llama.cpp c392e509; see its README) for
//    the 14 oracle inputs, without importance (ref/ and, for iq4_nl, chunk/) and with the oracle's
//    imatrix as diag(H) (imatrix/), and against lowbit's ggml::quantize_rows on random data. A code
//    may differ from ggml's only where ggml's code is not the nearest decoded level (ggml's legacy
//    formats and IQ4_NL round with the float32 scale before its fp16 rounding, see the header);
//    every such difference must bring the decoded value strictly nearer to the weight (or tie),
//    a block with no differing value must be byte-identical, and the K-quants and IQ4_XS must
//    match byte for byte.
// 2. With a realistic Hessian (correlated channels, outlier channels) the layer output error
//    tr(ΔW·H·ΔWᵀ) must be clearly below that of ggml's quantizer on the same W, with and without
//    the importance matrix; the returned dequantized weights must be the format's decode of the
//    returned blocks bit for bit, and finite.
// 3. A thread pool gives the serial bytes; bad input gets a specific Status.
#include "lowbit/algo/gptq_ggml.hpp"

#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/format/ggml/ternary.hpp"
#include "support/ggml_blocks.hpp"
#include "support/random.hpp"
#include "support/raw.hpp"

namespace {

using lowbit_test::blocks_from;

using lowbit::Errc;
namespace ggml = lowbit::ggml;

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

bool data_file_exists(const std::string& relative) {
  return std::ifstream(std::string(LOWBIT_TEST_DATA_DIR) + "/" + relative).good();
}

// The format's own decode of rows × cols values stored as row-major blocks.
template <class Block>
std::vector<float> decode(const std::vector<Block>& blocks, std::int64_t rows, std::int64_t cols) {
  using Traits = ggml::FormatTraits<Block>;
  const std::int64_t per_row = cols / Traits::kBlockSize;
  REQUIRE(static_cast<std::int64_t>(blocks.size()) == rows * per_row);
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t r = 0; r < rows; ++r)
    REQUIRE(Traits::dequantize(blocks.data() + r * per_row, cols, out.data() + r * cols).ok());
  return out;
}

// How our blocks differ from ggml's for the same weights x.
struct Comparison {
  std::int64_t values = 0;
  std::int64_t differing = 0;    // decoded values that differ
  std::int64_t ties = 0;         // ... at the same distance from x
  std::int64_t farther = 0;      // ... with ours farther from x: never allowed
  std::int64_t silent = 0;       // blocks whose bytes differ while every value agrees
};

template <class Block>
Comparison compare_with_ggml(const std::vector<float>& x, const std::vector<Block>& ours,
                             const std::vector<Block>& theirs,
                             const std::vector<float>& theirs_decoded) {
  constexpr std::int64_t kBlock = ggml::FormatTraits<Block>::kBlockSize;
  REQUIRE(ours.size() == theirs.size());
  REQUIRE(x.size() == ours.size() * static_cast<std::size_t>(kBlock));
  REQUIRE(theirs_decoded.size() == x.size());
  const std::vector<float> ours_decoded =
      decode(ours, 1, static_cast<std::int64_t>(x.size()));
  Comparison c;
  for (std::size_t b = 0; b < ours.size(); ++b) {
    std::int64_t in_block = 0;
    for (std::int64_t e = 0; e < kBlock; ++e) {
      const std::size_t k = b * static_cast<std::size_t>(kBlock) + static_cast<std::size_t>(e);
      ++c.values;
      if (bits_of(ours_decoded[k]) == bits_of(theirs_decoded[k])) continue;
      ++in_block;
      const double ours_gap = std::fabs(static_cast<double>(x[k]) - ours_decoded[k]);
      const double theirs_gap = std::fabs(static_cast<double>(x[k]) - theirs_decoded[k]);
      if (ours_gap == theirs_gap) ++c.ties;
      if (ours_gap > theirs_gap) ++c.farther;
    }
    c.differing += in_block;
    if (in_block == 0 && std::memcmp(&ours[b], &theirs[b], sizeof(Block)) != 0) ++c.silent;
  }
  return c;
}

// Formats whose quantizers already pick the nearest code for the stored scales (the others pick
// codes with the float32 scale before its fp16 rounding).
template <class Block>
constexpr bool kByteExact =
    std::is_same<Block, ggml::BlockQ2_K>::value || std::is_same<Block, ggml::BlockQ3_K>::value ||
    std::is_same<Block, ggml::BlockQ4_K>::value || std::is_same<Block, ggml::BlockQ5_K>::value ||
    std::is_same<Block, ggml::BlockQ6_K>::value;

// How many codes may differ: a weight within (fp16 rounding of the scale) × |level| of a decision
// boundary, so more for Q8_0's 255 levels than for the 16- or 32-level formats.
template <class Block>
void check_comparison(const Comparison& c) {
  CHECK(c.farther == 0);
  CHECK(c.silent == 0);
  if (kByteExact<Block>) {
    CHECK(c.differing == 0);
  } else if (std::is_same<Block, ggml::BlockQ8_0>::value) {
    CHECK(c.differing * 50 <= c.values);
  } else {
    CHECK(c.differing * 200 <= c.values);
  }
}

std::string name_of(const char* kind) { return kind; }

std::vector<float> diagonal_hessian(std::int64_t n, const float* diag) {
  std::vector<float> h(static_cast<std::size_t>(n * n), 0.0f);
  for (std::int64_t c = 0; c < n; ++c) h[static_cast<std::size_t>(c * n + c)] = diag[c];
  return h;
}

const char* const kBigInputs[] = {"gauss",       "student_t3", "outliers",
                                  "weightlike",  "mixed_scale", "halfnormal"};
const char* const kSmallInputs[] = {"zeros", "const", "single_pos", "single_neg",
                                    "tiny",  "large", "alt_sign",   "ramp"};

// ggml's bytes for one input without importance: ggml_quantize_chunk's (for iq4_nl the chunk/
// file; for every other type the chunk path wrote the ref/ bytes, see tests/data/ggml/README.md).
template <class Block>
std::string oracle_path(const std::string& input) {
  const std::string type = ggml::FormatTraits<Block>::kName;
  const std::string chunk = "ggml/chunk/" + input + "." + type + ".bin";
  if (type == "iq4_nl" && data_file_exists(chunk)) return chunk;  // none for const: same as ref
  return "ggml/ref/" + input + "." + type + ".bin";
}

#define LOWBIT_GPTQ_GGML_TYPES                                                                  \
  ggml::BlockQ4_0, ggml::BlockQ4_1, ggml::BlockQ5_0, ggml::BlockQ5_1, ggml::BlockQ8_0,          \
      ggml::BlockIQ4_NL, ggml::BlockIQ4_XS, ggml::BlockQ2_K, ggml::BlockQ3_K, ggml::BlockQ4_K, \
      ggml::BlockQ5_K, ggml::BlockQ6_K

TEST_CASE_TEMPLATE("gptq_ggml: with a diagonal H the blocks are ggml's own (oracle bytes)", Block,
                   LOWBIT_GPTQ_GGML_TYPES) {
  // All 14 inputs stacked as the rows of one W of 256 columns (the 4096-value ones as 16 rows
  // each): without importance ggml's blocks do not depend on where a row ends.
  std::vector<float> x;
  std::vector<Block> theirs;
  std::vector<float> theirs_decoded;
  for (const char* const* list : {kBigInputs, kSmallInputs}) {
    const std::size_t count = list == kBigInputs ? 6 : 8;
    for (std::size_t k = 0; k < count; ++k) {
      const std::string input = list[k];
      const std::vector<float> xi = lowbit_test::load_f32("ggml/inputs/" + input + ".f32");
      const std::string path = oracle_path<Block>(input);
      const std::vector<Block> ti = blocks_from<Block>(lowbit_test::load_bytes(path));
      const std::vector<float> di =
          lowbit_test::load_f32(path.substr(0, path.size() - 4) + ".deq.f32");
      x.insert(x.end(), xi.begin(), xi.end());
      theirs.insert(theirs.end(), ti.begin(), ti.end());
      theirs_decoded.insert(theirs_decoded.end(), di.begin(), di.end());
    }
  }
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / 256;
  REQUIRE(rows == 6 * 16 + 8);
  std::vector<float> diag(256);
  for (std::size_t c = 0; c < diag.size(); ++c) diag[c] = 0.5f + 0.01f * static_cast<float>(c);
  const std::vector<float> h = diagonal_hessian(256, diag.data());
  lowbit::GptqGgmlOptions o;
  o.use_hessian_importance = false;
  const auto q = lowbit::gptq_quantize_ggml<Block>(lowbit::row_major(x.data(), rows, 256),
                                                   lowbit::row_major(h.data(), 256, 256), o);
  REQUIRE(q);
  CHECK(q->blocks_per_row == 256 / ggml::FormatTraits<Block>::kBlockSize);
  const Comparison c = compare_with_ggml(x, q->blocks, theirs, theirs_decoded);
  check_comparison<Block>(c);
  MESSAGE(name_of(ggml::FormatTraits<Block>::kName), ": ", c.differing, " of ", c.values,
          " codes differ from ggml's (each nearer to the weight for the stored scale), ", c.ties,
          " ties");
}

TEST_CASE_TEMPLATE("gptq_ggml: diagonal H as importance gives ggml's imatrix bytes (oracle)", Block,
                   ggml::BlockIQ4_NL, ggml::BlockIQ4_XS, ggml::BlockQ2_K, ggml::BlockQ3_K,
                   ggml::BlockQ4_K, ggml::BlockQ5_K, ggml::BlockQ6_K) {
  // The oracle quantized each input as one row with imatrix_4096.f32. These types take their
  // importance weights per (super-)block, so the 256 columns of chunk k of every input, stacked as
  // rows, with H = diag(imatrix[256k, 256k + 256)) must reproduce the oracle's blocks of chunk k.
  // (The legacy types take sigma2 over the whole row, which one block at a time cannot see:
  // documented in the header, not tested here.) Chunks 0-3: each chunk is one factorisation.
  constexpr std::int64_t kBlock = ggml::FormatTraits<Block>::kBlockSize;
  constexpr std::size_t kPerChunk = static_cast<std::size_t>(256 / kBlock);
  const std::vector<float> imatrix = lowbit_test::load_f32("ggml/inputs/imatrix_4096.f32");
  lowbit::GptqGgmlOptions o;
  o.use_hessian_importance = true;
  struct Input {
    std::vector<float> x, decoded;
    std::vector<Block> blocks;
  };
  std::vector<Input> inputs;
  for (const char* const* list : {kBigInputs, kSmallInputs}) {
    const std::size_t count = list == kBigInputs ? 6 : 8;
    for (std::size_t k = 0; k < count; ++k) {
      const std::string base = std::string("ggml/imatrix/") + list[k] + "." +
                               ggml::FormatTraits<Block>::kName + ".imat";
      Input in;
      in.x = lowbit_test::load_f32(std::string("ggml/inputs/") + list[k] + ".f32");
      in.blocks = blocks_from<Block>(lowbit_test::load_bytes(base + ".bin"));
      in.decoded = lowbit_test::load_f32(base + ".deq.f32");
      inputs.push_back(std::move(in));
    }
  }
  Comparison total;
  for (std::size_t chunk = 0; chunk < 4; ++chunk) {
    CAPTURE(chunk);
    std::vector<float> x, theirs_decoded;
    std::vector<Block> theirs;
    for (const Input& in : inputs) {
      if (in.x.size() < 256 * (chunk + 1)) continue;
      x.insert(x.end(), in.x.begin() + static_cast<std::ptrdiff_t>(256 * chunk),
               in.x.begin() + static_cast<std::ptrdiff_t>(256 * (chunk + 1)));
      theirs_decoded.insert(theirs_decoded.end(),
                            in.decoded.begin() + static_cast<std::ptrdiff_t>(256 * chunk),
                            in.decoded.begin() + static_cast<std::ptrdiff_t>(256 * (chunk + 1)));
      theirs.insert(theirs.end(), in.blocks.begin() + static_cast<std::ptrdiff_t>(kPerChunk * chunk),
                    in.blocks.begin() + static_cast<std::ptrdiff_t>(kPerChunk * (chunk + 1)));
    }
    const std::vector<float> h = diagonal_hessian(256, imatrix.data() + 256 * chunk);
    const std::int64_t rows = static_cast<std::int64_t>(x.size()) / 256;
    const auto q = lowbit::gptq_quantize_ggml<Block>(lowbit::row_major(x.data(), rows, 256),
                                                     lowbit::row_major(h.data(), 256, 256), o);
    REQUIRE(q);
    const Comparison c = compare_with_ggml(x, q->blocks, theirs, theirs_decoded);
    check_comparison<Block>(c);
    total.values += c.values;
    total.differing += c.differing;
    total.ties += c.ties;
  }
  MESSAGE(name_of(ggml::FormatTraits<Block>::kName), " with imatrix: ", total.differing, " of ",
          total.values, " codes differ from ggml's, ", total.ties, " ties");
}

TEST_CASE_TEMPLATE("gptq_ggml: with a diagonal H the blocks are quantize_rows' on random data", Block,
                   LOWBIT_GPTQ_GGML_TYPES) {
  // Same property on other values: 64 rows of 256 with a few large weights (seed printed).
  constexpr std::uint32_t kSeed = 20240611;
  MESSAGE("seed ", kSeed);
  const std::int64_t rows = 64, cols = 256;
  std::vector<float> w = lowbit_test::gaussian(rows * cols, 0.02f, kSeed);
  for (std::size_t i = 0; i < w.size(); i += 97) w[i] *= 6.0f;
  const std::vector<float> diag = lowbit_test::gaussian(cols, 0.3f, kSeed + 1, 1.0f);
  std::vector<float> positive(diag);
  for (float& d : positive) d = std::fabs(d) + 0.05f;
  const std::vector<float> h = diagonal_hessian(cols, positive.data());
  lowbit::GptqGgmlOptions o;
  o.use_hessian_importance = false;
  const auto q = lowbit::gptq_quantize_ggml<Block>(lowbit::row_major(w.data(), rows, cols),
                                                   lowbit::row_major(h.data(), cols, cols), o);
  REQUIRE(q);
  std::vector<Block> theirs(q->blocks.size());
  REQUIRE(ggml::quantize_rows(lowbit::row_major<const float>(w.data(), rows, cols), theirs.data())
              .ok());
  const Comparison c = compare_with_ggml(w, q->blocks, theirs, decode(theirs, rows, cols));
  check_comparison<Block>(c);
  MESSAGE(name_of(ggml::FormatTraits<Block>::kName), ": ", c.differing, " of ", c.values,
          " codes differ from quantize_rows (each nearer for the stored scale), ", c.ties, " ties");
}

// ---------------------------------------------------------------------------------------------
// A layer with a realistic Hessian.

struct Layer {
  std::int64_t rows = 0, cols = 0;
  std::vector<float> w;     // (rows × cols) row-major
  Eigen::MatrixXf h;        // (cols × cols) = XᵀX, float
  Eigen::MatrixXd h64;      // the same in double, for the errors
};

// X (1024 tokens × 512): 24 latent factors shared by all channels (so the channels correlate),
// channel scales spread over a decade, 6 outlier channels ×25, plus independent noise; H = XᵀX in
// float32 (what the algorithm sees; the errors use it in double). W (64 × 512): Gaussian with a
// few large weights. A layer of `cols` features uses the first cols of both. Seed 777 (the
// standard library's samplers differ between implementations; the properties do not).
const Layer& layer(std::int64_t cols) {
  static const Layer full = [] {
    constexpr std::uint32_t kSeed = 777;
    const std::int64_t tokens = 1024, features = 512, factors = 24, rows = 64;
    std::mt19937 rng(kSeed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Eigen::MatrixXf z(tokens, factors), mix(factors, features);
    for (Eigen::Index i = 0; i < z.size(); ++i) z.data()[i] = normal(rng);
    for (Eigen::Index i = 0; i < mix.size(); ++i) mix.data()[i] = normal(rng);
    Eigen::MatrixXf x = z * mix * 0.3f;
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] += normal(rng) * 0.5f;
    for (Eigen::Index c = 0; c < features; ++c) x.col(c) *= std::exp(normal(rng) * 0.6f);
    for (Eigen::Index c : {7, 100, 201, 255, 300, 480}) x.col(c) *= 25.0f;
    Layer l;
    l.rows = rows;
    l.cols = features;
    l.h = Eigen::MatrixXf::Zero(features, features);
    l.h.selfadjointView<Eigen::Lower>().rankUpdate(x.transpose());
    l.h.triangularView<Eigen::StrictlyUpper>() = l.h.transpose();
    l.h64 = l.h.cast<double>();
    l.w = lowbit_test::gaussian(rows * features, 0.02f, kSeed + 1);
    for (std::size_t i = 0; i < l.w.size(); i += 61) l.w[i] *= 5.0f;
    return l;
  }();
  if (cols == full.cols) return full;
  static std::map<std::int64_t, Layer> parts;  // std::map: references stay valid
  const auto found = parts.find(cols);
  if (found != parts.end()) return found->second;
  Layer l;  // the first `cols` features: H's leading block, W's leading columns
  l.rows = full.rows;
  l.cols = cols;
  l.h = full.h.topLeftCorner(cols, cols);
  l.h64 = full.h64.topLeftCorner(cols, cols);
  l.w.resize(static_cast<std::size_t>(l.rows * cols));
  for (std::int64_t r = 0; r < l.rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      l.w[static_cast<std::size_t>(r * cols + c)] = full.w[static_cast<std::size_t>(r * full.cols + c)];
  return parts.emplace(cols, std::move(l)).first->second;
}

// tr(ΔW·H·ΔWᵀ) in double with ΔW = W − Q.
double output_error(const Layer& l, const std::vector<float>& q) {
  Eigen::MatrixXd d(l.rows, l.cols);
  for (std::int64_t r = 0; r < l.rows; ++r)
    for (std::int64_t c = 0; c < l.cols; ++c) {
      const auto k = static_cast<std::size_t>(r * l.cols + c);
      d(r, c) = static_cast<double>(l.w[k]) - static_cast<double>(q[k]);
    }
  return (d * l.h64).cwiseProduct(d).sum();
}

template <class Block>
void check_against_ggml(const Layer& l, bool importance) {
  using Traits = ggml::FormatTraits<Block>;
  const std::string name = Traits::kName;
  CAPTURE(name);
  CAPTURE(importance);
  lowbit::GptqGgmlOptions o;
  o.use_hessian_importance = importance;
  const auto w = lowbit::row_major<const float>(l.w.data(), l.rows, l.cols);
  const auto q = lowbit::gptq_quantize_ggml<Block>(w, l.h, o);
  REQUIRE(q);
  REQUIRE(q->rows == l.rows);
  REQUIRE(q->cols == l.cols);
  // The blocks decode (with the format's own dequantizer) to the returned weights, bit for bit.
  const std::vector<float> decoded = decode(q->blocks, l.rows, l.cols);
  REQUIRE(decoded.size() == q->dequantized.size());
  std::int64_t not_finite = 0, different = 0;
  for (std::size_t k = 0; k < decoded.size(); ++k) {
    not_finite += !std::isfinite(decoded[k]);
    different += bits_of(decoded[k]) != bits_of(q->dequantized[k]);
  }
  CHECK(not_finite == 0);
  CHECK(different == 0);

  // ggml's quantizer on the same W, with the same importance (diag H, as an imatrix).
  std::vector<float> diag(static_cast<std::size_t>(l.cols));
  for (std::int64_t c = 0; c < l.cols; ++c) diag[static_cast<std::size_t>(c)] = l.h(c, c);
  std::vector<Block> baseline(q->blocks.size());
  REQUIRE(ggml::quantize_rows(w, baseline.data(), importance ? diag.data() : nullptr).ok());
  const double gptq_error = output_error(l, decoded);
  const double ggml_error = output_error(l, decode(baseline, l.rows, l.cols));
  const double ratio = gptq_error / ggml_error;
  MESSAGE(name, (importance ? " imatrix=diag(H)" : " no imatrix     "), " W ", l.rows,
          "x", l.cols, ": output error GPTQ-ggml / ggml = ", ratio, "  (", gptq_error, " / ",
          ggml_error, ")");
  // Without the error feedback the codes are ggml's (up to the nearest-level rule), ratio ~1.
  CHECK(ratio < 0.85);

  // The loss is half the damped quadratic form of the error, as in GPTQ:
  // tr(ΔW·(H + damp·I)·ΔWᵀ) = tr(ΔW·H·ΔWᵀ) + damp·‖ΔW‖².
  double squared = 0.0;
  for (std::size_t k = 0; k < decoded.size(); ++k) {
    const double d = static_cast<double>(l.w[k]) - static_cast<double>(decoded[k]);
    squared += d * d;
  }
  const double damped_error = gptq_error + static_cast<double>(q->damp) * squared;
  CHECK(2.0 * q->loss == doctest::Approx(damped_error).epsilon(1e-3));
}

TEST_CASE_TEMPLATE("gptq_ggml: lower output error than ggml's quantizer on a correlated Hessian",
                   Block, LOWBIT_GPTQ_GGML_TYPES) {
  // 64 x 256 for the 32-value formats, 64 x 512 (two super-blocks per row) for the 256-value ones.
  const std::int64_t cols = ggml::FormatTraits<Block>::kBlockSize == 32 ? 256 : 512;
  for (const bool importance : {false, true}) check_against_ggml<Block>(layer(cols), importance);
}

TEST_CASE("gptq_ggml: a thread pool gives the serial bytes") {
  // 192 rows: three row blocks of 64, so ThreadPool(2) runs two slices (64 and 128 rows).
  const std::int64_t rows = 192, cols = 256;
  const Layer& l = layer(cols);
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (std::size_t k = 0; k < w.size(); ++k) w[k] = l.w[k % l.w.size()] * (1.0f + 1e-3f * static_cast<float>(k / l.w.size()));
  lowbit::ThreadPool pool(2);
  const auto view = lowbit::row_major<const float>(w.data(), rows, cols);
  const auto run = [&](auto tag, lowbit::Executor* executor) {
    using Block = decltype(tag);
    lowbit::GptqGgmlOptions o;
    o.executor = executor;
    o.block_size = 64;
    auto q = lowbit::gptq_quantize_ggml<Block>(view, l.h, o);
    REQUIRE(q);
    return q;
  };
  const auto same = [&](auto tag) {
    using Block = decltype(tag);
    const std::string name = ggml::FormatTraits<Block>::kName;
    CAPTURE(name);
    const auto serial = run(tag, nullptr);
    const auto parallel = run(tag, &pool);
    REQUIRE(serial->blocks.size() == parallel->blocks.size());
    CHECK(std::memcmp(serial->blocks.data(), parallel->blocks.data(),
                      serial->blocks.size() * sizeof(Block)) == 0);
    CHECK(serial->dequantized == parallel->dequantized);
    CHECK(parallel->loss == doctest::Approx(serial->loss).epsilon(1e-9));
  };
  same(ggml::BlockQ4_0{});
  same(ggml::BlockQ4_K{});
}

TEST_CASE("gptq_ggml: a dead input column is zeroed and stays out of the way") {
  // A feature no token activates: H's row and column are 0. Its weights cannot matter, so it is
  // quantized as 0 (the level nearest to 0) and the rest of the layer keeps its advantage.
  const Layer& base = layer(256);
  Layer l = base;
  const std::int64_t dead = 40;
  l.h.row(dead).setZero();
  l.h.col(dead).setZero();
  l.h64 = l.h.cast<double>();
  for (std::int64_t r = 0; r < l.rows; ++r) l.w[static_cast<std::size_t>(r * l.cols + dead)] = 1.0f;
  const auto q = lowbit::gptq_quantize_ggml<ggml::BlockQ4_0>(
      lowbit::row_major<const float>(l.w.data(), l.rows, l.cols), l.h, lowbit::GptqGgmlOptions{});
  REQUIRE(q);
  for (std::int64_t r = 0; r < l.rows; ++r) {
    CAPTURE(r);
    CHECK(q->dequantized[static_cast<std::size_t>(r * l.cols + dead)] == 0.0f);
  }
}

TEST_CASE("gptq_ggml: bad input gets a specific error, never a result") {
  const Layer& l = layer(256);
  const auto w = lowbit::row_major<const float>(l.w.data(), l.rows, l.cols);
  const lowbit::GptqGgmlOptions o;
  using Q4_0 = ggml::BlockQ4_0;
  using Q4_K = ggml::BlockQ4_K;

  SUBCASE("in not a multiple of the block size") {
    const Eigen::MatrixXf h100 = l.h.topLeftCorner(100, 100);
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(w.col_block(0, 100), h100, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kIndivisible);
    const Eigen::MatrixXf h224 = l.h.topLeftCorner(224, 224);  // 7 blocks of 32, not of 256
    const auto b = lowbit::gptq_quantize_ggml<Q4_K>(w.col_block(0, 224), h224, o);
    REQUIRE(!b);
    CHECK(b.status().code() == Errc::kIndivisible);
  }
  SUBCASE("NaN or Inf in W or H") {
    std::vector<float> bad(l.w);
    bad[1234] = std::numeric_limits<float>::quiet_NaN();
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(
        lowbit::row_major<const float>(bad.data(), l.rows, l.cols), l.h, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kNonFinite);
    CHECK(a.status().index() == 1234);
    Eigen::MatrixXf h = l.h;
    h(3, 5) = std::numeric_limits<float>::infinity();
    const auto b = lowbit::gptq_quantize_ggml<Q4_K>(w, h, o);
    REQUIRE(!b);
    CHECK(b.status().code() == Errc::kNonFinite);
  }
  SUBCASE("H of the wrong shape") {
    const Eigen::MatrixXf h = l.h.topLeftCorner(128, 128);
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(w, h, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kShapeMismatch);
    const Eigen::MatrixXf wide = Eigen::MatrixXf::Identity(256, 255);
    const auto b = lowbit::gptq_quantize_ggml<Q4_0>(w, wide, o);
    REQUIRE(!b);
    CHECK(b.status().code() == Errc::kShapeMismatch);
  }
  SUBCASE("empty W") {
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(w.row_block(0, 0), l.h, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kEmpty);
  }
  SUBCASE("a Hessian no damping makes positive definite; one a retry repairs") {
    // Unit diagonal, every off-diagonal 10: eigenvalues 10·n − 9 and −9, so only a damping above
    // 9 (percdamp 900) would help; 1% and 10% do not.
    Eigen::MatrixXf h = Eigen::MatrixXf::Constant(256, 256, 10.0f);
    h.diagonal().setOnes();
    lowbit::GptqGgmlOptions few = o;
    few.max_damping_retries = 1;
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(w, h, few);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kNumericalIssue);
    // Mildly indefinite (smallest eigenvalue −0.2% of the mean diagonal) with percdamp 0: the
    // retries try 1e-4 and 1e-3 of the mean diagonal, which fail, then 1e-2, which succeeds.
    // H = XᵀX of plain Gaussian X (1024 × 256) has eigenvalues in about [256, 2304] and a
    // diagonal near 1024, so the shift keeps the diagonal positive.
    const std::vector<float> g = lowbit_test::gaussian(1024 * 256, 1.0f, 4242);
    const Eigen::Map<const Eigen::MatrixXf> x(g.data(), 1024, 256);
    Eigen::MatrixXf mild = x.transpose() * x;
    const float mean = mild.diagonal().mean();
    mild.diagonal().array() -=
        0.002f * mean + mild.selfadjointView<Eigen::Lower>().eigenvalues().minCoeff();
    REQUIRE(mild.diagonal().minCoeff() > 0.0f);
    lowbit::GptqGgmlOptions zero = o;
    zero.percdamp = 0.0f;
    const auto b = lowbit::gptq_quantize_ggml<Q4_0>(w, mild, zero);
    REQUIRE(b);
    CHECK(b->damping_retries > 0);
    CHECK(b->damp > 0.0f);
  }
  SUBCASE("bad options and a negative diagonal") {
    lowbit::GptqGgmlOptions bad = o;
    bad.block_size = 0;
    CHECK(lowbit::gptq_quantize_ggml<Q4_0>(w, l.h, bad).status().code() == Errc::kInvalidArgument);
    bad = o;
    bad.percdamp = std::numeric_limits<float>::quiet_NaN();
    CHECK(lowbit::gptq_quantize_ggml<Q4_0>(w, l.h, bad).status().code() == Errc::kInvalidArgument);
    bad = o;
    bad.max_damping_retries = 33;
    CHECK(lowbit::gptq_quantize_ggml<Q4_0>(w, l.h, bad).status().code() == Errc::kInvalidArgument);
    Eigen::MatrixXf h = l.h;
    h(9, 9) = -1.0f;
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(w, h, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kInvalidArgument);
    CHECK(a.status().index() == 9 * 256 + 9);
  }
  SUBCASE("weights whose fp16 scale overflows") {
    std::vector<float> big(l.w);
    big[300] = 1e7f;  // Q4_0: d = 1e7 / 8 > 65504; IQ4_NL: 1e7 / 127 > 65504
    const auto big_view = lowbit::row_major<const float>(big.data(), l.rows, l.cols);
    const auto a = lowbit::gptq_quantize_ggml<Q4_0>(big_view, l.h, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kOutOfRange);
    CHECK(a.status().index() / 32 == 300 / 32);  // a value of the offending block
    const auto b = lowbit::gptq_quantize_ggml<ggml::BlockIQ4_NL>(big_view, l.h, o);
    REQUIRE(!b);
    CHECK(b.status().code() == Errc::kOutOfRange);
  }
  SUBCASE("a block type without code levels") {
    const auto a = lowbit::gptq_quantize_ggml<ggml::BlockTQ2_0>(w, l.h, o);
    REQUIRE(!a);
    CHECK(a.status().code() == Errc::kUnsupported);
    const auto b = lowbit::gptq_quantize_ggml<ggml::BlockQ8_K>(w, l.h, o);
    REQUIRE(!b);
    CHECK(b.status().code() == Errc::kUnsupported);
  }
}

}  // namespace
