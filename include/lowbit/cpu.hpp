// lowbit/cpu.hpp: the instruction-set paths lowbit's kernels are compiled for, which of them this
// CPU can run, and the switch tests use to force one.
//
// Paths are grouped into clusters, as Highway does, so that each kernel is compiled a bounded
// number of times and a cluster is all-or-nothing:
//   kScalar      portable C++, always available (the reference path)
//   kSse41       SSSE3 + SSE4.1 (Penryn, Nehalem, Silvermont and later)
//   kAvx2        AVX2 + FMA + F16C + BMI2 (Haswell, Zen 1 and later)
//   kAvxVnni     kAvx2 + AVX-VNNI (Alder Lake, Zen 5): VNNI on 256-bit registers
//   kAvx512      AVX-512 F/BW/DQ/VL (Skylake-SP, Zen 4)
//   kAvx512Vnni  kAvx512 + AVX-512 VNNI (Cascade Lake, Ice Lake, Zen 4/5)
//   kNeon        ARMv8 Advanced SIMD
//   kNeonDotprod kNeon + the dot-product extension (sdot/udot)
//
// best_isa() is the path entry points use unless one is forced: by force_isa_for_testing(), or by
// the environment variable LOWBIT_ISA (a name from isa_name(), read once, at the first query).
// Forcing a path the CPU cannot run is refused with a Status, never honoured.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lowbit/detail/cpu_features.hpp"
#include "lowbit/status.hpp"

namespace lowbit {

enum class Isa : std::uint8_t {
  kScalar = 0,
  kSse41,
  kAvx2,
  kAvxVnni,
  kAvx512,
  kAvx512Vnni,
  kNeon,
  kNeonDotprod,
};
constexpr int kIsaCount = 8;

constexpr const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kSse41: return "sse4.1";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvxVnni: return "avx-vnni";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Vnni: return "avx512-vnni";
    case Isa::kNeon: return "neon";
    case Isa::kNeonDotprod: return "neon-dotprod";
  }
  return "unknown";
}

// The CPU's features, detected once (thread-safe static initialisation).
inline const detail::RawCpuFeatures& cpu_features() noexcept {
  static const detail::RawCpuFeatures features = detail::detect_cpu_features();
  return features;
}

// Whether this CPU (and OS) can run a path.
inline bool isa_supported(Isa isa) noexcept {
  const detail::RawCpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kSse41: return f.ssse3 && f.sse41;
    // Every feature a path's target attribute enables (detail/dispatch.hpp) is checked, even
    // those no real CPU of the cluster lacks: a virtual machine may hide any of them.
    case Isa::kAvx2: return f.avx2 && f.fma && f.f16c && f.bmi2;
    case Isa::kAvxVnni: return isa_supported(Isa::kAvx2) && f.avx_vnni;
    case Isa::kAvx512:
      return isa_supported(Isa::kAvx2) && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
    case Isa::kAvx512Vnni: return isa_supported(Isa::kAvx512) && f.avx512vnni;
    case Isa::kNeon: return f.neon;
    case Isa::kNeonDotprod: return f.neon && f.dotprod;
  }
  return false;
}

// The paths this CPU supports, scalar first, as a fixed-size list (no allocation).
struct IsaList {
  Isa items[kIsaCount];
  int count = 0;
  const Isa* begin() const noexcept { return items; }
  const Isa* end() const noexcept { return items + count; }
};
inline IsaList available_isas() noexcept {
  IsaList list{};
  for (int i = 0; i < kIsaCount; ++i)
    if (isa_supported(static_cast<Isa>(i))) list.items[list.count++] = static_cast<Isa>(i);
  return list;
}

// Parses a name from isa_name(); kInvalidArgument for anything else.
inline Result<Isa> parse_isa(const char* name) noexcept {
  if (name == nullptr) return Status(Errc::kInvalidArgument, "null ISA name");
  for (int i = 0; i < kIsaCount; ++i)
    if (std::strcmp(name, isa_name(static_cast<Isa>(i))) == 0) return static_cast<Isa>(i);
  return Status(Errc::kInvalidArgument, "unknown ISA name (see lowbit::isa_name)");
}

namespace detail {
// -1: nothing forced; otherwise the forced Isa. Process-wide on purpose: it is a test switch.
inline std::atomic<int>& forced_isa() noexcept {
  static std::atomic<int> forced{[] {
    const char* env = std::getenv("LOWBIT_ISA");
    if (env == nullptr || *env == '\0') return -1;
    const Result<Isa> isa = parse_isa(env);
    // An unknown or unsupported name is ignored rather than obeyed: the best path still runs.
    return isa && isa_supported(*isa) ? static_cast<int>(*isa) : -1;
  }()};
  return forced;
}
}  // namespace detail

// The path to run: the forced one if any, else the most capable supported one for this
// architecture.
inline Isa best_isa() noexcept {
  const int forced = detail::forced_isa().load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<Isa>(forced);
  Isa best = Isa::kScalar;
  for (Isa isa : available_isas()) best = isa;  // the list is ordered by capability per arch
  return best;
}

// Forces every entry point onto `isa` until reset_forced_isa(). Refuses a path the CPU cannot run.
inline Status force_isa_for_testing(Isa isa) noexcept {
  if (!isa_supported(isa)) return {Errc::kUnsupported, "this CPU cannot run the requested ISA"};
  detail::forced_isa().store(static_cast<int>(isa), std::memory_order_relaxed);
  return {};
}
inline void reset_forced_isa() noexcept { detail::forced_isa().store(-1, std::memory_order_relaxed); }

}  // namespace lowbit
