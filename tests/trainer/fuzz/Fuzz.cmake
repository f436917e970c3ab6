# fuzz_checkpoint: manifest.json parsing and validation, verify, choose_checkpoint and
# CheckpointReader over a small valid checkpoint written at start-up (see fuzz_checkpoint.cpp and
# docs/checkpoints.md). Built by shoestring_fuzz (tests/fuzz.cmake) with clang++, linking LibTorch
# (the reader fills at::Tensors), yaml-cpp and libhdf5.
#   fuzz_checkpoint_seeds (label unit): replays tests/trainer/fuzz/seeds/checkpoint/
#   fuzz_checkpoint (label slow): 30 s of fuzzing starting from those seeds
# Keep new findings: build/tests/fuzz_checkpoint -merge=1 -dict=tests/trainer/fuzz/checkpoint.dict \
#   tests/trainer/fuzz/seeds/checkpoint build/tests/fuzz-corpus/checkpoint
if(NOT COMMAND shoestring_fuzz)
  return()
endif()
set(_s ${CMAKE_SOURCE_DIR})
shoestring_fuzz(checkpoint BOUNDED_RUN
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_checkpoint.cpp ${_s}/trainer/checkpoint/manifest.cpp
          ${_s}/trainer/checkpoint/resume.cpp ${_s}/trainer/checkpoint/shard_file.cpp ${_s}/data/sha256.cpp
          ${_s}/data/token_dataset_reader.cpp
  LIBS $<TARGET_FILE:torch_cpu> $<TARGET_FILE:c10> -Wl,-rpath,${SHOESTRING_TORCH_LIBDIR} $<TARGET_FILE:yaml-cpp>
       ${HDF5_C_LIBRARIES}
  ARGS -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/checkpoint.dict -max_len=4096)
