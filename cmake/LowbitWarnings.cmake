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
    # of magnitude slower, and the oracle tests that search over GEMMs (AWQ) took minutes.
    $<$<CONFIG:Debug>:-O1>)
  target_link_options(lowbit_dev_flags INTERFACE -fsanitize=address,undefined)
endif()
