#pragma once
// The world group of an MPI test executable (mpi_test_main.cpp): MPI under mpirun, the local
// group of one when run directly.
#include <filesystem>
#include <string>

#include "parallel/process_group.h"
#include "parallel/world.h"

namespace shoestring::testing {

parallel::GroupPtr test_world();
const parallel::World& test_mpi_world();  // what init_world returned (for code that takes a World)

// A fresh directory name under the temp dir, the same on every rank (rank 0's), which no longer
// exists when this returns on any rank. A collective over test_world().
std::filesystem::path shared_temp_dir(const std::string& prefix);

}  // namespace shoestring::testing
