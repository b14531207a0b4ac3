# Toolchain file: cross-compile lowbit's tests for 64-bit ARM Linux with Debian's cross compiler
# (apt-get install g++-aarch64-linux-gnu), to run them under qemu-user (apt-get install qemu-user).
# Used by tests/cmake/aarch64_qemu.cmake; usable by hand:
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=tests/cmake/aarch64-linux-gnu.cmake \
#         -Dxsimd_DIR=/usr/lib/x86_64-linux-gnu/cmake/xsimd -DLOWBIT_BUILD_EXAMPLES=OFF
#   cmake --build build/aarch64 --target lowbit_kernel_tests
#   qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max build/aarch64/tests/lowbit_kernel_tests
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# The target's libraries and headers live in /usr/aarch64-linux-gnu (Debian's multiarch cross
# layout); programs run on the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
# xsimd, Eigen and doctest are header-only and architecture-independent: Debian installs them
# (and their CMake package files) under the host's /usr, which the cross build may use.
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Their headers sit in /usr/include beside the host's C library headers. -idirafter puts that
# directory *after* the cross compiler's own system directories, so <xsimd/...>, <Eigen/...>
# (through /usr/include/eigen3) and <doctest/...> are found there while every C and C++ library
# header still comes from the aarch64 sysroot. Because the compiler then reports /usr/include as
# one of its implicit directories, CMake drops the -isystem /usr/include that the xsimd target
# would add (which would put the host's headers first and break <cmath>'s #include_next).
set(CMAKE_C_FLAGS_INIT "-idirafter /usr/include")
set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include")

# add_test() and try_run() run target programs through qemu-user.
find_program(LOWBIT_QEMU_AARCH64 qemu-aarch64)
if(LOWBIT_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${LOWBIT_QEMU_AARCH64} -L /usr/aarch64-linux-gnu)
endif()
