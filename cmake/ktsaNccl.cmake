# Finds NCCL (nccl.h and libnccl) where the CUDA toolkit ships it, or under
# NCCL_HOME, and defines the header-only target ktsa::nccl (ktsa + NCCL + the
# CUDA runtime). Used by ktsa's own build and by the installed package config
# (find_package(ktsa COMPONENTS nccl)).
if(NOT TARGET ktsa::nccl)
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    get_filename_component(_ktsa_cuda_root "${CUDAToolkit_BIN_DIR}" DIRECTORY)
    find_path(KTSA_NCCL_INCLUDE_DIR nccl.h
              HINTS ENV NCCL_HOME ${CUDAToolkit_INCLUDE_DIRS} ${_ktsa_cuda_root}
              PATH_SUFFIXES include)
    find_library(KTSA_NCCL_LIBRARY nccl
                 HINTS ENV NCCL_HOME ${CUDAToolkit_LIBRARY_DIR} ${_ktsa_cuda_root}
                 PATH_SUFFIXES lib lib64)
  endif()
  if(CUDAToolkit_FOUND AND KTSA_NCCL_INCLUDE_DIR AND KTSA_NCCL_LIBRARY)
    add_library(ktsa::nccl INTERFACE IMPORTED)
    set_target_properties(ktsa::nccl PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${KTSA_NCCL_INCLUDE_DIR}"
                          INTERFACE_LINK_LIBRARIES "ktsa::ktsa;CUDA::cudart;${KTSA_NCCL_LIBRARY}")
    set(KTSA_NCCL_FOUND TRUE)
  else()
    set(KTSA_NCCL_FOUND FALSE)
  endif()
endif()
