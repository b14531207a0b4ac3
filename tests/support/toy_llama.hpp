// tests/support/toy_llama.hpp: a small random Llama for the tests of the examples' training code
// (test_llama_backward, test_distill); it brings support/status.hpp's helpers with it.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "llama/llama.hpp"
#include "lowbit/status.hpp"
#include "support/random.hpp"
#include "support/status.hpp"

namespace lowbit_test {

// Random weights for a LlamaConfig, kept alive here; weights() views them as llama.hpp's
// LlamaWeights. Linears ~ N(0, 1/in) so activations stay O(1); norms ~ 1 + N(0, 0.1²).
struct ToyWeights {
  llama::LlamaConfig config;
  std::vector<float> embed, norm, lm_head;
  std::vector<std::vector<float>> norms_in, norms_post;
  std::vector<std::vector<float>> linears;  // [layer * 7 + slot]

  explicit ToyWeights(const llama::LlamaConfig& c, std::uint32_t seed) : config(c) {
    const std::int64_t D = c.hidden_size, V = c.vocab_size;
    std::uint32_t s = seed;
    embed = gaussian(V * D, 1.0f, s++);
    norm = gaussian(D, 0.1f, s++, 1.0f);
    lm_head = gaussian(V * D, 1.0f / std::sqrt(static_cast<float>(D)), s++);
    for (std::int64_t l = 0; l < c.num_layers; ++l) {
      norms_in.push_back(gaussian(D, 0.1f, s++, 1.0f));
      norms_post.push_back(gaussian(D, 0.1f, s++, 1.0f));
      for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot) {
        const auto shape = llama::linear_shape(c, slot);
        linears.push_back(
            gaussian(shape.first * shape.second, 1.0f / std::sqrt(static_cast<float>(shape.second)), s++));
      }
    }
  }

  // Views of layers [first, first + count) as a model of `count` layers.
  llama::LlamaWeights weights(std::int64_t first = 0, std::int64_t count = -1) const {
    llama::LlamaWeights w;
    w.config = config;
    if (count < 0) count = config.num_layers - first;
    w.config.num_layers = count;
    w.embed_tokens = embed.data();
    w.norm = norm.data();
    w.lm_head = lm_head.data();
    for (std::int64_t l = first; l < first + count; ++l) {
      llama::LlamaWeights::Layer layer;
      layer.input_norm = norms_in[static_cast<std::size_t>(l)].data();
      layer.post_attention_norm = norms_post[static_cast<std::size_t>(l)].data();
      for (int slot = 0; slot < llama::kLinearsPerLayer; ++slot)
        layer.linear[slot] = linears[static_cast<std::size_t>(l * 7 + slot)].data();
      w.layers.push_back(layer);
    }
    return w;
  }
};

// Hidden 16, 2 layers, 4 heads sharing 2 kv heads, head_dim 4, ffn 24, vocab 32.
inline llama::LlamaConfig toy_config() {
  llama::LlamaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  c.max_positions = 64;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}

inline std::vector<std::int32_t> random_tokens(std::int64_t n, std::int32_t vocab,
                                               std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> d(0, vocab - 1);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (std::int32_t& x : t) x = d(rng);
  return t;
}

}  // namespace lowbit_test
