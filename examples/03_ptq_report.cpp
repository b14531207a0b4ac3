// 03_ptq_report: round-to-nearest against GPTQ, AWQ, EasyQuant, OliVe (and γ), and with int8
// activations against SmoothQuant and LLM.int8, on every decoder linear of tinylm.
//
//   03_ptq_report [--model-dir models/tinylm] [--calib-windows 64] [--eval-windows 64]
//                 [--ppl-windows 64 | --full] [--threads 2] [--quiet]
//
// For each linear W and each width (8-bit per channel symmetric; 4 and 3 bits, groups of 128; 2
// bits, groups of 64; all asymmetric below 8 bits, as tinylm's reference baselines), it prints
// the relative output error
//
//   e = ‖X·Wᵀ − X·Ŵᵀ‖²_F / ‖X·Wᵀ‖²_F = tr(ΔW·H·ΔWᵀ) / tr(W·H·Wᵀ),   H = XᵀX,  ΔW = W − Ŵ,
//
// with X the layer's input on *evaluation* text (eval.txt), while every algorithm sees only
// calibration text (calib.txt): the errors are out of sample. The total is Σ‖ΔY‖² / Σ‖Y‖² over
// all 42 linears. Then each method's perplexity on eval.txt with every decoder linear replaced.
//
// Methods:
//   RTN    the reference baselines' quantizer (models/tinylm/README.md), which is AWQ's
//          pseudo_quantize_tensor without scaling
//   RTN+γ  RTN with the seed paper's γ = std(W)/std(Ŵ) folded into the scales (one γ per matrix)
//   GPTQ   lowbit::gptq_quantize with act_order and static groups (deployable: groups stay
//          contiguous in the stored order), damping 1%, block 128
//   AWQ    scale search (grid 20) on the linears sharing an input (q/k/v; gate/up; down alone;
//          o_proj is not scaled: with grouped-query attention v_proj's outputs do not match
//          o_proj's inputs, and the reference skips it too), then the clip search on all but q/k
//          (as the reference), then RTN of W·diag(s); Ŵ = Q(W·diag(s))·diag(s)⁻¹, which is what
//          folding 1/s into the preceding norm computes.
//   EasyQuant  weights beyond 3σ of their row kept exact in a sparse side list, then each block's
//          range optimised for the reconstruction error of the rest (the width's own quantizer;
//          8 bits: ±127 per channel); the side list's cost is printed per width
//   OliVe  outlier–victim pairs (4-bit in groups of 128, 8-bit per channel; none at 3 and 2 bits,
//          which the pair format does not define), the reference's scale search
//
// With int8 activations (each token rounded to 8 bits over its absmax, dynamic), each width's
// weights and X a sample of at most 2048 evaluation tokens per input (activation rounding is not a
// function of H, so the error is measured on the tokens themselves):
//   RTN          the RTN weights above, activations as they are
//   SmoothQuant  s_j = max|X_j|^α / max|W_j|^(1−α), α = 0.5, on calibration maxima, for the inputs
//                that leave a norm (q/k/v, gate/up; the reference smooths nothing else in a Llama):
//                RTN of W·diag(s), activations X·diag(s)⁻¹ (what folding 1/s into the norm gives)
//   LLM.int8     input columns whose calibration max |x| reaches 6 pass in fp32 on both sides; the
//                rest is rounded (weights: the outlier columns zeroed before the ranges are taken)
//
//   mixed  the seed paper's allocation b*_l = ½·log2(α_l·σ_l²/λ) over the four widths above at an
//          average storage budget (codes, scales and zero points counted; decoder linears only,
//          as the baselines), α_l fitted to each linear's RTN 3-bit output error on calibration
//          text; each linear then takes its GPTQ (or RTN) result at the width it was given.
//          "uniform" is the widest single width within the same budget.
//
// Decided here: every algorithm calibrates on the fp32 model's activations (not sequentially on
// the already-quantized model, as the GPTQ reference does); AWQ's statistics come from a token
// subsample (at most 2048 per input), GPTQ's Hessian from all calibration tokens.
#include <Eigen/Core>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "lowbit/algo/awq.hpp"
#include "lowbit/algo/easyquant.hpp"
#include "lowbit/algo/gptq.hpp"
#include "lowbit/algo/hessian.hpp"
#include "lowbit/algo/llm_int8.hpp"
#include "lowbit/algo/mixed_precision.hpp"
#include "lowbit/algo/olive.hpp"
#include "lowbit/algo/smoothquant.hpp"
#include "lowbit/executor.hpp"

namespace {

using lowbit::MatrixView;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Width {
  const char* name;
  int bits;
  std::int64_t group;  // −1: per output channel
  bool symmetric;
};
const Width kWidths[] = {
    {"w8 per-channel sym", 8, -1, true},
    {"w4 g128 asym", 4, 128, false},
    {"w3 g128 asym", 3, 128, false},
    {"w2 g64 asym", 2, 64, false},
};
// Storage per weight as lowbit's packed matrix holds it: the codes, a float16 scale per group and
// a `bits`-wide zero point per group (none when symmetric). The per-channel 8-bit row is costed at
// tinylm's narrowest input width, 256 (the dearest case).
double storage_bits(const Width& w) {
  const double group = w.group > 0 ? static_cast<double>(w.group) : 256.0;
  return w.bits + (16.0 + (w.symmetric ? 0.0 : w.bits)) / group;
}
const double kBudgets[] = {2.5, 3.0, 4.0};
enum Method { kRtn, kRtnGamma, kGptq, kAwq, kEasyQuant, kOlive, kMethods };
const char* const kMethodNames[kMethods] = {"RTN", "RTN+gamma", "GPTQ",
                                            "AWQ", "EasyQuant", "OliVe"};
// Methods with int8 activations (per token, dynamic) on top of each width's weights.
enum ActMethod { kA8Rtn, kA8Smooth, kA8LlmInt8, kActMethods };
const char* const kActMethodNames[kActMethods] = {"RTN", "SmoothQuant", "LLM.int8"};
const double kSmoothAlpha = 0.5;  // SmoothQuant's α, as the w8a8-sq scheme of lowbit_evaluate

// A bounded sample of a linear input's tokens: at most `capacity` rows, every `every`-th token.
struct TokenSample {
  std::vector<float> data;  // (tokens × in)
  std::int64_t tokens = 0;

  void add(const float* x, std::int64_t t, std::int64_t in, std::int64_t every,
           std::int64_t capacity) {
    for (std::int64_t r = 0; r < t && tokens < capacity; r += every, ++tokens)
      data.insert(data.end(), x + r * in, x + (r + 1) * in);
  }
  RowMatrix matrix(std::int64_t in) const {
    return Eigen::Map<const RowMatrix>(data.data(), tokens, in);
  }
};

// What the program keeps per distinct linear input (q/k/v share one, gate/up another).
struct InputStats {
  std::unique_ptr<lowbit::HessianAccumulator> calib_h, eval_h;
  TokenSample calib_sample;  // calibration tokens for AWQ
  TokenSample eval_sample;   // evaluation tokens for the errors with int8 activations
  // max |x| per channel on calibration text: SmoothQuant's activation scales and LLM.int8's
  // outlier magnitudes
  lowbit::OutlierFeatureDetector act_absmax;
  std::int64_t in = 0;
};

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

[[noreturn]] void fail(const char* what, const lowbit::Status& s) {
  std::fprintf(stderr, "03_ptq_report: %s: %s (%s, index %lld)\n", what, s.message(),
               lowbit::errc_name(s.code()), static_cast<long long>(s.index()));
  std::exit(1);
}
template <class T>
T take(lowbit::Result<T> r, const char* what) {
  if (!r) fail(what, r.status());
  return std::move(*r);
}

// The input each linear slot reads: 0 attention input (q/k/v), 1 o_proj's, 2 MLP input
// (gate/up), 3 down_proj's.
int input_of(int slot) {
  static const int kInput[llama::kLinearsPerLayer] = {0, 0, 0, 1, 2, 2, 3};
  return kInput[slot];
}

// Runs `windows` windows of `text` through the fp32 model and hands each linear input to `sink`
// once per distinct input (slot order q, o, gate, down).
template <class Sink>
void observe(const llama::LlamaModel& model, const std::vector<std::uint8_t>& text,
             std::int64_t windows, Sink&& sink) {
  const std::int64_t n = 256;
  llama::LlamaState state = take(model.new_state(n), "new_state");
  std::vector<float> logits(static_cast<std::size_t>(n * model.config().vocab_size));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  llama::ForwardHooks hooks;
  hooks.linear_input = [&](const std::string& name, const float* x, std::int64_t tokens,
                           std::int64_t in) {
    // "model.layers.<l>.<suffix>": decode the layer and slot, keep the first slot of each input.
    const std::int64_t layer = std::atoll(name.c_str() + std::strlen("model.layers."));
    for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot) {
      if (model.linear_name(layer, slot) != name) continue;
      if (slot == 1 || slot == 2 || slot == 5) return;  // k, v, up: same input as q, gate
      sink(layer, input_of(slot), x, tokens, in);
    }
  };
  for (std::int64_t w = 0; w < windows; ++w) {
    for (std::int64_t t = 0; t < n; ++t)
      ids[static_cast<std::size_t>(t)] = text[static_cast<std::size_t>(w * n + t)];
    state.reset();
    const lowbit::Status s = model.forward(ids.data(), n, state, logits.data(), &hooks);
    if (!s) fail("forward", s);
  }
}

// tr(ΔW·H·ΔWᵀ) and tr(W·H·Wᵀ) in double.
double output_energy(const RowMatrix& w, const Eigen::MatrixXd& h) {
  const Eigen::MatrixXd wd = w.cast<double>();
  return (wd * h).cwiseProduct(wd).sum();
}

// γ = std(W)/std(Ŵ) applied to Ŵ (one factor per matrix, folded into its scales in deployment).
RowMatrix with_gamma(const RowMatrix& w, RowMatrix q) {
  const auto sd = [](const RowMatrix& m) {
    const Eigen::ArrayXd a = m.cast<double>().reshaped().array();
    return std::sqrt((a - a.mean()).square().mean());
  };
  const double sq = sd(q);
  if (sq > 0) q *= static_cast<float>(sd(w) / sq);
  return q;
}

lowbit::AwqQuantConfig awq_config(const Width& width) {
  lowbit::AwqQuantConfig c;
  c.bits = width.bits;
  c.zero_point = !width.symmetric;
  c.group_size = width.group;
  return c;
}

RowMatrix rtn(const RowMatrix& w, const Width& width) {
  lowbit::AwqQuantized q = take(
      lowbit::awq_pseudo_quantize(lowbit::row_major(w.data(), w.rows(), w.cols()), awq_config(width)),
      "rtn");
  return Eigen::Map<const RowMatrix>(q.dequantized.data(), w.rows(), w.cols());
}

RowMatrix gptq(const RowMatrix& w, const Eigen::MatrixXf& h, const Width& width,
               lowbit::Executor& executor) {
  lowbit::GptqOptions o;
  o.bits = width.bits;
  o.symmetric = width.symmetric;
  o.group_size = width.group;
  o.act_order = true;
  o.static_groups = true;
  o.executor = &executor;
  lowbit::GptqResult r =
      take(lowbit::gptq_quantize(lowbit::row_major(w.data(), w.rows(), w.cols()), h, o), "gptq");
  return Eigen::Map<const RowMatrix>(r.dequantized.data(), w.rows(), w.cols());
}

// EasyQuant with the quantizer of `width` (σ rule n = 3 per row, range search): the dense part
// dequantized with the outliers' exact values in place. Counts the outliers and the bytes of the
// dense tensor and of the side list.
struct EasyQuantCost {
  std::int64_t weights = 0, outliers = 0;
  double dense_bytes = 0, sparse_bytes = 0;
};
template <class Q>
RowMatrix easyquant_as(const RowMatrix& w, EasyQuantCost& cost) {
  const lowbit::EasyQuantTensor<Q> t = take(
      lowbit::EasyQuant<Q>::quantize(lowbit::row_major(w.data(), w.rows(), w.cols())), "easyquant");
  RowMatrix out(w.rows(), w.cols());
  const lowbit::Status s = t.dequantize(lowbit::row_major(out.data(), out.rows(), out.cols()));
  if (!s) fail("easyquant dequantize", s);
  cost.weights += w.size();
  cost.outliers += static_cast<std::int64_t>(t.outliers().size());
  cost.dense_bytes += static_cast<double>(t.dense().size_bytes());
  cost.sparse_bytes += static_cast<double>(t.sparse_bytes());
  return out;
}
RowMatrix easyquant(const RowMatrix& w, const Width& width, EasyQuantCost& cost) {
  using namespace lowbit;
  if (width.bits == 8 && width.group < 0 && width.symmetric)
    return easyquant_as<Quantizer<Bits<8>, SymmetricRestricted, PerChannel<0>>>(w, cost);
  if (width.bits == 4 && width.group == 128 && !width.symmetric)
    return easyquant_as<Quantizer<Bits<4>, Asymmetric, PerGroup<128>>>(w, cost);
  if (width.bits == 3 && width.group == 128 && !width.symmetric)
    return easyquant_as<Quantizer<Bits<3>, Asymmetric, PerGroup<128>>>(w, cost);
  if (width.bits == 2 && width.group == 64 && !width.symmetric)
    return easyquant_as<Quantizer<Bits<2>, Asymmetric, PerGroup<64>>>(w, cost);
  std::fprintf(stderr, "03_ptq_report: no EasyQuant quantizer for width %s\n", width.name);
  std::exit(1);
}

// OliVe's outlier-victim pairs at the width's bits and block (4 or 8 bits only: its pairs need a
// sign, two exponent bits and a mantissa). Symmetric by construction: one scale per block.
bool olive_has(const Width& width) { return width.bits == 8 || width.bits == 4; }
bool has(const Width& width, int method) { return method != kOlive || olive_has(width); }
template <int Bits, class Granularity>
RowMatrix olive_as(const RowMatrix& w) {
  const auto t = take(
      lowbit::Olive<Bits, Granularity>::quantize(lowbit::row_major(w.data(), w.rows(), w.cols())),
      "olive");
  RowMatrix out(w.rows(), w.cols());
  const lowbit::Status s = t.dequantize(lowbit::row_major(out.data(), out.rows(), out.cols()));
  if (!s) fail("olive dequantize", s);
  return out;
}
RowMatrix olive(const RowMatrix& w, const Width& width) {
  if (width.bits == 8 && width.group < 0) return olive_as<8, lowbit::PerChannel<0>>(w);
  if (width.bits == 4 && width.group == 128) return olive_as<4, lowbit::PerGroup<128>>(w);
  std::fprintf(stderr, "03_ptq_report: no OliVe format for width %s\n", width.name);
  std::exit(1);
}

// A linear layer with int8 activations, fake-quantized in float32:
//
//   y = Q_tok(x·diag(s)⁻¹) · Ŵᵀ
//
// Q_tok rounds each token to 8 bits over its own absmax (SmoothQuant's fake_quant: step =
// max(absmax, 1e-5)/127, rint(x/step)), skipping the outlier columns, which pass exactly and do
// not enter the absmax (LLM.int8's decomposition, its outlier part in fp32). Ŵ is the width's RTN
// of W·diag(s) (s = 1 unless smoothed), with LLM.int8's outlier columns zeroed before the ranges
// are taken and restored exactly after. At w8 this is W8A8Linear's per-channel/per-token pipeline
// (SmoothQuant) and LlmInt8<>'s vector-wise product (LLM.int8), up to float summation order.
//
// quantize_tokens: x ← Q_tok(x·diag(s)⁻¹) in place; `smooth` (s) and `exact` (1 per outlier
// column) may be empty.
void quantize_tokens(RowMatrix& x, const std::vector<float>& smooth,
                     const std::vector<std::uint8_t>& exact) {
  if (!smooth.empty())
    x.array().rowwise() /= Eigen::Map<const Eigen::RowVectorXf>(smooth.data(), x.cols()).array();
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    float absmax = 0.0f;
    for (Eigen::Index c = 0; c < x.cols(); ++c)
      if (exact.empty() || !exact[static_cast<std::size_t>(c)])
        absmax = std::max(absmax, std::fabs(x(t, c)));
    const float step = lowbit::smoothquant_step(absmax);
    for (Eigen::Index c = 0; c < x.cols(); ++c)
      if (exact.empty() || !exact[static_cast<std::size_t>(c)])
        x(t, c) = lowbit::smoothquant_fake_quantize(x(t, c), step);
  }
}

struct ActQuantized {
  RowMatrix w;                      // Ŵ (out × in)
  std::vector<float> smooth;        // s (in values); empty: none
  std::vector<std::uint8_t> exact;  // 1 for an outlier column; empty: none

  void quantize_input(RowMatrix& x) const { quantize_tokens(x, smooth, exact); }
};

class ActQuantLinear final : public llama::Linear {
 public:
  explicit ActQuantLinear(const ActQuantized& q) : Linear(q.w.cols(), q.w.rows()), q_(q) {}
  lowbit::Status forward(const float* x, std::int64_t tokens, float* y) const override {
    if (tokens == 0) return {};
    RowMatrix xq = Eigen::Map<const RowMatrix>(x, tokens, in_features());
    q_.quantize_input(xq);
    Eigen::Map<RowMatrix>(y, tokens, out_features()).noalias() = xq * q_.w.transpose();
    return {};
  }

 private:
  const ActQuantized& q_;  // owned by the report, outlives the model
};

// AWQ on the linears `ws` that share the input sample x; returns each one's effective Ŵ.
std::vector<RowMatrix> awq(const std::vector<const RowMatrix*>& ws, const RowMatrix& x,
                           const Width& width, bool scale, const std::vector<bool>& clip) {
  const std::int64_t in = x.cols();
  std::vector<float> s(static_cast<std::size_t>(in), 1.0f);
  if (scale) {
    std::vector<MatrixView<const float>> views;
    for (const RowMatrix* w : ws) views.push_back(lowbit::row_major(w->data(), w->rows(), in));
    lowbit::AwqScaleSearchOptions o;
    o.quant = awq_config(width);
    s = take(lowbit::awq_search_scales(lowbit::row_major(x.data(), x.rows(), in), views, o),
             "awq scale search")
            .scales;
  }
  const Eigen::Map<const Eigen::RowVectorXf> sv(s.data(), in);
  const RowMatrix xs = x.array().rowwise() / sv.array();  // X·diag(s)⁻¹
  std::vector<RowMatrix> out;
  for (std::size_t i = 0; i < ws.size(); ++i) {
    RowMatrix wsc = ws[i]->array().rowwise() * sv.array();  // W·diag(s)
    const MatrixView<float> wview = lowbit::row_major(wsc.data(), wsc.rows(), in);
    if (clip[i]) {
      lowbit::AwqClipOptions co;
      co.quant = awq_config(width);
      const lowbit::AwqClipResult c = take(
          lowbit::awq_search_clip(lowbit::row_major(xs.data(), xs.rows(), in), wview, co), "awq clip");
      const lowbit::Status st = lowbit::awq_apply_clip(wview, c);
      if (!st) fail("awq apply clip", st);
    }
    RowMatrix q = rtn(wsc, width);
    out.push_back(q.array().rowwise() / sv.array());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = LOWBIT_TINYLM_DIR;
  std::int64_t calib_windows = 64, eval_windows = 64, ppl_windows = 64;
  int threads = 2;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model-dir") dir = next();
    else if (a == "--calib-windows") calib_windows = std::atoll(next().c_str());
    else if (a == "--eval-windows") eval_windows = std::atoll(next().c_str());
    else if (a == "--ppl-windows") ppl_windows = std::atoll(next().c_str());
    else if (a == "--full") ppl_windows = 1024;
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--quiet") quiet = true;
    else {
      std::fprintf(stderr, "usage: 03_ptq_report [--model-dir D] [--calib-windows N] "
                           "[--eval-windows N] [--ppl-windows N | --full] [--threads T] [--quiet]\n");
      return 2;
    }
  }
  if (calib_windows < 1 || eval_windows < 1 || ppl_windows < 1 || calib_windows > 1024 ||
      eval_windows > 1024 || ppl_windows > 1024 || threads < 1) {
    std::fprintf(stderr, "03_ptq_report: window counts must be in 1..1024, threads >= 1\n");
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  llama::LlamaModel model = take(llama::LlamaModel::load(dir), "loading the model");
  const std::vector<std::uint8_t> calib = read_file(dir + "/calib.txt");
  const std::vector<std::uint8_t> eval = read_file(dir + "/eval.txt");
  if (calib.size() < 1024 * 256 || eval.size() < 1024 * 256) {
    std::fprintf(stderr, "03_ptq_report: calib.txt / eval.txt missing or short in %s\n", dir.c_str());
    return 1;
  }
  const llama::LlamaConfig& cfg = model.config();
  const std::int64_t layers = cfg.num_layers;

  // Statistics per (layer, input).
  const std::int64_t kMaxSample = 2048;
  const std::int64_t sample_every = std::max<std::int64_t>(1, calib_windows * 256 / kMaxSample);
  std::vector<InputStats> stats(static_cast<std::size_t>(layers * 4));
  observe(model, calib, calib_windows, [&](std::int64_t l, int input, const float* x, std::int64_t t,
                                           std::int64_t in) {
    InputStats& st = stats[static_cast<std::size_t>(l * 4 + input)];
    if (!st.calib_h) {
      st.in = in;
      st.calib_h = std::make_unique<lowbit::HessianAccumulator>(
          take(lowbit::HessianAccumulator::create(in), "hessian"));
      st.eval_h = std::make_unique<lowbit::HessianAccumulator>(
          take(lowbit::HessianAccumulator::create(in), "hessian"));
    }
    const lowbit::Status s = st.calib_h->add_batch(lowbit::row_major(x, t, in));
    if (!s) fail("calibration Hessian", s);
    const lowbit::Status a = st.act_absmax.observe(lowbit::row_major(x, t, in));
    if (!a) fail("activation maxima", a);
    st.calib_sample.add(x, t, in, sample_every, kMaxSample);
  });
  const std::int64_t eval_every = std::max<std::int64_t>(1, eval_windows * 256 / kMaxSample);
  observe(model, eval, eval_windows,
          [&](std::int64_t l, int input, const float* x, std::int64_t t, std::int64_t in) {
            InputStats& st = stats[static_cast<std::size_t>(l * 4 + input)];
            const lowbit::Status s = st.eval_h->add_batch(lowbit::row_major(x, t, in));
            if (!s) fail("evaluation Hessian", s);
            st.eval_sample.add(x, t, in, eval_every, kMaxSample);
          });
  const double calib_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  lowbit::ThreadPool pool(threads);
  // quantized[width][method][linear index l·7 + slot]
  const std::size_t linears = static_cast<std::size_t>(layers * llama::kLinearsPerLayer);
  std::vector<std::vector<std::vector<RowMatrix>>> quantized(
      std::size(kWidths), std::vector<std::vector<RowMatrix>>(kMethods, std::vector<RowMatrix>(linears)));
  std::vector<std::vector<std::vector<double>>> err_num(
      std::size(kWidths), std::vector<std::vector<double>>(kMethods, std::vector<double>(linears)));
  std::vector<double> energy(linears);
  std::vector<lowbit::LayerBitStats> bit_stats(linears);
  double method_seconds[kMethods] = {};
  std::vector<EasyQuantCost> easyquant_cost(std::size(kWidths));
  // With int8 activations: act[width][method][linear], errors on the evaluation sample.
  std::vector<std::vector<std::vector<ActQuantized>>> act(
      std::size(kWidths),
      std::vector<std::vector<ActQuantized>>(kActMethods, std::vector<ActQuantized>(linears)));
  std::vector<std::vector<std::vector<double>>> act_err_num(
      std::size(kWidths),
      std::vector<std::vector<double>>(kActMethods, std::vector<double>(linears)));
  std::vector<double> act_energy(linears);
  std::vector<std::int64_t> outlier_columns(static_cast<std::size_t>(layers * 4));
  std::vector<std::pair<float, float>> smooth_range(static_cast<std::size_t>(layers * 4));

  for (std::int64_t l = 0; l < layers; ++l) {
    std::vector<RowMatrix> w(llama::kLinearsPerLayer);
    for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot) {
      const auto shape = llama::linear_shape(cfg, slot);
      w[static_cast<std::size_t>(slot)] = Eigen::Map<const RowMatrix>(
          model.weights().layers[static_cast<std::size_t>(l)].linear[slot], shape.first, shape.second);
    }
    // SmoothQuant's scales for the inputs that leave a norm (q/k/v, gate/up), which is what the
    // reference smooths in a Llama: o_proj's and down_proj's inputs have no norm to fold 1/s into.
    // LLM.int8's outlier columns at its threshold 6, for every input.
    std::vector<std::vector<float>> smooth(4);
    std::vector<std::vector<std::uint8_t>> exact(4);
    for (int input = 0; input < 4; ++input) {
      const std::size_t ii = static_cast<std::size_t>(l * 4 + input);
      const InputStats& st = stats[ii];
      for (std::int64_t c :
           take(st.act_absmax.outlier_columns(lowbit::kLlmInt8Threshold), "outliers")) {
        exact[static_cast<std::size_t>(input)].resize(static_cast<std::size_t>(st.in), 0);
        exact[static_cast<std::size_t>(input)][static_cast<std::size_t>(c)] = 1;
        ++outlier_columns[ii];
      }
      if (input == 1 || input == 3) continue;
      const std::vector<float> absmax = take(st.act_absmax.absmax(), "activation maxima");
      std::vector<MatrixView<const float>> fcs;
      for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot)
        if (input_of(slot) == input)
          fcs.push_back(lowbit::row_major(w[static_cast<std::size_t>(slot)].data(),
                                          w[static_cast<std::size_t>(slot)].rows(), st.in));
      std::vector<float>& s = smooth[static_cast<std::size_t>(input)];
      s = take(lowbit::smoothquant_scales(lowbit::row_major(absmax.data(), 1, st.in), fcs,
                                          kSmoothAlpha),
               "smoothquant scales")
              .scales;
      smooth_range[ii] = {*std::min_element(s.begin(), s.end()),
                          *std::max_element(s.begin(), s.end())};
    }
    // The evaluation sample of each input, its int8 form under each activation method, and each
    // linear's exact output on it: none depends on the weights' width.
    const std::vector<float> no_smooth;
    const std::vector<std::uint8_t> no_exact;
    const auto smooth_of = [&](int am, std::size_t input) -> const std::vector<float>& {
      return am == kA8Smooth ? smooth[input] : no_smooth;
    };
    const auto exact_of = [&](int am, std::size_t input) -> const std::vector<std::uint8_t>& {
      return am == kA8LlmInt8 ? exact[input] : no_exact;
    };
    std::vector<std::vector<RowMatrix>> eval_xq(4, std::vector<RowMatrix>(kActMethods));
    std::vector<RowMatrix> eval_y(llama::kLinearsPerLayer);
    for (std::size_t input = 0; input < 4; ++input) {
      const InputStats& st = stats[static_cast<std::size_t>(l * 4) + input];
      const RowMatrix x = st.eval_sample.matrix(st.in);
      for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot) {
        if (static_cast<std::size_t>(input_of(slot)) != input) continue;
        RowMatrix& y = eval_y[static_cast<std::size_t>(slot)];
        y = x * w[static_cast<std::size_t>(slot)].transpose();
        act_energy[static_cast<std::size_t>(l * llama::kLinearsPerLayer + slot)] =
            y.cast<double>().squaredNorm();
      }
      for (int am = 0; am < kActMethods; ++am) {
        eval_xq[input][static_cast<std::size_t>(am)] = x;
        quantize_tokens(eval_xq[input][static_cast<std::size_t>(am)], smooth_of(am, input),
                        exact_of(am, input));
      }
    }
    for (std::size_t wi = 0; wi < std::size(kWidths); ++wi) {
      const Width& width = kWidths[wi];
      std::vector<RowMatrix> awq_q(llama::kLinearsPerLayer);
      const auto timed = [&](Method m, auto&& f) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        method_seconds[m] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      };
      timed(kAwq, [&] {
        const auto sample = [&](int input) {
          const InputStats& st = stats[static_cast<std::size_t>(l * 4 + input)];
          return st.calib_sample.matrix(st.in);
        };
        const RowMatrix x_attn = sample(0), x_o = sample(1), x_mlp = sample(2), x_down = sample(3);
        std::vector<RowMatrix> qkv = awq({&w[0], &w[1], &w[2]}, x_attn, width, true, {false, false, true});
        std::vector<RowMatrix> o = awq({&w[3]}, x_o, width, false, {true});
        std::vector<RowMatrix> gu = awq({&w[4], &w[5]}, x_mlp, width, true, {true, true});
        std::vector<RowMatrix> d = awq({&w[6]}, x_down, width, true, {true});
        awq_q = {qkv[0], qkv[1], qkv[2], o[0], gu[0], gu[1], d[0]};
      });
      for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot) {
        const std::size_t li = static_cast<std::size_t>(l * llama::kLinearsPerLayer + slot);
        const InputStats& st = stats[static_cast<std::size_t>(l * 4 + input_of(slot))];
        const RowMatrix& wl = w[static_cast<std::size_t>(slot)];
        auto& q = quantized[wi];
        timed(kRtn, [&] { q[kRtn][li] = rtn(wl, width); });
        timed(kRtnGamma, [&] { q[kRtnGamma][li] = with_gamma(wl, q[kRtn][li]); });
        timed(kGptq, [&] { q[kGptq][li] = gptq(wl, st.calib_h->hessian(), width, pool); });
        q[kAwq][li] = awq_q[static_cast<std::size_t>(slot)];
        timed(kEasyQuant, [&] { q[kEasyQuant][li] = easyquant(wl, width, easyquant_cost[wi]); });
        if (olive_has(width)) timed(kOlive, [&] { q[kOlive][li] = olive(wl, width); });
        if (width.bits == 3) {  // the probe width of the sensitivities, on calibration text
          const Eigen::MatrixXd hc = st.calib_h->hessian().cast<double>();
          lowbit::LayerBitStats& b = bit_stats[li];
          b.weights = wl.size();
          b.variance = take(lowbit::weight_variance(lowbit::row_major(wl.data(), wl.rows(), wl.cols())),
                            "variance");
          b.sensitivity = take(lowbit::sensitivity_from_output_error(
                                   output_energy(wl - q[kRtn][li], hc) / output_energy(wl, hc),
                                   b.weights, b.variance, 3.0),
                               "sensitivity");
        }
        const Eigen::MatrixXd h = st.eval_h->hessian().cast<double>();
        energy[li] = output_energy(wl, h);
        for (int m = 0; m < kMethods; ++m)
          if (has(width, m)) err_num[wi][m][li] = output_energy(wl - q[m][li], h);

        // int8 activations on the evaluation sample.
        const std::size_t input = static_cast<std::size_t>(input_of(slot));
        for (int am = 0; am < kActMethods; ++am) {
          ActQuantized& a = act[wi][am][li];
          a.smooth = smooth_of(am, input);
          a.exact = exact_of(am, input);
          if (!a.smooth.empty()) {
            const Eigen::Map<const Eigen::RowVectorXf> sv(a.smooth.data(), st.in);
            a.w = rtn(wl.array().rowwise() * sv.array(), width);
          } else if (!a.exact.empty()) {
            RowMatrix wz = wl;
            for (Eigen::Index c = 0; c < wz.cols(); ++c)
              if (a.exact[static_cast<std::size_t>(c)]) wz.col(c).setZero();
            a.w = rtn(wz, width);
            for (Eigen::Index c = 0; c < wz.cols(); ++c)
              if (a.exact[static_cast<std::size_t>(c)]) a.w.col(c) = wl.col(c);
          } else {
            a.w = q[kRtn][li];
          }
          const RowMatrix& xq = eval_xq[input][static_cast<std::size_t>(am)];
          const RowMatrix& y = eval_y[static_cast<std::size_t>(slot)];
          act_err_num[wi][am][li] = (y - xq * a.w.transpose()).cast<double>().squaredNorm();
        }
      }
    }
  }

  std::printf("lowbit PTQ report on %s: calibration %lld windows of calib.txt, errors on %lld "
              "windows of eval.txt (%.1f s to collect)\n",
              dir.c_str(), static_cast<long long>(calib_windows), static_cast<long long>(eval_windows),
              calib_seconds);
  std::printf("relative output error ||X W^T - X Wq^T||^2 / ||X W^T||^2 (X from eval.txt)\n");
  const auto linear_name = [&](std::size_t li) {
    return model.linear_name(static_cast<std::int64_t>(li) / llama::kLinearsPerLayer,
                             static_cast<int>(li % llama::kLinearsPerLayer));
  };
  for (std::size_t wi = 0; wi < std::size(kWidths) && !quiet; ++wi) {
    std::printf("\n%-34s", kWidths[wi].name);
    for (int m = 0; m < kMethods; ++m) std::printf(" %11s", kMethodNames[m]);
    std::printf("\n");
    for (std::size_t li = 0; li < linears; ++li) {
      std::printf("%-34s", linear_name(li).c_str());
      for (int m = 0; m < kMethods; ++m)
        if (has(kWidths[wi], m))
          std::printf(" %11.3e", err_num[wi][m][li] / energy[li]);
        else
          std::printf(" %11s", "-");
      std::printf("\n");
    }
  }
  std::printf(
      "\nwith int8 activations (per token, dynamic), X a sample of %lld eval.txt tokens; "
      "SmoothQuant alpha %.2f on q/k/v and gate/up; LLM.int8 outlier columns (max |x| >= %.0f "
      "on calib.txt) in fp32\n",
      static_cast<long long>(stats[0].eval_sample.tokens), kSmoothAlpha,
      static_cast<double>(lowbit::kLlmInt8Threshold));
  std::printf("%-34s %16s %16s %16s %16s\n", "input (per layer)", "attention", "o_proj", "mlp",
              "down_proj");
  for (std::int64_t l = 0; l < layers; ++l) {
    std::printf("layer %lld outlier columns, s range   ", static_cast<long long>(l));
    for (int input = 0; input < 4; ++input) {
      const std::size_t ii = static_cast<std::size_t>(l * 4 + input);
      if (input == 1 || input == 3)
        std::printf(" %4lld %11s", static_cast<long long>(outlier_columns[ii]), "-");
      else
        std::printf(" %4lld %5.2f-%5.1f", static_cast<long long>(outlier_columns[ii]),
                    static_cast<double>(smooth_range[ii].first),
                    static_cast<double>(smooth_range[ii].second));
    }
    std::printf("\n");
  }
  {
    // LLM.int8's fixed threshold is in absolute units: what it keeps in fp32 depends on the model.
    double exact = 0, all = 0;
    for (std::size_t li = 0; li < linears; ++li) {
      const std::int64_t l = static_cast<std::int64_t>(li) / llama::kLinearsPerLayer;
      const int slot = static_cast<int>(li % llama::kLinearsPerLayer);
      const auto shape = llama::linear_shape(cfg, slot);
      exact += static_cast<double>(
          outlier_columns[static_cast<std::size_t>(l * 4 + input_of(slot))] * shape.first);
      all += static_cast<double>(shape.first * shape.second);
    }
    std::printf("LLM.int8 keeps %.2f%% of the decoder weights (whole input columns) in fp32\n",
                100.0 * exact / all);
  }
  for (std::size_t wi = 0; wi < std::size(kWidths) && !quiet; ++wi) {
    std::printf("\n%-34s", (std::string(kWidths[wi].name) + ", a8").c_str());
    for (int m = 0; m < kActMethods; ++m) std::printf(" %11s", kActMethodNames[m]);
    std::printf("\n");
    for (std::size_t li = 0; li < linears; ++li) {
      std::printf("%-34s", linear_name(li).c_str());
      for (int m = 0; m < kActMethods; ++m)
        std::printf(" %11.3e", act_err_num[wi][m][li] / act_energy[li]);
      std::printf("\n");
    }
  }

  // Perplexity with every decoder linear replaced by make(linear index).
  using MakeLinear = std::function<std::unique_ptr<llama::Linear>(std::size_t)>;
  const auto ppl = [&](const MakeLinear& make) {
    llama::LinearFactory factory = nullptr;
    if (make)
      factory = [&](const std::string& name, const float*, std::int64_t,
                    std::int64_t) -> lowbit::Result<std::unique_ptr<llama::Linear>> {
        for (std::size_t li = 0; li < linears; ++li)
          if (linear_name(li) == name) return make(li);
        return lowbit::Status(lowbit::Errc::kInvalidArgument, "no replacement for a linear");
      };
    llama::LlamaModel m = take(llama::LlamaModel::load(dir, factory), "loading a quantized model");
    llama::PerplexityOptions po;
    po.max_windows = ppl_windows;
    po.threads = threads;
    return take(llama::evaluate_perplexity(m, eval.data(), eval.size(), po), "perplexity").perplexity;
  };
  const auto dense = [](const std::vector<RowMatrix>& ws) -> MakeLinear {
    return [&ws](std::size_t li) -> std::unique_ptr<llama::Linear> {
      const RowMatrix& q = ws[li];
      return std::make_unique<llama::DenseLinear>(std::vector<float>(q.data(), q.data() + q.size()),
                                                  q.rows(), q.cols());
    };
  };
  const auto ratio = [&](const std::vector<double>& num, const std::vector<double>& den) {
    double n = 0, d = 0;
    for (std::size_t li = 0; li < linears; ++li) {
      n += num[li];
      d += den[li];
    }
    return n / d;
  };
  std::printf("\n%-24s %-12s %14s %14s %11s\n", "width", "method", "total error", "perplexity",
              "vs fp32");
  const double fp32 = ppl(nullptr);
  std::printf("%-24s %-12s %14s %14.6f %11s\n", "fp32", "-", "-", fp32, "-");
  for (std::size_t wi = 0; wi < std::size(kWidths); ++wi) {
    for (int m = 0; m < kMethods; ++m) {
      if (!has(kWidths[wi], m)) continue;
      const double p = ppl(dense(quantized[wi][m]));
      std::printf("%-24s %-12s %14.4e %14.6f %+10.3f%%\n", kWidths[wi].name, kMethodNames[m],
                  ratio(err_num[wi][m], energy), p, 100.0 * (p / fp32 - 1.0));
    }
    for (int m = 0; m < kActMethods; ++m) {
      const std::vector<ActQuantized>& layers_a8 = act[wi][m];
      const double p = ppl([&](std::size_t li) -> std::unique_ptr<llama::Linear> {
        return std::make_unique<ActQuantLinear>(layers_a8[li]);
      });
      std::printf("%-24s %-12s %14.4e %14.6f %+10.3f%%\n",
                  (std::string(kWidths[wi].name) + ", a8").c_str(), kActMethodNames[m],
                  ratio(act_err_num[wi][m], act_energy), p, 100.0 * (p / fp32 - 1.0));
    }
    const EasyQuantCost& c = easyquant_cost[wi];
    std::printf(
        "  EasyQuant kept %lld weights (%.3f%%) exact: %.3f bits/weight with the side list, "
        "%.3f without\n",
        static_cast<long long>(c.outliers),
        100.0 * static_cast<double>(c.outliers) / static_cast<double>(c.weights),
        8.0 * (c.dense_bytes + c.sparse_bytes) / static_cast<double>(c.weights),
        8.0 * c.dense_bytes / static_cast<double>(c.weights));
  }
  // Mixed precision at each budget, GPTQ and RTN values, against the uniform width that fits.
  std::vector<lowbit::BitWidthCost> costs;
  for (const Width& w : kWidths) costs.push_back({w.bits, storage_bits(w)});
  for (double budget : kBudgets) {
    const lowbit::BitAllocation a = take(lowbit::allocate_bits(bit_stats, costs, budget), "allocation");
    std::printf("\nmixed precision, budget %.2f bits/weight: allocated %.3f (%s), uniform would be "
                "%d bits at %.3f\n  widths per linear:", budget, a.average_cost,
                a.proven_optimal ? "optimal for the model" : "best found", a.uniform_bits,
                a.uniform_average_cost);
    for (std::size_t li = 0; li < linears; ++li)
      std::printf("%s%d", li % llama::kLinearsPerLayer == 0 ? " | " : " ", a.bits[li]);
    std::printf("\n");
    for (Method m : {kRtn, kGptq}) {
      std::vector<RowMatrix> mixed(linears);
      double num = 0, den = 0;
      for (std::size_t li = 0; li < linears; ++li) {
        std::size_t wi = 0;
        while (kWidths[wi].bits != a.bits[li]) ++wi;
        mixed[li] = quantized[wi][m][li];
        num += err_num[wi][m][li];
        den += energy[li];
      }
      const double p = ppl(dense(mixed));
      char label[32];
      std::snprintf(label, sizeof label, "mixed %.2fb", budget);
      std::printf("%-24s %-12s %14.4e %14.6f %+10.3f%%\n", label, kMethodNames[m], num / den, p,
                  100.0 * (p / fp32 - 1.0));
    }
  }

  std::printf("\nperplexity over %lld windows of eval.txt (--full: all 1024)\n",
              static_cast<long long>(ppl_windows));
  std::printf("time spent per method over all widths and layers (%d threads for GPTQ): ", threads);
  for (int m = 0; m < kMethods; ++m) std::printf("%s %.2f s%s", kMethodNames[m], method_seconds[m],
                                                 m + 1 < kMethods ? ", " : "\n");
  return 0;
}
