# Runs the self-alignment example once in one process (REFERENCE_EXE) and once
# under LAUNCHER (EXE, the data-parallel build) with the same ARGS, and fails
# unless the printed output (lines naming paths dropped) and the trained
# models' bits (OUT/model_bits.txt) are the same.
#
#   cmake -DEXE=... -DREFERENCE_EXE=... "-DLAUNCHER=mpirun;-np;4" "-DARGS=--batch;3;..."
#         -DOUT=... -P same_as_one_process.cmake
foreach(var EXE REFERENCE_EXE LAUNCHER ARGS OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "same_as_one_process.cmake: -D${var}=... is required")
  endif()
endforeach()
foreach(run reference ranks)
  if(run STREQUAL "reference")
    set(cmd ${REFERENCE_EXE})
  else()
    set(cmd ${LAUNCHER} ${EXE})
  endif()
  execute_process(COMMAND ${cmd} ${ARGS} --timing 0 --out ${OUT}/${run}
                  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the ${run} run failed (${rc}):\n${out}\n${err}")
  endif()
  string(REGEX REPLACE "(^|\n)(tables|chart|gnuplot)[^\n]*" "" out "${out}")
  set(printed_${run} "${out}")
  file(READ ${OUT}/${run}/model_bits.txt bits_${run})
endforeach()
if(NOT printed_ranks STREQUAL printed_reference)
  file(WRITE ${OUT}/printed_reference.txt "${printed_reference}")
  file(WRITE ${OUT}/printed_ranks.txt "${printed_ranks}")
  message(FATAL_ERROR "the printed output differs from one process's:\n"
          "  diff ${OUT}/printed_reference.txt ${OUT}/printed_ranks.txt")
endif()
if(NOT bits_ranks STREQUAL bits_reference)
  message(FATAL_ERROR "the trained models' bits differ from one process's:\n"
          "${bits_ranks}vs\n${bits_reference}")
endif()
message("same printed output and model bits as one process:\n${bits_ranks}")
