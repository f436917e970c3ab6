#pragma once
// What the NCCL group (nccl_group.cpp) shares with other direct NCCL users in parallel/, such as
// bench comm's raw baseline: the communicator bootstrap and the dtype table. CUDA builds with
// nccl.h only (SHOESTRING_HAVE_NCCL).
#include <c10/core/ScalarType.h>
#include <nccl.h>

#include "parallel/process_group.h"

namespace shoestring::parallel::nccl {

// A new communicator over the members of `bootstrap` (same ranks), on CUDA device `device`:
// bootstrap's rank 0 makes the unique id and broadcasts it over `bootstrap`. Collective over
// `bootstrap`. The caller owns the result (ncclCommDestroy). Throws std::runtime_error naming the
// group and device.
ncclComm_t init_comm(ProcessGroup& bootstrap, int device);

// NCCL's type for a tensor dtype; false when NCCL has none.
bool data_type(at::ScalarType t, ncclDataType_t& out);

}  // namespace shoestring::parallel::nccl
