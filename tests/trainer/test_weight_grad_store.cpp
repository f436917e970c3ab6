// The zero-bubble weight-gradient split (ops/weight_grad_store.h, model::project,
// model::expert_swiglu): store semantics, bit-identity with at::linear's autograd when nothing is
// captured, and a captured backward whose queued closures complete the same gradients as a plain
// one. Also the routed experts' weight GEMMs at a slot of their own (ops/weight_grad_slot.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>

#include "ops/weight_grad_store.h"
#include "tests/trainer/small_models.h"
#include "ops/weight_grad_slot.h"
#include "trainer/model/convert_fp8.h"
#include "trainer/model/embedding.h"
#include "trainer/model/expert_swiglu.h"
#include "trainer/model/linear.h"
#include "trainer/model/transformer.h"

using namespace shoestring;
using ops::WeightGradStore;

namespace {

// Leaves no capture open behind a failed assertion, so one failure does not cascade.
struct CaptureGuard {
  ~CaptureGuard() {
    if (WeightGradStore::capturing()) WeightGradStore::end_capture();
  }
};

void run_all(const std::vector<ops::WeightGradFn>& fns) {
  for (const auto& fn : fns) fn();
}

TEST(WeightGradStore, Semantics) {
  const CaptureGuard guard;
  EXPECT_FALSE(WeightGradStore::capturing());
  EXPECT_THROW(WeightGradStore::push([] {}), std::logic_error);
  WeightGradStore::begin_capture();
  EXPECT_TRUE(WeightGradStore::capturing());
  EXPECT_THROW(WeightGradStore::begin_capture(), std::logic_error);
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) WeightGradStore::push([&order, i] { order.push_back(i); });
  const auto fns = WeightGradStore::end_capture();
  EXPECT_FALSE(WeightGradStore::capturing());
  ASSERT_EQ(fns.size(), 3u);
  run_all(fns);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  WeightGradStore::begin_capture();  // a new capture starts empty
  EXPECT_TRUE(WeightGradStore::end_capture().empty());
}

// take_first hands out the oldest closure queued, and end_capture then returns the rest in order.
TEST(WeightGradStore, TakeFirstTakesTheOldest) {
  const CaptureGuard guard;
  EXPECT_FALSE(WeightGradStore::take_first());
  WeightGradStore::begin_capture();
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) WeightGradStore::push([&order, i] { order.push_back(i); });
  const ops::WeightGradFn first = WeightGradStore::take_first();
  ASSERT_TRUE(first);
  first();
  run_all(WeightGradStore::end_capture());
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST(WaitFiller, OneAtATimeAndGoneWithItsScope) {
  EXPECT_FALSE(ops::WaitFiller::installed());
  EXPECT_FALSE(ops::WaitFiller::run_one());
  int runs = 0;
  {
    const ops::WaitFiller filler([&runs] { return ++runs < 2; });
    EXPECT_TRUE(ops::WaitFiller::installed());
    EXPECT_THROW(ops::WaitFiller([] { return false; }), std::logic_error);
    EXPECT_TRUE(ops::WaitFiller::installed());  // the refused one did not take its place
    EXPECT_TRUE(ops::WaitFiller::run_one());
    EXPECT_FALSE(ops::WaitFiller::run_one());  // the piece reported that there was none
  }
  EXPECT_EQ(runs, 2);
  EXPECT_FALSE(ops::WaitFiller::installed());
  EXPECT_FALSE(ops::WaitFiller::run_one());
}

struct Grads {
  at::Tensor x, w;
};

// Gradients of sum(y * up) for y = project(x, w), or the reference at::linear(x, w cast).
Grads linear_grads(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& up, bool reference) {
  const at::Tensor x = x0.detach().requires_grad_(), w = w0.detach().requires_grad_();
  const at::Tensor y = reference ? at::linear(x, w.to(x.scalar_type())) : model::project(x, w);
  (y * up).sum().backward();
  return {x.grad(), w.grad()};
}

// Not captured, project must be at::linear to the bit: training results may not move.
TEST(DeferrableLinear, UncapturedGradsAreBitIdenticalToLinear) {
  at::manual_seed(1);
  struct Case {
    std::vector<int64_t> x_shape;
    at::ScalarType x_dtype, w_dtype;
    bool column_major_x;
  };
  const std::vector<Case> cases = {
      {{37, 19}, at::kFloat, at::kFloat, false},     {{3, 29, 19}, at::kFloat, at::kFloat, false},
      {{37, 19}, at::kDouble, at::kDouble, false},   {{3, 29, 19}, at::kDouble, at::kDouble, false},
      {{37, 19}, at::kBFloat16, at::kFloat, false},  {{3, 29, 19}, at::kBFloat16, at::kFloat, false},
      {{37, 19}, at::kFloat, at::kFloat, true},      {{37, 19}, at::kDouble, at::kDouble, true},
  };
  for (const Case& c : cases) {
    at::Tensor x = at::randn(c.x_shape).to(c.x_dtype);
    if (c.column_major_x) x = at::randn({c.x_shape[1], c.x_shape[0]}).to(c.x_dtype).t();
    const at::Tensor w = at::randn({23, 19}).to(c.w_dtype);
    std::vector<int64_t> out_shape = c.x_shape;
    out_shape.back() = 23;
    const at::Tensor up = at::randn(out_shape).to(c.x_dtype);
    const Grads ref = linear_grads(x, w, up, true), got = linear_grads(x, w, up, false);
    EXPECT_TRUE(at::equal(at::linear(x, w.to(c.x_dtype)), model::project(x, w)));
    EXPECT_TRUE(at::equal(ref.x, got.x)) << x.sizes() << " " << c.x_dtype;
    EXPECT_TRUE(at::equal(ref.w, got.w)) << x.sizes() << " " << c.x_dtype;
    EXPECT_EQ(got.w.scalar_type(), c.w_dtype);
  }
}

// x -> project(., w1) -> silu -> project(., w2) -> sum: the captured backward gives x its final
// gradient at once and leaves the weights to the closures.
void check_split_chain(at::ScalarType x_dtype, at::ScalarType w_dtype, double rtol) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({4, 6, 10}).to(x_dtype).requires_grad_();
  const at::Tensor w1 = at::randn({12, 10}).to(w_dtype).requires_grad_();
  const at::Tensor w2 = at::randn({5, 12}).to(w_dtype).requires_grad_();
  const auto loss = [&] { return model::project(at::silu(model::project(x, w1)), w2).sum(); };

  loss().backward();
  const at::Tensor gx = x.grad().clone(), g1 = w1.grad().clone(), g2 = w2.grad().clone();
  for (const at::Tensor& t : {x, w1, w2}) t.mutable_grad() = at::Tensor();

  const CaptureGuard guard;
  WeightGradStore::begin_capture();
  loss().backward();
  const auto fns = WeightGradStore::end_capture();
  ASSERT_EQ(fns.size(), 2u);
  EXPECT_TRUE(at::equal(x.grad(), gx));
  EXPECT_FALSE(w1.grad().defined());
  EXPECT_FALSE(w2.grad().defined());
  run_all(fns);
  EXPECT_EQ(w1.grad().scalar_type(), w_dtype);
  EXPECT_TRUE(at::allclose(w1.grad(), g1, rtol, 0));
  EXPECT_TRUE(at::allclose(w2.grad(), g2, rtol, 0));
}

TEST(DeferrableLinear, SplitChainFloat64) { check_split_chain(at::kDouble, at::kDouble, 1e-12); }
TEST(DeferrableLinear, SplitChainFloat32IsExact) { check_split_chain(at::kFloat, at::kFloat, 0); }
TEST(DeferrableLinear, SplitChainBf16ActivationsFp32Weights) { check_split_chain(at::kBFloat16, at::kFloat, 0); }

// The DP reducer points .grad into its bucket: the closure must add there, not replace .grad.
TEST(DeferrableLinear, AccumulatesInPlaceIntoBucketView) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({7, 4});
  const at::Tensor w = at::randn({3, 4}).requires_grad_();
  const at::Tensor buf = at::ones({100});
  w.mutable_grad() = buf.narrow(0, 10, w.numel()).view_as(w);
  const at::Tensor expected = 1 + (at::ones({7, 3}).t().mm(x));

  const CaptureGuard guard;
  WeightGradStore::begin_capture();
  model::project(x, w).sum().backward();
  const auto fns = WeightGradStore::end_capture();
  EXPECT_TRUE(at::equal(buf, at::ones({100})));  // nothing yet
  run_all(fns);
  EXPECT_EQ(w.grad().data_ptr(), buf.narrow(0, 10, 1).data_ptr());
  EXPECT_TRUE(at::allclose(buf.narrow(0, 10, 12).view({3, 4}), expected));
  EXPECT_TRUE(at::equal(buf.narrow(0, 0, 10), at::ones({10})));
  EXPECT_TRUE(at::equal(buf.narrow(0, 22, 78), at::ones({78})));
}

ModelConfig dense_gqa() { return shoestring::testing::small_gqa_model(); }

ModelConfig mla_moe_mtp() {
  ModelConfig m = shoestring::testing::small_mla_model();
  m.vocab_size = 13;
  m.n_routed_experts = 4;
  m.n_activated_experts = 2;
  m.n_shared_experts = 1;
  m.n_dense_layers = 1;
  m.moe_intermediate_size = 6;
  m.mtp_depth = 1;
  return m;
}

// A whole model: plain backward, then captured backward + closures, must give the same gradients;
// after the captured backward alone, everything not deferred already holds its final gradient.
void check_model_split(const ModelConfig& m, bool exact_closure_count) {
  at::manual_seed(4);
  model::Transformer net(m, at::kDouble);
  net->to(at::kDouble);
  const at::Tensor tokens = at::randint(m.vocab_size, {2, 9}, at::kLong);
  const at::Tensor targets = at::randint(m.vocab_size, {2, 9}, at::kLong);
  const auto params = net->named_parameters();

  net->losses(tokens, targets).total.backward();
  std::map<std::string, at::Tensor> plain;
  for (const auto& p : params) plain[p.key()] = p.value().grad().clone();
  net->zero_grad(/*set_to_none=*/true);

  const CaptureGuard guard;
  WeightGradStore::begin_capture();
  net->losses(tokens, targets).total.backward();
  const auto fns = WeightGradStore::end_capture();

  size_t deferred = 0, routed = 0;  // routed: the experts' stacked w1, w3, w2, one closure per layer
  for (const auto& p : params) {
    const at::Tensor& g = p.value().grad();
    if (!g.defined()) {
      // dense linears [out, in]; the routed experts' stacked [E, out, in] (expert_swiglu)
      const bool stacked = p.key().find(".moe.w") != std::string::npos;
      ++(stacked ? routed : deferred);
      EXPECT_EQ(p.value().dim(), stacked ? 3 : 2) << p.key() << " was deferred but is not a linear or embedding weight";
    } else {
      EXPECT_TRUE(at::equal(g, plain[p.key()])) << p.key() << " should hold its final gradient after I";
    }
  }
  EXPECT_GT(deferred, 0u);
  EXPECT_FALSE(params["tok_embed"].grad().defined()) << "the embedding's gradient was not deferred";
  EXPECT_EQ(routed, m.n_routed_experts > 0 ? 3 * size_t(m.n_layers - m.n_dense_layers + m.mtp_depth) : 0u);
  if (exact_closure_count) {
    EXPECT_EQ(fns.size(), deferred + routed / 3);  // each deferred weight used once
  }
  EXPECT_GE(fns.size(), deferred + routed / 3);
  for (const char* kept : {"final_norm.weight", "blocks.0.attn_norm.weight"}) {
    ASSERT_TRUE(params[kept].grad().defined()) << kept;
  }

  run_all(fns);
  for (const auto& p : params) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    const at::Tensor& want = plain[p.key()];
    EXPECT_LE((p.value().grad() - want).norm().item<double>(), 1e-12 * want.norm().item<double>()) << p.key();
  }
}

// model::embedding: uncaptured, at::embedding's gradient bit for bit (repeated rows included);
// captured, none until the closure runs, then the same.
TEST(DeferrableEmbedding, GradientIsAtEmbeddingsAndDeferrable) {
  at::manual_seed(5);
  for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
    const at::Tensor w0 = at::randn({11, 5}, dt);
    const at::Tensor idx = at::tensor(std::vector<int64_t>{3, 7, 3, 0, 10, 3, 7}, at::kLong).reshape({7, 1});
    const at::Tensor up = at::randn({7, 1, 5}, dt);
    const at::Tensor w1 = w0.clone().requires_grad_(), w2 = w0.clone().requires_grad_(), w3 = w0.clone().requires_grad_();
    (at::embedding(w1, idx) * up).sum().backward();
    (model::embedding(w2, idx) * up).sum().backward();
    EXPECT_TRUE(at::equal(w1.grad(), w2.grad())) << dt;
    const CaptureGuard guard;
    WeightGradStore::begin_capture();
    (model::embedding(w3, idx) * up).sum().backward();
    const auto fns = WeightGradStore::end_capture();
    EXPECT_FALSE(w3.grad().defined()) << dt;
    ASSERT_EQ(fns.size(), 1u);
    run_all(fns);
    EXPECT_TRUE(at::equal(w1.grad(), w3.grad())) << dt;
  }
}

TEST(DeferrableLinear, DenseGqaModelSplitMatchesPlain) { check_model_split(dense_gqa(), true); }
TEST(DeferrableLinear, TiedEmbeddingsSplitMatchesPlain) {
  ModelConfig m = dense_gqa();
  m.tie_embeddings = true;
  check_model_split(m, false);
}
TEST(DeferrableLinear, MlaMoeMtpModelSplitMatchesPlain) { check_model_split(mla_moe_mtp(), false); }

// The routed experts of one MoE layer: rows for 3 experts (one idle), float32 weights, through
// expert_swiglu or the FP8 grouped SwiGLU that convert_to_fp8 installs.
using GroupedMlp = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const std::vector<int64_t>&);
struct Experts {
  at::Tensor rows, w1, w3, w2, up;
  std::vector<int64_t> counts{5, 0, 4};
  GroupedMlp mlp;
  explicit Experts(GroupedMlp f = &model::expert_swiglu) : mlp(f) {
    at::manual_seed(6);
    rows = at::randn({9, 8}).requires_grad_();
    w1 = (at::randn({3, 12, 8}) * 0.3).requires_grad_();
    w3 = (at::randn({3, 12, 8}) * 0.3).requires_grad_();
    w2 = (at::randn({3, 8, 12}) * 0.3).requires_grad_();
    up = at::randn({9, 8});
  }
  at::Tensor loss() const { return (mlp(rows, w1, w3, w2, counts) * up).sum(); }
  std::vector<at::Tensor> grads() const { return {rows.grad(), w1.grad(), w3.grad(), w2.grad()}; }
  void clear() const {
    for (const at::Tensor& t : {rows, w1, w3, w2}) t.mutable_grad() = at::Tensor();
  }
};

void expect_equal(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want, const char* what) {
  const char* names[] = {"rows", "w1", "w3", "w2"};
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].defined()) << what << " " << names[i];
    EXPECT_TRUE(at::equal(got[i], want[i])) << what << " " << names[i];
  }
}

// Captured, the rows get their final gradient in I and the stacked weights theirs from one
// closure, the same bits as the plain backward.
TEST(ExpertSwiGLU, CapturedWeightGradsAreDeferredExactly) {
  const Experts e;
  e.loss().backward();
  const std::vector<at::Tensor> plain = e.grads();
  e.clear();

  const CaptureGuard guard;
  WeightGradStore::begin_capture();
  e.loss().backward();
  const auto fns = WeightGradStore::end_capture();
  ASSERT_EQ(fns.size(), 1u);
  EXPECT_TRUE(at::equal(e.rows.grad(), plain[0]));
  EXPECT_FALSE(e.w1.grad().defined());
  EXPECT_FALSE(e.w2.grad().defined());
  run_all(fns);
  expect_equal(e.grads(), plain, "captured");
}

// Under a slot (ops/weight_grad_slot.h) the weight GEMMs run after everything ready that was
// created after the slot (here another branch of the loss), and give the same bits; without one,
// the weights get their gradients with the rows'. Both expert paths: fp32 and FP8 (two autograd
// functions sharing the slot's one node).
TEST(WeightGradSlot, ExpertWeightGradsRunAtTheSlot) {
  for (const auto& [what, mlp] : {std::pair<const char*, GroupedMlp>{"expert_swiglu", &model::expert_swiglu},
                                 {"fp8", &model::fp8_grouped_swiglu_mlp_any_shape}}) {
    const Experts e(mlp);
    for (const bool slot : {false, true}) {
      std::vector<std::string> order;
      const at::Tensor other = at::randn({4}).requires_grad_();
      e.clear();
      at::Tensor loss;
      {
        const ops::WeightGradSlot at_slot(slot ? std::optional<uint64_t>(at::sequence_number::get_and_increment())
                                               : std::nullopt);
        const at::Tensor branch = (other * 2).sum();  // created after the slot, before the experts
        loss = e.loss() + branch;
      }
      other.register_hook([&order](const at::Tensor&) { order.push_back("branch"); });
      const unsigned w_hook = e.w2.register_hook([&order](const at::Tensor&) { order.push_back("w2"); });
      const unsigned w1_hook = e.w1.register_hook([&order](const at::Tensor&) { order.push_back("w1"); });
      const unsigned rows_hook = e.rows.register_hook([&order](const at::Tensor&) { order.push_back("rows"); });
      loss.backward();
      e.w2.remove_hook(w_hook);
      e.w1.remove_hook(w1_hook);
      e.rows.remove_hook(rows_hook);
      const auto at = [&order](const char* x) { return std::find(order.begin(), order.end(), x) - order.begin(); };
      ASSERT_EQ(order.size(), 4u) << what;
      if (slot) {
        EXPECT_LT(at("rows"), at("branch")) << what;
        EXPECT_LT(at("branch"), at("w1")) << what;
        EXPECT_LT(at("branch"), at("w2")) << what;
      } else {
        EXPECT_LT(at("w2"), at("branch")) << what;
      }
    }
    const std::vector<at::Tensor> with_slot = e.grads();
    e.clear();
    e.loss().backward();
    expect_equal(with_slot, e.grads(), what);
  }
}

// A slot inside a zero-bubble capture: its node queues the weight GEMMs for W like the functions
// would, and the closures complete the plain gradients.
TEST(WeightGradSlot, DefersToTheCaptureWhenOneIsOpen) {
  const Experts e(&model::fp8_grouped_swiglu_mlp_any_shape);
  e.loss().backward();
  const std::vector<at::Tensor> plain = e.grads();
  e.clear();
  const CaptureGuard guard;
  WeightGradStore::begin_capture();
  {
    const ops::WeightGradSlot at_slot(at::sequence_number::get_and_increment());
    e.loss().backward();
  }
  const auto fns = WeightGradStore::end_capture();
  EXPECT_EQ(fns.size(), 2u);  // the up projections' pair and the down projection
  EXPECT_TRUE(at::equal(e.rows.grad(), plain[0]));
  EXPECT_FALSE(e.w1.grad().defined());
  run_all(fns);
  expect_equal(e.grads(), plain, "slot in a capture");
}

}  // namespace
