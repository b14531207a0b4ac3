// lowbit/detail/kernels/dequant_packed/reference.hpp: lowbit's dense packed codes (format/
// packed.hpp, format/packed_matrix.hpp) decoded to float32 one element at a time, the simplest
// correct way:
//
//   w[r][k] = float(q - zero_point) * scale            (detail::dequantize_code, torch's order)
//   q       = bits [(r*cols + k)*b, +b) of the stream, sign-extended when the codes are signed
//   scale, zero_point at parameter index r * param_stride + k / group  (dequant_gemm/problem.hpp)
//
// This is the oracle of the SIMD decoders in dequant_packed/{avx2,avx512,neon}.hpp and the
// decoder every ISA falls back to where they do not apply: widths other than 2, 3, 4, 8 bits,
// groups that are not a multiple of 32 elements, rows that do not start on a byte, per-column
// parameters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lowbit/detail/affine.hpp"
#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"

namespace lowbit {
namespace detail {
namespace dequant {

// The `bits`-bit field of code `index` in a dense stream of `bytes` bytes, as an unsigned value.
// Code i sits at bit i*b; computed as group-of-8 offsets so nothing overflows for any index a
// buffer can hold (8 codes are exactly b bytes).
inline std::uint32_t packed_field(const std::uint8_t* data, std::size_t bytes, std::uint64_t index,
                                  int bits) noexcept {
  const std::uint64_t within = (index % 8) * static_cast<std::uint64_t>(bits);
  const std::uint64_t byte = (index / 8) * static_cast<std::uint64_t>(bits) + within / 8;
  const unsigned shift = static_cast<unsigned>(within % 8);
  std::uint32_t v = data[byte];
  // A field that crosses into the next byte: that byte exists, the field lies inside the stream.
  if (shift + static_cast<unsigned>(bits) > 8 && byte + 1 < bytes)
    v |= static_cast<std::uint32_t>(data[byte + 1]) << 8;
  return (v >> shift) & ((1u << bits) - 1u);
}

// The code as an integer: b-bit two's complement for symmetric schemes, unsigned otherwise.
inline std::int32_t packed_code(std::uint32_t field, int bits, bool is_signed) noexcept {
  if (!is_signed) return static_cast<std::int32_t>(field);
  const std::uint32_t sign = 1u << (bits - 1);
  return static_cast<std::int32_t>(field ^ sign) - static_cast<std::int32_t>(sign);
}

inline float packed_scale(const Weights& w, std::int64_t param) noexcept {
  const std::uint8_t* p = w.scales + 4 * static_cast<std::size_t>(param);
  const std::uint32_t bits =
      static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
      static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
  float s;
  std::memcpy(&s, &bits, sizeof s);
  return s;
}

inline std::int32_t packed_zero_point(const Weights& w, std::int64_t param) noexcept {
  switch (w.zero_point_kind) {
    case ZeroPoints::kNone: return 0;
    case ZeroPoints::kPacked:
      return static_cast<std::int32_t>(packed_field(static_cast<const std::uint8_t*>(w.zero_points),
                                                    w.zero_point_bytes,
                                                    static_cast<std::uint64_t>(param), w.bits));
    case ZeroPoints::kInt32: {
      std::int32_t z;
      std::memcpy(
          &z, static_cast<const std::uint8_t*>(w.zero_points) + 4 * static_cast<std::size_t>(param),
          sizeof z);
      return z;
    }
  }
  return 0;
}

namespace reference {

inline void decode_packed_row(const Weights& w, std::int64_t row, std::int64_t k0,
                              std::int64_t count, float* out) noexcept {
  const std::uint64_t first = static_cast<std::uint64_t>(row) * static_cast<std::uint64_t>(w.cols);
  const std::int64_t param_row = row * w.param_stride;
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int64_t k = k0 + i;
    const std::int64_t param = param_row + k / w.group;
    const std::int32_t q =
        packed_code(packed_field(w.data, w.bytes, first + static_cast<std::uint64_t>(k), w.bits),
                    w.bits, w.signed_codes);
    out[i] = dequantize_code(q, packed_scale(w, param), packed_zero_point(w, param));
  }
}

}  // namespace reference
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit
