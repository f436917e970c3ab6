#pragma once
// Data-parallel gradient reduction (DDP / ZeRO-1): parameters are packed, in reverse
// registration order (roughly the order backward produces their gradients), into buckets of
// about `bucket_mb`. Each parameter's .grad is a view of its bucket's flat buffer, so backward
// accumulates straight into the buffer and no gradient exists twice. An autograd post-hook on
// each gradient accumulator marks its parameter ready; when a whole bucket is ready its
// all-reduce (or, with ZeRO-1, reduce-scatter) is issued at once, so communication overlaps the
// rest of the backward pass. Buckets are issued in a fixed order (the same on every rank), as
// collectives must be.
//
// With ZeRO-1 each bucket is split into group-size equal shards; this rank receives only the
// reduced gradient of its shard, updates the parameter elements inside it (owned()), and
// all_gather_params() brings every rank the whole updated parameters, gathering through the
// gradient buffer (whose contents are spent by then).
#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "parallel/process_group.h"

namespace torch::autograd {
struct Node;
}

namespace shoestring::parallel {

struct ReducedParam {
  std::string name;
  at::Tensor param;  // a contiguous leaf that requires grad
  int group = 0;     // index into the reducer's groups: over which ranks its gradient is reduced
};

struct ReducerOptions {
  double bucket_mb = 25;
  bool zero1 = false;
  double grad_scale = 1.0;  // applied before the sum: 1/dp gives the mean over data-parallel ranks
};

// Elements of one parameter whose optimizer update is this rank's: with ZeRO-1 the part of the
// parameter inside this rank's shard of its bucket, else the whole parameter. The views are fixed
// for the reducer's lifetime, so optimizer state can be keyed on them.
struct OwnedSlice {
  size_t param = 0;    // index into the reducer's params
  int64_t offset = 0;  // first element within the flattened parameter
  at::Tensor value;    // 1-D view of the parameter's elements
  at::Tensor grad;     // 1-D view of their reduced gradient, valid after finish()
};

// When each bucket's reduction happened during the last synchronising backward (steady-clock
// seconds): the evidence that communication overlaps the backward pass.
struct BucketTrace {
  int64_t bytes = 0;
  double ready_at = 0, issued_at = 0, started_at = 0, done_at = 0;
};

class GradReducer {
 public:
  GradReducer(std::vector<ReducedParam> params, std::vector<GroupPtr> groups, const ReducerOptions& opts);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Call at the start of each step: zeroes the gradient buffers and (re)points every
  // parameter's .grad at its slice of them.
  void zero_grad();
  // Call before each micro-batch's backward; only the last micro-batch of a step communicates
  // (gradient accumulation adds the earlier ones locally first).
  void prepare_backward(bool last);
  // After the last backward: reduces what the hooks did not (parameters unused in the last
  // micro-batch; never-used ones count as zero), waits for everything and publishes the reduced
  // gradients: in owned() always, and in param.grad() too without ZeRO-1 (with ZeRO-1 the rest
  // of param.grad() is this rank's unreduced sum, and after all_gather_params() it is spent).
  void finish();

  const std::vector<OwnedSlice>& owned() const { return owned_; }
  const std::vector<ReducedParam>& params() const { return params_; }
  // Squared L2 norm of the whole reduced gradient, every element counted once over all ranks:
  // summed in float64 here, then all-reduced over `norm_group` (which must span every rank
  // holding a distinct part: the dp group).
  // `skip[i]`, when given, leaves parameter i out here (pipeline parallelism: a parameter held by
  // several pipeline ranks is counted on one of them).
  double global_grad_sq(ProcessGroup& norm_group, const std::vector<char>& skip = {}) const;
  void scale_grads(double s);  // the owned gradients (clipping)
  // ZeRO-1: after the optimizer updated owned(), every rank gets the whole updated parameters.
  void all_gather_params();

  bool zero1() const { return opts_.zero1; }
  size_t num_buckets() const { return buckets_.size(); }
  const std::vector<BucketTrace>& trace() const { return trace_; }
  double backward_hooks_done_at() const { return last_hook_at_; }  // when the last hook fired

 private:
  struct Bucket {
    int group = 0;
    std::vector<size_t> params;  // indices into params_
    std::vector<int64_t> offsets;  // each param's first element in `flat`
    at::Tensor flat;   // gradients (padded to a multiple of the group size with ZeRO-1)
    at::Tensor shard;  // ZeRO-1: this rank's block of `flat`, where its reduced gradient lands
    int pending = 0;
    bool issued = false;
    WorkPtr work;
  };
  class Hook;
  void on_grad_ready(size_t param);
  void adopt_grad(Bucket& b, size_t slot);
  at::Tensor grad_view(size_t param) const;
  void issue_ready_buckets();
  void issue(size_t bucket);

  std::vector<ReducedParam> params_;
  std::vector<GroupPtr> groups_;
  ReducerOptions opts_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;  // param -> (bucket, slot in bucket)
  std::vector<char> ready_;
  std::vector<OwnedSlice> owned_;
  std::vector<BucketTrace> trace_;
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;  // accumulator, key
  size_t next_issue_ = 0;
  bool syncing_ = false;
  double last_hook_at_ = 0;
  std::mutex mu_;
};

}  // namespace shoestring::parallel
