#include "data/synthetic.h"

#include <numeric>
#include <stdexcept>
#include <string>

namespace shoestring::data {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

SyntheticMarkov::SyntheticMarkov(int64_t vocab_size, int64_t branching, uint64_t seed)
    : vocab_(vocab_size), branching_(branching), seed_(seed) {
  if (vocab_size <= 0 || branching <= 0 || branching > vocab_size)
    throw std::invalid_argument("synthetic data: need 0 < branching (" + std::to_string(branching) +
                                ") <= vocab_size (" + std::to_string(vocab_size) + ")");
  successors_.resize(size_t(vocab_ * branching_));
  std::vector<int64_t> perm(static_cast<size_t>(vocab_));
  for (int64_t t = 0; t < vocab_; ++t) {
    // Partial Fisher-Yates: the first `branching` entries are distinct successors of t.
    std::iota(perm.begin(), perm.end(), 0);
    uint64_t h = splitmix64(seed_ ^ splitmix64(uint64_t(t) + 1));
    for (int64_t j = 0; j < branching_; ++j) {
      h = splitmix64(h);
      const int64_t k = j + int64_t(h % uint64_t(vocab_ - j));
      std::swap(perm[size_t(j)], perm[size_t(k)]);
      successors_[size_t(t * branching_ + j)] = perm[size_t(j)];
    }
  }
}

void SyntheticMarkov::sequence(int64_t index, int64_t length, int64_t* out) const {
  uint64_t h = splitmix64(seed_ * 0x100000001B3ull ^ splitmix64(uint64_t(index)));
  int64_t tok = int64_t(h % uint64_t(vocab_));
  for (int64_t i = 0; i < length; ++i) {
    out[i] = tok;
    h = splitmix64(h);
    tok = successors_[size_t(tok * branching_ + int64_t(h % uint64_t(branching_)))];
  }
}

}  // namespace shoestring::data
