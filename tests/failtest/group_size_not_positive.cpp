// PerGroup<Size> needs a positive size (or kDynamicGroup).
#include "lowbit/quantizer.hpp"
#ifdef LOWBIT_SHOULD_FAIL
using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<-32>>;
#else
using Q = lowbit::Quantizer<lowbit::Bits<4>, lowbit::Asymmetric, lowbit::PerGroup<32>>;
#endif
int main() { return Q::kBits == 0; }
