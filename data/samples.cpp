#include "data/samples.h"

#include <bit>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "data/data_error.h"

namespace shoestring::data {

namespace {

class Synthetic final : public SampleSource {
 public:
  Synthetic(std::shared_ptr<const SyntheticMarkov> chain, uint64_t first) : chain_(std::move(chain)), first_(first) {}
  void fill(uint64_t index, int64_t length, int64_t* out) const override {
    chain_->sequence(int64_t(first_ + index), length, out);
  }
  std::string describe() const override {
    return "synthetic Markov chain (vocab " + std::to_string(chain_->vocab_size()) + ", branching " +
           std::to_string(chain_->branching()) + ")";
  }

 private:
  std::shared_ptr<const SyntheticMarkov> chain_;
  uint64_t first_;
};

// Shared by both window kinds: read, widen, check against the vocabulary.
class Windows : public SampleSource {
 public:
  Windows(std::shared_ptr<const TokenSource> tokens, int64_t seq_len, int64_t vocab_limit)
      : tokens_(std::move(tokens)), seq_len_(seq_len), vocab_(vocab_limit), n_(window_count(tokens_->num_tokens(), seq_len)) {
    if (n_ == 0)
      throw DataError(tokens_->describe() + ": shorter than one window of train.seq_len + 1 = " +
                      std::to_string(seq_len + 1) + " tokens");
  }
  uint64_t samples_per_epoch() const override { return n_; }
  std::string describe() const override { return tokens_->describe(); }

 protected:
  void read_window(uint64_t index, uint64_t start, int64_t length, int64_t* out) const {
    if (length != seq_len_ + 1) throw std::invalid_argument("window length must be seq_len + 1");
    std::vector<uint32_t> ids(static_cast<size_t>(length));
    tokens_->read(start, size_t(length), ids.data());
    for (int64_t k = 0; k < length; ++k) {
      if (int64_t(ids[size_t(k)]) >= vocab_)
        throw DataError(tokens_->describe() + ": token id " + std::to_string(ids[size_t(k)]) + " at position " +
                        std::to_string(start + uint64_t(k)) + " (sample " + std::to_string(index) +
                        ") is outside the model's vocabulary (model.vocab_size = " + std::to_string(vocab_) + ")");
      out[k] = ids[size_t(k)];
    }
  }
  std::shared_ptr<const TokenSource> tokens_;
  int64_t seq_len_, vocab_;
  uint64_t n_;
};

class Shuffled final : public Windows {
 public:
  Shuffled(std::shared_ptr<const TokenSource> tokens, int64_t seq_len, uint64_t seed, int64_t vocab_limit)
      : Windows(std::move(tokens), seq_len, vocab_limit), seed_(seed) {
    slack_ = tokens_->num_tokens() - 1 - n_ * uint64_t(seq_len_);
  }
  void fill(uint64_t index, int64_t length, int64_t* out) const override {
    const uint64_t epoch = index / n_, j = index % n_;
    const uint64_t key = splitmix64(splitmix64(seed_ ^ 0x5348554646ull) + epoch);  // "SHUFF"
    const uint64_t offset = slack_ == 0 ? 0 : splitmix64(key) % (slack_ + 1);
    read_window(index, offset + permute_index(j, n_, key) * uint64_t(seq_len_), length, out);
  }

 private:
  uint64_t seed_, slack_ = 0;
};

class Sequential final : public Windows {
 public:
  using Windows::Windows;
  void fill(uint64_t index, int64_t length, int64_t* out) const override {
    read_window(index, (index % n_) * uint64_t(seq_len_), length, out);
  }
};

}  // namespace

std::shared_ptr<SampleSource> synthetic_samples(std::shared_ptr<const SyntheticMarkov> chain, uint64_t first_index) {
  return std::make_shared<Synthetic>(std::move(chain), first_index);
}

std::shared_ptr<SampleSource> shuffled_windows(std::shared_ptr<const TokenSource> tokens, int64_t seq_len, uint64_t seed,
                                               int64_t vocab_limit) {
  return std::make_shared<Shuffled>(std::move(tokens), seq_len, seed, vocab_limit);
}

std::shared_ptr<SampleSource> sequential_windows(std::shared_ptr<const TokenSource> tokens, int64_t seq_len,
                                                 int64_t vocab_limit) {
  return std::make_shared<Sequential>(std::move(tokens), seq_len, vocab_limit);
}

uint64_t window_count(uint64_t num_tokens, int64_t seq_len) {
  return num_tokens == 0 || seq_len <= 0 ? 0 : (num_tokens - 1) / uint64_t(seq_len);
}

uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key) {
  if (n <= 1) return 0;
  int bits = std::bit_width(n - 1);
  bits += bits & 1;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t(1) << half) - 1;
  uint64_t x = i;
  do {  // at most ~4 walks on average: the domain is < 4n
    uint64_t l = x >> half, r = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = splitmix64(key ^ (round << 56) ^ r) & mask;
      const uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    x = (l << half) | r;
  } while (x >= n);
  return x;
}

RankSlice rank_slice(uint64_t batch_index, int64_t global_batch, int dp_rank, int dp_size) {
  if (dp_size <= 0 || dp_rank < 0 || dp_rank >= dp_size || global_batch <= 0 || global_batch % dp_size != 0)
    throw std::invalid_argument("rank_slice: need 0 <= dp_rank < dp_size and dp_size dividing the global batch (" +
                                std::to_string(global_batch) + " over " + std::to_string(dp_size) + " ranks)");
  const uint64_t per = uint64_t(global_batch / dp_size);
  return {batch_index * uint64_t(global_batch) + uint64_t(dp_rank) * per, per};
}

std::string LoaderState::to_string() const {
  return "seed=" + std::to_string(seed) + " epoch=" + std::to_string(epoch) + " position=" + std::to_string(position) +
         " samples=" + std::to_string(samples);
}

LoaderState LoaderState::parse(const std::string& text) {
  LoaderState s;
  std::istringstream in(text);
  int seen = 0;
  for (std::string item; in >> item;) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw DataError("loader state: expected key=value, got '" + item + "'");
    const std::string key = item.substr(0, eq);
    uint64_t v = 0;
    try {
      size_t used = 0;
      v = std::stoull(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw DataError("loader state: '" + item + "' is not a whole number");
    }
    if (key == "seed") s.seed = v, seen |= 1;
    else if (key == "epoch") s.epoch = v, seen |= 2;
    else if (key == "position") s.position = v, seen |= 4;
    else if (key == "samples") s.samples = v, seen |= 8;
    else throw DataError("loader state: unknown key '" + key + "'");
  }
  if (seen != 15) throw DataError("loader state: need seed, epoch, position and samples, got '" + text + "'");
  return s;
}

}  // namespace shoestring::data
