#pragma once
// MPI datatypes and reduction operators for the tensor dtypes the process groups accept.
// bfloat16 and float16 have no MPI type: they travel as 2-byte opaque types and are reduced by
// user operators that widen to float, combine and round back (as NCCL does for its half types).
#include <c10/core/ScalarType.h>
#include <mpi.h>

#include "parallel/process_group.h"

namespace shoestring::parallel {

// Creates the 2-byte types and user operators; call once after MPI_Init, before any reduction.
void init_mpi_types();
void free_mpi_types();

bool mpi_supports(at::ScalarType t);
MPI_Datatype mpi_datatype(at::ScalarType t);  // requires mpi_supports(t)
MPI_Op mpi_reduce_op(ReduceOp op, at::ScalarType t);

const char* reduce_op_name(ReduceOp op);

}  // namespace shoestring::parallel
