#pragma once
// A seeded random Markov chain over the vocabulary: each token has `branching` distinct successors
// chosen uniformly, so the best achievable next-token loss is exactly ln(branching). Training on
// it shows whether the model and optimiser learn, against a known floor.
#include <cstdint>
#include <vector>

namespace shoestring::data {

class SyntheticMarkov {
 public:
  SyntheticMarkov(int64_t vocab_size, int64_t branching, uint64_t seed);

  // Writes `length` tokens of sequence number `index` (any index, any order: a pure function of
  // (seed, index), so any rank can produce any sample and resume needs only a counter).
  void sequence(int64_t index, int64_t length, int64_t* out) const;

  int64_t vocab_size() const { return vocab_; }
  int64_t branching() const { return branching_; }

 private:
  int64_t vocab_, branching_;
  uint64_t seed_;
  std::vector<int64_t> successors_;  // [vocab, branching]
};

// SplitMix64 (Steele et al. 2014): a stateless, well-mixed hash used as a counter-based RNG.
uint64_t splitmix64(uint64_t x);

}  // namespace shoestring::data
