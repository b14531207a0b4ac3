# xsimd and Eigen come from the system (Debian: libxsimd-dev, libeigen3-dev) or the user's package
# manager. Only with LOWBIT_FETCH_DEPS=ON, and only when they are missing, are they downloaded.

find_package(xsimd QUIET)
find_package(Eigen3 3.3 QUIET NO_MODULE)

if((NOT xsimd_FOUND OR NOT Eigen3_FOUND) AND LOWBIT_FETCH_DEPS)
  include(FetchContent)
  if(NOT xsimd_FOUND)
    FetchContent_Declare(xsimd GIT_REPOSITORY https://github.com/xtensor-stack/xsimd.git GIT_TAG 13.2.0)
    FetchContent_MakeAvailable(xsimd)
  endif()
  if(NOT Eigen3_FOUND)
    set(EIGEN_BUILD_TESTING OFF CACHE BOOL "" FORCE)
    set(EIGEN_BUILD_DOC OFF CACHE BOOL "" FORCE)
    FetchContent_Declare(Eigen3 GIT_REPOSITORY https://gitlab.com/libeigen/eigen.git GIT_TAG 3.4.0)
    FetchContent_MakeAvailable(Eigen3)
  endif()
endif()

if(NOT TARGET xsimd AND NOT TARGET xsimd::xsimd)
  message(FATAL_ERROR "lowbit needs xsimd (Debian: apt-get install libxsimd-dev), "
                      "or configure with -DLOWBIT_FETCH_DEPS=ON to download it")
endif()
if(NOT TARGET Eigen3::Eigen)
  message(FATAL_ERROR "lowbit needs Eigen 3.3+ (Debian: apt-get install libeigen3-dev), "
                      "or configure with -DLOWBIT_FETCH_DEPS=ON to download it")
endif()

include(${CMAKE_CURRENT_LIST_DIR}/LowbitXsimdWorkaround.cmake)

# xsimd's installed target is plain `xsimd` (8.x and later); prefer it, it is what every version has.
if(TARGET xsimd)
  set(LOWBIT_XSIMD_TARGET xsimd)
else()
  set(LOWBIT_XSIMD_TARGET xsimd::xsimd)
endif()
