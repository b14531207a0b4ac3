// lowbit/detail/kernels/dequant_gemm/avx2.hpp: the AVX2 + FMA + F16C dequant-GEMV/GEMM.
//
// Two drivers, chosen by the number of tokens N (problem.hpp: kGemmMinTokens):
//
// GEMV (N < 4). Memory-bound: each weight block is read once, decoded in registers and
// multiplied into the running dot product (dequant_ggml/avx2.hpp, dequant_packed/avx2.hpp);
// four rows advance together so their four streams overlap and x is read once per block for
// all four. For N = 2, 3 the same row group is swept once per token while its weights are still
// in L1/L2. Formats without a fused kernel decode four rows into a scratch tile first.
//
// GEMM (N >= 4). Compute-bound: a panel of 64 rows x 512 elements of K is dequantized once into
// an fp32 tile (128 KiB, L2) and every token passes over it. The tile is transposed so that for
// each k the 16 weights of 16 consecutive rows are contiguous; the micro-kernel then keeps a
// 6-token x 16-row block of Y in 12 registers:
//
//            panel[k][0..15]  (2 x ymm, loaded)
//                 |
//   x[t][k] --> acc[t][0..1] += w * broadcast(x[t][k])      t = 0..5: 12 FMAs per k
//
// X is read in place (broadcasts need neither alignment nor packing), Y rows are written as
// contiguous 16-float runs. Y holds the partial sums between K chunks (the first chunk starts
// from the bias). The panel costs about 2 operations per weight to make and is reused N times.
//
// Every output element is computed by a sequence of operations that depends only on its row,
// its token and the shape, never on which task or block holds it: results are bit-identical for
// any executor (tasks are kRowsPerTask = 64 rows, a multiple of every row block here).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"
#include "lowbit/detail/kernels/dequant_gemm/reference.hpp"
#include "lowbit/detail/kernels/dequant_ggml/avx2.hpp"
#include "lowbit/detail/kernels/dequant_packed/avx2.hpp"
#include "lowbit/executor.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace avx2 {

constexpr std::int64_t kGemvRows = 4;
constexpr std::int64_t kPanelRows = 16;  // rows per transposed panel (2 ymm)
constexpr std::int64_t kTileRows = 64;   // rows dequantized together (= kRowsPerTask)
constexpr int kTokens = 6;               // tokens per micro-kernel call
static_assert(kRowsPerTask % kTileRows == 0 && kTileRows % kPanelRows == 0, "row blocks nest");

LOWBIT_DQ_AVX2 float hsum(__m256 v) noexcept {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes [0, n) set, for masked loads and stores of a partial vector (n in 0..8).
LOWBIT_DQ_AVX2 __m256i first_lanes(std::int64_t n) noexcept {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// ---- GEMV ---------------------------------------------------------------------------------------

// Software prefetch of the weight bytes kPrefetchBytes ahead of the `bytes` about to be read.
// Four rows are streamed at once and the decode keeps the out-of-order window busy, so the
// hardware prefetchers alone leave a cold GEMV further below the DRAM bandwidth (Q6_K gained the
// most: about 1.5x). The address is formed as an integer: it may lie past the end of the
// weights, which a prefetch tolerates and pointer arithmetic does not.
constexpr std::size_t kPrefetchBytes = 2048;
LOWBIT_DQ_AVX2 void prefetch_ahead(const std::uint8_t* p, std::size_t bytes) noexcept {
  const std::uintptr_t ahead = reinterpret_cast<std::uintptr_t>(p) + kPrefetchBytes;
  for (std::size_t o = 0; o < bytes; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(ahead + o), _MM_HINT_T0);
}

struct GemvArgs {
  const Weights* w;
  const Problem* p;
  const float* x;  // the activations the kernel reads (permuted for packed 4/2-bit)
  std::int64_t x_stride;
  const float* xsums;       // per token, sums of x over each kSumElems / group elements
  std::int64_t xsum_count;  // sums per token
  float* scratch;           // kGemvRows * cols floats (generic path)
  DecodeRowFn* decode;      // generic path
};

LOWBIT_DQ_AVX2 void store_row(const GemvArgs& a, std::int64_t t, std::int64_t r, float v) noexcept {
  const Problem& p = *a.p;
  if (p.bias != nullptr) v += p.bias[r * p.bias_stride];
  p.y[t * p.y_stride + r] = v;
}

// Rows [r, r + R) of a ggml format for every token.
template <class F, int R>
LOWBIT_DQ_AVX2 void gemv_ggml_group(const GemvArgs& a, std::int64_t r) noexcept {
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  const std::int64_t blocks = w.cols / F::kElems;
  const std::int64_t batched = blocks / F::kBatch * F::kBatch;
  constexpr std::int64_t kSumsPerBlock =
      F::kSumElems == 0 ? 0 : F::kElems / (F::kSumElems == 0 ? 1 : F::kSumElems);
  const std::uint8_t* row[R];
  for (int i = 0; i < R; ++i) row[i] = w.data + static_cast<std::size_t>(r + i) * w.row_bytes;
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = a.x + t * a.x_stride;
    // No pointer arithmetic on a null xsums (formats without offsets have none).
    const float* xs = kSumsPerBlock == 0 ? nullptr : a.xsums + t * a.xsum_count;
    __m256 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
    std::int64_t b = 0;
    for (; b < batched; b += F::kBatch) {
      const std::size_t off = static_cast<std::size_t>(b) * F::kBytes;
      const float* xsb = kSumsPerBlock == 0 ? nullptr : xs + b * kSumsPerBlock;
      for (int i = 0; i < R; ++i) {
        prefetch_ahead(row[i] + off, F::kBytes * F::kBatch);
        F::dot(row[i] + off, x + b * F::kElems, xsb, acc[i]);
      }
    }
    if constexpr (F::kBatch > 1) {
      for (; b < blocks; ++b) {
        const std::size_t off = static_cast<std::size_t>(b) * F::kBytes;
        const float* xsb = kSumsPerBlock == 0 ? nullptr : xs + b * kSumsPerBlock;
        for (int i = 0; i < R; ++i) dot_one<F>(row[i] + off, x + b * F::kElems, xsb, acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) store_row(a, t, r + i, hsum(acc[i]));
  }
}

template <class F>
LOWBIT_TARGET_AVX2 void gemv_ggml(const GemvArgs& a, std::int64_t r0, std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows) gemv_ggml_group<F, kGemvRows>(a, r);
  for (; r < r1; ++r) gemv_ggml_group<F, 1>(a, r);
}

// Packed codes: one scale (and zero point) per group of `w.group` elements, a multiple of 32.
// y = sum_g s_g * (sum_{k in g} u_k x_k) - sum_g s_g z'_g xsum_g   (dequant_packed/avx2.hpp)
template <int Bits, bool Signed, int R>
LOWBIT_DQ_AVX2 void gemv_packed_group(const GemvArgs& a, std::int64_t r) noexcept {
  using Unit = PackedGemv<Bits, Signed>;
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  const std::uint8_t* end = w.data + w.bytes;
  PackedRow row[R];
  for (int i = 0; i < R; ++i) row[i] = packed_row(w, r + i);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = a.x + t * a.x_stride;
    const float* xs = a.xsums + t * a.xsum_count;  // packed GEMVs always have group sums
    __m256 acc[R];
    float offset[R];
    for (int i = 0; i < R; ++i) {
      acc[i] = _mm256_setzero_ps();
      offset[i] = 0.0f;
    }
    for (std::int64_t g = 0, k0 = 0; k0 < w.cols; ++g, k0 += w.group) {
      __m256 part[R];
      for (int i = 0; i < R; ++i) part[i] = _mm256_setzero_ps();
      for (std::int64_t k = k0; k < k0 + w.group; k += 32) {
        for (int i = 0; i < R; ++i) {
          const std::uint8_t* c = row[i].codes + packed_byte(k, Bits);
          prefetch_ahead(c, 4 * Bits);
          Unit::partial(c, end, x + k, part[i]);
        }
      }
      for (int i = 0; i < R; ++i) {
        const std::int64_t param = row[i].param_base + g;
        const float s = packed_scale(w, param);
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(s), part[i], acc[i]);
        const int z = Unit::kSignedOffset != 0 ? Unit::kSignedOffset
                      : Signed                 ? 0
                                               : packed_zero_point(w, param);
        offset[i] += s * static_cast<float>(z) * xs[g];
      }
    }
    for (int i = 0; i < R; ++i) store_row(a, t, r + i, hsum(acc[i]) - offset[i]);
  }
}

template <int Bits, bool Signed>
LOWBIT_TARGET_AVX2 void gemv_packed(const GemvArgs& a, std::int64_t r0, std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows) gemv_packed_group<Bits, Signed, kGemvRows>(a, r);
  for (; r < r1; ++r) gemv_packed_group<Bits, Signed, 1>(a, r);
}

// Any format: R rows decoded into the scratch tile, then plain fp32 dots (K may have any length:
// the last partial vector is read with a masked load, which touches no element past the row).
template <int R>
LOWBIT_DQ_AVX2 void gemv_tile_group(const GemvArgs& a, std::int64_t r) noexcept {
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  const std::int64_t n = w.cols;
  for (int i = 0; i < R; ++i)
    for (std::int64_t k0 = 0; k0 < n; k0 += kChunk)
      a.decode(w, r + i, k0, std::min(kChunk, n - k0), a.scratch + i * n + k0);
  const std::int64_t full = n / 8 * 8;
  const __m256i tail = first_lanes(n - full);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = a.x + t * a.x_stride;
    __m256 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_ps();
    for (std::int64_t k = 0; k < full; k += 8) {
      const __m256 xv = _mm256_loadu_ps(x + k);
      for (int i = 0; i < R; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a.scratch + i * n + k), xv, acc[i]);
    }
    if (full < n) {
      const __m256 xv = _mm256_maskload_ps(x + full, tail);
      for (int i = 0; i < R; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(a.scratch + i * n + full, tail), xv, acc[i]);
    }
    for (int i = 0; i < R; ++i) store_row(a, t, r + i, hsum(acc[i]));
  }
}

LOWBIT_TARGET_AVX2 inline void gemv_tile(const GemvArgs& a, std::int64_t r0,
                                         std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows) gemv_tile_group<kGemvRows>(a, r);
  for (; r < r1; ++r) gemv_tile_group<1>(a, r);
}

// ---- GEMM ---------------------------------------------------------------------------------------

LOWBIT_DQ_AVX2 void transpose8(__m256 r[8]) noexcept {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// tile[i][k] (rows of kChunk floats) -> panel[k][i] for i < kPanelRows, k < kc.
LOWBIT_DQ_AVX2 void make_panel(const float* tile, std::int64_t kc, float* panel) noexcept {
  const std::int64_t full = kc / 8 * 8;
  for (std::int64_t k = 0; k < full; k += 8) {
    for (int h = 0; h < kPanelRows / 8; ++h) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(tile + (8 * h + i) * kChunk + k);
      transpose8(r);
      for (int j = 0; j < 8; ++j) _mm256_store_ps(panel + (k + j) * kPanelRows + 8 * h, r[j]);
    }
  }
  for (std::int64_t k = full; k < kc; ++k)
    for (int i = 0; i < kPanelRows; ++i) panel[k * kPanelRows + i] = tile[i * kChunk + k];
}

struct GemmBlock {
  const float* panel;  // [kc][16]
  std::int64_t kc;
  std::int64_t k0;
  std::int64_t row;     // first row of the panel
  std::int64_t valid;   // rows of the panel inside the matrix (1..16)
  bool first;           // first K chunk: start from the bias instead of Y
  const float* bias16;  // 16 bias values (zeros without bias)
};

// Y[t0 .. t0+T)[row .. row+16) (+)= X[t0 .. t0+T)[k0 .. k0+kc) * panel. Full panels load and
// store Y with plain moves; only a partial panel (the last rows of the matrix) uses vmaskmovps,
// which is slow on AMD cores.
template <int T, bool Full>
LOWBIT_DQ_AVX2 void micro_kernel(const Problem& p, const GemmBlock& b, std::int64_t t0) noexcept {
  const __m256i m0 = first_lanes(b.valid), m1 = first_lanes(b.valid - 8);
  const float* x[T];
  float* y[T];
  __m256 acc[T][2];
  for (int t = 0; t < T; ++t) {
    x[t] = p.x + (t0 + t) * p.x_stride + b.k0;
    y[t] = p.y + (t0 + t) * p.y_stride + b.row;
    if (b.first) {
      acc[t][0] = _mm256_loadu_ps(b.bias16);
      acc[t][1] = _mm256_loadu_ps(b.bias16 + 8);
    } else if (Full) {
      acc[t][0] = _mm256_loadu_ps(y[t]);
      acc[t][1] = _mm256_loadu_ps(y[t] + 8);
    } else {
      acc[t][0] = _mm256_maskload_ps(y[t], m0);
      acc[t][1] = _mm256_maskload_ps(y[t] + 8, m1);
    }
  }
  const float* w = b.panel;
  for (std::int64_t k = 0; k < b.kc; ++k, w += kPanelRows) {
    const __m256 w0 = _mm256_load_ps(w), w1 = _mm256_load_ps(w + 8);
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_broadcast_ss(x[t] + k);
      acc[t][0] = _mm256_fmadd_ps(w0, xv, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, xv, acc[t][1]);
    }
  }
  for (int t = 0; t < T; ++t) {
    if (Full) {
      _mm256_storeu_ps(y[t], acc[t][0]);
      _mm256_storeu_ps(y[t] + 8, acc[t][1]);
    } else {
      _mm256_maskstore_ps(y[t], m0, acc[t][0]);
      _mm256_maskstore_ps(y[t] + 8, m1, acc[t][1]);
    }
  }
}

template <bool Full>
LOWBIT_DQ_AVX2 void micro_kernel_t(const Problem& p, const GemmBlock& b, std::int64_t t0,
                                   std::int64_t n) noexcept {
  switch (n) {
    case 1: micro_kernel<1, Full>(p, b, t0); break;
    case 2: micro_kernel<2, Full>(p, b, t0); break;
    case 3: micro_kernel<3, Full>(p, b, t0); break;
    case 4: micro_kernel<4, Full>(p, b, t0); break;
    case 5: micro_kernel<5, Full>(p, b, t0); break;
    default: micro_kernel<6, Full>(p, b, t0); break;
  }
}

LOWBIT_DQ_AVX2 void micro_kernel_n(const Problem& p, const GemmBlock& b, std::int64_t t0,
                                   std::int64_t n) noexcept {
  if (b.valid == kPanelRows) {
    micro_kernel_t<true>(p, b, t0, n);
  } else {
    micro_kernel_t<false>(p, b, t0, n);
  }
}

// Scratch: kTileRows rows of kChunk floats (the decoded tile) and the transposed panels.
constexpr std::size_t kGemmScratchFloats = 2 * kTileRows * kChunk + 16;

// Rows [r0, r1) (r0 a multiple of kTileRows, r1 - r0 <= kTileRows) for every token.
LOWBIT_TARGET_AVX2 inline void gemm_tile(const Weights& w, const Problem& p, DecodeRowFn* decode,
                                         std::int64_t r0, std::int64_t r1,
                                         float* scratch) noexcept {
  float* tile = scratch;
  // The panels, 32-byte aligned for the micro-kernel's aligned loads.
  float* panels = reinterpret_cast<float*>(
      (reinterpret_cast<std::uintptr_t>(scratch + kTileRows * kChunk) + 31) & ~std::uintptr_t{31});
  const std::int64_t rows = r1 - r0;
  const std::int64_t panel_count = (rows + kPanelRows - 1) / kPanelRows;
  alignas(32) float bias[kTileRows] = {};
  if (p.bias != nullptr)
    for (std::int64_t i = 0; i < rows; ++i) bias[i] = p.bias[(r0 + i) * p.bias_stride];
  // Rows past the matrix stay zero in the tile: their lanes are computed, never stored.
  std::memset(tile, 0, sizeof(float) * static_cast<std::size_t>(kTileRows * kChunk));
  for (std::int64_t k0 = 0; k0 < w.cols; k0 += kChunk) {
    const std::int64_t kc = std::min(kChunk, w.cols - k0);
    for (std::int64_t i = 0; i < rows; ++i) decode(w, r0 + i, k0, kc, tile + i * kChunk);
    for (std::int64_t q = 0; q < panel_count; ++q)
      make_panel(tile + q * kPanelRows * kChunk, kc, panels + q * kPanelRows * kChunk);
    for (std::int64_t t0 = 0; t0 < p.tokens; t0 += kTokens) {
      const std::int64_t n = std::min<std::int64_t>(kTokens, p.tokens - t0);
      for (std::int64_t q = 0; q < panel_count; ++q) {
        const GemmBlock b{panels + q * kPanelRows * kChunk,
                          kc,
                          k0,
                          r0 + q * kPanelRows,
                          std::min(kPanelRows, rows - q * kPanelRows),
                          k0 == 0,
                          bias + q * kPanelRows};
        micro_kernel_n(p, b, t0, n);
      }
    }
  }
}

// ---- Entry --------------------------------------------------------------------------------------

using GemvFn = void(const GemvArgs&, std::int64_t, std::int64_t);

// Whether a packed matrix can use the SIMD unit decoders: see dequant_packed/avx2.hpp.
inline bool packed_fast(const Weights& w) noexcept {
  return w.format == Format::kPacked &&
         (w.bits == 2 || w.bits == 3 || w.bits == 4 || w.bits == 8) && w.group % 32 == 0 &&
         !(w.signed_codes && w.zero_point_kind != ZeroPoints::kNone);
}

template <class Fn, template <int, bool> class Pick>
Fn* by_width(const Weights& w) noexcept {
  const bool s = w.signed_codes;
  switch (w.bits) {
    case 2: return s ? Pick<2, true>::value : Pick<2, false>::value;
    case 3: return s ? Pick<3, true>::value : Pick<3, false>::value;
    case 4: return s ? Pick<4, true>::value : Pick<4, false>::value;
    default: return s ? Pick<8, true>::value : Pick<8, false>::value;
  }
}
template <int Bits, bool Signed>
struct PickGemvPacked {
  static constexpr GemvFn* value = &gemv_packed<Bits, Signed>;
};
template <int Bits, bool Signed>
struct PickDecodePacked {
  static constexpr DecodeRowFn* value = &decode_packed_row<Bits, Signed>;
};

// The decoder GEMM tiles use: SIMD where this file has one, else the reference decoder.
inline DecodeRowFn* row_decoder(const Weights& w) noexcept {
  switch (w.format) {
    case Format::kQ4_0: return &decode_row<Q4_0>;
    case Format::kQ8_0: return &decode_row<Q8_0>;
    case Format::kIQ4_NL: return &decode_row<IQ4_NL>;
    case Format::kQ4_K: return &decode_row<Q4_K>;
    case Format::kQ6_K: return &decode_row<Q6_K>;
    default: break;
  }
  if (packed_fast(w)) return by_width<DecodeRowFn, PickDecodePacked>(w);
  return reference::row_decoder(w);
}

// Sums of x over each run of `elems` elements (cols a multiple of elems), per token, in a fixed
// order: the kernels subtract offset * sum from their dot products (see the format headers).
inline std::vector<float> block_sums(const Problem& p, std::int64_t cols, std::int64_t elems) {
  const std::int64_t n = cols / elems;
  std::vector<float> sums(static_cast<std::size_t>(n * p.tokens));
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = p.x + t * p.x_stride;
    for (std::int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (std::int64_t i = 0; i < elems; ++i) s += x[elems * j + i];
      sums[static_cast<std::size_t>(t * n + j)] = s;
    }
  }
  return sums;
}

inline void run_gemm(const Weights& w, const Problem& p, Executor& executor) {
  DecodeRowFn* decode = row_decoder(w);
  executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> scratch(kGemmScratchFloats);
    for (std::int64_t task = begin; task < end; ++task) {
      const std::int64_t r0 = task * kRowsPerTask;
      const std::int64_t r1 = std::min(r0 + kRowsPerTask, w.rows);
      for (std::int64_t r = r0; r < r1; r += kTileRows)
        gemm_tile(w, p, decode, r, std::min(r + kTileRows, r1), scratch.data());
    }
  });
}

inline void run(const Weights& w, const Problem& p, Executor& executor) {
  if (p.tokens >= kGemmMinTokens) {
    run_gemm(w, p, executor);
    return;
  }
  GemvArgs args{&w, &p, p.x, p.x_stride, nullptr, 0, nullptr, nullptr};
  GemvFn* gemv = nullptr;
  std::int64_t sum_elems = 0;
  switch (w.format) {
    case Format::kQ4_0:
      gemv = &gemv_ggml<Q4_0>;
      sum_elems = Q4_0::kSumElems;
      break;
    case Format::kQ8_0: gemv = &gemv_ggml<Q8_0>; break;
    case Format::kIQ4_NL: gemv = &gemv_ggml<IQ4_NL>; break;
    case Format::kQ4_K:
      gemv = &gemv_ggml<Q4_K>;
      sum_elems = Q4_K::kSumElems;
      break;
    case Format::kQ6_K:
      gemv = &gemv_ggml<Q6_K>;
      sum_elems = Q6_K::kSumElems;
      break;
    default: break;
  }
  std::vector<float> permuted;
  if (gemv == nullptr && packed_fast(w)) {
    gemv = by_width<GemvFn, PickGemvPacked>(w);
    sum_elems = w.group;
    if (w.bits == 4 || w.bits == 2) {
      permuted.resize(static_cast<std::size_t>(p.tokens * w.cols));
      permute_x(w.bits, p, w.cols, permuted.data());
      args.x = permuted.data();
      args.x_stride = w.cols;
    }
  }
  std::vector<float> sums;
  if (sum_elems != 0) {
    sums = block_sums(p, w.cols, sum_elems);
    args.xsums = sums.data();
    args.xsum_count = w.cols / sum_elems;
  }
  if (gemv != nullptr) {
    executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
      gemv(args, begin * kRowsPerTask, std::min(end * kRowsPerTask, w.rows));
    });
    return;
  }
  args.decode = reference::row_decoder(w);
  executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> scratch(static_cast<std::size_t>(kGemvRows * w.cols));
    GemvArgs local = args;
    local.scratch = scratch.data();
    gemv_tile(local, begin * kRowsPerTask, std::min(end * kRowsPerTask, w.rows));
  });
}

}  // namespace avx2
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
