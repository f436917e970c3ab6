#include "trainer/sweep/run_estimate.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "trainer/planner/gpu_table.h"
#include "trainer/planner/plan_report.h"

namespace shoestring::sweep {

// Sweeps run here, on this machine's CPUs: the planner's `cpu` device, whose memory estimate is
// the validated part (docs/planning.md); its times are nominal, so only memory is shown.
std::string run_estimate(const Config& c) {
  try {
    planner::Hardware hw;
    hw.gpu = planner::find_gpu("cpu");
    hw.gpus = int(std::max<int64_t>(1, c.parallel.dp) * c.parallel.pp);
    hw.gpus_per_node = hw.gpus;
    planner::PlanOptions o;
    o.exact_partition = false;
    const planner::Plan p = planner::make_plan(c, hw, o);
    const auto& worst = p.memory.ranks[p.memory.worst];
    char line[160];
    std::snprintf(line, sizeof line, "~%s/rank model state + activations%s", planner::gib(worst.total()).c_str(),
                  p.memory.fits ? "" : " (more than this machine has)");
    return line;
  } catch (const planner::PlanTooLarge& e) {
    return std::string("n/a: ") + e.what();  // the model trains, the planner just does not estimate it
  } catch (const std::exception&) {
    return "";  // the run's own checks report what is wrong when it starts
  }
}

}  // namespace shoestring::sweep
