// lowbit_evaluate: every quantization scheme lowbit offers, on tinylm, in one run and one table.
//
//   lowbit_evaluate [--model-dir models/tinylm] [--full] [--windows N] [--calib-windows N]
//                   [--schemes a,b,...] [--csv FILE] [--svg FILE] [--no-speed] [--layer-speed]
//                   [--list] [--train] [--train-steps N] [--train-windows N] [--file FILE]...
//
// For each scheme (--list prints them) the decoder linears of tinylm are quantized from the fp32
// checkpoint and replaced by lowbit quantized layers running lowbit's kernels; the program then
// measures, with every row from the same run:
//
//   bpw        bits per weight of the decoder linears as the layers hold them (codes, scales,
//              zero points, padding: QuantizedLinear::weight_bytes), the quantity of the papers
//   size       the whole model in MB: those linears plus what stays fp32 (embedding, lm_head,
//              norms, as in the reference baselines), and its reduction against fp32
//   ppl        perplexity on the first N windows of eval.txt (reference.json's protocol; default
//              8 windows; --full: all 1024, which reference.json's rows need, and then the
//              program checks them against reference.json)
//   Δ          ppl against fp32 on the same windows, in %
//   prefill    tokens/s of one 512-token prompt (tinylm was trained on 256; rotary embeddings
//              run past it, and speed does not depend on what the model predicts there)
//   decode     tokens/s of 64 single-token steps after that prompt (--full: 128, best of 3)
//   kv bytes   bytes of the KV cache after one 256-token window
//   quant s    seconds to quantize the 42 linears (GPTQ on 2 threads; the mixed schemes reuse
//              the GPTQ results computed for earlier rows); for the training rows, the
//              seconds of training on 2 threads (plus, for the first row of each kind of
//              data, the teacher's probabilities and, data-free, the sampling and the GPTQ on
//              the sampled windows)
//
// Speed is measured on 1 and 2 threads. tinylm is small enough to live in cache and one token's
// linears are far too small to split, so "2 threads" is two sequences decoded at once (each
// thread its own state; kernels on the calling thread) and the figure is aggregate throughput.
// The speed of a Llama-3-8B-sized layer, where threads split each product, is layer_speed's.
//
// The schemes (--list prints them) are llama/schemes.hpp's, which lowbit_quantize --scheme writes
// under the same names; that header says what each one is. The training rows (peqa-*, qat-*,
// lkd-*, qat-df-*) run only with --train, --full or when named. The KV rows (kv8, kv4, kv2)
// measure their perplexity decoding token by token, so that every score reads the quantized
// cache, on at most 64 windows (255 passes each), against fp32 on the same windows.
//
// --file FILE (repeatable) adds a row for a file that lowbit_quantize --scheme wrote for this
// model, read back and measured like the schemes: a GGUF (llama/gguf_model.hpp) or a lowbit
// checkpoint, FILE.safetensors (llama/checkpoint.hpp). `lowbit_quantize tinylm f.gguf --scheme
// gptq-q4_K` and this program's gptq-q4_K row, with the same --calib-windows, give the same
// perplexity, which checks the file (for GGUF, the Q/K permutation too) end to end.
//
// Then, with --full or --layer-speed, the speed of one Llama-3-8B-shaped decoder layer with fp32,
// INT8 and INT4 linears (layer_speed.hpp), where threads split each product: tinylm lives in
// cache, that layer's 218M weights do not.
//
// Calibration (GPTQ Hessians, AWQ samples, SmoothQuant and mixed-precision statistics) reads
// calib.txt through the fp32 model, never eval.txt. Exit status 0, 1 on an error (printed with
// the scheme at fault), 2 for a bad command line.
#include <Eigen/Core>
#include <algorithm>
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
#include <thread>
#include <tuple>
#include <vector>

#include "llama/checkpoint.hpp"
#include "llama/gguf_model.hpp"
#include "llama/layer_speed.hpp"
#include "llama/llama.hpp"
#include "llama/schemes.hpp"
#include "lowbit/kv_cache.hpp"

#ifndef LOWBIT_TINYLM_DIR
#define LOWBIT_TINYLM_DIR "models/tinylm"
#endif

namespace {

using lowbit::Errc;
using lowbit::Result;
using lowbit::Status;
using LinearPtr = std::unique_ptr<llama::Linear>;
using llama::schemes::Built;
using llama::schemes::Deploy;
using Scheme = llama::schemes::SchemeBuilder::Scheme;

struct Options {
  std::string dir = LOWBIT_TINYLM_DIR;
  std::int64_t windows = 8, calib_windows = 16;
  std::int64_t kv_windows = 64;  // at most: decoding token by token costs 255 passes a window
  std::int64_t prompt = 512, decode_steps = 64;
  int reps = 1;
  bool speed = true, full = false, layer_speed = false;
  std::string only, csv, svg;
  std::vector<std::string> files;  // of lowbit_quantize, measured after the schemes
  // Training rows (QAT, PEQA, distillation): run with --train or --full, or when named.
  bool train = false;
  std::int64_t train_steps = 200, train_windows = 128;
};

struct Row {
  std::string name, layer;
  double bpw = 0, linear_bytes = 0, model_bytes = 0, ppl = 0, kv_bytes = 0;
  double ce = 0;  // cross-entropy, nats per byte (reference.json's other figure)
  double prefill[2] = {}, decode[2] = {}, seconds_to_quantize = 0;
  std::int64_t windows = 0;  // of eval.txt: the KV rows may use fewer (Options::kv_windows)
  double fp32_ppl = 0;       // fp32 on the same windows, for the change in %
  double delta_percent() const { return 100.0 * (ppl / fp32_ppl - 1.0); }
  const char* reference = nullptr;  // reference.json baseline of the same quantizer
  bool kv = false;
};

class Evaluation {
 public:
  Evaluation(Options o, llama::schemes::SchemeBuilder& builder, std::vector<std::uint8_t> eval)
      : o_(std::move(o)), builder_(builder), fp32_(builder.fp32()), eval_(std::move(eval)) {}

  // Builds, loads and measures one scheme.
  Result<Row> run(const Scheme& scheme) {
    Row row;
    row.name = scheme.name;
    row.layer = scheme.layer;
    row.reference = scheme.reference;
    row.kv = scheme.kv_bits != 0;
    const auto t0 = std::chrono::steady_clock::now();
    Result<Built> built = scheme.build(builder_, Deploy::kRun);
    if (!built) return built.status();
    row.seconds_to_quantize = seconds_since(t0);
    std::vector<const llama::Linear*> linears;
    for (const LinearPtr& l : built->linears) linears.push_back(l.get());
    set_sizes(linears, &row);
    const llama::LlamaConfig& cfg = fp32_.config();
    Result<llama::LlamaWeights> weights =
        llama::LlamaWeights::load(o_.dir + "/model.safetensors", cfg);
    if (!weights) return weights.status();
    if (!built->norms.empty())
      for (std::int64_t l = 0; l < cfg.num_layers; ++l) {
        weights->layers[static_cast<std::size_t>(l)].input_norm = built->norms[2 * l].data();
        weights->layers[static_cast<std::size_t>(l)].post_attention_norm = built->norms[2 * l + 1].data();
      }
    std::size_t index = 0;
    const llama::LinearFactory factory = [&](const std::string&, const float*, std::int64_t,
                                             std::int64_t) -> Result<LinearPtr> {
      return std::move(built->linears[index++]);
    };
    Result<llama::LlamaModel> model = llama::LlamaModel::from_weights(std::move(*weights), factory);
    if (!model) return model.status();
    LOWBIT_TRY(measure(*model, scheme.kv_bits, &row));
    return row;
  }

  // A file that lowbit_quantize wrote, read back and measured as a scheme: a GGUF
  // (gguf_model.hpp) or, for a name ending in ".safetensors", a lowbit checkpoint (checkpoint.hpp).
  Result<Row> run_file(const std::string& path) {
    Row row;
    row.name = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
    const bool checkpoint = path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
    row.layer = checkpoint ? "lowbit file" : "gguf file";
    std::string culprit;
    Result<std::unique_ptr<llama::FileModel>> file = checkpoint
                                                         ? llama::load_checkpoint(path, o_.dir, &culprit)
                                                         : llama::load_gguf_model(path, o_.dir, &culprit);
    if (!file) {
      std::fprintf(stderr, "lowbit_evaluate: %s: %s\n", path.c_str(), culprit.c_str());
      return file.status();
    }
    const llama::LlamaModel& model = (*file)->model;
    std::vector<const llama::Linear*> linears;
    for (std::int64_t l = 0; l < model.config().num_layers; ++l)
      for (int s = 0; s < llama::kLinearsPerLayer; ++s) linears.push_back(&model.linear(l, s));
    set_sizes(linears, &row);
    LOWBIT_TRY(measure(model, 0, &row));
    return row;
  }

  const Options& options() const { return o_; }

 private:
  // bpw and model bytes of a model whose decoder linears are `linears`.
  void set_sizes(const std::vector<const llama::Linear*>& linears, Row* row) const {
    std::size_t params = 0;
    for (const llama::Linear* l : linears) {
      row->linear_bytes += static_cast<double>(l->weight_bytes());
      params += static_cast<std::size_t>(l->in_features() * l->out_features());
    }
    row->bpw = 8.0 * row->linear_bytes / static_cast<double>(params);
    const llama::LlamaConfig& cfg = fp32_.config();
    const double rest = 4.0 * static_cast<double>(2 * cfg.vocab_size * cfg.hidden_size +
                                                  (2 * cfg.num_layers + 1) * cfg.hidden_size);
    row->model_bytes = row->linear_bytes + rest;
  }

  // Perplexity, KV-cache bytes and speed of `model` into `row`.
  Status measure(const llama::LlamaModel& model, int kv_bits, Row* out) {
    Row& row = *out;
    lowbit::KvQuantConfig kv;
    kv.bits = kv_bits;
    kv.group_tokens = 32;
    kv.residual = 32;
    const lowbit::KvQuantConfig* kvp = kv_bits != 0 ? &kv : nullptr;
    row.windows = kvp ? std::min(o_.windows, o_.kv_windows) : o_.windows;
    Result<llama::Perplexity> p = perplexity_of(model, row.windows, kvp);
    if (!p) return p.status();
    row.ppl = p->perplexity;
    row.ce = p->cross_entropy;
    double& base = fp32_ppl_[row.windows];
    if (base == 0) {
      Result<llama::Perplexity> b = perplexity_of(fp32_, row.windows);
      if (!b) return b.status();
      base = b->perplexity;
    }
    row.fp32_ppl = base;
    Result<double> kv_bytes = cache_bytes(model, kvp);
    if (!kv_bytes) return kv_bytes.status();
    row.kv_bytes = *kv_bytes;
    if (o_.speed)
      for (int threads = 1; threads <= 2; ++threads)
        LOWBIT_TRY(time_speed(model, kvp, threads, &row.prefill[threads - 1], &row.decode[threads - 1]));
    return {};
  }

  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

  // reference.json's protocol; with a quantized cache, each window decoded token by token so that
  // attention reads every earlier position from the cache.
  Result<llama::Perplexity> perplexity_of(const llama::LlamaModel& model, std::int64_t windows,
                                               const lowbit::KvQuantConfig* kv = nullptr) const {
    llama::PerplexityOptions po;
    po.kv = kv;
    po.token_by_token = kv != nullptr;
    po.max_windows = windows;
    po.threads = 2;
    return llama::evaluate_perplexity(model, eval_.data(), eval_.size(), po);
  }

  // Bytes of the cache after one full 256-token window.
  Result<double> cache_bytes(const llama::LlamaModel& model, const lowbit::KvQuantConfig* kv) const {
    Result<llama::LlamaState> state = kv ? model.new_state(256, *kv) : model.new_state(256);
    if (!state) return state.status();
    std::vector<std::int32_t> ids(eval_.begin(), eval_.begin() + 256);
    std::vector<float> logits(static_cast<std::size_t>(256 * model.config().vocab_size));
    LOWBIT_TRY(model.forward(ids.data(), 256, *state, logits.data()));
    return static_cast<double>(state->cache().bytes());
  }

  // Prefill of a prompt of o_.prompt tokens, then o_.decode_steps decode steps; on `threads`
  // threads each runs its own sequence and the figures are aggregate tokens/s. Best of o_.reps.
  Status time_speed(const llama::LlamaModel& model, const lowbit::KvQuantConfig* kv, int threads,
                    double* prefill, double* decode) const {
    const std::int64_t p = o_.prompt, d = o_.decode_steps;
    std::vector<std::int32_t> ids(eval_.begin(), eval_.begin() + p + d);
    std::vector<Status> failed(static_cast<std::size_t>(threads));
    for (int rep = 0; rep < o_.reps; ++rep) {
      double t_prefill = 0, t_decode = 0;
      std::vector<double> tp(static_cast<std::size_t>(threads)), td(tp);
      const auto worker = [&](int id) {
        Status& st = failed[static_cast<std::size_t>(id)];
        Result<llama::LlamaState> state = kv ? model.new_state(p + d, *kv) : model.new_state(p + d);
        if (!state) {
          st = state.status();
          return;
        }
        std::vector<float> logits(static_cast<std::size_t>(p * model.config().vocab_size));
        const auto t0 = std::chrono::steady_clock::now();
        st = model.forward(ids.data(), p, *state, logits.data());
        tp[static_cast<std::size_t>(id)] = seconds_since(t0);
        const auto t1 = std::chrono::steady_clock::now();
        for (std::int64_t t = 0; t < d && st; ++t)
          st = model.decode(ids[static_cast<std::size_t>(p + t)], *state, logits.data());
        td[static_cast<std::size_t>(id)] = seconds_since(t1);
      };
      std::vector<std::thread> pool;
      for (int id = 1; id < threads; ++id) pool.emplace_back(worker, id);
      worker(0);
      for (std::thread& t : pool) t.join();
      for (const Status& st : failed) LOWBIT_TRY(st);
      t_prefill = *std::max_element(tp.begin(), tp.end());
      t_decode = *std::max_element(td.begin(), td.end());
      *prefill = std::max(*prefill, threads * static_cast<double>(p) / t_prefill);
      *decode = std::max(*decode, threads * static_cast<double>(d) / t_decode);
    }
    return {};
  }

  Options o_;
  llama::schemes::SchemeBuilder& builder_;
  const llama::LlamaModel& fp32_;
  std::vector<std::uint8_t> eval_;
  std::map<std::int64_t, double> fp32_ppl_;  // by number of windows
};

// ---------------------------------------------------------------------------------------------
// Output.

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// reference.json's perplexity of `key` ("fp32" or a baseline), 0 when absent. The file is a
// fixed layout written by the model's authors; a minimal search for the key suffices here.
double reference_perplexity(const std::string& json, const std::string& key) {
  const std::size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return 0;
  const std::size_t p = json.find("\"perplexity\"", at);
  if (p == std::string::npos) return 0;
  const std::size_t colon = json.find(':', p);
  return colon == std::string::npos ? 0 : std::atof(json.c_str() + colon + 1);
}

// Equal when rounded to 4 significant digits.
bool same_4_digits(double a, double b) {
  char x[32], y[32];
  std::snprintf(x, sizeof x, "%.3e", a);
  std::snprintf(y, sizeof y, "%.3e", b);
  return std::strcmp(x, y) == 0;
}

void write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "lowbit_evaluate: cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "scheme,layer,bpw,model_mb,size_reduction_pct,windows,cross_entropy,perplexity,delta_pct,"
                  "prefill_tok_s_1t,prefill_tok_s_2t,decode_tok_s_1t,decode_tok_s_2t,kv_bytes,"
                  "quantize_s\n");
  const double fp32_bytes = rows.front().model_bytes;
  for (const Row& r : rows)
    std::fprintf(f, "%s,%s,%.4f,%.4f,%.2f,%lld,%.6f,%.6f,%.4f,%.1f,%.1f,%.1f,%.1f,%.0f,%.2f\n",
                 r.name.c_str(), r.layer.c_str(), r.bpw, r.model_bytes / 1e6,
                 100.0 * (1.0 - r.model_bytes / fp32_bytes), static_cast<long long>(r.windows), r.ce, r.ppl,
                 r.delta_percent(), r.prefill[0], r.prefill[1], r.decode[0], r.decode[1], r.kv_bytes,
                 r.seconds_to_quantize);
  std::fclose(f);
}

// Perplexity change against bits per weight (log scale), one labelled point per weight scheme.
void write_svg(const std::string& path, const std::vector<Row>& rows, const std::string& title) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "lowbit_evaluate: cannot write %s\n", path.c_str());
    return;
  }
  const double W = 1000, H = 720, left = 70, right = 30, top = 50, bottom = 60;
  double ymax = 1.0;
  for (const Row& r : rows)
    if (!r.kv) ymax = std::max(ymax, r.delta_percent());
  ymax = std::ceil(ymax);
  const double ymin = -0.5, xmin = std::log2(2.0), xmax = std::log2(32.0);
  const auto X = [&](double bpw) { return left + (std::log2(bpw) - xmin) / (xmax - xmin) * (W - left - right); };
  const auto Y = [&](double d) { return top + (ymax - d) / (ymax - ymin) * (H - top - bottom); };
  std::fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                  "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
               W, H);
  std::fprintf(f, "<text x=\"%.0f\" y=\"25\" font-size=\"14\">%s</text>\n", left, title.c_str());
  for (double b : {2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 16.0, 32.0}) {
    std::fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n", X(b), top, X(b), H - bottom);
    std::fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n", X(b), H - bottom + 16, b);
  }
  const double step = ymax > 20 ? 5 : ymax > 5 ? 1 : 0.5;
  for (double d = 0; d <= ymax; d += step) {
    std::fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, Y(d), W - right, Y(d));
    std::fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%+g%%</text>\n", left - 6, Y(d) + 4, d);
  }
  std::fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">bits per weight of the decoder linears (log scale)</text>\n",
               (left + W - right) / 2, H - 18);
  std::fprintf(f, "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" text-anchor=\"middle\">perplexity vs fp32</text>\n",
               (top + H - bottom) / 2, (top + H - bottom) / 2);
  // Colour by family; labels placed greedily beside their point, moved up or down (inside the
  // plot) until they overlap no earlier label; a point with no free place keeps no label (the
  // CSV names every point).
  const auto starts = [](const std::string& name, const char* prefix) { return name.rfind(prefix, 0) == 0; };
  struct Box { double x0, y0, x1, y1; };
  std::vector<Box> placed;
  for (const Row& r : rows) {
    if (r.kv) continue;
    const double d = r.delta_percent();
    const char* colour = starts(r.name, "rtn")                                ? "#2c3e50"
                         : starts(r.name, "gptq") || starts(r.name, "awq") ||
                                   starts(r.name, "mixed") || starts(r.name, "w4a8")
                             ? "#c0392b"
                         : starts(r.name, "w8a8") ? "#27ae60" : "#2980b9";
    const double px = X(r.bpw), py = Y(d), width = 6.2 * static_cast<double>(r.name.size());
    std::fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", px, py, colour);
    for (int attempt = 0; attempt < 40; ++attempt) {
      const double dy = (attempt % 2 == 0 ? -1.0 : 1.0) * 12.0 * ((attempt + 1) / 2);
      const Box b{px + 6, py + 3 + dy - 11, px + 6 + width, py + 3 + dy};
      if (b.y0 < top || b.y1 > H - bottom) continue;
      const bool clear = std::none_of(placed.begin(), placed.end(), [&](const Box& o) {
        return b.x0 < o.x1 && o.x0 < b.x1 && b.y0 < o.y1 && o.y0 < b.y1;
      });
      if (!clear) continue;
      placed.push_back(b);
      if (dy != 0)
        std::fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"0.5\"/>\n",
                     px, py, b.x0, b.y1 - 4, colour);
      std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s</text>\n", b.x0, b.y1 - 1, colour, r.name.c_str());
      break;
    }
  }
  const std::pair<const char*, const char*> legend[] = {
      {"#2c3e50", "round to nearest"}, {"#c0392b", "GPTQ, AWQ, mixed precision"},
      {"#27ae60", "W8A8 SmoothQuant"}, {"#2980b9", "ggml formats, fp"}};
  for (std::size_t i = 0; i < std::size(legend); ++i) {
    const double y = top + 14 + 16 * static_cast<double>(i);
    std::fprintf(f, "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"4\" fill=\"%s\"/><text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                 W - 260, y - 4, legend[i].first, W - 250, y, legend[i].second);
  }
  std::fprintf(f, "</svg>\n");
  std::fclose(f);
}

int usage() {
  std::fprintf(stderr,
               "usage: lowbit_evaluate [--model-dir D] [--full] [--windows N] [--calib-windows N]\n"
               "                       [--schemes a,b,...] [--csv FILE] [--svg FILE] [--no-speed]\n"
               "                       [--layer-speed] [--list] [--train] [--train-steps N]\n"
               "                       [--train-windows N] [--file FILE]...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model-dir") o.dir = next();
    else if (a == "--full") o.full = true;
    else if (a == "--windows") o.windows = std::atoll(next().c_str());
    else if (a == "--calib-windows") o.calib_windows = std::atoll(next().c_str());
    else if (a == "--schemes") o.only = "," + next() + ",";
    else if (a == "--csv") o.csv = next();
    else if (a == "--svg") o.svg = next();
    else if (a == "--no-speed") o.speed = false;
    else if (a == "--layer-speed") o.layer_speed = true;
    else if (a == "--list") list = true;
    else if (a == "--file") o.files.push_back(next());
    else if (a == "--train") o.train = true;
    else if (a == "--train-steps") o.train_steps = std::atoll(next().c_str());
    else if (a == "--train-windows") o.train_windows = std::atoll(next().c_str());
    else return usage();
  }
  if (o.full) {
    o.windows = 1024;
    o.calib_windows = 128;
    o.decode_steps = 128;
    o.reps = 3;
    o.layer_speed = true;
    o.train = true;
  }
  if (o.train_steps < 1) {
    std::fprintf(stderr, "lowbit_evaluate: --train-steps must be >= 1\n");
    return 2;
  }
  if (o.windows < 1 || o.windows > 1024 || o.calib_windows < 1 || o.calib_windows > 1024 ||
      o.train_windows < 1 || o.train_windows > 1024) {
    std::fprintf(stderr, "lowbit_evaluate: window counts must be in 1..1024\n");
    return 2;
  }

  const std::vector<Scheme> schemes = llama::schemes::SchemeBuilder::schemes();
  if (list) {
    for (const Scheme& s : schemes) std::printf("%-18s %s\n", s.name, s.layer);
    return 0;
  }
  const auto start = std::chrono::steady_clock::now();
  std::string culprit;
  Result<llama::LlamaModel> model = llama::LlamaModel::load(o.dir, nullptr, &culprit);
  if (!model) {
    std::fprintf(stderr, "lowbit_evaluate: loading %s: %s (%s)\n", o.dir.c_str(),
                 model.status().message(), culprit.c_str());
    return 1;
  }
  std::vector<std::uint8_t> calib = read_file(o.dir + "/calib.txt"), eval = read_file(o.dir + "/eval.txt");
  const std::vector<std::uint8_t> ref_bytes = read_file(o.dir + "/reference.json");
  const std::string reference(ref_bytes.begin(), ref_bytes.end());
  if (calib.size() < 1024 * 256 || eval.size() < 1024 * 256) {
    std::fprintf(stderr, "lowbit_evaluate: calib.txt or eval.txt missing or short in %s\n", o.dir.c_str());
    return 1;
  }
  llama::schemes::SchemeOptions so;
  so.calib_windows = o.calib_windows;
  so.train_steps = o.train_steps;
  so.train_windows = o.train_windows;
  llama::schemes::SchemeBuilder builder(so, std::move(*model), std::move(calib));
  Evaluation ev(o, builder, std::move(eval));
  const Status cs = builder.calibrate();
  if (!cs) {
    std::fprintf(stderr, "lowbit_evaluate: calibration: %s (%s)\n", cs.message(), lowbit::errc_name(cs.code()));
    return 1;
  }

  std::printf("lowbit evaluation of %s: perplexity on %lld windows of eval.txt%s (KV rows: %lld, "
              "decoding token by token), calibration on %lld windows of calib.txt\n",
              o.dir.c_str(), static_cast<long long>(o.windows), o.full ? " (all)" : "",
              static_cast<long long>(std::min(o.windows, o.kv_windows)),
              static_cast<long long>(o.calib_windows));
  if (o.speed)
    std::printf("speed: %lld-token prompt, then %lld decode steps; 2 threads = 2 sequences at once "
                "(aggregate tokens/s); %s\n",
                static_cast<long long>(o.prompt), static_cast<long long>(o.decode_steps),
                lowbit::isa_name(lowbit::best_isa()));
  std::printf("\n%-16s %-17s %6s %7s %6s %9s %8s %8s %8s %7s %7s %8s %7s\n", "scheme", "layers",
              "bpw", "MB", "smaller", "ppl", "vs fp32", "pre 1t", "pre 2t", "dec 1t", "dec 2t",
              "kv bytes", "quant s");
  std::vector<Row> rows;
  const auto print_row = [&rows](const Row& r) {
    rows.push_back(r);
    const double fp32_bytes = rows.front().model_bytes;
    std::printf("%-16s %-17s %6.2f %7.3f %5.1f%% %9.5f %+7.3f%% %8.0f %8.0f %7.0f %7.0f %8.0f %7.2f\n",
                r.name.c_str(), r.layer.c_str(), r.bpw, r.model_bytes / 1e6,
                100.0 * (1.0 - r.model_bytes / fp32_bytes), r.ppl, r.delta_percent(), r.prefill[0],
                r.prefill[1], r.decode[0], r.decode[1], r.kv_bytes, r.seconds_to_quantize);
    std::fflush(stdout);
  };
  for (const Scheme& s : schemes) {
    const bool named = o.only.find("," + std::string(s.name) + ",") != std::string::npos;
    if (!o.only.empty() && std::string(s.name) != "fp32" && !named) continue;
    if (s.trained && !o.train && !named) continue;
    Result<Row> r = ev.run(s);
    if (!r) {
      std::fprintf(stderr, "lowbit_evaluate: %s: %s (%s, index %lld)\n", s.name, r.status().message(),
                   lowbit::errc_name(r.status().code()), static_cast<long long>(r.status().index()));
      return 1;
    }
    print_row(*r);
  }
  for (const std::string& path : o.files) {
    Result<Row> r = ev.run_file(path);
    if (!r) {
      std::fprintf(stderr, "lowbit_evaluate: --file %s: %s (%s, index %lld)\n", path.c_str(),
                   r.status().message(), lowbit::errc_name(r.status().code()),
                   static_cast<long long>(r.status().index()));
      return 1;
    }
    print_row(*r);
  }

  // reference.json's RTN rows: meaningful on all 1024 windows only.
  std::printf("\nreference.json (PyTorch, all 1024 windows)%s:\n",
              o.windows == 1024 ? "" : " - compare with --full; these windows differ");
  for (const Row& r : rows) {
    const char* key = r.name == "fp32" ? "fp32" : r.reference;
    if (key == nullptr) continue;
    const double ref = reference_perplexity(reference, key);
    if (ref == 0) continue;
    std::printf("  %-16s %-22s lowbit %.6f  reference %.6f  relative %+.2e  %s\n", r.name.c_str(), key,
                r.ppl, ref, r.ppl / ref - 1.0,
                o.windows != 1024 ? "" : same_4_digits(r.ppl, ref) ? "same to 4 digits" : "DIFFERS");
  }
  if (!o.csv.empty()) write_csv(o.csv, rows);
  if (!o.svg.empty())
    write_svg(o.svg, rows,
              "tinylm: perplexity change vs bits per weight (" + std::to_string(o.windows) + " windows)");
  if (o.layer_speed) {
    std::printf("\n");
    const Status s = llama::run_layer_speed(llama::LayerSpeedOptions{});
    if (!s) {
      std::fprintf(stderr, "lowbit_evaluate: layer speed: %s (%s)\n", s.message(), lowbit::errc_name(s.code()));
      return 1;
    }
  }
  std::printf("\ntotal %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}
