// A downstream program: includes lowbit through its installed or added package, quantizes a
// small tensor and checks the result, so the consumer tests prove linking *and* behaviour.
#include <lowbit/lowbit.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  using W4 = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<4>>;
  const std::vector<float> w = {-1.0f, -0.5f, 0.0f, 0.5f, 0.1f, 0.2f, 0.3f, 1.6f};
  lowbit::Result<lowbit::QuantParams> p = W4::compute_params(lowbit::row_major(w.data(), 1, 8));
  if (!p) {
    std::fprintf(stderr, "compute_params failed: %s\n", p.status().message());
    return 1;
  }
  std::vector<float> out(w.size());
  if (!W4::fake_quantize(lowbit::row_major(w.data(), 1, 8), *p, lowbit::row_major(out.data(), 1, 8)))
    return 1;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const float step = p->scale[i / 4];
    if (std::fabs(out[i] - w[i]) > 0.5f * step * 1.0001f) {
      std::fprintf(stderr, "element %zu: %g -> %g exceeds half a step\n", i, w[i], out[i]);
      return 1;
    }
  }
  std::printf("lowbit consumer ok\n");
  return 0;
}
