#pragma once
// main() for GoogleTest programs that ctest runs under mpirun: MPI is set up once around all tests
// (init_world sees the launcher's environment; run directly, the world is one local process).
// Only rank 0's results are printed; mpirun's exit code is non-zero if any rank failed.
#include <gtest/gtest.h>

#include "parallel/process_group.h"
#include "parallel/world.h"

namespace shoestring::testing {

inline parallel::World& test_world() {
  static parallel::World w;
  return w;
}

inline parallel::GroupPtr& test_world_group() {
  static parallel::GroupPtr g;
  return g;
}

inline int run_mpi_tests(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  test_world() = parallel::init_world(&argc, &argv);
  test_world_group() = parallel::make_world_group(test_world(), parallel::CommOptions{120});
  if (test_world().rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  test_world_group().reset();
  parallel::finalize_world(test_world());
  return rc;
}

}  // namespace shoestring::testing
