# The NCCL backend on one GPU (a 1-rank communicator). Included from tests/parallel/CMakeLists.txt.
# Skips with the reason on machines without a GPU, and in builds without CUDA or nccl.h.
shoestring_test(test_nccl_gpu SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_nccl_gpu.cpp LIBS shoestring_parallel LABELS gpu)
