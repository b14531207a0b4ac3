// lowbit/detail/kernels/w8a8/reference.hpp: the W8A8 GEMM's packed layouts, the problem every
// kernel solves, and the scalar reference kernels that define the results bit for bit.
//
// The product (lowbit/gemm_w8a8.hpp has the user's view):
//
//   Y[t, o] = (sx_t · sw_o) · acc[t, o]  (+ bias_o),     acc[t, o] = Σ_k qx[t, k] · qw[o, k]
//
// qw int8 in [-128, 127] (Symmetric codes may use -128), qx int8 in [-127, 127]. acc is exact in
// int32 whenever K <= kMaxK (128 · 127 · 131072 < 2^31), so every path computes the same integer;
// the float epilogue is then one fixed sequence of correctly rounded operations,
//
//   s = sx_t * sw_o;   v = float(acc);   y = bias ? fma(v, s, bias_o) : v * s
//
// (fma, not v * s + b: a compiler may or may not contract a separate multiply and add, which
// would move results by an ulp between paths; an explicit fused operation cannot move), so every
// path's fp32 output is identical to this reference's.
//
// Packed weights (built once by W8A8Weights): rows padded with zeros to a multiple of kBlockRows
// (64), K padded with zeros to a multiple of kKAlign (16), G = Kp / 4 groups of 4 consecutive k.
// Block b (rows 64b .. 64b+63) is G chunks of 256 bytes; chunk g holds, for each of the 64 rows in
// order, that row's 4 codes k = 4g .. 4g+3:
//
//   block b:  chunk g=0                      chunk g=1                  ...  chunk G-1
//            +------+------+-----+-------+  +------+------+-----+-------+
//            | r0   | r1   | ... | r63   |  | r0   | r1   | ... | r63   |
//            |k0..3 |k0..3 |     |k0..3  |  |k4..7 |k4..7 |     |k4..7  |
//            +------+------+-----+-------+  +------+------+-----+-------+
//             4 B    4 B          4 B        (256 B per chunk, blocks back to back)
//
// This is the operand order of every int8 dot instruction we use: one 32-bit lane per row, 4
// bytes of K per lane (x86 vpdpbusd and vpmaddubsw + vpmaddwd, ARM sdot). A 16-row panel (64
// bytes of a chunk) is one zmm, two ymm or four NEON q registers; the 64-row block is what one
// task owns and what a decode kernel streams in a single sequential pass.
//
// Packed activations (per call, in the W8A8Workspace): token t at codes + t·Kp, zero padded; for
// the VNNI paths stored as qx + 128 (qx XOR 0x80, an unsigned byte), see avx_vnni.hpp.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <utility>

#include "lowbit/algo/smoothquant.hpp"
#include "lowbit/cpu.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {
namespace detail {
namespace w8a8 {

constexpr std::int64_t kPanelRows = 16;  // rows per zmm / 2 ymm / 4 q registers
constexpr std::int64_t kBlockRows = 64;  // rows per task and per weight chunk
constexpr std::int64_t kGroupK = 4;      // k per 32-bit lane
constexpr std::int64_t kKAlign = 16;     // K padding: a NEON q register of one token holds 16 k
constexpr std::int64_t kChunkBytes = kBlockRows * kGroupK;
// The largest K whose int32 accumulators cannot overflow: |acc| <= 128 · 127 · K < 2^31, and the
// VNNI correction 128 · Σ_k qw fits int32 (it reaches -2^31 exactly at K = 2^17 with all -128).
constexpr std::int64_t kMaxK = std::int64_t{1} << 17;
constexpr std::int32_t kActMax = 127;  // activation codes in [-127, 127]
static_assert(kChunkBytes == 256, "a chunk is 64 rows x 4 bytes");
static_assert(kBlockRows % kPanelRows == 0, "a block is a whole number of panels");

constexpr std::int64_t round_up(std::int64_t n, std::int64_t m) noexcept { return (n + m - 1) / m * m; }

// Byte offset of code (o, k) in the packed weights of a matrix with `groups` chunks per block.
constexpr std::int64_t packed_offset(std::int64_t o, std::int64_t k, std::int64_t groups) noexcept {
  return ((o / kBlockRows * groups + k / kGroupK) * kBlockRows + o % kBlockRows) * kGroupK +
         k % kGroupK;
}

// A zero-initialised byte buffer aligned to 64 (a cache line, a zmm): packed chunks and token
// rows then never straddle lines. Copyable, unlike a unique_ptr, so W8A8Weights is a value type.
class AlignedBytes {
 public:
  static constexpr std::size_t kAlign = 64;
  AlignedBytes() = default;
  explicit AlignedBytes(std::size_t n) { reset(n); }
  AlignedBytes(const AlignedBytes& other) : AlignedBytes(other.size_) {
    if (size_ != 0) std::memcpy(data_.get(), other.data_.get(), size_);
  }
  AlignedBytes& operator=(const AlignedBytes& other) {
    if (this != &other) {
      AlignedBytes copy(other);
      *this = std::move(copy);
    }
    return *this;
  }
  AlignedBytes(AlignedBytes&& other) noexcept = default;
  AlignedBytes& operator=(AlignedBytes&& other) noexcept = default;

  // Replaces the contents with n zero bytes.
  void reset(std::size_t n) {
    data_.reset(n == 0 ? nullptr
                       : static_cast<std::int8_t*>(::operator new(n, std::align_val_t{kAlign})));
    size_ = n;
    if (n != 0) std::memset(data_.get(), 0, n);
  }
  std::int8_t* data() noexcept { return data_.get(); }
  const std::int8_t* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(std::int8_t* p) const noexcept { ::operator delete(p, std::align_val_t{kAlign}); }
  };
  std::unique_ptr<std::int8_t, Free> data_;
  std::size_t size_ = 0;
};

// Everything a compute kernel reads and writes; plain pointers so that ISA-attributed code sees
// no templates of the standard library.
struct Problem {
  const std::int8_t* w;        // packed weights (layout above)
  const float* w_scale;        // rows_padded scales (zero in padding)
  const float* bias;           // rows_padded values, or null
  const std::int32_t* w_sum;   // rows_padded values of 128 · Σ_k qw[o, k] (VNNI correction)
  std::int64_t rows;           // valid output rows (out_features)
  std::int64_t groups;         // Kp / 4
  const std::int8_t* x;        // tokens × Kp packed activation codes
  const float* x_scale;        // tokens scales
  std::int64_t tokens;
  float* y;                    // Y[t, o] at y[t · y_row_stride + o · y_col_stride]
  std::int64_t y_row_stride, y_col_stride;
};

// What an activation quantizer reads and writes: tokens of x into Kp-byte rows of codes.
struct QuantizeArgs {
  MatrixView<const float> x;
  std::int8_t* codes;
  std::int64_t kp;
  float* scales;
};

// One path: its quantizer and compute kernel, and whether it stores activations offset by +128.
struct Kernel {
  Isa isa;
  bool offset_activations;
  void (*quantize)(const QuantizeArgs& args, std::int64_t token_begin, std::int64_t token_end);
  void (*compute)(const Problem& p, std::int64_t block_begin, std::int64_t block_end);
};
using KernelGetter = const Kernel&();

// ---------------------------------------------------------------------------------------------
// The activation quantizer: SmoothQuant's per-token absmax (algo/smoothquant.hpp), so codes match
// mit-han-lab/smoothquant's quantize_activation_per_token_absmax bit for bit:
//   step = max(max_k |x[t, k]|, 1e-5) / 127,  code = clamp(rint(x / step), -127, 127)
// (a division, rounding half to even). A token with NaN or Inf anywhere has no meaningful step:
// its codes are 0 and its scale NaN, so exactly that token's outputs are NaN.

inline std::int8_t stored_code(std::int32_t code, bool offset) noexcept {
  // +128 as an unsigned byte is the same bits as the signed code with its top bit flipped.
  return static_cast<std::int8_t>(offset ? (code ^ 0x80) : code);
}

// The scalar quantizer of one token, x[0], x[stride], ..., x[(k-1)·stride]; also the fallback of
// the SIMD quantizers for strided rows (same operations, hence the same codes).
inline void quantize_token_scalar(const float* x, std::int64_t k, std::int64_t stride,
                                  std::int8_t* codes, std::int64_t kp, float* scale,
                                  bool offset) noexcept {
  float absmax = 0.0f;
  bool finite = true;
  for (std::int64_t i = 0; i < k; ++i) {
    const float a = std::fabs(x[i * stride]);
    if (!(a <= FLT_MAX)) finite = false;  // NaN or Inf
    absmax = a > absmax ? a : absmax;
  }
  if (!finite) {
    for (std::int64_t i = 0; i < kp; ++i) codes[i] = stored_code(0, offset);
    *scale = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const float step = smoothquant_step(absmax);
  for (std::int64_t i = 0; i < k; ++i)
    codes[i] = stored_code(smoothquant_code(x[i * stride], step), offset);
  for (std::int64_t i = k; i < kp; ++i) codes[i] = stored_code(0, offset);
  *scale = step;
}

inline void quantize_reference(const QuantizeArgs& a, std::int64_t token_begin,
                               std::int64_t token_end) {
  for (std::int64_t t = token_begin; t < token_end; ++t)
    quantize_token_scalar(&a.x(t, 0), a.x.cols(), a.x.col_stride(), a.codes + t * a.kp, a.kp,
                          a.scales + t, false);
}

// ---------------------------------------------------------------------------------------------
// The epilogue, shared so that no path can order it differently.

inline float epilogue(std::int32_t acc, float x_scale, float w_scale, const float* bias,
                      std::int64_t o) noexcept {
  const float s = x_scale * w_scale;
  const float v = static_cast<float>(acc);
  return bias != nullptr ? std::fma(v, s, bias[o]) : v * s;
}

inline float* output_at(const Problem& p, std::int64_t t, std::int64_t o) noexcept {
  return p.y + t * p.y_row_stride + o * p.y_col_stride;
}

// Stores `count` (<= n) values of a register's worth `v` at Y[t, o ..]: one SIMD store when the
// row is contiguous and whole, otherwise element by element.
inline void store_partial(const Problem& p, std::int64_t t, std::int64_t o, const float* v,
                          std::int64_t count) noexcept {
  float* out = output_at(p, t, o);
  for (std::int64_t i = 0; i < count; ++i) out[i * p.y_col_stride] = v[i];
}

// Valid rows of a register of `lanes` rows starting at row o: lanes, fewer at the end, or <= 0.
inline std::int64_t valid_rows(const Problem& p, std::int64_t o, std::int64_t lanes) noexcept {
  const std::int64_t left = p.rows - o;
  return left < lanes ? left : lanes;
}

// The reference compute kernel: one output at a time, reading the packed layout directly.
inline void compute_reference(const Problem& p, std::int64_t block_begin, std::int64_t block_end) {
  for (std::int64_t o = block_begin * kBlockRows; o < block_end * kBlockRows && o < p.rows; ++o) {
    for (std::int64_t t = 0; t < p.tokens; ++t) {
      const std::int8_t* x = p.x + t * p.groups * kGroupK;
      std::int32_t acc = 0;
      for (std::int64_t k = 0; k < p.groups * kGroupK; ++k)
        acc += static_cast<std::int32_t>(x[k]) * p.w[packed_offset(o, k, p.groups)];
      *output_at(p, t, o) = epilogue(acc, p.x_scale[t], p.w_scale[o], p.bias, o);
    }
  }
}

inline const Kernel& reference_kernel() {
  static constexpr Kernel kernel{Isa::kScalar, false, &quantize_reference, &compute_reference};
  return kernel;
}

}  // namespace w8a8
}  // namespace detail
}  // namespace lowbit
