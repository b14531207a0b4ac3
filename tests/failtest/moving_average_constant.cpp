// The moving-average constant N/D must lie in (0, 1].
#include "lowbit/quantizer.hpp"
#ifdef LOWBIT_SHOULD_FAIL
using R = lowbit::MovingAverageMinMax<3, 2>;
#else
using R = lowbit::MovingAverageMinMax<1, 2>;
#endif
int main() { return R::kAveragingConstant > 1.0f; }
