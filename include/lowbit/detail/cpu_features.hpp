// lowbit/detail/cpu_features.hpp: what the CPU and the operating system let us run.
//
// x86: an instruction set is usable only when the CPU reports it (CPUID) *and* the OS saves its
// registers on a context switch (XCR0, read with XGETBV, after CPUID says OSXSAVE). xsimd 8.1
// checks only the first; a kernel that trusts it crashes under an OS or hypervisor that disables
// AVX-512 state. ARM64 Linux: NEON is architectural; the dot-product extension comes from
// getauxval(AT_HWCAP).
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define LOWBIT_ARCH_X86 1
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#endif
#elif defined(__aarch64__)
#define LOWBIT_ARCH_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

namespace lowbit {
namespace detail {

struct RawCpuFeatures {
  bool ssse3 = false, sse41 = false;
  bool avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx_vnni = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512vnni = false;
  bool neon = false, dotprod = false;
};

#if defined(LOWBIT_ARCH_X86) && (defined(__GNUC__) || defined(__clang__))
inline void cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4]) noexcept {
  __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}
// XCR0: which register states the OS saves. Only called after CPUID reported OSXSAVE.
inline std::uint64_t xgetbv0() noexcept {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}
#endif

inline RawCpuFeatures detect_cpu_features() noexcept {
  RawCpuFeatures f;
#if defined(LOWBIT_ARCH_X86) && (defined(__GNUC__) || defined(__clang__))
  unsigned r[4] = {0, 0, 0, 0};
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  if (max_leaf < 1) return f;
  cpuid(1, 0, r);
  const unsigned ecx1 = r[2];
  f.ssse3 = (ecx1 >> 9) & 1;
  f.sse41 = (ecx1 >> 19) & 1;
  const bool osxsave = (ecx1 >> 27) & 1;
  const std::uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;     // SSE and AVX state
  const bool zmm_saved = (xcr0 & 0xE6) == 0xE6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  f.avx = ymm_saved && ((ecx1 >> 28) & 1);
  f.fma = f.avx && ((ecx1 >> 12) & 1);
  f.f16c = f.avx && ((ecx1 >> 29) & 1);
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    const unsigned ebx7 = r[1], ecx7 = r[2];
    const unsigned max_subleaf = r[0];
    f.avx2 = f.avx && ((ebx7 >> 5) & 1);
    f.bmi2 = (ebx7 >> 8) & 1;
    f.avx512f = zmm_saved && ((ebx7 >> 16) & 1);
    f.avx512dq = f.avx512f && ((ebx7 >> 17) & 1);
    f.avx512bw = f.avx512f && ((ebx7 >> 30) & 1);
    f.avx512vl = f.avx512f && ((ebx7 >> 31) & 1);
    f.avx512vnni = f.avx512f && ((ecx7 >> 11) & 1);
    if (max_subleaf >= 1) {
      cpuid(7, 1, r);
      f.avx_vnni = f.avx2 && ((r[0] >> 4) & 1);
    }
  }
#elif defined(LOWBIT_ARCH_ARM64)
  f.neon = true;
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  f.dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__ARM_FEATURE_DOTPROD)
  f.dotprod = true;
#endif
#endif
  return f;
}

}  // namespace detail
}  // namespace lowbit
