// lowbit/detail/dispatch.hpp: how one header-only binary runs the best kernel the CPU has.
//
// Each ISA's kernel is an inline function in its own header, compiled for that ISA with a target
// attribute (LOWBIT_TARGET_AVX2 below). GCC and Clang accept the ISA's intrinsics inside such a
// function even when the translation unit is built with no -m flags, so a user links
// lowbit::lowbit and gets every path without changing their build. An entry point looks its
// kernel up once per call in a table indexed by lowbit::Isa (`KernelTable`), never per block.
//
// Rules for code inside a LOWBIT_TARGET_* function, because the attribute does not propagate:
//   - call only intrinsics, other functions with the same (or a weaker) target attribute, and
//     always-inline helpers marked with it; a lambda or a std:: algorithm inside is compiled for
//     the baseline ISA and cannot inline the intrinsics (GCC: "inlining failed ... target specific
//     option mismatch");
//   - keep such code in lowbit::detail::<isa> namespaces so that no symbol compiled for a wider ISA
//     can be picked by the linker for a baseline caller (Highway's ODR rule).
//
// xsimd 8.1 chooses its architectures from the compiler's -m flags (__AVX2__ ...), so inside a
// target-attributed function only raw intrinsics are usable; xsimd serves the baseline path that
// is compiled with the translation unit's own flags (SSE2 on x86-64, NEON on AArch64).
#pragma once

#include "lowbit/cpu.hpp"
#include "lowbit/detail/cpu_features.hpp"

// x86-64 only: a few kernels use 64-bit-only intrinsics (_mm_cvtsi64_si128); 32-bit x86 runs
// the scalar paths.
#if defined(LOWBIT_ARCH_X86) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_HAVE_X86_KERNELS 1
#include <immintrin.h>
// Clusters as in lowbit/cpu.hpp. F16C and BMI2 come with every AVX2 CPU worth dispatching to.
#define LOWBIT_TARGET_SSE41 __attribute__((target("sse4.1")))
#define LOWBIT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#define LOWBIT_TARGET_AVX_VNNI __attribute__((target("avx2,fma,f16c,bmi2,avxvnni")))
#define LOWBIT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2")))
#define LOWBIT_TARGET_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c,bmi2")))
#endif

#if defined(LOWBIT_ARCH_ARM64) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_HAVE_ARM_KERNELS 1
#include <arm_neon.h>
// NEON is architectural on AArch64; the dot-product extension (sdot/udot, ARMv8.2) is optional.
#define LOWBIT_TARGET_NEON
#if !defined(__clang__)
#define LOWBIT_HAVE_ARM_DOTPROD_KERNELS 1
#define LOWBIT_TARGET_NEON_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#elif defined(__ARM_FEATURE_DOTPROD)
// Clang (14) rejects that target string, and its arm_neon.h declares vdotq_* only when the whole
// translation unit targets dotprod: with Clang the dotprod kernels exist only in builds made
// with -march=armv8.2-a+dotprod (or later), where they need no attribute.
#define LOWBIT_HAVE_ARM_DOTPROD_KERNELS 1
#define LOWBIT_TARGET_NEON_DOTPROD
#endif
#endif

namespace lowbit {
namespace detail {

// One function pointer per Isa; null where a path has no kernel of its own. lookup() walks down
// from the requested path to the most capable one that has a kernel, ending at kScalar, which
// every table must fill: a path without a specialised kernel then runs its predecessor's.
template <typename Fn>
struct KernelTable {
  Fn* kernels[kIsaCount] = {};

  constexpr KernelTable& set(Isa isa, Fn* fn) noexcept {
    kernels[static_cast<int>(isa)] = fn;
    return *this;
  }

  // The kernel for `isa` or its nearest weaker relative that this CPU can run. The CPU check
  // matters: the path below kAvx512 in the enum is kAvxVnni, which an AVX-512 Skylake lacks.
  Fn* lookup(Isa isa) const noexcept {
    for (int i = static_cast<int>(isa); i > 0; --i) {
      // ARM paths fall back to scalar, never to an x86 path listed before them in the enum.
      if (static_cast<Isa>(i) == Isa::kAvx512Vnni && isa >= Isa::kNeon) break;
      if (kernels[i] != nullptr && isa_supported(static_cast<Isa>(i))) return kernels[i];
    }
    return kernels[static_cast<int>(Isa::kScalar)];
  }
};

// Which path an entry point runs: the forced one or the best one (lowbit/cpu.hpp).
inline Isa dispatch_isa() noexcept { return best_isa(); }

}  // namespace detail
}  // namespace lowbit
