# Flags for lowbit's own tests, examples and benchmarks; never put on the INTERFACE target.
add_library(lowbit_dev_flags INTERFACE)
target_compile_options(lowbit_dev_flags INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-Wall -Wextra -Wpedantic -Wshadow>
  # Bit-exact comparisons with torch's float32 formulas need unfused multiply-adds.
  $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-ffp-contract=off>)
if(LOWBIT_SANITIZE)
  target_compile_options(lowbit_dev_flags INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
    # -O1, as the AddressSanitizer documentation advises: at -O0 Eigen's products run two orders
    # of magnitude slower, and the oracle tests that search over GEMMs (AWQ) took minutes. The
    # examples and benchmarks (lowbit_mark_compile_only) stay at -O0: the sanitized build only
    # compiles them, or runs them for seconds, and -O0 compiles them about four times faster.
    $<$<AND:$<CONFIG:Debug>,$<NOT:$<BOOL:$<TARGET_PROPERTY:LOWBIT_COMPILE_ONLY>>>>:-O1>)
  target_link_options(lowbit_dev_flags INTERFACE -fsanitize=address,undefined)
endif()

# Marks the executables and libraries of the calling directory as LOWBIT_COMPILE_ONLY (above).
function(lowbit_mark_compile_only)
  get_property(targets DIRECTORY PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE" OR type STREQUAL "STATIC_LIBRARY")
      set_property(TARGET ${target} PROPERTY LOWBIT_COMPILE_ONLY ON)
    endif()
  endforeach()
endfunction()
