// lowbit/detail/kernels/dequant_gemm/neon.hpp: the NEON (AArch64) dequant-GEMV/GEMM, with the
// structure of dequant_gemm/avx2.hpp on 4-lane registers:
//
// GEMV (N < 4): four rows at a time; Q4_0, Q8_0, IQ4_NL, Q4_K and Q6_K decode in registers
// (dequant_ggml/neon.hpp); every other format is decoded row by row into a scratch tile (the
// packed 2/4/8-bit codes by dequant_packed/neon.hpp, the rest by the reference decoder) and
// multiplied there.
//
// GEMM (N >= 4): 64-row x 512-element tiles dequantized once, transposed in 4x4 blocks into
// panels of 16 rows (panel[k][0..15]), and a micro-kernel keeping a 6-token x 16-row block of Y
// in 24 of the 32 vector registers:
//
//   panel[k][0..15] (4 x q-register) --> acc[t][0..3] += w * x[t][k]   (FMLA by element)
//
// NEON has no masked loads: partial panels (fewer than 16 rows) go through a 16-float buffer.
// Bit-identical results for any executor, as on the other paths.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"
#include "lowbit/detail/kernels/dequant_gemm/reference.hpp"
#include "lowbit/detail/kernels/dequant_ggml/neon.hpp"
#include "lowbit/detail/kernels/dequant_packed/neon.hpp"
#include "lowbit/executor.hpp"

#if defined(LOWBIT_HAVE_ARM_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace neon {

constexpr std::int64_t kGemvRows = 4;
constexpr std::int64_t kPanelRows = 16;
constexpr std::int64_t kTileRows = 64;
constexpr int kTokens = 6;
static_assert(kRowsPerTask % kTileRows == 0 && kTileRows % kPanelRows == 0, "row blocks nest");

struct GemvArgs {
  const Weights* w;
  const Problem* p;
  const float* xsums;
  std::int64_t xsum_count;
  float* scratch;
  DecodeRowFn* decode;
};

inline void store_row(const GemvArgs& a, std::int64_t t, std::int64_t r, float v) noexcept {
  const Problem& p = *a.p;
  if (p.bias != nullptr) v += p.bias[r * p.bias_stride];
  p.y[t * p.y_stride + r] = v;
}

template <class F, int R>
void gemv_ggml_group(const GemvArgs& a, std::int64_t r) noexcept {
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  const std::int64_t blocks = w.cols / F::kElems;
  constexpr std::int64_t kSums =
      F::kSumElems == 0 ? 0 : F::kElems / (F::kSumElems == 0 ? 1 : F::kSumElems);
  const std::uint8_t* row[R];
  for (int i = 0; i < R; ++i) row[i] = w.data + static_cast<std::size_t>(r + i) * w.row_bytes;
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = p.x + t * p.x_stride;
    // No pointer arithmetic on a null xsums (formats without offsets have none).
    const float* xs = kSums == 0 ? nullptr : a.xsums + t * a.xsum_count;
    float32x4_t acc[R];
    for (int i = 0; i < R; ++i) acc[i] = vdupq_n_f32(0.0f);
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::size_t off = static_cast<std::size_t>(b) * F::kBytes;
      const float* xsb = kSums == 0 ? nullptr : xs + b * kSums;
      for (int i = 0; i < R; ++i) {
        // Software prefetch 2 KiB ahead, as on x86 (dequant_gemm/avx2.hpp: kPrefetchBytes); the
        // address is an integer because it may lie past the end of the weights.
        __builtin_prefetch(
            reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(row[i] + off) + 2048));
        F::dot(row[i] + off, x + b * F::kElems, xsb, acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) store_row(a, t, r + i, vaddvq_f32(acc[i]));
  }
}

template <class F>
void gemv_ggml(const GemvArgs& a, std::int64_t r0, std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows) gemv_ggml_group<F, kGemvRows>(a, r);
  for (; r < r1; ++r) gemv_ggml_group<F, 1>(a, r);
}

// Any format: R rows decoded into the scratch tile, then fp32 dots; the last cols % 4 elements
// are added one by one (in a fixed order, after the vector part).
template <int R>
void gemv_tile_group(const GemvArgs& a, std::int64_t r) noexcept {
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  const std::int64_t n = w.cols;
  for (int i = 0; i < R; ++i)
    for (std::int64_t k0 = 0; k0 < n; k0 += kChunk)
      a.decode(w, r + i, k0, std::min(kChunk, n - k0), a.scratch + i * n + k0);
  const std::int64_t full = n / 4 * 4;
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = p.x + t * p.x_stride;
    float32x4_t acc[R];
    for (int i = 0; i < R; ++i) acc[i] = vdupq_n_f32(0.0f);
    for (std::int64_t k = 0; k < full; k += 4) {
      const float32x4_t xv = vld1q_f32(x + k);
      for (int i = 0; i < R; ++i) acc[i] = vfmaq_f32(acc[i], vld1q_f32(a.scratch + i * n + k), xv);
    }
    for (int i = 0; i < R; ++i) {
      float s = vaddvq_f32(acc[i]);
      for (std::int64_t k = full; k < n; ++k) s += a.scratch[i * n + k] * x[k];
      store_row(a, t, r + i, s);
    }
  }
}

inline void gemv_tile(const GemvArgs& a, std::int64_t r0, std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows) gemv_tile_group<kGemvRows>(a, r);
  for (; r < r1; ++r) gemv_tile_group<1>(a, r);
}

// ---- GEMM ---------------------------------------------------------------------------------------

// tile[i][k] (rows of kChunk floats) -> panel[k][i] for i < 16, k < kc, in 4 x 4 blocks.
inline void make_panel(const float* tile, std::int64_t kc, float* panel) noexcept {
  const std::int64_t full = kc / 4 * 4;
  for (std::int64_t k = 0; k < full; k += 4) {
    for (int h = 0; h < kPanelRows / 4; ++h) {
      const float* src = tile + 4 * h * kChunk + k;
      const float32x4_t r0 = vld1q_f32(src), r1 = vld1q_f32(src + kChunk);
      const float32x4_t r2 = vld1q_f32(src + 2 * kChunk), r3 = vld1q_f32(src + 3 * kChunk);
      const float32x4_t t0 = vtrn1q_f32(r0, r1), t1 = vtrn2q_f32(r0, r1);
      const float32x4_t t2 = vtrn1q_f32(r2, r3), t3 = vtrn2q_f32(r2, r3);
      const float64x2_t u0 = vreinterpretq_f64_f32(t0), u1 = vreinterpretq_f64_f32(t1);
      const float64x2_t u2 = vreinterpretq_f64_f32(t2), u3 = vreinterpretq_f64_f32(t3);
      float* dst = panel + k * kPanelRows + 4 * h;
      vst1q_f32(dst, vreinterpretq_f32_f64(vtrn1q_f64(u0, u2)));
      vst1q_f32(dst + kPanelRows, vreinterpretq_f32_f64(vtrn1q_f64(u1, u3)));
      vst1q_f32(dst + 2 * kPanelRows, vreinterpretq_f32_f64(vtrn2q_f64(u0, u2)));
      vst1q_f32(dst + 3 * kPanelRows, vreinterpretq_f32_f64(vtrn2q_f64(u1, u3)));
    }
  }
  for (std::int64_t k = full; k < kc; ++k)
    for (int i = 0; i < kPanelRows; ++i) panel[k * kPanelRows + i] = tile[i * kChunk + k];
}

struct GemmBlock {
  const float* panel;
  std::int64_t kc;
  std::int64_t k0;
  std::int64_t row;
  std::int64_t valid;
  bool first;
  const float* bias16;
};

template <int T>
void micro_kernel(const Problem& p, const GemmBlock& b, std::int64_t t0) noexcept {
  const float* x[T];
  float* y[T];
  float32x4_t acc[T][4];
  for (int t = 0; t < T; ++t) {
    x[t] = p.x + (t0 + t) * p.x_stride + b.k0;
    y[t] = p.y + (t0 + t) * p.y_stride + b.row;
    float init[16];
    if (b.first) {
      std::memcpy(init, b.bias16, sizeof init);
    } else {
      std::memset(init, 0, sizeof init);
      std::memcpy(init, y[t], sizeof(float) * static_cast<std::size_t>(b.valid));
    }
    for (int j = 0; j < 4; ++j) acc[t][j] = vld1q_f32(init + 4 * j);
  }
  const float* w = b.panel;
  for (std::int64_t k = 0; k < b.kc; ++k, w += kPanelRows) {
    const float32x4_t w0 = vld1q_f32(w), w1 = vld1q_f32(w + 4);
    const float32x4_t w2 = vld1q_f32(w + 8), w3 = vld1q_f32(w + 12);
    for (int t = 0; t < T; ++t) {
      const float xv = x[t][k];
      acc[t][0] = vfmaq_n_f32(acc[t][0], w0, xv);
      acc[t][1] = vfmaq_n_f32(acc[t][1], w1, xv);
      acc[t][2] = vfmaq_n_f32(acc[t][2], w2, xv);
      acc[t][3] = vfmaq_n_f32(acc[t][3], w3, xv);
    }
  }
  for (int t = 0; t < T; ++t) {
    float out[16];
    for (int j = 0; j < 4; ++j) vst1q_f32(out + 4 * j, acc[t][j]);
    std::memcpy(y[t], out, sizeof(float) * static_cast<std::size_t>(b.valid));
  }
}

inline void micro_kernel_n(const Problem& p, const GemmBlock& b, std::int64_t t0,
                           std::int64_t n) noexcept {
  switch (n) {
    case 1: micro_kernel<1>(p, b, t0); break;
    case 2: micro_kernel<2>(p, b, t0); break;
    case 3: micro_kernel<3>(p, b, t0); break;
    case 4: micro_kernel<4>(p, b, t0); break;
    case 5: micro_kernel<5>(p, b, t0); break;
    default: micro_kernel<6>(p, b, t0); break;
  }
}

constexpr std::size_t kGemmScratchFloats = 2 * kTileRows * kChunk;

inline void gemm_tile(const Weights& w, const Problem& p, DecodeRowFn* decode, std::int64_t r0,
                      std::int64_t r1, float* scratch) noexcept {
  float* tile = scratch;
  float* panels = scratch + kTileRows * kChunk;
  const std::int64_t rows = r1 - r0;
  const std::int64_t panel_count = (rows + kPanelRows - 1) / kPanelRows;
  float bias[kTileRows] = {};
  if (p.bias != nullptr)
    for (std::int64_t i = 0; i < rows; ++i) bias[i] = p.bias[(r0 + i) * p.bias_stride];
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

inline bool packed_fast(const Weights& w) noexcept {
  return w.format == Format::kPacked && (w.bits == 2 || w.bits == 4 || w.bits == 8) &&
         w.group % 32 == 0 && !(w.signed_codes && w.zero_point_kind != ZeroPoints::kNone);
}

inline DecodeRowFn* row_decoder(const Weights& w) noexcept {
  switch (w.format) {
    case Format::kQ4_0: return &decode_row<Q4_0>;
    case Format::kQ8_0: return &decode_row<Q8_0>;
    case Format::kIQ4_NL: return &decode_row<IQ4_NL>;
    case Format::kQ4_K: return &decode_row<Q4_K>;
    case Format::kQ6_K: return &decode_row<Q6_K>;
    default: break;
  }
  if (packed_fast(w)) {
    const bool s = w.signed_codes;
    switch (w.bits) {
      case 2: return s ? &decode_packed_row<2, true> : &decode_packed_row<2, false>;
      case 4: return s ? &decode_packed_row<4, true> : &decode_packed_row<4, false>;
      default: return s ? &decode_packed_row<8, true> : &decode_packed_row<8, false>;
    }
  }
  return reference::row_decoder(w);
}

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

inline void run(const Weights& w, const Problem& p, Executor& executor) {
  DecodeRowFn* decode = row_decoder(w);
  if (p.tokens >= kGemmMinTokens) {
    executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> scratch(kGemmScratchFloats);
      for (std::int64_t task = begin; task < end; ++task) {
        const std::int64_t r0 = task * kRowsPerTask;
        const std::int64_t r1 = std::min(r0 + kRowsPerTask, w.rows);
        for (std::int64_t r = r0; r < r1; r += kTileRows)
          gemm_tile(w, p, decode, r, std::min(r + kTileRows, r1), scratch.data());
      }
    });
    return;
  }
  using GemvFn = void(const GemvArgs&, std::int64_t, std::int64_t);
  GemvFn* gemv = nullptr;
  switch (w.format) {
    case Format::kQ4_0: gemv = &gemv_ggml<Q4_0>; break;
    case Format::kQ8_0: gemv = &gemv_ggml<Q8_0>; break;
    case Format::kIQ4_NL: gemv = &gemv_ggml<IQ4_NL>; break;
    case Format::kQ4_K: gemv = &gemv_ggml<Q4_K>; break;
    case Format::kQ6_K: gemv = &gemv_ggml<Q6_K>; break;
    default: break;
  }
  GemvArgs args{&w, &p, nullptr, 0, nullptr, decode};
  std::vector<float> sums;
  if (w.format == Format::kQ4_K) {
    sums = block_sums(p, w.cols, 32);
    args.xsums = sums.data();
    args.xsum_count = w.cols / 32;
  }
  if (gemv != nullptr) {
    executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
      gemv(args, begin * kRowsPerTask, std::min(end * kRowsPerTask, w.rows));
    });
    return;
  }
  executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> scratch(static_cast<std::size_t>(kGemvRows * w.cols));
    GemvArgs local = args;
    local.scratch = scratch.data();
    gemv_tile(local, begin * kRowsPerTask, std::min(end * kRowsPerTask, w.rows));
  });
}

}  // namespace neon
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_ARM_KERNELS
