// lowbit/algo/gptq.hpp: GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate
// Post-Training Quantization for Generative Pre-trained Transformers", Algorithm 1), following the
// conventions of the reference implementation IST-DASLab/gptq (`GPTQ.fasterquant`, `quant.py`) so
// that its codes, scales and zero points can be reproduced; plus the round-to-nearest (RTN)
// baseline with the same quantizer.
//
// The problem. For one linear layer with weight W (out × in) and calibration inputs X, find
// quantized Q minimising ‖W·X − Q·X‖²_F. Every output row shares the Hessian H = (2/n)·X·Xᵀ
// (algo/hessian.hpp). GPTQ quantizes the columns one at a time, in a fixed order, and after each
// column j spreads its rounding error over the columns not yet quantized, the Optimal Brain
// Surgeon update restricted to them:
//
//   err = (w_j − q_j) / [H⁻¹]_jj,          W[:, j+1:] −= err ⊗ [H⁻¹]_{j, j+1:}
//
// where H⁻¹ is the inverse of the Hessian of the columns still free. Algorithm 1's trick: all of
// those inverses are rows of one matrix, the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), so each
// step reads U[j, j:] and nothing is re-inverted. The column's loss is (w − q)²/(2·[U]_jj²).
//
// Lazy batch updates (the paper's section "Lazy Batch-Updates"). The rank-1 update above touches
// the whole trailing matrix per column and is memory bound. Blocks of B columns (block_size) are
// processed on a copy W1: inside the block the rank-1 updates stay within it; the block's scaled
// errors Err1 (out × B) then update the rest at once with one GEMM,
//
//   W[:, i2:] −= Err1 · U[i1:i2, i2:],
//
// which gives the same result up to float summation order. gptq_quantize_unblocked is the plain
// column loop, kept for the benchmark and as a check.
//
// U without forming H⁻¹. The reference computes chol(H), then H⁻¹, then chol(H⁻¹, upper). We use
// the identity: if J reverses the index order and J·H·J = M·Mᵀ (lower Cholesky), then
// H = (J·M·J)(J·M·J)ᵀ with J·M·J upper triangular, so H⁻¹ = UᵀU with U = (J·M·J)⁻¹ = J·M⁻¹·J,
// upper triangular with a positive diagonal, hence the (unique) Cholesky factor. One Cholesky and
// one triangular inversion (both n³/3 flops) replace two Cholesky factorisations and an inversion;
// all in float32, as the reference.
//
// The quantizer (the reference's Quantizer with perchannel=True, weight=True, mse=False), per row
// of a group of columns, maxq = 2^bits − 1:
//
//   xmin = min(min(x), 0),  xmax = max(max(x), 0)
//   symmetric: xmax = max(|xmin|, xmax); xmin = −xmax only where xmin < 0 (a row with no negative
//              value keeps xmin = 0: scale = xmax/maxq and half of its codes saturate, a quirk we
//              keep because the reference's codes depend on it)
//   xmin = −1, xmax = +1 when both are 0
//   scale = (xmax − xmin) / maxq
//   zero  = (maxq + 1)/2 if symmetric, else rint(−xmin / scale)   (float32 division, no clamp)
//   code  = clamp(rint(w / scale) + zero, 0, maxq)                 (division, not a reciprocal)
//   Q     = scale · (code − zero)
//
// rint is round-half-to-even (torch.round). Codes are unsigned in [0, maxq] for both symmetries.
//
// The reference's conventions, all kept (IST-DASLab/gptq commit 2d65066):
//  1. Per-channel parameters (group_size = −1) come from the full, unmodified W.
//  2. Dead inputs, diag(H) == 0: H_jj = 1 and W[:, j] = 0 (so such a column's codes equal its zero
//     point and its Q is 0), after step 1.
//  3. act_order: columns are processed in order of decreasing diag(H) (after step 2); ties keep
//     the lower index first (torch's unstable argsort leaves them unspecified).
//  4. Damping: percdamp · mean(diag(H)) is added to the diagonal.
//  5. Groups, static_groups = false: at every processing position j with j % group_size == 0 the
//     parameters are found on W[:, j : j+group_size] *as it stands at the start of the current
//     block*: updates made earlier inside the block live only in the copy W1. With group_size <
//     block_size the second group of a block is therefore found on stale weights; the reference
//     does so and we reproduce it. With act_order the groups are contiguous in processing order
//     (g_idx[perm[j]] = j / group_size) and scales are stored in that order.
//  6. Groups, static_groups = true: parameters of the contiguous groups in original column order
//     (g_idx[c] = c / group_size), found before any update on W after step 2.
//  7. Codes, g_idx and the dequantized weight are returned in the original column order.
//
// Numerical failure. If the Cholesky factorisation fails (Eigen's LLT reports NumericalIssue) or
// produces a non-finite U, or the error propagation overflows, the relative damping is multiplied
// by 10 (a zero damping becomes kGptqFirstRetryPercdamp) and the whole run is repeated, at most
// max_damping_retries times; then Errc::kNumericalIssue. The result reports the damping used.
// No NaN ever reaches the output.
//
// Memory: the working copy of W (out × in; a second, transient one while the parameters that do
// not depend on the updates are found), one in × in matrix for the factor, the block buffers
// (out × block_size, twice) and the outputs.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "lowbit/detail/validate.hpp"
#include "lowbit/executor.hpp"
#include "lowbit/policy/rounding.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace lowbit {

// ---------------------------------------------------------------------------------------------
// The reference quantizer.

struct GptqQuantParams {
  float scale = 1.0f;
  float zero = 0.0f;  // an integer held in a float, as the reference holds it
};

namespace detail {
// find_params for one row of a group whose smallest and largest values are lo and hi; maxq = 2^bits
// − 1.
inline GptqQuantParams gptq_params_from_range(float lo, float hi, float maxq,
                                              bool symmetric) noexcept {
  float xmin = std::min(lo, 0.0f);
  float xmax = std::max(hi, 0.0f);
  if (symmetric) {
    xmax = std::max(std::fabs(xmin), xmax);
    if (xmin < 0.0f) xmin = -xmax;
  }
  if (xmin == 0.0f && xmax == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  GptqQuantParams p;
  p.scale = (xmax - xmin) / maxq;
  p.zero = symmetric ? (maxq + 1.0f) / 2.0f : RoundHalfToEven::round(-xmin / p.scale);
  return p;
}
}  // namespace detail

// The code of w: clamp(rint(w / scale) + zero, 0, maxq). A NaN level maps to 0 so that the
// conversion is always defined; GPTQ never feeds one (it checks its inputs and its updates).
inline float gptq_level(float w, GptqQuantParams p, float maxq) noexcept {
  float q = RoundHalfToEven::round(w / p.scale) + p.zero;
  if (!(q >= 0.0f)) q = 0.0f;
  if (q > maxq) q = maxq;
  return q;
}

// The dequantized value of a level: scale · (q − zero).
inline float gptq_dequantize(float level, GptqQuantParams p) noexcept {
  return p.scale * (level - p.zero);
}

// Parameters the rest of lowbit can use: a positive, normal, finite scale. Subnormal ranges (every
// |w| below ~1e-38) or ranges beyond float32 (|w| near 3e38) fail this.
inline bool gptq_params_usable(GptqQuantParams p) noexcept {
  return p.scale >= FLT_MIN && std::isfinite(p.scale) && std::isfinite(p.zero);
}

// The reference's find_params for one row of a group whose smallest and largest values are lo and
// hi. Errors: bits outside 1..8 (kInvalidArgument), lo or hi NaN/Inf (kNonFinite), a range float32
// cannot quantize (kOutOfRange).
inline Result<GptqQuantParams> gptq_find_params(float lo, float hi, int bits,
                                                bool symmetric) noexcept {
  if (bits < 1 || bits > 8) return Status(Errc::kInvalidArgument, "bits must be in 1..8");
  if (!std::isfinite(lo) || !std::isfinite(hi))
    return Status(Errc::kNonFinite, "range is NaN or Inf");
  const GptqQuantParams p =
      detail::gptq_params_from_range(lo, hi, static_cast<float>((1 << bits) - 1), symmetric);
  if (!gptq_params_usable(p))
    return Status(Errc::kOutOfRange, "range is subnormal or overflows float32");
  return p;
}

// ---------------------------------------------------------------------------------------------
// Options and results.

struct GptqOptions {
  int bits = 4;  // 1..8; codes in [0, 2^bits − 1]
  bool symmetric = false;
  std::int64_t group_size = -1;   // −1: one group per row (per channel); else divides in
  std::int64_t block_size = 128;  // lazy-batch width B; any value ≥ 1
  float percdamp = 0.01f;         // damping relative to mean(diag(H)), ≥ 0
  bool act_order = false;         // process columns by decreasing diag(H)
  bool static_groups = false;     // group parameters from W before any update
  int max_damping_retries = 4;    // 0..32; each retry multiplies the damping by 10
  bool keep_updated = false;      // also return GptqResult::updated
  // Runs the column sweep on slices of rows in parallel (null: the calling thread only). The
  // result is the same for any executor.
  Executor* executor = nullptr;
};

// The relative damping tried first when a zero percdamp fails.
inline constexpr float kGptqFirstRetryPercdamp = 1e-4f;

// Quantized weights in the reference's layout. All matrices are row-major.
struct GptqResult {
  std::int64_t rows = 0;            // out features
  std::int64_t cols = 0;            // in features
  std::int64_t group_size = 0;      // columns per group (cols when per channel)
  std::int64_t groups = 0;          // cols / group_size
  std::vector<std::uint8_t> codes;  // (rows × cols), original column order
  std::vector<float> scales;        // (rows × groups): group g's scale of row r at r·groups + g
  std::vector<std::int32_t> zeros;  // (rows × groups) zero points
  std::vector<std::int64_t> g_idx;  // (cols): the group of each original column
  std::vector<std::int64_t> perm;   // (cols): the original column processed j-th
  std::vector<float> dequantized;   // (rows × cols): Q = scale·(code − zero), original order
  // With options.keep_updated, (rows × cols) in original order: each weight as the sweep found it
  // when its column was quantized, i.e. W after the error updates of every column before it, so
  // that code = clamp(rint(updated / scale) + zero). Empty otherwise. Unlike the dequantized Q,
  // these values sit anywhere inside their rounding intervals: QAT started from GPTQ's solution
  // uses them as latent weights (a latent weight on its grid point needs half a step of training
  // before its code can change).
  std::vector<float> updated;
  double loss = 0.0;                // Σ (w − q)² / (2·U_jj²), the reference's sum(Losses)
  float percdamp = 0.0f;            // relative damping that succeeded
  float damp = 0.0f;                // the absolute value added to diag(H)
  int damping_retries = 0;          // how many times the damping was raised
};

// Round-to-nearest with the same quantizer, parameters from W on contiguous column groups.
struct RtnResult {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t group_size = 0;
  std::int64_t groups = 0;
  std::vector<std::uint8_t> codes;  // (rows × cols)
  std::vector<float> scales;        // (rows × groups)
  std::vector<std::int32_t> zeros;  // (rows × groups)
  std::vector<float> dequantized;   // (rows × cols)
};

namespace detail {

inline Status check_gptq_quantizer(int bits, std::int64_t group_size, std::int64_t cols) noexcept {
  if (bits < 1 || bits > 8) return {Errc::kInvalidArgument, "bits must be in 1..8"};
  if (group_size != -1 && group_size < 1)
    return {Errc::kInvalidArgument, "group_size must be -1 (per channel) or positive"};
  if (group_size > 0 && cols % group_size != 0)
    return {Errc::kIndivisible, "group_size does not divide the number of input features"};
  return {};
}

// Per-row parameters of columns [first, first + count) of a column-major matrix. Returns false if
// some row's parameters are unusable.
inline bool gptq_group_params(const Eigen::MatrixXf& w, std::int64_t first, std::int64_t count,
                              float maxq, bool symmetric, GptqQuantParams* out) {
  const Eigen::VectorXf lo = w.middleCols(first, count).rowwise().minCoeff();
  const Eigen::VectorXf hi = w.middleCols(first, count).rowwise().maxCoeff();
  bool usable = true;
  for (std::int64_t r = 0; r < w.rows(); ++r) {
    out[r] = gptq_params_from_range(lo(r), hi(r), maxq, symmetric);
    usable = usable && gptq_params_usable(out[r]);
  }
  return usable;
}

// In place, l (lower triangular, only its lower triangle is read or written) becomes l⁻¹.
// Blocked recursion, n³/3 flops: for l = [A 0; B C], l⁻¹ = [A⁻¹ 0; −C⁻¹·B·A⁻¹ C⁻¹].
inline void invert_lower_triangular(Eigen::Ref<Eigen::MatrixXf> l) {
  const Eigen::Index n = l.rows();
  if (n <= 48) {
    Eigen::MatrixXf inv = Eigen::MatrixXf::Identity(n, n);
    l.triangularView<Eigen::Lower>().solveInPlace(inv);
    l.triangularView<Eigen::Lower>() = inv;
    return;
  }
  const Eigen::Index h = n / 2;
  invert_lower_triangular(l.topLeftCorner(h, h));
  invert_lower_triangular(l.bottomRightCorner(n - h, n - h));
  Eigen::MatrixXf t =
      l.bottomLeftCorner(n - h, h) * l.topLeftCorner(h, h).triangularView<Eigen::Lower>();
  t = -t;
  l.bottomLeftCorner(n - h, h).noalias() =
      l.bottomRightCorner(n - h, n - h).triangularView<Eigen::Lower>() * t;
}

// Everything fixed before the damping is chosen: dead columns, order, per-channel and static group
// parameters, the permuted Hessian's mean diagonal.
struct GptqSetup {
  std::int64_t rows = 0, cols = 0, group_size = 0, groups = 0;
  float maxq = 0.0f;
  std::vector<std::int64_t> perm;      // processing position -> original column
  std::vector<char> dead;              // per original column
  std::vector<GptqQuantParams> fixed;  // (groups × rows): per-channel or static parameters
  float mean_diag = 0.0f;
};

// Builds, for relative damping `percdamp`, the upper factor U (Uᵀ·U = (H + damp·I)⁻¹) of the
// permuted Hessian into u (cols × cols, column-major; only its upper triangle is meaningful).
inline bool gptq_inverse_factor(MatrixView<const float> h, const GptqSetup& s, float damp,
                                Eigen::MatrixXf& u) {
  const std::int64_t n = s.cols;
  u.setZero(n, n);
  // k = J·P·H·Pᵀ·J, lower triangle. k(a, b) with a >= b is the permuted H at (n−1−a, n−1−b), an
  // upper-triangle entry; it is read from the mirror position, so that exactly the lower triangle
  // of the permuted H is used, the entries the reference's Cholesky reads.
  for (std::int64_t b = 0; b < n; ++b) {
    const std::int64_t cb = s.perm[static_cast<std::size_t>(n - 1 - b)];
    for (std::int64_t a = b; a < n; ++a) {
      const std::int64_t ca = s.perm[static_cast<std::size_t>(n - 1 - a)];
      u(a, b) = h(cb, ca);
    }
    if (s.dead[static_cast<std::size_t>(cb)]) u(b, b) = 1.0f;
    u(b, b) += damp;
  }
  Eigen::LLT<Eigen::Ref<Eigen::MatrixXf>, Eigen::Lower> llt(u);
  if (llt.info() != Eigen::Success) return false;
  invert_lower_triangular(u);
  u.reverseInPlace();  // J·M⁻¹·J: now upper triangular
  for (std::int64_t j = 0; j < n; ++j) {
    if (!(u(j, j) > 0.0f) || !std::isfinite(u(j, j))) return false;
    for (std::int64_t i = 0; i < j; ++i)
      if (!std::isfinite(u(i, j))) return false;
  }
  return true;
}

// Quantizes one column w (rows values) with the parameters p of each row: writes the levels and the
// scaled errors (w − Q)/d, adds the column's loss. False if some w is not finite (a diverged
// update).
inline bool gptq_quantize_column(const float* w, const GptqQuantParams* p, float maxq, float d,
                                 std::int64_t rows, float* level, float* err, double* loss) {
  double sum = 0.0;
  const float d2 = d * d;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!std::isfinite(w[r])) return false;
    const float q = gptq_level(w[r], p[r], maxq);
    level[r] = q;
    const float diff = w[r] - gptq_dequantize(q, p[r]);
    sum += static_cast<double>((diff * diff) / d2);
    err[r] = diff / d;
  }
  *loss += sum / 2.0;
  return true;
}

// Rows per parallel task: enough that the block GEMM inside a slice stays efficient.
inline constexpr std::int64_t kGptqRowsPerTask = 64;

// ---------------------------------------------------------------------------------------------
// GPTQ's machinery with the quantizer left open (also used by algo/gptq_ggml.hpp).

// H must be a valid, finite n × n view.
inline Status gptq_check_hessian(MatrixView<const float> h, std::int64_t n) noexcept {
  LOWBIT_TRY(h.validate());
  if (h.rows() != n || h.cols() != n)
    return {Errc::kShapeMismatch, "Hessian must be in x in for W of shape out x in"};
  return check_data(h);
}

inline Status gptq_check_sweep_options(std::int64_t block_size, float percdamp,
                                       int max_damping_retries) noexcept {
  if (block_size < 1) return {Errc::kInvalidArgument, "block_size must be positive"};
  if (!(percdamp >= 0.0f) || !std::isfinite(percdamp))
    return {Errc::kInvalidArgument, "percdamp must be a finite number >= 0"};
  if (max_damping_retries < 0 || max_damping_retries > 32)
    return {Errc::kInvalidArgument, "max_damping_retries must be in 0..32"};
  return {};
}

// Dead columns (diag 0) and the mean diagonal (dead columns counting 1) of a checked H; the
// processing order is left to the caller.
inline Status gptq_hessian_setup(MatrixView<const float> h, std::int64_t rows, GptqSetup* s) {
  const std::int64_t n = h.rows();
  s->rows = rows;
  s->cols = n;
  s->dead.assign(static_cast<std::size_t>(n), 0);
  double diag_sum = 0.0;
  for (std::int64_t c = 0; c < n; ++c) {
    const float d = h(c, c);
    if (d < 0.0f)
      return {Errc::kInvalidArgument, "Hessian has a negative diagonal entry", c * n + c};
    s->dead[static_cast<std::size_t>(c)] = d == 0.0f;
    diag_sum += d == 0.0f ? 1.0 : static_cast<double>(d);
  }
  s->mean_diag = static_cast<float>(diag_sum / static_cast<double>(n));
  return {};
}

struct GptqDamping {
  float percdamp = 0.0f;
  float damp = 0.0f;
  int retries = 0;
};

// Factors the damped Hessian and runs attempt(u) (true on success), raising the relative damping
// tenfold (a zero one to kGptqFirstRetryPercdamp) after a failed factorisation or attempt.
template <class Attempt>
Result<GptqDamping> gptq_with_damping(MatrixView<const float> h, const GptqSetup& s,
                                      float percdamp, int max_retries, Attempt&& attempt) {
  Eigen::MatrixXf u;
  for (int retries = 0;; ++retries) {
    const float damp = percdamp * s.mean_diag;
    if (std::isfinite(damp) && gptq_inverse_factor(h, s, damp, u) && attempt(u))
      return GptqDamping{percdamp, damp, retries};
    if (retries >= max_retries)
      return Status(Errc::kNumericalIssue,
                    "GPTQ: Cholesky factorisation failed at every damping tried");
    percdamp = percdamp > 0.0f ? percdamp * 10.0f : kGptqFirstRetryPercdamp;
  }
}

// Row slices for the executor: at most one per thread, each a whole number of kGptqRowsPerTask
// rows apart from the last, so the Eigen products inside a slice stay large.
inline std::int64_t gptq_slice_count(std::int64_t rows, const Executor& executor) noexcept {
  const std::int64_t row_blocks = (rows + kGptqRowsPerTask - 1) / kGptqRowsPerTask;
  return std::max<std::int64_t>(
      1, std::min<std::int64_t>(std::max(executor.concurrency(), 1), row_blocks));
}

// Runs slice(t, first_row, row_count) -> bool for t = 0 … slices − 1; true if all succeeded.
template <class Slice>
bool gptq_for_row_slices(std::int64_t rows, std::int64_t slices, Executor& executor,
                         Slice&& slice) {
  const std::int64_t row_blocks = (rows + kGptqRowsPerTask - 1) / kGptqRowsPerTask;
  std::vector<char> ok(static_cast<std::size_t>(slices), 0);
  executor.parallel_for(slices, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t t = first; t < last; ++t) {
      const std::int64_t r0 = row_blocks * t / slices * kGptqRowsPerTask;
      const std::int64_t r1 = std::min(rows, row_blocks * (t + 1) / slices * kGptqRowsPerTask);
      ok[static_cast<std::size_t>(t)] = slice(t, r0, r1 - r0);
    }
  });
  return std::all_of(ok.begin(), ok.end(), [](char c) { return c != 0; });
}

// The lazy-batch column sweep over the working weights w (rows × n, processing order) with the
// inverse factor u. column(j, w1, i, err) quantizes column j, held in column i of the batch
// buffer w1 (whose columns i … hold the weights updated by every column before j), and writes
// the rows' scaled errors (w − q)/U_jj to err; false aborts the sweep.
template <class Column>
bool gptq_lazy_sweep(Eigen::MatrixXf& w, const Eigen::MatrixXf& u, std::int64_t batch,
                     Column&& column) {
  const std::int64_t n = w.cols();
  batch = std::min(batch, n);
  Eigen::MatrixXf w1(w.rows(), batch), err1(w.rows(), batch);
  for (std::int64_t i1 = 0; i1 < n; i1 += batch) {
    const std::int64_t count = std::min(batch, n - i1);
    w1.leftCols(count) = w.middleCols(i1, count);
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t j = i1 + i;
      if (!column(j, w1, i, &err1(0, i))) return false;
      for (std::int64_t k = i + 1; k < count; ++k) w1.col(k) -= u(j, i1 + k) * err1.col(i);
    }
    const std::int64_t rest = n - i1 - count;
    if (rest > 0)
      w.rightCols(rest).noalias() -= err1.leftCols(count) * u.block(i1, i1 + count, count, rest);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The reference quantizer's sweep.

// One attempt at a given damping on the rows [r0, r0 + count) of W. Rows are independent once U
// is known (every update is row-wise: W[r, :] depends only on W[r, :] and U), so slices of rows
// run in parallel with identical results. `levels` gets (rows × cols) column-major levels in
// processing order, `params` the (groups × rows) parameters; only this slice's entries are
// written. False on a numerical failure.
inline bool gptq_run_rows(MatrixView<const float> w_in, const Eigen::MatrixXf& u,
                          const GptqSetup& s, const GptqOptions& opt, bool lazy, std::int64_t r0,
                          std::int64_t count_rows, Eigen::MatrixXf& levels,
                          Eigen::MatrixXf* updated, std::vector<GptqQuantParams>& params,
                          double* loss) {
  const std::int64_t rows = count_rows, n = s.cols;
  const bool dynamic_groups = opt.group_size > 0 && !opt.static_groups;
  // Working W in processing order, dead columns zeroed.
  Eigen::MatrixXf w(rows, n);
  for (std::int64_t j = 0; j < n; ++j) {
    const std::int64_t c = s.perm[static_cast<std::size_t>(j)];
    const bool dead = s.dead[static_cast<std::size_t>(c)] != 0;
    for (std::int64_t r = 0; r < rows; ++r) w(r, j) = dead ? 0.0f : w_in(r0 + r, c);
  }
  *loss = 0.0;

  // The parameters of processing position j (for this slice's first row); dynamic ones are found
  // on w's columns as they are now.
  const auto params_for = [&](std::int64_t j) -> const GptqQuantParams* {
    std::int64_t g = 0;
    if (opt.group_size > 0)
      g = dynamic_groups ? j / s.group_size : s.perm[static_cast<std::size_t>(j)] / s.group_size;
    GptqQuantParams* p = &params[static_cast<std::size_t>(g * s.rows + r0)];
    if (dynamic_groups && j % s.group_size == 0 &&
        !gptq_group_params(w, j, s.group_size, s.maxq, opt.symmetric, p))
      return nullptr;
    return p;
  };

  // Without lazy batches every column updates W at once: a batch of one column.
  const auto column = [&](std::int64_t j, const Eigen::MatrixXf& w1, std::int64_t i, float* err) {
    const GptqQuantParams* p = params_for(j);  // reads w, not w1: stale inside a batch
    if (updated != nullptr) updated->col(j).segment(r0, rows) = w1.col(i);
    return p != nullptr &&
           gptq_quantize_column(&w1(0, i), p, s.maxq, u(j, j), rows, &levels(r0, j), err, loss);
  };
  return gptq_lazy_sweep(w, u, lazy ? opt.block_size : 1, column) && std::isfinite(*loss);
}

// All rows, split into slices over the executor. The loss is summed slice by slice in slice
// order, so the result does not depend on which thread ran which slice.
inline bool gptq_run(MatrixView<const float> w_in, const Eigen::MatrixXf& u, const GptqSetup& s,
                     const GptqOptions& opt, bool lazy, Executor& executor,
                     Eigen::MatrixXf& levels, Eigen::MatrixXf* updated,
                     std::vector<GptqQuantParams>& params, double* loss) {
  params = s.fixed;
  levels.resize(s.rows, s.cols);
  if (updated != nullptr) updated->resize(s.rows, s.cols);
  const std::int64_t slices = gptq_slice_count(s.rows, executor);
  std::vector<double> slice_loss(static_cast<std::size_t>(slices), 0.0);
  const bool ok = gptq_for_row_slices(
      s.rows, slices, executor, [&](std::int64_t t, std::int64_t r0, std::int64_t count) {
        return gptq_run_rows(w_in, u, s, opt, lazy, r0, count, levels, updated, params,
                             &slice_loss[static_cast<std::size_t>(t)]);
      });
  *loss = 0.0;
  for (const double l : slice_loss) *loss += l;
  return ok && std::isfinite(*loss);
}

inline Result<GptqResult> gptq_quantize_impl(MatrixView<const float> w, MatrixView<const float> h,
                                             const GptqOptions& opt, bool lazy) {
  SerialExecutor serial;
  Executor& executor = opt.executor != nullptr ? *opt.executor : serial;
  LOWBIT_TRY(check_data(w));
  LOWBIT_TRY(gptq_check_hessian(h, w.cols()));
  LOWBIT_TRY(check_gptq_quantizer(opt.bits, opt.group_size, w.cols()));
  LOWBIT_TRY(gptq_check_sweep_options(opt.block_size, opt.percdamp, opt.max_damping_retries));

  GptqSetup s;
  LOWBIT_TRY(gptq_hessian_setup(h, w.rows(), &s));
  const std::int64_t rows = s.rows, n = s.cols;
  s.group_size = opt.group_size > 0 ? opt.group_size : n;
  s.groups = n / s.group_size;
  s.maxq = static_cast<float>((1 << opt.bits) - 1);

  // Parameters that do not depend on the updates. The original W's groups must be quantizable at
  // all: a range that is subnormal or overflows float32 is an input error, not a numerical one.
  {
    Eigen::MatrixXf w0(rows, n);
    for (std::int64_t c = 0; c < n; ++c)
      for (std::int64_t r = 0; r < rows; ++r) w0(r, c) = w(r, c);
    s.fixed.resize(static_cast<std::size_t>(s.groups * rows));
    const std::int64_t rtn_group = opt.group_size > 0 ? opt.group_size : n;
    for (std::int64_t g = 0; g < n / rtn_group; ++g) {
      std::vector<GptqQuantParams> probe(static_cast<std::size_t>(rows));
      if (!gptq_group_params(w0, g * rtn_group, rtn_group, s.maxq, opt.symmetric, probe.data()))
        return Status(Errc::kOutOfRange, "a group's range is subnormal or overflows float32");
    }
    if (opt.group_size < 0) {  // per channel: the full, unmodified W (dead columns included)
      gptq_group_params(w0, 0, n, s.maxq, opt.symmetric, s.fixed.data());
    } else if (opt.static_groups) {  // static: W with dead columns zeroed, original order
      for (std::int64_t c = 0; c < n; ++c)
        if (s.dead[static_cast<std::size_t>(c)]) w0.col(c).setZero();
      for (std::int64_t g = 0; g < s.groups; ++g)
        if (!gptq_group_params(w0, g * s.group_size, s.group_size, s.maxq, opt.symmetric,
                               &s.fixed[static_cast<std::size_t>(g * rows)]))
          return Status(Errc::kOutOfRange, "a group's range is subnormal or overflows float32");
    }
  }

  s.perm.resize(static_cast<std::size_t>(n));
  std::iota(s.perm.begin(), s.perm.end(), std::int64_t{0});
  if (opt.act_order) {
    const auto diag = [&](std::int64_t c) {
      return s.dead[static_cast<std::size_t>(c)] ? 1.0f : h(c, c);
    };
    std::stable_sort(s.perm.begin(), s.perm.end(),
                     [&](std::int64_t a, std::int64_t b) { return diag(a) > diag(b); });
  }

  Eigen::MatrixXf levels, updated;
  std::vector<GptqQuantParams> params;
  double loss = 0.0;
  const Result<GptqDamping> damping = gptq_with_damping(
      h, s, opt.percdamp, opt.max_damping_retries, [&](const Eigen::MatrixXf& u) {
        return gptq_run(w, u, s, opt, lazy, executor, levels, opt.keep_updated ? &updated : nullptr,
                        params, &loss);
      });
  if (!damping) return damping.status();
  GptqResult out;
  out.rows = rows;
  out.cols = n;
  out.group_size = s.group_size;
  out.groups = s.groups;
  out.perm = s.perm;
  out.loss = loss;
  out.percdamp = damping->percdamp;
  out.damp = damping->damp;
  out.damping_retries = damping->retries;
  out.codes.resize(static_cast<std::size_t>(rows * n));
  out.dequantized.resize(static_cast<std::size_t>(rows * n));
  out.g_idx.resize(static_cast<std::size_t>(n));
  out.scales.resize(static_cast<std::size_t>(rows * s.groups));
  out.zeros.resize(static_cast<std::size_t>(rows * s.groups));
  for (std::int64_t j = 0; j < n; ++j) {
    const std::int64_t c = s.perm[static_cast<std::size_t>(j)];
    std::int64_t g = 0;
    if (opt.group_size > 0) g = opt.static_groups ? c / s.group_size : j / s.group_size;
    out.g_idx[static_cast<std::size_t>(c)] = g;
    const GptqQuantParams* p = &params[static_cast<std::size_t>(g * rows)];
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto k = static_cast<std::size_t>(r * n + c);
      out.codes[k] = static_cast<std::uint8_t>(levels(r, j));
      out.dequantized[k] = gptq_dequantize(levels(r, j), p[r]);
    }
  }
  if (opt.keep_updated) {
    out.updated.resize(static_cast<std::size_t>(rows * n));
    for (std::int64_t j = 0; j < n; ++j) {
      const std::int64_t c = s.perm[static_cast<std::size_t>(j)];
      for (std::int64_t r = 0; r < rows; ++r)
        out.updated[static_cast<std::size_t>(r * n + c)] = updated(r, j);
    }
  }
  for (std::int64_t g = 0; g < s.groups; ++g) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const GptqQuantParams p = params[static_cast<std::size_t>(g * rows + r)];
      out.scales[static_cast<std::size_t>(r * s.groups + g)] = p.scale;
      out.zeros[static_cast<std::size_t>(r * s.groups + g)] = static_cast<std::int32_t>(p.zero);
    }
  }
  return out;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Entry points.

// GPTQ of W (out × in, any layout) against the symmetric Hessian H (in × in, any layout; of an
// H that is not exactly symmetric, the lower triangle of the permuted H is used, as the reference's
// Cholesky does). Errors: invalid or empty views (kInvalidArgument,
// kEmpty), NaN/Inf in W or H (kNonFinite, flat index), H not in × in (kShapeMismatch), a negative
// diagonal in H (kInvalidArgument), bits outside 1..8, group_size 0 or < −1, block_size < 1,
// negative or non-finite percdamp, retries outside 0..32 (kInvalidArgument), group_size not
// dividing in (kIndivisible), a group range of W that float32 cannot quantize (kOutOfRange), a
// Hessian that no damping tried makes positive definite (kNumericalIssue).
inline Result<GptqResult> gptq_quantize(MatrixView<const float> w, MatrixView<const float> h,
                                        const GptqOptions& options) {
  return detail::gptq_quantize_impl(w, h, options, /*lazy=*/true);
}
inline Result<GptqResult> gptq_quantize(MatrixView<const float> w, const Eigen::MatrixXf& h,
                                        const GptqOptions& options) {
  return gptq_quantize(w, col_major(h.data(), h.rows(), h.cols()), options);
}

// The same algorithm without lazy batching: after each column the rank-1 update goes to every
// later column at once. Identical to gptq_quantize with block_size = 1 (options.block_size is
// ignored); equal to gptq_quantize up to float summation order whenever the group boundaries fall
// on block boundaries (per channel, static groups, or block_size dividing group_size).
inline Result<GptqResult> gptq_quantize_unblocked(MatrixView<const float> w,
                                                  MatrixView<const float> h,
                                                  const GptqOptions& options) {
  return detail::gptq_quantize_impl(w, h, options, /*lazy=*/false);
}
inline Result<GptqResult> gptq_quantize_unblocked(MatrixView<const float> w,
                                                  const Eigen::MatrixXf& h,
                                                  const GptqOptions& options) {
  return gptq_quantize_unblocked(w, col_major(h.data(), h.rows(), h.cols()), options);
}

// Round-to-nearest with the reference quantizer: per (row, contiguous group of group_size columns)
// parameters from W itself (group_size −1: one group per row). With group_size −1 this is
// Quantizer.find_params(W, weight=True) followed by quantize(). Errors as gptq_quantize's for W,
// bits and group_size.
inline Result<RtnResult> rtn_quantize(MatrixView<const float> w, int bits, bool symmetric,
                                      std::int64_t group_size) {
  LOWBIT_TRY(detail::check_data(w));
  LOWBIT_TRY(detail::check_gptq_quantizer(bits, group_size, w.cols()));
  RtnResult out;
  out.rows = w.rows();
  out.cols = w.cols();
  out.group_size = group_size > 0 ? group_size : w.cols();
  out.groups = out.cols / out.group_size;
  out.codes.resize(static_cast<std::size_t>(out.rows * out.cols));
  out.dequantized.resize(out.codes.size());
  out.scales.resize(static_cast<std::size_t>(out.rows * out.groups));
  out.zeros.resize(out.scales.size());
  const auto maxq = static_cast<float>((1 << bits) - 1);
  for (std::int64_t r = 0; r < out.rows; ++r) {
    for (std::int64_t g = 0; g < out.groups; ++g) {
      const std::int64_t first = g * out.group_size;
      float lo = w(r, first), hi = w(r, first);
      for (std::int64_t c = first; c < first + out.group_size; ++c) {
        lo = std::min(lo, w(r, c));
        hi = std::max(hi, w(r, c));
      }
      const GptqQuantParams p = detail::gptq_params_from_range(lo, hi, maxq, symmetric);
      if (!gptq_params_usable(p))
        return Status(Errc::kOutOfRange, "a group's range is subnormal or overflows float32",
                      r * out.cols + first);
      const auto k = static_cast<std::size_t>(r * out.groups + g);
      out.scales[k] = p.scale;
      out.zeros[k] = static_cast<std::int32_t>(p.zero);
      for (std::int64_t c = first; c < first + out.group_size; ++c) {
        const float q = gptq_level(w(r, c), p, maxq);
        const auto e = static_cast<std::size_t>(r * out.cols + c);
        out.codes[e] = static_cast<std::uint8_t>(q);
        out.dequantized[e] = gptq_dequantize(q, p);
      }
    }
  }
  return out;
}

// The latent weights of quantization-aware training started from GPTQ's solution (rows × cols,
// row-major): r.updated, each clipped into its group's code range [scale·(0 − zero),
// scale·(maxq − zero)], maxq = 2^bits − 1. Quantizing them on the same grid (lowbit's Quantizer
// with r's scales and zero points, or gptq_level) gives r's codes again, up to the rare value whose
// w/scale lands on a rounding tie that w·(1/scale) resolves the other way; and the straight-through
// estimator, which passes gradient only inside the code range, reaches every one of them. Errors:
// r made without keep_updated, bits outside 1..8, a scale not positive and finite
// (kInvalidArgument, index = scale), a NaN/Inf updated weight (kNonFinite, index = weight), r's
// arrays not matching its shape or g_idx out of range (kShapeMismatch).
inline Result<std::vector<float>> gptq_qat_latent(const GptqResult& r, int bits) {
  if (bits < 1 || bits > 8) return Status(Errc::kInvalidArgument, "bits must be in 1..8");
  const auto n = static_cast<std::size_t>(r.rows * r.cols);
  if (r.updated.empty())
    return Status(Errc::kInvalidArgument, "gptq_qat_latent: run GPTQ with keep_updated");
  if (r.rows < 1 || r.cols < 1 || r.groups < 1 || r.updated.size() != n ||
      r.g_idx.size() != static_cast<std::size_t>(r.cols) ||
      r.scales.size() != static_cast<std::size_t>(r.rows * r.groups) ||
      r.zeros.size() != r.scales.size())
    return Status(Errc::kShapeMismatch, "gptq_qat_latent: the result's arrays do not match its shape");
  const auto maxq = static_cast<float>((1 << bits) - 1);
  std::vector<float> latent(n);
  for (std::int64_t row = 0; row < r.rows; ++row) {
    for (std::int64_t c = 0; c < r.cols; ++c) {
      const std::int64_t g = r.g_idx[static_cast<std::size_t>(c)];
      if (g < 0 || g >= r.groups)
        return Status(Errc::kShapeMismatch, "gptq_qat_latent: g_idx out of range", c);
      const auto k = static_cast<std::size_t>(row * r.cols + c);
      const auto gi = static_cast<std::size_t>(row * r.groups + g);
      const float scale = r.scales[gi], zero = static_cast<float>(r.zeros[gi]);
      if (!(scale > 0.0f) || !std::isfinite(scale))
        return Status(Errc::kInvalidArgument, "gptq_qat_latent: a scale is not positive and finite",
                      static_cast<std::int64_t>(gi));
      if (!std::isfinite(r.updated[k]))
        return Status(Errc::kNonFinite, "gptq_qat_latent: an updated weight is NaN or Inf",
                      static_cast<std::int64_t>(k));
      latent[k] = std::clamp(r.updated[k], scale * (0.0f - zero), scale * (maxq - zero));
    }
  }
  return latent;
}

}  // namespace lowbit
