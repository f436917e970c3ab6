#pragma once
// The training loop: one code path for one process and for data-parallel ranks (the mesh, the
// gradient reducer and ZeRO-1 are applied from outside the model).
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/datasets.h"
#include "parallel/grad_reducer.h"
#include "parallel/pipeline_executor.h"
#include "parallel/world.h"
#include "trainer/config.h"

namespace shoestring {

struct TrainSummary {
  int64_t steps = 0;
  double first_loss = 0, final_loss = 0;
  std::string run_dir;
  std::vector<double> step_seconds;  // wall time of each optimizer step
  std::vector<double> losses;         // loss of each step (mean over all ranks' micro-batches)
  int64_t tokens_per_step = 0;        // over all ranks
  int64_t accum_steps = 0;            // micro-batches per rank per step
  int64_t optimizer_state_bytes = 0;  // AdamW moments held by this rank
  int64_t peak_rss_bytes = 0;         // this process's peak resident memory
  // On CUDA: the caching allocator's peak of bytes handed to tensors on this rank's GPU (what
  // torch.cuda.max_memory_allocated reports); 0 on CPU.
  int64_t peak_device_bytes = 0;
  std::string device;  // where it trained: "cpu" or "cuda:N"
  int threads = 0;
  std::vector<parallel::BucketTrace> trace;  // gradient buckets of the last step
  // With TrainOptions::keep_parameters; with parallel.ep > 1 routed experts are this rank's shard.
  std::vector<std::pair<std::string, at::Tensor>> parameters;
  std::vector<at::Tensor> router_biases;  // likewise, per MoE layer this rank holds
  // With TrainOptions::keep_pipeline_traces, per step: when each compute action of the pipeline
  // schedule ran on this rank.
  std::vector<std::vector<parallel::ExecutedAction>> pipeline_traces;
  int64_t resumed_from_step = 0;          // 0: a fresh start
  std::string last_checkpoint;            // directory of the last checkpoint saved ("" if none)
  std::vector<double> save_blocked_s;     // per save: seconds the training loop was blocked
  int64_t rollbacks = 0;                  // train.nonfinite=rollback: times rolled back
  bool preempted = false;                 // stopped by SIGTERM/SIGUSR1 after saving (exit code 42)
  int64_t skipped_steps = 0;              // train.nonfinite=skip: steps with a non-finite loss or gradient norm
};

struct TrainOptions {
  bool keep_parameters = false;  // return the final parameters (tests compare layouts)
  bool keep_pipeline_traces = false;  // return every step's pipeline trace (bench pipeline)
  // --resume: "" (fresh start), "auto" (the newest valid checkpoint in checkpoint.dir, if any) or
  // a checkpoint directory. Resuming into a run directory that holds metrics.jsonl continues it.
  std::string resume;
  std::string code_version = "unknown";  // recorded in checkpoints
  // ckpt convert: load `resume` into this config's layout, save it as a checkpoint under this
  // directory (same step), and return without training or reading data.
  std::string convert_to;
};

// A checkpoint that cannot be used throws ckpt::CheckpointError (exit code 2).
// Runtime failures (NaN loss, unusable device, unwritable run dir) throw std::runtime_error with
// a one-line message; main() turns it into exit code 1.
// Multi-rank runs: every rank calls it; rank 0 writes metrics.jsonl and train.log, the others
// rank-N.log in the same run directory.
TrainSummary train(const Config& cfg, const parallel::World& world, const TrainOptions& options = {});

// The data.* / train.* settings the data pipeline needs, as data/'s plain options.
data::DatasetOptions dataset_options(const Config& cfg, int dp = 1);

// Where checkpoints go: checkpoint.dir, or <run dir>/checkpoints.
std::string checkpoint_root(const Config& cfg, const std::string& run_dir);

// The run directory this config resolves to (log.run_dir, or runs/<name>-<UTC time>).
std::string resolve_run_dir(const Config& cfg);
// The current UTC time, by default as 20261126-071503 (run and job directory names).
std::string utc_stamp(const char* format = "%Y%m%d-%H%M%S");

}  // namespace shoestring
