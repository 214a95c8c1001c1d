# Runs the self-alignment example in a reduced configuration with KTSA_SIMD
# pinned to one level and compares its printed output (the tables and the
# training log; the lines naming output paths dropped) with a checked-in file.
# The output must be the same on every x86-64 machine of that SIMD level.
#
#   cmake -DEXE=... -DLEVEL=scalar|avx2|avx512 -DEXPECTED=... -DOUT=... [-DTHREADS=2]
#         [-DUPDATE=1] [-DLAUNCHER="mpirun;-np;2"] -P same_table.cmake
#
# LAUNCHER (a list) runs EXE under it: the data-parallel build
# (ktsa_self_alignment_mpi) must print the single-process file. REFERENCE_EXE
# (with LAUNCHER) also runs that single-process binary and compares the trained
# models' bits (OUT/model_bits.txt) with it.
#
# UPDATE=1 writes the expected file instead of comparing (after a deliberate
# change of the example's numbers). Prints "skipped: ..." (the test's skip
# pattern) when the CPU lacks the level.
if(NOT DEFINED THREADS)
  set(THREADS 2)
endif()
foreach(var EXE LEVEL EXPECTED OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "same_table.cmake: -D${var}=... is required")
  endif()
endforeach()

if(EXISTS /proc/cpuinfo AND NOT LEVEL STREQUAL "scalar")
  file(READ /proc/cpuinfo cpuinfo)
  set(flag ${LEVEL})
  if(LEVEL STREQUAL "avx512")
    set(flag avx512f)
  endif()
  if(NOT cpuinfo MATCHES " ${flag} ")
    # The test's SKIP_REGULAR_EXPRESSION matches this line.
    message("skipped: this CPU has no ${LEVEL}")
    return()
  endif()
endif()

set(ENV{KTSA_SIMD} ${LEVEL})
execute_process(
  COMMAND ${LAUNCHER} ${EXE} --categories Books,Apparel --train-queries 400 --test-queries 200 --steps 40
          --mle-steps 30 --batch 32 --eval-every 20 --eval-draws 2 --chart-queries 100
          --threads ${THREADS} --timing 0 --out ${OUT}
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the example failed (${rc}):\n${out}\n${err}")
endif()
# Drop the lines that name paths or depend on gnuplot being installed.
string(REGEX REPLACE "(^|\n)(tables|chart|gnuplot)[^\n]*" "" out "${out}")

if(UPDATE)
  file(WRITE ${EXPECTED} "${out}")
  message("wrote ${EXPECTED}")
  return()
endif()
file(READ ${EXPECTED} expected)
if(NOT out STREQUAL expected)
  file(WRITE ${OUT}/printed.txt "${out}")
  message(FATAL_ERROR
    "the printed output under KTSA_SIMD=${LEVEL} differs from ${EXPECTED}:\n"
    "  diff ${EXPECTED} ${OUT}/printed.txt\n"
    "(if the change is deliberate, rerun this script with -DUPDATE=1)")
endif()
if(REFERENCE_EXE)
  execute_process(
    COMMAND ${REFERENCE_EXE} --categories Books,Apparel --train-queries 400 --test-queries 200
            --steps 40 --mle-steps 30 --batch 32 --eval-every 20 --eval-draws 2
            --chart-queries 100 --threads ${THREADS} --timing 0 --out ${OUT}/reference
    OUTPUT_QUIET ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the reference run failed (${rc}):\n${err}")
  endif()
  file(READ ${OUT}/model_bits.txt bits)
  file(READ ${OUT}/reference/model_bits.txt reference_bits)
  if(NOT bits STREQUAL reference_bits)
    message(FATAL_ERROR "the trained models' bits differ from one process's:\n"
            "${bits}vs\n${reference_bits}")
  endif()
  message("same model bits as one process:\n${bits}")
endif()
message("same output as ${EXPECTED}")
