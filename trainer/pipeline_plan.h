#pragma once
// This rank's part of the pipeline: the step's schedule, the layers of each of its chunks, and
// for every parameter and buffer of the whole model which pipeline ranks hold it. A tensor held by
// several pipeline ranks (the embedding when the last stage also needs it; every stage under
// DualPipe) has its gradient summed over them before the data-parallel reduction, is counted
// once in the gradient norm, and is written to checkpoints by its lowest holder only.
#include <map>
#include <string>
#include <vector>

#include "parallel/process_group.h"
#include "parallel/schedule.h"
#include "trainer/config.h"
#include "trainer/model/transformer.h"
#include "trainer/pipeline_stages.h"

namespace shoestring {

// The schedule every pipeline runs each step; with pp = 1 the trivial one (forward and backward
// of each micro-batch in turn), whatever parallel.schedule says. Constraint violations (too few
// micro-batches, odd pp for dualpipe, ...) are ConfigErrors naming the key and the minimum.
parallel::Schedule step_schedule(const Config& cfg, int pp, int64_t microbatches);

struct PipelinePlan {
  parallel::Schedule schedule;
  int rank = 0;                      // in the pp group
  std::vector<StageSpan> stages;     // per model stage
  std::vector<StageSpan> chunks;     // this rank's chunks
  std::map<std::string, std::vector<int>> holders;  // tensor name -> pp ranks holding it, ascending

  bool holds(const std::string& name) const;
  bool writes(const std::string& name) const;  // this rank is the lowest holder
};

// `names`: every parameter and buffer name of the whole model.
PipelinePlan make_pipeline_plan(const Config& cfg, parallel::Schedule schedule, int pp_rank,
                                const std::vector<std::string>& names);

// Frees the parameters of layers this rank does not hold (they become empty tensors, keeping
// their names), so a pipeline rank's memory is its stages' share of the model.
void release_unheld(model::TransformerImpl& net, const PipelinePlan& plan);

// Sums, over the pipeline ranks holding them, the gradients of parameters held by more than one.
// Construction is collective over `pp` (it creates one sub-group per distinct set of holders).
class SharedGradSync {
 public:
  SharedGradSync(const PipelinePlan& plan, const parallel::GroupPtr& pp,
                 const std::vector<std::pair<std::string, at::Tensor>>& params);
  void sync();  // after the step's backward: every holder ends with the summed .grad
  bool empty() const { return sets_.empty(); }

 private:
  struct Set {
    parallel::GroupPtr group;
    std::vector<at::Tensor> params;
  };
  std::vector<Set> sets_;
};

}  // namespace shoestring

namespace shoestring {

// The main loss of one batch computed forward-only along the pipeline (validation): every
// pipeline rank calls it and all return the loss. `act`: dtype and device of activations.
double pipeline_eval_loss(model::TransformerImpl& net, const PipelinePlan& plan, parallel::ProcessGroup& pp,
                          const at::Tensor& tokens, const at::Tensor& targets, const model::LossWeights& w,
                          const at::TensorOptions& act);

}  // namespace shoestring
