#include "parallel/all_to_all_v.h"

#include <ATen/ATen.h>
#include <ATen/SequenceNumber.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/custom_class.h>

#include <numeric>
#include <stdexcept>
#include <string>

#include "ops/weight_grad_store.h"

namespace shoestring::parallel {

namespace {

at::Tensor receive_buffer(const at::Tensor& x, const std::vector<int64_t>& recv, BufferPool* pool) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] = std::accumulate(recv.begin(), recv.end(), int64_t(0));
  return pool ? pool->get(shape, x.options()) : at::empty(shape, x.options());
}

// What the backward of one exchange needs: the forward's counts (the gradients go the other way)
// and its output's shape, for an output that got no gradient but still takes part.
struct ReverseSpec {
  GroupPtr group;
  std::shared_ptr<BufferPool> pool;
  std::vector<int64_t> send, recv;  // of the forward
  std::vector<int64_t> out_shape;   // of the forward's output
  at::TensorOptions options;
};

// The reverse exchange in flight: the forward input's gradient being received, and what is sent.
struct ReverseStarted {
  at::Tensor grad, sent;
  WorkPtr work;
};

ReverseStarted start_reverse(const ReverseSpec& r, const at::Tensor& g) {
  ReverseStarted s;
  // An unused output still takes part: the peers are exchanging too.
  s.sent = g.defined() ? g.contiguous() : at::zeros(r.out_shape, r.options);
  s.grad = receive_buffer(s.sent, r.send, r.pool.get());
  s.work = r.group->all_to_all(s.grad, s.sent, r.send, r.recv);
  return s;
}

// Holds the reverse exchange's spec in the autograd context (saved_data takes IValues only).
struct SpecHolder : torch::CustomClassHolder {
  explicit SpecHolder(ReverseSpec s) : spec(std::move(s)) {}
  ReverseSpec spec;
};

// An exchange started from x: its receive buffer and Work. Not a tensor argument of the autograd
// function, so that autograd does not take `out` for one of its inputs.
struct Started {
  at::Tensor out;
  WorkPtr work;
  RowDecoder decode;  // empty: out is the result
};

at::Tensor finish(const Started& started) {
  started.work->wait();
  return started.decode ? started.decode(started.out) : started.out;
}

struct AllToAllV : torch::autograd::Function<AllToAllV> {
  // Forward only waits for the exchange already started from x, so that it can run between
  // all_to_all_v_start and wait.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& /*x*/, const ReverseSpec& spec,
                            const Started& started) {
    ctx->saved_data["spec"] = c10::IValue::make_capsule(c10::make_intrusive<SpecHolder>(spec));
    return finish(started);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<SpecHolder>(ctx->saved_data["spec"].toCapsule());
    const ReverseStarted r = start_reverse(holder->spec, grads[0]);
    if (ops::WaitFiller::installed()) {  // some work to do while the gradients travel
      r.work->start();
      ops::WaitFiller::run_one();
    }
    r.work->wait();
    return {r.grad, at::Tensor(), at::Tensor()};
  }
};

// The backward of one exchange as two nodes (AllToAllVInFlight::wait's `backward_wait_at`): the
// post runs where the exchange's node would and starts the reverse exchange; the wait, placed
// earlier in backward order, waits for it and passes the gradient on. Between them autograd runs
// whatever else is ready and comes first, while the gradients travel.
struct SplitReverse {
  ReverseSpec spec;
  ReverseStarted started;
};

class PostReverse final : public torch::autograd::Node {
 public:
  explicit PostReverse(std::shared_ptr<SplitReverse> s) : s_(std::move(s)) {}
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    s_->started = start_reverse(s_->spec, grads[0]);
    s_->started.work->start();  // progresses while autograd computes
    // A token on the gradient's device, not the buffer being filled: autograd may read what it
    // passes on (anomaly mode's NaN check), and the wait must run on the same device's queue.
    return {at::empty({0}, s_->started.grad.options())};
  }
  std::string name() const override { return "AllToAllVPostReverse"; }

 private:
  std::shared_ptr<SplitReverse> s_;
};

class WaitReverse final : public torch::autograd::Node {
 public:
  WaitReverse(uint64_t sequence_nr, std::shared_ptr<SplitReverse> s) : Node(sequence_nr), s_(std::move(s)) {}
  torch::autograd::variable_list apply(torch::autograd::variable_list&& /*token*/) override {
    ReverseStarted r = std::move(s_->started);
    if (!r.work) throw std::logic_error("all_to_all_v: backward reached the wait before the post");
    ops::WaitFiller::run_one();  // while the gradients travel (weight_grad_store.h)
    r.work->wait();
    return {r.grad};
  }
  std::string name() const override { return "AllToAllVWaitReverse"; }

 private:
  std::shared_ptr<SplitReverse> s_;
};

// finish(started) attached to x's graph through a PostReverse and a WaitReverse at `wait_at`.
at::Tensor split_backward(const at::Tensor& x, ReverseSpec spec, const Started& started, uint64_t wait_at) {
  at::Tensor out;
  {
    at::NoGradGuard no_grad;
    out = finish(started);
  }
  if (!x.requires_grad()) return out;
  auto state = std::make_shared<SplitReverse>();
  state->spec = std::move(spec);
  auto wait = std::shared_ptr<WaitReverse>(new WaitReverse(wait_at, state), torch::autograd::deleteNode);
  wait->set_next_edges(torch::autograd::collect_next_edges(x));
  wait->add_input_metadata(at::empty({0}, x.options()));
  auto post = std::shared_ptr<PostReverse>(new PostReverse(state), torch::autograd::deleteNode);
  post->set_next_edges({torch::autograd::Edge(wait, 0)});
  torch::autograd::set_history(out, post);
  return out;
}

}  // namespace

AllToAllVInFlight all_to_all_v_start(const at::Tensor& x, const GroupPtr& group,
                                     const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
                                     const std::shared_ptr<BufferPool>& pool) {
  return all_to_all_v_start_encoded(x, x, RowDecoder(), group, send_counts, recv_counts, pool);
}

AllToAllVInFlight all_to_all_v_start_encoded(const at::Tensor& x, const at::Tensor& payload, RowDecoder decode,
                                             const GroupPtr& group, const std::vector<int64_t>& send_counts,
                                             const std::vector<int64_t>& recv_counts,
                                             const std::shared_ptr<BufferPool>& pool) {
  if (int(send_counts.size()) != group->size() || int(recv_counts.size()) != group->size())
    throw std::invalid_argument("all_to_all_v: counts must have one entry per member of group " + group->name());
  if (std::accumulate(send_counts.begin(), send_counts.end(), int64_t(0)) != x.size(0))
    throw std::invalid_argument("all_to_all_v: send counts do not add up to the rows of x");
  if (payload.size(0) != x.size(0))
    throw std::invalid_argument("all_to_all_v: the payload has " + std::to_string(payload.size(0)) +
                                " rows for the " + std::to_string(x.size(0)) + " rows of x");
  AllToAllVInFlight f;
  f.grad_ = at::GradMode::is_enabled();
  f.x_ = x;
  f.sent_ = payload.detach().contiguous();
  const at::Tensor& sent = f.sent_;
  {
    // Made as inside an autograd forward (grad mode off), since the autograd node returns it.
    at::NoGradGuard no_grad;
    f.out_ = receive_buffer(sent, recv_counts, pool.get());
  }
  f.group_ = group;
  f.send_ = send_counts;
  f.recv_ = recv_counts;
  f.pool_ = pool;
  f.decode_ = std::move(decode);
  f.work_ = group->all_to_all(f.out_, sent, recv_counts, send_counts);
  f.work_->start();  // travels while the caller computes (the MoE split forward's shared experts)
  return f;
}

at::Tensor AllToAllVInFlight::wait(std::optional<uint64_t> backward_wait_at) {
  if (!work_) throw std::logic_error("AllToAllVInFlight::wait: no exchange in flight (waited twice?)");
  const at::AutoGradMode mode(grad_);
  Started started{out_, std::move(work_), std::move(decode_)};
  ReverseSpec spec{group_, pool_, send_, recv_, {}, x_.options()};
  spec.out_shape = x_.sizes().vec();
  spec.out_shape[0] = std::accumulate(recv_.begin(), recv_.end(), int64_t(0));
  at::Tensor out = backward_wait_at && grad_ ? split_backward(x_, std::move(spec), started, *backward_wait_at)
                                             : AllToAllV::apply(x_, std::move(spec), started);
  x_ = out_ = sent_ = at::Tensor();
  decode_ = RowDecoder();
  return out;
}

uint64_t reserve_backward_slot() { return at::sequence_number::get_and_increment(); }

bool AllToAllVInFlight::done() const { return !work_ || work_->done(); }

at::Tensor all_to_all_v(const at::Tensor& x, const GroupPtr& group, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& recv_counts, const std::shared_ptr<BufferPool>& pool) {
  return all_to_all_v_start(x, group, send_counts, recv_counts, pool).wait();
}

std::vector<int64_t> exchange_counts(ProcessGroup& group, const std::vector<int64_t>& send_counts,
                                     const at::Device& device) {
  const std::vector<int64_t> ones(size_t(group.size()), 1);
  const at::Tensor in = at::tensor(send_counts, at::kLong).to(device);
  const at::Tensor out = at::empty({group.size()}, in.options());
  group.all_to_all(out, in, ones, ones)->wait();
  const at::Tensor host = out.cpu();
  return {host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel()};
}

}  // namespace shoestring::parallel
