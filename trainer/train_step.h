#pragma once
// The parts of one optimizer step, in the order train() calls them: read the micro-batches, run
// the forwards and backwards and reduce the gradients and the step's statistics, update the
// weights and router biases, and (after the step's clock stops) evaluate.
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/loader.h"
#include "parallel/pipeline_executor.h"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/model/transformer.h"
#include "trainer/train_setup.h"

namespace shoestring {

// Schedules of the MoE/MTP hyper-parameters (DeepSeek-V3 §4.2: gamma 0.001 then 0 for the last
// part of training; MTP weight 0.3 then 0.1). `step` is 1-based.
double bias_gamma_at(const TrainConfig& t, int64_t step);
double mtp_lambda_at(const TrainConfig& t, int64_t step);

// Every pipeline rank reads the step's micro-batches (the same ones, from its dp slice): the
// first stage needs the inputs, the last the targets, and the loader state stays the same.
std::vector<data::Batch> read_batches(TrainSetup& s);

// What forward_backward() sums over all ranks besides the other losses it sets in StepRecord.
struct StepTotals {
  double loss = 0;  // mean main loss over all ranks' micro-batches
  // The global expert load of every router of the model (token counts, as float64).
  std::vector<at::Tensor> load;
};

// Runs the step's schedule over `batches` and reduces the gradients; then sums the step's
// statistics over all ranks (the losses besides the main one go to `r`). `poison` (a test-only
// fault) turns micro-batch 0's loss into NaN. With `traces`, appends the schedule's trace.
StepTotals forward_backward(TrainSetup& s, const Config& cfg, const std::vector<data::Batch>& batches,
                            const model::LossWeights& weights, bool poison, StepRecord& r,
                            std::vector<std::vector<parallel::ExecutedAction>>* traces);

// The global norm of the reduced gradient (the same on every rank).
double global_grad_norm(TrainSetup& s);

// Clipping, the AdamW step, ZeRO-1's gather and the routers' bias update of step `step` (1-based).
void apply_update(TrainSetup& s, const Config& cfg, int64_t step, double lr, double grad_norm,
                  const std::vector<at::Tensor>& load, StepRecord& r);

// parallel.ep > 1: the step's dispatch traffic, the maximum over all ranks (collective).
void record_ep_traffic(TrainSetup& s, StepRecord& r);

// Mean main loss over the fixed validation batches (collective over dp and pp).
double validation_loss(TrainSetup& s, const Config& cfg, const model::LossWeights& weights);

}  // namespace shoestring
