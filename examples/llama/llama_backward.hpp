// examples/llama/llama_backward.hpp: training for the Llama of llama.hpp — a forward pass over a
// whole sequence that keeps what the backward pass needs, a hand-written backward pass giving the
// gradient of every parameter and of every block's input, and trainable linear layers that can be
// dense or lowbit's fake-quantized QAT layers (lowbit/qat.hpp), so a model can be fine-tuned with
// its linears quantized in the loop.
//
// An example, like llama.hpp: one header, Eigen for the products, no autograd. Everything is
// templated on the scalar type: float is the model llama.hpp runs (the forward reproduces its
// logits), double is for finite-difference gradient checks. The QAT adapter is float only, as
// FakeQuantLinear is.
//
// The computation (positions 0 .. T-1, no KV cache; shapes for one sequence of T tokens):
//
// clang-format off
//   h₀ = embed[tokens]                                                   [T, D]
//   layer l:  u = rms(h_l) ⊙ w_in;  q = u·Wqᵀ, k = u·Wkᵀ, v = u·Wvᵀ
//             q, k ← rope(q), rope(k);  a_h = softmax_causal(q_h·k_gᵀ/√d)·v_g   g = h / (H/KV)
//             m = h_l + a·Woᵀ
//             u = rms(m) ⊙ w_post;  h_{l+1} = m + (silu(u·Wgateᵀ) ⊙ u·Wupᵀ)·Wdownᵀ
//   z = (rms(h_L) ⊙ w_final)·W_lm_headᵀ                                  [T, vocab]
//   loss = mean over scored positions t of −log softmax(z_t)[target_t]   (target_t = tokens[t+1])
// clang-format on
//
// The backward of each operation (dX is ∂loss/∂X; all row-wise, row t of a [T, ·] matrix):
//
// clang-format off
//   linear y = x·Wᵀ:      dx = dy·W,  dW += dyᵀ·x.
//   RMSNorm y = w ⊙ x·r, r = (Σx²/D + ε)^(-1/2):  ∂r/∂x_j = −r³·x_j/D, so with g = dy ⊙ w
//                         dx = r·g − x·r³·(g·x)/D,   dw += Σ_t dy ⊙ x·r.
//   rotary (rotate_half): each pair (x_i, x_{i+d/2}) is multiplied by the rotation R(θ_{t,i});
//                         the backward multiplies (dy_i, dy_{i+d/2}) by R(θ)ᵀ = R(−θ):
//                         dx_i = dy_i·cos + dy_{i+d/2}·sin,  dx_{i+d/2} = −dy_i·sin + dy_{i+d/2}·cos.
//   attention, per head:  S = s·Q·Kᵀ (s = 1/√d), P = softmax of each row over keys j ≤ i, O = P·V.
//                         dP = dO·Vᵀ;  dV += Pᵀ·dO;
//                         softmax: dS_ij = P_ij·(dP_ij − Σ_k P_ik·dP_ik)  (0 where masked, P = 0);
//                         dQ = s·dS·K;  dK += s·dSᵀ·Q.
//                         GQA: the H/KV query heads that read one kv head all add into its dK, dV.
//   SwiGLU a = silu(g) ⊙ u, silu(g) = g·σ(g):  du = da ⊙ silu(g),
//                         dg = da ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g)))   (d silu/dg).
//   cross-entropy over N scored rows:  dz_t = (softmax(z_t) − onehot(target_t)) / N, 0 elsewhere.
//   residuals:            the gradient of h_l is the sum of the one through the skip connection
//                         and the one through the block's RMSNorm; embed[token_t] += dh₀_t.
// clang-format on
//
// Storage kept by forward() for backward(): every block input h_l, the RMSNorm factors r, the
// rotated q and k, v, the attention probabilities P ([H, T, T] per layer: the cost that bounds T),
// the mid-block residual m, the SwiGLU inputs, the logits; each TrainableLinear keeps its own
// input.
//
// Cost: forward + backward of tinylm on a 256-token window takes about 3× llama.hpp's inference
// forward (~0.34 s against ~0.11 s at -O2 -march=native, one thread): the backward does two
// products per linear where the forward does one, and the attention backward four per head.
//
// Losses other than next-token cross-entropy: backward(dlogits) takes ∂loss/∂logits from the
// caller (distill.hpp's KL to a teacher), and forward_block / backward_block run one decoder
// block alone from a given input (block-wise distillation), touching no other parameter.
//
// Gradients accumulate over backward() calls (torch's .grad), so a batch of sequences is a loop
// of forward + backward; zero_grad() resets. parameters() lists every trainable tensor by its
// Hugging Face name (a QAT linear adds its "weight_scale", "weight_zero_point", ...), and
// to_param_views() hands the float ones to lowbit::AdamW.
//
// Errors are lowbit::Status values: bad config or null tensor (from llama.hpp's validation,
// kInvalidArgument), NaN/Inf weights or input embeddings (kNonFinite, culprit named), a
// tied lm_head (kUnsupported), token or target outside the vocabulary (kOutOfRange), nothing to
// score (kInvalidArgument), a sequence whose activations would pass 2^32 values (kOutOfRange), a
// NaN/Inf loss (kNonFinite: the run diverged), backward() without a forward (kInvalidArgument),
// and whatever a TrainableLinear reports.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "llama.hpp"
#include "lowbit/optim.hpp"
#include "lowbit/qat/fake_quant_linear.hpp"
#include "lowbit/status.hpp"
#include "lowbit/tensor_view.hpp"

namespace llama {

// A target that is not scored (torch's ignore_index plays the same role).
constexpr std::int32_t kIgnoreTarget = -1;

// One trainable tensor of `size` values and its gradient, both owned by the model or a layer and
// valid while it lives. `name` lives as long as the model (or layer) that listed it.
template <class Scalar>
struct TensorParam {
  const char* name = "";
  Scalar* value = nullptr;
  Scalar* grad = nullptr;
  std::int64_t size = 0;
  bool decay = true;  // decoupled weight decay applies (false for norms, scales, zero points)
};

// The float parameters as lowbit::AdamW / clip_grad_norm views.
inline std::vector<lowbit::ParamView> to_param_views(const std::vector<TensorParam<float>>& ps) {
  std::vector<lowbit::ParamView> views;
  views.reserve(ps.size());
  for (const TensorParam<float>& p : ps)
    views.push_back({p.value, p.grad, p.size, p.decay, 1.0f, p.name});
  return views;
}

namespace detail {
template <class S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using MapOf = Eigen::Map<RowMat<S>>;
template <class S>
using ConstMapOf = Eigen::Map<const RowMat<S>>;
template <class S>
using StridedOf = Eigen::Map<RowMat<S>, 0, Eigen::OuterStride<>>;
template <class S>
using ConstStridedOf = Eigen::Map<const RowMat<S>, 0, Eigen::OuterStride<>>;
template <class S>
using ArrayOf = Eigen::Map<Eigen::Array<S, Eigen::Dynamic, 1>>;
template <class S>
using ConstArrayOf = Eigen::Map<const Eigen::Array<S, Eigen::Dynamic, 1>>;

template <class S>
void add_to(S* acc, const S* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) acc[i] += x[i];
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// The operations, forward and backward. Building blocks of TrainableLlama, which checks every size
// before calling them; public so that each backward can be tested alone. Row-major buffers; a
// backward "adds into" a gradient (accumulates) or "writes" it (overwrites), as each one says.

namespace ops {

// y [rows, d] = w ⊙ x / sqrt(mean(x²) + eps); inv [rows] receives r = 1/sqrt(mean(x²) + eps).
// Arithmetic as llama.hpp (the sum of squares in double, the rest in Scalar), so float agrees.
template <class S>
void rms_norm_forward(const S* x, std::int64_t rows, std::int64_t d, const S* w, double eps, S* y,
                      S* inv) {
  for (std::int64_t t = 0; t < rows; ++t) {
    const S* xr = x + t * d;
    double ss = 0;
    for (std::int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const S r = S(1) / std::sqrt(static_cast<S>(ss / static_cast<double>(d)) + static_cast<S>(eps));
    inv[t] = r;
    for (std::int64_t i = 0; i < d; ++i) y[t * d + i] = w[i] * (xr[i] * r);
  }
}

// Adds into dx [rows, d] and dw [d] (header comment: dx = r·g − x·r³·(g·x)/D, g = dy ⊙ w).
template <class S>
void rms_norm_backward(const S* x, const S* inv, const S* w, const S* dy, std::int64_t rows,
                       std::int64_t d, S* dx, S* dw) {
  for (std::int64_t t = 0; t < rows; ++t) {
    const S* xr = x + t * d;
    const S* dyr = dy + t * d;
    const double r = static_cast<double>(inv[t]);
    double gx = 0;  // g·x, a length-d dot product: in double
    for (std::int64_t i = 0; i < d; ++i)
      gx += static_cast<double>(dyr[i]) * static_cast<double>(w[i]) * static_cast<double>(xr[i]);
    const S c = static_cast<S>(gx * r * r * r / static_cast<double>(d));
    const S rs = inv[t];
    for (std::int64_t i = 0; i < d; ++i) {
      dx[t * d + i] += dyr[i] * w[i] * rs - xr[i] * c;
      dw[i] += dyr[i] * (xr[i] * rs);
    }
  }
}

// In place on x [tokens, heads·hd]: rotates pairs (i, i + hd/2) of each head of row t by the angles
// cos/sin [tokens, hd/2] of position t (rotate_half layout, as llama.hpp).
template <class S>
void rope_forward(S* x, std::int64_t tokens, std::int64_t heads, std::int64_t hd, const S* cos,
                  const S* sin) {
  const std::int64_t half = hd / 2;
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t h = 0; h < heads; ++h) {
      S* xh = x + (t * heads + h) * hd;
      for (std::int64_t i = 0; i < half; ++i) {
        const S a = xh[i], b = xh[i + half], c = cos[t * half + i], s = sin[t * half + i];
        xh[i] = a * c - b * s;
        xh[i + half] = b * c + a * s;
      }
    }
}

// In place on the gradient dx [tokens, heads·hd]: the transposed rotation R(θ)ᵀ (overwrites).
template <class S>
void rope_backward(S* dx, std::int64_t tokens, std::int64_t heads, std::int64_t hd, const S* cos,
                   const S* sin) {
  const std::int64_t half = hd / 2;
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t h = 0; h < heads; ++h) {
      S* g = dx + (t * heads + h) * hd;
      for (std::int64_t i = 0; i < half; ++i) {
        const S a = g[i], b = g[i + half], c = cos[t * half + i], s = sin[t * half + i];
        g[i] = a * c + b * s;
        g[i + half] = b * c - a * s;
      }
    }
}

// Causal grouped-query attention over positions 0 .. T-1. q [T, H·hd], k and v [T, KV·hd] (rotated
// already); writes probs [H, T, T] (row i: softmax over keys 0..i, zeros after) and out [T, H·hd].
template <class S>
void attention_forward(const S* q, const S* k, const S* v, std::int64_t T, std::int64_t H,
                       std::int64_t KV, std::int64_t hd, S* probs, S* out) {
  const std::int64_t group = H / KV, qw = H * hd, kw = KV * hd;
  const S scale = S(1) / std::sqrt(static_cast<S>(hd));
  for (std::int64_t head = 0; head < H; ++head) {
    const std::int64_t g = head / group;
    detail::ConstStridedOf<S> Q(q + head * hd, T, hd, Eigen::OuterStride<>(qw));
    detail::ConstStridedOf<S> K(k + g * hd, T, hd, Eigen::OuterStride<>(kw));
    detail::ConstStridedOf<S> V(v + g * hd, T, hd, Eigen::OuterStride<>(kw));
    detail::MapOf<S> P(probs + head * T * T, T, T);
    P.noalias() = Q * K.transpose();
    for (std::int64_t i = 0; i < T; ++i) {
      S* p = probs + head * T * T + i * T;
      detail::ArrayOf<S> row(p, i + 1);
      row = (row * scale - row.maxCoeff() * scale).exp();  // max(x)·s = max(x·s) for s > 0
      row /= row.sum();
      std::fill(p + i + 1, p + T, S(0));
    }
    detail::StridedOf<S> O(out + head * hd, T, hd, Eigen::OuterStride<>(qw));
    O.noalias() = P * V;
  }
}

// From dout [T, H·hd] and the forward's q, k, v, probs: writes dq [T, H·hd], dk and dv [T, KV·hd]
// (gradients of the rotated q and k). scratch holds T·T values.
template <class S>
void attention_backward(const S* q, const S* k, const S* v, const S* probs, const S* dout,
                        std::int64_t T, std::int64_t H, std::int64_t KV, std::int64_t hd, S* dq,
                        S* dk, S* dv, S* scratch) {
  const std::int64_t group = H / KV, qw = H * hd, kw = KV * hd;
  const S scale = S(1) / std::sqrt(static_cast<S>(hd));
  std::fill(dk, dk + T * kw, S(0));
  std::fill(dv, dv + T * kw, S(0));
  for (std::int64_t head = 0; head < H; ++head) {
    const std::int64_t g = head / group;
    detail::ConstStridedOf<S> Q(q + head * hd, T, hd, Eigen::OuterStride<>(qw));
    detail::ConstStridedOf<S> K(k + g * hd, T, hd, Eigen::OuterStride<>(kw));
    detail::ConstStridedOf<S> V(v + g * hd, T, hd, Eigen::OuterStride<>(kw));
    detail::ConstStridedOf<S> dO(dout + head * hd, T, hd, Eigen::OuterStride<>(qw));
    detail::ConstMapOf<S> P(probs + head * T * T, T, T);
    detail::StridedOf<S> dQ(dq + head * hd, T, hd, Eigen::OuterStride<>(qw));
    detail::StridedOf<S> dK(dk + g * hd, T, hd, Eigen::OuterStride<>(kw));
    detail::StridedOf<S> dV(dv + g * hd, T, hd, Eigen::OuterStride<>(kw));
    detail::MapOf<S> dS(scratch, T, T);
    dS.noalias() = dO * V.transpose();  // dP
    dV.noalias() += P.transpose() * dO;
    for (std::int64_t i = 0; i < T; ++i) {
      const S* p = probs + head * T * T + i * T;
      S* d = scratch + i * T;
      double dot = 0;  // Σ_k P_ik·dP_ik over the visible keys
      for (std::int64_t j = 0; j <= i; ++j) dot += static_cast<double>(p[j]) * d[j];
      const S c = static_cast<S>(dot);
      for (std::int64_t j = 0; j <= i; ++j) d[j] = scale * p[j] * (d[j] - c);
      std::fill(d + i + 1, d + T, S(0));
    }
    dQ.noalias() = dS * K;
    dK.noalias() += dS.transpose() * Q;
  }
}

// act [n] = silu(gate) ⊙ up, as llama.hpp writes it.
template <class S>
void swiglu_forward(const S* gate, const S* up, std::int64_t n, S* act) {
  detail::ConstArrayOf<S> g(gate, n), u(up, n);
  detail::ArrayOf<S>(act, n) = g / (S(1) + (-g).exp()) * u;
}

// Writes dgate and dup [n] from dact (header comment). σ(g) = 1/(1 + e^-g) saturates cleanly:
// e^-g = inf gives σ = 0, never NaN.
template <class S>
void swiglu_backward(const S* gate, const S* up, const S* dact, std::int64_t n, S* dgate, S* dup) {
  for (std::int64_t i = 0; i < n; ++i) {
    const S g = gate[i];
    const S sig = S(1) / (S(1) + std::exp(-g));
    dup[i] = dact[i] * (g * sig);
    dgate[i] = dact[i] * up[i] * (sig * (S(1) + g * (S(1) - sig)));
  }
}

// Rows of targets[] that are scored (not kIgnoreTarget).
inline std::int64_t scored_rows(const std::int32_t* targets, std::int64_t T) {
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < T; ++t) n += targets[t] != kIgnoreTarget;
  return n;
}

// Mean over the scored rows of −log softmax(logits_t)[target_t], in double. Targets must lie in
// [0, vocab) or be kIgnoreTarget, and at least one be scored.
template <class S>
double cross_entropy_forward(const S* logits, const std::int32_t* targets, std::int64_t T,
                             std::int64_t vocab) {
  double total = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    if (targets[t] == kIgnoreTarget) continue;
    const S* z = logits + t * vocab;
    double top = static_cast<double>(z[0]);
    for (std::int64_t i = 1; i < vocab; ++i) top = std::max(top, static_cast<double>(z[i]));
    double sum = 0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(z[i]) - top);
    total += top + std::log(sum) - static_cast<double>(z[targets[t]]);
  }
  return total / static_cast<double>(scored_rows(targets, T));
}

// Writes dlogits [T, vocab] = (softmax(z_t) − onehot(target_t)) / N, zero rows where unscored.
template <class S>
void cross_entropy_backward(const S* logits, const std::int32_t* targets, std::int64_t T,
                            std::int64_t vocab, S* dlogits) {
  const double n = static_cast<double>(scored_rows(targets, T));
  for (std::int64_t t = 0; t < T; ++t) {
    S* d = dlogits + t * vocab;
    if (targets[t] == kIgnoreTarget) {
      std::fill(d, d + vocab, S(0));
      continue;
    }
    const S* z = logits + t * vocab;
    double top = static_cast<double>(z[0]);
    for (std::int64_t i = 1; i < vocab; ++i) top = std::max(top, static_cast<double>(z[i]));
    double sum = 0;
    for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(z[i]) - top);
    for (std::int64_t i = 0; i < vocab; ++i) {
      const double p = std::exp(static_cast<double>(z[i]) - top) / sum;
      d[i] = static_cast<S>((p - (i == targets[t] ? 1.0 : 0.0)) / n);
    }
  }
}

}  // namespace ops

// ---------------------------------------------------------------------------------------------
// Trainable linear layers

// y [tokens, out] = x [tokens, in]·Wᵀ with a backward. forward() keeps what backward() needs (its
// input, or the QAT layer's own cache); backward() refers to the last forward: it writes
// dx [tokens, in] = dy·W (W as the forward used it: fake-quantized for a QAT layer) and adds the
// parameter gradients (dW += dyᵀ·x, and a QAT layer's scale and zero-point gradients) into the
// layer's gradient buffers. Not thread-safe (one model, one training thread).
template <class Scalar>
class TrainableLinear {
 public:
  TrainableLinear(std::int64_t in_features, std::int64_t out_features) noexcept
      : in_features_(in_features), out_features_(out_features) {}
  TrainableLinear(const TrainableLinear&) = delete;
  TrainableLinear& operator=(const TrainableLinear&) = delete;
  virtual ~TrainableLinear() = default;

  virtual Status forward(const Scalar* x, std::int64_t tokens, Scalar* y) = 0;
  virtual Status backward(const Scalar* dy, std::int64_t tokens, Scalar* dx) = 0;
  virtual void zero_grad() = 0;
  // Trainable tensors, named relative to the layer: "weight", "weight_scale", ...
  virtual std::vector<TensorParam<Scalar>> parameters() = 0;
  // Called after each optimizer step: a QAT layer puts its scales back above their floor
  // (FakeQuantLinear::clamp_scales) and returns how many it moved.
  virtual std::int64_t after_step() { return 0; }

  std::int64_t in_features() const noexcept { return in_features_; }
  std::int64_t out_features() const noexcept { return out_features_; }

 private:
  std::int64_t in_features_;
  std::int64_t out_features_;
};

// A dense Scalar weight [out, in], owned (copied from the fp32 checkpoint), trained directly.
template <class Scalar>
class DenseTrainableLinear final : public TrainableLinear<Scalar> {
 public:
  // kInvalidArgument for a null weight or a size outside [1, kMaxDim], kNonFinite for NaN/Inf.
  static Result<std::unique_ptr<TrainableLinear<Scalar>>> create(const float* weight,
                                                                 std::int64_t out_features,
                                                                 std::int64_t in_features) {
    if (weight == nullptr || out_features < 1 || in_features < 1 || out_features > kMaxDim ||
        in_features > kMaxDim)
      return Status(Errc::kInvalidArgument, "dense linear: null weight or size out of range");
    const std::int64_t n = out_features * in_features;
    for (std::int64_t i = 0; i < n; ++i)
      if (!std::isfinite(weight[i])) return Status(Errc::kNonFinite, "dense linear: NaN/Inf", i);
    std::unique_ptr<DenseTrainableLinear> l(new DenseTrainableLinear(out_features, in_features));
    l->weight_.assign(weight, weight + n);  // float -> Scalar
    l->grad_.assign(static_cast<std::size_t>(n), Scalar(0));
    return std::unique_ptr<TrainableLinear<Scalar>>(std::move(l));
  }

  Status forward(const Scalar* x, std::int64_t tokens, Scalar* y) override {
    tokens_ = 0;
    if (tokens < 1 || tokens > kMaxDim || x == nullptr || y == nullptr)
      return Status(Errc::kInvalidArgument,
                    "linear forward: tokens outside [1, 2^20] or a null buffer", tokens);
    const std::int64_t in = this->in_features(), out = this->out_features();
    input_.assign(x, x + tokens * in);
    detail::ConstMapOf<Scalar> xm(x, tokens, in), w(weight_.data(), out, in);
    detail::MapOf<Scalar>(y, tokens, out).noalias() = xm * w.transpose();
    tokens_ = tokens;
    return {};
  }

  Status backward(const Scalar* dy, std::int64_t tokens, Scalar* dx) override {
    if (tokens_ == 0 || tokens != tokens_ || dy == nullptr || dx == nullptr)
      return Status(Errc::kInvalidArgument,
                    "linear backward: no forward of that many tokens, or a null buffer", tokens);
    const std::int64_t in = this->in_features(), out = this->out_features();
    detail::ConstMapOf<Scalar> dym(dy, tokens, out), xm(input_.data(), tokens, in),
        w(weight_.data(), out, in);
    detail::MapOf<Scalar>(grad_.data(), out, in).noalias() += dym.transpose() * xm;
    detail::MapOf<Scalar>(dx, tokens, in).noalias() = dym * w;
    return {};
  }

  void zero_grad() override { std::fill(grad_.begin(), grad_.end(), Scalar(0)); }

  std::vector<TensorParam<Scalar>> parameters() override {
    return {
        {"weight", weight_.data(), grad_.data(), static_cast<std::int64_t>(weight_.size()), true}};
  }

  const std::vector<Scalar>& weight() const noexcept { return weight_; }
  const std::vector<Scalar>& grad_weight() const noexcept { return grad_; }

 private:
  DenseTrainableLinear(std::int64_t out_features, std::int64_t in_features)
      : TrainableLinear<Scalar>(in_features, out_features) {}
  std::vector<Scalar> weight_, grad_;  // [out, in]
  std::vector<Scalar> input_;          // [tokens, in] of the last forward
  std::int64_t tokens_ = 0;
};

// A lowbit::FakeQuantLinear<WeightQuantizer, ActivationQuantizer> (lowbit/qat.hpp) behind the
// TrainableLinear interface: Ŵ (and X̂) fake-quantized in the forward, the straight-through and
// LSQ gradients of the layer's QatMode in the backward. No bias (Llama has none).
template <class FakeQuantLayer>
class FakeQuantTrainableLinear final : public TrainableLinear<float> {
 public:
  // FakeQuantLayer::create's errors (non-finite weights, groups that do not tile, bad options).
  static Result<std::unique_ptr<TrainableLinear<float>>> create(
      const float* weight, std::int64_t out_features, std::int64_t in_features,
      const lowbit::QatOptions& options = {},
      const typename FakeQuantLayer::weight_granularity& g = {}) {
    if (weight == nullptr || out_features < 1 || in_features < 1 || out_features > kMaxDim ||
        in_features > kMaxDim)
      return Status(Errc::kInvalidArgument, "QAT linear: null weight or size out of range");
    Result<FakeQuantLayer> made = FakeQuantLayer::create(
        lowbit::row_major(weight, out_features, in_features), nullptr, options, g);
    if (!made) return made.status();
    return std::unique_ptr<TrainableLinear<float>>(new FakeQuantTrainableLinear(std::move(*made)));
  }

  Status forward(const float* x, std::int64_t tokens, float* y) override {
    if (tokens < 1 || tokens > kMaxDim || x == nullptr || y == nullptr)
      return Status(Errc::kInvalidArgument,
                    "linear forward: tokens outside [1, 2^20] or a null buffer", tokens);
    return layer_.forward(lowbit::row_major(x, tokens, in_features()),
                          lowbit::row_major(y, tokens, out_features()));
  }
  Status backward(const float* dy, std::int64_t tokens, float* dx) override {
    if (tokens < 1 || tokens > kMaxDim || dy == nullptr || dx == nullptr)
      return Status(Errc::kInvalidArgument,
                    "linear backward: tokens outside [1, 2^20] or a null buffer", tokens);
    return layer_.backward(lowbit::row_major(dy, tokens, out_features()),
                           lowbit::row_major(dx, tokens, in_features()));
  }
  void zero_grad() override { layer_.zero_grad(); }
  std::int64_t after_step() override { return layer_.clamp_scales(); }
  std::vector<TensorParam<float>> parameters() override {
    std::vector<TensorParam<float>> out;
    for (const lowbit::ParamView& p : layer_.parameters())
      out.push_back({p.name, p.value, p.grad, p.size, p.decay});
    return out;
  }

  // The QAT layer: set_fake_quant, clamp_scales after an optimizer step, export_weights, ...
  FakeQuantLayer& layer() noexcept { return layer_; }
  const FakeQuantLayer& layer() const noexcept { return layer_; }

 private:
  explicit FakeQuantTrainableLinear(FakeQuantLayer layer)
      : TrainableLinear<float>(layer.in_features(), layer.out_features()),
        layer_(std::move(layer)) {}
  FakeQuantLayer layer_;
};

// Builds the layer of a decoder linear: `name` is its module name ("model.layers.0.mlp.up_proj"),
// `weight` its fp32 [out, in] matrix (valid during the call only). The result must have these
// in/out features.
template <class Scalar>
using TrainableLinearFactory = std::function<Result<std::unique_ptr<TrainableLinear<Scalar>>>(
    const std::string& name, const float* weight, std::int64_t out_features,
    std::int64_t in_features)>;

// ---------------------------------------------------------------------------------------------
// The model

template <class Scalar>
class TrainableLlama {
  static_assert(std::is_same<Scalar, float>::value || std::is_same<Scalar, double>::value,
                "TrainableLlama<Scalar>: Scalar must be float or double");

 public:
  // Copies the weights (converting to Scalar). Decoder linears come from `factory` (dense when
  // null); lm_head is dense (replace_linear("lm_head", ...) to change it). `culprit` names the
  // tensor or layer at fault. Errors: see the header comment.
  static Result<TrainableLlama> from_weights(
      const LlamaWeights& w, const TrainableLinearFactory<Scalar>& factory = nullptr,
      std::string* culprit = nullptr) {
    const LlamaConfig& c = w.config;
    LOWBIT_TRY(c.validate());
    if (c.tie_word_embeddings)  // lm_head would need the embedding's gradient too: not done here
      return Status(Errc::kUnsupported, "trainer: tied word embeddings are not implemented");
    bool complete = w.embed_tokens && w.norm && w.lm_head &&
                    w.layers.size() == static_cast<std::size_t>(c.num_layers);
    for (const LlamaWeights::Layer& layer : w.layers) {
      complete = complete && layer.input_norm && layer.post_attention_norm;
      for (const float* p : layer.linear) complete = complete && p;
    }
    if (!complete) return Status(Errc::kInvalidArgument, "trainer: weights with a null tensor");
    const std::int64_t D = c.hidden_size, V = c.vocab_size;
    TrainableLlama m;
    m.config_ = c;
    const auto copy = [&](const float* src, std::int64_t n, const char* name,
                          std::vector<Scalar>& value, std::vector<Scalar>& grad) -> Status {
      detail::set(culprit, name);
      for (std::int64_t i = 0; i < n; ++i)
        if (!std::isfinite(src[i])) return Status(Errc::kNonFinite, "trainer: NaN/Inf weight", i);
      value.assign(src, src + n);
      grad.assign(static_cast<std::size_t>(n), Scalar(0));
      return {};
    };
    LOWBIT_TRY(copy(w.embed_tokens, V * D, "model.embed_tokens.weight", m.embed_, m.grad_embed_));
    LOWBIT_TRY(copy(w.norm, D, "model.norm.weight", m.norm_, m.grad_norm_));
    m.layers_.resize(static_cast<std::size_t>(c.num_layers));
    for (std::int64_t l = 0; l < c.num_layers; ++l) {
      const LlamaWeights::Layer& src = w.layers[static_cast<std::size_t>(l)];
      Layer& dst = m.layers_[static_cast<std::size_t>(l)];
      const std::string prefix = "model.layers." + std::to_string(l) + ".";
      LOWBIT_TRY(copy(src.input_norm, D, (prefix + "input_layernorm.weight").c_str(),
                      dst.input_norm, dst.grad_input_norm));
      LOWBIT_TRY(copy(src.post_attention_norm, D,
                      (prefix + "post_attention_layernorm.weight").c_str(), dst.post_norm,
                      dst.grad_post_norm));
      for (int s = 0; s < kLinearsPerLayer; ++s) {
        const std::string name = linear_name(l, s);
        const auto shape = linear_shape(c, s);
        detail::set(culprit, name);
        Result<std::unique_ptr<TrainableLinear<Scalar>>> made =
            factory
                ? factory(name, src.linear[s], shape.first, shape.second)
                : DenseTrainableLinear<Scalar>::create(src.linear[s], shape.first, shape.second);
        if (!made) return made.status();
        LOWBIT_TRY(check_linear(made->get(), shape));
        dst.linear[s] = std::move(*made);
      }
    }
    detail::set(culprit, "lm_head.weight");
    Result<std::unique_ptr<TrainableLinear<Scalar>>> head =
        DenseTrainableLinear<Scalar>::create(w.lm_head, V, D);
    if (!head) return head.status();
    m.lm_head_ = std::move(*head);
    detail::set(culprit, "");
    return m;
  }

  const LlamaConfig& config() const noexcept { return config_; }

  // The decoder linear `layer`, `slot` (kQ .. kDown), and lm_head.
  TrainableLinear<Scalar>& linear(std::int64_t layer, int slot) {
    return *layers_[static_cast<std::size_t>(layer)].linear[slot];
  }
  TrainableLinear<Scalar>& lm_head() { return *lm_head_; }

  // Replaces the decoder linear named as Hugging Face does ("model.layers.2.mlp.up_proj") or
  // "lm_head". kInvalidArgument for an unknown name or a null layer, kShapeMismatch for other
  // in/out features. Invalidates the last forward.
  Status replace_linear(const std::string& name, std::unique_ptr<TrainableLinear<Scalar>> layer) {
    std::unique_ptr<TrainableLinear<Scalar>>* target = nullptr;
    std::pair<std::int64_t, std::int64_t> shape{config_.vocab_size, config_.hidden_size};
    if (name == "lm_head") target = &lm_head_;
    for (std::int64_t l = 0; l < config_.num_layers && target == nullptr; ++l)
      for (int s = 0; s < kLinearsPerLayer; ++s)
        if (name == linear_name(l, s)) {
          target = &layers_[static_cast<std::size_t>(l)].linear[s];
          shape = linear_shape(config_, s);
          break;
        }
    if (target == nullptr)
      return Status(Errc::kInvalidArgument, "replace_linear: no linear of that name");
    LOWBIT_TRY(check_linear(layer.get(), shape));
    *target = std::move(layer);
    ready_ = false;
    block_ = -1;
    return {};
  }

  // Forward pass of tokens[0 .. count) at positions 0 .. count-1; returns the mean cross-entropy.
  // targets[t] is the token scored at position t, or kIgnoreTarget; null means next-token
  // prediction (target t = tokens[t+1], the last position unscored), as llama.hpp's perplexity.
  Result<double> forward(const std::int32_t* tokens, std::int64_t count,
                         const std::int32_t* targets = nullptr) {
    ready_ = false;
    block_ = -1;
    if (tokens == nullptr || count < 1)
      return Status(Errc::kInvalidArgument, "forward: no tokens", count);
    if (count > kMaxDim) return Status(Errc::kOutOfRange, "forward: sequence too long", count);
    for (std::int64_t t = 0; t < count; ++t)
      if (tokens[t] < 0 || tokens[t] >= config_.vocab_size)
        return Status(Errc::kOutOfRange, "forward: token id outside the vocabulary", t);
    LOWBIT_TRY(prepare(count, targets, tokens));
    const std::int64_t D = config_.hidden_size;
    for (std::int64_t t = 0; t < count; ++t)
      std::copy(embed_.data() + tokens[t] * D, embed_.data() + (tokens[t] + 1) * D,
                hs_.data() + t * D);
    tokens_.assign(tokens, tokens + count);
    return run();
  }

  // The same from input embeddings [count, hidden] instead of token ids (the embedding table
  // then gets no gradient; grad_block_input(0) is the gradient of these embeddings). targets
  // must be given. kNonFinite for NaN/Inf embeddings.
  Result<double> forward_embeddings(const Scalar* embeddings, std::int64_t count,
                                    const std::int32_t* targets) {
    ready_ = false;
    block_ = -1;
    if (embeddings == nullptr || targets == nullptr || count < 1)
      return Status(Errc::kInvalidArgument, "forward_embeddings: no input or no targets", count);
    if (count > kMaxDim) return Status(Errc::kOutOfRange, "forward: sequence too long", count);
    const std::int64_t n = count * config_.hidden_size;
    for (std::int64_t i = 0; i < n; ++i)
      if (!std::isfinite(embeddings[i]))
        return Status(Errc::kNonFinite, "forward_embeddings: NaN or Inf", i);
    LOWBIT_TRY(prepare(count, targets, nullptr));
    std::copy(embeddings, embeddings + n, hs_.data());
    tokens_.clear();
    return run();
  }

  // Adds the gradient of the last forward's loss into every parameter's gradient and records the
  // gradient of every block input. kInvalidArgument without a successful forward since the last
  // replace_linear; a linear's own errors.
  Status backward() {
    if (!ready_) return Status(Errc::kInvalidArgument, "backward: call forward() first");
    ops::cross_entropy_backward(logits_.data(), targets_.data(), T_, config_.vocab_size,
                                dlogits_.data());
    return backward_through_model(dlogits_.data());
  }

  // The same for a loss of the caller's on the logits (a distillation loss: KL to a teacher's
  // probabilities): dlogits [tokens, vocab] is ∂loss/∂logits of the last forward.
  Status backward(const Scalar* dlogits) {
    if (!ready_) return Status(Errc::kInvalidArgument, "backward: call forward() first");
    if (dlogits == nullptr) return Status(Errc::kInvalidArgument, "backward: null dlogits");
    return backward_through_model(dlogits);
  }

  // One decoder block alone, for block-wise distillation (ZeroQuant's layer-wise knowledge
  // distillation): runs block `layer` on `input` [count, hidden] and returns its output
  // [count, hidden], valid until the next forward. backward_block(d_output) then adds the
  // gradient of the block's parameters for ∂loss/∂output = d_output and returns ∂loss/∂input;
  // the other blocks, the embedding and the head are untouched. kOutOfRange for a layer outside
  // the model, kNonFinite for NaN/Inf input.
  Result<const Scalar*> forward_block(std::int64_t layer, const Scalar* input, std::int64_t count) {
    ready_ = false;
    block_ = -1;
    if (layer < 0 || layer >= config_.num_layers)
      return Status(Errc::kOutOfRange, "forward_block: no such layer", layer);
    if (input == nullptr || count < 1)
      return Status(Errc::kInvalidArgument, "forward_block: no input", count);
    const std::int64_t n = count * config_.hidden_size;
    for (std::int64_t i = 0; i < n; ++i)
      if (!std::isfinite(input[i]))
        return Status(Errc::kNonFinite, "forward_block: NaN or Inf input", i);
    LOWBIT_TRY(prepare(count, nullptr, nullptr, /*score=*/false));
    std::copy(input, input + n, hs_.data() + layer * n);
    LOWBIT_TRY(block_forward(layer));
    block_ = layer;
    return static_cast<const Scalar*>(hs_.data() + (layer + 1) * n);
  }

  Result<const Scalar*> backward_block(const Scalar* d_output) {
    if (block_ < 0) return Status(Errc::kInvalidArgument, "backward_block: call forward_block first");
    if (d_output == nullptr) return Status(Errc::kInvalidArgument, "backward_block: null gradient");
    std::copy(d_output, d_output + T_ * config_.hidden_size, dh_.data());
    LOWBIT_TRY(block_backward(block_));
    return static_cast<const Scalar*>(dh_.data());
  }

  void zero_grad() {
    std::fill(grad_embed_.begin(), grad_embed_.end(), Scalar(0));
    std::fill(grad_norm_.begin(), grad_norm_.end(), Scalar(0));
    for (Layer& L : layers_) {
      std::fill(L.grad_input_norm.begin(), L.grad_input_norm.end(), Scalar(0));
      std::fill(L.grad_post_norm.begin(), L.grad_post_norm.end(), Scalar(0));
      for (auto& lin : L.linear) lin->zero_grad();
    }
    lm_head_->zero_grad();
  }

  // Every trainable tensor, named as Hugging Face does ("model.layers.0.self_attn.q_proj.weight";
  // a QAT linear adds "...q_proj.weight_scale" etc.). Weights decay; norms, scales and zero points
  // do not (Hugging Face's Trainer excludes norm weights from decay). Pointers stay valid while
  // the model lives and its linears are not replaced.
  std::vector<TensorParam<Scalar>> parameters() {
    std::vector<TensorParam<Scalar>> out;
    const auto own = [&](const std::string& name, std::vector<Scalar>& v, std::vector<Scalar>& g,
                         bool decay) {
      out.push_back({intern(name), v.data(), g.data(), static_cast<std::int64_t>(v.size()), decay});
    };
    const auto linear_params = [&](const std::string& module, TrainableLinear<Scalar>& lin) {
      for (TensorParam<Scalar> p : lin.parameters()) {
        p.name = intern(module + "." + p.name);
        out.push_back(p);
      }
    };
    own("model.embed_tokens.weight", embed_, grad_embed_, true);
    for (std::int64_t l = 0; l < config_.num_layers; ++l) {
      Layer& L = layers_[static_cast<std::size_t>(l)];
      const std::string prefix = "model.layers." + std::to_string(l) + ".";
      own(prefix + "input_layernorm.weight", L.input_norm, L.grad_input_norm, false);
      for (int s = 0; s < kLinearsPerLayer; ++s) linear_params(linear_name(l, s), *L.linear[s]);
      own(prefix + "post_attention_layernorm.weight", L.post_norm, L.grad_post_norm, false);
    }
    own("model.norm.weight", norm_, grad_norm_, false);
    linear_params("lm_head", *lm_head_);
    return out;
  }

  // After a successful forward: its length, loss and logits [tokens, vocab]; block inputs
  // [tokens, hidden]: index 0 the embeddings, l the input of layer l, num_layers the input of the
  // final norm. After backward: the gradient of each block input, same indexing.
  std::int64_t tokens() const noexcept { return ready_ ? T_ : 0; }
  double loss() const noexcept { return loss_; }
  const Scalar* logits() const noexcept { return ready_ ? logits_.data() : nullptr; }
  const Scalar* block_input(std::int64_t index) const noexcept {
    return ready_ && index >= 0 && index <= config_.num_layers ? block_input_ptr(index) : nullptr;
  }
  const Scalar* grad_block_input(std::int64_t index) const noexcept {
    return ready_ && index >= 0 && index <= config_.num_layers
               ? grad_hs_.data() + index * T_ * config_.hidden_size
               : nullptr;
  }

 private:
  struct Layer {
    std::vector<Scalar> input_norm, grad_input_norm, post_norm, grad_post_norm;  // [hidden]
    std::unique_ptr<TrainableLinear<Scalar>> linear[kLinearsPerLayer];
    // Activations of the last forward.
    std::vector<Scalar> inv_in, inv_post;  // [T] RMSNorm factors r
    std::vector<Scalar> q, k, v;           // [T, H·hd], [T, KV·hd] ×2; q and k rotated
    std::vector<Scalar> probs;             // [H, T, T]
    std::vector<Scalar> mid;               // [T, hidden] m = h_l + attention
    std::vector<Scalar> gate, up;          // [T, intermediate] inputs of SwiGLU
  };

  TrainableLlama() = default;

  static Status check_linear(const TrainableLinear<Scalar>* layer,
                             std::pair<std::int64_t, std::int64_t> shape) {
    if (layer == nullptr) return Status(Errc::kInvalidArgument, "linear: null layer");
    if (layer->out_features() != shape.first || layer->in_features() != shape.second)
      return Status(Errc::kShapeMismatch, "linear: in/out features differ from the model's");
    return {};
  }

  const char* intern(const std::string& name) {
    return names_.insert(name).first->c_str();  // set nodes never move: stable pointers
  }

  const Scalar* block_input_ptr(std::int64_t index) const noexcept {
    return hs_.data() + index * T_ * config_.hidden_size;
  }

  // From ∂loss/∂logits down to the embedding: the head, every block from the last, the table.
  Status backward_through_model(const Scalar* dlogits) {
    const LlamaConfig& c = config_;
    const std::int64_t T = T_, D = c.hidden_size;
    Scalar* dh = dh_.data();
    Scalar* du = du_.data();
    LOWBIT_TRY(lm_head_->backward(dlogits, T, du));
    std::fill(dh, dh + T * D, Scalar(0));
    ops::rms_norm_backward(block_input_ptr(c.num_layers), inv_final_.data(), norm_.data(), du, T, D,
                           dh, grad_norm_.data());
    std::copy(dh, dh + T * D, grad_hs_.data() + c.num_layers * T * D);
    for (std::int64_t l = c.num_layers - 1; l >= 0; --l) {
      LOWBIT_TRY(block_backward(l));
      std::copy(dh, dh + T * D, grad_hs_.data() + l * T * D);
    }
    for (std::size_t t = 0; t < tokens_.size(); ++t)
      detail::add_to(grad_embed_.data() + tokens_[t] * D, dh + static_cast<std::int64_t>(t) * D, D);
    return {};
  }

  // Block l of the last forward: dh_ holds ∂loss/∂h_{l+1} on entry and ∂loss/∂h_l on return.
  Status block_backward(std::int64_t l) {
    const LlamaConfig& c = config_;
    const std::int64_t T = T_, D = c.hidden_size, F = c.intermediate_size, hd = c.head_dim;
    const std::int64_t H = c.num_heads, KV = c.num_kv_heads;
    Scalar* dh = dh_.data();
    Scalar* du = du_.data();
    Scalar* tmp = dtmp_.data();
    Layer& L = layers_[static_cast<std::size_t>(l)];
    // MLP: dh is the gradient of h_{l+1} = m + down(swiglu); the skip passes it on to m.
    LOWBIT_TRY(L.linear[kDown]->backward(dh, T, dact_.data()));
    ops::swiglu_backward(L.gate.data(), L.up.data(), dact_.data(), T * F, dgate_.data(),
                         dup_.data());
    LOWBIT_TRY(L.linear[kGate]->backward(dgate_.data(), T, du));
    LOWBIT_TRY(L.linear[kUp]->backward(dup_.data(), T, tmp));
    detail::add_to(du, tmp, T * D);
    ops::rms_norm_backward(L.mid.data(), L.inv_post.data(), L.post_norm.data(), du, T, D, dh,
                           L.grad_post_norm.data());
    // Attention: dh is now the gradient of m = h_l + o(attn); the skip passes it on to h_l.
    LOWBIT_TRY(L.linear[kO]->backward(dh, T, dattn_.data()));
    ops::attention_backward(L.q.data(), L.k.data(), L.v.data(), L.probs.data(), dattn_.data(), T,
                            H, KV, hd, dq_.data(), dk_.data(), dv_.data(), dscores_.data());
    ops::rope_backward(dq_.data(), T, H, hd, cos_.data(), sin_.data());
    ops::rope_backward(dk_.data(), T, KV, hd, cos_.data(), sin_.data());
    LOWBIT_TRY(L.linear[kQ]->backward(dq_.data(), T, du));
    LOWBIT_TRY(L.linear[kK]->backward(dk_.data(), T, tmp));
    detail::add_to(du, tmp, T * D);
    LOWBIT_TRY(L.linear[kV]->backward(dv_.data(), T, tmp));
    detail::add_to(du, tmp, T * D);
    ops::rms_norm_backward(block_input_ptr(l), L.inv_in.data(), L.input_norm.data(), du, T, D, dh,
                           L.grad_input_norm.data());
    return {};
  }

  // Block l: h_{l+1} = block(h_l), both in hs_.
  Status block_forward(std::int64_t l) {
    const LlamaConfig& c = config_;
    const std::int64_t T = T_, D = c.hidden_size, F = c.intermediate_size, hd = c.head_dim;
    const std::int64_t H = c.num_heads, KV = c.num_kv_heads;
    Scalar* u = u_.data();
    Scalar* out = out_.data();
    Layer& L = layers_[static_cast<std::size_t>(l)];
    const Scalar* h = block_input_ptr(l);
    ops::rms_norm_forward(h, T, D, L.input_norm.data(), c.rms_norm_eps, u, L.inv_in.data());
    LOWBIT_TRY(L.linear[kQ]->forward(u, T, L.q.data()));
    LOWBIT_TRY(L.linear[kK]->forward(u, T, L.k.data()));
    LOWBIT_TRY(L.linear[kV]->forward(u, T, L.v.data()));
    ops::rope_forward(L.q.data(), T, H, hd, cos_.data(), sin_.data());
    ops::rope_forward(L.k.data(), T, KV, hd, cos_.data(), sin_.data());
    ops::attention_forward(L.q.data(), L.k.data(), L.v.data(), T, H, KV, hd, L.probs.data(),
                           attn_.data());
    LOWBIT_TRY(L.linear[kO]->forward(attn_.data(), T, out));
    for (std::int64_t i = 0; i < T * D; ++i) L.mid[static_cast<std::size_t>(i)] = h[i] + out[i];
    ops::rms_norm_forward(L.mid.data(), T, D, L.post_norm.data(), c.rms_norm_eps, u,
                          L.inv_post.data());
    LOWBIT_TRY(L.linear[kGate]->forward(u, T, L.gate.data()));
    LOWBIT_TRY(L.linear[kUp]->forward(u, T, L.up.data()));
    ops::swiglu_forward(L.gate.data(), L.up.data(), T * F, act_.data());
    LOWBIT_TRY(L.linear[kDown]->forward(act_.data(), T, out));
    Scalar* next = hs_.data() + (l + 1) * T * D;
    for (std::int64_t i = 0; i < T * D; ++i) next[i] = L.mid[static_cast<std::size_t>(i)] + out[i];
    return {};
  }

  // Checks the length and (when `score`) the targets, sizes every buffer for T = count and fills
  // the targets and the rotary tables.
  Status prepare(std::int64_t count, const std::int32_t* targets, const std::int32_t* tokens,
                 bool score = true) {
    const LlamaConfig& c = config_;
    if (count > kMaxDim) return Status(Errc::kOutOfRange, "forward: sequence too long", count);
    const double T = static_cast<double>(count), nl = static_cast<double>(c.num_layers);
    const double D = static_cast<double>(c.hidden_size),
                 F = static_cast<double>(c.intermediate_size);
    const double qw = static_cast<double>(c.num_heads * c.head_dim);
    const double kw = static_cast<double>(c.num_kv_heads * c.head_dim);
    const double V = static_cast<double>(c.vocab_size), H = static_cast<double>(c.num_heads);
    const double values = T * (nl * (2 + qw + 2 * kw + H * T + D + 2 * F) + 2 * (nl + 1) * D +
                               2 * V + 5 * D + 2 * qw + 2 * kw + 3 * F + T);
    if (values > 4294967296.0)
      return Status(Errc::kOutOfRange, "forward: activations would pass 2^32 values", count);
    targets_.assign(static_cast<std::size_t>(count), kIgnoreTarget);
    for (std::int64_t t = 0; t < count && score; ++t) {
      const std::int32_t y = targets != nullptr ? targets[t]
                             : t + 1 < count    ? tokens[t + 1]
                                                : kIgnoreTarget;
      if (y != kIgnoreTarget && (y < 0 || y >= c.vocab_size))
        return Status(Errc::kOutOfRange, "forward: target outside the vocabulary", t);
      targets_[static_cast<std::size_t>(t)] = y;
    }
    if (score && ops::scored_rows(targets_.data(), count) == 0)
      return Status(Errc::kInvalidArgument, "forward: no position to score", count);

    const auto rows = [&](std::int64_t width) { return static_cast<std::size_t>(count * width); };
    const std::int64_t d = c.hidden_size, f = c.intermediate_size;
    const std::int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    for (Layer& L : layers_) {
      L.inv_in.resize(rows(1));
      L.inv_post.resize(rows(1));
      L.q.resize(rows(q));
      L.k.resize(rows(kv));
      L.v.resize(rows(kv));
      L.probs.resize(rows(c.num_heads * count));
      L.mid.resize(rows(d));
      L.gate.resize(rows(f));
      L.up.resize(rows(f));
    }
    hs_.resize(rows(d) * static_cast<std::size_t>(c.num_layers + 1));
    grad_hs_.assign(hs_.size(), Scalar(0));
    inv_final_.resize(rows(1));
    logits_.resize(rows(c.vocab_size));
    dlogits_.resize(rows(c.vocab_size));
    for (std::vector<Scalar>* b : {&u_, &out_, &dh_, &du_, &dtmp_}) b->resize(rows(d));
    for (std::vector<Scalar>* b : {&attn_, &dattn_, &dq_}) b->resize(rows(q));
    for (std::vector<Scalar>* b : {&dk_, &dv_}) b->resize(rows(kv));
    for (std::vector<Scalar>* b : {&act_, &dact_, &dgate_, &dup_}) b->resize(rows(f));
    dscores_.resize(rows(count));
    if (rope_positions_ < count) {
      // Rotary angles as llama.hpp (and transformers in float32): inv_freq_i = 1/θ^(2i/d) and
      // angle = float(p)·inv_freq_i rounded to float, then cos/sin of that float angle.
      const std::int64_t half = c.head_dim / 2;
      cos_.resize(rows(half));
      sin_.resize(rows(half));
      for (std::int64_t i = 0; i < half; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
        const float inv_freq =
            1.0f / static_cast<float>(std::pow(c.rope_theta, static_cast<double>(exponent)));
        for (std::int64_t p = 0; p < count; ++p) {
          const float angle = static_cast<float>(p) * inv_freq;
          const auto k = static_cast<std::size_t>(p * half + i);
          cos_[k] = static_cast<Scalar>(static_cast<float>(std::cos(static_cast<double>(angle))));
          sin_[k] = static_cast<Scalar>(static_cast<float>(std::sin(static_cast<double>(angle))));
        }
      }
      rope_positions_ = count;
    }
    T_ = count;
    return {};
  }

  // The forward from hs_[0]: every block, the final norm, lm_head, the loss.
  Result<double> run() {
    const LlamaConfig& c = config_;
    const std::int64_t T = T_, D = c.hidden_size;
    Scalar* u = u_.data();
    for (std::int64_t l = 0; l < c.num_layers; ++l) LOWBIT_TRY(block_forward(l));
    ops::rms_norm_forward(block_input_ptr(c.num_layers), T, D, norm_.data(), c.rms_norm_eps, u,
                          inv_final_.data());
    LOWBIT_TRY(lm_head_->forward(u, T, logits_.data()));
    loss_ = ops::cross_entropy_forward(logits_.data(), targets_.data(), T, c.vocab_size);
    if (!std::isfinite(loss_))
      return Status(Errc::kNonFinite, "forward: the loss is NaN or Inf (training diverged?)");
    ready_ = true;
    return loss_;
  }

  LlamaConfig config_;
  std::vector<Scalar> embed_, grad_embed_;  // [vocab, hidden]
  std::vector<Scalar> norm_, grad_norm_;    // [hidden]
  std::vector<Layer> layers_;
  std::unique_ptr<TrainableLinear<Scalar>> lm_head_;
  std::set<std::string> names_;  // parameter names handed out by parameters()

  // The last forward.
  bool ready_ = false;
  std::int64_t block_ = -1;  // the block forward_block ran, −1 after a whole-model forward
  std::int64_t T_ = 0;
  double loss_ = 0;
  std::vector<std::int32_t> tokens_, targets_;
  std::vector<Scalar> hs_, grad_hs_;  // [L + 1, T, hidden] block inputs and their gradients
  std::vector<Scalar> inv_final_, logits_;
  std::int64_t rope_positions_ = 0;
  std::vector<Scalar> cos_, sin_;  // [positions, head_dim/2]
  // Scratch.
  std::vector<Scalar> u_, out_, attn_, act_;
  std::vector<Scalar> dh_, du_, dtmp_, dlogits_, dattn_, dq_, dk_, dv_, dact_, dgate_, dup_,
      dscores_;
};

}  // namespace llama
