// lowbit/format/ggml.hpp: every ggml block format lowbit reproduces byte for byte, in one include.
// See format/ggml/common.hpp for the FormatTraits interface they share.
#pragma once

#include "lowbit/format/ggml/common.hpp"
#include "lowbit/format/ggml/float16.hpp"
#include "lowbit/format/ggml/iq4.hpp"
#include "lowbit/format/ggml/k_quants.hpp"
#include "lowbit/format/ggml/legacy.hpp"
#include "lowbit/format/ggml/ternary.hpp"
