// Names, lookups, constraints and the dispatch of make_schedule; the communication posts that
// every generator shares (schedule_build.h).
#include <algorithm>
#include <stdexcept>

#include "parallel/schedule.h"
#include "parallel/schedule_build.h"

namespace shoestring::parallel {

const char* op_name(Op op) {
  switch (op) {
    case Op::F: return "F";
    case Op::B: return "B";
    case Op::I: return "I";
    case Op::W: return "W";
    case Op::FB: return "FB";
    case Op::SendF: return "SendF";
    case Op::RecvF: return "RecvF";
    case Op::SendB: return "SendB";
    case Op::RecvB: return "RecvB";
  }
  return "?";
}

std::string to_string(const Action& a) {
  auto half = [](const char* op, int mb, int chunk) {
    return std::string(op) + std::to_string(mb) + "." + std::to_string(chunk);
  };
  if (a.op == Op::FB) return "FB(" + half("F", a.mb, a.chunk) + "," + half("B", a.mb2, a.chunk2) + ")";
  return half(op_name(a.op), a.mb, a.chunk);
}

int Schedule::stage_of(int mb, int rank, int chunk) const {
  if (mb < 0 || size_t(mb) >= route_of.size()) return -1;
  const auto& route = routes[size_t(route_of[size_t(mb)])];
  for (size_t st = 0; st < route.size(); ++st)
    if (route[st] == Hop{rank, chunk}) return int(st);
  return -1;
}

int Schedule::model_stage(int rank, int chunk) const {
  for (const auto& route : routes)
    for (size_t st = 0; st < route.size(); ++st)
      if (route[st] == Hop{rank, chunk}) return int(st);
  return -1;
}

std::vector<std::string> schedule_names() { return {"gpipe", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev"}; }

int min_microbatches(const ScheduleOptions& o) {
  // DualPipe: each direction needs pp micro-batches to fill its warm-up (dualpipe.py asserts
  // num_chunks >= 2 x num_ranks); DualPipeV's V has 2 x pp stages to fill. Interleaved: Megatron
  // groups micro-batches by pp.
  if (o.name == "dualpipe" || o.name == "dualpipev") return 2 * o.pp;
  if (o.name == "interleaved") return o.pp;
  return 1;
}

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string names_list() {
  std::string out;
  for (const auto& n : schedule_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

Schedule make_schedule(const ScheduleOptions& o) {
  const auto names = schedule_names();
  if (std::find(names.begin(), names.end(), o.name) == names.end())
    fail("unknown schedule '" + o.name + "' (schedules: " + names_list() + ")");
  if (o.pp < 1) fail("pp must be at least 1, got " + std::to_string(o.pp));
  const std::string at = o.name + " with pp=" + std::to_string(o.pp);
  const int least = min_microbatches(o);
  if (o.name == "dualpipe" && o.pp % 2 != 0) fail("dualpipe needs an even pp, got " + std::to_string(o.pp));
  if (o.microbatches < least) {
    const char* why = o.name == "dualpipe" || o.name == "dualpipev" ? " (2 x pp)" : o.name == "interleaved" ? " (pp)" : "";
    fail(at + " needs at least " + std::to_string(least) + (least == 1 ? " micro-batch" : " micro-batches") + why + ", got " +
         std::to_string(o.microbatches));
  }
  if (o.name == "dualpipe" && o.microbatches % 2 != 0)
    fail("dualpipe needs an even number of micro-batches (half enter from each end), got " +
         std::to_string(o.microbatches));
  if (o.name == "interleaved") {
    if (o.virtual_stages < 1) fail("interleaved needs virtual-stages >= 1, got " + std::to_string(o.virtual_stages));
    // Megatron's interleaved order walks micro-batches in groups of pp (schedules.py asserts it).
    if (o.microbatches % o.pp != 0)
      fail(at + " needs micro-batches to be a multiple of pp (" + std::to_string(o.pp) + "), got " +
           std::to_string(o.microbatches));
  }
  if (o.name == "gpipe") return detail::make_gpipe(o.pp, o.microbatches);
  if (o.name == "1f1b") return detail::make_1f1b(o.pp, o.microbatches);
  if (o.name == "interleaved") return detail::make_interleaved(o.pp, o.microbatches, o.virtual_stages);
  if (o.name == "zb1p") return detail::make_zb1p(o.pp, o.microbatches);
  if (o.name == "dualpipe") return detail::make_dualpipe(o.pp, o.microbatches);
  return detail::make_dualpipev(o.pp, o.microbatches);
}

namespace detail {

Schedule linear_layout(const std::string& name, int pp, int microbatches) {
  Schedule s;
  s.name = name;
  s.pp = pp;
  s.microbatches = microbatches;
  s.chunks = 1;
  s.stages = pp;
  s.routes.resize(1);
  for (int r = 0; r < pp; ++r) s.routes[0].push_back({r, 0});
  s.route_of.assign(size_t(microbatches), 0);
  return s;
}

void add_communication(Schedule& s, const std::vector<ComputeOrder>& compute) {
  s.actions.assign(size_t(s.pp), {});
  for (int r = 0; r < s.pp; ++r) {
    auto& out = s.actions[size_t(r)];
    // Whether the stage `step` away from (mb, chunk) of this rank exists and sits on another rank.
    auto remote = [&](int mb, int chunk, int step) {
      const int st = s.stage_of(mb, r, chunk) + step;
      if (st < 0 || st >= s.stages) return false;
      return s.hop(mb, st).rank != r;
    };
    for (const Action& a : compute[size_t(r)]) {
      const bool fwd = a.op == Op::F || a.op == Op::FB;
      const bool bwd = a.op == Op::B || a.op == Op::I;
      const int bmb = a.op == Op::FB ? a.mb2 : a.mb, bchunk = a.op == Op::FB ? a.chunk2 : a.chunk;
      if (fwd && remote(a.mb, a.chunk, -1)) out.push_back({Op::RecvF, a.mb, a.chunk});
      if ((bwd || a.op == Op::FB) && remote(bmb, bchunk, +1)) out.push_back({Op::RecvB, bmb, bchunk});
      out.push_back(a);
      if (fwd && remote(a.mb, a.chunk, +1)) out.push_back({Op::SendF, a.mb, a.chunk});
      if ((bwd || a.op == Op::FB) && remote(bmb, bchunk, -1)) out.push_back({Op::SendB, bmb, bchunk});
    }
  }
  post_in_one_order(s);
}

int peak_activations(const std::vector<Action>& actions) {
  int live = 0, peak = 0;
  for (const Action& a : actions) {
    if (a.op == Op::F || a.op == Op::FB) peak = std::max(peak, ++live);
    if (a.op == Op::B || a.op == Op::I || a.op == Op::FB) --live;
  }
  return peak;
}

}  // namespace detail
}  // namespace shoestring::parallel
