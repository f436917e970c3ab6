#pragma once
// The trainer's view of the process layout: the mesh from parallel.* and the world, the batch
// geometry per rank, and the few small collectives the loop needs (agreeing on the run directory,
// summing metrics).
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "trainer/config.h"

namespace shoestring {

// parallel.* against the ranks actually started; a mismatch is a ConfigError such as
// "parallel.dp=3 x parallel.pp=2 needs 6 ranks, mpirun started 4".
parallel::MeshShape mesh_shape(const Config& cfg, int world_size);

// Micro-batches each rank accumulates per optimizer step: train.global_batch / (micro x dp), or
// train.grad_accum when global_batch is 0. ConfigError when global_batch does not divide.
int64_t accumulation_steps(const TrainConfig& t, int dp);
// The same with parallel.microbatches, which sets it directly (and must agree with
// train.global_batch when both are set): the micro-batches each pipeline runs per step.
int64_t accumulation_steps(const Config& c, int dp);

// Rank `root`'s string on every member of g.
std::string broadcast_string(parallel::ProcessGroup& g, const std::string& s, int root = 0);

// Every member's string, on every member (two small collectives: lengths, then padded bytes).
std::vector<std::string> all_gather_strings(parallel::ProcessGroup& g, const std::string& s);

// Element-wise float64 sum of `values` over g (in place).
void all_reduce_sum(parallel::ProcessGroup& g, std::vector<double>& values);

// Test-only fault injection, from SHOESTRING_FAULT="rank=R,step=S,mode=exit|hang|sigterm|nan": rank R exits
// (without MPI_Finalize, as a crashed process would), stops responding in the middle of step S,
// or raises SIGTERM there (a preemption notice: the run saves and exits 42 after that step).
// Nothing happens when the variable is unset. mode=nan (or nan:K, K steps from S) returns true: the caller poisons rank R's
// loss of step S (the sum over dp then makes every rank see a non-finite loss), for the
// train.nonfinite policies.
bool maybe_inject_fault(int rank, int64_t step);

}  // namespace shoestring
