// lowbit/format/mx.hpp: the OCP Microscaling (MX) formats of specification v1.0: MXFP8 (E4M3,
// E5M2), MXFP6 (E3M2, E2M3), MXFP4 (E2M1) and MXINT8, quantized and dequantized row by row.
//
// An MX block is 32 consecutive values sharing one power-of-two scale X, stored as an E8M0 byte,
// each value stored as a narrow element P_i of the block's element format:
//
//   v_i = X * P_i,     X = 2^(scale_code - 127)
//
// E8M0 (the scale): 8 exponent bits, no sign, no mantissa, bias 127. Codes 0..254 are
// 2^-127..2^127 (0 is 2^-127, not zero: the format has no zero); 0xFF is NaN, and a NaN scale makes
// every value of its block NaN.
//
// Element formats (sign, exponent, mantissa; subnormals included; the FP6/FP4 formats have
// neither Inf nor NaN, the FP8 ones are exactly OFP8's, see format/fp8.hpp):
//
//   element    bits  bias  emax_elem  largest   smallest subnormal  special values
//   FP8 E4M3   8     7     8          448       2^-9                NaN S.1111.111
//   FP8 E5M2   8     15    15         57344     2^-16               Inf, NaN (IEEE-like)
//   FP6 E3M2   6     3     4          28        2^-4                none
//   FP6 E2M3   6     1     2          7.5       2^-3                none
//   FP4 E2M1   4     1     2          6         0.5                 none
//   INT8       8     -     0          127/64    2^-6 (one step)     none; two's complement
//                                                                   q * 2^-6, q in -128..127
//
// Conversion from float32 (the specification's conversion of a vector of scalar floats to an MX
// block, with round-to-nearest-even as the rounding):
//
//   shared_exp = floor(log2(max_i |V_i|)) - emax_elem        emax_elem: exponent of the largest
//   X          = 2^shared_exp                                normal of the element format
//   P_i        = quantize_to_element_format(V_i / X)         RNE, saturating at +-largest
//
// The largest magnitude divided by X lies in [2^emax_elem, 2^(emax_elem + 1)), so only the top
// binade can exceed the element's largest value (448..512 for E4M3, 6..8 for E2M1, 127.5..128
// steps for INT8): those values clamp to the largest normal, as the conversion prescribes.
// Everything else rounds to nearest, ties to even, subnormals included, and values below half the
// smallest subnormal become zero (signed zero in the FP formats). V_i / X is never formed in
// float: the element code is rounded from V_i's exact significand and exponent (the same core as
// fp8.hpp), so a subnormal quotient is not rounded twice.
//
// Where the spec is silent or leaves a choice, lowbit decides:
//   * shared_exp below -127 (tiny blocks) is raised to -127, E8M0's smallest, and elements then
//     round as usual (mostly to zero). It cannot exceed 127: floor(log2) of a finite float is at
//     most 127 and emax_elem >= 0.
//   * An all-zero block uses log2 of FLT_MIN (2^-126) in place of log2(0): shared_exp =
//     max(-126 - emax_elem, -127), as the spec authors' reference code (microsoft/microxcaling)
//     does. Its elements are all +0.
//   * NaN or Inf inputs: quantization rejects the row with kNonFinite (index of the first) and
//     writes nothing. The reference code would instead turn such a block's scale into NaN (0xFF),
//     which silently poisons all 32 values; lowbit reports the input rather than encode NaN
//     scales.
//   * MXINT8 elements are symmetric: encoding clamps to +-127 (the "largest" above), so -x always
//     encodes as the negation of x; decoding accepts -128 (0x80) as -2.
//   * Dequantization multiplies in float32: X * P_i rounds once (it can overflow to +-Inf, e.g.
//     2^127 * 448, or lose bits as a float32 subnormal); NaN and Inf elements and NaN scales
//     propagate. Every byte is a valid input: dequantization never fails on content.
//
// Storage (the spec fixes the encodings, not a memory layout; this is lowbit's). A row of n values
// (n a multiple of 32) is two planes: the element codes, then separately one E8M0 byte per block.
// Element codes are a dense little-endian bit stream, format/packed.hpp's layout: element i
// occupies bits [i*b, (i+1)*b), low bit first. Every block is a whole number of bytes (32*b/8),
// so block k's elements start at byte k*4*b.
//
//   FP8, INT8   b = 8: byte i = element i (INT8 as its two's-complement byte)
//   FP6         b = 6: four elements in three bytes, straddling byte boundaries:
//                   byte 0 (bit 7..0)   byte 1 (bit 7..0)   byte 2 (bit 7..0)
//                   e1 e1 e0 e0 e0 e0 e0 e0 | e2 e2 e2 e2 e1 e1 e1 e1 | e3 e3 e3 e3 e3 e3 e2 e2
//                   (e1's low 2 bits sit in byte 0's top, its high 4 bits in byte 1's bottom)
//   FP4         b = 4: byte j = element 2j | element (2j+1) << 4 (even element in the LOW nibble)
//   FP code     sign in the top bit of the b-bit field, then exponent, then mantissa
//
//   elements plane: n*b/8 bytes      block 0: bytes [0, 4b)   block 1: [4b, 8b)   ...
//   scales plane:   n/32 bytes       byte k = E8M0 scale of block k
//
// API (all noexcept, no allocation). Element types are a template argument (MxElement), and each
// row function also has an overload taking it at run time (for file readers):
//   mx_quantize_row<E>(x, n, elements, elements_size, scales, scales_size)
//   mx_dequantize_row<E>(elements, elements_size, scales, scales_size, n, out)
//   mx_element_bytes(E, n), mx_scale_bytes(n)              plane sizes in bytes
//   mx_shared_exponent<E>(amax), e8m0_to_float(code)       the scale rule and its decoding
//   mx_encode_element<E>(x, shared_exponent), mx_decode_element<E>(code)   one element
// Errors, each checked before anything is written:
//   kInvalidArgument  n < 0, a null pointer with n > 0
//   kIndivisible      n not a multiple of 32
//   kNonFinite        quantize: NaN or Inf among the inputs (index = the first)
//   kShapeMismatch    quantize: an output plane smaller than mx_element_bytes / mx_scale_bytes
//   kTruncated        dequantize: an input plane smaller than that (index = first missing value)
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "lowbit/format/fp8.hpp"
#include "lowbit/format/packed.hpp"
#include "lowbit/numeric.hpp"
#include "lowbit/status.hpp"

namespace lowbit {

enum class MxElement : std::uint8_t { kFp8E4M3, kFp8E5M2, kFp6E3M2, kFp6E2M3, kFp4E2M1, kInt8 };

// Values per block, fixed by the spec for all its concrete formats.
constexpr std::int64_t kMxBlockSize = 32;

// Largest-magnitude code (sign clear) of each floating-point element format, and the fields.
template <MxElement Element>
struct MxElementTraits;

template <>
struct MxElementTraits<MxElement::kFp8E4M3> {
  static constexpr int kBits = 8;
  static constexpr int kMantissaBits = 3;
  static constexpr int kEmin = -6;      // 1 - bias
  static constexpr int kEmaxElem = 8;   // 448 = 1.75 * 2^8
  static constexpr std::uint32_t kMaxCode = 0x7E;
  static constexpr float kMax = 448.0f;
  static constexpr bool kIsInteger = false;
};
template <>
struct MxElementTraits<MxElement::kFp8E5M2> {
  static constexpr int kBits = 8;
  static constexpr int kMantissaBits = 2;
  static constexpr int kEmin = -14;
  static constexpr int kEmaxElem = 15;  // 57344 = 1.75 * 2^15
  static constexpr std::uint32_t kMaxCode = 0x7B;
  static constexpr float kMax = 57344.0f;
  static constexpr bool kIsInteger = false;
};
template <>
struct MxElementTraits<MxElement::kFp6E3M2> {
  static constexpr int kBits = 6;
  static constexpr int kMantissaBits = 2;
  static constexpr int kEmin = -2;
  static constexpr int kEmaxElem = 4;   // 28 = 1.75 * 2^4
  static constexpr std::uint32_t kMaxCode = 0x1F;
  static constexpr float kMax = 28.0f;
  static constexpr bool kIsInteger = false;
};
template <>
struct MxElementTraits<MxElement::kFp6E2M3> {
  static constexpr int kBits = 6;
  static constexpr int kMantissaBits = 3;
  static constexpr int kEmin = 0;
  static constexpr int kEmaxElem = 2;   // 7.5 = 1.875 * 2^2
  static constexpr std::uint32_t kMaxCode = 0x1F;
  static constexpr float kMax = 7.5f;
  static constexpr bool kIsInteger = false;
};
template <>
struct MxElementTraits<MxElement::kFp4E2M1> {
  static constexpr int kBits = 4;
  static constexpr int kMantissaBits = 1;
  static constexpr int kEmin = 0;
  static constexpr int kEmaxElem = 2;   // 6 = 1.5 * 2^2
  static constexpr std::uint32_t kMaxCode = 0x7;
  static constexpr float kMax = 6.0f;
  static constexpr bool kIsInteger = false;
};
template <>
struct MxElementTraits<MxElement::kInt8> {
  static constexpr int kBits = 8;
  static constexpr int kEmaxElem = 0;   // 127/64 = 1.984375 < 2^1
  static constexpr std::uint32_t kMaxCode = 127;
  static constexpr float kMax = 127.0f / 64.0f;
  static constexpr bool kIsInteger = true;
};

// Bytes of one block's elements: 32 * bits / 8.
constexpr std::size_t mx_block_element_bytes(MxElement element) noexcept {
  switch (element) {
    case MxElement::kFp6E3M2:
    case MxElement::kFp6E2M3: return 24;
    case MxElement::kFp4E2M1: return 16;
    case MxElement::kFp8E4M3:
    case MxElement::kFp8E5M2:
    case MxElement::kInt8: return 32;
  }
  return 32;
}
static_assert(mx_block_element_bytes(MxElement::kFp4E2M1) == kMxBlockSize * 4 / 8 &&
                  mx_block_element_bytes(MxElement::kFp6E2M3) == kMxBlockSize * 6 / 8 &&
                  mx_block_element_bytes(MxElement::kFp8E4M3) == kMxBlockSize,
              "an MX block's elements fill whole bytes: 32 * bits / 8");

// Size of the elements plane for n values (0 for n < 0 or n not a multiple of 32).
constexpr std::size_t mx_element_bytes(MxElement element, std::int64_t n) noexcept {
  if (n < 0 || n % kMxBlockSize != 0) return 0;
  return static_cast<std::size_t>(n / kMxBlockSize) * mx_block_element_bytes(element);
}
// Size of the scales plane for n values: one E8M0 byte per block.
constexpr std::size_t mx_scale_bytes(std::int64_t n) noexcept {
  if (n < 0 || n % kMxBlockSize != 0) return 0;
  return static_cast<std::size_t>(n / kMxBlockSize);
}

constexpr std::uint8_t kE8M0Nan = 0xFF;

// 2^(code - 127), or NaN for 0xFF. Exact: 2^-127 is a float32 subnormal.
constexpr float e8m0_to_float(std::uint8_t code) noexcept {
  return code == kE8M0Nan ? std::numeric_limits<float>::quiet_NaN()
                          : detail::minifloat::pow2(static_cast<int>(code) - 127);
}

namespace detail {
namespace mx {

// floor(log2(a)) for a finite a > 0 given by its magnitude bits, read off the bits exactly.
inline int floor_log2(std::uint32_t abs_bits) noexcept {
  if (abs_bits < 0x800000u) return minifloat::bit_width(abs_bits) - 1 - 149;  // float subnormal
  return static_cast<int>(abs_bits >> 23) - 127;
}

template <MxElement Element>
constexpr std::array<float, 256> make_element_values() noexcept {
  using T = MxElementTraits<Element>;
  std::array<float, 256> table{};
  if constexpr (T::kIsInteger) {
    for (int code = 0; code < 256; ++code) {
      const int q = code < 128 ? code : code - 256;  // two's complement
      table[static_cast<std::size_t>(code)] = static_cast<float>(q) / 64.0f;
    }
  } else if constexpr (T::kBits == 8) {
    // The FP8 elements are OFP8's, NaN and (E5M2) Inf codes included.
    constexpr Fp8Format kFormat =
        Element == MxElement::kFp8E4M3 ? Fp8Format::kE4M3 : Fp8Format::kE5M2;
    table = Fp8Values<kFormat>::kTable;
  } else {
    constexpr std::uint32_t kSign = 1u << (T::kBits - 1);
    for (std::uint32_t code = 0; code < kSign; ++code) {
      const float v = minifloat::magnitude_value(code, T::kMantissaBits, T::kEmin);
      table[code] = v;
      table[code | kSign] = -v;
    }
  }
  return table;
}

template <MxElement Element>
struct ElementValues {
  // Indexed by code; codes wider than the element (FP6/FP4) are never produced nor read.
  static constexpr std::array<float, 256> kTable = make_element_values<Element>();
};

}  // namespace mx
}  // namespace detail

// The shared exponent of a block whose largest magnitude is amax (finite, >= 0; the sign is
// ignored): floor(log2(amax)) - emax_elem, raised to -127; amax = 0 counts as 2^-126.
template <MxElement Element>
inline int mx_shared_exponent(float amax) noexcept {
  const std::uint32_t abs = detail::float_bits(amax) & 0x7FFFFFFFu;
  const int floor_log2 = abs == 0 ? -126 : detail::mx::floor_log2(abs);
  const int shared = floor_log2 - MxElementTraits<Element>::kEmaxElem;
  return shared < -127 ? -127 : (shared > 127 ? 127 : shared);
}

// The element code of x / 2^shared_exponent: round to nearest, ties to even, saturating at the
// element's largest magnitude. shared_exponent is clamped to E8M0's range [-127, 127]. Inf
// saturates; NaN gives the FP8 elements' NaN code and 0 for the formats without NaN (the row API
// rejects NaN before it gets here).
template <MxElement Element>
inline std::uint8_t mx_encode_element(float x, int shared_exponent) noexcept {
  using T = MxElementTraits<Element>;
  const int shift = shared_exponent < -127 ? -127 : (shared_exponent > 127 ? 127 : shared_exponent);
  const std::uint32_t u = detail::float_bits(x);
  const bool negative = (u >> 31) != 0;
  const std::uint32_t abs = u & 0x7FFFFFFFu;
  if constexpr (T::kIsInteger) {
    if (abs > 0x7F800000u) return 0;
    std::uint32_t q = T::kMaxCode;  // Inf saturates
    if (abs < 0x7F800000u) {
      // q = round(sig * 2^lsb / 2^(shift - 6)) = round(sig / 2^drop). A non-positive drop means
      // a quotient of at least sig (an integer >= 1) times 2^-drop: beyond 127 once drop < -7,
      // and below 2^31 otherwise, so the left shift stays in range.
      const detail::minifloat::Exact v = detail::minifloat::exact_magnitude(abs);
      const int drop = (shift - 6) - v.lsb;
      std::uint32_t r = T::kMaxCode;
      if (v.sig == 0) {
        r = 0;
      } else if (drop > 0) {
        r = detail::minifloat::round_shift(v.sig, drop);
      } else if (drop >= -7) {
        r = v.sig << -drop;
      }
      q = r < T::kMaxCode ? r : T::kMaxCode;
    }
    const int signed_q = negative ? -static_cast<int>(q) : static_cast<int>(q);
    return static_cast<std::uint8_t>(signed_q & 0xFF);
  } else {
    constexpr std::uint32_t kSign = 1u << (T::kBits - 1);
    const std::uint32_t sign = negative ? kSign : 0u;
    if (abs > 0x7F800000u) {
      if constexpr (T::kBits == 8) {
        constexpr Fp8Format kFormat =
            Element == MxElement::kFp8E4M3 ? Fp8Format::kE4M3 : Fp8Format::kE5M2;
        return static_cast<std::uint8_t>(sign | Fp8Traits<kFormat>::kNanCode);
      }
      return 0;
    }
    std::uint32_t magnitude = T::kMaxCode;
    if (abs < 0x7F800000u) {
      const std::uint32_t r =
          detail::minifloat::round_magnitude(abs, shift, T::kMantissaBits, T::kEmin);
      magnitude = r < T::kMaxCode ? r : T::kMaxCode;
    }
    return static_cast<std::uint8_t>(sign | magnitude);
  }
}

// The value of one element code, without the block scale (exact).
template <MxElement Element>
constexpr float mx_decode_element(std::uint8_t code) noexcept {
  return detail::mx::ElementValues<Element>::kTable[code];
}

template <MxElement Element>
inline Status mx_quantize_row(const float* x, std::int64_t n, std::uint8_t* elements,
                              std::size_t elements_size, std::uint8_t* scales,
                              std::size_t scales_size) noexcept {
  using T = MxElementTraits<Element>;
  if (n < 0) return {Errc::kInvalidArgument, "mx row: negative length"};
  if (n % kMxBlockSize != 0)
    return {Errc::kIndivisible, "mx row: length is not a multiple of the block size 32"};
  if (n > 0 && (x == nullptr || elements == nullptr || scales == nullptr))
    return {Errc::kInvalidArgument, "mx row: null pointer"};
  const std::size_t block_bytes = mx_block_element_bytes(Element);
  const std::int64_t blocks = n / kMxBlockSize;
  if (elements_size / block_bytes < static_cast<std::uint64_t>(blocks))
    return {Errc::kShapeMismatch, "mx row: elements buffer smaller than mx_element_bytes(n)",
            static_cast<std::int64_t>(elements_size / block_bytes) * kMxBlockSize};
  if (scales_size < static_cast<std::uint64_t>(blocks))
    return {Errc::kShapeMismatch, "mx row: scales buffer smaller than mx_scale_bytes(n)",
            static_cast<std::int64_t>(scales_size) * kMxBlockSize};
  for (std::int64_t i = 0; i < n; ++i) {
    if ((detail::float_bits(x[i]) & 0x7F800000u) == 0x7F800000u)
      return {Errc::kNonFinite, "input is NaN or Inf", i};
  }
  for (std::int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kMxBlockSize;
    std::uint32_t amax_bits = 0;  // magnitudes of finite floats order like their bit patterns
    for (std::int64_t j = 0; j < kMxBlockSize; ++j) {
      const std::uint32_t a = detail::float_bits(v[j]) & 0x7FFFFFFFu;
      amax_bits = a > amax_bits ? a : amax_bits;
    }
    const int shared = mx_shared_exponent<Element>(detail::bits_float(amax_bits));
    scales[b] = static_cast<std::uint8_t>(shared + 127);
    std::uint8_t codes[kMxBlockSize];
    for (std::int64_t j = 0; j < kMxBlockSize; ++j)
      codes[j] = mx_encode_element<Element>(v[j], shared);
    std::uint8_t* out = elements + static_cast<std::size_t>(b) * block_bytes;
    if constexpr (T::kBits == 8) {
      for (std::int64_t j = 0; j < kMxBlockSize; ++j) out[j] = codes[j];
    } else {
      // Codes are in range by construction; the Status only guards that invariant.
      LOWBIT_TRY(pack_codes<T::kBits>(codes, kMxBlockSize, out, block_bytes));
    }
  }
  return {};
}

template <MxElement Element>
inline Status mx_dequantize_row(const std::uint8_t* elements, std::size_t elements_size,
                                const std::uint8_t* scales, std::size_t scales_size,
                                std::int64_t n, float* out) noexcept {
  using T = MxElementTraits<Element>;
  if (n < 0) return {Errc::kInvalidArgument, "mx row: negative length"};
  if (n % kMxBlockSize != 0)
    return {Errc::kIndivisible, "mx row: length is not a multiple of the block size 32"};
  if (n > 0 && (elements == nullptr || scales == nullptr || out == nullptr))
    return {Errc::kInvalidArgument, "mx row: null pointer"};
  const std::size_t block_bytes = mx_block_element_bytes(Element);
  const std::int64_t blocks = n / kMxBlockSize;
  if (elements_size / block_bytes < static_cast<std::uint64_t>(blocks))
    return {Errc::kTruncated, "mx row: elements end before the n values",
            static_cast<std::int64_t>(elements_size / block_bytes) * kMxBlockSize};
  if (scales_size < static_cast<std::uint64_t>(blocks))
    return {Errc::kTruncated, "mx row: scales end before the n values",
            static_cast<std::int64_t>(scales_size) * kMxBlockSize};
  for (std::int64_t b = 0; b < blocks; ++b) {
    const float scale = e8m0_to_float(scales[b]);
    const std::uint8_t* in = elements + static_cast<std::size_t>(b) * block_bytes;
    std::uint8_t codes[kMxBlockSize];
    if constexpr (T::kBits == 8) {
      for (std::int64_t j = 0; j < kMxBlockSize; ++j) codes[j] = in[j];
    } else {
      LOWBIT_TRY(unpack_codes<T::kBits>(in, block_bytes, kMxBlockSize, codes));
    }
    float* o = out + b * kMxBlockSize;
    for (std::int64_t j = 0; j < kMxBlockSize; ++j)
      o[j] = mx_decode_element<Element>(codes[j]) * scale;
  }
  return {};
}

namespace detail {
namespace mx {
// Calls f(std::integral_constant<MxElement, E>{}) for the run-time element type.
template <class F>
inline Status with_element(MxElement element, F&& f) noexcept {
  switch (element) {
    case MxElement::kFp8E4M3: return f(std::integral_constant<MxElement, MxElement::kFp8E4M3>{});
    case MxElement::kFp8E5M2: return f(std::integral_constant<MxElement, MxElement::kFp8E5M2>{});
    case MxElement::kFp6E3M2: return f(std::integral_constant<MxElement, MxElement::kFp6E3M2>{});
    case MxElement::kFp6E2M3: return f(std::integral_constant<MxElement, MxElement::kFp6E2M3>{});
    case MxElement::kFp4E2M1: return f(std::integral_constant<MxElement, MxElement::kFp4E2M1>{});
    case MxElement::kInt8: return f(std::integral_constant<MxElement, MxElement::kInt8>{});
  }
  return {Errc::kInvalidArgument, "mx: unknown element type"};
}
}  // namespace mx
}  // namespace detail

// The element type chosen at run time (file readers); otherwise identical to the templates.
inline Status mx_quantize_row(MxElement element, const float* x, std::int64_t n,
                              std::uint8_t* elements, std::size_t elements_size,
                              std::uint8_t* scales, std::size_t scales_size) noexcept {
  return detail::mx::with_element(element, [&](auto e) noexcept {
    return mx_quantize_row<decltype(e)::value>(x, n, elements, elements_size, scales, scales_size);
  });
}
inline Status mx_dequantize_row(MxElement element, const std::uint8_t* elements,
                                std::size_t elements_size, const std::uint8_t* scales,
                                std::size_t scales_size, std::int64_t n, float* out) noexcept {
  return detail::mx::with_element(element, [&](auto e) noexcept {
    return mx_dequantize_row<decltype(e)::value>(elements, elements_size, scales, scales_size, n,
                                                 out);
  });
}

}  // namespace lowbit
