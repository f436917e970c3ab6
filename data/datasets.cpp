#include "data/datasets.h"

#include <cmath>
#include <cstdio>

#include "data/data_error.h"

namespace shoestring::data {

namespace {

// The ids of an hdf5 dataset are only meaningful with the tokenizer that made them, and must fit
// the model's embedding.
void check_tokenizer(const TokenSource& tokens, const DatasetOptions& o, const std::string& key) {
  const TokenizerIdentity have = tokens.tokenizer();
  const std::string where = tokens.describe();
  if (o.source == "hdf5") {
    const TokenizerIdentity want = make_tokenizer(o.tokenizer)->identity();
    if (!(have == want))
      throw DataError(where + ": made with tokenizer " + describe(have) + " but data.tokenizer is " + describe(want) +
                      " (" + key + ")");
  }
  if (have.vocab_size > o.model_vocab)
    throw DataError(where + ": tokenizer vocabulary " + std::to_string(have.vocab_size) + " exceeds model.vocab_size " +
                    std::to_string(o.model_vocab));
}

}  // namespace

Datasets open_datasets(const DatasetOptions& o) {
  Datasets d;
  if (o.source == "synthetic") {
    auto chain = std::make_shared<SyntheticMarkov>(o.model_vocab, o.synthetic_branching, o.seed);
    d.train = synthetic_samples(chain);
    d.val = synthetic_samples(chain, uint64_t(1) << 40);  // far from any training index
    char buf[128];
    std::snprintf(buf, sizeof buf, "synthetic (branching %lld: loss floor %.4f)",
                  static_cast<long long>(o.synthetic_branching), std::log(double(o.synthetic_branching)));
    d.description = buf;
    return d;
  }
  if (o.source != "hdf5" && o.source != "llmc") throw DataError("data.source: unknown source '" + o.source + "'");
  if (o.paths.empty()) throw DataError("data.path: no dataset given for data.source: " + o.source);
  std::shared_ptr<const TokenSource> train = open_token_files(o.paths, o.source), val;
  check_tokenizer(*train, o, "data.path");
  if (!o.val_paths.empty()) {
    val = open_token_files(o.val_paths, o.source);
    check_tokenizer(*val, o, "data.val_path");
  } else if (o.val_fraction > 0) {
    const uint64_t n = train->num_tokens();
    const auto held = uint64_t(std::llround(double(n) * o.val_fraction));
    val = slice_tokens(train, n - held, n);
    train = slice_tokens(train, 0, n - held);
  }
  const uint64_t windows = window_count(train->num_tokens(), o.seq_len);
  if (windows < uint64_t(o.global_batch))
    throw DataError(train->describe() + ": holds " + std::to_string(windows) + " windows of train.seq_len + 1 = " +
                    std::to_string(o.seq_len + 1) + " tokens, fewer than one batch (" + std::to_string(o.global_batch) +
                    " sequences)");
  d.train = shuffled_windows(train, o.seq_len, o.seed, o.model_vocab);
  if (val) {
    if (window_count(val->num_tokens(), o.seq_len) == 0)
      throw DataError(val->describe() + ": the validation data is shorter than one window of " +
                      std::to_string(o.seq_len + 1) + " tokens (raise data.val_fraction or give data.val_path)");
    d.val = sequential_windows(val, o.seq_len, o.model_vocab);
  }
  d.description = o.source + " " + train->describe() + ", tokenizer " + describe(train->tokenizer());
  if (val) d.description += "; validation " + val->describe();
  return d;
}

}  // namespace shoestring::data
