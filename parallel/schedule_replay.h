#pragma once
// Runs every rank of a schedule under one of the communication models of schedule.h: the engines
// behind the validator's deadlock check and the simulator, so the two can never disagree.
#include <limits>
#include <string>
#include <vector>

#include "parallel/schedule.h"

namespace shoestring::parallel::detail {

struct Replay {
  bool finished = false;
  std::string stuck;  // when !finished: every stuck rank, its next action and what it waits for
  double makespan = 0;
  std::vector<double> busy;
  std::vector<std::vector<TimedAction>> timeline;  // compute actions only
};

// What an action needs before it can run: a local forward/backward, or a message from a peer.
enum class Need { LocalF, LocalB, MsgF, MsgB };
struct Input {
  Need need;
  int mb, stage;  // the producing stage
  int from_rank;  // messages only
};
// At most three (an FB's forward input and its backward's two), in place: start_of asks at every
// step of every replay, and allocating a vector each time was a tenth of a layout search.
struct Inputs {
  Input at[3];
  int n = 0;
  void push_back(const Input& in) { at[n++] = in; }
  const Input* begin() const { return at; }
  const Input* end() const { return at + n; }
};
Inputs inputs_of(const Schedule& s, int rank, const Action& a);
std::string describe(const Input& in);  // "the activation of micro-batch 3 stage 1 from rank 1"
// What action a costs on `rank` (an FB: schedule.h, simulate()); posts cost nothing.
double action_cost(const std::vector<std::vector<ActionCosts>>& table, int rank, const Action& a);

// The two engines' shared bookkeeping: when each (micro-batch, stage)'s forward, backward and
// messages are done (kNotYet until then), and what a compute action waits for.
constexpr double kNotYet = std::numeric_limits<double>::infinity();
struct Ends {
  explicit Ends(const Schedule& s);
  double time(const Input& in) const;
  double& msg(bool grad, int mb, int stage) { return at(grad ? msg_b : msg_f, mb, stage); }
  // When compute action a of rank can start, once the rank is free at `free`: kNotYet while an
  // input is missing.
  double start_of(const Schedule& s, int rank, const Action& a, double free) const;
  void finish(const Schedule& s, int rank, const Action& a, double end);  // records its outputs
  std::string waits(const Schedule& s, int rank, const Action& a) const;  // its missing inputs

 private:
  double& at(std::vector<double>& v, int mb, int stage) { return v[size_t(mb * stages_ + stage)]; }
  double at(const std::vector<double>& v, int mb, int stage) const { return v[size_t(mb * stages_ + stage)]; }
  int stages_;
  std::vector<double> f_end, b_end, msg_f, msg_b;  // by mb * stages + stage
};

// Assumes the static checks of validate() passed (indices in range, each input produced once).
// costs[rank][chunk]: what each action of that chunk costs there (an FB: schedule.h, simulate()).
Replay replay(const Schedule& s, const std::vector<std::vector<ActionCosts>>& costs);

// The same under CommModel::InOrder (schedule.h): per rank a compute stream and one in-order
// communication stream, each send meeting the receive in the same position of its direction. A
// send with no such receive, or one of another message, leaves both stuck (point_to_point_order()
// names the mismatch; validate() checks it first). `stuck` names each stuck rank's two heads.
Replay replay_in_order(const Schedule& s, const std::vector<std::vector<ActionCosts>>& costs);

}  // namespace shoestring::parallel::detail
