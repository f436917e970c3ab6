#pragma once
// Pipeline schedules as data. A schedule is a pure function (name, pp, micro-batches, options) ->
// for every pipeline rank, the ordered list of actions it performs in one training step. The same
// value is printed (`shoestring plan schedule`), validated, simulated with per-action costs, and
// executed by the pipeline executor (parallel/pipeline_executor.h); nothing else decides order.
//
// Model: the model is cut into `stages` consecutive pieces. A micro-batch passes through stages
// 0..stages-1 forward and back again; `routes` says where (rank, chunk) each stage runs for that
// micro-batch. Most schedules have one route; DualPipe has two (micro-batches fed from either end
// of the pipeline), each rank then holding stage r on chunk 0 and stage pp-1-r on chunk 1, so every
// stage's parameters exist twice. A "chunk" is one of the stages a rank holds.
//
// Communication semantics (shared by the validator, the simulator and the executor): Send* and
// Recv* only post a non-blocking operation; a compute action waits until its input is there: the
// local producer has run, or its Recv was posted earlier on this rank and the peer's matching Send
// has run. Messages are matched by (kind, micro-batch, stage), never by order. Sends and receives
// appear only where consecutive stages of a route sit on different ranks; on one rank (DualPipeV's
// turn at the last rank) the hand-off is local. This is CommModel::Tagged (MPI).
//
// CommModel::InOrder is NCCL as NcclGroup issues point-to-point (parallel/nccl_group.cpp): no tags,
// the n-th send from a to b meets the n-th receive at b from a; every send and receive is its own
// NCCL call (no ncclGroupStart/End around them) on the group's one stream, enqueued behind all the
// compute the rank issued before it (the caller-stream event). So each rank has two in-order
// streams: compute runs its compute actions in order, each also waiting for the receives it
// consumes; communication runs the Send*/Recv* actions in order, each waiting for every compute
// action before it in the rank's list, and a send and its receive complete together, once both are
// at the head of their streams (rendezvous: NCCL documents send/recv as blocking on the GPU until
// the peer takes part; a buffered transfer only finishes earlier, so a schedule that completes
// here completes there). Grouping the calls would relax this (a group progresses all its operations
// at once); we model the calls as they are issued. Under this model a rank pair's two directions
// must interleave the same way on both sides, and one late receive holds up every later send.
//
// The generators (add_communication) post every rank's messages in one global order taken from a
// replay of the compute orders: each send right after the compute that produces it, each receive
// as early as that order lets it be. Such a schedule is correct under both models, with the same
// simulated times at the generator's costs.
#include <cstdint>
#include <string>
#include <vector>

namespace shoestring::parallel {

enum class Op : uint8_t {
  F,      // forward of (mb, chunk)
  B,      // full backward of (mb, chunk): input and weight gradients
  I,      // backward for the input only; the weight gradient waits for a later W (zero bubble)
  W,      // the deferred weight gradient of (mb, chunk), after its I
  FB,     // overlapped pair: forward of (mb, chunk) with the full backward of (mb2, chunk2)
  SendF,  // post the send of (mb, chunk)'s output activation to the next stage's rank
  RecvF,  // post the receive of (mb, chunk)'s input activation from the previous stage's rank
  SendB,  // post the send of (mb, chunk)'s input gradient to the previous stage's rank
  RecvB,  // post the receive of (mb, chunk)'s output gradient from the next stage's rank
};
const char* op_name(Op op);  // "F", "B", "I", "W", "FB", "SendF", ...

struct Action {
  Op op = Op::F;
  int mb = 0;     // micro-batch, 0-based
  int chunk = 0;  // which of this rank's chunks
  int mb2 = -1, chunk2 = -1;  // FB only: the backward half
  bool operator==(const Action&) const = default;
};
std::string to_string(const Action& a);  // "F3.0", "B3.1", "FB(F3.0,B1.1)", "SendF3.0", ...

struct Hop {
  int rank = 0, chunk = 0;
  bool operator==(const Hop&) const = default;
};

struct Schedule {
  std::string name;  // gpipe | 1f1b | interleaved | zb1p | dualpipe | dualpipev
  int pp = 1;
  int microbatches = 1;
  int chunks = 1;   // chunks (stages) per rank
  int stages = 1;   // stages a micro-batch passes through
  std::vector<std::vector<Hop>> routes;      // routes[r][stage]
  std::vector<int> route_of;                 // route of each micro-batch
  std::vector<std::vector<Action>> actions;  // per rank, in order

  const Hop& hop(int mb, int stage) const { return routes[size_t(route_of[size_t(mb)])][size_t(stage)]; }
  // The stage (rank, chunk) computes for micro-batch mb, or -1 when mb's route does not use it.
  int stage_of(int mb, int rank, int chunk) const;
  // The model stage (set of layers) chunk `chunk` of `rank` holds: the same for every route.
  int model_stage(int rank, int chunk) const;
  // Whether some model stage is held by more than one (rank, chunk) (DualPipe): the copies'
  // gradients must be summed before the optimizer step.
  bool duplicated_params() const { return chunks * pp > stages; }
};

struct ScheduleOptions {
  std::string name = "1f1b";
  int pp = 1;
  int microbatches = 1;
  int virtual_stages = 2;  // interleaved only: chunks per rank
};

std::vector<std::string> schedule_names();
// The fewest micro-batches `name` accepts at this pp (e.g. dualpipe: 2 x pp).
int min_microbatches(const ScheduleOptions& o);
// Builds the schedule; throws std::invalid_argument naming the constraint broken, with the
// minimum where that is the problem ("dualpipe needs an even pp, got 3";
// "dualpipe with pp=4 needs at least 8 micro-batches (2 x pp), got 6").
Schedule make_schedule(const ScheduleOptions& o);

enum class CommModel : uint8_t {
  Tagged,   // MPI: non-blocking posts matched by (kind, micro-batch, stage); the header's semantics
  InOrder,  // NCCL: matched by order, one blocking stream of sends and receives per rank (header)
};

struct Validation {
  std::vector<int> peak_activations;  // per rank: most (mb, chunk) forwarded and not yet backwarded (B/I)
};
// Checks: every micro-batch is forwarded and backwarded exactly once on every (rank, chunk) of its
// route (B, or I then W; FB counts its two halves), backward after forward, W after I, inputs
// come from the right place (a Recv posted before its consumer, matched by a Send after its
// producer on the peer, or a local producer earlier), no action refers to a chunk or micro-batch
// that does not exist, and running all ranks under the semantics above finishes (no deadlock).
// Throws std::invalid_argument with the first violation ("rank 2 action 7 (F3.0): input of
// micro-batch 3 stage 2 is never received"). Under CommModel::InOrder it also needs
// point_to_point_order() to hold ("point-to-point order: ...") and the run under that model to
// finish ("deadlock (in-order): ...").
Validation validate(const Schedule& s, CommModel model = CommModel::Tagged);

// What transports that match point-to-point messages by order rather than by tag need (NCCL
// pairs the n-th send from a to b with the n-th receive at b from a): for every direction between
// two ranks, the sender posts its messages in the order the receiver posts the receives. "" when
// that holds, else the first disagreement ("rank 0 -> rank 1, message 3: sent F of micro-batch 2
// from stage 0, received as F of micro-batch 1 from stage 0"). Expects a schedule validate() accepts.
std::string point_to_point_order(const Schedule& s);

// Costs per action for the simulator. The input-only backward I costs b - w; an overlapped FB
// costs fb; each message arrives `comm` after its Send.
struct ActionCosts {
  double f = 1, b = 2, w = 1, fb = 3, comm = 0;
};

struct TimedAction {
  Action action;
  double start = 0, end = 0;
};

struct Simulation {
  double makespan = 0;
  std::vector<double> busy;    // per rank: time spent computing
  std::vector<double> bubble;  // per rank: idle time (see simulate())
  std::vector<int> peak_activations;
  std::vector<std::vector<TimedAction>> timeline;  // per rank, compute actions only
};
// Runs the schedule with every rank starting at 0, each action as early as its inputs allow.
// Bubble of a rank = makespan - its busy time: every moment from the common start to the end of
// the step that it does not compute. With this definition DeepSeek-V3 Table 2 holds exactly
// (tests/parallel/test_schedule.cpp; docs/pipeline.md says where): 1F1B (PP-1)(F+B) on every
// rank; ZB1P (PP-1)(F+B-2W) on every rank when W <= F and W <= B-W; DualPipe (PP/2-1)(F&B+B-3W)
// on the worst rank when F = B-W, W <= F and B <= F&B <= F+B, with M >= 2 PP.
// Under CommModel::InOrder a message costs `comm` on both ranks' communication streams and starts
// when both ends are ready (the header's model); the makespan includes the last message.
Simulation simulate(const Schedule& s, const ActionCosts& costs, CommModel model = CommModel::Tagged);
// The same with costs per (rank, chunk): stages rarely cost the same (the first embeds, the last
// computes the head and loss). An FB pair costs fb x (f + b') / (f + b), with f, b, fb of its
// forward half's chunk and b' the backward of its backward half's: that chunk's overlap ratio
// applied to what the two halves cost (fb itself when both chunks cost the same).
Simulation simulate(const Schedule& s, const std::vector<std::vector<ActionCosts>>& costs,
                    CommModel model = CommModel::Tagged);
std::vector<std::vector<ActionCosts>> uniform_costs(const Schedule& s, const ActionCosts& c);
// Costs per (rank, chunk) from each model stage's forward time alone, as estimates from FLOPs
// give them: backward twice the forward, the weight half of it half of that, an overlapped pair
// the sum of its halves (no overlap assumed); every message `comm`.
std::vector<std::vector<ActionCosts>> costs_from_forward(const Schedule& s, const std::vector<double>& stage_forward,
                                                         double comm = 0);

// One row per rank, one cell per compute action, in the style of the DualPipe paper's figure.
std::string render_text(const Schedule& s, const Simulation& sim);
std::string render_svg(const Schedule& s, const Simulation& sim);

}  // namespace shoestring::parallel
