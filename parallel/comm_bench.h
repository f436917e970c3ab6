#pragma once
// `shoestring bench comm`: bus bandwidth of our Work-based collectives next to the raw call (the
// blocking MPI call, or the NCCL call on a stream of its own: comm_bench_nccl.h) on the same ranks,
// in the same run, with nccl-tests' definitions (busbw = algbw x 2(n-1)/n for all_reduce, (n-1)/n
// for reduce_scatter/all_gather/all_to_all, 1 for broadcast).
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "parallel/world.h"

namespace shoestring::parallel {

struct CommBenchOptions {
  std::string backend = "mpi";  // mpi | nccl
  std::vector<std::string> ops = {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all"};
  int64_t min_bytes = 1 << 10, max_bytes = 64 << 20;  // sizes go up x4
  int iters = 20, warmup = 5;
  int rounds = 3;  // timed rounds, ours and raw alternating; the best round of each is reported
  std::string dtype = "float32";
};

// Runs on every rank (collective over the world); rank 0 writes one JSON line per (op, size) to
// `out`. Needs an MPI world, except for backend nccl on a single process. Returns 0, or 2 with
// `error` set for bad options.
int run_comm_bench(const World& world, const CommBenchOptions& opts, std::ostream& out, std::string& error);

// "64M" -> 67108864 (K, M, G are powers of 1024); -1 when not a size.
int64_t parse_byte_size(const std::string& s);

}  // namespace shoestring::parallel
