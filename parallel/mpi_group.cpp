#include "parallel/mpi_group.h"

#include <climits>
#include <cstdlib>
#include <numeric>
#include <stdexcept>

#include "parallel/comm_thread.h"
#include "parallel/mpi_types.h"
#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {

namespace {

using Phase = CommOp::Phase;

class MpiWork final : public Work {
 public:
  explicit MpiWork(std::shared_ptr<CommOp> op) : op_(std::move(op)) {}
  void wait() override { CommEngine::instance().wait(*op_); }
  bool done() override { return CommEngine::instance().test(*op_); }
  void start() override { CommEngine::instance().start(*op_); }
  double issued_at() const override { return op_->issued_at; }
  double started_at() const override { return op_->started_at.load(); }

 private:
  std::shared_ptr<CommOp> op_;
};

// splitmix64: members of a new group derive the same id from what they all know.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

char* bytes(const at::Tensor& t) { return static_cast<char*>(t.data_ptr()); }

}  // namespace

int64_t mpi_chunk_elems() {
  static const int64_t n = [] {
    const char* v = std::getenv("SHOESTRING_MPI_CHUNK_ELEMS");
    const long long x = v ? std::atoll(v) : 0;
    return x > 0 && x < INT_MAX ? int64_t(x) : int64_t(INT_MAX);
  }();
  return n;
}

MpiGroup::MpiGroup(std::string name, MPI_Comm comm, MPI_Comm ring_comm, int rank, std::vector<int> world_ranks,
                   uint64_t id, const CommOptions& opts)
    : ProcessGroup(std::move(name), rank, std::move(world_ranks)), comm_(comm), ring_comm_(ring_comm), id_(id),
      opts_(opts) {}

MpiGroup::~MpiGroup() {
  auto op = std::make_shared<CommOp>();
  op->name = "comm_free";
  op->group = name();
  op->phases.push_back([c = comm_, r = ring_comm_](std::vector<MPI_Request>&) mutable {
    MPI_Comm_free(&c);
    MPI_Comm_free(&r);
  });
  try {
    CommEngine::instance().submit(op);
  } catch (const std::exception&) {
    // After shutdown: MPI_Finalize releases the communicator.
  }
}

void MpiGroup::check(const char* op, const at::Tensor& t, const char* what) const {
  std::string problem;
  if (!t.defined()) problem = "is undefined";
  else if (!t.device().is_cpu()) problem = "is on " + t.device().str() + " (the mpi backend takes CPU tensors)";
  else if (!t.is_contiguous()) problem = "is not contiguous";
  else if (!mpi_supports(t.scalar_type()))
    problem = std::string("has dtype ") + c10::toString(t.scalar_type()) +
              " (supported: float32, float64, bfloat16, float16, int64, int32, uint8)";
  if (!problem.empty())
    throw std::invalid_argument(std::string(op) + " on group " + name() + ": " + what + " " + problem);
}

namespace {

void check_same_dtype(const char* op, const std::string& group, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    throw std::invalid_argument(std::string(op) + " on group " + group + ": out is " + c10::toString(a.scalar_type()) +
                                " but in is " + c10::toString(b.scalar_type()));
}

int checked_count(const char* op, const std::string& group, int64_t n) {
  if (n > INT_MAX)
    throw std::invalid_argument(std::string(op) + " on group " + group + ": " + std::to_string(n) +
                                " elements per member exceed MPI's int count; split the tensor");
  return int(n);
}

}  // namespace

WorkPtr MpiGroup::submit(const char* opname, bool collective, std::vector<Phase> phases) {
  auto op = std::make_shared<CommOp>();
  op->phases = std::move(phases);
  op->name = opname;
  op->group = name();
  op->world_ranks = world_ranks();
  op->group_id = id_;
  op->seq = collective ? ++seq_ : ++p2p_seq_;
  op->timeout_s = opts_.timeout_s;
  op->issued_at = steady_seconds();
  CommEngine::instance().submit(op);
  return std::make_shared<MpiWork>(std::move(op));
}

WorkPtr MpiGroup::all_reduce(const at::Tensor& t, ReduceOp op) {
  check("all_reduce", t, "tensor");
  const MPI_Datatype dt = mpi_datatype(t.scalar_type());
  const MPI_Op mop = mpi_reduce_op(op, t.scalar_type());
  const int64_t n = t.numel(), esz = int64_t(t.element_size()), chunk = mpi_chunk_elems();
  // Same decision on every member: it depends only on the size, which they share.
  if (size() > 1 && int64_t(t.nbytes()) >= ring_min_bytes())
    return submit("all_reduce", true, ring_all_reduce_phases(t, op, ring_comm_, rank(), size(), next_ring_tag()));
  return submit("all_reduce", true, {[t, dt, mop, n, esz, chunk, c = comm_](std::vector<MPI_Request>& reqs) {
                  int64_t off = 0;
                  do {  // at least one call, even for an empty tensor: every member makes the same calls
                    const int cnt = int(std::min(chunk, n - off));
                    reqs.emplace_back();
                    MPI_Iallreduce(MPI_IN_PLACE, bytes(t) + off * esz, cnt, dt, mop, c, &reqs.back());
                    off += cnt;
                  } while (off < n);
                }});
}

WorkPtr MpiGroup::reduce_scatter(const at::Tensor& out, const at::Tensor& in, ReduceOp op) {
  check("reduce_scatter", out, "out");
  check("reduce_scatter", in, "in");
  check_same_dtype("reduce_scatter", name(), out, in);
  if (in.numel() != out.numel() * size())
    throw std::invalid_argument("reduce_scatter on group " + name() + ": in has " + std::to_string(in.numel()) +
                                " elements, expected out's " + std::to_string(out.numel()) + " x " +
                                std::to_string(size()) + " members");
  if (size() > 1 && int64_t(in.nbytes()) >= ring_min_bytes())  // the same choice on every member
    return submit("reduce_scatter", true,
                  direct_reduce_scatter_phases(out, in, op, ring_comm_, rank(), size(), next_ring_tag()));
  const int cnt = checked_count("reduce_scatter", name(), out.numel());
  const MPI_Datatype dt = mpi_datatype(in.scalar_type());
  const MPI_Op mop = mpi_reduce_op(op, in.scalar_type());
  // In place (out is block rank() of in): MPI_IN_PLACE leaves the result in block 0, from where
  // a second phase moves it to block rank() (distinct blocks, so the copy does not overlap).
  const bool in_place = out.numel() > 0 && bytes(out) == bytes(in) + int64_t(rank()) * out.numel() * out.element_size();
  if (in_place)
    return submit("reduce_scatter", true,
                  {[in, cnt, dt, mop, c = comm_](std::vector<MPI_Request>& reqs) {
                     reqs.emplace_back();
                     MPI_Ireduce_scatter_block(MPI_IN_PLACE, in.data_ptr(), cnt, dt, mop, c, &reqs.back());
                   },
                   [out, in](std::vector<MPI_Request>&) {
                     if (out.data_ptr() != in.data_ptr()) out.copy_(in.narrow(0, 0, out.numel()));
                   }});
  return submit("reduce_scatter", true, {[out, in, cnt, dt, mop, c = comm_](std::vector<MPI_Request>& reqs) {
                  reqs.emplace_back();
                  MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), cnt, dt, mop, c, &reqs.back());
                }});
}

WorkPtr MpiGroup::all_gather(const at::Tensor& out, const at::Tensor& in) {
  check("all_gather", out, "out");
  check("all_gather", in, "in");
  check_same_dtype("all_gather", name(), out, in);
  if (out.numel() != in.numel() * size())
    throw std::invalid_argument("all_gather on group " + name() + ": out has " + std::to_string(out.numel()) +
                                " elements, expected in's " + std::to_string(in.numel()) + " x " +
                                std::to_string(size()) + " members");
  if (size() > 1 && int64_t(out.nbytes()) >= ring_min_bytes())  // the same choice on every member
    return submit("all_gather", true, direct_all_gather_phases(out, in, ring_comm_, rank(), size(), next_ring_tag()));
  const int cnt = checked_count("all_gather", name(), in.numel());
  const MPI_Datatype dt = mpi_datatype(in.scalar_type());
  const bool in_place = in.numel() > 0 && bytes(in) == bytes(out) + int64_t(rank()) * in.numel() * in.element_size();
  return submit("all_gather", true, {[out, in, cnt, dt, in_place, c = comm_](std::vector<MPI_Request>& reqs) {
                  reqs.emplace_back();
                  MPI_Iallgather(in_place ? MPI_IN_PLACE : in.data_ptr(), cnt, dt, out.data_ptr(), cnt, dt, c,
                                 &reqs.back());
                }});
}

WorkPtr MpiGroup::broadcast(const at::Tensor& t, int root) {
  check("broadcast", t, "tensor");
  if (root < 0 || root >= size())
    throw std::invalid_argument("broadcast on group " + name() + ": root " + std::to_string(root) +
                                " is not a member (size " + std::to_string(size()) + ")");
  if (size() > 1 && int64_t(t.nbytes()) >= ring_min_bytes())
    return submit("broadcast", true, direct_broadcast_phases(t, root, ring_comm_, rank(), size(), next_ring_tag()));
  const MPI_Datatype dt = mpi_datatype(t.scalar_type());
  const int64_t n = t.numel(), esz = int64_t(t.element_size()), chunk = mpi_chunk_elems();
  return submit("broadcast", true, {[t, dt, n, esz, chunk, root, c = comm_](std::vector<MPI_Request>& reqs) {
                  int64_t off = 0;
                  do {
                    const int cnt = int(std::min(chunk, n - off));
                    reqs.emplace_back();
                    MPI_Ibcast(bytes(t) + off * esz, cnt, dt, root, c, &reqs.back());
                    off += cnt;
                  } while (off < n);
                }});
}

WorkPtr MpiGroup::all_to_all(const at::Tensor& out, const at::Tensor& in, const std::vector<int64_t>& recv_counts,
                             const std::vector<int64_t>& send_counts) {
  const char* op = "all_to_all";
  check(op, out, "out");
  check(op, in, "in");
  check_same_dtype(op, name(), out, in);
  auto fail = [&](const std::string& why) { throw std::invalid_argument(std::string(op) + " on group " + name() + ": " + why); };
  if (in.dim() < 1 || out.dim() < 1 || in.sizes().slice(1) != out.sizes().slice(1))
    fail("in and out must have rows of the same shape (dim 0 is the row count)");
  if (int(recv_counts.size()) != size() || int(send_counts.size()) != size())
    fail("needs one send and one receive count per member (" + std::to_string(size()) + ")");
  int64_t row_elems = 1;
  for (int64_t d : in.sizes().slice(1)) row_elems *= d;
  const int64_t row_bytes = row_elems * int64_t(in.element_size());
  auto to_bytes = [&](const std::vector<int64_t>& counts, int64_t rows, const char* side) {
    std::vector<int64_t> b(counts.size());
    int64_t total = 0;
    for (size_t j = 0; j < counts.size(); ++j) {
      if (counts[j] < 0) fail(std::string(side) + " count " + std::to_string(counts[j]) + " is negative");
      total += counts[j];
      b[j] = counts[j] * row_bytes;
    }
    if (total != rows)
      fail(std::string(side) + " counts add up to " + std::to_string(total) + " rows but the tensor has " +
           std::to_string(rows));
    return b;
  };
  auto send = to_bytes(send_counts, in.size(0), "send");
  auto recv = to_bytes(recv_counts, out.size(0), "receive");
  return submit(op, true,
                direct_all_to_all_phases(out, in, std::move(send), std::move(recv), ring_comm_, rank(), size(),
                                         next_ring_tag()));
}

WorkPtr MpiGroup::send(const at::Tensor& t, int peer, int tag) {
  check("send", t, "tensor");
  if (peer < 0 || peer >= size() || tag < 0 || tag > 32767)
    throw std::invalid_argument("send on group " + name() + ": peer " + std::to_string(peer) + " or tag " +
                                std::to_string(tag) + " out of range (size " + std::to_string(size()) + ", tags 0..32767)");
  const int cnt = checked_count("send", name(), t.numel());
  const MPI_Datatype dt = mpi_datatype(t.scalar_type());
  return submit("send", false, {[t, cnt, dt, peer, tag, c = comm_](std::vector<MPI_Request>& reqs) {
                  reqs.emplace_back();
                  MPI_Isend(t.data_ptr(), cnt, dt, peer, tag, c, &reqs.back());
                }});
}

WorkPtr MpiGroup::recv(const at::Tensor& t, int peer, int tag) {
  check("recv", t, "tensor");
  if (peer < 0 || peer >= size() || tag < 0 || tag > 32767)
    throw std::invalid_argument("recv on group " + name() + ": peer " + std::to_string(peer) + " or tag " +
                                std::to_string(tag) + " out of range (size " + std::to_string(size()) + ", tags 0..32767)");
  const int cnt = checked_count("recv", name(), t.numel());
  const MPI_Datatype dt = mpi_datatype(t.scalar_type());
  return submit("recv", false, {[t, cnt, dt, peer, tag, c = comm_](std::vector<MPI_Request>& reqs) {
                  reqs.emplace_back();
                  MPI_Irecv(t.data_ptr(), cnt, dt, peer, tag, c, &reqs.back());
                }});
}

WorkPtr MpiGroup::barrier() {
  return submit("barrier", true, {[c = comm_](std::vector<MPI_Request>& reqs) {
                  reqs.emplace_back();
                  MPI_Ibarrier(c, &reqs.back());
                }});
}

std::shared_ptr<ProcessGroup> MpiGroup::split(int color, int key, const std::string& new_name) {
  struct Result {
    MPI_Comm comm = MPI_COMM_NULL, ring = MPI_COMM_NULL;
    int rank = -1;
    std::vector<int> world_ranks;
  };
  auto res = std::make_shared<Result>();
  const uint64_t id = mix(id_ ^ mix(uint64_t(++splits_)) ^ mix(uint64_t(uint32_t(color)) + 0x51ULL));
  // MPI_Comm_split blocks and has no non-blocking form; the barrier before it (which the watchdog
  // covers) makes sure every member has arrived, so the blocking call cannot hang the comm thread.
  auto work = submit("split", true,
                     {[c = comm_](std::vector<MPI_Request>& reqs) {
                        reqs.emplace_back();
                        MPI_Ibarrier(c, &reqs.back());
                      },
                      [res, color, key, c = comm_](std::vector<MPI_Request>&) {
                        MPI_Comm_split(c, color < 0 ? MPI_UNDEFINED : color, key, &res->comm);
                        if (res->comm == MPI_COMM_NULL) return;
                        MPI_Comm_dup(res->comm, &res->ring);  // all members are here: cannot hang
                        MPI_Comm_rank(res->comm, &res->rank);
                        int n = 0;
                        MPI_Comm_size(res->comm, &n);
                        MPI_Group mine, world;
                        MPI_Comm_group(res->comm, &mine);
                        MPI_Comm_group(MPI_COMM_WORLD, &world);
                        std::vector<int> ranks(size_t(n), 0);
                        std::iota(ranks.begin(), ranks.end(), 0);
                        res->world_ranks.resize(size_t(n));
                        MPI_Group_translate_ranks(mine, n, ranks.data(), world, res->world_ranks.data());
                        MPI_Group_free(&mine);
                        MPI_Group_free(&world);
                      }});
  work->wait();
  if (res->comm == MPI_COMM_NULL) return nullptr;
  return std::make_shared<MpiGroup>(new_name, res->comm, res->ring, res->rank, std::move(res->world_ranks), id, opts_);
}

GroupPtr make_mpi_world_group(const CommOptions& opts) {
  CommEngine& engine = CommEngine::instance();
  MPI_Comm comm = MPI_COMM_NULL, ring = MPI_COMM_NULL;
  int rank = 0, size = 1;
  engine.run([&] {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_dup(MPI_COMM_WORLD, &ring);
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
  });
  std::vector<int> ranks(size_t(size), 0);
  std::iota(ranks.begin(), ranks.end(), 0);
  return std::make_shared<MpiGroup>("world", comm, ring, rank, std::move(ranks), 1, opts);
}

}  // namespace shoestring::parallel
