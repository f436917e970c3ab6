// The loader's guarantees: determinism, disjoint and complete coverage of each global batch on 1-4
// data-parallel ranks, resume from any position (also onto a different rank count), prefetching
// that changes nothing, and clear errors for unusable datasets. Multi-rank runs are simulated by
// constructing one loader per rank in this process.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "data/data_error.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "data_test_util.h"

using namespace shoestring::data;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSeq = 16, kGlobal = 12;

// A counting dataset (token i == i) of 3000 tokens: 187 windows of 17 tokens.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = dtest::temp_dir("loader");
    path_ = (dir_ / "count.h5").string();
    dtest::write_counting_dataset(path_, 3000);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::shared_ptr<const SampleSource> windows(uint64_t seed = 7) const {
    return shuffled_windows(open_token_files({path_}, "hdf5"), kSeq, seed, 65536);
  }
  // Loaders own a prefetch thread that points back at them, so they are not movable: held by pointer.
  std::unique_ptr<Loader> loader(int rank, int size, size_t prefetch = 0, uint64_t seed = 7) const {
    LoaderOptions o{kGlobal, kSeq, rank, size, prefetch};
    o.seed = seed;
    return std::make_unique<Loader>(windows(seed), o);
  }
  fs::path dir_;
  std::string path_;
};

using Ranks = std::vector<std::unique_ptr<Loader>>;

at::Tensor global_batch(const Ranks& ranks) {
  std::vector<at::Tensor> parts;
  for (const auto& l : ranks) parts.push_back(l->next().inputs);
  return at::cat(parts, 0);
}

TEST_F(LoaderTest, SameSeedSameBatchesOtherSeedOthers) {
  auto a = loader(0, 1), b = loader(0, 1), c = loader(0, 1, 0, 8);
  for (int i = 0; i < 5; ++i) {
    const Batch x = a->next(), y = b->next(), z = c->next();
    EXPECT_TRUE(at::equal(x.inputs, y.inputs));
    EXPECT_TRUE(at::equal(x.targets, y.targets));
    EXPECT_FALSE(at::equal(x.inputs, z.inputs));
    EXPECT_TRUE(at::equal(x.inputs.narrow(1, 1, kSeq - 1), x.targets.narrow(1, 0, kSeq - 1)));
  }
}

TEST_F(LoaderTest, EachEpochVisitsEveryWindowOnceInANewOrder) {
  const auto src = windows();
  const uint64_t n = src->samples_per_epoch();
  ASSERT_EQ(n, (3000u - 1) / kSeq);
  std::vector<int64_t> w(kSeq + 1);
  std::vector<std::vector<int64_t>> starts(2);
  for (uint64_t e = 0; e < 2; ++e) {
    for (uint64_t i = 0; i < n; ++i) {
      src->fill(e * n + i, kSeq + 1, w.data());
      for (int64_t k = 1; k <= kSeq; ++k) ASSERT_EQ(w[size_t(k)], w[0] + k);  // a contiguous window
      starts[e].push_back(w[0]);
    }
    std::set<int64_t> distinct(starts[e].begin(), starts[e].end());
    EXPECT_EQ(distinct.size(), n);
    const int64_t offset = *distinct.begin();
    EXPECT_LT(offset, kSeq);
    for (int64_t s : distinct) EXPECT_EQ((s - offset) % kSeq, 0);
  }
  EXPECT_NE(starts[0], starts[1]);
}

TEST_F(LoaderTest, RanksSplitEachGlobalBatchDisjointlyAndCompletely) {
  auto single = loader(0, 1);
  std::vector<at::Tensor> reference;
  for (int i = 0; i < 20; ++i) reference.push_back(single->next().inputs);  // crosses an epoch boundary
  for (int size : {1, 2, 3, 4}) {
    Ranks ranks;
    for (int r = 0; r < size; ++r) ranks.push_back(loader(r, size));
    for (int i = 0; i < 20; ++i) {
      std::vector<at::Tensor> parts;
      for (auto& l : ranks) {
        parts.push_back(l->next().inputs);
        EXPECT_EQ(parts.back().size(0), kGlobal / size);
      }
      EXPECT_TRUE(at::equal(at::cat(parts, 0), reference[size_t(i)])) << size << " ranks, batch " << i;
    }
    for (auto& l : ranks) EXPECT_EQ(l->consumed_samples(), 20 * kGlobal);  // a global count on every rank
  }
  EXPECT_THROW(loader(0, 5), std::invalid_argument);  // 12 samples do not split over 5 ranks
}

TEST_F(LoaderTest, ResumeFromEveryPositionContinuesTheStream) {
  constexpr int kSteps = 18;
  auto full = loader(0, 1);
  std::vector<at::Tensor> stream;
  std::vector<LoaderState> states;
  for (int i = 0; i < kSteps; ++i) {
    states.push_back(full->state());
    stream.push_back(full->next().inputs);
  }
  EXPECT_EQ(states[17].epoch, 1u);  // 17 * 12 samples > 187 windows
  for (int p = 0; p < kSteps; ++p) {
    auto resumed = loader(0, 1, p % 2 ? 3 : 0);  // with and without prefetching
    resumed->restore(LoaderState::parse(states[size_t(p)].to_string()));
    for (int i = p; i < kSteps; ++i) ASSERT_TRUE(at::equal(resumed->next().inputs, stream[size_t(i)])) << p << " " << i;
  }
}

TEST_F(LoaderTest, ResumeOnADifferentRankCountContinuesTheGlobalStream) {
  auto full = loader(0, 1);
  std::vector<at::Tensor> stream;
  for (int i = 0; i < 12; ++i) stream.push_back(full->next().inputs);
  // 2 ranks run 5 batches and checkpoint; 3 ranks resume; then 4 ranks resume from batch 9.
  Ranks two, three, four;
  for (int r = 0; r < 2; ++r) two.push_back(loader(r, 2));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(at::equal(global_batch(two), stream[size_t(i)]));
  const LoaderState saved = two[0]->state();
  EXPECT_EQ(saved.to_string(), two[1]->state().to_string());
  for (int r = 0; r < 3; ++r) {
    three.push_back(loader(r, 3, 2));
    three.back()->restore(saved);
  }
  for (int i = 5; i < 9; ++i) EXPECT_TRUE(at::equal(global_batch(three), stream[size_t(i)]));
  for (int r = 0; r < 4; ++r) {
    four.push_back(loader(r, 4));
    four.back()->restore(three[size_t(r % 3)]->state());
  }
  for (int i = 9; i < 12; ++i) EXPECT_TRUE(at::equal(global_batch(four), stream[size_t(i)]));
  auto other_seed = loader(0, 1, 0, 99);
  EXPECT_THROW(other_seed->restore(saved), DataError);
  EXPECT_THROW(LoaderState::parse("seed=1 epoch=x"), DataError);
}

TEST_F(LoaderTest, PipelineStagesReadOnlyWhatTheyNeed) {
  LoaderOptions o{kGlobal, kSeq};
  o.fields = Fields::None;
  Loader middle(windows(), o);
  const Batch nothing = middle.next();
  EXPECT_FALSE(nothing.inputs.defined());
  EXPECT_FALSE(nothing.targets.defined());
  EXPECT_EQ(middle.consumed_samples(), kGlobal);
  o.fields = Fields::TargetsOnly;
  Loader last(windows(), o);
  auto both = loader(0, 1);
  const Batch t = last.next(), b = both->next();
  EXPECT_FALSE(t.inputs.defined());
  EXPECT_TRUE(at::equal(t.targets, b.targets));
}

TEST_F(LoaderTest, PrefetchThreadReportsBadDataAfterTheGoodBatches) {
  // Ids above the model's vocabulary (here 100) are refused with the position, never trained on.
  LoaderOptions o{kGlobal, kSeq};
  o.prefetch = 2;
  Loader l(shuffled_windows(open_token_files({path_}, "hdf5"), kSeq, 7, 100), o);
  try {
    for (int i = 0; i < 10; ++i) l.next();
    FAIL() << "ids >= 100 must be refused";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("is outside the model's vocabulary (model.vocab_size = 100)"), std::string::npos)
        << e.what();
  }
}

TEST(PermuteIndex, IsABijection) {
  for (uint64_t n : {1ull, 2ull, 3ull, 17ull, 64ull, 1000ull}) {
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) seen.insert(permute_index(i, n, 42));
    EXPECT_EQ(seen.size(), n);
    EXPECT_LT(*seen.rbegin(), n);
  }
}

TEST_F(LoaderTest, DatasetsSplitValidationAndRefuseUnusableData) {
  DatasetOptions o;
  o.source = "hdf5";
  o.paths = {path_};
  o.tokenizer = "byte";
  o.seq_len = kSeq;
  o.model_vocab = 70000;
  o.global_batch = kGlobal;
  auto err = [&](const DatasetOptions& opts) {
    try {
      open_datasets(opts);
    } catch (const DataError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(err(o).find("made with tokenizer test (vocab 65536) but data.tokenizer is byte (vocab 257)"), std::string::npos) << err(o);

  const std::string bytes = (dir_ / "bytes.h5").string();
  dtest::write_byte_dataset(bytes, {std::string(2000, 'a'), std::string(1000, 'b')});
  o.paths = {bytes};
  o.val_fraction = 0.1;
  const Datasets d = open_datasets(o);  // 3002 tokens: the second document (1001 tokens) held out
  ASSERT_TRUE(d.val);
  EXPECT_EQ(d.train->samples_per_epoch(), window_count(2001, kSeq));
  EXPECT_EQ(d.val->samples_per_epoch(), window_count(1001, kSeq));
  std::vector<int64_t> w(kSeq + 1);
  d.val->fill(0, kSeq + 1, w.data());
  EXPECT_EQ(w[0], 'b');
  d.val->fill(d.val->samples_per_epoch() - 1, kSeq + 1, w.data());
  EXPECT_EQ(w[0], 'b');
  d.val->fill(0, kSeq + 1, w.data());

  o.model_vocab = 200;
  EXPECT_NE(err(o).find("tokenizer vocabulary 257 exceeds model.vocab_size 200"), std::string::npos) << err(o);
  o.model_vocab = 257;
  o.global_batch = 1000;
  EXPECT_NE(err(o).find("fewer than one batch (1000 sequences)"), std::string::npos) << err(o);
  o.global_batch = kGlobal;
  const std::string short_last = (dir_ / "short_last.h5").string();
  dtest::write_byte_dataset(short_last, {std::string(2000, 'a'), std::string(10, 'c')});
  o.paths = {short_last};
  o.val_fraction = 0.001;
  EXPECT_NE(err(o).find("validation data is shorter than one window"), std::string::npos) << err(o);
  o.val_fraction = 0;
  o.paths = {(dir_ / "nope-*.h5").string()};
  EXPECT_NE(err(o).find("nope-*.h5: the pattern matches no file"), std::string::npos) << err(o);
}

// data.val_fraction holds out whole documents: the split is the document boundary (a file's ends
// included) nearest to the fraction's token, ties to the earlier one, and both parts stay non-empty.
TEST_F(LoaderTest, ValidationFractionSplitsAtTheNearestDocumentBoundary) {
  // Documents of 100, 100, 100 tokens in one file and 50, 150 in the next (each with its end id):
  // boundaries at 0, 100, 200, 300 (the file boundary), 350, 500.
  const std::string a = (dir_ / "a.h5").string(), b = (dir_ / "b.h5").string();
  dtest::write_byte_dataset(a, {std::string(99, 'a'), std::string(99, 'b'), std::string(99, 'c')});
  dtest::write_byte_dataset(b, {std::string(49, 'd'), std::string(149, 'e')});
  DatasetOptions o;
  o.source = "hdf5";
  o.paths = {a, b};
  o.seq_len = kSeq;
  o.model_vocab = 257;
  o.global_batch = 1;
  auto split = [&](double fraction) {
    o.val_fraction = fraction;
    const Datasets d = open_datasets(o);
    std::vector<int64_t> w(kSeq + 1);
    d.val->fill(0, kSeq + 1, w.data());
    const auto at = d.description.find("validation tokens [");
    return std::make_pair(d.description.substr(at + 19, d.description.find(')', at) - at - 19), char(w[0]));
  };
  EXPECT_EQ(split(0.25), std::make_pair(std::string("350, 500"), 'e'));  // 375 -> 350
  EXPECT_EQ(split(0.5), std::make_pair(std::string("200, 500"), 'c'));   // 250: 200 and 300 tie
  EXPECT_EQ(split(0.45), std::make_pair(std::string("300, 500"), 'd'));  // 275 -> 300, between files
  EXPECT_EQ(split(0.001), std::make_pair(std::string("350, 500"), 'e')); // 499: never empty
  EXPECT_EQ(split(0.99), std::make_pair(std::string("100, 500"), 'b'));  // 5: train keeps a document

  const std::string one = (dir_ / "one.h5").string();
  dtest::write_byte_dataset(one, {std::string(400, 'x')});
  o.paths = {one};
  o.val_fraction = 0.1;
  std::string e = "(no error)";
  try {
    open_datasets(o);
  } catch (const DataError& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("one.h5, 401 tokens: one document only, so data.val_fraction cannot hold out whole documents"),
            std::string::npos) << e;
}

}  // namespace
