#pragma once
// State shared by a NCCL group, its Work handles and the per-process watchdog thread (CUDA builds
// with nccl.h only). The watchdog is what makes a hung collective end the job instead of hanging
// it: CUDA work cannot be waited on with a timeout from the issuing thread without blocking it.
#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/nccl_api.h"

namespace shoestring::parallel::nccl {


// One communicator and its stream. Destroyed when the group and every op issued on it are gone.
struct CommState {
  ncclComm_t comm = nullptr;
  int device = 0;
  cudaStream_t stream = nullptr;     // every op of the group runs here, in issue order
  cudaEvent_t caller_ready = nullptr;  // re-recorded per op; a stream wait captures the record of its call
  // Clock sync for started_at(): `epoch` was seen complete at host time epoch_s (timing events).
  cudaEvent_t epoch = nullptr;
  double epoch_s = 0;
  std::string name;
  int rank = 0;
  std::vector<int> world_ranks;
  double timeout_s = 300;
  std::atomic<bool> aborted{false};
  // Start/end event pairs of finished ops, reused by the next ones: creating and destroying two
  // CUDA events per collective was a measurable share of its host-side cost.
  std::mutex spare_mu;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> spare_events;

  CommState() = default;
  CommState(const CommState&) = delete;
  CommState& operator=(const CommState&) = delete;
  ~CommState();
  // Creates stream and events on `device` (current device must be `device`) and syncs the clock.
  void init_stream();
  std::string describe() const;  // "group dp (world ranks 0,2)"
};

// One issued op. Holds its tensors so their memory is not reused before NCCL is done with it.
struct OpRecord {
  std::shared_ptr<CommState> comm;
  std::string op;
  int64_t seq = 0;
  double issued_s = 0;
  std::atomic<double> started_s{0};
  cudaEvent_t start = nullptr;  // timing event: started_at() is measured on the GPU clock
  cudaEvent_t end = nullptr;
  std::vector<at::Tensor> tensors;  // cleared by the watchdog once `end` completed

  OpRecord(std::shared_ptr<CommState> c, std::string op_name, int64_t sequence);
  OpRecord(const OpRecord&) = delete;
  OpRecord& operator=(const OpRecord&) = delete;
  ~OpRecord();
  bool finished() const;  // cudaEventQuery(end); throws on a CUDA error
  double started_at();    // 0 until the comm stream reached `start`
};

// Starts the process-wide watchdog on first use and hands it `op` to follow until it finishes.
// A pending op older than its group's timeout, or a communicator reporting an asynchronous error,
// ends the process: one line on stderr, ncclCommAbort, then MPI_Abort(kTimeoutExitCode) when MPI
// is initialised, else _Exit(kTimeoutExitCode).
void watch(std::shared_ptr<OpRecord> op);

// Throws std::runtime_error("<what>: <cuda error>") unless e == cudaSuccess.
void check_cuda(cudaError_t e, const char* what);

}  // namespace shoestring::parallel::nccl
