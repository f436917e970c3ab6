#pragma once
// What global sample i is, and which samples each data-parallel rank takes. Everything here is a
// pure function of (seed, epoch, global sample index), so any rank can compute any sample, the
// same seed gives the same batches on any number of ranks, and resuming needs only a counter.
#include <cstdint>
#include <memory>
#include <string>

#include "data/synthetic.h"
#include "data/token_source.h"

namespace shoestring::data {

// A stream of samples, each `length` token ids (seq_len + 1: inputs and the shifted targets).
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Thread-safe; throws DataError on bad data (naming the file and the position).
  virtual void fill(uint64_t index, int64_t length, int64_t* out) const = 0;
  // Samples in one pass over the data; 0 for an endless stream (synthetic).
  virtual uint64_t samples_per_epoch() const { return 0; }
  virtual std::string describe() const = 0;
};

// Sample i is sequence `first_index + i` of the chain (the validation stream uses a far-away
// first_index so it never meets the training samples).
std::shared_ptr<SampleSource> synthetic_samples(std::shared_ptr<const SyntheticMarkov> chain, uint64_t first_index = 0);

// Training windows: the stream is cut into windows of seq_len + 1 tokens starting every seq_len
// tokens (consecutive windows share one token, as input i+1's first id is target i's last), from
// an offset in [0, slack] drawn per epoch so boundaries move between epochs. Each epoch visits
// every window once in a keyed pseudo-random order. Ids >= vocab_limit are a DataError: a dataset
// whose ids exceed the model's vocabulary is never silently trained on.
std::shared_ptr<SampleSource> shuffled_windows(std::shared_ptr<const TokenSource> tokens, int64_t seq_len, uint64_t seed,
                                               int64_t vocab_limit);
// Validation windows: window i is tokens [i * seq_len, i * seq_len + seq_len + 1), in order,
// wrapping around; the same fixed set at every evaluation.
std::shared_ptr<SampleSource> sequential_windows(std::shared_ptr<const TokenSource> tokens, int64_t seq_len,
                                                 int64_t vocab_limit);

// Windows a stream of n tokens holds for seq_len (0 when shorter than one window).
uint64_t window_count(uint64_t num_tokens, int64_t seq_len);

// A bijection of [0, n) keyed by `key`: a 4-round Feistel network on the next even power of two,
// cycle-walked back into range (Black & Rogaway 2002), so the order needs no O(n) table.
uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key);

// Rank r of `size` takes samples [first, first + count) of global batch b: contiguous equal
// slices, so the union over ranks is exactly the global batch and slices never overlap.
struct RankSlice {
  uint64_t first = 0, count = 0;
};
RankSlice rank_slice(uint64_t batch_index, int64_t global_batch, int dp_rank, int dp_size);

// The loader's whole state. `samples` counts global samples consumed, so it is the same on every
// rank and survives a change of the data-parallel size; epoch and position are derived from it
// and kept for people reading a checkpoint.
struct LoaderState {
  uint64_t seed = 0;
  uint64_t epoch = 0, position = 0;  // position: samples consumed within the epoch
  uint64_t samples = 0;
  std::string to_string() const;  // "seed=1234 epoch=0 position=96 samples=96"
  static LoaderState parse(const std::string& text);  // throws DataError on malformed text
};

}  // namespace shoestring::data
