# libFuzzer targets for the readers of untrusted files. They need clang's -fsanitize=fuzzer, so
# shoestring_fuzz builds them with clang++ by a custom command, beside the main build and whatever
# its compiler is (GCC): our sources are compiled again, instrumented, and linked with the shared
# libraries they need (LibTorch's libc10/libtorch_cpu link as they are: same libstdc++ ABI).
# Without a working clang, shoestring_fuzz is not defined and the targets are skipped.
#   fuzz_<name>_seeds (label unit): replays the kept seeds in <dir>/fuzz/seeds/<name>/
#   fuzz_<name> (BOUNDED_RUN, label slow): 30 s of fuzzing starting from those seeds
# Used by tests/data/fuzz/Fuzz.cmake and tests/trainer/fuzz/Fuzz.cmake, which say how to run them.
find_program(SHOESTRING_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14)
set(_probe_ok FALSE)
if(SHOESTRING_CLANGXX)
  set(_probe ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe.cpp)
  file(WRITE ${_probe} "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(COMMAND ${SHOESTRING_CLANGXX} -fsanitize=fuzzer ${_probe} -o ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe
                  RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
  if(_rc EQUAL 0)
    set(_probe_ok TRUE)
  endif()
endif()
message(STATUS "Shoestring libFuzzer targets: ${_probe_ok} (${SHOESTRING_CLANGXX})")
if(NOT _probe_ok)
  return()
endif()

set(_inc -I${CMAKE_SOURCE_DIR})
foreach(d ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS} ${TORCH_INCLUDE_DIRS})
  list(APPEND _inc -isystem ${d})
endforeach()
set(_flags -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
# The custom command does not scan includes: rebuild when any header of the libraries it compiles
# again changes.
file(GLOB _headers ${CMAKE_SOURCE_DIR}/data/*.h ${CMAKE_SOURCE_DIR}/trainer/checkpoint/*.h)

function(shoestring_fuzz name)
  cmake_parse_arguments(F "BOUNDED_RUN" "ASAN" "SOURCES;LIBS;ARGS" ${ARGN})
  set(out ${CMAKE_BINARY_DIR}/tests/fuzz_${name})
  add_custom_command(OUTPUT ${out}
    COMMAND ${SHOESTRING_CLANGXX} ${_flags} ${_inc} ${F_SOURCES} -o ${out} ${F_LIBS}
    DEPENDS ${F_SOURCES} ${_headers} COMMAND_EXPAND_LISTS
    COMMENT "libFuzzer target fuzz_${name} (clang)")
  add_custom_target(fuzz_${name}_bin ALL DEPENDS ${out})
  set(seeds ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/seeds/${name})
  set(corpus ${CMAKE_BINARY_DIR}/tests/fuzz-corpus/${name})
  file(MAKE_DIRECTORY ${corpus})
  # A huge malloc returns NULL, as it does outside ASan: libhdf5 asks for sizes read from a corrupt
  # file and handles the failure itself (found by this fuzzer; libhdf5 is not ours to fix).
  set(env "ASAN_OPTIONS=allocator_may_return_null=1${F_ASAN}")
  add_test(NAME fuzz_${name}_seeds COMMAND ${out} ${F_ARGS} -runs=0 ${seeds})
  set_tests_properties(fuzz_${name}_seeds PROPERTIES LABELS unit ENVIRONMENT "${env}")
  if(F_BOUNDED_RUN)
    add_test(NAME fuzz_${name} COMMAND ${out} ${F_ARGS} -max_total_time=30 -timeout=10 -rss_limit_mb=2048
             -artifact_prefix=${CMAKE_BINARY_DIR}/tests/fuzz-${name}- ${corpus} ${seeds})
    set_tests_properties(fuzz_${name} PROPERTIES LABELS slow TIMEOUT 120 ENVIRONMENT "${env}")
  endif()
endfunction()

