// layer_speed: one Llama-3-8B decoder layer with fp32, INT8 and INT4 linears, decode and prefill
// tokens/s and their ratios to fp32, all in one run (layer_speed.hpp says what is measured).
//
//   layer_speed [--threads 1,2] [--reps 3] [--quick]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "llama/layer_speed.hpp"

int main(int argc, char** argv) {
  llama::LayerSpeedOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--reps" && i + 1 < argc) {
      o.reps = std::atoi(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      o.threads.clear();
      for (const char* p = argv[++i]; *p != '\0';) {
        char* end = nullptr;
        const long t = std::strtol(p, &end, 10);
        if (end == p || t < 1 || t > 256) {
          std::fprintf(stderr, "layer_speed: --threads takes a list like 1,2\n");
          return 2;
        }
        o.threads.push_back(static_cast<int>(t));
        p = *end == ',' ? end + 1 : end;
      }
    } else {
      std::fprintf(stderr, "usage: layer_speed [--threads 1,2] [--reps N] [--quick]\n");
      return 2;
    }
  }
  if (o.reps < 1 || o.threads.empty()) {
    std::fprintf(stderr, "layer_speed: --reps must be >= 1\n");
    return 2;
  }
  const lowbit::Status s = llama::run_layer_speed(o);
  if (!s) {
    std::fprintf(stderr, "layer_speed: %s (%s, index %lld)\n", s.message(), lowbit::errc_name(s.code()),
                 static_cast<long long>(s.index()));
    return 1;
  }
  return 0;
}
