#pragma once
// The world group of an MPI test executable (mpi_test_main.cpp): MPI under mpirun, the local
// group of one when run directly.
#include "parallel/process_group.h"

namespace shoestring::testing {

parallel::GroupPtr test_world();

}  // namespace shoestring::testing
