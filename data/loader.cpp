#include "data/loader.h"

#include <ATen/ATen.h>

#include <cstring>
#include <stdexcept>

#include "data/data_error.h"

namespace shoestring::data {

Loader::Loader(std::shared_ptr<const SampleSource> source, const LoaderOptions& opts)
    : source_(std::move(source)), opts_(opts) {
  rank_slice(0, opts_.global_batch, opts_.dp_rank, opts_.dp_size);  // validates the geometry
  if (opts_.seq_len <= 0) throw std::invalid_argument("Loader: seq_len must be positive");
  if (opts_.prefetch > 0)
    prefetch_ = std::make_unique<Prefetcher>([this](uint64_t b, std::vector<int64_t>& out) { produce(b, out); },
                                             opts_.prefetch, batch_);
}

Loader::Loader(std::shared_ptr<const SyntheticMarkov> source, int64_t batch_size, int64_t seq_len)
    : Loader(synthetic_samples(std::move(source)), LoaderOptions{batch_size, seq_len}) {}

Loader::~Loader() = default;  // stops the prefetch thread before the source goes away

void Loader::produce(uint64_t batch_index, std::vector<int64_t>& out) const {
  const RankSlice s = rank_slice(batch_index, opts_.global_batch, opts_.dp_rank, opts_.dp_size);
  const int64_t len = opts_.seq_len + 1;
  out.resize(s.count * uint64_t(len));
  if (opts_.fields == Fields::None) return;
  for (uint64_t i = 0; i < s.count; ++i) source_->fill(s.first + i, len, out.data() + i * uint64_t(len));
}

Batch Loader::next() {
  std::vector<int64_t> buf;
  if (prefetch_) buf = prefetch_->next();
  else produce(batch_, buf);
  ++batch_;
  if (opts_.fields == Fields::None) return {};
  const int64_t rows = opts_.global_batch / opts_.dp_size, len = opts_.seq_len + 1;
  at::Tensor seqs = at::empty({rows, len}, at::kLong);
  std::memcpy(seqs.data_ptr<int64_t>(), buf.data(), buf.size() * sizeof(int64_t));
  Batch b;
  if (opts_.fields != Fields::TargetsOnly) b.inputs = seqs.narrow(1, 0, opts_.seq_len).contiguous();
  if (opts_.fields != Fields::InputsOnly) b.targets = seqs.narrow(1, 1, opts_.seq_len).contiguous();
  return b;
}

void Loader::set_consumed_samples(int64_t n) {
  if (n < 0 || n % opts_.global_batch != 0)
    throw std::invalid_argument("Loader: consumed samples (" + std::to_string(n) + ") must be a multiple of the micro-batch over all data-parallel ranks (train.micro_batch_size x dp = " +
                                std::to_string(opts_.global_batch) + ")");
  batch_ = uint64_t(n / opts_.global_batch);
  if (prefetch_) prefetch_->restart(batch_);
}

LoaderState Loader::state() const {
  LoaderState s;
  s.seed = opts_.seed;
  s.samples = uint64_t(consumed_samples());
  const uint64_t per_epoch = source_->samples_per_epoch();
  s.epoch = per_epoch ? s.samples / per_epoch : 0;
  s.position = per_epoch ? s.samples % per_epoch : s.samples;
  return s;
}

void Loader::restore(const LoaderState& s) {
  if (s.seed != opts_.seed)
    throw DataError("loader state: saved with seed " + std::to_string(s.seed) + " but this run uses seed " +
                    std::to_string(opts_.seed) + "; the sample order would differ");
  set_consumed_samples(int64_t(s.samples));
}

}  // namespace shoestring::data
