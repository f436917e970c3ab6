#pragma once
// Memory per rank of a training layout, from the config alone: what each pipeline rank holds
// (weights, gradients, optimizer state of its stages, routed experts divided over ep), the
// activations its schedule keeps in flight, and communication buffers. The byte counts follow
// what this trainer stores (docs/planning.md, "Memory"): fp32 weights in every precision (they
// are the master copy; bf16/fp8 cast per matmul), fp32 gradients that are the bucket buffers,
// two fp32 AdamW moments (sharded over dp with ZeRO-1), activations in the compute dtype.
#include <cstdint>
#include <vector>

#include "parallel/schedule.h"
#include "trainer/config.h"
#include "trainer/pipeline_stages.h"

namespace shoestring::planner {

// One model stage (a contiguous run of blocks, maybe with the embedding or the head), per token
// where it says so.
struct StageCost {
  double dense_params = 0;   // everything but routed experts
  double expert_params = 0;  // routed experts (divided over ep on a rank)
  double act_bytes = 0;      // activations saved for backward, per token
  // Backward transients, per token: the largest block's activation gradients, or on the head
  // stage the loss and logits gradients of one head, whichever is larger.
  double peak_layer_act_bytes = 0;
  double flops = 0;          // forward FLOPs per token (layer_flops)
  double fp8_flops = 0;      // the part that runs as FP8 GEMMs with train.precision fp8
  int moe_layers = 0;
};

// Bytes per activation element in the compute dtype of train.precision (fp8 keeps bf16 activations).
double activation_element_bytes(const std::string& precision);
// Activations one block saves for backward, bytes per token (docs/planning.md gives the terms).
double block_activation_bytes(const ModelConfig& m, bool moe, const std::string& precision);
// The head: final norm, output logits and their log-softmax, and each MTP module; bytes per token.
double head_activation_bytes(const ModelConfig& m, const std::string& precision);

std::vector<StageCost> stage_costs(const Config& cfg, const std::vector<StageSpan>& spans);

struct RankMemory {  // bytes on one pipeline rank (every dp rank of a stage holds the same)
  int pp_rank = 0;
  double params = 0;  // parameters held (experts / ep), DualPipe's two copies both counted
  double weights = 0, grads = 0, optimizer = 0, activations = 0, comm_buffers = 0, workspace = 0;
  int inflight = 0;   // peak micro-batch chunks in flight (parallel::validate)
  double total() const { return weights + grads + optimizer + activations + comm_buffers + workspace; }
};

struct MemoryPlan {
  std::vector<RankMemory> ranks;  // one per pipeline rank
  size_t worst = 0;               // index of the largest total
  double startup = 0;  // the whole model's fp32 weights: the trainer builds it on every rank first
  double act_per_mb_layer = 0;  // the largest block's activations for one micro-batch
  double capacity = 0, margin = 0;  // device bytes; the share kept free (allocator, fragmentation)
  bool fits = false;                // worst total <= capacity x (1 - margin)
};

// `schedule` as the trainer builds it for this layout (trainer/pipeline_plan.h step_schedule);
// `spans`: its model stages; `checked`: parallel::validate(schedule) when the caller has it (a
// search validates each schedule once), else it is validated here.
MemoryPlan memory_plan(const Config& cfg, const parallel::Schedule& schedule, const std::vector<StageSpan>& spans,
                       double capacity_bytes, double margin = 0.10, const parallel::Validation* checked = nullptr);

}  // namespace shoestring::planner
