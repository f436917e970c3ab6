#include "parallel/pipeline_executor.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

#include "parallel/grad_reducer.h"  // steady_seconds

namespace shoestring::parallel {

namespace {

// MPI guarantees tags up to 32767 everywhere.
constexpr int kMaxTag = 32767;

std::string where(int mb, int chunk) {
  return "micro-batch " + std::to_string(mb) + " chunk " + std::to_string(chunk);
}

}  // namespace

PipelineExecutor::PipelineExecutor(Schedule schedule, GroupPtr pp, bool overlap_fb, bool fill_waits)
    : schedule_(std::move(schedule)), pp_(std::move(pp)), overlap_fb_(overlap_fb), fill_waits_(fill_waits) {
  if (pp_->size() != schedule_.pp)
    throw std::invalid_argument("pipeline executor: schedule for pp=" + std::to_string(schedule_.pp) +
                                " on a pp group of " + std::to_string(pp_->size()) + " ranks");
  rank_ = pp_->rank();
  const char* one_tag = std::getenv("SHOESTRING_P2P_ORDER_MATCHED");
  order_matched_ = one_tag != nullptr && std::string(one_tag) == "1";
  if (tag(true, schedule_.microbatches - 1, schedule_.stages - 1) > kMaxTag)
    throw std::invalid_argument("pipeline executor: " + std::to_string(schedule_.microbatches) + " micro-batches x " +
                                std::to_string(schedule_.stages) + " stages exceed the MPI tag range");
  for (const Action& a : schedule_.actions[size_t(rank_)]) {
    if (overlap_fb_ && a.op == Op::FB) segmented_.insert({a.mb2, a.chunk2});
    if (a.op == Op::W) w_order_.push_back({a.mb, a.chunk});
  }
}

int PipelineExecutor::tag(bool grad, int mb, int stage) const {
  return order_matched_ ? 0 : (mb * schedule_.stages + stage) * 2 + int(grad);
}

void PipelineExecutor::run(const StageCallbacks& cb) {
  trace_.clear();
  backwards_left_ = 0;
  next_w_ = 0;
  for (const Action& a : schedule_.actions[size_t(rank_)])
    backwards_left_ += a.op == Op::B || a.op == Op::I || a.op == Op::FB;
  for (const Action& a : schedule_.actions[size_t(rank_)]) {
    const double t0 = steady_seconds();
    waited_ = 0;
    overlapped_ = filled_ = 0;
    switch (a.op) {
      case Op::F: forward(a.mb, a.chunk, cb); break;
      case Op::B: backward(a.mb, a.chunk, false, cb); break;
      case Op::I: backward(a.mb, a.chunk, true, cb); break;
      case Op::W: weight(a.mb, a.chunk); break;
      case Op::FB: forward_backward(a, cb); break;
      case Op::SendF: post_send(false, a.mb, a.chunk); continue;
      case Op::SendB: post_send(true, a.mb, a.chunk); continue;
      case Op::RecvF: post_recv(false, a.mb, a.chunk, cb); continue;
      case Op::RecvB: post_recv(true, a.mb, a.chunk, cb); continue;
    }
    trace_.push_back({a, t0, steady_seconds(), waited_, overlapped_, filled_});
  }
  for (auto& [work, tensor] : sends_) work->wait();
  sends_.clear();
  check_empty();
}

at::Tensor PipelineExecutor::take_input(std::map<Key, Pending>& posted, std::map<Key, at::Tensor>& local, int mb,
                                        int chunk, const char* what) {
  const Key k{mb, chunk};
  if (auto it = local.find(k); it != local.end()) {
    at::Tensor t = std::move(it->second);
    local.erase(it);
    return t;
  }
  auto it = posted.find(k);
  if (it == posted.end())
    throw std::logic_error("pipeline rank " + std::to_string(rank_) + ": the " + what + " of " + where(mb, chunk) +
                           " was neither received nor handed over locally");
  const double t0 = steady_seconds();
  it->second.work->wait();
  waited_ += steady_seconds() - t0;
  at::Tensor t = std::move(it->second.buffer);
  posted.erase(it);
  return t;
}

void PipelineExecutor::forward(int mb, int chunk, const StageCallbacks& cb, std::function<void()> in_flight) {
  const int s = schedule_.stage_of(mb, rank_, chunk);
  if (s < 0) throw std::logic_error("pipeline: " + where(mb, chunk) + " is not on rank " + std::to_string(rank_));
  at::Tensor input;
  if (s > 0) input = take_input(recv_act_, local_act_, mb, chunk, "input activation").detach().requires_grad_(true);
  const ForwardMode mode{segmented_.count({mb, chunk}) > 0, std::move(in_flight)};
  StageOutput o = cb.forward(mb, chunk, s, input, mode);
  if (!o.segments.empty()) {
    // The contract of StageOutput::segments; a broken chain would backpropagate wrong gradients.
    const auto& last = o.segments.back().outputs;
    const auto& first = o.segments.front().inputs;
    bool ok = mode.segmented && !o.aux.defined() && last.size() == 1 && last[0].is_same(o.output) &&
              (s > 0 ? first.size() == 1 && first[0].is_same(input) : first.empty());
    for (size_t i = 1; ok && i < o.segments.size(); ++i)
      ok = o.segments[i].link || o.segments[i].inputs.size() == o.segments[i - 1].outputs.size();
    if (!ok) throw std::logic_error("pipeline: the forward of " + where(mb, chunk) + " returned a broken segment chain");
  }
  if (s + 1 < schedule_.stages) {
    const Hop& next = schedule_.hop(mb, s + 1);
    (next.rank == rank_ ? local_act_[{mb, next.chunk}] : out_act_[{mb, chunk}]) = o.output.detach().contiguous();
  }
  saved_[{mb, chunk}] = {std::move(input), std::move(o.output), std::move(o.aux), std::move(o.segments)};
}

void PipelineExecutor::backward(int mb, int chunk, bool split, const StageCallbacks& cb) {
  BackwardRun r = begin_backward(mb, chunk, split, cb);
  while (backward_step(r)) {
  }
  end_backward(r);
}

// The backward half is set up first (its output gradient received), then the forward half runs
// and, each time its communication is in flight, one backward segment runs; the segments left run
// after it. Every rank of an expert-parallel group runs the same stage and schedule, so they
// interleave alike and issue their collectives in one order (MoEImpl::forward_begin).
void PipelineExecutor::forward_backward(const Action& a, const StageCallbacks& cb) {
  if (!overlap_fb_) {
    forward(a.mb, a.chunk, cb);
    backward(a.mb2, a.chunk2, false, cb);
    return;
  }
  BackwardRun r = begin_backward(a.mb2, a.chunk2, false, cb);
  forward(a.mb, a.chunk, cb, [&] { overlapped_ += int(backward_step(r)); });
  while (backward_step(r)) {
  }
  end_backward(r);
}

PipelineExecutor::BackwardRun PipelineExecutor::begin_backward(int mb, int chunk, bool split,
                                                               const StageCallbacks& cb) {
  auto it = saved_.find({mb, chunk});
  if (it == saved_.end()) throw std::logic_error("pipeline: backward of " + where(mb, chunk) + " before its forward");
  BackwardRun r;
  r.mb = mb, r.chunk = chunk, r.split = split;
  r.saved = std::move(it->second);
  saved_.erase(it);
  r.stage = schedule_.stage_of(mb, rank_, chunk);
  r.grads = {r.stage + 1 < schedule_.stages ? take_input(recv_grad_, local_grad_, mb, chunk, "output gradient")
                                            : at::ones_like(r.saved.output)};  // the loss itself
  r.left = r.saved.segments.empty() ? 1 : r.saved.segments.size();
  if (cb.before_backward) cb.before_backward(mb, chunk, --backwards_left_ == 0);
  return r;
}

bool PipelineExecutor::backward_step(BackwardRun& r) {
  if (r.left == 0) return false;
  --r.left;
  if (r.pending) {
    const double t0 = steady_seconds();
    r.grads = r.pending();
    r.pending = {};
    waited_ += steady_seconds() - t0;
  }
  const bool whole = r.saved.segments.empty();
  Segment one;
  if (whole) one = {{}, {r.saved.output}, r.saved.aux, {}};
  Segment& seg = whole ? one : r.saved.segments[r.left];
  if (r.grads.size() != seg.outputs.size())
    throw std::logic_error("pipeline: backward of " + where(r.mb, r.chunk) + " has " + std::to_string(r.grads.size()) +
                           " gradients for a segment of " + std::to_string(seg.outputs.size()) + " outputs");
  std::vector<at::Tensor> outputs, grads;
  for (size_t i = 0; i < seg.outputs.size(); ++i)
    if ((whole || seg.outputs[i].requires_grad()) && r.grads[i].defined()) {
      outputs.push_back(seg.outputs[i]);
      grads.push_back(r.grads[i]);
    }
  if (seg.aux.defined() && seg.aux.requires_grad()) {
    outputs.push_back(seg.aux);
    grads.push_back(at::ones_like(seg.aux));
  }
  if (!outputs.empty()) {
    if (r.split) {
      ops::WeightGradStore::begin_capture();
      capturing_ = Key{r.mb, r.chunk};
      try {
        std::optional<ops::WaitFiller> filler;
        if (fill_waits_) filler.emplace([this] { return run_next_deferred(); });
        torch::autograd::backward(outputs, grads);
      } catch (...) {
        capturing_.reset();
        ops::WeightGradStore::end_capture();
        throw;
      }
      capturing_.reset();
      auto& closures = w_[{r.mb, r.chunk}];
      for (auto& fn : ops::WeightGradStore::end_capture()) closures.push_back(std::move(fn));
    } else {
      torch::autograd::backward(outputs, grads);
    }
  } else if (r.split) {
    w_[{r.mb, r.chunk}];  // the W of this backward finds its (empty) closures
  }
  if (!whole && r.left > 0) {
    // The previous segment's output gradients; an input its segment did not use gets zeros.
    std::vector<at::Tensor> in_grads;
    for (const at::Tensor& in : seg.inputs) in_grads.push_back(in.grad().defined() ? in.grad() : at::zeros_like(in));
    if (seg.link) r.pending = seg.link(std::move(in_grads));
    else r.grads = std::move(in_grads);
    seg = {};  // its graph is spent: free what it holds now
  }
  return true;
}

void PipelineExecutor::end_backward(BackwardRun& r) {
  if (r.stage == 0) return;
  // An input the stage did not use gets a zero gradient rather than none.
  const at::Tensor& input = r.saved.input;
  at::Tensor g = input.grad().defined() ? input.grad() : at::zeros_like(input);
  const Hop& prev = schedule_.hop(r.mb, r.stage - 1);
  (prev.rank == rank_ ? local_grad_[{r.mb, prev.chunk}] : out_grad_[{r.mb, r.chunk}]) = g.contiguous();
}

void PipelineExecutor::weight(int mb, int chunk) {
  auto it = w_.find({mb, chunk});
  if (it == w_.end()) throw std::logic_error("pipeline: W of " + where(mb, chunk) + " without an I before it");
  // run() walks the W actions in the order w_order_ lists them.
  if (next_w_ >= w_order_.size() || w_order_[next_w_] != Key{mb, chunk})
    throw std::logic_error("pipeline: W of " + where(mb, chunk) + " out of schedule order");
  ++next_w_;
  at::NoGradGuard no_grad;
  for (auto& fn : it->second) fn();
  w_.erase(it);
}

// Only the oldest pending W, front first (an earlier I's closures, or, when that W is the running
// I's own, those its capture holds so far): every weight then receives its gradients in the order
// the W actions alone would add them, so filling changes no result. Runs on the thread running
// backward (an autograd device thread on GPUs) while the executor's thread is inside
// torch::autograd::backward, so nothing else touches w_ meanwhile.
bool PipelineExecutor::run_next_deferred() {
  if (next_w_ >= w_order_.size()) return false;
  const Key next = w_order_[next_w_];
  ops::WeightGradFn fn;
  if (auto it = w_.find(next); it != w_.end() && !it->second.empty()) {
    fn = std::move(it->second.front());
    it->second.pop_front();
  } else if (capturing_ == next) {  // this I's own W is next: its closures queued so far
    fn = ops::WeightGradStore::take_first();
  }
  if (!fn) return false;
  at::NoGradGuard no_grad;
  fn();
  ++filled_;
  return true;
}

void PipelineExecutor::post_recv(bool grad, int mb, int chunk, const StageCallbacks& cb) {
  const int s = schedule_.stage_of(mb, rank_, chunk);
  // An output gradient has the shape of the activation entering the next stage.
  const int from_stage = grad ? s + 1 : s - 1;
  at::Tensor buffer = cb.activation_buffer(mb, grad ? s + 1 : s);
  WorkPtr work = pp_->recv(buffer, schedule_.hop(mb, from_stage).rank, tag(grad, mb, s));
  work->start();  // posted now, progressed while this rank computes
  (grad ? recv_grad_ : recv_act_)[{mb, chunk}] = {std::move(buffer), std::move(work)};
}

void PipelineExecutor::post_send(bool grad, int mb, int chunk) {
  auto& produced = grad ? out_grad_ : out_act_;
  auto it = produced.find({mb, chunk});
  if (it == produced.end())
    throw std::logic_error(std::string("pipeline: send of the ") + (grad ? "input gradient" : "output") + " of " +
                           where(mb, chunk) + " before it was computed");
  const int s = schedule_.stage_of(mb, rank_, chunk);
  const int to_stage = grad ? s - 1 : s + 1;
  at::Tensor t = std::move(it->second);
  produced.erase(it);
  sends_.emplace_back(pp_->send(t, schedule_.hop(mb, to_stage).rank, tag(grad, mb, to_stage)), t);
  sends_.back().first->start();
}

void PipelineExecutor::check_empty() const {
  std::string left;
  auto note = [&](const char* what, size_t n) {
    if (n) left += (left.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  };
  note("saved activations", saved_.size());
  note("weight-gradient closures", w_.size());
  note("unconsumed received activations", recv_act_.size());
  note("unconsumed received gradients", recv_grad_.size());
  note("unsent activations", out_act_.size());
  note("unsent gradients", out_grad_.size());
  note("local activation hand-offs", local_act_.size());
  note("local gradient hand-offs", local_grad_.size());
  if (!left.empty())
    throw std::logic_error("pipeline rank " + std::to_string(rank_) + " (" + schedule_.name + "): step ended with " +
                           left);
}

}  // namespace shoestring::parallel
