#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <set>

#include "data/loader.h"
#include "data/synthetic.h"

using namespace shoestring::data;

namespace {

TEST(SyntheticMarkov, EachTokenHasExactlyBranchingSuccessors) {
  const SyntheticMarkov chain(16, 3, 42);
  std::vector<std::set<int64_t>> seen(16);
  std::vector<int64_t> seq(64);
  for (int64_t i = 0; i < 400; ++i) {
    chain.sequence(i, 64, seq.data());
    for (size_t t = 1; t < seq.size(); ++t) seen[size_t(seq[t - 1])].insert(seq[t]);
  }
  for (const auto& s : seen) EXPECT_EQ(s.size(), 3u);  // all visited, never more than 3 successors
}

TEST(SyntheticMarkov, IsAPureFunctionOfSeedAndIndex) {
  const SyntheticMarkov a(32, 4, 7), b(32, 4, 7), c(32, 4, 8);
  std::vector<int64_t> x(20), y(20), z(20);
  a.sequence(123, 20, x.data());
  b.sequence(123, 20, y.data());
  c.sequence(123, 20, z.data());
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  EXPECT_THROW(SyntheticMarkov(4, 5, 0), std::invalid_argument);
}

TEST(Loader, TargetsAreInputsShiftedAndResumeContinuesTheStream) {
  auto chain = std::make_shared<SyntheticMarkov>(32, 4, 1);
  Loader a(chain, 2, 8);
  const Batch b0 = a.next();
  EXPECT_TRUE(at::equal(b0.inputs.narrow(1, 1, 7), b0.targets.narrow(1, 0, 7)));
  const Batch b1 = a.next();
  Loader resumed(chain, 2, 8);
  resumed.set_consumed_samples(2);
  EXPECT_TRUE(at::equal(resumed.next().inputs, b1.inputs));
  EXPECT_EQ(a.consumed_samples(), 4);
}

}  // namespace
