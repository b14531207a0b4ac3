// lowbit/format/nf4.hpp: bitsandbytes' 4-bit formats NF4 and FP4 with blockwise absmax scaling,
// its packing, and its double quantization of the absmax values (QLoRA), byte-exact.
//
// bitsandbytes (bitsandbytes-foundation/bitsandbytes) stores a weight tensor as 4-bit indices into
// a fixed 16-entry table of values in [-1, 1], one float32 absmax per block of `block_size`
// consecutive elements of the row-major flattened tensor (the last block may be shorter):
//
//   x_i ~= table[code_i] * absmax[i / block_size],    absmax_b = max |x| over block b
//
// The tables (index = code):
//   NF4  16 quantiles of N(0, 1) scaled to [-1, 1], ascending, code 7 = 0 (QLoRA's NormalFloat).
//        bitsandbytes' create_normal_map(offset = 0.9677083, use_extra_value = True): with
//        p = torch.linspace(offset, 0.5, 9)[:8] and p' = torch.linspace(offset, 0.5, 8)[:7] in
//        float32, the values are Phi^-1(p) (8 positive), -Phi^-1(p') (7 negative) and 0, each
//        rounded to float32, sorted, then divided by the largest in float32. kNf4Table is computed
//        from that definition at compile time (an inverse normal CDF by Newton's method in double,
//        on an erf series) and equals bitsandbytes' hard-coded table bit for bit; the asymmetry
//        (8 positive, 7 negative levels) lets 0 be exact.
//   FP4  bitsandbytes' own e2m1: bit 3 = sign, bits 2..1 = exponent e, bit 0 = mantissa m;
//        magnitude (2 + m) * 2^(3 - e) for e > 0, and m / 16 for e = 0, all divided by 12:
//          code   0    1       2    3    4    5    6    7     (8..15: the same, negated)
//          value  0  0.0625/12 8/12 12/12 4/12 6/12 2/12 3/12
//        Exponent fields run downwards and the only subnormal is 1/192: this is get_4bit_type's
//        table (code 8 is -0), not create_fp8_map(2, 1)'s (whose subnormal is 1/48).
//
// Quantization is bitsandbytes' pure-PyTorch "default" backend (backends/default/ops.py) to the
// float32 operation, and so matches its CUDA kernel on ordinary data (the reference vectors in
// tests/data/torch/bnb agree with both):
//   full block    scaled = clamp(x * (1 / max(absmax, 1e-38f)), -1, 1)   (a float32 reciprocal,
//                 then a multiply); absmax is stored as computed (0 for an all-zero block)
//   last, partial am = max(absmax, 1e-38f), stored as is; scaled = clamp(x / am, -1, 1)
//   block         (a division, not a reciprocal: the backend's own asymmetry, kept)
//   code          the nearest table entry: code = the number of midpoints (t[k] + t[k+1]) / 2
//                 (float32, over the table sorted by value) strictly below scaled, i.e. torch's
//                 bucketize(right = False). At an exact midpoint the LOWER value wins, which is
//                 also what the CUDA decision tree's strict '>' does. FP4's sorted order maps
//                 back to codes; its two zeros keep code order (+0, then -0), so scaled in
//                 (-1/384, 0] gets code 0 and (0, 1/384] code 8 ("-0"): both dequantize to zero.
//   Differences from the CUDA kernel, all outside the reference data: CUDA multiplies by the
//   reciprocal in the partial block too; an all-zero block gives NF4 code 0 there (0 * Inf = NaN)
//   instead of 7; FP4 there takes the sign from x (so its zero codes follow x's sign) and compares
//   |x| with decimal pivots that sit 1 to 14 ulp off five of the seven float32 midpoints, and
//   breaks ties towards the smaller magnitude. Dequantized values differ only for inputs within
//   those few ulps of a midpoint.
//   Odd element counts pad the last byte's low nibble with the code of 0.0 (7 for NF4, 0 for FP4).
//
// Packing (bitsandbytes' order, the reverse of format/packed.hpp's): byte k holds elements 2k and
// 2k+1, the EVEN element in the HIGH nibble:
//
//           byte 0 (bit 7 .. 0)           byte 1
//         +-----------+-----------+     +-----------+-----------+
//         |  code[0]  |  code[1]  |     |  code[2]  |  code[3]  |   ...   ceil(n / 2) bytes
//         +-----------+-----------+     +-----------+-----------+
//   absmax: float32[ceil(n / block_size)]
//
// Block sizes: 32, 64 (default), 128, ..., 4096 for the 4-bit formats; 64..4096 for the 8-bit
// blockwise code below (bitsandbytes' documented sets). Anything else is kInvalidArgument.
//
// Double quantization (quantize_4bit(compress_statistics = True), "DQ" in QLoRA) stores the
// absmax values themselves in 8 bits:
//   offset  = mean(absmax)                         (float32; lowbit sums in double: within ~1e-7
//                                                   of torch's float32 mean, and the offset is
//                                                   stored, so a file always decodes the same)
//   v       = absmax - offset                      (float32)
//   codes, absmax2 = 8-bit blockwise quantization of v, blocks of 256, with the signed dynamic map
//   absmax  ~= kDynamicMap[code] * absmax2[block] + offset        (float32, in that order)
// The 8-bit blockwise quantization (bitsandbytes' quantize_blockwise) is the same procedure as the
// 4-bit one, with the 256-entry dynamic map as table, one code per byte.
//
// kDynamicMap is create_dynamic_map(signed = True, max_exponent_bits = 7, total_bits = 8),
// generated at compile time: for i = 0..6, the midpoints of torch.linspace(0.1, 1, 2^i + 1) (in
// float32) times float32(10^(i - 6)), and their negatives, plus 0 and 1: 256 sorted values, 127
// per sign in seven decades. Bit-exactness needs torch.linspace's float32 arithmetic as torch 1.13
// evaluates it on x86-64 (the reference vectors' producer): element i < steps/2 is start + step*i,
// the others end - step*(steps-1-i), each rounded once like a fused multiply-add (its AVX2 build
// contracts them); when steps >= 16, the first steps - steps % 16 elements come from the
// vectorised loop, 8 lanes at a time, as base + j*step (product and sum rounded separately) from a
// base computed the first way. That model is inferred from, and checked against, the reference's
// 256 values: the plain formulas miss 12 of them by an ulp, the model reproduces all 256.
//
// Everything is float32 in bitsandbytes' order; double_dequantize's multiply-add is bit-exact only
// when built without FMA contraction (-ffp-contract=off, as lowbit's tests are).
//
// All functions are noexcept and allocate nothing. Errors, checked before anything is written:
//   kInvalidArgument  bad block size, unknown type, negative count, null pointer with data
//   kNonFinite        quantize: NaN or Inf among the inputs (index = the first, flat row-major)
//   kShapeMismatch    quantize: an output buffer too small (index = first element without room)
//   kTruncated        dequantize: an input buffer too short (index = first element not covered)
//   kEmpty            double_quant_offset of no values
// Dequantization accepts any bytes (every nibble and byte is a valid code); non-finite absmax
// values in its input propagate to the output, as in bitsandbytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {
namespace bnb {

// bitsandbytes' quant_type: "nf4" or "fp4".
enum class QuantType : std::uint8_t { kNf4, kFp4 };

constexpr std::int64_t kDefaultBlockSize = 64;        // quantize_4bit's default
constexpr std::int64_t kDoubleQuantBlockSize = 256;   // blocks of absmax values in DQ

namespace detail {

// ---- Compile-time math for the NF4 table: erf by its everywhere-positive series, exp by Taylor.
// Only IEEE double arithmetic, so the result does not depend on the platform's libm.

constexpr double kSqrt2 = 1.4142135623730951;          // nearest double to sqrt(2)
constexpr double kInvSqrt2Pi = 0.3989422804014327;     // 1 / sqrt(2 pi)
constexpr double kTwoOverSqrtPi = 1.1283791670955126;  // 2 / sqrt(pi)

// e^y for 0 <= y <= 4: Taylor terms are all positive, so no cancellation.
constexpr double exp_nonnegative(double y) noexcept {
  double term = 1.0, sum = 1.0;
  for (int n = 1; n < 60; ++n) {
    term *= y / n;
    const double next = sum + term;
    if (next == sum) break;
    sum = next;
  }
  return sum;
}

// erf(z) = 2/sqrt(pi) * e^(-z^2) * sum_n 2^n z^(2n+1) / (1*3*...*(2n+1)), for 0 <= z <= 2.
constexpr double erf_small(double z) noexcept {
  double term = z, sum = z;
  for (int n = 1; n < 120; ++n) {
    term *= 2.0 * z * z / (2 * n + 1);
    const double next = sum + term;
    if (next == sum) break;
    sum = next;
  }
  return kTwoOverSqrtPi * sum / exp_nonnegative(z * z);
}

// The standard normal quantile Phi^-1(p) for 0.5 <= p < 0.99 (the NF4 range). Newton's method on
// Phi(x) - p from 0: Phi is concave for x >= 0, so the iterates rise monotonically to the root.
// The residual is formed as erf/2 - (p - 1/2), where p - 1/2 is exact, to avoid cancellation.
constexpr double normal_quantile(double p) noexcept {
  const double target = p - 0.5;
  double x = 0.0;
  for (int i = 0; i < 64; ++i) {
    const double residual = 0.5 * erf_small(x / kSqrt2) - target;
    const double density = kInvSqrt2Pi / exp_nonnegative(0.5 * x * x);
    const double next = x - residual / density;
    if (next == x) break;
    x = next;
  }
  return x;
}

// a * b + c rounded once to float (a fused multiply-add), for the linspace operands below: a is a
// step of magnitude >= 2^-7 (so a multiple of 2^-30), b an integer <= 64, c a float in [0.1, 1]
// (a multiple of 2^-27). The exact sum is a multiple of 2^-30 below 2 in magnitude, 31 bits,
// which double holds exactly, so the only rounding is the final one to float.
constexpr float fma_small(float a, float b, float c) noexcept {
  return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) +
                            static_cast<double>(c));
}

// Element idx of torch.linspace(start, end, steps) in float32 as torch 1.13's x86-64 CPU kernel
// computes it (see the header comment; steps >= 2).
constexpr float torch_linspace(float start, float end, int steps, int idx) noexcept {
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  auto scalar = [&](int i) {
    return i < halfway ? fma_small(step, static_cast<float>(i), start)
                       : fma_small(-step, static_cast<float>(steps - i - 1), end);
  };
  const int vectorised = (steps / 16) * 16;  // two 8-lane vectors per loop iteration
  if (idx < vectorised) {
    const int base_idx = idx / 8 * 8;
    const float base = scalar(base_idx);
    const int lane = idx - base_idx;
    return lane == 0 ? base : base + static_cast<float>(lane) * step;
  }
  return scalar(idx);
}

constexpr float kNf4Offset = 0.9677083f;  // create_normal_map's default offset, as float32

constexpr std::array<float, 16> make_nf4_table() noexcept {
  std::array<float, 16> t{};
  // Sorted ascending: 7 negative values (largest quantile first), 0, 8 positive (smallest first).
  for (int j = 0; j < 7; ++j)
    t[static_cast<std::size_t>(j)] =
        -static_cast<float>(normal_quantile(torch_linspace(kNf4Offset, 0.5f, 8, j)));
  t[7] = 0.0f;
  for (int j = 0; j < 8; ++j)
    t[static_cast<std::size_t>(15 - j)] =
        static_cast<float>(normal_quantile(torch_linspace(kNf4Offset, 0.5f, 9, j)));
  const float largest = t[15];
  for (float& v : t) v = v / largest;
  return t;
}

constexpr std::array<float, 16> make_fp4_table() noexcept {
  std::array<float, 16> t{};
  for (int code = 0; code < 16; ++code) {
    const int e = (code >> 1) & 3;
    const int m = code & 1;
    const float magnitude =
        e == 0 ? static_cast<float>(m) * 0.0625f : static_cast<float>((2 + m) << (3 - e));
    const float v = magnitude / 12.0f;
    t[static_cast<std::size_t>(code)] = (code & 8) != 0 ? -v : v;
  }
  return t;
}

constexpr std::array<float, 256> make_dynamic_map() noexcept {
  constexpr double kDecade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::array<float, 127> positive{};  // ascending: decades in order, midpoints ascending within
  std::size_t k = 0;
  for (int i = 0; i < 7; ++i) {
    const int points = (1 << i) + 1;
    const float scale = static_cast<float>(kDecade[i]);
    for (int j = 0; j + 1 < points; ++j) {
      const float mean = (torch_linspace(0.1f, 1.0f, points, j) +
                          torch_linspace(0.1f, 1.0f, points, j + 1)) / 2.0f;
      positive[k++] = scale * mean;
    }
  }
  std::array<float, 256> map{};
  for (std::size_t t = 0; t < 127; ++t) {
    map[128 + t] = positive[t];
    map[126 - t] = -positive[t];
  }
  map[127] = 0.0f;
  map[255] = 1.0f;
  return map;
}

// A code table sorted by value (stable: equal values keep code order) and the float32 midpoints
// between neighbours, for bucketize.
template <std::size_t N>
struct Bucketizer {
  std::array<float, N - 1> midpoints;
  std::array<std::uint8_t, N> code_at;  // code of the k-th smallest value
};

template <std::size_t N>
constexpr Bucketizer<N> make_bucketizer(const std::array<float, N>& table) noexcept {
  Bucketizer<N> b{};
  for (std::size_t i = 0; i < N; ++i) b.code_at[i] = static_cast<std::uint8_t>(i);
  for (std::size_t i = 1; i < N; ++i) {  // insertion sort: stable, linear on sorted input
    for (std::size_t j = i; j > 0 && table[b.code_at[j - 1]] > table[b.code_at[j]]; --j) {
      const std::uint8_t tmp = b.code_at[j];
      b.code_at[j] = b.code_at[j - 1];
      b.code_at[j - 1] = tmp;
    }
  }
  for (std::size_t i = 0; i + 1 < N; ++i)
    b.midpoints[i] = (table[b.code_at[i]] + table[b.code_at[i + 1]]) / 2.0f;
  return b;
}

constexpr bool strictly_increasing(const std::array<float, 256>& v) noexcept {
  for (std::size_t i = 0; i + 1 < v.size(); ++i)
    if (!(v[i] < v[i + 1])) return false;
  return true;
}

}  // namespace detail

// Value of each code, index = code (see the header comment for their definitions).
inline constexpr std::array<float, 16> kNf4Table = detail::make_nf4_table();
inline constexpr std::array<float, 16> kFp4Table = detail::make_fp4_table();
inline constexpr std::array<float, 256> kDynamicMap = detail::make_dynamic_map();

static_assert(kNf4Table[0] == -1.0f && kNf4Table[7] == 0.0f && kNf4Table[15] == 1.0f,
              "NF4 spans [-1, 1] with an exact zero at code 7");
static_assert(kFp4Table[3] == 1.0f && kFp4Table[11] == -1.0f, "FP4's largest magnitude is 12/12");
static_assert(detail::strictly_increasing(kDynamicMap) && kDynamicMap[127] == 0.0f &&
                  kDynamicMap[255] == 1.0f,
              "the dynamic map is 256 sorted distinct values with 0 at 127 and 1 at 255");

namespace detail {

inline constexpr Bucketizer<16> kNf4Bucketizer = make_bucketizer(kNf4Table);
inline constexpr Bucketizer<16> kFp4Bucketizer = make_bucketizer(kFp4Table);
inline constexpr Bucketizer<256> kDynamicBucketizer = make_bucketizer(kDynamicMap);

// The code of the nearest entry: the number of midpoints strictly below x (bucketize, right =
// False; x is never NaN here), mapped back from sorted order to the code.
template <std::size_t N>
inline std::uint8_t nearest_code(const Bucketizer<N>& b, float x) noexcept {
  std::size_t lo = 0, hi = N - 1;
  while (lo < hi) {
    const std::size_t mid = (lo + hi) / 2;
    if (b.midpoints[mid] < x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return b.code_at[lo];
}

constexpr float kMinAbsmax = 1e-38f;  // the backend's clamp(min=1e-38) (a float32 subnormal)

inline bool valid_4bit_block(std::int64_t b) noexcept {
  return b >= 32 && b <= 4096 && (b & (b - 1)) == 0;
}
inline bool valid_8bit_block(std::int64_t b) noexcept {
  return b >= 64 && b <= 4096 && (b & (b - 1)) == 0;
}

inline std::int64_t block_count(std::int64_t n, std::int64_t block) noexcept {
  return n / block + (n % block != 0 ? 1 : 0);
}

// Reads a matrix view in flat row-major order from a given element on.
class FlatReader {
 public:
  FlatReader(MatrixView<const float> v, std::int64_t first) noexcept
      : v_(v), r_(v.cols() > 0 ? first / v.cols() : 0), c_(v.cols() > 0 ? first % v.cols() : 0) {}
  float next() noexcept {
    const float x = v_(r_, c_);
    if (++c_ == v_.cols()) {
      c_ = 0;
      ++r_;
    }
    return x;
  }

 private:
  MatrixView<const float> v_;
  std::int64_t r_, c_;
};

// Values absmax[i] - offset, in order (double quantization's input).
class OffsetReader {
 public:
  OffsetReader(const float* p, float offset, std::int64_t first) noexcept
      : p_(p + first), offset_(offset) {}
  float next() noexcept { return *p_++ - offset_; }

 private:
  const float* p_;
  float offset_;
};

inline bool finite(float x) noexcept {
  return (lowbit::detail::float_bits(x) & 0x7F800000u) != 0x7F800000u;
}

// Checks that every value a reader yields is finite; index of the first that is not.
template <class MakeReader>
inline Status check_finite(std::int64_t n, const MakeReader& make_reader) noexcept {
  auto reader = make_reader(std::int64_t{0});
  for (std::int64_t i = 0; i < n; ++i) {
    if (!finite(reader.next())) return {Errc::kNonFinite, "input is NaN or Inf", i};
  }
  return {};
}

// bitsandbytes' blockwise absmax quantization (default backend). For each block: the absmax is
// stored, then emit(i, code) receives every element's code in order. Inputs already validated.
template <std::size_t N, class MakeReader, class Emit>
inline void quantize_blocks(const Bucketizer<N>& table, std::int64_t n, std::int64_t block,
                            const MakeReader& make_reader, float* absmax, Emit&& emit) noexcept {
  const std::int64_t blocks = block_count(n, block);
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t first = b * block;
    const std::int64_t len = n - first < block ? n - first : block;
    auto reader = make_reader(first);
    float amax = 0.0f;
    for (std::int64_t j = 0; j < len; ++j) {
      const float a = reader.next();
      const float m = a < 0.0f ? -a : a;
      amax = m > amax ? m : amax;
    }
    const float clamped = amax > kMinAbsmax ? amax : kMinAbsmax;
    const bool partial = len < block;
    absmax[b] = partial ? clamped : amax;
    const float reciprocal = 1.0f / clamped;
    reader = make_reader(first);
    for (std::int64_t j = 0; j < len; ++j) {
      const float x = reader.next();
      float scaled = partial ? x / clamped : x * reciprocal;
      scaled = scaled < -1.0f ? -1.0f : (scaled > 1.0f ? 1.0f : scaled);
      emit(first + j, nearest_code(table, scaled));
    }
  }
}

inline const Bucketizer<16>* bucketizer_4bit(QuantType type) noexcept {
  switch (type) {
    case QuantType::kNf4: return &kNf4Bucketizer;
    case QuantType::kFp4: return &kFp4Bucketizer;
  }
  return nullptr;
}
inline const std::array<float, 16>* table_4bit(QuantType type) noexcept {
  switch (type) {
    case QuantType::kNf4: return &kNf4Table;
    case QuantType::kFp4: return &kFp4Table;
  }
  return nullptr;
}

inline Status check_output_sizes(std::int64_t n, std::int64_t block, std::size_t code_bytes,
                                 std::size_t code_capacity_bytes, std::int64_t values_per_byte,
                                 std::int64_t absmax_count) noexcept {
  if (code_capacity_bytes < code_bytes)
    return {Errc::kShapeMismatch, "bnb: code buffer too small",
            static_cast<std::int64_t>(code_capacity_bytes) * values_per_byte};
  if (absmax_count < block_count(n, block))
    return {Errc::kShapeMismatch, "bnb: absmax buffer too small", absmax_count * block};
  return {};
}

}  // namespace detail

// Blocks covering n values, and the bytes of n packed 4-bit codes (0 for n < 0 or a bad block).
inline std::int64_t block_count(std::int64_t n, std::int64_t block_size) noexcept {
  return n < 0 || block_size <= 0 ? 0 : detail::block_count(n, block_size);
}
constexpr std::size_t packed_4bit_bytes(std::int64_t n) noexcept {
  return n < 0 ? 0 : static_cast<std::size_t>(n / 2 + n % 2);
}

// The code bitsandbytes gives a value already scaled to [-1, 1] (x is not NaN).
inline std::uint8_t encode_4bit(QuantType type, float scaled) noexcept {
  return detail::nearest_code(type == QuantType::kFp4 ? detail::kFp4Bucketizer
                                                      : detail::kNf4Bucketizer,
                              scaled);
}

// Quantizes x (any strides; blocks run over its row-major flattening) to packed 4-bit codes and
// one absmax per block.
inline Status quantize_4bit(QuantType type, MatrixView<const float> x, std::int64_t block_size,
                            std::uint8_t* packed, std::size_t packed_size, float* absmax,
                            std::int64_t absmax_count) noexcept {
  const detail::Bucketizer<16>* table = detail::bucketizer_4bit(type);
  if (table == nullptr) return {Errc::kInvalidArgument, "bnb: unknown 4-bit type"};
  if (!detail::valid_4bit_block(block_size))
    return {Errc::kInvalidArgument, "bnb: 4-bit block size must be a power of two in 32..4096"};
  LOWBIT_TRY(x.validate());
  const std::int64_t n = x.size();
  if (n == 0) return {};
  if (packed == nullptr || absmax == nullptr) return {Errc::kInvalidArgument, "bnb: null pointer"};
  LOWBIT_TRY(detail::check_output_sizes(n, block_size, packed_4bit_bytes(n), packed_size, 2,
                                        absmax_count));
  const auto reader = [&](std::int64_t first) { return detail::FlatReader(x, first); };
  LOWBIT_TRY(detail::check_finite(n, reader));
  // The odd element count's padding nibble: bitsandbytes pads the scaled values with 0.
  const std::uint8_t pad = detail::nearest_code(*table, 0.0f);
  detail::quantize_blocks(*table, n, block_size, reader, absmax,
                          [&](std::int64_t i, std::uint8_t code) {
                            std::uint8_t& byte = packed[i / 2];
                            if (i % 2 == 0) {
                              byte = static_cast<std::uint8_t>(code << 4 | pad);
                            } else {
                              byte = static_cast<std::uint8_t>((byte & 0xF0u) | code);
                            }
                          });
  return {};
}

// out (any strides, n = rows * cols values in row-major order) = table[code] * absmax[block].
inline Status dequantize_4bit(QuantType type, const std::uint8_t* packed, std::size_t packed_size,
                              const float* absmax, std::int64_t absmax_count,
                              std::int64_t block_size, MatrixView<float> out) noexcept {
  const std::array<float, 16>* table = detail::table_4bit(type);
  if (table == nullptr) return {Errc::kInvalidArgument, "bnb: unknown 4-bit type"};
  if (!detail::valid_4bit_block(block_size))
    return {Errc::kInvalidArgument, "bnb: 4-bit block size must be a power of two in 32..4096"};
  LOWBIT_TRY(out.validate());
  const std::int64_t n = out.size();
  if (n == 0) return {};
  if (packed == nullptr || absmax == nullptr) return {Errc::kInvalidArgument, "bnb: null pointer"};
  if (packed_size < packed_4bit_bytes(n))
    return {Errc::kTruncated, "bnb: packed codes end before the n values",
            static_cast<std::int64_t>(packed_size) * 2};
  if (absmax_count < detail::block_count(n, block_size))
    return {Errc::kTruncated, "bnb: absmax values end before the n values",
            absmax_count * block_size};
  std::int64_t r = 0, c = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t byte = packed[i / 2];
    const std::uint8_t code = static_cast<std::uint8_t>(i % 2 == 0 ? byte >> 4 : byte & 0x0Fu);
    out(r, c) = (*table)[code] * absmax[i / block_size];
    if (++c == out.cols()) {
      c = 0;
      ++r;
    }
  }
  return {};
}

// bitsandbytes' quantize_blockwise with the dynamic map: one byte per value, one absmax per block.
inline Status quantize_blockwise_8bit(MatrixView<const float> x, std::int64_t block_size,
                                      std::uint8_t* codes, std::size_t codes_size, float* absmax,
                                      std::int64_t absmax_count) noexcept {
  if (!detail::valid_8bit_block(block_size))
    return {Errc::kInvalidArgument, "bnb: 8-bit block size must be a power of two in 64..4096"};
  LOWBIT_TRY(x.validate());
  const std::int64_t n = x.size();
  if (n == 0) return {};
  if (codes == nullptr || absmax == nullptr) return {Errc::kInvalidArgument, "bnb: null pointer"};
  LOWBIT_TRY(detail::check_output_sizes(n, block_size, static_cast<std::size_t>(n), codes_size, 1,
                                        absmax_count));
  const auto reader = [&](std::int64_t first) { return detail::FlatReader(x, first); };
  LOWBIT_TRY(detail::check_finite(n, reader));
  detail::quantize_blocks(detail::kDynamicBucketizer, n, block_size, reader, absmax,
                          [&](std::int64_t i, std::uint8_t code) { codes[i] = code; });
  return {};
}

// out = kDynamicMap[code] * absmax[block].
inline Status dequantize_blockwise_8bit(const std::uint8_t* codes, std::size_t codes_size,
                                        const float* absmax, std::int64_t absmax_count,
                                        std::int64_t block_size, MatrixView<float> out) noexcept {
  if (!detail::valid_8bit_block(block_size))
    return {Errc::kInvalidArgument, "bnb: 8-bit block size must be a power of two in 64..4096"};
  LOWBIT_TRY(out.validate());
  const std::int64_t n = out.size();
  if (n == 0) return {};
  if (codes == nullptr || absmax == nullptr) return {Errc::kInvalidArgument, "bnb: null pointer"};
  if (codes_size < static_cast<std::uint64_t>(n))
    return {Errc::kTruncated, "bnb: codes end before the n values",
            static_cast<std::int64_t>(codes_size)};
  if (absmax_count < detail::block_count(n, block_size))
    return {Errc::kTruncated, "bnb: absmax values end before the n values",
            absmax_count * block_size};
  std::int64_t r = 0, c = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    out(r, c) = kDynamicMap[codes[i]] * absmax[i / block_size];
    if (++c == out.cols()) {
      c = 0;
      ++r;
    }
  }
  return {};
}

// ---- Double quantization of the absmax values.

// offset = mean(absmax), summed in double and rounded once to float.
inline Result<float> double_quant_offset(const float* absmax, std::int64_t count) noexcept {
  if (count < 0) return Status(Errc::kInvalidArgument, "bnb: negative count");
  if (count == 0) return Status(Errc::kEmpty, "bnb: mean of no absmax values");
  if (absmax == nullptr) return Status(Errc::kInvalidArgument, "bnb: null pointer");
  double sum = 0.0;
  for (std::int64_t i = 0; i < count; ++i) {
    if (!detail::finite(absmax[i])) return Status(Errc::kNonFinite, "input is NaN or Inf", i);
    sum += static_cast<double>(absmax[i]);
  }
  return static_cast<float>(sum / static_cast<double>(count));
}

// codes[i], absmax2[block of 256] = 8-bit blockwise quantization of absmax[i] - offset.
inline Status double_quantize(const float* absmax, std::int64_t count, float offset,
                              std::uint8_t* codes, std::size_t codes_size, float* absmax2,
                              std::int64_t absmax2_count) noexcept {
  if (count < 0) return {Errc::kInvalidArgument, "bnb: negative count"};
  if (count == 0) return {};
  if (absmax == nullptr || codes == nullptr || absmax2 == nullptr)
    return {Errc::kInvalidArgument, "bnb: null pointer"};
  if (!detail::finite(offset)) return {Errc::kNonFinite, "bnb: offset is NaN or Inf"};
  LOWBIT_TRY(detail::check_output_sizes(count, kDoubleQuantBlockSize,
                                        static_cast<std::size_t>(count), codes_size, 1,
                                        absmax2_count));
  const auto reader = [&](std::int64_t first) {
    return detail::OffsetReader(absmax, offset, first);
  };
  LOWBIT_TRY(detail::check_finite(count, reader));  // absmax - offset can overflow to Inf
  detail::quantize_blocks(detail::kDynamicBucketizer, count, kDoubleQuantBlockSize, reader,
                          absmax2, [&](std::int64_t i, std::uint8_t code) { codes[i] = code; });
  return {};
}

// absmax[i] = kDynamicMap[codes[i]] * absmax2[i / 256] + offset, for i < count.
inline Status double_dequantize(const std::uint8_t* codes, std::size_t codes_size,
                                const float* absmax2, std::int64_t absmax2_count, float offset,
                                float* absmax, std::int64_t count) noexcept {
  if (count < 0) return {Errc::kInvalidArgument, "bnb: negative count"};
  if (count == 0) return {};
  if (codes == nullptr || absmax2 == nullptr || absmax == nullptr)
    return {Errc::kInvalidArgument, "bnb: null pointer"};
  if (codes_size < static_cast<std::uint64_t>(count))
    return {Errc::kTruncated, "bnb: absmax codes end before the count values",
            static_cast<std::int64_t>(codes_size)};
  if (absmax2_count < detail::block_count(count, kDoubleQuantBlockSize))
    return {Errc::kTruncated, "bnb: absmax2 values end before the count values",
            absmax2_count * kDoubleQuantBlockSize};
  for (std::int64_t i = 0; i < count; ++i) {
    const float scaled = kDynamicMap[codes[i]] * absmax2[i / kDoubleQuantBlockSize];
    absmax[i] = scaled + offset;
  }
  return {};
}

}  // namespace bnb
}  // namespace lowbit
