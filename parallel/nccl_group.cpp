// The NCCL ProcessGroup. Design notes are in nccl_group.h; the watchdog is nccl_watchdog.cpp.
#include "parallel/nccl_group.h"

#include <stdexcept>

#include "ops/cuda_runtime.h"
#include "parallel/process_group.h"

#ifndef SHOESTRING_HAVE_NCCL

namespace shoestring::parallel {

namespace {
std::string why_no_nccl() {
  return ops::built_with_cuda() ? "this binary was built without NCCL (nccl.h was not found at configure time)"
                                : "this binary was built without CUDA (SHOESTRING_CUDA=OFF or no nvcc)";
}
}  // namespace

GroupPtr make_nccl_group(ProcessGroup&, int, const CommOptions&) {
  throw std::runtime_error("make_nccl_group: " + why_no_nccl());
}
std::string nccl_library_info() { return why_no_nccl(); }
void nccl_testing::force_split_by_unique_id(bool) {}

}  // namespace shoestring::parallel

#else  // SHOESTRING_HAVE_NCCL

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <sstream>

#include "parallel/nccl_api.h"
#include "parallel/nccl_comm.h"
#include "parallel/nccl_watchdog.h"

namespace shoestring::parallel {

namespace {

using nccl::api;
using nccl::check_cuda;
using nccl::CommState;
using nccl::OpRecord;

std::atomic<bool> g_split_by_unique_id{false};

c10::DeviceIndex dev_index(int device) { return static_cast<c10::DeviceIndex>(device); }

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
    case ReduceOp::Sum: break;
  }
  return ncclSum;
}

char* bytes(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

bool overlap(const at::Tensor& a, const at::Tensor& b) {
  const size_t na = a.nbytes(), nb = b.nbytes();
  return na != 0 && nb != 0 && bytes(a) < bytes(b) + nb && bytes(b) < bytes(a) + na;
}

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<OpRecord> op, bool blocking) : op_(std::move(op)), blocking_(blocking) {}

  void wait() override {
    const c10::cuda::CUDAGuard guard(dev_index(op_->comm->device));
    // A hang is the watchdog's to report: it ends the process even while we block here.
    if (blocking_) {
      check_cuda(cudaEventSynchronize(op_->end), "barrier: cudaEventSynchronize");
      return;
    }
    const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(dev_index(op_->comm->device)).stream();
    check_cuda(cudaStreamWaitEvent(caller, op_->end, 0), "Work::wait: cudaStreamWaitEvent");
  }
  bool done() override { return op_->finished(); }
  double issued_at() const override { return op_->issued_s; }
  double started_at() const override { return op_->started_at(); }

 private:
  std::shared_ptr<OpRecord> op_;
  bool blocking_;
};

class NcclGroup final : public ProcessGroup {
 public:
  explicit NcclGroup(std::shared_ptr<CommState> state)
      : ProcessGroup(state->name, state->rank, state->world_ranks), state_(std::move(state)) {
    const c10::cuda::CUDAGuard guard(dev_index(state_->device));
    barrier_buf_ = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, dev_index(state_->device)));
  }

  std::string backend() const override { return "nccl"; }

  WorkPtr all_reduce(const at::Tensor& t, ReduceOp op) override {
    const ncclDataType_t type = check("all_reduce", "t", t);
    return launch("all_reduce", {t}, [&](cudaStream_t s) {
      if (t.numel() == 0) return ncclSuccess;
      return api().AllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), type, nccl_op(op), comm(), s);
    });
  }

  WorkPtr reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
    const ncclDataType_t type = check("reduce_scatter", "out", out);
    check_same("reduce_scatter", out, in);
    if (in.numel() != out.numel() * size())
      bad("reduce_scatter", "in has " + std::to_string(in.numel()) + " elements, expected out.numel() * size() = " +
                                std::to_string(out.numel() * size()));
    // NCCL's in-place form: out is block rank() of in. Any other overlap is undefined.
    if (overlap(out, in) && bytes(out) != bytes(in) + size_t(rank()) * out.nbytes())
      bad("reduce_scatter", "out overlaps in but is not its block rank()");
    return launch("reduce_scatter", {out, in}, [&](cudaStream_t s) {
      if (out.numel() == 0) return ncclSuccess;
      return api().ReduceScatter(in.data_ptr(), out.data_ptr(), size_t(out.numel()), type, nccl_op(op), comm(), s);
    });
  }

  WorkPtr all_gather(const at::Tensor& out, const at::Tensor& in) override {
    const ncclDataType_t type = check("all_gather", "out", out);
    check_same("all_gather", out, in);
    if (out.numel() != in.numel() * size())
      bad("all_gather", "out has " + std::to_string(out.numel()) + " elements, expected size() * in.numel() = " +
                            std::to_string(in.numel() * size()));
    if (overlap(out, in) && bytes(in) != bytes(out) + size_t(rank()) * in.nbytes())
      bad("all_gather", "in overlaps out but is not its block rank()");
    return launch("all_gather", {out, in}, [&](cudaStream_t s) {
      if (in.numel() == 0) return ncclSuccess;
      return api().AllGather(in.data_ptr(), out.data_ptr(), size_t(in.numel()), type, comm(), s);
    });
  }

  WorkPtr broadcast(const at::Tensor& t, int root) override {
    const ncclDataType_t type = check("broadcast", "t", t);
    check_peer("broadcast", "root", root);
    return launch("broadcast", {t}, [&](cudaStream_t s) {
      if (t.numel() == 0) return ncclSuccess;
      return api().Broadcast(t.data_ptr(), t.data_ptr(), size_t(t.numel()), type, root, comm(), s);
    });
  }

  WorkPtr all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                     const std::vector<int64_t>& send_counts) override;

  // NCCL has no tags: messages between two ranks match in issue order. Each call is one NCCL
  // operation on the group stream, so both sides must issue their sends and recvs in matching
  // order (A: send, recv with B: send, recv can deadlock once a message exceeds NCCL's buffers).
  WorkPtr send(const at::Tensor& t, int peer, int /*tag*/) override {
    const ncclDataType_t type = check("send", "t", t);
    check_p2p_peer("send", peer);
    return launch("send", {t}, [&](cudaStream_t s) {
      if (t.numel() == 0) return ncclSuccess;
      return api().Send(t.data_ptr(), size_t(t.numel()), type, peer, comm(), s);
    });
  }
  WorkPtr recv(const at::Tensor& t, int peer, int /*tag*/) override {
    const ncclDataType_t type = check("recv", "t", t);
    check_p2p_peer("recv", peer);
    return launch("recv", {t}, [&](cudaStream_t s) {
      if (t.numel() == 0) return ncclSuccess;
      return api().Recv(t.data_ptr(), size_t(t.numel()), type, peer, comm(), s);
    });
  }

  // NCCL has no barrier: a one-element all-reduce, and wait() blocks the host until it is done.
  WorkPtr barrier() override {
    return launch(
        "barrier", {barrier_buf_},
        [&](cudaStream_t s) {
          return api().AllReduce(barrier_buf_.data_ptr(), barrier_buf_.data_ptr(), 1, ncclFloat32, ncclSum, comm(), s);
        },
        /*blocking=*/true);
  }

  std::shared_ptr<ProcessGroup> split(int color, int key, const std::string& name) override;

 private:
  ncclComm_t comm() const { return state_->comm; }

  [[noreturn]] void bad(const char* op, const std::string& msg) const {
    throw std::invalid_argument(std::string("nccl ") + op + " on group " + this->name() + ": " + msg);
  }

  ncclDataType_t check(const char* op, const char* arg, const at::Tensor& t) const {
    const std::string a = arg;
    if (!t.defined()) bad(op, a + " is undefined");
    if (!t.is_cuda() || t.device().index() != state_->device)
      bad(op, a + " must be a CUDA tensor on cuda:" + std::to_string(state_->device) + ", got one on " + t.device().str());
    if (!t.is_contiguous()) bad(op, a + " must be contiguous");
    ncclDataType_t type{};
    if (!nccl::data_type(t.scalar_type(), type))
      bad(op, a + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                  "; supported: float32, float64, bfloat16, float16, int64, int32, uint8");
    return type;
  }
  void check_same(const char* op, const at::Tensor& out, const at::Tensor& in) const {
    check(op, "in", in);
    if (in.scalar_type() != out.scalar_type())
      bad(op, std::string("in and out differ in dtype (") + c10::toString(in.scalar_type()) + " vs " +
                  c10::toString(out.scalar_type()) + ")");
  }
  void check_peer(const char* op, const char* what, int peer) const {
    if (peer < 0 || peer >= size())
      bad(op, std::string(what) + " " + std::to_string(peer) + " is not a member (size " + std::to_string(size()) + ")");
  }
  void check_p2p_peer(const char* op, int peer) const {
    check_peer(op, "peer", peer);
    // A lone send to oneself never matches: NCCL pairs self-sends only inside one group call.
    if (peer == rank()) bad(op, "peer is this rank; NCCL cannot send to itself outside all_to_all");
  }

  // Issues `call` on the group stream after everything already queued on the caller's current
  // stream. `keep` stays referenced until the op finished on the GPU.
  template <typename F>
  WorkPtr launch(const char* op, std::vector<at::Tensor> keep, F&& call, bool blocking = false) {
    const c10::cuda::CUDAGuard guard(dev_index(state_->device));
    auto rec = std::make_shared<OpRecord>(state_, op, ++seq_);
    const cudaStream_t caller = c10::cuda::getCurrentCUDAStream(dev_index(state_->device)).stream();
    check_cuda(cudaEventRecord(state_->caller_ready, caller), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(state_->stream, state_->caller_ready, 0), "cudaStreamWaitEvent");
    check_cuda(cudaEventRecord(rec->start, state_->stream), "cudaEventRecord");
    nccl::check(call(state_->stream), std::string("nccl ") + op + " on group " + name(), comm());
    check_cuda(cudaEventRecord(rec->end, state_->stream), "cudaEventRecord");
    rec->tensors = std::move(keep);
    nccl::watch(rec);
    return std::make_shared<NcclWork>(std::move(rec), blocking);
  }

  std::shared_ptr<CommState> state_;
  int64_t seq_ = 0;  // per group, as in the timeout message: "all_reduce #12 on group dp"
  at::Tensor barrier_buf_;
};

WorkPtr NcclGroup::all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                              const std::vector<int64_t>& send_counts) {
  const ncclDataType_t type = check("all_to_all", "out", out);
  check_same("all_to_all", out, in);
  if (in.dim() < 1 || out.dim() < 1) bad("all_to_all", "in and out need a row dimension (dim 0)");
  if (int(recv_counts.size()) != size() || int(send_counts.size()) != size())
    bad("all_to_all", "recv_counts and send_counts need size() = " + std::to_string(size()) + " entries");
  // Elements per row, from the trailing shape so that zero-row tensors work too.
  const int64_t row = std::accumulate(in.sizes().begin() + 1, in.sizes().end(), int64_t{1}, std::multiplies<>());
  const int64_t out_row = std::accumulate(out.sizes().begin() + 1, out.sizes().end(), int64_t{1}, std::multiplies<>());
  if (row != out_row) bad("all_to_all", "in and out rows differ in size");
  for (int j = 0; j < size(); ++j)
    if (recv_counts[size_t(j)] < 0 || send_counts[size_t(j)] < 0) bad("all_to_all", "counts must be >= 0");
  if (std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0}) != in.size(0))
    bad("all_to_all", "send_counts sum to " + std::to_string(std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0})) +
                          " but in has " + std::to_string(in.size(0)) + " rows");
  if (std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}) != out.size(0))
    bad("all_to_all", "recv_counts sum to " + std::to_string(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0})) +
                          " but out has " + std::to_string(out.size(0)) + " rows");
  if (overlap(out, in)) bad("all_to_all", "in and out overlap");
  return launch("all_to_all", {out, in}, [&](cudaStream_t s) {
    const size_t row_bytes = size_t(row) * in.element_size();
    // One NCCL group: every send and recv (self included) is matched within it, so peers can
    // post them in any order without deadlocking.
    ncclResult_t r = api().GroupStart();
    if (r != ncclSuccess) return r;
    size_t send_off = 0, recv_off = 0;
    for (int j = 0; j < size() && r == ncclSuccess; ++j) {
      const size_t ns = size_t(send_counts[size_t(j)]), nr = size_t(recv_counts[size_t(j)]);
      if (ns != 0) r = api().Send(bytes(in) + send_off * row_bytes, ns * size_t(row), type, j, comm(), s);
      if (nr != 0 && r == ncclSuccess) r = api().Recv(bytes(out) + recv_off * row_bytes, nr * size_t(row), type, j, comm(), s);
      send_off += ns;
      recv_off += nr;
    }
    const ncclResult_t end = api().GroupEnd();  // always closes the group, even after an error
    return r != ncclSuccess ? r : end;
  });
}

GroupPtr wrap(ncclComm_t comm, int device, std::string name, int rank, std::vector<int> world_ranks, double timeout_s) {
  auto state = std::make_shared<CommState>();
  state->comm = comm;  // owned from here: ~CommState destroys it if the rest throws
  state->device = device;
  state->name = std::move(name);
  state->rank = rank;
  state->world_ranks = std::move(world_ranks);
  state->timeout_s = timeout_s;
  const c10::cuda::CUDAGuard guard(dev_index(device));
  state->init_stream();
  return std::make_shared<NcclGroup>(std::move(state));
}

std::shared_ptr<ProcessGroup> NcclGroup::split(int color, int key, const std::string& new_name) {
  // A negative color joins no group (nullptr, as MPI_UNDEFINED under MPI), but the rank still
  // takes part: the gathers below and ncclCommSplit are collective over this communicator, and a
  // rank that stayed away would hang the others. ncclCommSplit's own word for it is
  // NCCL_SPLIT_NOCOLOR (-1; other negative colors are not defined), which leaves `child` null.
  const bool member = color >= 0;
  const c10::cuda::CUDAGuard guard(dev_index(state_->device));
  const auto on_gpu = at::TensorOptions().dtype(at::kLong).device(at::kCUDA, dev_index(state_->device));
  // Everyone's (color, key), so each member knows its new rank and the world ranks of its group.
  at::Tensor mine = at::empty({2}, at::kLong);
  mine.data_ptr<int64_t>()[0] = color;
  mine.data_ptr<int64_t>()[1] = key;
  at::Tensor all = at::empty({2 * size()}, on_gpu);
  all_gather(all, mine.to(all.device()))->wait();
  const at::Tensor host = all.cpu();  // ordered after the gather by wait(), synchronous
  const int64_t* ck = host.data_ptr<int64_t>();
  std::vector<int> members;
  for (int i = 0; member && i < size(); ++i)
    if (ck[2 * i] == color) members.push_back(i);
  // Ranked by (key, old rank), as MPI_Comm_split and ncclCommSplit both do.
  std::stable_sort(members.begin(), members.end(), [&](int a, int b) { return ck[2 * a + 1] < ck[2 * b + 1]; });
  const int new_rank = int(std::find(members.begin(), members.end(), rank()) - members.begin());
  std::vector<int> new_world;
  for (int m : members) new_world.push_back(world_ranks()[size_t(m)]);

  ncclComm_t child = nullptr;
  if (api().CommSplit != nullptr && !g_split_by_unique_id) {
    constexpr int kNoColor = -1;  // NCCL_SPLIT_NOCOLOR (nccl.h >= 2.18, the version CommSplit needs)
    nccl::check(api().CommSplit(comm(), member ? color : kNoColor, key, &child, nullptr),
                "ncclCommSplit of group " + name(), comm());
    if (!member) return nullptr;
  } else {
    // Before NCCL 2.18: each new group's rank 0 makes a unique id and everyone gathers all of
    // them over this communicator, then takes its own group's.
    constexpr int64_t kId = sizeof(ncclUniqueId);
    ncclUniqueId id{};
    if (member && new_rank == 0) nccl::check(api().GetUniqueId(&id), "ncclGetUniqueId");
    at::Tensor id_buf = at::empty({kId}, at::kByte);
    std::memcpy(id_buf.data_ptr(), &id, sizeof id);
    at::Tensor ids = at::empty({kId * size()}, on_gpu.dtype(at::kByte));
    all_gather(ids, id_buf.to(ids.device()))->wait();
    if (!member) return nullptr;  // it took part in the gather; it makes no communicator
    const at::Tensor ids_host = ids.cpu();
    std::memcpy(&id, ids_host.data_ptr<uint8_t>() + kId * members[0], sizeof id);
    nccl::check(api().CommInitRank(&child, int(members.size()), id, new_rank), "ncclCommInitRank for split " + new_name);
  }
  return wrap(child, state_->device, new_name, new_rank, std::move(new_world), state_->timeout_s);
}

}  // namespace

GroupPtr make_nccl_group(ProcessGroup& bootstrap, int device, const CommOptions& opts) {
  // libtorch_cuda.so first: it loads the NCCL it was built with, which api() then picks up.
  const ops::CudaStatus& cuda = ops::cuda_status();
  if (!cuda.available) throw std::runtime_error("make_nccl_group: " + cuda.reason);
  const int visible = c10::cuda::device_count();
  if (device < 0 || device >= visible)
    throw std::runtime_error("make_nccl_group: CUDA device " + std::to_string(device) + " does not exist (" +
                             std::to_string(visible) + " visible)");
  return wrap(nccl::init_comm(bootstrap, device), device, bootstrap.name(), bootstrap.rank(), bootstrap.world_ranks(),
              opts.timeout_s);
}

namespace nccl {

ncclComm_t init_comm(ProcessGroup& bootstrap, int device) {
  const Api& a = api();
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) check(a.GetUniqueId(&id), "ncclGetUniqueId");
  at::Tensor buf = at::empty({int64_t(sizeof id)}, at::kByte);
  std::memcpy(buf.data_ptr(), &id, sizeof id);
  bootstrap.broadcast(buf, 0)->wait();
  std::memcpy(&id, buf.data_ptr(), sizeof id);

  const c10::cuda::CUDAGuard guard(dev_index(device));
  ncclComm_t comm = nullptr;
  check(a.CommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()),
        "ncclCommInitRank for group " + bootstrap.name() + " on cuda:" + std::to_string(device));
  return comm;
}

bool data_type(at::ScalarType t, ncclDataType_t& out) {
  switch (t) {
    case at::kFloat: out = ncclFloat32; return true;
    case at::kDouble: out = ncclFloat64; return true;
    case at::kBFloat16: out = ncclBfloat16; return true;
    case at::kHalf: out = ncclFloat16; return true;
    case at::kLong: out = ncclInt64; return true;
    case at::kInt: out = ncclInt32; return true;
    case at::kByte: out = ncclUint8; return true;
    default: return false;
  }
}

}  // namespace nccl

std::string nccl_library_info() {
  try {
    (void)ops::cuda_status();  // prefer the NCCL that libtorch_cuda.so brings
    const nccl::Api& a = api();
    return "NCCL " + nccl::version_string(a.version) + " (" + a.path + ")";
  } catch (const std::exception& e) {
    return e.what();
  }
}

void nccl_testing::force_split_by_unique_id(bool on) { g_split_by_unique_id = on; }

}  // namespace shoestring::parallel

#endif  // SHOESTRING_HAVE_NCCL
