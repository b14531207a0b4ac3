// tests/support/random.hpp: seeded inputs for property tests. The seed is printed by each test
// that uses it, so a red run can be reproduced (std::normal_distribution is the standard
// library's own, so values differ between libstdc++ and libc++; the properties do not).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace lowbit_test {

inline std::vector<float> gaussian(std::int64_t n, float sigma, std::uint32_t seed,
                                   float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, sigma);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace lowbit_test
