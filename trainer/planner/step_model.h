#pragma once
// Time of one optimizer step of a layout, by roofline: each stage's compute at an achieved
// fraction of the GPU's peak, the pipeline's bubble from parallel::simulate with those costs, and
// communication (data-parallel gradients, expert all-to-all, pipeline activations) at the table's
// bandwidths, placed intra- or inter-node by the mesh (parallel/mesh.h: ep innermost, then dp,
// then pp). docs/planning.md states every formula and assumption.
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/schedule.h"
#include "trainer/config.h"
#include "trainer/planner/gpu_table.h"
#include "trainer/planner/memory_model.h"

namespace shoestring::planner {

struct Hardware {
  GpuSpec gpu;
  int gpus = 1;
  int gpus_per_node = 8;
  double efficiency = 0.40;  // achieved fraction of peak for compute (MFU of the GEMMs themselves)
};

struct CommVolume {  // bytes each rank sends per step, and the seconds they take
  double dp_bytes = 0, ep_bytes = 0, pp_bytes = 0;
  double dp_s = 0, ep_s = 0, pp_s = 0;
  bool dp_inter = false, ep_inter = false, pp_inter = false;  // crosses nodes
  double ep_bytes_per_layer = 0;  // one MoE layer, one micro-batch, forward dispatch + combine
};

struct StepEstimate {
  double flops_per_step = 0;    // model FLOPs of the whole step over all ranks: 3 x forward
  double compute_s = 0;         // busiest rank's compute, no bubble
  double makespan_s = 0;        // the simulated pipeline (compute + PP messages)
  double bubble_fraction = 0;   // mean over pp ranks of bubble / makespan
  double worst_bubble_fraction = 0;
  double exposed_dp_s = 0, exposed_ep_s = 0;
  double step_s = 0;
  double tokens_per_step = 0, tokens_per_s = 0, mfu = 0;
  CommVolume comm;
};

// Forward seconds of each model stage for one micro-batch, at the hardware's achieved rate.
std::vector<double> stage_forward_seconds(const Config& cfg, const std::vector<StageCost>& stages, const Hardware& hw);
// The pipeline with forward f_s of each model stage: B = 2F, W = F, F&B = F + B (DualPipe
// overlaps communication with compute, not compute with compute), messages `comm_s` each.
parallel::Simulation simulate_pipeline(const parallel::Schedule& schedule, const std::vector<double>& f_s, double comm_s);

// simulate_pipeline, remembered. A search meets each pipeline with the same stage times under
// every ep and ZeRO-1 choice (they change neither), and the simulation is most of what a plan
// costs after the schedule itself. Keyed by (name, pp, micro-batches, chunks), which determine a
// schedule from parallel::make_schedule (a pure function of them), and by the costs' bit patterns:
// identical inputs give the identical simulation. Keeps what estimate_step reads (no timeline).
class SimulationCache {
 public:
  const parallel::Simulation& get(const parallel::Schedule& schedule, const std::vector<double>& f_s, double comm_s);

 private:
  using Key = std::tuple<std::string, int, int, int, std::vector<uint64_t>>;
  std::map<Key, parallel::Simulation> sims_;
};

// `sims`: where to look up and keep the pipeline simulation (null: simulate every time).
StepEstimate estimate_step(const Config& cfg, const parallel::Schedule& schedule, const std::vector<StageCost>& stages,
                           const MemoryPlan& memory, const Hardware& hw, SimulationCache* sims = nullptr);

}  // namespace shoestring::planner
