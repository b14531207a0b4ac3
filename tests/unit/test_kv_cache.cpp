// lowbit/kv_cache.hpp (KIVI-style quantized KV cache) and its use by examples/llama/llama.hpp.
//
// The expected values come from a scalar re-implementation of the KIVI rule written here from the
// math, not from the library: fp16 parameters found by searching a sorted table of every finite
// half (the library steps bit patterns), codes rounded with std::nearbyint (the library uses
// floor and the fraction), groups walked token by token. No reference file exists for KIVI's
// grouping with fp16 directed rounding, so no data is copied to tests/data; the model test reads
// tinylm from models/tinylm as test_llama_tinylm.cpp does.
#include <doctest/doctest.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "llama/llama.hpp"
#include "lowbit/kv_cache.hpp"

namespace {

using lowbit::Errc;
using lowbit::KvFlush;
using lowbit::KvNonFinite;
using lowbit::KvQuantConfig;
using lowbit::QuantizedKvCache;
using lowbit::Result;
using lowbit::Status;

constexpr std::uint32_t kSeed = 20240501;

// ---- The reference: KIVI's asymmetric min-max, written from the formulas.

// Every finite half value, ascending (-0 and +0 both present; equal values are harmless).
const std::vector<float>& half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t;
    for (std::uint32_t b = 0; b < 0x10000u; ++b) {
      const float f = lowbit::to_float(lowbit::Half{static_cast<std::uint16_t>(b)});
      if (std::isfinite(f)) t.push_back(f);
    }
    std::sort(t.begin(), t.end());
    return t;
  }();
  return table;
}
// The largest half <= v and the smallest half >= v.
float half_floor(double v) {
  const std::vector<float>& t = half_table();
  auto it = std::upper_bound(t.begin(), t.end(), v,
                             [](double a, float b) { return a < static_cast<double>(b); });
  REQUIRE(it != t.begin());
  return *(it - 1);
}
float half_ceil(double v) {
  const std::vector<float>& t = half_table();
  auto it = std::lower_bound(t.begin(), t.end(), v,
                             [](float a, double b) { return static_cast<double>(a) < b; });
  REQUIRE(it != t.end());
  return *it;
}

struct RefParams {
  float scale, minimum;
};
// Parameters of one group: minimum rounded down to a half, scale = (max - minimum)/(2^b - 1)
// rounded up to a half, so the stored pair still covers [min, max].
RefParams ref_params(const std::vector<float>& x, int bits) {
  const float lo = *std::min_element(x.begin(), x.end());
  const float hi = *std::max_element(x.begin(), x.end());
  RefParams p;
  p.minimum = half_floor(lo);
  p.scale = half_ceil((static_cast<double>(hi) - p.minimum) / ((1 << bits) - 1));
  return p;
}
int ref_code(float x, RefParams p, int bits) {
  if (p.scale == 0) return 0;
  REQUIRE(std::fegetround() == FE_TONEAREST);
  const double q = std::nearbyint((static_cast<double>(x) - p.minimum) / p.scale);  // ties to even
  return static_cast<int>(std::min<double>(std::max(q, 0.0), (1 << bits) - 1));
}
float ref_dequant(int code, RefParams p) {
  const float product = static_cast<float>(code) * p.scale;  // exact: 8 + 11 significant bits
  return product + p.minimum;
}

// A stream of tokens [length][hd], row-major, and what the reference expects it to dequantize to.
struct RefStream {
  std::vector<float> keys, values;    // input
  std::vector<float> want_k, want_v;  // expected dequantized output
  std::vector<float> key_scale;       // [length][hd]: the scale of the element's group (0: fp32)
  std::vector<float> value_scale;     // [length][hd]
  std::int64_t quantized = 0;
};

// The KIVI rule: once flushed, the first G·floor(max(L - R, 0)/G) tokens are quantized in groups
// of G (keys: per channel over the G tokens; values: per token over vg channels), the rest fp32.
RefStream kivi_reference(const std::vector<float>& keys, const std::vector<float>& values,
                         std::int64_t hd, const KvQuantConfig& cfg) {
  const std::int64_t length = static_cast<std::int64_t>(keys.size()) / hd;
  const std::int64_t g = cfg.group_tokens, vg = cfg.value_group == 0 ? hd : cfg.value_group;
  RefStream r;
  r.keys = keys;
  r.values = values;
  r.want_k = keys;
  r.want_v = values;
  r.key_scale.assign(keys.size(), 0.0f);
  r.value_scale.assign(keys.size(), 0.0f);
  r.quantized = length > cfg.residual ? (length - cfg.residual) / g * g : 0;
  const auto at = [&](std::int64_t t, std::int64_t c) {
    return static_cast<std::size_t>(t * hd + c);
  };
  for (std::int64_t t0 = 0; t0 < r.quantized; t0 += g) {
    for (std::int64_t c = 0; c < hd; ++c) {  // a key channel across the group's tokens
      std::vector<float> x;
      for (std::int64_t t = t0; t < t0 + g; ++t) x.push_back(keys[at(t, c)]);
      const RefParams p = ref_params(x, cfg.bits);
      for (std::int64_t t = t0; t < t0 + g; ++t) {
        r.want_k[at(t, c)] = ref_dequant(ref_code(keys[at(t, c)], p, cfg.bits), p);
        r.key_scale[at(t, c)] = p.scale;
      }
    }
    for (std::int64_t t = t0; t < t0 + g; ++t)  // a value token, vg channels at a time
      for (std::int64_t c0 = 0; c0 < hd; c0 += vg) {
        std::vector<float> x(values.begin() + static_cast<std::ptrdiff_t>(at(t, c0)),
                             values.begin() + static_cast<std::ptrdiff_t>(at(t, c0 + vg)));
        const RefParams p = ref_params(x, cfg.bits);
        for (std::int64_t c = c0; c < c0 + vg; ++c) {
          r.want_v[at(t, c)] = ref_dequant(ref_code(values[at(t, c)], p, cfg.bits), p);
          r.value_scale[at(t, c)] = p.scale;
        }
      }
  }
  return r;
}

// Keys with per-channel outliers (channel c scaled by 1 + 8·[c % 7 == 3]) and a per-channel
// offset, values plain normal: the shapes KIVI's grouping is designed for.
void random_tokens(std::int64_t length, std::int64_t hd, std::uint32_t seed, std::vector<float>* k,
                   std::vector<float>* v) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  k->resize(static_cast<std::size_t>(length * hd));
  v->resize(k->size());
  for (std::int64_t t = 0; t < length; ++t)
    for (std::int64_t c = 0; c < hd; ++c) {
      const float outlier = (c % 7 == 3) ? 9.0f : 1.0f;
      (*k)[static_cast<std::size_t>(t * hd + c)] =
          outlier * normal(rng) + 0.25f * static_cast<float>(c % 5);
      (*v)[static_cast<std::size_t>(t * hd + c)] = normal(rng);
    }
}

struct Dequantized {
  std::vector<float> keys, values;
};
Dequantized dequantize_all(const QuantizedKvCache& cache, std::int64_t layer, std::int64_t head) {
  Result<lowbit::KvStreamInfo> info = cache.info(layer, head);
  REQUIRE(info.has_value());
  const std::int64_t n = info->length, hd = cache.head_dim();
  Dequantized d;
  d.keys.assign(static_cast<std::size_t>(n * hd), -1.0f);
  d.values.assign(d.keys.size(), -1.0f);
  REQUIRE(cache
              .dequantize(layer, head, n, lowbit::row_major(d.keys.data(), n, hd),
                          lowbit::row_major(d.values.data(), n, hd))
              .ok());
  return d;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

QuantizedKvCache make_cache(std::int64_t layers, std::int64_t heads, std::int64_t hd,
                            std::int64_t capacity, const KvQuantConfig& cfg) {
  Result<QuantizedKvCache> c = QuantizedKvCache::create(layers, heads, hd, capacity, cfg);
  INFO(c.status().message());
  REQUIRE(c.has_value());
  return std::move(*c);
}

Status append_rows(QuantizedKvCache& cache, std::int64_t layer, std::int64_t head,
                   const std::vector<float>& k, const std::vector<float>& v, std::int64_t first,
                   std::int64_t count, KvFlush flush = KvFlush::kNow) {
  const std::int64_t hd = cache.head_dim();
  return cache.append(layer, head, lowbit::row_major(k.data() + first * hd, count, hd),
                      lowbit::row_major(v.data() + first * hd, count, hd), flush);
}

// The bytes of a stream of `length` tokens, from the layout in kv_cache.hpp's header comment.
std::size_t layout_bytes(std::int64_t length, std::int64_t hd, const KvQuantConfig& cfg) {
  const std::int64_t g = cfg.group_tokens, vg = cfg.value_group == 0 ? hd : cfg.value_group;
  const std::int64_t quantized = length > cfg.residual ? (length - cfg.residual) / g * g : 0;
  const std::int64_t codes = (g * hd * cfg.bits + 7) / 8;
  const std::int64_t group = 2 * codes + 4 * hd + 4 * g * (hd / vg);
  return static_cast<std::size_t>(quantized / g * group + (length - quantized) * hd * 2 * 4);
}

}  // namespace

TEST_CASE("kv cache: a small case matches the scalar KIVI reference bit for bit") {
  // hd = 8, G = 4, R = 4, value groups of 4 channels; 13 tokens: 8 quantized, 5 in fp32.
  for (int bits : {2, 4, 8}) {
    KvQuantConfig cfg;
    cfg.bits = bits;
    cfg.group_tokens = 4;
    cfg.residual = 4;
    cfg.value_group = 4;
    const std::int64_t hd = 8, length = 13;
    std::vector<float> k, v;
    random_tokens(length, hd, kSeed + static_cast<std::uint32_t>(bits), &k, &v);
    const RefStream ref = kivi_reference(k, v, hd, cfg);
    REQUIRE(ref.quantized == 8);
    QuantizedKvCache cache = make_cache(1, 1, hd, 64, cfg);
    REQUIRE(append_rows(cache, 0, 0, k, v, 0, length).ok());
    CHECK(cache.info(0, 0)->quantized == 8);
    const Dequantized d = dequantize_all(cache, 0, 0);
    int differ = 0;
    for (std::size_t i = 0; i < k.size(); ++i)
      differ += !same_bits(d.keys[i], ref.want_k[i]) + !same_bits(d.values[i], ref.want_v[i]);
    INFO("bits ", bits);
    CHECK(differ == 0);
    // The codes are not trivial: quantization changed most quantized elements.
    int changed = 0;
    for (std::size_t i = 0; i < 8 * 8; ++i) changed += d.keys[i] != k[i];
    CHECK(changed > 32);
  }
}

TEST_CASE("kv cache: |x - x̂| <= scale/2 per element, the window is exact, any append pattern") {
  std::printf("kv cache round-trip seed %u\n", kSeed);
  const std::int64_t hd = 32;
  std::int64_t configs = 0;
  for (int bits : {2, 4, 8})
    for (std::int64_t residual : {0, 32, 128})
      for (std::int64_t vg : {0, 8}) {
        KvQuantConfig cfg;
        cfg.bits = bits;
        cfg.group_tokens = 32;
        cfg.residual = residual;
        cfg.value_group = vg;
        const std::int64_t length = 301;
        std::vector<float> k, v;
        random_tokens(length, hd, kSeed + static_cast<std::uint32_t>(configs), &k, &v);
        const RefStream ref = kivi_reference(k, v, hd, cfg);
        // Three ways to append the same tokens: all at once; one by one; deferred in odd
        // chunks then flushed. All must store the same bytes.
        QuantizedKvCache bulk = make_cache(1, 1, hd, 512, cfg);
        QuantizedKvCache single = make_cache(1, 1, hd, 512, cfg);
        QuantizedKvCache chunks = make_cache(1, 1, hd, 512, cfg);
        REQUIRE(append_rows(bulk, 0, 0, k, v, 0, length).ok());
        for (std::int64_t t = 0; t < length; ++t)
          REQUIRE(append_rows(single, 0, 0, k, v, t, 1).ok());
        for (std::int64_t t = 0; t < length; t += 37) {
          REQUIRE(append_rows(chunks, 0, 0, k, v, t, std::min<std::int64_t>(37, length - t),
                              KvFlush::kDefer)
                      .ok());
          REQUIRE(chunks.flush_all().ok());
        }
        const Dequantized a = dequantize_all(bulk, 0, 0), b = dequantize_all(single, 0, 0),
                          c = dequantize_all(chunks, 0, 0);
        INFO("bits ", bits, ", R ", residual, ", value_group ", vg);
        CHECK(bulk.info(0, 0)->quantized == ref.quantized);
        CHECK(a.keys == b.keys);
        CHECK(a.values == b.values);
        CHECK(a.keys == c.keys);
        CHECK(a.values == c.values);
        CHECK(bulk.bytes() == single.bytes());
        double worst = 0;  // |x - x̂| / (scale/2) over quantized elements
        int bad = 0, window_bad = 0, ref_bad = 0;
        for (std::int64_t t = 0; t < length; ++t)
          for (std::int64_t ch = 0; ch < hd; ++ch) {
            const std::size_t i = static_cast<std::size_t>(t * hd + ch);
            ref_bad +=
                !same_bits(a.keys[i], ref.want_k[i]) + !same_bits(a.values[i], ref.want_v[i]);
            if (t >= ref.quantized) {  // fp32 window: bit-exact copies
              window_bad += !same_bits(a.keys[i], k[i]) + !same_bits(a.values[i], v[i]);
              continue;
            }
            // x̂ = fl(q·s + m): one float rounding beyond the rounding error s/2.
            const float pairs[2][3] = {{k[i], a.keys[i], ref.key_scale[i]},
                                       {v[i], a.values[i], ref.value_scale[i]}};
            for (const auto& p : pairs) {
              const double err = std::fabs(static_cast<double>(p[0]) - p[1]);
              const double bound =
                  p[2] / 2.0 + std::ldexp(std::fabs(static_cast<double>(p[1])), -24);
              bad += !(err <= bound);
              if (p[2] > 0) worst = std::max(worst, err / (p[2] / 2.0));
            }
          }
        CHECK(bad == 0);
        CHECK(window_bad == 0);
        CHECK(ref_bad == 0);
        CHECK(worst <= 1.0 + 1e-5);
        CHECK(worst > 0.5);  // the bound is tight enough to be worth checking
        ++configs;
      }
}

TEST_CASE("kv cache: group boundaries: quantized = G·floor((L - R)/G), the rest stays fp32") {
  const std::int64_t hd = 4, g = 8, r = 16;
  KvQuantConfig cfg;
  cfg.bits = 4;
  cfg.group_tokens = g;
  cfg.residual = r;
  for (std::int64_t length :
       {std::int64_t{1}, g - 1, g, g + 1, r, r + g - 1, r + g, r + g + 1, 2 * r + 3 * g + 5}) {
    std::vector<float> k, v;
    random_tokens(length, hd, kSeed + static_cast<std::uint32_t>(length), &k, &v);
    QuantizedKvCache cache = make_cache(2, 3, hd, 128, cfg);
    for (std::int64_t t = 0; t < length; ++t) REQUIRE(append_rows(cache, 1, 2, k, v, t, 1).ok());
    const std::int64_t want = length >= r + g ? (length - r) / g * g : 0;
    INFO("length ", length);
    CHECK(cache.info(1, 2)->length == length);
    CHECK(cache.info(1, 2)->quantized == want);
    CHECK(cache.info(0, 0)->length == 0);  // other streams untouched
    CHECK(length - want >= std::min(length, r));
    CHECK(length - want < r + g);
    CHECK(cache.bytes() == layout_bytes(length, hd, cfg));
    const RefStream ref = kivi_reference(k, v, hd, cfg);
    const Dequantized d = dequantize_all(cache, 1, 2);
    CHECK(d.keys == ref.want_k);
    CHECK(d.values == ref.want_v);
    // A prefix that ends inside a quantized group reads the same values.
    if (want > 0) {
      const std::int64_t n = want - 3;
      std::vector<float> pk(static_cast<std::size_t>(n * hd)), pv(pk.size());
      REQUIRE(cache
                  .dequantize(1, 2, n, lowbit::row_major(pk.data(), n, hd),
                              lowbit::row_major(pv.data(), n, hd))
                  .ok());
      CHECK(std::equal(pk.begin(), pk.end(), d.keys.begin()));
      CHECK(std::equal(pv.begin(), pv.end(), d.values.begin()));
    }
  }
}

TEST_CASE("kv cache: bytes() counts codes, fp16 scales and minima, and the fp32 window") {
  // A Llama-like head: hd = 128, G = 32, R = 128, 4096 tokens.
  const std::int64_t hd = 128, length = 4096;
  const double fp32 = static_cast<double>(length * hd * 2 * 4);
  std::vector<float> k, v;
  random_tokens(length, hd, kSeed, &k, &v);
  double previous = fp32;
  for (int bits : {8, 4, 2}) {
    KvQuantConfig cfg;
    cfg.bits = bits;
    cfg.residual = 128;
    QuantizedKvCache cache = make_cache(1, 1, hd, length, cfg);
    REQUIRE(append_rows(cache, 0, 0, k, v, 0, length).ok());
    // Per group of 32 tokens: 2 · 32·128·b/8 code bytes + 128·4 key + 32·4 value parameter bytes.
    CHECK(cache.group_bytes() == static_cast<std::size_t>(2 * 32 * 128 * bits / 8 + 512 + 128));
    CHECK(cache.bytes() == layout_bytes(length, hd, cfg));
    CHECK(cache.bytes() <= cache.reserved_bytes());
    const double ratio = fp32 / static_cast<double>(cache.bytes());
    MESSAGE(bits, "-bit: ", cache.bytes(), " bytes, ", ratio, "x smaller than fp32 (", fp32, ")");
    CHECK(static_cast<double>(cache.bytes()) < previous);
    previous = static_cast<double>(cache.bytes());
    // Bits per element, all costs in: codes + parameters + 128 fp32 tokens of 4096.
    const double window = 128.0 / 4096.0 * 32.0;
    const double params = 32.0 / 32.0 / 2.0 + 32.0 / 128.0 / 2.0;  // keys and values, averaged
    CHECK(static_cast<double>(cache.bytes()) * 8 / (length * hd * 2) ==
          doctest::Approx(bits * 3968.0 / 4096.0 + params * 3968.0 / 4096.0 + window));
  }
  CHECK(fp32 / previous > 8.0);  // 2-bit
}

TEST_CASE("kv cache: bad configs and bad calls are specific Status values; nothing is written") {
  const auto code = [](const KvQuantConfig& c, std::int64_t hd) { return c.validate(hd).code(); };
  KvQuantConfig ok;
  CHECK(code(ok, 128) == Errc::kOk);
  KvQuantConfig c = ok;
  c.bits = 3;
  CHECK(code(c, 128) == Errc::kUnsupported);
  for (int bits : {0, -2, 16}) {
    c.bits = bits;
    CHECK(code(c, 128) == Errc::kInvalidArgument);
  }
  c = ok;
  c.group_tokens = 0;
  CHECK(code(c, 128) == Errc::kInvalidArgument);
  c = ok;
  c.residual = 48;  // not a multiple of 32
  CHECK(code(c, 128) == Errc::kIndivisible);
  c.residual = -32;
  CHECK(code(c, 128) == Errc::kInvalidArgument);
  c = ok;
  c.value_group = 48;
  CHECK(code(c, 128) == Errc::kIndivisible);
  c.value_group = -1;
  CHECK(code(c, 128) == Errc::kInvalidArgument);
  c = ok;
  c.non_finite = static_cast<KvNonFinite>(7);
  CHECK(code(c, 128) == Errc::kInvalidArgument);
  CHECK(code(ok, 0) == Errc::kInvalidArgument);
  c = ok;
  c.residual = 0;  // allowed: only the incomplete group stays fp32
  CHECK(code(c, 128) == Errc::kOk);

  CHECK(QuantizedKvCache::create(0, 1, 8, 8, ok).status().code() == Errc::kInvalidArgument);
  CHECK(QuantizedKvCache::create(1, 1, 8, 0, ok).status().code() == Errc::kInvalidArgument);
  c.bits = 5;
  CHECK(QuantizedKvCache::create(1, 1, 8, 8, c).status().code() == Errc::kUnsupported);

  QuantizedKvCache empty;
  float x[8] = {};
  CHECK(empty
            .append(0, 0, lowbit::row_major<const float>(x, 1, 8),
                    lowbit::row_major<const float>(x, 1, 8))
            .code() == Errc::kInvalidArgument);

  KvQuantConfig small;
  small.group_tokens = 2;
  small.residual = 2;
  const std::int64_t hd = 4;
  QuantizedKvCache cache = make_cache(2, 2, hd, 6, small);
  std::vector<float> k, v;
  random_tokens(8, hd, kSeed, &k, &v);
  REQUIRE(append_rows(cache, 0, 1, k, v, 0, 5).ok());  // 2 quantized, 3 fp32
  const std::size_t bytes = cache.bytes();
  const Dequantized before = dequantize_all(cache, 0, 1);
  const auto unchanged = [&] {
    CHECK(cache.bytes() == bytes);
    CHECK(cache.info(0, 1)->length == 5);
    const Dequantized now = dequantize_all(cache, 0, 1);
    CHECK(now.keys == before.keys);
    CHECK(now.values == before.values);
  };
  const auto view = [](const std::vector<float>& a, std::int64_t rows, std::int64_t cols) {
    return lowbit::row_major(a.data(), rows, cols);
  };
  CHECK(cache.append(2, 0, view(k, 1, hd), view(v, 1, hd)).code() == Errc::kInvalidArgument);
  CHECK(cache.append(0, -1, view(k, 1, hd), view(v, 1, hd)).code() == Errc::kInvalidArgument);
  CHECK(cache.append(0, 1, view(k, 1, 3), view(v, 1, 3)).code() == Errc::kShapeMismatch);
  CHECK(cache.append(0, 1, view(k, 2, hd), view(v, 1, hd)).code() == Errc::kShapeMismatch);
  CHECK(cache.append(0, 1, lowbit::row_major<const float>(nullptr, 1, hd), view(v, 1, hd)).code() ==
        Errc::kInvalidArgument);
  const Status full = cache.append(0, 1, view(k, 2, hd), view(v, 2, hd));  // 5 + 2 > 6
  CHECK(full.code() == Errc::kOutOfRange);
  CHECK(full.index() == 7);
  unchanged();
  std::vector<float> bad = k;
  bad[6] = std::numeric_limits<float>::quiet_NaN();  // row 1, column 2 of a two-row append
  Status s = cache.append(0, 1, view(bad, 2, hd), view(v, 2, hd));
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 6);
  bad = v;
  bad[1] = -std::numeric_limits<float>::infinity();
  s = cache.append(0, 1, view(k, 1, hd), view(bad, 1, hd));
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == 1);
  CHECK(std::string(s.message()).find("value") != std::string::npos);
  bad = k;
  bad[2] = 70000.0f;  // beyond fp16: its group's minimum or scale could not be stored
  s = cache.append(0, 1, view(bad, 1, hd), view(v, 1, hd));
  CHECK(s.code() == Errc::kOutOfRange);
  CHECK(s.index() == 2);
  unchanged();
  // append_layer checks every head before writing any: a NaN in head 1's columns.
  std::vector<float> wide(2 * hd, 1.0f);
  wide[static_cast<std::size_t>(hd + 3)] = std::numeric_limits<float>::quiet_NaN();
  s = cache.append_layer(0, view(wide, 1, 2 * hd), view(wide, 1, 2 * hd));
  CHECK(s.code() == Errc::kNonFinite);
  CHECK(s.index() == hd + 3);
  CHECK(cache.info(0, 0)->length == 0);
  unchanged();
  CHECK(cache.append_layer(0, view(wide, 1, hd), view(wide, 1, hd)).code() == Errc::kShapeMismatch);
  // dequantize, truncate, info.
  std::vector<float> out(static_cast<std::size_t>(8 * hd));
  const auto out_view = [&](std::int64_t rows) { return lowbit::row_major(out.data(), rows, hd); };
  CHECK(cache.dequantize(0, 1, 6, out_view(6), out_view(6)).code() == Errc::kOutOfRange);
  CHECK(cache.dequantize(0, 1, 3, out_view(4), out_view(3)).code() == Errc::kShapeMismatch);
  CHECK(cache.dequantize(0, 1, -1, out_view(0), out_view(0)).code() == Errc::kOutOfRange);
  CHECK(cache.truncate(0, 1, 1).code() == Errc::kOutOfRange);  // inside the quantized group
  CHECK(cache.truncate(0, 1, 6).code() == Errc::kOutOfRange);  // past the end
  CHECK(cache.truncate_all(1).code() == Errc::kOutOfRange);
  CHECK(cache.info(5, 0).status().code() == Errc::kInvalidArgument);
  unchanged();
  CHECK(cache.truncate(0, 1, 2).ok());  // the fp32 tokens can go
  CHECK(cache.info(0, 1)->length == 2);
  CHECK(cache.info(0, 1)->quantized == 2);
  // A zero-token append is a no-op.
  CHECK(cache.append(0, 1, view(k, 0, hd), view(v, 0, hd)).ok());
  CHECK(cache.info(0, 1)->length == 2);
  cache.clear();
  CHECK(cache.bytes() == 0);
  CHECK(cache.info(0, 1)->length == 0);
}

TEST_CASE("kv cache: under kPoisonGroup a NaN or Inf makes exactly its groups NaN") {
  KvQuantConfig cfg;
  cfg.bits = 4;
  cfg.group_tokens = 4;
  cfg.residual = 0;
  cfg.value_group = 4;
  cfg.non_finite = KvNonFinite::kPoisonGroup;
  const std::int64_t hd = 8, length = 14;  // groups at tokens 0-3, 4-7, 8-11; 12-13 fp32
  std::vector<float> k, v;
  random_tokens(length, hd, kSeed + 7, &k, &v);
  const RefStream clean = kivi_reference(k, v, hd, cfg);
  std::vector<float> pk = k, pv = v;
  pk[5 * hd + 2] = std::numeric_limits<float>::quiet_NaN();   // key: token 5, channel 2
  pv[9 * hd + 6] = std::numeric_limits<float>::infinity();    // value: token 9, channel 6
  pk[13 * hd + 1] = -std::numeric_limits<float>::infinity();  // in the fp32 tail
  QuantizedKvCache cache = make_cache(1, 2, hd, 32, cfg);
  REQUIRE(append_rows(cache, 0, 1, pk, pv, 0, length, KvFlush::kDefer).ok());
  REQUIRE(append_rows(cache, 0, 0, k, v, 0, length).ok());  // a clean neighbour
  {  // Before the flush everything is fp32, the bad values as given.
    const Dequantized d = dequantize_all(cache, 0, 1);
    for (std::size_t i = 0; i < pk.size(); ++i) {
      CHECK(same_bits(d.keys[i], pk[i]));
      CHECK(same_bits(d.values[i], pv[i]));
    }
  }
  REQUIRE(cache.flush(0, 1).ok());
  CHECK(cache.info(0, 1)->quantized == 12);
  const Dequantized d = dequantize_all(cache, 0, 1);
  int nan_keys = 0, nan_values = 0, wrong = 0;
  for (std::int64_t t = 0; t < length; ++t)
    for (std::int64_t c = 0; c < hd; ++c) {
      const std::size_t i = static_cast<std::size_t>(t * hd + c);
      const bool key_poisoned = c == 2 && t >= 4 && t < 8;
      const bool value_poisoned = t == 9 && c >= 4;
      nan_keys += std::isnan(d.keys[i]);
      nan_values += std::isnan(d.values[i]);
      if (t == 13 && c == 1) {
        wrong += !(std::isinf(d.keys[i]) && d.keys[i] < 0);  // fp32 tail keeps its -Inf
        continue;
      }
      if (key_poisoned)
        wrong += !std::isnan(d.keys[i]);
      else
        wrong += !same_bits(d.keys[i], clean.want_k[i]);
      if (value_poisoned)
        wrong += !std::isnan(d.values[i]);
      else
        wrong += !same_bits(d.values[i], clean.want_v[i]);
    }
  CHECK(nan_keys == 4);    // one channel of one group of 4 tokens
  CHECK(nan_values == 4);  // one value group (4 channels) of one token
  CHECK(wrong == 0);
  const Dequantized neighbour = dequantize_all(cache, 0, 0);
  CHECK(neighbour.keys == clean.want_k);
  CHECK(neighbour.values == clean.want_v);
}

// ---------------------------------------------------------------------------------------------
// The llama example with a quantized cache, on tinylm.

namespace {

const std::string kModelDir = LOWBIT_TEST_DATA_DIR "/../../models/tinylm";

const llama::LlamaModel& tinylm() {
  static Result<llama::LlamaModel> model = llama::LlamaModel::load(kModelDir);
  INFO("loading ", kModelDir, ": ", model.status().message());
  REQUIRE(model.has_value());
  return *model;
}

std::vector<std::int32_t> eval_window(std::int64_t w, std::int64_t n) {
  std::ifstream f(kModelDir + "/eval.txt", std::ios::binary);
  REQUIRE(f.good());
  std::vector<char> bytes(static_cast<std::size_t>(n));
  f.seekg(w * 256);
  f.read(bytes.data(), static_cast<std::streamsize>(n));
  REQUIRE(f.good());
  std::vector<std::int32_t> ids;
  for (char b : bytes) ids.push_back(static_cast<unsigned char>(b));
  return ids;
}

// -ln softmax(row)[target] in double, written here.
double nll(const float* row, std::int64_t vocab, std::int64_t target) {
  double top = row[0];
  for (std::int64_t i = 1; i < vocab; ++i) top = std::max(top, static_cast<double>(row[i]));
  double sum = 0;
  for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - top);
  return top + std::log(sum) - static_cast<double>(row[target]);
}

// Runs `ids` through the model in forward passes of `chunk` tokens (a pass attends to its own
// tokens in fp32 and to earlier passes' tokens as the cache stores them) and returns the mean
// next-byte loss and every logit.
double chunked_loss(const llama::LlamaModel& m, const std::vector<std::int32_t>& ids,
                    std::int64_t chunk, const KvQuantConfig* kv, std::vector<float>* logits,
                    std::size_t* cache_bytes = nullptr) {
  const std::int64_t n = static_cast<std::int64_t>(ids.size()), vocab = m.config().vocab_size;
  Result<llama::LlamaState> state = kv ? m.new_state(n, *kv) : m.new_state(n);
  REQUIRE(state.has_value());
  logits->assign(static_cast<std::size_t>(n * vocab), 0.0f);
  for (std::int64_t t = 0; t < n; t += chunk) {
    const std::int64_t count = std::min(chunk, n - t);
    REQUIRE(m.forward(ids.data() + t, count, *state, logits->data() + t * vocab).ok());
  }
  CHECK(state->position() == n);
  if (cache_bytes) *cache_bytes = state->cache().bytes();
  double sum = 0;
  for (std::int64_t t = 0; t + 1 < n; ++t)
    sum += nll(logits->data() + t * vocab, vocab, ids[static_cast<std::size_t>(t + 1)]);
  return sum / static_cast<double>(n - 1);
}

}  // namespace

// Mean over positions of KL(p_fp32 || p_quantized) of the next-byte distributions, in nats.
double mean_kl(const std::vector<float>& ref, const std::vector<float>& other, std::int64_t vocab) {
  const std::int64_t n = static_cast<std::int64_t>(ref.size()) / vocab;
  double total = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    const float* a = ref.data() + t * vocab;
    const float* b = other.data() + t * vocab;
    std::vector<double> la(static_cast<std::size_t>(vocab)), lb(la.size());
    for (std::int64_t i = 0; i < vocab; ++i) {  // -nll(i) = log-softmax
      la[static_cast<std::size_t>(i)] = -nll(a, vocab, i);
      lb[static_cast<std::size_t>(i)] = -nll(b, vocab, i);
    }
    for (std::size_t i = 0; i < la.size(); ++i) total += std::exp(la[i]) * (la[i] - lb[i]);
  }
  return total / static_cast<double>(n);
}

TEST_CASE("llama: a quantized KV cache costs tinylm little at 8 bits, more at 4, most at 2") {
  // The first 96 bytes of an evaluation window in passes of 16 tokens (the sanitized build runs a
  // 256-token pass in seconds; one token per pass would be far slower). With G = R = 16, pass p
  // attends to 16·(p-1) quantized positions written by earlier passes, as decoding would.
  //
  // The loss of one short text is too noisy to order the bit widths (on this window 2-bit keys
  // happen to lower it), so the orderings are on the distance to fp32's predictions, the mean
  // KL(p_fp32 || p_kv), which grows with the quantization noise; the loss is checked for 8 bits.
  const llama::LlamaModel& m = tinylm();
  const std::vector<std::int32_t> ids = eval_window(5, 96);
  constexpr std::int64_t kChunk = 16;
  const std::int64_t vocab = m.config().vocab_size;
  std::vector<float> fp32_logits, logits;
  std::size_t fp32_bytes = 0;
  const double fp32 = chunked_loss(m, ids, kChunk, nullptr, &fp32_logits, &fp32_bytes);
  CHECK(fp32_bytes == static_cast<std::size_t>(6 * 4 * 96 * 32 * 2 * 4));

  double loss[9] = {}, kl[9] = {};
  for (int bits : {8, 4, 2}) {
    KvQuantConfig kv;
    kv.bits = bits;
    kv.group_tokens = 16;
    kv.residual = 16;
    std::size_t bytes = 0;
    loss[bits] = chunked_loss(m, ids, kChunk, &kv, &logits, &bytes);
    kl[bits] = mean_kl(fp32_logits, logits, vocab);
    MESSAGE(bits, "-bit KV (G 16, R 16): loss ", loss[bits], " vs fp32 ", fp32, ", KL to fp32 ",
            kl[bits], "; cache ", bytes, " bytes vs ", fp32_bytes);
    // 6 layers x 4 kv heads, 96 positions: 80 quantized (5 groups), 16 fp32.
    CHECK(bytes == 24 * layout_bytes(96, 32, kv));
    // The first pass sees no quantized position: its logits are the fp32 ones exactly.
    CHECK(std::equal(logits.begin(), logits.begin() + kChunk * vocab, fp32_logits.begin()));
  }
  CHECK(std::fabs(loss[8] - fp32) < 0.002);
  CHECK(kl[8] < 1e-4);
  CHECK(kl[4] > 4 * kl[8]);
  CHECK(kl[2] > 4 * kl[4]);

  // A window as long as the sequence never quantizes: the logits are exactly fp32's.
  KvQuantConfig never;
  never.bits = 2;
  never.group_tokens = 16;
  never.residual = 96;
  CHECK(chunked_loss(m, ids, kChunk, &never, &logits) == fp32);
  CHECK(logits == fp32_logits);

  // new_state passes on the config's errors.
  KvQuantConfig bad;
  bad.residual = 40;
  CHECK(m.new_state(256, bad).status().code() == Errc::kIndivisible);
}
