// CPU feature detection and the forced-ISA switch.
#include <doctest/doctest.h>

#include <string>

#include "lowbit/cpu.hpp"

TEST_CASE("available ISAs: scalar always, listed once, and consistent with isa_supported") {
  const lowbit::IsaList list = lowbit::available_isas();
  REQUIRE(list.count >= 1);
  CHECK(list.items[0] == lowbit::Isa::kScalar);
  std::string runnable, skipped;
  for (int i = 0; i < lowbit::kIsaCount; ++i) {
    const auto isa = static_cast<lowbit::Isa>(i);
    (lowbit::isa_supported(isa) ? runnable : skipped) += std::string(" ") + lowbit::isa_name(isa);
  }
  MESSAGE("runnable here:", runnable, "; not runnable here:", skipped);
  for (const lowbit::Isa isa : list) CHECK(lowbit::isa_supported(isa));
  // Clusters nest: a CPU that runs a cluster runs the ones it extends.
  if (lowbit::isa_supported(lowbit::Isa::kAvx512Vnni)) CHECK(lowbit::isa_supported(lowbit::Isa::kAvx512));
  if (lowbit::isa_supported(lowbit::Isa::kAvxVnni)) CHECK(lowbit::isa_supported(lowbit::Isa::kAvx2));
  if (lowbit::isa_supported(lowbit::Isa::kNeonDotprod)) CHECK(lowbit::isa_supported(lowbit::Isa::kNeon));
#if defined(__x86_64__)
  CHECK_FALSE(lowbit::isa_supported(lowbit::Isa::kNeon));
  // Every x86-64 CPU lowbit targets in practice has SSE4.1; a compile-time macro cross-checks
  // the runtime answer where the compiler was told.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  CHECK(lowbit::isa_supported(lowbit::Isa::kAvx2));
#endif
#endif
}

TEST_CASE("ISA names parse back, and unknown names are errors") {
  for (int i = 0; i < lowbit::kIsaCount; ++i) {
    const auto isa = static_cast<lowbit::Isa>(i);
    lowbit::Result<lowbit::Isa> parsed = lowbit::parse_isa(lowbit::isa_name(isa));
    REQUIRE(parsed);
    CHECK(*parsed == isa);
  }
  CHECK(lowbit::parse_isa("avx9000").status().code() == lowbit::Errc::kInvalidArgument);
  CHECK(lowbit::parse_isa(nullptr).status().code() == lowbit::Errc::kInvalidArgument);
}

TEST_CASE("forcing an ISA: supported ones take effect, unsupported ones are refused") {
  const lowbit::Isa natural = lowbit::best_isa();
  for (const lowbit::Isa isa : lowbit::available_isas()) {
    CAPTURE(lowbit::isa_name(isa));
    REQUIRE(lowbit::force_isa_for_testing(isa));
    CHECK(lowbit::best_isa() == isa);
  }
  lowbit::reset_forced_isa();
  CHECK(lowbit::best_isa() == natural);
  for (int i = 0; i < lowbit::kIsaCount; ++i) {
    const auto isa = static_cast<lowbit::Isa>(i);
    if (!lowbit::isa_supported(isa)) {
      CHECK(lowbit::force_isa_for_testing(isa).code() == lowbit::Errc::kUnsupported);
      CHECK(lowbit::best_isa() == natural);
    }
  }
}
