// PerToken parameters are computed per input at run time: there is nothing to calibrate.
#include "lowbit/calibrator.hpp"
#ifdef LOWBIT_SHOULD_FAIL
using Q = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerToken>;
#else
using Q = lowbit::Quantizer<lowbit::Bits<8>, lowbit::Asymmetric, lowbit::PerChannel<0>>;
#endif
int main() {
  lowbit::Calibrator<Q> calibrator;
  return static_cast<int>(calibrator.batches());
}
