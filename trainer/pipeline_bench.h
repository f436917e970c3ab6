#pragma once
// `shoestring bench pipeline`: the real bubble of each schedule against the simulator's prediction
// for the per-action costs measured in the same run. Runs under mpirun with pp = all ranks: for
// each schedule, trains the given config for warm-up + timed steps with the executor recording
// when each compute action ran, then (rank 0) compares measured idle time per rank with
// simulate(schedule, measured costs). Timestamps of different ranks are compared directly, so all
// ranks must share one clock: one machine.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "parallel/world.h"

namespace shoestring {

struct PipelineBenchOptions {
  std::vector<std::string> config_files;
  std::vector<std::string> sets;
  std::vector<std::string> schedules{"gpipe", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev"};
  int64_t microbatches = 0;  // 0 = 4 x pp
  int64_t steps = 5, warmup = 2;
};

// Rank 0 writes one JSON line per schedule to `out`, then a comparison line. Returns 0, or non-zero
// with `error` set. Collective over the world.
int run_pipeline_bench(const parallel::World& world, const PipelineBenchOptions& o, std::ostream& out,
                       std::string& error);

}  // namespace shoestring
