# libFuzzer targets for the two readers of untrusted files (HDF5 token datasets, llm.c shards).
# Built by shoestring_fuzz (tests/fuzz.cmake) with clang++; without a working clang they are skipped.
#   fuzz_*_seeds (label unit): replays the kept seeds in tests/data/fuzz/seeds/ -- a regression test
#   fuzz_* (label slow): 30 s of fuzzing each, starting from those seeds
# New interesting inputs land in build/tests/fuzz-corpus/<target>/; to keep them, merge them into
# the seeds: build/tests/fuzz_<target> -merge=1 tests/data/fuzz/seeds/<target> build/tests/fuzz-corpus/<target>
# (for token_dataset add -detect_leaks=0 and ASAN_OPTIONS=allocator_may_return_null=1, as below).
if(NOT COMMAND shoestring_fuzz)
  return()
endif()
set(_d ${CMAKE_SOURCE_DIR}/data)
# libhdf5 leaks small blocks on some of its own error paths; our code holds every id in RAII.
shoestring_fuzz(token_dataset BOUNDED_RUN SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_token_dataset.cpp ${_d}/token_dataset_reader.cpp
                LIBS ${HDF5_C_LIBRARIES} ARGS -detect_leaks=0 ASAN ":detect_leaks=0")
shoestring_fuzz(llmc_bin BOUNDED_RUN SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_llmc_bin.cpp ${_d}/llmc_bin.cpp)
