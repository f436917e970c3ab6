#pragma once
// The batch loader: this rank's slice of each global batch, as tensors. Sample i of the stream is
// a pure function of (seed, epoch, i) (data/samples.h), so the whole state is the count of global
// samples consumed: resuming -- on the same or a different number of data-parallel ranks --
// continues the same sequence of global batches.
#include <ATen/core/Tensor.h>

#include <memory>

#include "data/prefetch.h"
#include "data/samples.h"

namespace shoestring::data {

struct Batch {
  at::Tensor inputs;   // [batch, seq] int64 (undefined when not wanted)
  at::Tensor targets;  // [batch, seq] int64: inputs shifted left by one (undefined when not wanted)
};

// What a pipeline stage needs: the first stage the inputs, the last the targets, a middle stage
// nothing (its loader only keeps count, reading no tokens).
enum class Fields { Both, InputsOnly, TargetsOnly, None };

struct LoaderOptions {
  int64_t global_batch = 1;  // samples per global (micro-)batch, summed over the data-parallel ranks
  int64_t seq_len = 1;
  int dp_rank = 0, dp_size = 1;
  size_t prefetch = 0;  // batches prepared ahead on a background thread; 0 = read in next()
  Fields fields = Fields::Both;
  uint64_t seed = 0;    // recorded in the state, checked on restore
};

class Loader {
 public:
  Loader(std::shared_ptr<const SampleSource> source, const LoaderOptions& opts);
  // One rank, no prefetch, over the synthetic chain.
  Loader(std::shared_ptr<const SyntheticMarkov> source, int64_t batch_size, int64_t seq_len);
  ~Loader();

  Batch next();
  int64_t consumed_samples() const { return int64_t(batch_ * uint64_t(opts_.global_batch)); }  // global
  // n must be a multiple of the global batch.
  void set_consumed_samples(int64_t n);
  LoaderState state() const;
  void restore(const LoaderState& s);  // throws DataError when the seed differs
  const LoaderOptions& options() const { return opts_; }
  double wait_seconds() const { return prefetch_ ? prefetch_->wait_seconds() : 0.0; }

 private:
  void produce(uint64_t batch_index, std::vector<int64_t>& out) const;
  std::shared_ptr<const SampleSource> source_;
  LoaderOptions opts_;
  uint64_t batch_ = 0;  // global batches consumed
  std::unique_ptr<Prefetcher> prefetch_;
};

}  // namespace shoestring::data
