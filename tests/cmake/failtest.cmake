# A failtest (after Eigen's failtest/): the file must compile as it is, and must fail to compile
# with -DLOWBIT_SHOULD_FAIL, with a diagnostic that contains EXPECT (the static_assert's words).
#   cmake -DCOMPILER=c++ -DFILE=x.cpp -DEXPECT=text -DINCLUDE_DIRS=a;b -DSOURCE_DIR=repo -P failtest.cmake
set(flags -std=c++17 -fsyntax-only -I${SOURCE_DIR}/include)
foreach(dir IN LISTS INCLUDE_DIRS)
  list(APPEND flags -isystem ${dir})
endforeach()
execute_process(COMMAND ${COMPILER} ${flags} ${FILE} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FILE} must compile without LOWBIT_SHOULD_FAIL:\n${err}")
endif()
execute_process(COMMAND ${COMPILER} ${flags} -DLOWBIT_SHOULD_FAIL ${FILE} RESULT_VARIABLE rc
                ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${FILE} compiled with LOWBIT_SHOULD_FAIL; it must not")
endif()
string(FIND "${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${FILE} failed, but without the expected message \"${EXPECT}\":\n${err}")
endif()
