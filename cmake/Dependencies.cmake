# Every dependency is found with find_package; nothing is a hard-coded path. launch/setup passes
# -DCMAKE_PREFIX_PATH=<libtorch>/share/cmake; a user may point Torch_DIR at any LibTorch >= 2.4.

# CMake < 3.26 knows no C++20 dialect flag for nvcc, and LibTorch's config enables CUDA even when
# we do not; without this rule file configuring fails with "CUDA20 ... does not support this".
if(CMAKE_VERSION VERSION_LESS 3.26)
  set(CMAKE_USER_MAKE_RULES_OVERRIDE_CUDA ${CMAKE_SOURCE_DIR}/cmake/CudaCxx20.cmake)
endif()

# --- CUDA (our kernels). Decided before Torch so Torch's CUDA probing agrees with ours.
set(SHOESTRING_WITH_CUDA OFF)
if(NOT SHOESTRING_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(SHOESTRING_WITH_CUDA ON)
  elseif(SHOESTRING_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SHOESTRING_CUDA=ON but no CUDA compiler (nvcc) was found; put nvcc on PATH or use -DSHOESTRING_CUDA=OFF")
  endif()
endif()
if(SHOESTRING_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES ${SHOESTRING_CUDA_ARCHS})
  set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 dialect for nvcc
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
endif()
message(STATUS "Shoestring CUDA kernels: ${SHOESTRING_WITH_CUDA} (SHOESTRING_CUDA=${SHOESTRING_CUDA})")

# --- LibTorch. We link only c10 + torch_cpu (+ c10_cuda with CUDA): libtorch_cuda.so pulls in
# cuSPARSELt, NVSHMEM and cuFile, which CPU machines lack, so it is dlopen'ed at run time when a
# GPU is wanted (ops/cuda_runtime.cpp). Torch's config also edits CUDA flags; we keep ours.
set(_saved_cuda_flags "${CMAKE_CUDA_FLAGS}")
find_package(Torch REQUIRED)
set(CMAKE_CUDA_FLAGS "${_saved_cuda_flags}")
if(SHOESTRING_WITH_CUDA)
  set(CMAKE_CUDA_ARCHITECTURES ${SHOESTRING_CUDA_ARCHS})  # Torch's config resets it to OFF
endif()
if(Torch_VERSION VERSION_LESS 2.4)
  message(FATAL_ERROR "LibTorch ${Torch_VERSION} found at ${Torch_DIR}; Shoestring needs >= 2.4")
endif()
add_library(shoestring_torch INTERFACE)
target_include_directories(shoestring_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
target_link_libraries(shoestring_torch INTERFACE c10 torch_cpu ${CMAKE_DL_LIBS})
if(SHOESTRING_WITH_CUDA AND TARGET c10_cuda)
  target_link_libraries(shoestring_torch INTERFACE c10_cuda CUDA::cudart)
endif()
# Torch's exported targets carry include dirs as non-SYSTEM; strip warnings from them.
foreach(t c10 torch_cpu)
  get_target_property(_inc ${t} INTERFACE_INCLUDE_DIRECTORIES)
  if(_inc)
    set_target_properties(${t} PROPERTIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${_inc}")
  endif()
endforeach()
get_filename_component(SHOESTRING_TORCH_LIBDIR "${TORCH_LIBRARY}" DIRECTORY)
set(CMAKE_BUILD_RPATH "${SHOESTRING_TORCH_LIBDIR}")
set(CMAKE_INSTALL_RPATH "${SHOESTRING_TORCH_LIBDIR}")

if(SHOESTRING_OPS_ONLY)
  return()
endif()

find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(Boost 1.70 REQUIRED COMPONENTS program_options)

# --- Threads (the data loader's prefetch thread) and SentencePiece (optional: the sentencepiece
# tokenizer and `data train-tokenizer`; Debian: libsentencepiece-dev, found via sentencepiece.pc).
find_package(Threads REQUIRED)
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(SentencePiece IMPORTED_TARGET sentencepiece)
endif()
message(STATUS "Shoestring SentencePiece tokenizer: ${SentencePiece_FOUND} ${SentencePiece_VERSION}")
