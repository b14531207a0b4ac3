// lowbit/detail/kernels/dequant_gemm/avx512.hpp: the AVX-512 (F/BW/DQ/VL) dequant-GEMV/GEMM, a thin
// variant of dequant_gemm/avx2.hpp with the same drivers on 16-lane registers:
//
// GEMV (N < 4): four rows at a time, one zmm accumulator each, the formats' 16-lane decoders
// (dequant_ggml/avx512.hpp: Q4_0, Q8_0, IQ4_NL, Q4_K, Q6_K; dequant_packed/avx512.hpp: 2-, 4-
// and 8-bit codes). Every other format, and 3-bit or 2-bit-g32 codes, runs the AVX2 GEMV.
//
// GEMM (N >= 4): the AVX2 driver's tiles and panels (decoded by the AVX2 decoders, transposed by
// the AVX2 code: both are compiled into these AVX-512 functions), and a micro-kernel that holds a
// 12-token x 16-row block of Y in 12 zmm registers:
//
//   panel[k][0..15] (1 zmm) --> acc[t] += w * broadcast(x[t][k]),  t = 0..11: 12 FMAs per k
//
// Partial panels (fewer than 16 rows) are loaded and stored with a 16-bit lane mask.
//
// The machine this was written on has no AVX-512: there the path is compiled but never run. The
// dispatch test (tests/unit/test_dequant_gemm.cpp) runs it against the scalar reference on any
// CPU that has AVX-512 and says so when it cannot; a review against the AVX2 kernels is all it
// has had so far.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lowbit/detail/dispatch.hpp"
#include "lowbit/detail/kernels/dequant_gemm/avx2.hpp"
#include "lowbit/detail/kernels/dequant_gemm/problem.hpp"
#include "lowbit/detail/kernels/dequant_ggml/avx512.hpp"
#include "lowbit/detail/kernels/dequant_packed/avx512.hpp"
#include "lowbit/executor.hpp"

#if defined(LOWBIT_HAVE_X86_KERNELS)

namespace lowbit {
namespace detail {
namespace dequant {
namespace avx512 {

constexpr std::int64_t kGemvRows = 4;
constexpr std::int64_t kPanelRows = avx2::kPanelRows;  // 16 = one zmm
constexpr std::int64_t kTileRows = avx2::kTileRows;
constexpr int kTokens = 12;

using avx2::GemvArgs;

LOWBIT_DQ_AVX512 void store_row(const GemvArgs& a, std::int64_t t, std::int64_t r,
                                float v) noexcept {
  const Problem& p = *a.p;
  if (p.bias != nullptr) v += p.bias[r * p.bias_stride];
  p.y[t * p.y_stride + r] = v;
}

// ---- GEMV ---------------------------------------------------------------------------------------

template <class F, int R>
LOWBIT_DQ_AVX512 void gemv_ggml_group(const GemvArgs& a, std::int64_t r,
                                      std::int64_t sums_per_block) noexcept {
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  const std::int64_t blocks = w.cols / F::kElems;
  const std::int64_t batched = blocks / F::kBatch * F::kBatch;
  const std::uint8_t* row[R];
  for (int i = 0; i < R; ++i) row[i] = w.data + static_cast<std::size_t>(r + i) * w.row_bytes;
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = a.x + t * a.x_stride;
    // No pointer arithmetic on a null xsums (formats without offsets have none).
    const float* xs = sums_per_block == 0 ? nullptr : a.xsums + t * a.xsum_count;
    __m512 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    std::int64_t b = 0;
    for (; b < batched; b += F::kBatch) {
      const std::size_t off = static_cast<std::size_t>(b) * F::kBytes;
      const float* xsb = sums_per_block == 0 ? nullptr : xs + b * sums_per_block;
      for (int i = 0; i < R; ++i) {
        avx2::prefetch_ahead(row[i] + off, F::kBytes * F::kBatch);
        F::dot(row[i] + off, x + b * F::kElems, xsb, acc[i]);
      }
    }
    if constexpr (F::kBatch > 1) {
      for (; b < blocks; ++b) {
        const std::size_t off = static_cast<std::size_t>(b) * F::kBytes;
        for (int i = 0; i < R; ++i) dot_one<F>(row[i] + off, x + b * F::kElems, acc[i]);
      }
    }
    for (int i = 0; i < R; ++i) avx512::store_row(a, t, r + i, avx512::hsum(acc[i]));
  }
}

// sums_per_block: x sums per block the format reads (Q4_K: 8 per super-block, Q6_K: 16).
template <class F, std::int64_t SumsPerBlock>
LOWBIT_TARGET_AVX512 void gemv_ggml(const GemvArgs& a, std::int64_t r0, std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows)
    avx512::gemv_ggml_group<F, kGemvRows>(a, r, SumsPerBlock);
  for (; r < r1; ++r) avx512::gemv_ggml_group<F, 1>(a, r, SumsPerBlock);
}

template <int Bits, bool Signed, int R>
LOWBIT_DQ_AVX512 void gemv_packed_group(const GemvArgs& a, std::int64_t r) noexcept {
  using Unit = PackedGemv<Bits, Signed>;
  const Weights& w = *a.w;
  const Problem& p = *a.p;
  avx2::PackedRow row[R];
  for (int i = 0; i < R; ++i) row[i] = avx2::packed_row(w, r + i);
  for (std::int64_t t = 0; t < p.tokens; ++t) {
    const float* x = a.x + t * a.x_stride;
    __m512 acc[R];
    for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
    for (std::int64_t g = 0, k0 = 0; k0 < w.cols; ++g, k0 += w.group) {
      __m512 table[R], part[R];
      for (int i = 0; i < R; ++i) {
        table[i] = Unit::table(Signed ? 0 : packed_zero_point(w, row[i].param_base + g));
        part[i] = _mm512_setzero_ps();
      }
      for (std::int64_t k = k0; k < k0 + w.group; k += Unit::kUnit) {
        for (int i = 0; i < R; ++i) {
          const std::uint8_t* c = row[i].codes + avx2::packed_byte(k, Bits);
          avx2::prefetch_ahead(c, Unit::kUnitBytes);
          Unit::partial(c, x + k, table[i], part[i]);
        }
      }
      for (int i = 0; i < R; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(packed_scale(w, row[i].param_base + g)), part[i],
                                 acc[i]);
    }
    for (int i = 0; i < R; ++i) avx512::store_row(a, t, r + i, avx512::hsum(acc[i]));
  }
}

template <int Bits, bool Signed>
LOWBIT_TARGET_AVX512 void gemv_packed(const GemvArgs& a, std::int64_t r0,
                                      std::int64_t r1) noexcept {
  std::int64_t r = r0;
  for (; r + kGemvRows <= r1; r += kGemvRows)
    avx512::gemv_packed_group<Bits, Signed, kGemvRows>(a, r);
  for (; r < r1; ++r) avx512::gemv_packed_group<Bits, Signed, 1>(a, r);
}

// ---- GEMM ---------------------------------------------------------------------------------------

// Y[t0 .. t0+T)[row .. row+16) (+)= X[t0 .. t0+T)[k0 .. k0+kc) * panel (avx2::GemmBlock).
template <int T>
LOWBIT_DQ_AVX512 void micro_kernel(const Problem& p, const avx2::GemmBlock& b,
                                   std::int64_t t0) noexcept {
  const __mmask16 m = static_cast<__mmask16>((1u << b.valid) - 1u);
  const float* x[T];
  float* y[T];
  __m512 acc[T];
  for (int t = 0; t < T; ++t) {
    x[t] = p.x + (t0 + t) * p.x_stride + b.k0;
    y[t] = p.y + (t0 + t) * p.y_stride + b.row;
    acc[t] = b.first ? _mm512_loadu_ps(b.bias16)
                     : _mm512_maskz_loadu_ps(m, y[t]);  // AVX-512 masks are cheap
  }
  const float* w = b.panel;
  for (std::int64_t k = 0; k < b.kc; ++k, w += kPanelRows) {
    const __m512 wv = _mm512_load_ps(w);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[t][k]), acc[t]);
  }
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[t], m, acc[t]);
}

LOWBIT_DQ_AVX512 void micro_kernel_n(const Problem& p, const avx2::GemmBlock& b, std::int64_t t0,
                                     std::int64_t n) noexcept {
  switch (n) {
    case 1: avx512::micro_kernel<1>(p, b, t0); break;
    case 2: avx512::micro_kernel<2>(p, b, t0); break;
    case 3: avx512::micro_kernel<3>(p, b, t0); break;
    case 4: avx512::micro_kernel<4>(p, b, t0); break;
    case 5: avx512::micro_kernel<5>(p, b, t0); break;
    case 6: avx512::micro_kernel<6>(p, b, t0); break;
    case 7: avx512::micro_kernel<7>(p, b, t0); break;
    case 8: avx512::micro_kernel<8>(p, b, t0); break;
    case 9: avx512::micro_kernel<9>(p, b, t0); break;
    case 10: avx512::micro_kernel<10>(p, b, t0); break;
    case 11: avx512::micro_kernel<11>(p, b, t0); break;
    default: avx512::micro_kernel<12>(p, b, t0); break;
  }
}

// As avx2::gemm_tile, with the zmm micro-kernel (panels: 64-byte aligned for the aligned loads).
LOWBIT_TARGET_AVX512 inline void gemm_tile(const Weights& w, const Problem& p, DecodeRowFn* decode,
                                           std::int64_t r0, std::int64_t r1,
                                           float* scratch) noexcept {
  float* tile = scratch;
  float* panels = reinterpret_cast<float*>(
      (reinterpret_cast<std::uintptr_t>(scratch + kTileRows * kChunk) + 63) & ~std::uintptr_t{63});
  const std::int64_t rows = r1 - r0;
  const std::int64_t panel_count = (rows + kPanelRows - 1) / kPanelRows;
  alignas(64) float bias[kTileRows] = {};
  if (p.bias != nullptr)
    for (std::int64_t i = 0; i < rows; ++i) bias[i] = p.bias[(r0 + i) * p.bias_stride];
  std::memset(tile, 0, sizeof(float) * static_cast<std::size_t>(kTileRows * kChunk));
  for (std::int64_t k0 = 0; k0 < w.cols; k0 += kChunk) {
    const std::int64_t kc = std::min(kChunk, w.cols - k0);
    for (std::int64_t i = 0; i < rows; ++i) decode(w, r0 + i, k0, kc, tile + i * kChunk);
    for (std::int64_t q = 0; q < panel_count; ++q)
      avx2::make_panel(tile + q * kPanelRows * kChunk, kc, panels + q * kPanelRows * kChunk);
    for (std::int64_t t0 = 0; t0 < p.tokens; t0 += kTokens) {
      const std::int64_t n = std::min<std::int64_t>(kTokens, p.tokens - t0);
      for (std::int64_t q = 0; q < panel_count; ++q) {
        const avx2::GemmBlock b{panels + q * kPanelRows * kChunk,
                                kc,
                                k0,
                                r0 + q * kPanelRows,
                                std::min(kPanelRows, rows - q * kPanelRows),
                                k0 == 0,
                                bias + q * kPanelRows};
        avx512::micro_kernel_n(p, b, t0, n);
      }
    }
  }
}

// ---- Entry --------------------------------------------------------------------------------------

// The 16-lane packed GEMV for 2-, 4- and 8-bit codes.
inline avx2::GemvFn* packed_gemv(const Weights& w) noexcept {
  const bool s = w.signed_codes;
  switch (w.bits) {
    case 2: return s ? &gemv_packed<2, true> : &gemv_packed<2, false>;
    case 4: return s ? &gemv_packed<4, true> : &gemv_packed<4, false>;
    case 8: return s ? &gemv_packed<8, true> : &gemv_packed<8, false>;
    default: return nullptr;
  }
}

inline void run(const Weights& w, const Problem& p, Executor& executor) {
  if (p.tokens >= kGemmMinTokens) {
    DecodeRowFn* decode = avx2::row_decoder(w);
    executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> scratch(avx2::kGemmScratchFloats + 16);
      for (std::int64_t task = begin; task < end; ++task) {
        const std::int64_t r0 = task * kRowsPerTask;
        const std::int64_t r1 = std::min(r0 + kRowsPerTask, w.rows);
        for (std::int64_t r = r0; r < r1; r += kTileRows)
          avx512::gemm_tile(w, p, decode, r, std::min(r + kTileRows, r1), scratch.data());
      }
    });
    return;
  }
  GemvArgs args{&w, &p, p.x, p.x_stride, nullptr, 0, nullptr, nullptr};
  avx2::GemvFn* gemv = nullptr;
  std::int64_t sum_elems = 0;
  std::vector<float> permuted;
  switch (w.format) {
    case Format::kQ4_0: gemv = &gemv_ggml<Q4_0, 0>; break;
    case Format::kQ8_0: gemv = &gemv_ggml<Q8_0, 0>; break;
    case Format::kIQ4_NL: gemv = &gemv_ggml<IQ4_NL, 0>; break;
    case Format::kQ4_K:
      gemv = &gemv_ggml<Q4_K, 8>;
      sum_elems = 32;
      break;
    case Format::kQ6_K:
      gemv = &gemv_ggml<Q6_K, 16>;
      sum_elems = 16;
      break;
    default:
      if (avx2::packed_fast(w) && w.bits != 3 && w.group % packed_unit(w.bits) == 0) {
        gemv = packed_gemv(w);
        if (w.bits != 8) {
          permuted.resize(static_cast<std::size_t>(p.tokens * w.cols));
          permute_x(w.bits, p, w.cols, permuted.data());
          args.x = permuted.data();
          args.x_stride = w.cols;
        }
      }
      break;
  }
  if (gemv == nullptr) {  // formats without a 16-lane GEMV: the AVX2 one
    avx2::run(w, p, executor);
    return;
  }
  std::vector<float> sums;
  if (sum_elems != 0) {
    sums = avx2::block_sums(p, w.cols, sum_elems);
    args.xsums = sums.data();
    args.xsum_count = w.cols / sum_elems;
  }
  executor.parallel_for(task_count(w.rows), [&](std::int64_t begin, std::int64_t end) {
    gemv(args, begin * kRowsPerTask, std::min(end * kRowsPerTask, w.rows));
  });
}

}  // namespace avx512
}  // namespace dequant
}  // namespace detail
}  // namespace lowbit

#endif  // LOWBIT_HAVE_X86_KERNELS
