#pragma once
// `shoestring bench moe`: throughput of expert-parallel dispatch + combine (EpDispatcher with
// identity experts, so only routing bookkeeping and exchanges are timed) beside the raw
// all-to-all-v of the same token rows there and back, in the same run. Every rank is one ep rank.
// With fp8 dispatch the raw exchange sends rows of the FP8 size (ops/fp8_rows.h) there and rows of
// --dtype back, the bytes the dispatcher moves; quantizing is part of "ours", not of raw.
#include <cstdint>
#include <ostream>
#include <string>

#include "parallel/world.h"

namespace shoestring {

struct MoeBenchOptions {
  int64_t tokens = 4096;   // per rank
  int64_t d_model = 1024;  // DeepSeek-V3's 7168 scaled down
  int64_t experts = 64;    // routed experts, divisible by the ranks
  int64_t top_k = 8;
  int iters = 10, warmup = 3, rounds = 3;
  std::string dtype = "bfloat16";  // token rows: bfloat16, float32 or float64
  std::string dispatch_dtype = "auto";  // auto | fp8 (parallel.ep_dispatch_dtype)
};

// Rank 0 writes one JSON line to `out`. Returns 0, or non-zero with `error` set (bad options).
// Collective over the world.
int run_moe_bench(const parallel::World& world, const MoeBenchOptions& o, std::ostream& out, std::string& error);

}  // namespace shoestring
