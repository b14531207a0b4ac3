# The kernel tests on 64-bit ARM: cross-builds lowbit_kernel_tests (tests/CMakeLists.txt) for
# aarch64 in Release without sanitizers (qemu-user and ASan do not mix well, and the x86 suite
# already runs them sanitized), then runs it under qemu-user twice, so that both NEON paths run
# against the scalar reference:
#   -cpu max         NEON and the dot-product extension: the neon-dotprod kernels
#   -cpu cortex-a57  ARMv8.0 NEON only: the neon kernels, and dotprod detection saying no
# Each run must also report the ISAs we expect it to see, so a detection regression (getauxval)
# fails here rather than silently testing less.
#
# Prints "LOWBIT_SKIPPED" and succeeds, which the ctest entry maps to a skip, when the cross
# compiler or qemu is missing (Debian: apt-get install g++-aarch64-linux-gnu qemu-user).
#   cmake -DSOURCE=dir -DBINARY=dir -DGENERATOR=Ninja [-DARGS=a;b] -P aarch64_qemu.cmake
foreach(var SOURCE BINARY GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "aarch64_qemu.cmake: ${var} is required")
  endif()
endforeach()

find_program(CROSS_CXX aarch64-linux-gnu-g++)
find_program(QEMU qemu-aarch64)
if(NOT CROSS_CXX OR NOT QEMU)
  message("LOWBIT_SKIPPED: aarch64 kernel tests need aarch64-linux-gnu-g++ and qemu-aarch64 "
          "(Debian: apt-get install g++-aarch64-linux-gnu qemu-user)")
  return()
endif()

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}")
  endif()
endfunction()

string(TIMESTAMP start "%s")
step(${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -G ${GENERATOR}
     -DCMAKE_TOOLCHAIN_FILE=${SOURCE}/tests/cmake/aarch64-linux-gnu.cmake
     -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_EXAMPLES=OFF
     -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_INSTALL=OFF -DLOWBIT_FULL_SUITE=OFF -DLOWBIT_SANITIZE=OFF
     ${ARGS})
step(${CMAKE_COMMAND} --build ${BINARY} --target lowbit_kernel_tests -j 2)
string(TIMESTAMP built "%s")

# What tests/unit/test_cpu.cpp must report (regular expressions) for each emulated CPU.
set(expect_max "runnable here: scalar neon neon-dotprod")
set(expect_cortex-a57 "not runnable here:[^\n]* neon-dotprod")
foreach(cpu max cortex-a57)
  execute_process(COMMAND ${QEMU} -L /usr/aarch64-linux-gnu -cpu ${cpu}
                          ${BINARY}/tests/lowbit_kernel_tests --no-intro=true
                  OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE rc)
  message("---- qemu-aarch64 -cpu ${cpu}\n${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "kernel tests failed under qemu-aarch64 -cpu ${cpu} (${rc})")
  endif()
  if(NOT out MATCHES "${expect_${cpu}}")
    message(FATAL_ERROR "qemu-aarch64 -cpu ${cpu}: expected the tests to report '${expect_${cpu}}'")
  endif()
endforeach()
string(TIMESTAMP end "%s")
math(EXPR build_s "${built} - ${start}")
math(EXPR run_s "${end} - ${built}")
message("aarch64: cross build ${build_s} s, qemu runs ${run_s} s")
