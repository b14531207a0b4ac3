// lowbit/detail/kernels/dequant_ggml/reference.hpp: ggml weight rows decoded to float32, the
// simplest correct way: each block goes through lowbit's byte-exact dequantizer
// (ggml::FormatTraits<Block>::dequantize, which reproduces ggml's to_float bit for bit).
//
// This is the oracle the SIMD decoders of dequant_ggml/{avx2,avx512,neon}.hpp are tested
// against, and the decoder every ISA falls back to for the formats it has no kernel of its own
// for (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_XS, TQ1_0, TQ2_0, F16, BF16, F32 on some paths;
// see dequant_gemm/<isa>.hpp). The blocks are copied out of the byte buffer before use, because
// a ggml tensor inside a file mapping has no alignment guarantee (Q4_0 blocks are 18 bytes).
//
// Small SWAR helpers shared by the SIMD decoders (the K-quants' packed 6-bit scales) live here
// too: they are plain integer code, the same on every ISA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"
#include "lowbit/format/ggml.hpp"

namespace lowbit {
namespace detail {
namespace dequant {
namespace reference {

// Elements [k0, k0 + count) of `row`, block by block through FormatTraits<Block>::dequantize.
template <class Block>
void decode_ggml_row(const Weights& w, std::int64_t row, std::int64_t k0, std::int64_t count,
                     float* out) noexcept {
  using Traits = ggml::FormatTraits<Block>;
  constexpr std::int64_t kBlock = Traits::kBlockSize;
  const std::uint8_t* p = w.data + static_cast<std::size_t>(row) * w.row_bytes +
                          static_cast<std::size_t>(k0 / kBlock) * sizeof(Block);
  for (std::int64_t b = 0; b < count / kBlock; ++b) {
    Block block;
    std::memcpy(&block, p + static_cast<std::size_t>(b) * sizeof(Block), sizeof(Block));
    // One whole block into a valid buffer: the dequantizer's checks cannot fail.
    (void)Traits::dequantize(&block, kBlock, out + b * kBlock);
  }
}

// ggml's F32 rows: the floats themselves.
inline void decode_f32_row(const Weights& w, std::int64_t row, std::int64_t k0, std::int64_t count,
                           float* out) noexcept {
  std::memcpy(
      out, w.data + static_cast<std::size_t>(row) * w.row_bytes + 4 * static_cast<std::size_t>(k0),
      4 * static_cast<std::size_t>(count));
}

inline DecodeRowFn* ggml_row_decoder(Format format) noexcept {
  switch (format) {
    case Format::kF32: return &decode_f32_row;
    case Format::kF16: return &decode_ggml_row<Half>;
    case Format::kBF16: return &decode_ggml_row<BFloat16>;
    case Format::kQ4_0: return &decode_ggml_row<ggml::BlockQ4_0>;
    case Format::kQ4_1: return &decode_ggml_row<ggml::BlockQ4_1>;
    case Format::kQ5_0: return &decode_ggml_row<ggml::BlockQ5_0>;
    case Format::kQ5_1: return &decode_ggml_row<ggml::BlockQ5_1>;
    case Format::kQ8_0: return &decode_ggml_row<ggml::BlockQ8_0>;
    case Format::kQ2_K: return &decode_ggml_row<ggml::BlockQ2_K>;
    case Format::kQ3_K: return &decode_ggml_row<ggml::BlockQ3_K>;
    case Format::kQ4_K: return &decode_ggml_row<ggml::BlockQ4_K>;
    case Format::kQ5_K: return &decode_ggml_row<ggml::BlockQ5_K>;
    case Format::kQ6_K: return &decode_ggml_row<ggml::BlockQ6_K>;
    case Format::kIQ4_NL: return &decode_ggml_row<ggml::BlockIQ4_NL>;
    case Format::kIQ4_XS: return &decode_ggml_row<ggml::BlockIQ4_XS>;
    case Format::kTQ1_0: return &decode_ggml_row<ggml::BlockTQ1_0>;
    case Format::kTQ2_0: return &decode_ggml_row<ggml::BlockTQ2_0>;
    case Format::kPacked: return nullptr;
  }
  return nullptr;
}

}  // namespace reference

// ---- Shared scalar helpers for the SIMD decoders ------------------------------------------------

// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K super-block (format/ggml/
// k_quants.hpp: bytes 0-3 hold sc0-3 and the top bits of sc4-7, bytes 4-7 m0-3 and the top bits
// of m4-7, bytes 8-11 the low nibbles of sc4-7 | m4-7), unpacked four at a time in 32-bit words:
//   sc[0..3] = b[0..3] & 63                 m[0..3] = b[4..7] & 63
//   sc[4..7] = b[8..11] & 15 | (b[0..3] >> 6) << 4
//   m[4..7]  = b[8..11] >> 4 | (b[4..7] >> 6) << 4
// Each result byte is one value (0..63), sc in byte j of `sc`, m in byte j of `m`.
inline void unpack_k4_scales(const std::uint8_t* s, std::uint64_t* sc, std::uint64_t* m) noexcept {
  auto word = [s](int i) {
    return static_cast<std::uint32_t>(s[4 * i]) | static_cast<std::uint32_t>(s[4 * i + 1]) << 8 |
           static_cast<std::uint32_t>(s[4 * i + 2]) << 16 |
           static_cast<std::uint32_t>(s[4 * i + 3]) << 24;
  };
  const std::uint32_t w0 = word(0), w1 = word(1), w2 = word(2);
  const std::uint32_t sc_lo = w0 & 0x3F3F3F3Fu;
  const std::uint32_t m_lo = w1 & 0x3F3F3F3Fu;
  const std::uint32_t sc_hi = (w2 & 0x0F0F0F0Fu) | ((w0 >> 2) & 0x30303030u);
  const std::uint32_t m_hi = ((w2 >> 4) & 0x0F0F0F0Fu) | ((w1 >> 2) & 0x30303030u);
  *sc = sc_lo | static_cast<std::uint64_t>(sc_hi) << 32;
  *m = m_lo | static_cast<std::uint64_t>(m_hi) << 32;
}

inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

}  // namespace dequant
}  // namespace detail
}  // namespace lowbit
