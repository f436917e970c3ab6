#pragma once
// The split backward of an all-to-all-v (AllToAllVInFlight::wait with a backward slot) on a group
// of one, on the device of `options`: y = exchange(3 x) waited with a slot reserved before an
// unrelated branch z = 2 w was built. Backward of sum(y * y) + sum(z) must run the exchange's post,
// then the branch (created after the slot), then the wait, and give x.grad = 18 x (a group of one
// sends every row back to itself). With the blocking backward the branch would run last. On CUDA
// this also checks that the wait runs on the device's queue, where the engine orders it (a wait
// routed to the CPU queue would run beside the branch, not after it).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "ops/weight_grad_store.h"
#include "parallel/all_to_all_v.h"

namespace shoestring::testing {

inline void expect_split_backward_order(const parallel::GroupPtr& g, const at::TensorOptions& options) {
  ASSERT_EQ(g->size(), 1);
  std::vector<std::string> order;
  const at::Tensor x = at::randn({6, 4}, options).requires_grad_();
  const at::Tensor w = at::randn({5}, options).requires_grad_();
  const uint64_t slot = parallel::reserve_backward_slot();
  const at::Tensor z = w * 2;  // created after the slot
  const at::Tensor sent = x * 3;
  at::Tensor y = parallel::all_to_all_v_start(sent, g, {6}, {6}).wait(slot);
  // A non-leaf tensor's hook runs when the node that produced it runs: y's is the post, z's the
  // branch, sent's the node after the wait.
  y.register_hook([&order](const at::Tensor&) { order.push_back("post"); });
  z.register_hook([&order](const at::Tensor&) { order.push_back("branch"); });
  sent.register_hook([&order](const at::Tensor&) { order.push_back("after wait"); });
  ((y * y).sum() + z.sum()).backward();
  EXPECT_EQ(order, (std::vector<std::string>{"post", "branch", "after wait"}));
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(at::allclose(x.grad().cpu(), (x * 18).detach().cpu()));
  EXPECT_TRUE(at::equal(w.grad().cpu(), at::full({5}, 2.0, w.options().device(at::kCPU))));
}

// With an ops::WaitFiller installed, both backward forms of the exchange (split at a slot, and
// blocking) run one piece of its work after the reverse exchange was started and before the
// gradient is passed on; none runs when the filler is gone.
inline void expect_filled_waits(const parallel::GroupPtr& g, const at::TensorOptions& options) {
  ASSERT_EQ(g->size(), 1);
  for (bool split : {true, false}) {
    std::vector<std::string> order;
    const at::Tensor x = at::randn({6, 4}, options).requires_grad_();
    const std::optional<uint64_t> slot = split ? std::optional<uint64_t>(parallel::reserve_backward_slot()) : std::nullopt;
    const at::Tensor sent = x * 3;
    at::Tensor y = parallel::all_to_all_v_start(sent, g, {6}, {6}).wait(slot);
    y.register_hook([&order](const at::Tensor&) { order.push_back("reverse"); });
    sent.register_hook([&order](const at::Tensor&) { order.push_back("after wait"); });
    {
      const ops::WaitFiller filler([&order] {
        order.push_back("filler");
        return true;
      });
      (y * y).sum().backward({}, /*retain_graph=*/true);
    }
    const std::string form = split ? "split backward" : "blocking backward";
    EXPECT_EQ(order, (std::vector<std::string>{"reverse", "filler", "after wait"})) << form;
    EXPECT_TRUE(at::allclose(x.grad().cpu(), (x * 18).detach().cpu())) << form;
    order.clear();
    (y * y).sum().backward();
    EXPECT_EQ(order, (std::vector<std::string>{"reverse", "after wait"})) << form << " without a filler";
  }
}

}  // namespace shoestring::testing
