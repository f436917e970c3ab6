#pragma once
// The batch loader: a deterministic function of (seed, global sample index). Its whole state is
// the number of samples consumed, so resuming needs one integer.
#include <ATen/core/Tensor.h>

#include <memory>

#include "data/synthetic.h"

namespace shoestring::data {

struct Batch {
  at::Tensor inputs;   // [batch, seq] int64
  at::Tensor targets;  // [batch, seq] int64: inputs shifted left by one
};

class Loader {
 public:
  Loader(std::shared_ptr<const SyntheticMarkov> source, int64_t batch_size, int64_t seq_len);

  Batch next();
  int64_t consumed_samples() const { return consumed_; }
  void set_consumed_samples(int64_t n) { consumed_ = n; }

 private:
  std::shared_ptr<const SyntheticMarkov> source_;
  int64_t batch_, seq_len_, consumed_ = 0;
};

}  // namespace shoestring::data
