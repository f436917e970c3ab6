#pragma once
// One layout planned end to end (`shoestring plan`): the layout from the config and the GPU
// count, parameter counts, memory per rank, communication, step time, throughput and the cost of
// training a token budget; printed as text or JSON.
#include <string>
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
  parallel::Schedule schedule;
  std::vector<StageSpan> spans;
  std::vector<StageCost> stages;
  MemoryPlan memory;
  StepEstimate step;
  double train_s = 0, gpu_hours = 0, dollars = 0, price = 0;
  std::vector<std::string> notes;
};

// PlanError (or ConfigError from the trainer's own checks) when the layout is impossible: --gpus
// not divisible by parallel.pp, ep not dividing dp or the routed experts, a schedule constraint.
Plan make_plan(Config cfg, const Hardware& hw, const PlanOptions& opts);

std::string render_text(const Plan& p);
std::string render_json(const Plan& p);

// "12.3 GiB", "1.23 TB"-style helpers shared with the search table.
std::string gib(double bytes);
std::string si(double x);  // 1.23M, 4.5B, 6.7T

}  // namespace shoestring::planner
