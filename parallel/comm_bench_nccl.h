#pragma once
// bench comm's raw NCCL baseline (CUDA builds with nccl.h only: SHOESTRING_HAVE_NCCL): each
// collective issued straight through nccl_api's pointers, back to back, on a communicator and a
// stream of its own, as nccl-tests does. Ours (NcclGroup) adds to the same NCCL call an event
// handshake with the caller's stream, an op record and the watchdog; this measures what they cost.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/process_group.h"

namespace shoestring::parallel {

class RawNcclBench {
 public:
  // Collective over `bootstrap`, whose members become the communicator's (unique id broadcast over
  // it, as make_nccl_group does). `bootstrap` must outlive this object: time() takes its maximum
  // over it.
  RawNcclBench(ProcessGroup& bootstrap, int device);
  ~RawNcclBench();
  RawNcclBench(const RawNcclBench&) = delete;
  RawNcclBench& operator=(const RawNcclBench&) = delete;

  // `iters` back-to-back calls of `op` on bench comm's buffers, as ours uses them: all_reduce and
  // broadcast (root 0) in place on `a` (`count` elements); reduce_scatter a -> b, all_gather b -> a,
  // all_to_all a -> b, with `count` elements per member block. Starts after the work already queued
  // on the caller's current stream and returns when the calls have finished on the GPU.
  void run(const std::string& op, const at::Tensor& a, const at::Tensor& b, int64_t count, int iters);

  // run() timed on the host between a barrier on this communicator and the end of the last call:
  // mean seconds per call, the slowest rank's.
  double time(const std::string& op, const at::Tensor& a, const at::Tensor& b, int64_t count, int iters);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace shoestring::parallel
