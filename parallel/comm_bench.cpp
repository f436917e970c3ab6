#include "parallel/comm_bench.h"

#include <ATen/ATen.h>
#include <mpi.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>

#include "parallel/comm_thread.h"
#include "parallel/mpi_group.h"
#include "parallel/mpi_types.h"
#include "parallel/nccl_group.h"
#include "parallel/process_group.h"

#ifdef SHOESTRING_HAVE_NCCL
#include "parallel/comm_bench_nccl.h"
#endif

namespace shoestring::parallel {

namespace {

const std::map<std::string, at::ScalarType> kDtypes = {
    {"float32", at::kFloat}, {"float64", at::kDouble}, {"bfloat16", at::kBFloat16}, {"float16", at::kHalf},
    {"int64", at::kLong},    {"int32", at::kInt},      {"uint8", at::kByte}};

// nccl-tests, doc/PERFORMANCE.md: the bus bandwidth factor of each collective.
double bus_factor(const std::string& op, int n) {
  if (op == "all_reduce") return 2.0 * (n - 1) / n;
  if (op == "broadcast") return 1.0;
  return double(n - 1) / n;
}

// The buffers of one (op, size): `bytes` is nccl-tests' size (all_reduce/broadcast: the tensor;
// reduce_scatter: its input; all_gather: its output; all_to_all: each side).
struct Buffers {
  at::Tensor a, b;  // in/out as each op uses them
  int64_t count = 0;  // elements per member block (reduce_scatter/all_gather/all_to_all) or total
};

Buffers make_buffers(const std::string& op, int64_t bytes, int n, at::ScalarType dt, const at::Device& dev) {
  const int64_t esz = int64_t(c10::elementSize(dt));
  const int64_t block = std::max<int64_t>(1, bytes / esz / n);
  const auto o = at::TensorOptions().dtype(dt).device(dev);
  Buffers b;
  if (op == "all_reduce" || op == "broadcast") {
    b.count = std::max<int64_t>(1, bytes / esz);
    b.a = at::ones({b.count}, o);
  } else {
    b.count = block;
    b.a = at::ones({block * n}, o);
    b.b = at::zeros({op == "all_to_all" ? block * n : block}, o);
  }
  return b;
}

WorkPtr issue(ProcessGroup& g, const std::string& op, Buffers& b) {
  if (op == "all_reduce") return g.all_reduce(b.a);
  if (op == "broadcast") return g.broadcast(b.a, 0);
  if (op == "reduce_scatter") return g.reduce_scatter(b.b, b.a);
  if (op == "all_gather") return g.all_gather(b.a, b.b);
  const std::vector<int64_t> counts(size_t(g.size()), b.count);
  return g.all_to_all(b.b, b.a, counts, counts);
}

// The same collective as one blocking MPI call; runs on the comm thread.
void raw_call(MPI_Comm c, const std::string& op, Buffers& b, at::ScalarType dt, int n) {
  const MPI_Datatype t = mpi_datatype(dt);
  const int cnt = int(b.count);
  if (op == "all_reduce") MPI_Allreduce(MPI_IN_PLACE, b.a.data_ptr(), cnt, t, mpi_reduce_op(ReduceOp::Sum, dt), c);
  else if (op == "broadcast") MPI_Bcast(b.a.data_ptr(), cnt, t, 0, c);
  else if (op == "reduce_scatter")
    MPI_Reduce_scatter_block(b.a.data_ptr(), b.b.data_ptr(), cnt, t, mpi_reduce_op(ReduceOp::Sum, dt), c);
  else if (op == "all_gather") MPI_Allgather(b.b.data_ptr(), cnt, t, b.a.data_ptr(), cnt, t, c);
  else {
    // Alltoallv with equal counts: what our all_to_all calls, so both pick the same algorithm.
    std::vector<int> counts(static_cast<size_t>(n), cnt), displs(static_cast<size_t>(n), 0);
    for (int j = 0; j < n; ++j) displs[size_t(j)] = j * cnt;
    MPI_Alltoallv(b.a.data_ptr(), counts.data(), displs.data(), t, b.b.data_ptr(), counts.data(), displs.data(), t, c);
  }
}

// Mean seconds per iteration of ours, the slowest rank's.
double time_ours(ProcessGroup& g, const std::string& op, Buffers& b, int iters, bool cuda) {
  g.barrier()->wait();
  const double t0 = steady_seconds();
  for (int i = 0; i < iters; ++i) issue(g, op, b)->wait();
  // NCCL's wait() only orders the stream: reading one element back waits for the GPU.
  if (cuda) (void)b.a.view(-1)[0].item<double>();
  at::Tensor t = at::full({1}, (steady_seconds() - t0) / iters, at::kDouble);
  if (cuda) t = t.to(b.a.device());
  g.all_reduce(t, ReduceOp::Max)->wait();
  return t.cpu().item<double>();
}

double time_raw(MPI_Comm c, const std::string& op, Buffers& b, at::ScalarType dt, int n, int iters) {
  double worst = 0;
  CommEngine::instance().run([&] {
    MPI_Barrier(c);
    const double t0 = steady_seconds();
    for (int i = 0; i < iters; ++i) raw_call(c, op, b, dt, n);
    const double mine = (steady_seconds() - t0) / iters;
    MPI_Allreduce(&mine, &worst, 1, MPI_DOUBLE, MPI_MAX, c);
  });
  return worst;
}

}  // namespace

int64_t parse_byte_size(const std::string& s) {
  size_t end = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &end);
  } catch (const std::exception&) {
    return -1;
  }
  const std::string unit = s.substr(end);
  const int64_t mul = unit.empty() || unit == "B" ? 1
                      : (unit == "K" || unit == "KiB") ? 1 << 10
                      : (unit == "M" || unit == "MiB") ? 1 << 20
                      : (unit == "G" || unit == "GiB") ? 1 << 30
                                                       : -1;
  // 17179869184G (2^64 bytes) would wrap to 0 ("--max-bytes (0) is below --min-bytes"): not a size either.
  return mul < 0 || v < 0 || v > std::numeric_limits<int64_t>::max() / mul ? -1 : int64_t(v) * mul;
}

int run_comm_bench(const World& world, const CommBenchOptions& o, std::ostream& out, std::string& error) {
  if (!kDtypes.count(o.dtype))
    return error = "--dtype must be float32, float64, bfloat16, float16, int64, int32 or uint8, got '" + o.dtype + "'", 2;
  for (const auto& op : o.ops)
    if (op != "all_reduce" && op != "reduce_scatter" && op != "all_gather" && op != "broadcast" && op != "all_to_all")
      return error = "--ops: unknown op '" + op + "' (ops: all_reduce, reduce_scatter, all_gather, broadcast, all_to_all)", 2;
  if (o.min_bytes <= 0) return error = "--min-bytes must be > 0, got " + std::to_string(o.min_bytes), 2;
  if (o.max_bytes < o.min_bytes)
    return error = "--max-bytes (" + std::to_string(o.max_bytes) + ") is below --min-bytes (" + std::to_string(o.min_bytes) + ")", 2;
  if (o.iters <= 0) return error = "--iters must be > 0, got " + std::to_string(o.iters), 2;
  if (o.warmup < 0) return error = "--warmup must be >= 0, got " + std::to_string(o.warmup), 2;
  if (o.rounds <= 0) return error = "--rounds must be > 0, got " + std::to_string(o.rounds), 2;
  if (o.backend != "mpi" && o.backend != "nccl") return error = "--backend must be mpi or nccl, got '" + o.backend + "'", 2;
  // NCCL needs no MPI for one rank (the world group is then the local one that bootstraps it):
  // the GPU check machine has no mpirun.
  if (!world.mpi && o.backend == "mpi") return error = "run under mpirun (the world is a single process)", 2;

  const at::ScalarType dt = kDtypes.at(o.dtype);
  const CommOptions copts{.timeout_s = 600};
  const GroupPtr world_group = make_world_group(world, copts);
  GroupPtr g = world_group;
  at::Device dev = at::kCPU;
  // The raw baseline gets its own communicator (MPI or NCCL) so it cannot match our messages.
  MPI_Comm raw = MPI_COMM_NULL;
#ifdef SHOESTRING_HAVE_NCCL
  std::unique_ptr<RawNcclBench> raw_nccl;
#endif
  if (o.backend == "nccl") {
#ifdef SHOESTRING_HAVE_NCCL
    g = make_nccl_group(*world_group, world.local_rank, copts);
    dev = at::Device(at::kCUDA, world.local_rank);
    raw_nccl = std::make_unique<RawNcclBench>(*world_group, world.local_rank);
    if (world.rank == 0) std::cerr << "bench comm: " << nccl_library_info() << "\n";
#else
    return error = "this build has no NCCL backend", 2;
#endif
  } else {
    auto* mpi = dynamic_cast<MpiGroup*>(world_group.get());
    CommEngine::instance().run([&] { MPI_Comm_dup(mpi->comm(), &raw); });
  }
  const bool cuda = dev.is_cuda();
  const int n = g->size();
  // The same collective issued directly: one blocking MPI call, or the NCCL call on its own stream.
  const auto raw_warmup = [&](const std::string& op, Buffers& b) {
#ifdef SHOESTRING_HAVE_NCCL
    if (cuda) return raw_nccl->run(op, b.a, b.b, b.count, o.warmup);
#endif
    for (int i = 0; i < o.warmup; ++i) CommEngine::instance().run([&] { raw_call(raw, op, b, dt, n); });
  };
  const auto raw_time = [&](const std::string& op, Buffers& b) {
#ifdef SHOESTRING_HAVE_NCCL
    if (cuda) return raw_nccl->time(op, b.a, b.b, b.count, o.iters);
#endif
    return time_raw(raw, op, b, dt, n, o.iters);
  };

  for (const auto& op : o.ops)
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 4) {
      Buffers b = make_buffers(op, bytes, n, dt, dev);
      for (int i = 0; i < o.warmup; ++i) issue(*g, op, b)->wait();
      raw_warmup(op, b);
      double ours = 1e30, base = 1e30;
      for (int r = 0; r < o.rounds; ++r) {
        ours = std::min(ours, time_ours(*g, op, b, o.iters, cuda));
        base = std::min(base, raw_time(op, b));
      }
      if (world.rank != 0) continue;
      const int64_t real_bytes = int64_t(b.a.nbytes());  // the size rounded to whole elements per member
      const double algbw = double(real_bytes) / ours / 1e9, busbw = algbw * bus_factor(op, n);
      const double raw_busbw = double(real_bytes) / base / 1e9 * bus_factor(op, n);
      // busbw / raw_busbw, written as the time ratio: the same number, and still defined on one
      // rank, where the bus factor of all but broadcast is 0.
      const double ratio = base / ours;
      char line[512];
      std::snprintf(line, sizeof line,
                    "{\"op\":\"%s\",\"backend\":\"%s\",\"dtype\":\"%s\",\"bytes\":%lld,\"ranks\":%d,\"time_us\":%.2f,"
                    "\"algbw_GBps\":%.4f,\"busbw_GBps\":%.4f,\"raw_time_us\":%.2f,\"raw_busbw_GBps\":%.4f,\"ratio\":%.4f}",
                    op.c_str(), o.backend.c_str(), o.dtype.c_str(), static_cast<long long>(real_bytes), n, ours * 1e6,
                    algbw, busbw, base * 1e6, raw_busbw, ratio);
      out << line << std::endl;
    }
  if (raw != MPI_COMM_NULL) CommEngine::instance().run([&] { MPI_Comm_free(&raw); });
  return 0;
}

}  // namespace shoestring::parallel
