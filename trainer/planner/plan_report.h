#pragma once
// One layout planned end to end (`shoestring plan`): the layout from the config and the GPU
// count, parameter counts, memory per rank, communication, step time, throughput and the cost of
// training a token budget; printed as text or JSON.
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/schedule.h"
#include "trainer/config.h"
#include "trainer/model/param_count.h"
#include "trainer/pipeline_stages.h"
#include "trainer/planner/memory_model.h"
#include "trainer/planner/step_model.h"

namespace shoestring::planner {

struct PlanOptions {
  double tokens = 1e9;    // training tokens to price
  double price = -1;      // $/GPU-hour; < 0: the GPU table's
  double margin = 0.10;   // share of device memory kept free
  bool exact_partition = true;  // the trainer's stage split (simulated per schedule); false: min-max, faster
};

struct Plan {
  Config cfg;  // with parallel.dp set from the GPU count
  Hardware hw;
  PlanOptions opts;
  model::ParamCount params;
  // Shared, not copied: a search keeps thousands of plans of a few hundred schedules of up to
  // 60,000 actions each (DeepSeek-V3 on 256 GPUs: 1.2 GB of copies).
  std::shared_ptr<const parallel::Schedule> schedule;
  std::vector<StageSpan> spans;
  std::vector<StageCost> stages;
  MemoryPlan memory;
  StepEstimate step;
  double train_s = 0, gpu_hours = 0, dollars = 0, price = 0;
  std::vector<std::string> notes;
};

// What the layouts of a search share, computed once. Building and validating a schedule was most
// of a plan's time, and layouts that differ only in ep, ZeRO-1 or precision have the same one
// (DeepSeek-V3 on 256 GPUs: 4188 layouts, under 200 schedules); its simulation and the stage
// split repeat too. One cache serves one model and sequence length (the splits depend on them).
struct PlanCache {
  struct Built {
    std::shared_ptr<const parallel::Schedule> schedule;
    parallel::Validation validation;
    std::exception_ptr error;  // what building it threw: rethrown, so a refusal reads the same
  };
  // step_schedule's result by (schedule name, pp, micro-batches, virtual stages): all it reads.
  std::map<std::tuple<std::string, int, int64_t, int64_t>, Built> schedules;
  SimulationCache simulations;
  std::map<int, std::vector<StageSpan>> splits;  // min-max split by stage count (exact_partition off)
};

// PlanError (or ConfigError from the trainer's own checks) when the layout is impossible: --gpus
// not divisible by parallel.pp, ep not dividing dp or the routed experts, a schedule constraint;
// PlanTooLarge when it is beyond the limits below. `cache`: shared between the plans of a search;
// the plan is the same with or without it.
Plan make_plan(Config cfg, const Hardware& hw, const PlanOptions& opts, PlanCache* cache = nullptr);

// The planner's limits, so that a plan takes seconds. The stage split (partition_stages) is a
// min-max search over every cut of every stage, stages x n_layers^2 steps of about 1 ns (measured:
// 200,000 layers on one stage took 39 s), and a schedule's replay looks stages up along their
// routes (16,384 ranks: minutes). Real models have tens to a few hundred blocks.
constexpr int64_t kMaxPlanLayers = 4096;         // model.n_layers
constexpr int64_t kMaxPlanRanks = 1024;          // parallel.pp
constexpr double kMaxPlanSplitSteps = 0x1p30;    // model stages x model.n_layers^2: the split's steps
// pp x micro-batches x chunks per rank: building a schedule grows faster than its actions (DualPipeV,
// pp 512 x 1024 micro-batches: 25 s, 1 GB); the trainer's own limit (pipeline_plan.cpp: micro-batches
// x stages at most 16,384, for its message tags) is below this, so only shapes it refuses anyway are
// stopped here, before the schedule is built.
constexpr double kMaxPlanForwards = 65536;
struct PlanTooLarge : PlanError {
  using PlanError::PlanError;
};
// Throws PlanTooLarge naming model.n_layers or parallel.pp when the config is beyond the limits
// (make_plan checks the rest itself, once it knows the micro-batches and stages).
void check_plan_size(const Config& cfg);
// Chunks (model stages) per rank of a schedule by name, as its generator makes them: interleaved
// virtual_stages, dualpipe and dualpipev 2, the others 1. Known before the schedule is built.
int64_t schedule_chunks(const std::string& name, int64_t virtual_stages);

std::string render_text(const Plan& p);
std::string render_json(const Plan& p);

// "12.3 GiB", "1.23 TB"-style helpers shared with the search table.
std::string gib(double bytes);
std::string si(double x);  // 1.23M, 4.5B, 6.7T

}  // namespace shoestring::planner
