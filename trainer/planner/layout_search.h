#pragma once
// Every valid layout of a model on N GPUs, planned and ranked by the cost of a token budget
// (`shoestring plan --search`). Enumerates pp (divides N, at most the transformer blocks),
// dp = N / pp, ep (divides dp and the routed experts), ZeRO-1 off/on, micro-batch size (powers of
// two dividing the per-dp-rank batch), schedule (those parallel::make_schedule accepts at that
// pp and micro-batch count) and precision (bf16, and fp8 where the GPU has FP8), keeping the
// global batch fixed. A layout the trainer would refuse is never listed.
#include <string>
#include <vector>

#include "trainer/planner/plan_report.h"

namespace shoestring::planner {

struct SearchResult {
  std::vector<Plan> plans;  // sorted: fitting first, then by dollars (then step time)
  int64_t global_batch = 0; // sequences per step, kept for every layout
  size_t considered = 0;    // layouts built (valid or not)
  size_t too_large = 0;     // of those, beyond the planner's limits (plan_report.h), not planned
};

// The global batch in sequences a search keeps: train.global_batch, else the config's own
// micro-batch size x accumulation steps x dp (dp = gpus / parallel.pp).
int64_t search_global_batch(const Config& cfg, int gpus);

// PlanTooLarge when the model itself is beyond the planner's limits (model.n_layers).
SearchResult search_layouts(const Config& cfg, const Hardware& hw, const PlanOptions& opts);

std::string render_search_table(const SearchResult& r, size_t top = 20);
// "N layout(s) not planned: beyond the planner's limits (...)", for r.too_large > 0.
std::string too_large_note(const SearchResult& r);

}  // namespace shoestring::planner
