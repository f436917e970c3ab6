// fold_into, the reduction inside every point-to-point collective: its plain-loop sum must give
// what at::add_ gives bit for bit (DP runs are compared with single-process runs), and every case
// it does not take (other dtypes, strides) must still reduce correctly, through ATen.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdint>

#include "parallel/p2p_collectives.h"

namespace shoestring::parallel {
namespace {

void expect_sum_like_add(at::ScalarType dt, int64_t n) {
  at::manual_seed(3);
  const at::Tensor a = at::randn({n}, at::kDouble).to(dt) * 1e3, b = at::randn({n}, at::kDouble).to(dt);
  at::Tensor ours = a.clone();
  fold_into(ours, b, ReduceOp::Sum);
  EXPECT_TRUE(at::equal(ours, a + b)) << c10::toString(dt) << " n=" << n;
}

TEST(Fold, SumIsBitIdenticalToAdd) {
  for (const auto dt : {at::kFloat, at::kDouble, at::kBFloat16, at::kLong})
    for (const int64_t n : {0, 1, 7, 1000, 131073}) expect_sum_like_add(dt, n);
}

TEST(Fold, StridedOperandsSumAndOverlappingOnesAreRefused) {
  at::Tensor base = at::arange(20, at::kFloat);
  // Overlapping operands never occur in a collective; the loop must not read what it has written.
  EXPECT_THROW(fold_into(base.narrow(0, 0, 10), base.narrow(0, 5, 10), ReduceOp::Sum), c10::Error);
  at::Tensor m = at::zeros({4, 6}, at::kDouble);
  const at::Tensor col = m.narrow(1, 2, 1).squeeze(1);  // stride 6
  fold_into(col, at::full({4}, 2.5, at::kDouble), ReduceOp::Sum);
  EXPECT_EQ(m.sum().item<double>(), 10.0);
  EXPECT_EQ(m.narrow(1, 2, 1).sum().item<double>(), 10.0);
}

// The pointer form, which the ring all-reduce uses: the same results as the tensor form for the
// loops it runs itself (float, double sums) and for what it hands to ATen (bf16, max).
TEST(Fold, PointerFormMatchesTheTensorForm) {
  at::manual_seed(5);
  for (const auto dt : {at::kFloat, at::kDouble, at::kBFloat16, at::kInt})
    for (const ReduceOp op : {ReduceOp::Sum, ReduceOp::Max})
      for (const int64_t n : {0, 1, 17, 4099}) {
        const at::Tensor a = (at::randn({n}, at::kDouble) * 100).to(dt), b = (at::randn({n}, at::kDouble) * 100).to(dt);
        at::Tensor want = a.clone(), got = a.clone();
        fold_into(want, b, op);
        fold_into(got.data_ptr(), b.data_ptr(), n, dt, op);
        EXPECT_TRUE(at::equal(got, want)) << c10::toString(dt) << " op " << int(op) << " n=" << n;
      }
}

TEST(Scratch, BuffersAreAlignedAndReusedOnlyOnceGivenBack) {
  char* first = nullptr;
  {
    Scratch a(1000), b(1000);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
    EXPECT_NE(a.data(), b.data());  // both in use: never the same memory
    a.data()[999] = 1;              // the whole requested size is writable (ASan would catch it)
    first = a.data();
  }
  // Given back: a request that fits takes a cached buffer rather than new memory.
  Scratch c(512);
  Scratch d(512);
  EXPECT_TRUE(c.data() == first || d.data() == first);
  EXPECT_NE(c.data(), d.data());
}

TEST(Fold, MaxAndMinAreElementwise) {
  at::Tensor x = at::tensor({1.0f, 5.0f, -2.0f}), y = at::tensor({3.0f, 4.0f, -1.0f});
  at::Tensor hi = x.clone(), lo = x.clone();
  fold_into(hi, y, ReduceOp::Max);
  fold_into(lo, y, ReduceOp::Min);
  EXPECT_TRUE(at::equal(hi, at::tensor({3.0f, 5.0f, -1.0f})));
  EXPECT_TRUE(at::equal(lo, at::tensor({1.0f, 4.0f, -2.0f})));
}

}  // namespace
}  // namespace shoestring::parallel
