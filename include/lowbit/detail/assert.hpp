// lowbit/detail/assert.hpp: internal invariants and contract breaches (never input validation).
//
// LOWBIT_ASSERT(cond, msg): an internal consistency check. Off under NDEBUG unless the user defines
//   LOWBIT_ENABLE_ASSERTS; a user may define LOWBIT_ASSERT_HANDLER(file, line, msg) to route it into
//   their own logging before the trap, as eigen_assert can be overridden.
// LOWBIT_CHECK(cond, msg): a contract breach that must never read garbage, such as value() on an
//   error Result. Always on; traps. Bad *input* never reaches either: it gets a Status.
#pragma once

#if !defined(LOWBIT_ASSERT_HANDLER)
#define LOWBIT_ASSERT_HANDLER(file, line, msg) ((void)(file), (void)(line), (void)(msg))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LOWBIT_TRAP() __builtin_trap()
#else
#include <cstdlib>
#define LOWBIT_TRAP() std::abort()
#endif

#define LOWBIT_CHECK(cond, msg)                         \
  do {                                                  \
    if (!(cond)) {                                      \
      LOWBIT_ASSERT_HANDLER(__FILE__, __LINE__, (msg)); \
      LOWBIT_TRAP();                                    \
    }                                                   \
  } while (false)

#if defined(NDEBUG) && !defined(LOWBIT_ENABLE_ASSERTS)
#define LOWBIT_ASSERT(cond, msg) ((void)0)
#else
#define LOWBIT_ASSERT(cond, msg) LOWBIT_CHECK(cond, msg)
#endif
