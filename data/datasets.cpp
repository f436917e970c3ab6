#include "data/datasets.h"

#include <algorithm>
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

// Where data.val_fraction splits `s` (validation = [split, n)): the document boundary nearest to
// the fraction's token (ties: the earlier one, for more validation), so no document is cut in two,
// keeping both parts non-empty. Streams without documents (llm.c shards) split at the token.
uint64_t validation_split(const TokenSource& s, double fraction) {
  const uint64_t n = s.num_tokens();
  if (n < 2) throw DataError(s.describe() + ": too short to hold out data.val_fraction for validation");
  const uint64_t held = std::clamp<uint64_t>(uint64_t(std::llround(double(n) * fraction)), 1, n - 1);
  const uint64_t target = n - held;
  const auto doc = s.document_at(target);
  if (!doc) return target;
  const auto [begin, end] = *doc;
  std::vector<uint64_t> candidates;
  for (const uint64_t b : {begin, end})
    if (b > 0 && b < n) candidates.push_back(b);
  if (candidates.empty())
    throw DataError(s.describe() + ": one document only, so data.val_fraction cannot hold out whole documents (give "
                    "data.val_path, or prepare the data with more documents, e.g. --split blank-line)");
  auto dist = [&](uint64_t b) { return b > target ? b - target : target - b; };
  return *std::min_element(candidates.begin(), candidates.end(),
                           [&](uint64_t a, uint64_t b) { return dist(a) < dist(b) || (dist(a) == dist(b) && a < b); });
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
    const uint64_t n = train->num_tokens(), split = validation_split(*train, o.val_fraction);
    val = slice_tokens(train, split, n);
    train = slice_tokens(train, 0, split);
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
