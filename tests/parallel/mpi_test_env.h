#pragma once
// The world group of an MPI test executable (mpi_test_main.cpp): MPI under mpirun, the local
// group of one when run directly.
#include "parallel/process_group.h"
#include "parallel/world.h"

namespace shoestring::testing {

parallel::GroupPtr test_world();
const parallel::World& test_mpi_world();  // what init_world returned (for code that takes a World)

}  // namespace shoestring::testing
