// Quantizer's parameters are <Bits, Symmetry, Granularity, ...>, checked by kind.
#include "lowbit/quantizer.hpp"
#ifdef LOWBIT_SHOULD_FAIL
using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::PerTensor, lowbit::Asymmetric>;
#else
using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerTensor>;
#endif
int main() { return Q::kBits == 0; }
