// Bits<N> accepts 1..8 only.
#include "lowbit/quantizer.hpp"
#ifdef LOWBIT_SHOULD_FAIL
using Q = lowbit::Quantizer<lowbit::Bits<9>, lowbit::Asymmetric, lowbit::PerTensor>;
#else
using Q = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerTensor>;
#endif
int main() { return Q::kBits == 0; }
