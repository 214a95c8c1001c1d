# The optional components in a build tree (ktsa as the top-level project,
# add_subdirectory or FetchContent): ktsa::eigen, ktsa::xtensor, ktsa::dlpack
# and ktsa::cuda, each ktsa::ktsa plus the dependency it adapts, defined when
# that dependency is found. An installed ktsa defines the same targets in
# ktsaConfig.cmake, looking for a dependency only when its component is asked for.
function(_ktsa_component name)
  add_library(ktsa_${name} INTERFACE)
  add_library(ktsa::${name} ALIAS ktsa_${name})
  target_link_libraries(ktsa_${name} INTERFACE ktsa ${ARGN})
endfunction()

if(NOT TARGET Eigen3::Eigen)
  find_package(Eigen3 3.3 QUIET NO_MODULE)
endif()
if(TARGET Eigen3::Eigen)
  _ktsa_component(eigen Eigen3::Eigen)
endif()

if(NOT TARGET xtensor)
  find_package(xtensor QUIET)
endif()
if(TARGET xtensor)
  _ktsa_component(xtensor xtensor)
endif()

if(NOT TARGET dlpack::dlpack)
  find_package(dlpack QUIET)
endif()
if(TARGET dlpack::dlpack)
  _ktsa_component(dlpack dlpack::dlpack)
endif()

if(NOT TARGET CUDA::cudart)
  find_package(CUDAToolkit QUIET)
endif()
if(TARGET CUDA::cudart AND TARGET CUDA::cublas)
  _ktsa_component(cuda CUDA::cudart CUDA::cublas)
endif()

set(_ktsa_have "")
foreach(c eigen xtensor dlpack cuda)
  if(TARGET ktsa::${c})
    list(APPEND _ktsa_have ktsa::${c})
  endif()
endforeach()
message(STATUS "ktsa: components in this build: ktsa::ktsa ${_ktsa_have}")
