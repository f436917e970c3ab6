// DualPipe (DeepSeek-V3 §3.2.1, Figure 5) and DualPipeV, its "cut-in-half" variant, re-expressed
// from the reference schedules in deepseek-ai/DualPipe (dualpipe/dualpipe.py and
// dualpipe/dualpipev.py).
//
// Both references run the same eight phases on each rank; only the sizes differ. A rank works in
// two "phases": phase 0 is the direction in which it sits nearer the start (its warm-up phase),
// phase 1 the other one. In DualPipe a rank of the first half holds route 0 on chunk 0 and route 1
// on chunk 1 and is early in route 0, so its phase p is chunk p; for the second half it is chunk
// 1 - p. In DualPipeV phase p is chunk p (chunk 0 = the way down the V, chunk 1 = the way back).
#include <deque>
#include <utility>

#include "parallel/schedule_build.h"

namespace shoestring::parallel::detail {
namespace {

// One step of the phase program, before micro-batches are assigned.
struct Step {
  enum Kind { F, B, W, FB } kind;
  int phase = 0;         // F, B: the phase; FB: the forward's phase
  int phase2 = 0;        // FB: the backward's phase
  bool zero_bubble = false;  // B: split into I now and a W later
};

// The eight phases of dualpipe.py / dualpipev.py for one rank. n: ranks per direction (DualPipe:
// pp/2, DualPipeV: pp); h: this rank's distance from the start of its phase-0 direction
// (DualPipe: min(r, pp-1-r), DualPipeV: r); k: micro-batches per phase (DualPipe: M/2,
// DualPipeV: M); turn: the rank where the two directions meet (DualPipe: the middle ranks,
// DualPipeV: the last rank), whose first forward/backward pair is not overlapped.
std::vector<Step> phase_program(int n, int h, int k, bool turn) {
  std::vector<Step> p;
  auto f = [&](int ph) { p.push_back({Step::F, ph}); };
  auto b = [&](int ph, bool zb = false) { p.push_back({Step::B, ph, 0, zb}); };
  auto fb = [&](int ph, int ph2) { p.push_back({Step::FB, ph, ph2}); };
  auto w = [&] { p.push_back({Step::W}); };
  // 1: nF0. Ranks nearer the start run ahead so that phase 0 fills the pipe.
  for (int i = 0; i < 2 * (n - h - 1); ++i) f(0);
  // 2: nF0F1. Alternate forwards, phase 1's micro-batches now arriving from the far end.
  for (int i = 0; i < h + 1; ++i) f(0), f(1);
  // 3: nB1W1F1. The first backwards of phase 1, zero-bubble: W right after I fills the wait.
  for (int i = 0; i < n - h - 1; ++i) b(1, true), w(), f(1);
  // 4: nF0B1F1B0, the steady state: every forward overlaps a backward of the other phase. The
  // turn rank runs its first pair unoverlapped (the reference's note: a smaller bubble).
  for (int i = 0; i < k - 2 * n + h + 1; ++i) {
    if (i == 0 && turn) f(0), b(1);
    else fb(0, 1);
    fb(1, 0);
  }
  // 5: nB1F1B0. Phase 0 has no forwards left.
  for (int i = 0; i < n - h - 1; ++i) b(1), fb(1, 0);
  // 6: nB1B0. From the middle on, backwards leave their W for later (zero bubble).
  bool zb = false;
  for (int i = 0; i < h + 1; ++i) {
    if (i == (h + 1) / 2 && h % 2 == 1) zb = true;
    b(1, zb);
    if (i == (h + 1) / 2 && h % 2 == 0) zb = true;
    b(0, zb);
  }
  // 7: nWB0 and 8: nW. Deferred weight gradients fill the drain.
  for (int i = 0; i < n - h - 1; ++i) w(), b(0, true);
  for (int i = 0; i < h + 1; ++i) w();
  return p;
}

// Turns a phase program into actions: the j-th forward (backward) of a phase works on that
// phase's j-th micro-batch; W pops the oldest pending I, as the reference's WeightGradStore does.
ComputeOrder assign(const std::vector<Step>& program, int chunk_of_phase[2], int first_mb_of_chunk[2]) {
  ComputeOrder out;
  int next_f[2] = {0, 0}, next_b[2] = {0, 0};
  std::deque<std::pair<int, int>> pending;  // (mb, chunk) waiting for W
  auto take_f = [&](int ph) { return std::pair{first_mb_of_chunk[chunk_of_phase[ph]] + next_f[ph]++, chunk_of_phase[ph]}; };
  auto take_b = [&](int ph) { return std::pair{first_mb_of_chunk[chunk_of_phase[ph]] + next_b[ph]++, chunk_of_phase[ph]}; };
  for (const Step& st : program) {
    if (st.kind == Step::F) {
      const auto [m, c] = take_f(st.phase);
      out.push_back({Op::F, m, c});
    } else if (st.kind == Step::B) {
      const auto [m, c] = take_b(st.phase);
      out.push_back({st.zero_bubble ? Op::I : Op::B, m, c});
      if (st.zero_bubble) pending.push_back({m, c});
    } else if (st.kind == Step::W) {
      const auto [m, c] = pending.front();
      pending.pop_front();
      out.push_back({Op::W, m, c});
    } else {
      const auto [m, c] = take_f(st.phase);
      const auto [m2, c2] = take_b(st.phase2);
      out.push_back({Op::FB, m, c, m2, c2});
    }
  }
  return out;
}

}  // namespace

Schedule make_dualpipe(int pp, int microbatches) {
  Schedule s;
  s.name = "dualpipe";
  s.pp = pp;
  s.microbatches = microbatches;
  s.chunks = 2;
  s.stages = pp;
  s.routes.resize(2);
  for (int st = 0; st < pp; ++st) {
    s.routes[0].push_back({st, 0});
    s.routes[1].push_back({pp - 1 - st, 1});
  }
  const int half = microbatches / 2;
  for (int m = 0; m < microbatches; ++m) s.route_of.push_back(m < half ? 0 : 1);
  std::vector<ComputeOrder> order;
  for (int r = 0; r < pp; ++r) {
    const bool second_half = r >= pp / 2;
    const int h = second_half ? pp - 1 - r : r;
    int chunk_of_phase[2] = {second_half ? 1 : 0, second_half ? 0 : 1};
    int first_mb[2] = {0, half};  // chunk 0 carries route 0's micro-batches, chunk 1 route 1's
    order.push_back(assign(phase_program(pp / 2, h, half, h == pp / 2 - 1), chunk_of_phase, first_mb));
  }
  add_communication(s, order);
  return s;
}

Schedule make_dualpipev(int pp, int microbatches) {
  Schedule s;
  s.name = "dualpipev";
  s.pp = pp;
  s.microbatches = microbatches;
  s.chunks = 2;
  s.stages = 2 * pp;
  s.routes.resize(1);
  for (int st = 0; st < 2 * pp; ++st) s.routes[0].push_back(st < pp ? Hop{st, 0} : Hop{2 * pp - 1 - st, 1});
  s.route_of.assign(size_t(microbatches), 0);
  std::vector<ComputeOrder> order;
  for (int r = 0; r < pp; ++r) {
    int chunk_of_phase[2] = {0, 1};
    int first_mb[2] = {0, 0};  // every micro-batch goes down the V (chunk 0) and back (chunk 1)
    order.push_back(assign(phase_program(pp, r, microbatches, r == pp - 1), chunk_of_phase, first_mb));
  }
  add_communication(s, order);
  return s;
}

}  // namespace shoestring::parallel::detail
