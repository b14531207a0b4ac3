# Compiles every public header on its own, and all of them together, with one compiler under the
# strictest flags an engine may use: -fno-exceptions -fno-rtti and warnings as errors. A public
# header that needs another include first, or that throws, fails here.
#   cmake -DCOMPILER=clang++ -DINCLUDE_DIRS=a;b -DSOURCE_DIR=repo -DWORK_DIR=dir -P check_headers.cmake
file(GLOB_RECURSE headers RELATIVE ${SOURCE_DIR}/include ${SOURCE_DIR}/include/lowbit/*.hpp)
list(FILTER headers EXCLUDE REGEX "/detail/")
list(SORT headers)
file(MAKE_DIRECTORY ${WORK_DIR})
set(flags -std=c++17 -fno-exceptions -fno-rtti -Wall -Wextra -Wpedantic -Wshadow -Werror
          -I${SOURCE_DIR}/include)
foreach(dir IN LISTS INCLUDE_DIRS)
  list(APPEND flags -isystem ${dir})
endforeach()

set(all "")
foreach(header IN LISTS headers)
  string(MAKE_C_IDENTIFIER ${header} stem)
  file(WRITE ${WORK_DIR}/${stem}.cpp "#include \"${header}\"\n")
  string(APPEND all "#include \"${header}\"\n")
  execute_process(COMMAND ${COMPILER} ${flags} -fsyntax-only ${WORK_DIR}/${stem}.cpp
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${header} does not compile on its own with ${COMPILER}")
  endif()
endforeach()
string(APPEND all "int main() { return 0; }\n")
file(WRITE ${WORK_DIR}/all_headers.cpp "${all}")
execute_process(COMMAND ${COMPILER} ${flags} -O1 ${WORK_DIR}/all_headers.cpp -o ${WORK_DIR}/all_headers
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the public headers together do not compile with ${COMPILER}")
endif()
list(LENGTH headers n)
message(STATUS "${n} public headers compile alone and together with ${COMPILER}")
