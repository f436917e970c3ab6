#include "parallel/comm_bench_nccl.h"

#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <functional>
#include <stdexcept>

#include "parallel/nccl_api.h"
#include "parallel/nccl_comm.h"
#include "parallel/nccl_watchdog.h"

namespace shoestring::parallel {

using nccl::api;
using nccl::check_cuda;

struct RawNcclBench::State {
  ProcessGroup& bootstrap;
  int device;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t caller_ready = nullptr;  // orders our stream after the caller's, as NcclGroup does
  at::Tensor barrier_buf;              // one float for the barrier's all-reduce

  State(ProcessGroup& b, int d) : bootstrap(b), device(d) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    // Silent, as a destructor must be. On the way out of an exception a call may still be pending
    // (a peer that threw never joined it) and ncclCommDestroy would wait for it: abort instead.
    if (comm != nullptr) {
      if (std::uncaught_exceptions() > 0) api().CommAbort(comm);
      else api().CommDestroy(comm);
    }
    if (caller_ready != nullptr) cudaEventDestroy(caller_ready);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  c10::DeviceIndex index() const { return static_cast<c10::DeviceIndex>(device); }
  void after_caller() const;  // our stream waits for the work queued on the caller's current stream
  // `iters` calls, then waits for them on the host.
  void issue(const std::function<ncclResult_t()>& call, const std::string& op, int iters) const;
};

namespace {

// One raw call of `op`, bound to its buffers once so that the timed loop only issues.
std::function<ncclResult_t()> bind_call(const std::string& op, const at::Tensor& a, const at::Tensor& b, int64_t count,
                                        ncclComm_t comm, cudaStream_t s, int n, int device) {
  const auto need = [&](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument("bench comm raw nccl " + op + ": " + what);
  };
  const bool in_place = op == "all_reduce" || op == "broadcast";
  need(count > 0, "count must be positive");
  for (const at::Tensor* t : {&a, &b}) {
    if (in_place && t == &b) continue;
    need(t->defined() && t->is_cuda() && t->device().index() == device && t->is_contiguous(),
         "buffers must be contiguous CUDA tensors on the communicator's device");
  }
  ncclDataType_t type{};
  need(nccl::data_type(a.scalar_type(), type), "dtype has no NCCL type");
  const size_t cnt = size_t(count);
  const nccl::Api* lib = &api();  // once: api() takes a lock
  void* pa = a.data_ptr();
  if (in_place) {
    need(a.numel() == count, "a must hold count elements");
    if (op == "all_reduce") return [=] { return lib->AllReduce(pa, pa, cnt, type, ncclSum, comm, s); };
    return [=] { return lib->Broadcast(pa, pa, cnt, type, /*root=*/0, comm, s); };
  }
  need(b.scalar_type() == a.scalar_type(), "a and b differ in dtype");
  need(a.numel() == count * n, "a must hold count * ranks elements");
  need(b.numel() == (op == "all_to_all" ? count * n : count), "b has the wrong number of elements");
  void* pb = b.data_ptr();
  if (op == "reduce_scatter") return [=] { return lib->ReduceScatter(pa, pb, cnt, type, ncclSum, comm, s); };
  if (op == "all_gather") return [=] { return lib->AllGather(pb, pa, cnt, type, comm, s); };
  need(op == "all_to_all", "unknown op");
  // nccl-tests' alltoall: one group of a send and a recv per peer, self included.
  const size_t block = cnt * a.element_size();
  return [=] {
    ncclResult_t r = lib->GroupStart();
    if (r != ncclSuccess) return r;
    for (int j = 0; j < n && r == ncclSuccess; ++j) {
      r = lib->Send(static_cast<const char*>(pa) + size_t(j) * block, cnt, type, j, comm, s);
      if (r == ncclSuccess) r = lib->Recv(static_cast<char*>(pb) + size_t(j) * block, cnt, type, j, comm, s);
    }
    const ncclResult_t end = lib->GroupEnd();  // always closes the group, even after an error
    return r != ncclSuccess ? r : end;
  };
}

}  // namespace

RawNcclBench::RawNcclBench(ProcessGroup& bootstrap, int device) : s_(std::make_unique<State>(bootstrap, device)) {
  const c10::cuda::CUDAGuard guard(s_->index());
  s_->comm = nccl::init_comm(bootstrap, device);
  // Non-blocking, as the group's: the legacy default stream must not serialise with the calls.
  check_cuda(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking), "raw nccl: cudaStreamCreateWithFlags");
  check_cuda(cudaEventCreateWithFlags(&s_->caller_ready, cudaEventDisableTiming), "raw nccl: cudaEventCreate");
  s_->barrier_buf = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, s_->index()));
}

RawNcclBench::~RawNcclBench() = default;

void RawNcclBench::State::after_caller() const {
  // The buffers were filled, and ours last wrote them, on the caller's current stream.
  const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(index()).stream();
  check_cuda(cudaEventRecord(caller_ready, caller), "raw nccl: cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(stream, caller_ready, 0), "raw nccl: cudaStreamWaitEvent");
}

void RawNcclBench::State::issue(const std::function<ncclResult_t()>& call, const std::string& op, int iters) const {
  for (int i = 0; i < iters; ++i)
    if (const ncclResult_t r = call(); r != ncclSuccess) nccl::check(r, "raw nccl " + op, comm);
  check_cuda(cudaStreamSynchronize(stream), "raw nccl: cudaStreamSynchronize");
}

void RawNcclBench::run(const std::string& op, const at::Tensor& a, const at::Tensor& b, int64_t count, int iters) {
  const c10::cuda::CUDAGuard guard(s_->index());
  const auto call = bind_call(op, a, b, count, s_->comm, s_->stream, s_->bootstrap.size(), s_->device);
  s_->after_caller();
  s_->issue(call, op, iters);
}

double RawNcclBench::time(const std::string& op, const at::Tensor& a, const at::Tensor& b, int64_t count, int iters) {
  const c10::cuda::CUDAGuard guard(s_->index());
  const auto call = bind_call(op, a, b, count, s_->comm, s_->stream, s_->bootstrap.size(), s_->device);
  s_->after_caller();
  // As ours: every rank starts the clock once all have arrived (NcclGroup::barrier() is the same
  // one-float all-reduce, waited for by the host).
  void* p = s_->barrier_buf.data_ptr();
  nccl::check(api().AllReduce(p, p, 1, ncclFloat32, ncclSum, s_->comm, s_->stream), "raw nccl barrier", s_->comm);
  check_cuda(cudaStreamSynchronize(s_->stream), "raw nccl: cudaStreamSynchronize");
  const double t0 = steady_seconds();
  s_->issue(call, op, iters);
  at::Tensor t = at::full({1}, (steady_seconds() - t0) / iters, at::kDouble);
  s_->bootstrap.all_reduce(t, ReduceOp::Max)->wait();
  return t.item<double>();
}

}  // namespace shoestring::parallel
