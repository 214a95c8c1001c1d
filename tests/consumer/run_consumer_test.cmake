# Builds and runs the consumer project (tests/consumer) the way a user would
# take ktsa in. KTSA_MODE:
#   install            install the build tree into a fresh prefix; find_package
#                      with and without COMPONENTS eigen xtensor dlpack
#   share_layout       configure ktsa afresh with the config files under
#                      share/ktsa (where vcpkg and Conan put them), install,
#                      find_package from that prefix
#   missing_component  a required component whose dependency is missing: the
#                      configure must fail, naming the dependency
#   subdirectory       add_subdirectory(<ktsa source>)
#   fetchcontent       FetchContent_Declare(ktsa SOURCE_DIR <ktsa source>)
#   pkgconfig          install, then compile with `pkg-config --cflags --libs ktsa`
if(NOT DEFINED KTSA_MODE)
  set(KTSA_MODE install)
endif()
file(REMOVE_RECURSE ${KTSA_WORK_DIR})
set(prefix ${KTSA_WORK_DIR}/prefix)
set(components "eigen;xtensor;dlpack")
function(run_step)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGV}")
  endif()
endfunction()
# configure_consumer(<build dir> <args>...): the consumer against ${prefix}.
function(configure_consumer dir)
  run_step(${CMAKE_COMMAND} -S ${KTSA_CONSUMER_SOURCE} -B ${dir} -DCMAKE_PREFIX_PATH=${prefix}
           -DCMAKE_CXX_COMPILER=${KTSA_CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release ${ARGN})
endfunction()
function(build_and_run dir)
  run_step(${CMAKE_COMMAND} --build ${dir})
  run_step(${dir}/consumer)
  if(EXISTS ${dir}/consumer_interop)
    run_step(${dir}/consumer_interop)
  endif()
endfunction()

if(KTSA_MODE STREQUAL "install" OR KTSA_MODE STREQUAL "pkgconfig")
  run_step(${CMAKE_COMMAND} --install ${KTSA_BUILD_DIR} --prefix ${prefix})
endif()

if(KTSA_MODE STREQUAL "install")
  configure_consumer(${KTSA_WORK_DIR}/plain)
  build_and_run(${KTSA_WORK_DIR}/plain)
  configure_consumer(${KTSA_WORK_DIR}/components "-DKTSA_CONSUMER_COMPONENTS=${components}")
  build_and_run(${KTSA_WORK_DIR}/components)
  if(KTSA_TEST_CUDA_COMPONENT)  # where the CUDA toolkit is installed: configure only
    configure_consumer(${KTSA_WORK_DIR}/cuda -DKTSA_CONSUMER_COMPONENTS=cuda)
  endif()
elseif(KTSA_MODE STREQUAL "share_layout")
  # What ports/ktsa/portfile.cmake and conanfile.py do: a release configure of
  # the headers only, config files in share/ktsa.
  run_step(${CMAKE_COMMAND} -S ${KTSA_SOURCE_DIR} -B ${KTSA_WORK_DIR}/ktsa-build
           -DCMAKE_BUILD_TYPE=Release -DKTSA_BUILD_TESTS=OFF -DKTSA_BUILD_EXAMPLES=OFF
           -DKTSA_BUILD_BENCHMARKS=OFF -DKTSA_ENABLE_CUDA=OFF -DKTSA_INSTALL=ON
           -DKTSA_INSTALL_CMAKEDIR=share/ktsa)
  run_step(${CMAKE_COMMAND} --install ${KTSA_WORK_DIR}/ktsa-build --prefix ${prefix})
  foreach(f ktsaConfig.cmake ktsaConfigVersion.cmake ktsaTargets.cmake)
    if(NOT EXISTS ${prefix}/share/ktsa/${f})
      message(FATAL_ERROR "${prefix}/share/ktsa/${f} was not installed")
    endif()
  endforeach()
  if(EXISTS ${prefix}/lib/cmake/ktsa)
    message(FATAL_ERROR "config files also went to lib/cmake/ktsa")
  endif()
  configure_consumer(${KTSA_WORK_DIR}/consumer "-DKTSA_CONSUMER_COMPONENTS=${components}")
  file(STRINGS ${KTSA_WORK_DIR}/consumer/CMakeCache.txt dir_line REGEX "^ktsa_DIR:")
  if(NOT dir_line MATCHES "/share/ktsa$")
    message(FATAL_ERROR "find_package found ktsa elsewhere: ${dir_line}")
  endif()
  build_and_run(${KTSA_WORK_DIR}/consumer)
elseif(KTSA_MODE STREQUAL "missing_component")
  run_step(${CMAKE_COMMAND} --install ${KTSA_BUILD_DIR} --prefix ${prefix})
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${KTSA_CONSUMER_SOURCE} -B ${KTSA_WORK_DIR}/consumer
                          -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${KTSA_CXX_COMPILER}
                          -DKTSA_CONSUMER_COMPONENTS=eigen;dlpack -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=TRUE
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}${err}")
  if(rc EQUAL 0)
    message(FATAL_ERROR "configure succeeded although Eigen3 was hidden")
  endif()
  if(NOT "${out}${err}" MATCHES "component 'eigen' needs Eigen3")
    message(FATAL_ERROR "the failure does not name the missing dependency Eigen3")
  endif()
  if("${out}${err}" MATCHES "component 'dlpack'")
    message(FATAL_ERROR "the dlpack component was reported missing although dlpack is installed")
  endif()
  message("ok: a missing dependency fails the configure and is named")
elseif(KTSA_MODE STREQUAL "subdirectory" OR KTSA_MODE STREQUAL "fetchcontent")
  configure_consumer(${KTSA_WORK_DIR}/consumer -DKTSA_CONSUMER_MODE=${KTSA_MODE}
                     -DKTSA_SOURCE_DIR=${KTSA_SOURCE_DIR} "-DKTSA_CONSUMER_COMPONENTS=${components}")
  build_and_run(${KTSA_WORK_DIR}/consumer)
elseif(KTSA_MODE STREQUAL "pkgconfig")
  find_program(PKG_CONFIG NAMES pkg-config pkgconf REQUIRED)
  set(ENV{PKG_CONFIG_PATH} ${prefix}/share/pkgconfig)
  execute_process(COMMAND ${PKG_CONFIG} --cflags --libs ktsa RESULT_VARIABLE rc
                  OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config --cflags --libs ktsa failed (${rc})")
  endif()
  message("pkg-config --cflags --libs ktsa: ${flags}")
  separate_arguments(flag_list UNIX_COMMAND "${flags}")
  # The include directory must be the fresh prefix's, whatever path spelling.
  list(GET flag_list 0 inc)
  string(REGEX REPLACE "^-I" "" inc "${inc}")
  if(NOT EXISTS ${inc}/ktsa/ktsa.hpp)
    message(FATAL_ERROR "pkg-config's include directory ${inc} has no ktsa/ktsa.hpp")
  endif()
  file(REAL_PATH ${inc} inc_real)
  file(REAL_PATH ${prefix}/include prefix_inc)
  if(NOT inc_real STREQUAL prefix_inc)
    message(FATAL_ERROR "pkg-config points at ${inc_real}, not ${prefix_inc}")
  endif()
  run_step(${KTSA_CXX_COMPILER} -std=c++17 -O1 ${KTSA_CONSUMER_SOURCE}/main.cpp ${flag_list}
           -o ${KTSA_WORK_DIR}/consumer)
  run_step(${KTSA_WORK_DIR}/consumer)
else()
  message(FATAL_ERROR "unknown KTSA_MODE ${KTSA_MODE}")
endif()
