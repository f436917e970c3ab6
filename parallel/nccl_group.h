#pragma once
// The NCCL backend of ProcessGroup; make_nccl_group (process_group.h) creates one.
//
// Each group owns a communicator and one CUDA stream. An op records an event on the caller's
// current stream, makes the group's stream wait for it, runs the NCCL call there and records a
// completion event, so the host never blocks: Work::wait() only orders the caller's current
// stream after the op (barrier() is the exception: its wait() blocks the host, as a barrier
// should). The op's tensors stay referenced until the watchdog sees it finished, so their memory
// is not reused under NCCL even if the caller drops them at once.
//
// NCCL is dlopen'ed at first use (nccl_api.h); a binary built without CUDA or without nccl.h
// still has make_nccl_group and it throws std::runtime_error saying so.
#include <string>

namespace shoestring::parallel {

// "NCCL 2.27.3 (/path/libnccl.so.2)" once make_nccl_group has loaded it; else why it cannot be
// loaded (loading is attempted by this call when it has not been yet).
std::string nccl_library_info();

namespace nccl_testing {
// Makes split() build the new communicator from a fresh unique id even when ncclCommSplit
// exists, so the pre-2.18 path is tested on a current NCCL.
void force_split_by_unique_id(bool on);
}  // namespace nccl_testing

}  // namespace shoestring::parallel
