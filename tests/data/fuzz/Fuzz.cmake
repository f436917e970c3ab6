# libFuzzer targets for the two readers of untrusted files (HDF5 token datasets, llm.c shards).
# They need clang's -fsanitize=fuzzer, so they are built with clang++ by a custom command, beside
# the main build and whatever its compiler is; without a working clang they are skipped.
#   fuzz_*_seeds (label unit): replays the kept seeds in tests/data/fuzz/seeds/ -- a regression test
#   fuzz_* (label slow): 30 s of fuzzing each, starting from those seeds
# New interesting inputs land in build/tests/fuzz-corpus/<target>/; to keep them, merge them into
# the seeds: build/tests/fuzz_<target> -merge=1 tests/data/fuzz/seeds/<target> build/tests/fuzz-corpus/<target>
# (for token_dataset add -detect_leaks=0 and ASAN_OPTIONS=allocator_may_return_null=1, as below).
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
foreach(d ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
  list(APPEND _inc -isystem ${d})
endforeach()
# The custom command does not scan includes: rebuild when any data/ header changes.
file(GLOB _headers ${CMAKE_SOURCE_DIR}/data/*.h)
set(_flags -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

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

set(_d ${CMAKE_SOURCE_DIR}/data)
# libhdf5 leaks small blocks on some of its own error paths; our code holds every id in RAII.
shoestring_fuzz(token_dataset BOUNDED_RUN SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_token_dataset.cpp ${_d}/token_dataset_reader.cpp
                LIBS ${HDF5_C_LIBRARIES} ARGS -detect_leaks=0 ASAN ":detect_leaks=0")
shoestring_fuzz(llmc_bin BOUNDED_RUN SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_llmc_bin.cpp ${_d}/llmc_bin.cpp)
