#pragma once
// The pipeline executor: one small interpreter that runs any valid schedule (parallel/schedule.h)
// on this rank for one training step. It knows nothing about the model: a callback runs a chunk's
// forward; the executor keeps what backward needs, runs backward (whole, or split into I and W
// through ops::WeightGradStore), and moves activations and gradients between ranks with
// non-blocking send/recv on the pp group, matched by tag (kind, micro-batch, stage).
//
// Test switch: with SHOESTRING_P2P_ORDER_MATCHED=1 in the environment (read when an executor is
// made) every message goes under one tag, so MPI pairs the messages between two ranks by order
// alone (its non-overtaking rule), as NCCL does. A step then gives the tag-matched results only
// if both ends of every rank pair post the pair's messages in the same order (schedule.h,
// point_to_point_order); tests/parallel/test_pipeline_training.cpp compares the two bit for bit.
//
// An overlapped FB pair (DeepSeek-V3 §3.2.1, Figure 4) interleaves its halves on one thread: the
// forward half calls `in_flight` wherever its own communication is in flight (an MoE layer's
// dispatch and combine), and each call runs the next segment of the backward half, so the
// exchange travels (on the comm thread, or NCCL's stream) while the other micro-batch computes;
// a link between two backward segments (an exchange's reverse) travels while the forward half
// computes. This needs the backward half's forward to have been cut into segments
// (StageOutput::segments); the executor asks for segments exactly for the (micro-batch, chunk)s
// that an FB backwards. The action order, the communication order and the results are those of
// the schedule. At the end of
// run() every stored activation, weight-gradient closure and message has been consumed, or
// run() throws std::logic_error naming what was left (a schedule bug, never silently ignored).
#include <ATen/core/Tensor.h>

#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "ops/weight_grad_store.h"
#include "parallel/process_group.h"
#include "parallel/schedule.h"
#include "parallel/segment.h"

namespace shoestring::parallel {

// What a chunk's forward produced for one micro-batch: `output` is sent on to the next stage (or,
// on the route's last stage, is the scalar loss to backpropagate); `aux`, when defined, is a
// scalar this stage adds to the loss itself (e.g. its MoE balance loss), backpropagated with it.
// `segments`, when the forward was asked for them and is not empty: the forward as a chain of
// segments (segment.h), each reading leaves made from the previous one's outputs; the first
// segment's inputs are {the stage's input} (none on stage 0), the last one's outputs {`output`},
// and `aux` stays undefined (each segment carries its own). Backward then runs one segment at a
// time, from the last, each link started after its segment and waited for before the next.
struct StageOutput {
  at::Tensor output;
  at::Tensor aux;
  std::vector<Segment> segments;
};

// How a chunk's forward is run: `segmented`: cut it into segments (above); `in_flight`, when set:
// to be called wherever the forward has its own communication in flight, to do other work meanwhile.
struct ForwardMode {
  bool segmented = false;
  std::function<void()> in_flight;
};

struct StageCallbacks {
  // Forward of micro-batch `mb` on local chunk `chunk` (model stage `stage`). `input` is the
  // activation from the previous stage (a leaf that requires grad), undefined on stage 0.
  std::function<StageOutput(int mb, int chunk, int stage, const at::Tensor& input, const ForwardMode& mode)> forward;
  // An uninitialised tensor shaped like the activation entering `stage` for `mb` (receive buffer).
  std::function<at::Tensor(int mb, int stage)> activation_buffer;
  // Optional: called before each backward (B, I, or FB's backward half) of (mb, chunk); `last`
  // is true for the last backward of the step on this rank (the DP reducer syncs on it when pp=1).
  std::function<void(int mb, int chunk, bool last)> before_backward;
};

// When each compute action ran (steady-clock seconds), for `bench pipeline`; `wait` is the part of
// [start, end] spent waiting for a received input, so the compute time is end - start - wait.
// `overlapped` (FB only): backward segments run while the forward half's communication was in flight.
// `filled` (I only): weight-gradient closures of an earlier W run while an exchange's gradients
// travelled (fill_waits).
struct ExecutedAction {
  Action action;
  double start = 0, end = 0, wait = 0;
  int overlapped = 0, filled = 0;
};

class PipelineExecutor {
 public:
  // `pp`: the pipeline group (rank r = schedule rank r). The schedule must be valid.
  // `overlap_fb` false: an FB pair runs its forward, then its backward whole (parallel.overlap_fb).
  // `fill_waits` (parallel.fill_waits): during an I, each wait for an exchange's gradients
  // (ops::WaitFiller) first runs the next closure of the oldest pending W, in W's order.
  PipelineExecutor(Schedule schedule, GroupPtr pp, bool overlap_fb = true, bool fill_waits = true);

  void run(const StageCallbacks& cb);

  const Schedule& schedule() const { return schedule_; }
  int rank() const { return rank_; }
  const std::vector<ExecutedAction>& trace() const { return trace_; }  // of the last run()

 private:
  using Key = std::pair<int, int>;  // (micro-batch, chunk)
  struct Saved {
    at::Tensor input;    // the leaf the stage's input gradient lands in (undefined on stage 0)
    at::Tensor output;   // what backward starts from
    at::Tensor aux;
    std::vector<Segment> segments;
  };
  // A backward in progress, one segment (or the whole graph) per step.
  struct BackwardRun {
    int mb = 0, chunk = 0, stage = 0;
    bool split = false;
    Saved saved;
    std::vector<at::Tensor> grads;  // of the outputs of the next segment to run...
    GradsFuture pending;            // ...or, while set, still on their way (a link in flight)
    size_t left = 0;                // segments still to run (1 for an unsegmented forward)
  };
  struct Pending {
    at::Tensor buffer;
    WorkPtr work;
  };

  void forward(int mb, int chunk, const StageCallbacks& cb, std::function<void()> in_flight = {});
  void backward(int mb, int chunk, bool split, const StageCallbacks& cb);
  void forward_backward(const Action& a, const StageCallbacks& cb);
  BackwardRun begin_backward(int mb, int chunk, bool split, const StageCallbacks& cb);
  bool backward_step(BackwardRun& r);  // runs one segment; false once none is left
  void end_backward(BackwardRun& r);
  void weight(int mb, int chunk);
  bool run_next_deferred();  // one closure of the oldest pending W; false if none is ready
  void post_recv(bool grad, int mb, int chunk, const StageCallbacks& cb);
  void post_send(bool grad, int mb, int chunk);
  at::Tensor take_input(std::map<Key, Pending>& posted, std::map<Key, at::Tensor>& local, int mb, int chunk,
                        const char* what);
  int tag(bool grad, int mb, int stage) const;
  void check_empty() const;

  Schedule schedule_;
  GroupPtr pp_;
  int rank_ = 0;
  bool order_matched_ = false;  // SHOESTRING_P2P_ORDER_MATCHED: one tag for every message
  bool overlap_fb_ = true;
  bool fill_waits_ = true;
  std::vector<Key> w_order_;  // this rank's W actions in schedule order
  size_t next_w_ = 0;         // the first of them not run yet
  int filled_ = 0;            // within the current action
  std::optional<Key> capturing_;  // the I whose closures the open capture collects
  std::set<Key> segmented_;  // (mb, chunk)s backwarded by an FB: their forward is cut into segments
  int overlapped_ = 0;       // within the current action
  int backwards_left_ = 0;
  double waited_ = 0;  // within the current action
  std::map<Key, Saved> saved_;                       // forwarded, not yet backwarded
  std::map<Key, std::deque<ops::WeightGradFn>> w_;  // I done, W pending
  std::map<Key, Pending> recv_act_, recv_grad_;      // posted receives, by consumer
  std::map<Key, at::Tensor> out_act_, out_grad_;     // produced, to be sent (by producer)
  std::map<Key, at::Tensor> local_act_, local_grad_;  // hand-offs between chunks of this rank, by consumer
  std::vector<std::pair<WorkPtr, at::Tensor>> sends_;  // in flight, with the tensor they read
  std::vector<ExecutedAction> trace_;
};

}  // namespace shoestring::parallel
