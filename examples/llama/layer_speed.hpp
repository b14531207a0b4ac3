// layer_speed.hpp: decode and prefill speed of one Llama-3-8B decoder layer with fp32, INT8 and INT4
// linears, all measured in one run so the ratios to fp32 share the machine's state.
//
//   llama::LayerSpeedOptions o;              // threads {1, 2}, 3 repetitions
//   lowbit::Status s = llama::run_layer_speed(o);  // prints the table on stdout
//
// run by layer_speed (its command line: [--threads 1,2] [--reps 3] [--quick]) and by lowbit_evaluate
// --full, so that the end-to-end table and this layer's speed come from one run.
//
// The layer is llama.hpp's own forward pass (RMSNorm, q/k/v/o, rotary embedding, grouped-query
// attention over the KV cache, SwiGLU) on a one-layer model of Llama-3-8B's shape: hidden 4096,
// 32 heads, 8 KV heads, head dim 128, FFN 14336, rope theta 500000. Weights are random N(0, 0.02)
// (a trained layer's scale; the speed of these kernels does not depend on the values). The
// vocabulary is cut to 256 bytes so the embedding and the fp32 lm_head (1M weights, against the
// layer's 218M) cost next to nothing.
//
// Linears: fp32 = Eigen GEMM/GEMV on the [out, in] matrix, split into 64-row blocks run on the
// same lowbit::ThreadPool as the quantized kernels (Eigen's own threading needs OpenMP and does
// not parallelise the GEMV of decode, so "fp32 on 2 threads" is this split); INT8 = Q8_0 through
// dequant_gemm, and SmoothQuant-style W8A8 through gemm_w8a8; INT4 = Q4_0 and Q4_K through
// dequant_gemm, and W4A8 (Q4_0 weights, int8 activations) through gemm. Attention and the norms
// are llama.hpp's single-threaded code in every variant.
//
// Timing: per repetition, a prompt (512 tokens; 64 with --quick) is prefilled into an empty cache,
// then `steps` tokens (16; 4 with --quick) are decoded one at a time, so decode attends over a KV
// length of 512..527: fixed up to 3%. The table gives the median over repetitions of prefill
// tokens/s and decode tokens/s, and each one's ratio to fp32 at the same thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "llama/quantized_linear.hpp"
#include "lowbit/cpu.hpp"
#include "lowbit/executor.hpp"

namespace llama {

struct LayerSpeedOptions {
  std::vector<int> threads = {1, 2};
  int reps = 3;        // median over repetitions
  bool quick = false;  // 64-token prompt, 4 decode steps, 1 repetition
};

namespace layer_speed_detail {

using lowbit::Result;
using lowbit::Status;

using lowbit::Result;
using lowbit::Status;

// Forwards to whichever pool is current, so one model runs at 1 and at 2 threads without being
// quantized twice.
class SwitchableExecutor final : public lowbit::Executor {
 public:
  void set(lowbit::Executor* e) noexcept { current_ = e; }
  void parallel_for(std::int64_t task_count, lowbit::TaskRef task) override {
    current_->parallel_for(task_count, task);
  }
  int concurrency() const noexcept override { return current_->concurrency(); }

 private:
  lowbit::Executor* current_ = nullptr;
};

// The fp32 baseline on the executor: Eigen on 64-row slices of W, one task each.
class SplitDenseLinear final : public llama::Linear {
 public:
  SplitDenseLinear(const float* w, std::int64_t out, std::int64_t in, lowbit::Executor* e)
      : Linear(in, out), w_(w), executor_(e) {}
  Status forward(const float* x, std::int64_t tokens, float* y) const override {
    if (tokens < 0 || (tokens > 0 && (x == nullptr || y == nullptr)))
      return Status(lowbit::Errc::kInvalidArgument, "linear: negative token count or null buffer");
    if (tokens == 0) return {};
    const std::int64_t in = in_features(), out = out_features();
    using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    constexpr std::int64_t kRows = 64;
    executor_->parallel_for((out + kRows - 1) / kRows, [&](std::int64_t b0, std::int64_t b1) {
      const std::int64_t r0 = b0 * kRows, r1 = std::min(out, b1 * kRows);
      Eigen::Map<const RowMatrix> xm(x, tokens, in), wm(w_ + r0 * in, r1 - r0, in);
      Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> ym(y + r0, tokens, r1 - r0,
                                                        Eigen::OuterStride<>(out));
      ym.noalias() = xm * wm.transpose();
    });
    return {};
  }

 private:
  const float* w_;
  lowbit::Executor* executor_;
};

// splitmix64 + Box-Muller: N(0, sigma) floats, fast enough for 218M values.
inline void fill_normal(std::vector<float>& v, float sigma, std::uint64_t seed) {
  std::uint64_t s = seed;
  const auto next = [&s]() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  for (std::size_t i = 0; i + 1 < v.size(); i += 2) {
    const double u1 = (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53;
    const double u2 = (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * sigma;
    v[i] = static_cast<float>(r * std::cos(6.283185307179586 * u2));
    v[i + 1] = static_cast<float>(r * std::sin(6.283185307179586 * u2));
  }
  if (v.size() % 2 == 1) v.back() = 0.0f;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Variant {
  const char* name;
  const char* bits;
  int kind;  // 0 fp32, 1 dequant ggml, 2 int8-act ggml, 3 w8a8
  lowbit::io::GgmlType type;
};

struct Timing {
  double prefill_tps = 0, decode_tps = 0;
};

}  // namespace layer_speed_detail

// Builds the layer with each kind of linear, times it and prints the table; the first error is
// returned (nothing is printed for the variants after it).
inline lowbit::Status run_layer_speed(const LayerSpeedOptions& options) {
  using namespace layer_speed_detail;
  if (options.reps < 1 || options.threads.empty())
    return Status(lowbit::Errc::kInvalidArgument, "layer speed: reps < 1 or no thread count");
  const int reps = options.quick ? 1 : options.reps;
  const std::vector<int>& threads = options.threads;
  const std::int64_t prompt = options.quick ? 64 : 512, steps = options.quick ? 4 : 16;

  llama::LlamaConfig c;
  c.vocab_size = 256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 1;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.max_positions = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  LOWBIT_TRY(c.validate());

  std::printf("Llama-3-8B decoder layer: hidden %lld, heads %lld/%lld, head_dim %lld, FFN %lld\n",
              static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_heads),
              static_cast<long long>(c.num_kv_heads), static_cast<long long>(c.head_dim),
              static_cast<long long>(c.intermediate_size));
  std::printf("prefill %lld tokens, decode %lld tokens at KV %lld..%lld, %d rep(s), ISA %s\n",
              static_cast<long long>(prompt), static_cast<long long>(steps),
              static_cast<long long>(prompt), static_cast<long long>(prompt + steps - 1), reps,
              lowbit::isa_name(lowbit::best_isa()));
  std::fflush(stdout);

  // Weights: N(0, 0.02) linears, unit norms, N(0, 1) embeddings.
  const auto t_gen = std::chrono::steady_clock::now();
  std::vector<std::vector<float>> lin(llama::kLinearsPerLayer);
  std::int64_t layer_params = 0;
  for (int s = 0; s < llama::kLinearsPerLayer; ++s) {
    const auto shape = llama::linear_shape(c, s);
    lin[static_cast<std::size_t>(s)].resize(static_cast<std::size_t>(shape.first * shape.second));
    fill_normal(lin[static_cast<std::size_t>(s)], 0.02f, 1000 + static_cast<std::uint64_t>(s));
    layer_params += shape.first * shape.second;
  }
  std::vector<float> embed(static_cast<std::size_t>(c.vocab_size * c.hidden_size));
  std::vector<float> head(embed.size());
  std::vector<float> ones(static_cast<std::size_t>(c.hidden_size), 1.0f);
  fill_normal(embed, 1.0f, 7);
  fill_normal(head, 0.02f, 8);
  std::printf("weights generated in %.1f s (%lld parameters in the layer's linears)\n\n",
              seconds_since(t_gen), static_cast<long long>(layer_params));

  const auto make_weights = [&]() {
    llama::LlamaWeights w;
    w.config = c;
    w.embed_tokens = embed.data();
    w.lm_head = head.data();
    w.norm = ones.data();
    llama::LlamaWeights::Layer layer;
    layer.input_norm = ones.data();
    layer.post_attention_norm = ones.data();
    for (int s = 0; s < llama::kLinearsPerLayer; ++s) layer.linear[s] = lin[static_cast<std::size_t>(s)].data();
    w.layers.push_back(layer);
    return w;
  };

  using T = lowbit::io::GgmlType;
  const Variant variants[] = {
      {"fp32 Eigen (split rows)", "fp32", 0, T::kF32},
      {"Q8_0 dequant_gemm", "INT8", 1, T::kQ8_0},
      {"W8A8 gemm_w8a8", "INT8", 3, T::kQ8_0},
      {"Q4_0 dequant_gemm", "INT4", 1, T::kQ4_0},
      {"Q4_K dequant_gemm", "INT4", 1, T::kQ4_K},
      {"W4A8 Q4_0 int8 gemm", "INT4", 2, T::kQ4_0},
  };
  constexpr int kVariants = sizeof(variants) / sizeof(variants[0]);
  std::vector<std::vector<Timing>> results(kVariants, std::vector<Timing>(threads.size()));
  std::vector<std::size_t> bytes(kVariants, 0);
  std::vector<std::unique_ptr<lowbit::ThreadPool>> pools;
  for (int t : threads) pools.push_back(std::make_unique<lowbit::ThreadPool>(t));
  SwitchableExecutor exec;
  exec.set(pools.front().get());

  std::vector<std::int32_t> ids(static_cast<std::size_t>(prompt + steps));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 37 + 11) % 256);
  std::vector<float> logits(static_cast<std::size_t>(prompt * c.vocab_size));

  for (int v = 0; v < kVariants; ++v) {
    const Variant& var = variants[v];
    std::vector<llama::LinearSize> sizes;
    llama::LinearFactory factory;
    switch (var.kind) {
      case 0:
        factory = [&exec](const std::string&, const float* w, std::int64_t out,
                          std::int64_t in) -> Result<std::unique_ptr<llama::Linear>> {
          return std::unique_ptr<llama::Linear>(new SplitDenseLinear(w, out, in, &exec));
        };
        break;
      case 1: factory = llama::dequant_factory(var.type, &exec, &sizes); break;
      case 2: factory = llama::int8_act_factory(var.type, &exec, &sizes); break;
      default: factory = llama::w8a8_factory(&exec, &sizes); break;
    }
    const auto t_build = std::chrono::steady_clock::now();
    Result<llama::LlamaModel> model = llama::LlamaModel::from_weights(make_weights(), factory);
    if (!model) return model.status();
    const double build_s = seconds_since(t_build);
    if (var.kind == 0) {
      bytes[static_cast<std::size_t>(v)] = static_cast<std::size_t>(layer_params) * sizeof(float);
    } else {
      for (const llama::LinearSize& s : sizes) bytes[static_cast<std::size_t>(v)] += s.bytes;
    }
    Result<llama::LlamaState> state = model->new_state(prompt + steps);
    if (!state) return state.status();

    for (std::size_t ti = 0; ti < threads.size(); ++ti) {
      exec.set(pools[ti].get());
      // Warm-up: one short prefill and decode (page faults, pool start, caches).
      state->reset();
      LOWBIT_TRY(model->forward(ids.data(), 8, *state, logits.data()));
      LOWBIT_TRY(model->decode(ids[8], *state, logits.data()));
      std::vector<double> prefill, decode;
      for (int r = 0; r < reps; ++r) {
        state->reset();
        auto t0 = std::chrono::steady_clock::now();
        LOWBIT_TRY(model->forward(ids.data(), prompt, *state, logits.data()));
        prefill.push_back(static_cast<double>(prompt) / seconds_since(t0));
        t0 = std::chrono::steady_clock::now();
        for (std::int64_t i = 0; i < steps; ++i)
          LOWBIT_TRY(model->decode(ids[static_cast<std::size_t>(prompt + i)], *state, logits.data()));
        decode.push_back(static_cast<double>(steps) / seconds_since(t0));
      }
      results[static_cast<std::size_t>(v)][ti] = {median(prefill), median(decode)};
    }
    std::printf("  measured %-24s (built in %.1f s)\n", var.name, build_s);
    std::fflush(stdout);
  }

  std::printf("\n%-24s %-5s %9s %7s | %7s %11s %7s | %11s %7s\n", "linears", "bits", "layer MB",
              "bpw", "threads", "decode t/s", "x fp32", "prefill t/s", "x fp32");
  for (std::size_t ti = 0; ti < threads.size(); ++ti) {
    for (int v = 0; v < kVariants; ++v) {
      const Timing& t = results[static_cast<std::size_t>(v)][ti];
      const Timing& base = results[0][ti];
      const double b = static_cast<double>(bytes[static_cast<std::size_t>(v)]);
      std::printf("%-24s %-5s %9.1f %7.2f | %7d %11.2f %7.2f | %11.1f %7.2f\n", variants[v].name,
                  variants[v].bits, b / 1e6, 8.0 * b / static_cast<double>(layer_params),
                  threads[ti], t.decode_tps, t.decode_tps / base.decode_tps, t.prefill_tps,
                  t.prefill_tps / base.prefill_tps);
    }
  }
  return {};
}

}  // namespace llama
