# ctest driver: lowbit_quantize --scheme writes a GGUF, and lowbit_evaluate measures that file
# (read back by examples/llama/gguf_model.hpp) next to its own row of the same scheme. Both come
# from examples/llama/schemes.hpp with the same calibration, so the perplexities must be the same
# to every printed digit: a wrong Q/K permutation, a row out of place or a norm the scheme rewrote
# and the file lost would all move them. Also: the packed and KV schemes are refused cleanly.
#   cmake -DQUANTIZE=lowbit_quantize -DEVALUATE=lowbit_evaluate -DMODEL=models/tinylm
#         -DWORK=dir -DSCHEMES=gptq-q4_K,awq-q4_0 -P run_scheme_roundtrip.cmake
# (SCHEMES: ggml-format schemes without int8 activations, whose file runs the same kernels.)
foreach(var QUANTIZE EVALUATE MODEL WORK SCHEMES)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_scheme_roundtrip.cmake: ${var} is required")
  endif()
endforeach()

function(run expected)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc STREQUAL "${expected}")
    message(FATAL_ERROR "expected exit ${expected}, got '${rc}': ${ARGN}\n${out}\n${err}")
  endif()
  set(output "${out}" PARENT_SCOPE)
endfunction()

string(REPLACE "," ";" SCHEMES "${SCHEMES}")
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(calib 4)
set(files)
foreach(scheme IN LISTS SCHEMES)
  run(0 ${QUANTIZE} ${MODEL} ${WORK}/${scheme}.gguf --scheme ${scheme} --calib-windows ${calib} --quiet)
  list(APPEND files --gguf ${WORK}/${scheme}.gguf)
endforeach()
list(JOIN SCHEMES "," scheme_list)
run(0 ${EVALUATE} --model-dir ${MODEL} --windows 2 --calib-windows ${calib} --no-speed
    --schemes ${scheme_list} ${files})
foreach(scheme IN LISTS SCHEMES)
  # Row: name, layer kind (one or more words), bpw, MB, smaller, ppl, ...
  string(REGEX MATCH "\n${scheme} +[^\n]*" row "${output}")
  string(REGEX MATCH "\n${scheme}\\.gguf +gguf file[^\n]*" file_row "${output}")
  string(REGEX MATCH "[0-9.]+ +[0-9.]+ +[0-9.]+% +([0-9.]+)" m "${row}")
  set(ppl "${CMAKE_MATCH_1}")
  string(REGEX MATCH "[0-9.]+ +[0-9.]+ +[0-9.]+% +([0-9.]+)" m "${file_row}")
  set(file_ppl "${CMAKE_MATCH_1}")
  if(ppl STREQUAL "" OR NOT ppl STREQUAL file_ppl)
    message(FATAL_ERROR "${scheme}: lowbit_evaluate's row gives '${ppl}', the GGUF '${file_ppl}'\n${output}")
  endif()
  message(STATUS "${scheme}: perplexity ${ppl} from the scheme and from its GGUF")
endforeach()

run(2 ${QUANTIZE} ${MODEL} ${WORK}/x.gguf --scheme gptq-w4-g128)  # packed codes: no GGUF type
run(2 ${QUANTIZE} ${MODEL} ${WORK}/x.gguf --scheme kv4)           # the runtime's, no weights
run(2 ${QUANTIZE} ${MODEL} ${WORK}/x.gguf --scheme no-such-scheme)
if(EXISTS ${WORK}/x.gguf)
  message(FATAL_ERROR "a refused --scheme left an output file")
endif()
