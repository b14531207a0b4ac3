// lowbit/policy/bits.hpp: the bit width of a quantizer's integer codes.
#pragma once

namespace lowbit {

// Codes of N bits: 2^N levels. N = 1..8, because every lowbit code fits a byte before packing
// (format/packed.hpp stores N-bit codes densely, N bits each).
template <int N>
struct Bits {
  static_assert(N >= 1 && N <= 8,
                "Bits<N>: lowbit quantizes to 1..8 bits; use float formats for wider types");
  static constexpr int kBits = N;
  static constexpr int kLevels = 1 << N;
};

}  // namespace lowbit
