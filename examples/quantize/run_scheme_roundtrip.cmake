# ctest driver: lowbit_quantize --scheme writes a file, and lowbit_evaluate --file measures it
# (read back by examples/llama/gguf_model.hpp or checkpoint.hpp) next to its own row of the same
# scheme. Both come from examples/llama/schemes.hpp with the same calibration, so the perplexities
# must be the same to every printed digit: a wrong Q/K permutation, a row out of place or a norm
# the scheme rewrote and the file lost would all move them. Also: a packed scheme into a GGUF and
# a KV scheme are refused cleanly.
#   cmake -DQUANTIZE=lowbit_quantize -DEVALUATE=lowbit_evaluate -DMODEL=models/tinylm
#         -DWORK=dir -DFILES=gptq-q4_K.gguf,gptq-w3-g128.safetensors -P run_scheme_roundtrip.cmake
# FILES: <scheme>.gguf or <scheme>.safetensors (a lowbit checkpoint), for schemes without int8
# activations (whose files run the same kernels as the scheme's row).
foreach(var QUANTIZE EVALUATE MODEL WORK FILES)
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

string(REPLACE "," ";" FILES "${FILES}")
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(calib 4)
set(args)
set(schemes)
foreach(file IN LISTS FILES)
  string(REGEX REPLACE "\\.(gguf|safetensors)$" "" scheme "${file}")
  run(0 ${QUANTIZE} ${MODEL} ${WORK}/${file} --scheme ${scheme} --calib-windows ${calib} --quiet)
  list(APPEND args --file ${WORK}/${file})
  list(APPEND schemes ${scheme})
endforeach()
list(JOIN schemes "," scheme_list)
run(0 ${EVALUATE} --model-dir ${MODEL} --windows 2 --calib-windows ${calib} --no-speed
    --schemes ${scheme_list} ${args})
foreach(file IN LISTS FILES)
  string(REGEX REPLACE "\\.(gguf|safetensors)$" "" scheme "${file}")
  string(REPLACE "." "\\." file_pattern "${file}")
  # Row: name, layer kind (one or more words), bpw, MB, smaller, ppl, ...
  string(REGEX MATCH "\n${scheme} +[^\n]*" row "${output}")
  string(REGEX MATCH "\n${file_pattern} +[a-z]+ file[^\n]*" file_row "${output}")
  string(REGEX MATCH "[0-9.]+ +[0-9.]+ +[0-9.]+% +([0-9.]+)" m "${row}")
  set(ppl "${CMAKE_MATCH_1}")
  string(REGEX MATCH "[0-9.]+ +[0-9.]+ +[0-9.]+% +([0-9.]+)" m "${file_row}")
  set(file_ppl "${CMAKE_MATCH_1}")
  if(ppl STREQUAL "" OR NOT ppl STREQUAL file_ppl)
    message(FATAL_ERROR "${scheme}: lowbit_evaluate's row gives '${ppl}', ${file} '${file_ppl}'\n${output}")
  endif()
  message(STATUS "${scheme}: perplexity ${ppl} from the scheme and from ${file}")
endforeach()

run(2 ${QUANTIZE} ${MODEL} ${WORK}/x.gguf --scheme gptq-w4-g128)  # packed codes: no GGUF type
run(2 ${QUANTIZE} ${MODEL} ${WORK}/x.gguf --scheme kv4)           # the runtime's, no weights
run(2 ${QUANTIZE} ${MODEL} ${WORK}/x.gguf --scheme no-such-scheme)
if(EXISTS ${WORK}/x.gguf)
  message(FATAL_ERROR "a refused --scheme left an output file")
endif()
