// A symmetric signed range needs at least two bits.
#include "lowbit/quantizer.hpp"
#ifdef LOWBIT_SHOULD_FAIL
using Q = lowbit::Quantizer<lowbit::Bits<1>, lowbit::Symmetric, lowbit::PerTensor>;
#else
using Q = lowbit::Quantizer<lowbit::Bits<1>, lowbit::Asymmetric, lowbit::PerTensor>;
#endif
int main() { return Q::kCodes.max == 0; }
