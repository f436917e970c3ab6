#include "data/loader.h"

#include <ATen/ATen.h>

namespace shoestring::data {

Loader::Loader(std::shared_ptr<const SyntheticMarkov> source, int64_t batch_size, int64_t seq_len)
    : source_(std::move(source)), batch_(batch_size), seq_len_(seq_len) {}

Batch Loader::next() {
  at::Tensor seqs = at::empty({batch_, seq_len_ + 1}, at::kLong);
  int64_t* p = seqs.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch_; ++b) source_->sequence(consumed_ + b, seq_len_ + 1, p + b * (seq_len_ + 1));
  consumed_ += batch_;
  return {seqs.narrow(1, 0, seq_len_).contiguous(), seqs.narrow(1, 1, seq_len_).contiguous()};
}

}  // namespace shoestring::data
