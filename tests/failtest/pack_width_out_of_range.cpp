// Dense packing takes widths 1..8 only.
#include <cstdint>

#include "lowbit/format/packed.hpp"
#ifdef LOWBIT_SHOULD_FAIL
constexpr int kWidth = 9;
#else
constexpr int kWidth = 8;
#endif
int main() {
  const std::uint8_t codes[1] = {1};
  std::uint8_t out[2] = {};
  return lowbit::pack_codes<kWidth>(codes, 1, out, sizeof out).ok() ? 0 : 1;
}
