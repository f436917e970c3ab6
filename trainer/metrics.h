#pragma once
// One record per optimizer step, written as a JSON line to metrics.jsonl; the progress display
// and the log read the same record.
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace shoestring {

struct StepRecord {
  int64_t step = 0;        // 1-based optimizer step just completed
  double loss = 0;         // mean over the step's micro-batches
  double lr = 0;           // learning rate used by this step
  double grad_norm = 0;    // global gradient norm before clipping
  double tokens_per_s = 0;
  double elapsed_s = 0;    // since the first step started
  // train.nonfinite=skip: this step's loss or gradient norm was not finite and it updated nothing
  // (written when true); skipped_steps counts such steps since the run (or resume) started
  // (written once non-zero, so normal runs' lines are unchanged).
  bool skipped = false;
  int64_t skipped_steps = 0;
  // train.nonfinite=rollback: this step triggered a rollback to the checkpoint of this step (the
  // next lines continue from it, so step numbers repeat); -1 = none.
  int64_t rolled_back_to = -1;
  // Mixture-of-experts models only (written when has_moe):
  bool has_moe = false;
  std::vector<double> expert_imbalance_layers;  // max / mean tokens per expert, per MoE layer
  double expert_imbalance = 0;                  // mean of the per-layer values
  double router_bias_norm = 0;                  // L2 norm of all router biases after the update
  double balance_loss = 0;                      // unweighted sequence-wise balance loss, summed over layers
  int64_t dropped_tokens = 0;                   // (token, expert) pairs dropped by the capacity factor
  // Expert parallelism only (written when has_ep, i.e. parallel.ep > 1): token rows this step's
  // forward passes sent to / received from the ep group, one row per (token, destination rank
  // holding at least one of its experts), summed over MoE layers and micro-batches; the maximum
  // over all ranks, each taken separately (the busiest rank bounds the step).
  // ep_bytes_*: the same rows' bytes as they travelled (codes and scales with
  // parallel.ep_dispatch_dtype fp8, ops/fp8_rows.h); gates and the combine are not counted.
  bool has_ep = false;
  int64_t ep_rows_sent = 0;
  int64_t ep_rows_received = 0;
  int64_t ep_bytes_sent = 0;
  int64_t ep_bytes_received = 0;
  // Multi-token prediction only (written when has_mtp):
  bool has_mtp = false;
  double mtp_loss = 0;  // mean over depths of the MTP cross entropy
  // Steps that ran a validation pass only (written when has_val):
  bool has_val = false;
  double val_loss = 0;  // mean main loss over the fixed validation batches
};

// {"step":1,"loss":5.5451...,...}: floats with 17 significant digits, so two runs can be
// compared bit for bit from their files.
std::string to_json(const StepRecord& r);

class MetricsWriter {
 public:
  // append: continue an existing file (a resumed run), else start it afresh.
  explicit MetricsWriter(const std::string& path, bool append = false);
  void write(const StepRecord& r);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace shoestring
