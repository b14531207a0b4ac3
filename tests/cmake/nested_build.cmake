# Configures, builds and runs another CMake project from inside a ctest test, failing the test on
# the first step that fails. Used for the Release -fno-exceptions rebuild of the suite and for
# the consumer projects.
#   cmake -DSOURCE=dir -DBINARY=dir -DGENERATOR=Ninja [-DARGS=a;b] [-DRUN=program] [-DCTEST=ON]
#         -P nested_build.cmake
foreach(var SOURCE BINARY GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "nested_build.cmake: ${var} is required")
  endif()
endforeach()

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGN}")
  endif()
endfunction()

step(${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -G ${GENERATOR} ${ARGS})
step(${CMAKE_COMMAND} --build ${BINARY} -j 2)
if(DEFINED INSTALL_PREFIX)
  step(${CMAKE_COMMAND} --install ${BINARY} --prefix ${INSTALL_PREFIX})
endif()
if(CTEST)
  step(${CMAKE_CTEST_COMMAND} --test-dir ${BINARY} --output-on-failure)
endif()
if(DEFINED RUN)
  step(${BINARY}/${RUN})
endif()
