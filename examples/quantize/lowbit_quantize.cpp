// lowbit_quantize: a Hugging Face Llama checkpoint (safetensors + config.json) to a GGUF file for
// llama.cpp, quantized with lowbit's ggml-exact block formats.
//
//   lowbit_quantize MODEL_DIR OUT.gguf [--type q4_K] [--rule 'blk.*.ffn_down.*=q6_K'] ...
//   lowbit_quantize MODEL_DIR OUT.gguf --scheme gptq-q4_K [--calib calib.txt]
//   lowbit_quantize MODEL_DIR OUT.safetensors --scheme gptq-w3-g128   (a lowbit checkpoint)
//
// The work is in lowbit/io/gguf_convert.hpp (name mapping, the Q/K rope permutation, the type
// plan, streaming); this file parses the command line, prints the plan and the progress on
// stderr, and turns every failure into a message and a non-zero exit (1: conversion failed,
// 2: bad command line).
//
// --scheme NAME builds the decoder linears as lowbit_evaluate's scheme of that name
// (examples/llama/schemes.hpp: the same code, so the same weights) and hands them to the
// converter as supplied tensors, with the norms the scheme rewrote (AWQ, SmoothQuant). That
// needs the whole fp32 model in memory (llama::LlamaModel) and, for the calibrated schemes,
// calibration text run through it as bytes (a byte-level vocabulary, as tinylm's). The schemes
// whose codes no GGUF type holds (lowbit's packed matrices) are written as a lowbit checkpoint
// when OUTPUT ends in ".safetensors" (examples/llama/checkpoint.hpp).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llama/checkpoint.hpp"
#include "llama/schemes.hpp"
#include "lowbit/io/gguf_convert.hpp"

namespace {

using namespace lowbit::io;

const char* type_name(GgmlType t) { return ggml_type_info(t)->name; }

void usage(std::FILE* to) {
  std::fprintf(
      to,
      "usage: lowbit_quantize MODEL_DIR OUTPUT.gguf [options]\n"
      "\n"
      "Converts a Hugging Face Llama model (config.json, and model.safetensors or the\n"
      "shards of model.safetensors.index.json) into a GGUF v3 file for llama.cpp.\n"
      "\n"
      "options:\n"
      "  --type TYPE          type of every matrix without a rule (default f16)\n"
      "  --rule PATTERN=TYPE  type of the matrices whose GGUF name (blk.3.ffn_down.weight)\n"
      "                       or Hugging Face name matches the glob PATTERN (* ? [a-z]);\n"
      "                       repeatable, the first matching rule wins\n"
      "  --imatrix FILE       importance matrix, llama.cpp's legacy .dat format\n"
      "  --name NAME          general.name (default: the model directory's name)\n"
      "  --chunk-mb N         fp32 staging per chunk in MiB (default 16)\n"
      "  --scheme NAME        the decoder linears as lowbit_evaluate's scheme NAME (GPTQ,\n"
      "                       AWQ, imatrix, ...; --list-schemes); other matrices default to f32\n"
      "  --calib FILE         calibration text for --scheme (default MODEL_DIR/calib.txt)\n"
      "  --calib-windows N    256-byte windows of it (default 128)\n"
      "  --list-schemes       every scheme, whether a GGUF holds it, and exit\n"
      "                       (OUTPUT.safetensors: a lowbit checkpoint, for every scheme)\n"
      "  --dry-run            print the plan (name, shape, type, bytes) and write nothing\n"
      "  --quiet              no progress output\n"
      "\n"
      "1-D tensors (norms, biases) are always f32. A row that TYPE's block does not\n"
      "divide falls back as llama-quantize does (q4_K -> q5_0, q6_K -> q8_0, ...).\n"
      "types:");
  std::size_t n = 0;
  const GgufOutputType* types = gguf_output_types(&n);
  for (std::size_t i = 0; i < n; ++i) std::fprintf(to, " %s", type_name(types[i].type));
  std::fprintf(to, "\n");
}

int report(const char* what, const std::string& context, lowbit::Status s) {
  std::fprintf(stderr, "lowbit_quantize: %s failed: %s%s%s (%s", what,
               context.empty() ? "" : context.c_str(), context.empty() ? "" : ": ", s.message(),
               lowbit::errc_name(s.code()));
  if (s.index() >= 0) std::fprintf(stderr, ", at %lld", static_cast<long long>(s.index()));
  std::fprintf(stderr, ")\n");
  return 1;
}

double mib(std::uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::string shape_text(const TensorPlan& t) {
  return t.n_dims == 1 ? std::to_string(t.cols)
                       : std::to_string(t.rows) + " x " + std::to_string(t.cols);
}

std::string type_text(const TensorPlan& t) {
  std::string s = type_name(t.type);
  if (t.fell_back) s += std::string(" (fallback from ") + type_name(t.requested) + ")";
  if (t.importance != nullptr) s += " +imatrix";
  if (t.supplied != nullptr) s += " (scheme)";
  return s;
}

struct ProgressState {
  std::chrono::steady_clock::time_point start;
  std::uint64_t total = 0;
};

void on_progress(const ConvertProgress& p, void* user) {
  const ProgressState& st = *static_cast<const ProgressState*>(user);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - st.start).count();
  std::fprintf(stderr, "[%4zu/%zu] %-28s %-13s %-8s %9.2f MiB  (%5.1f%%, %.1f s)\n", p.index + 1,
               p.count, p.tensor->gguf_name.c_str(), shape_text(*p.tensor).c_str(),
               type_name(p.tensor->type), mib(p.tensor->bytes),
               st.total == 0
                   ? 100.0
                   : 100.0 * static_cast<double>(p.bytes_written) / static_cast<double>(st.total),
               seconds);
}

// --scheme: the scheme's decoder linears and rewritten norms, kept alive for the GGUF writer.
struct SchemeOutput {
  llama::schemes::Built built;
  std::vector<SuppliedTensor> supplied;
};

struct SchemeRequest {
  std::string name, calib;
  std::int64_t calib_windows = 128;
  std::string checkpoint;  // OUTPUT.safetensors: write a lowbit checkpoint there instead of a GGUF
};

bool ends_with(const std::string& s, const char* suffix) {
  const std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::vector<std::uint8_t> bytes;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return bytes;
  std::uint8_t buffer[1 << 16];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof(buffer), f)) > 0;)
    bytes.insert(bytes.end(), buffer, buffer + n);
  std::fclose(f);
  return bytes;
}

// Builds the scheme (Deploy::kExport) and either writes it as a lowbit checkpoint
// (request.checkpoint) or lists what the GGUF converter writes in place of the checkpoint's
// tensors. Returns 0, or the exit status after printing why not.
int build_scheme(const std::string& model_dir, const SchemeRequest& request, SchemeOutput* out) {
  using llama::schemes::SchemeBuilder;
  std::string culprit;
  lowbit::Result<llama::LlamaModel> model = llama::LlamaModel::load(model_dir, nullptr, &culprit);
  if (!model) return report("loading the model for --scheme", culprit, model.status());
  const llama::LlamaConfig config = model->config();
  llama::schemes::SchemeOptions so;
  so.calib_windows = request.calib_windows;
  SchemeBuilder builder(so, std::move(*model), read_bytes(request.calib));
  const std::vector<SchemeBuilder::Scheme> schemes = SchemeBuilder::schemes();
  const SchemeBuilder::Scheme* scheme = nullptr;
  for (const SchemeBuilder::Scheme& x : schemes)
    if (request.name == x.name) scheme = &x;
  if (scheme == nullptr) {
    std::fprintf(stderr, "lowbit_quantize: unknown --scheme '%s' (--list-schemes)\n", request.name.c_str());
    return 2;
  }
  if (scheme->kv_bits != 0) {
    std::fprintf(stderr, "lowbit_quantize: '%s' quantizes the KV cache, which the runtime does; "
                 "there are no weights to write\n", scheme->name);
    return 2;
  }
  if (scheme->stores == llama::schemes::Stores::kPacked && request.checkpoint.empty()) {
    std::fprintf(stderr, "lowbit_quantize: '%s' stores lowbit packed codes, which no GGUF type "
                 "holds: write OUTPUT.safetensors (a lowbit checkpoint) instead\n", scheme->name);
    return 2;
  }
  if (scheme->calibrated) {
    // The text goes through the model as bytes: only a byte-level vocabulary reads it right.
    if (config.vocab_size != 256) {
      std::fprintf(stderr, "lowbit_quantize: '%s' needs calibration, and the calibration text is "
                   "read as bytes: vocab_size must be 256 (byte-level), not %lld\n", scheme->name,
                   static_cast<long long>(config.vocab_size));
      return 1;
    }
    std::fprintf(stderr, "calibrating on %lld windows of %s\n",
                 static_cast<long long>(request.calib_windows), request.calib.c_str());
    const lowbit::Status s = builder.calibrate();
    if (!s) return report("calibrating", request.calib, s);
  }
  const auto t0 = std::chrono::steady_clock::now();
  lowbit::Result<llama::schemes::Built> built = scheme->build(builder, llama::schemes::Deploy::kExport);
  if (!built) return report("building the scheme", scheme->name, built.status());
  std::fprintf(stderr, "scheme %s built in %.1f s\n", scheme->name,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (!request.checkpoint.empty()) {
    const lowbit::Status s = llama::write_checkpoint(request.checkpoint, builder.fp32(), *built, scheme->name);
    if (!s) return report("writing", request.checkpoint, s);
    return 0;
  }
  out->built = std::move(*built);
  lowbit::Result<std::vector<SuppliedTensor>> supplied = llama::schemes::gguf_tensors(out->built);
  if (!supplied) return report("building the scheme", scheme->name, supplied.status());
  out->supplied = std::move(*supplied);
  return 0;
}

std::string directory_name(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  ConvertOptions options;
  std::string imatrix_path;
  SchemeRequest scheme;
  bool dry_run = false, quiet = false, have_name = false, have_type = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "lowbit_quantize: %s needs a value\n", flag);
        return nullptr;
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    } else if (arg == "--type") {
      const char* v = value("--type");
      if (v == nullptr) return 2;
      lowbit::Result<GgmlType> t = parse_gguf_output_type(v);
      if (!t) {
        std::fprintf(stderr, "lowbit_quantize: unknown --type '%s'\n", v);
        usage(stderr);
        return 2;
      }
      options.default_type = *t;
      have_type = true;
    } else if (arg == "--scheme") {
      const char* v = value("--scheme");
      if (v == nullptr) return 2;
      scheme.name = v;
    } else if (arg == "--calib") {
      const char* v = value("--calib");
      if (v == nullptr) return 2;
      scheme.calib = v;
    } else if (arg == "--calib-windows") {
      const char* v = value("--calib-windows");
      if (v == nullptr) return 2;
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end == v || *end != '\0' || n < 1 || n > 100000) {
        std::fprintf(stderr, "lowbit_quantize: --calib-windows wants 1..100000\n");
        return 2;
      }
      scheme.calib_windows = n;
    } else if (arg == "--list-schemes") {
      std::printf("%-18s %-24s %s\n", "scheme", "in a GGUF", "calibration text");
      for (const auto& x : llama::schemes::SchemeBuilder::schemes()) {
        const bool packed = x.stores == llama::schemes::Stores::kPacked;
        std::printf("%-18s %-24s %s\n", x.name,
                    x.kv_bits != 0 ? "no: a KV-cache scheme" : packed ? "no: lowbit packed codes" : "yes",
                    x.calibrated ? "yes" : "no");
      }
      return 0;
    } else if (arg == "--rule") {
      const char* v = value("--rule");
      if (v == nullptr) return 2;
      lowbit::Result<TensorTypeRule> r = parse_tensor_type_rule(v);
      if (!r) {
        std::fprintf(stderr, "lowbit_quantize: bad --rule '%s': %s\n", v, r.status().message());
        return 2;
      }
      options.rules.push_back(*r);
    } else if (arg == "--imatrix") {
      const char* v = value("--imatrix");
      if (v == nullptr) return 2;
      imatrix_path = v;
    } else if (arg == "--name") {
      const char* v = value("--name");
      if (v == nullptr) return 2;
      options.name = v;
      have_name = true;
    } else if (arg == "--chunk-mb") {
      const char* v = value("--chunk-mb");
      if (v == nullptr) return 2;
      char* end = nullptr;
      const long mb = std::strtol(v, &end, 10);
      if (end == v || *end != '\0' || mb < 1 || mb > 4096) {
        std::fprintf(stderr, "lowbit_quantize: --chunk-mb wants 1..4096\n");
        return 2;
      }
      options.chunk_bytes = static_cast<std::size_t>(mb) << 20;
    } else if (arg == "--dry-run") {
      dry_run = true;
    } else if (arg == "--quiet") {
      quiet = true;
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "lowbit_quantize: unknown option '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    } else {
      positional.push_back(arg);
    }
  }
  // OUTPUT.gguf may be left out with --dry-run.
  if (positional.size() != 2 && !(dry_run && positional.size() == 1)) {
    usage(stderr);
    return 2;
  }
  const std::string model_dir = positional[0];
  if (!have_name) options.name = directory_name(model_dir);

  SchemeOutput scheme_output;
  if (!scheme.name.empty()) {
    if (scheme.calib.empty()) scheme.calib = model_dir + "/calib.txt";
    if (positional.size() == 2 && ends_with(positional[1], ".safetensors")) {
      if (dry_run || have_type || !options.rules.empty() || !imatrix_path.empty()) {
        std::fprintf(stderr, "lowbit_quantize: --dry-run, --type, --rule and --imatrix plan GGUF "
                     "files, not a lowbit checkpoint (.safetensors)\n");
        return 2;
      }
      scheme.checkpoint = positional[1];
      const auto t0 = std::chrono::steady_clock::now();
      const int status = build_scheme(model_dir, scheme, &scheme_output);
      if (status == 0)
        std::fprintf(stderr, "wrote %s (lowbit checkpoint) in %.1f s\n", scheme.checkpoint.c_str(),
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      return status;
    }
    const int status = build_scheme(model_dir, scheme, &scheme_output);
    if (status != 0) return status;
    options.supplied = scheme_output.supplied;
    // The other matrices (embedding, lm_head) stay as the scheme's evaluation keeps them.
    if (!have_type) options.default_type = GgmlType::kF32;
  }

  std::string context;
  lowbit::Result<LlamaSource> src = open_llama_model(model_dir, &context);
  if (!src) return report("reading the model", context, src.status());

  ImportanceMatrix imatrix;
  if (!imatrix_path.empty()) {
    lowbit::Result<MappedFile> f = MappedFile::open(imatrix_path);
    if (!f) return report("reading the imatrix", imatrix_path, f.status());
    lowbit::Result<ImportanceMatrix> m = parse_imatrix_dat(f->bytes());
    if (!m) return report("reading the imatrix", imatrix_path, m.status());
    imatrix = std::move(*m);
    options.imatrix = &imatrix;
  }

  lowbit::Result<ConvertPlan> plan = plan_llama_gguf(*src, options, &context);
  if (!plan) return report("planning", context, plan.status());

  const LlamaHyperparameters& h = plan->hparams;
  std::fprintf(stderr,
               "llama: %lld layers, hidden %lld, ffn %lld, heads %lld/%lld (head_dim %lld), "
               "vocab %lld, context %lld\n",
               static_cast<long long>(h.num_layers), static_cast<long long>(h.hidden_size),
               static_cast<long long>(h.intermediate_size), static_cast<long long>(h.num_heads),
               static_cast<long long>(h.num_kv_heads), static_cast<long long>(h.head_dim),
               static_cast<long long>(h.vocab_size), static_cast<long long>(h.context_length));
  if (h.vocab_size != 256)
    std::fprintf(stderr,
                 "warning: vocab_size %lld is not byte-level: tokenizer.ggml.model is \"none\" "
                 "(llama.cpp loads the weights without a vocabulary)\n",
                 static_cast<long long>(h.vocab_size));
  for (const TensorPlan& t : plan->tensors)
    if (t.fell_back)
      std::fprintf(stderr, "warning: %s: row of %lld is not a multiple of %s's block: writing %s\n",
                   t.gguf_name.c_str(), static_cast<long long>(t.cols), type_name(t.requested),
                   type_name(t.type));
  if (options.imatrix != nullptr)
    std::fprintf(stderr, "imatrix: %zu entries, used for %zu tensors\n",
                 options.imatrix->entries.size(), plan->with_importance);
  if (plan->supplied != 0)
    std::fprintf(stderr, "scheme %s: %zu tensors written as it built them\n", scheme.name.c_str(),
                 plan->supplied);

  if (dry_run) {
    std::printf("%-28s %-24s %-13s %-30s %14s\n", "gguf name", "source", "shape", "type", "bytes");
    for (const TensorPlan& t : plan->tensors)
      std::printf("%-28s %-24s %-13s %-30s %14llu\n", t.gguf_name.c_str(),
                  lowbit::io::safetensors_dtype_name(t.source_dtype), shape_text(t).c_str(),
                  type_text(t).c_str(), static_cast<unsigned long long>(t.bytes));
    std::printf("%zu tensors: %.2f MiB of weights -> %.2f MiB GGUF (%zu fallbacks)\n",
                plan->tensors.size(), mib(plan->source_bytes), mib(plan->output_bytes),
                plan->fallbacks);
    return 0;
  }

  ProgressState state;
  state.start = std::chrono::steady_clock::now();
  state.total = plan->output_bytes;
  const std::string out = positional[1];
  const lowbit::Status s =
      write_llama_gguf_file(*src, *plan, out, quiet ? nullptr : &on_progress, &state, &context);
  if (!s.ok()) return report("writing", context, s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - state.start).count();
  std::fprintf(stderr, "wrote %s: %zu tensors, %.2f MiB of weights -> %.2f MiB in %.1f s\n",
               out.c_str(), plan->tensors.size(), mib(plan->source_bytes), mib(plan->output_bytes),
               seconds);
  return 0;
}
