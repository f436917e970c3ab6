// Pipeline schedules (parallel/schedule.h): every generator over a grid of pp and micro-batches
// passes the validator, hand-broken schedules are rejected with the right message, and the
// simulated bubbles equal DeepSeek-V3 Table 2 where its assumptions hold.
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

#include "parallel/schedule.h"
#include "parallel/schedule_build.h"

namespace sp = shoestring::parallel;
using sp::Action;
using sp::Op;

namespace {

sp::Schedule make(const std::string& name, int pp, int mb, int v = 2) { return sp::make_schedule({name, pp, mb, v}); }

// The validator's message for s, or "" when it passes.
std::string violation(const sp::Schedule& s, sp::CommModel model = sp::CommModel::Tagged) {
  try {
    sp::validate(s, model);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

std::string make_error(const sp::ScheduleOptions& o) {
  try {
    sp::make_schedule(o);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

size_t find(const std::vector<Action>& acts, const Action& a) {
  return size_t(std::find(acts.begin(), acts.end(), a) - acts.begin());
}

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

TEST(Schedule, EveryGeneratorValidatesOverAGrid) {
  int checked = 0;
  for (const auto& name : sp::schedule_names())
    for (int pp = 1; pp <= 8; ++pp)
      for (int v : {2, 3}) {
        if (v == 3 && name != "interleaved") continue;
        const sp::ScheduleOptions o{name, pp, 1, v};
        for (int mb = sp::min_microbatches(o); mb <= 3 * pp + 3; ++mb) {
          sp::Schedule s;
          try {
            s = sp::make_schedule({name, pp, mb, v});
          } catch (const std::invalid_argument&) {
            continue;  // a documented constraint (odd pp or micro-batches, M % pp), tested below
          }
          SCOPED_TRACE(name + " pp=" + std::to_string(pp) + " mb=" + std::to_string(mb));
          EXPECT_EQ(violation(s), "");
          EXPECT_EQ(violation(s, sp::CommModel::InOrder), "");
          const auto sim = sp::simulate(s, sp::ActionCosts{});
          EXPECT_GT(sim.makespan, 0);
          ++checked;
        }
      }
  EXPECT_GT(checked, 300);
}

TEST(Schedule, ConstraintsAreNamed) {
  EXPECT_EQ(make_error({"dualpipe", 3, 12}), "dualpipe needs an even pp, got 3");
  EXPECT_EQ(make_error({"dualpipe", 4, 6}), "dualpipe with pp=4 needs at least 8 micro-batches (2 x pp), got 6");
  EXPECT_NE(make_error({"dualpipe", 4, 9}).find("even number of micro-batches"), std::string::npos);
  EXPECT_NE(make_error({"dualpipev", 3, 5}).find("at least 6"), std::string::npos);
  EXPECT_NE(make_error({"interleaved", 4, 6}).find("multiple of pp"), std::string::npos);
  const std::string unknown = make_error({"pipedream", 2, 2});
  for (const auto& n : sp::schedule_names()) EXPECT_NE(unknown.find(n), std::string::npos) << unknown;
  EXPECT_EQ(sp::min_microbatches({"dualpipe", 4, 1}), 8);
  EXPECT_EQ(sp::min_microbatches({"1f1b", 4, 1}), 1);
}

TEST(Schedule, SingleRankOneFOneBIsForwardBackwardPerMicroBatch) {
  const auto s = make("1f1b", 1, 3);
  const std::vector<Action> want{{Op::F, 0, 0}, {Op::B, 0, 0}, {Op::F, 1, 0}, {Op::B, 1, 0}, {Op::F, 2, 0}, {Op::B, 2, 0}};
  EXPECT_EQ(s.actions[0], want);
  EXPECT_EQ(violation(s), "");
}

TEST(Schedule, RoutesAndStages) {
  const auto d = make("dualpipe", 4, 8);
  EXPECT_EQ(d.model_stage(1, 0), 1);
  EXPECT_EQ(d.model_stage(1, 1), 2);
  EXPECT_EQ(d.stage_of(0, 3, 0), 3);   // route 0
  EXPECT_EQ(d.stage_of(5, 3, 1), 0);   // route 1 starts at the last rank
  EXPECT_EQ(d.stage_of(5, 3, 0), -1);  // route 1 never uses chunk 0
  const auto v = make("dualpipev", 4, 8);
  EXPECT_EQ(v.stages, 8);
  EXPECT_EQ(v.model_stage(3, 1), 4);  // the turn: stages 3 and 4 both on the last rank
  EXPECT_EQ(v.model_stage(0, 1), 7);
  for (const auto& a : v.actions[3]) EXPECT_FALSE(a.op == Op::SendF && a.chunk == 0) << "the turn is local";
  const auto i = make("interleaved", 4, 8, 2);
  EXPECT_EQ(i.model_stage(1, 1), 5);
}

TEST(Schedule, OnlyDualPipeDuplicatesParameters) {
  for (const auto& name : sp::schedule_names()) {
    const auto s = make(name, 4, 8);
    EXPECT_EQ(s.duplicated_params(), name == "dualpipe") << name;
  }
}

TEST(Schedule, ActionNames) {
  EXPECT_EQ(sp::to_string({Op::F, 3, 0}), "F3.0");
  EXPECT_EQ(sp::to_string({Op::FB, 3, 0, 1, 1}), "FB(F3.0,B1.1)");
  EXPECT_EQ(sp::to_string({Op::SendF, 3, 0}), "SendF3.0");
  EXPECT_STREQ(sp::op_name(Op::RecvB), "RecvB");
}

// Hand-broken schedules: each is rejected, and the message says where and what.
TEST(ScheduleValidator, DroppedBackward) {
  auto s = make("1f1b", 2, 3);
  auto& r1 = s.actions[1];
  const size_t at = find(r1, {Op::B, 2, 0});
  r1.erase(r1.begin() + long(at), r1.begin() + long(at) + 2);  // B2.0 and its SendB
  const auto msg = violation(s);
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("never backwarded"), std::string::npos) << msg;
}

TEST(ScheduleValidator, DuplicatedForward) {
  auto s = make("1f1b", 2, 3);
  auto& r0 = s.actions[0];
  r0.insert(r0.begin() + 1, r0[0]);
  EXPECT_EQ(violation(s), "rank 0 action 1 (F0.0): micro-batch 0 stage 0 is forwarded twice (first at action 0)");
}

TEST(ScheduleValidator, WeightBeforeItsInputBackward) {
  auto s = make("zb1p", 2, 3);
  auto& r1 = s.actions[1];
  const size_t w = find(r1, {Op::W, 0, 0});
  const Action moved = r1[w];
  r1.erase(r1.begin() + long(w));
  r1.insert(r1.begin() + long(find(r1, {Op::I, 0, 0})), moved);
  const auto msg = violation(s);
  EXPECT_NE(msg.find("W before its I"), std::string::npos) << msg;
}

TEST(ScheduleValidator, DeletedSend) {
  auto s = make("dualpipe", 4, 8);
  auto& r0 = s.actions[0];
  r0.erase(r0.begin() + long(find(r0, {Op::SendF, 0, 0})));
  const auto msg = violation(s);
  EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("never sent to rank 1"), std::string::npos) << msg;
}

TEST(ScheduleValidator, DeletedReceive) {
  auto s = make("1f1b", 2, 2);
  auto& r1 = s.actions[1];
  r1.erase(r1.begin() + long(find(r1, {Op::RecvF, 1, 0})));
  const auto msg = violation(s);
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("input of micro-batch 1 stage 1 is never received"), std::string::npos) << msg;
}

TEST(ScheduleValidator, SwappedOrdersDeadlock) {
  // Rank 0 takes rank 1's order (backward of 0 before forward of 1) and rank 1 rank 0's: each
  // waits for what the other will only send after waiting.
  auto s = make("1f1b", 2, 2);
  std::vector<shoestring::parallel::detail::ComputeOrder> compute(2);
  for (int r = 0; r < 2; ++r)
    for (const auto& a : s.actions[size_t(r)])
      if (shoestring::parallel::detail::is_compute(a.op)) compute[size_t(1 - r)].push_back(a);
  shoestring::parallel::detail::add_communication(s, compute);
  const auto msg = violation(s);
  EXPECT_NE(msg.find("deadlock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0 action"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1 action"), std::string::npos) << msg;
  EXPECT_NE(msg.find("waits for the gradient"), std::string::npos) << msg;
}

TEST(ScheduleValidator, ChunkThatDoesNotExist) {
  auto s = make("dualpipe", 2, 4);
  s.actions[0][0].chunk = 5;
  const auto msg = violation(s);
  EXPECT_NE(msg.find("rank 0 action 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("chunk 5 does not exist"), std::string::npos) << msg;
}

TEST(ScheduleValidator, BackwardBeforeForward) {
  auto s = make("1f1b", 1, 2);
  std::swap(s.actions[0][0], s.actions[0][1]);
  EXPECT_EQ(violation(s), "rank 0 action 0 (B0.0): backward before forward of micro-batch 0 stage 0");
}

// DeepSeek-V3 Table 2. Bubble = makespan - busy per rank; for 1F1B and ZB1P every rank has the
// same, for DualPipe(V) the table's figure is the worst rank's.
struct Costs {
  double f, b, w, fb;
};

TEST(ScheduleBubble, OneFOneBAndZeroBubbleMatchTable2) {
  for (const Costs c : {Costs{1, 2, 1, 3}, Costs{1, 2, 0.5, 2.5}, Costs{2, 3, 1, 4}, Costs{1, 3, 2, 3}, Costs{1, 4, 1, 4}})
    for (int pp : {2, 4, 8})
      for (int mb : {pp, 2 * pp + 1, 3 * pp + 3}) {
        const sp::ActionCosts costs{c.f, c.b, c.w, c.fb, 0};
        SCOPED_TRACE("pp=" + std::to_string(pp) + " mb=" + std::to_string(mb) + " f=" + std::to_string(c.f) +
                     " b=" + std::to_string(c.b) + " w=" + std::to_string(c.w));
        for (double bubble : sp::simulate(make("1f1b", pp, mb), costs).bubble) EXPECT_NEAR(bubble, (pp - 1) * (c.f + c.b), 1e-9);
        // ZB-H1's W's fill gaps as long as a forward and as long as an I: the formula needs
        // W <= F and W <= B - W. Beyond, the W's no longer fit and the bubble is
        // (PP-1)(F + I - min(W, F, I)) with I = B - W (observed; docs/pipeline.md).
        const double i = c.b - c.w;
        const double expect = c.w <= c.f && c.w <= i ? (pp - 1) * (c.f + c.b - 2 * c.w) : (pp - 1) * (c.f + i - std::min({c.w, c.f, i}));
        for (double bubble : sp::simulate(make("zb1p", pp, mb), costs).bubble) EXPECT_NEAR(bubble, expect, 1e-9);
      }
}

// The DualPipe formula holds for the reference schedule when F = B - W (forward as long as the
// input-only backward), W <= F and B <= F&B <= F + B: docs/pipeline.md.
TEST(ScheduleBubble, DualPipeMatchesTable2WhereItsAssumptionsHold) {
  for (const Costs c : {Costs{1, 2, 1, 3}, Costs{1, 2, 1, 2}, Costs{2, 3, 1, 4}, Costs{1.5, 2.5, 1, 3}, Costs{3, 5, 2, 7.9},
                        Costs{1, 1.5, 0.5, 2}, Costs{1, 1.2, 0.2, 1.7}, Costs{2, 2.5, 0.5, 3}})
    for (int pp : {2, 4, 8})
      for (int mb : {2 * pp, 2 * pp + 2, 4 * pp}) {
        const sp::ActionCosts costs{c.f, c.b, c.w, c.fb, 0};
        SCOPED_TRACE("pp=" + std::to_string(pp) + " mb=" + std::to_string(mb) + " f=" + std::to_string(c.f));
        const double table = (pp / 2 - 1) * (c.fb + c.b - 3 * c.w);
        EXPECT_NEAR(max_of(sp::simulate(make("dualpipe", pp, mb), costs).bubble), table, 1e-9);
        // DualPipeV: the same formula with its pp ranks in the place of DualPipe's PP/2.
        EXPECT_NEAR(max_of(sp::simulate(make("dualpipev", pp, mb), costs).bubble), (pp - 1) * (c.fb + c.b - 3 * c.w), 1e-9);
      }
}

TEST(ScheduleBubble, DualPipeOutsideTheAssumptionsDiffers) {
  // W = B/4: the formula says 9, the reference schedule does better (the I's are longer than the
  // forwards they pair with). Recorded, not hidden.
  const auto sim = sp::simulate(make("dualpipe", 8, 24), {1, 2, 0.5, 2.5, 0});
  EXPECT_NEAR(max_of(sim.bubble), 8, 1e-9);
  EXPECT_NEAR((8 / 2 - 1) * (2.5 + 2 - 3 * 0.5), 9, 1e-9);
}

TEST(ScheduleMemory, PeakActivations) {
  for (int pp : {2, 4, 8}) {
    const auto one = sp::validate(make("1f1b", pp, 3 * pp));
    EXPECT_EQ(one.peak_activations[0], pp);
    EXPECT_EQ(one.peak_activations[size_t(pp - 1)], 1);
    EXPECT_EQ(sp::validate(make("zb1p", pp, 3 * pp)).peak_activations[0], pp);
    // Table 2 says PP+1 for DualPipe; the reference schedule holds exactly that on every rank.
    const auto dual = sp::validate(make("dualpipe", pp, 3 * pp + (pp % 2 ? 1 : 0)));
    EXPECT_EQ(*std::max_element(dual.peak_activations.begin(), dual.peak_activations.end()), pp + 1);
    // DualPipeV counts half stages: 2 pp + 1 of them, PP + 1/2 stages' worth.
    const auto v = sp::validate(make("dualpipev", pp, 3 * pp));
    EXPECT_EQ(*std::max_element(v.peak_activations.begin(), v.peak_activations.end()), 2 * pp + 1);
  }
}

TEST(ScheduleSimulator, CommunicationDelaysArrival) {
  // F on rank 0, message, F then B on rank 1, message, B on rank 0.
  const auto sim = sp::simulate(make("1f1b", 2, 1), sp::ActionCosts{1, 2, 1, 3, 0.5});
  EXPECT_NEAR(sim.makespan, 1 + 0.5 + 1 + 2 + 0.5 + 2, 1e-12);
  EXPECT_NEAR(sim.busy[0], 3, 1e-12);
  EXPECT_NEAR(sim.bubble[0], sim.makespan - 3, 1e-12);
  ASSERT_EQ(sim.timeline[1].size(), 2u);
  EXPECT_NEAR(sim.timeline[1][0].start, 1.5, 1e-12);
}

TEST(ScheduleSimulator, CostsPerRankAndChunk) {
  // Uniform costs given per (rank, chunk) simulate exactly as the single set.
  const auto d = make("dualpipe", 4, 8);
  const sp::ActionCosts c{1, 2, 1, 3, 0};
  EXPECT_EQ(sp::simulate(d, sp::uniform_costs(d, c)).makespan, sp::simulate(d, c).makespan);
  // 1F1B, pp 2, 4 micro-batches, the second stage twice as slow (F 2, B 4 against F 1, B 2): it
  // is the bottleneck and never idles after its first input, so the step takes F0 + 4 (F1 + B1) + B0.
  const auto s = make("1f1b", 2, 4);
  std::vector<std::vector<sp::ActionCosts>> k{{sp::ActionCosts{1, 2, 0, 3, 0}}, {sp::ActionCosts{2, 4, 0, 6, 0}}};
  const auto sim = sp::simulate(s, k);
  EXPECT_NEAR(sim.makespan, 1 + 4 * 6 + 2, 1e-12);
  EXPECT_NEAR(sim.bubble[1], 1 + 2, 1e-12);
  EXPECT_NEAR(sim.busy[0], 4 * 3, 1e-12);
  k.pop_back();
  EXPECT_THROW(sp::simulate(s, k), std::invalid_argument);
}

TEST(ScheduleSimulator, OverlappedPairsCostWhatTheirHalvesCost) {
  // DualPipe pairs a forward of one chunk with a backward of the other. Chunk 0 costs F 1, B 2 with
  // F&B 2.4 (overlap ratio 0.8); chunk 1 F 2, B 4, F&B 4.8: a pair F(chunk 0) + B(chunk 1) takes
  // 0.8 x (1 + 4) = 4, one F(chunk 1) + B(chunk 0) 0.8 x (2 + 2) = 3.2.
  const auto d = make("dualpipe", 2, 8);
  const std::vector<sp::ActionCosts> rank{sp::ActionCosts{1, 2, 1, 2.4, 0}, sp::ActionCosts{2, 4, 2, 4.8, 0}};
  const auto sim = sp::simulate(d, {rank, rank});
  size_t pairs = 0;
  for (const auto& row : sim.timeline)
    for (const auto& t : row)
      if (t.action.op == sp::Op::FB) {
        ++pairs;
        EXPECT_NEAR(t.end - t.start, t.action.chunk == 0 ? 4.0 : 3.2, 1e-12) << sp::to_string(t.action);
      }
  EXPECT_GT(pairs, 0u);
}

// A stage may hold no blocks (more stages than blocks, or a split that leaves one empty): a pair
// whose forward half is such a chunk still costs its backward half, at the backward chunk's
// overlap ratio, never nothing (a free pair once made the partitioner pile every block on one rank).
TEST(ScheduleSimulator, APairWithAnEmptyForwardChunkCostsItsBackward) {
  const auto v = make("dualpipev", 2, 8);
  const sp::ActionCosts empty{0, 0, 0, 0, 0}, heavy{1, 2, 1, 2.4, 0};
  const auto sim = sp::simulate(v, {{heavy, empty}, {empty, heavy}});
  size_t pairs = 0;
  for (size_t r = 0; r < sim.timeline.size(); ++r)
    for (const auto& t : sim.timeline[r]) {
      if (t.action.op != sp::Op::FB) continue;
      ++pairs;
      const bool forward_heavy = (r == 0) == (t.action.chunk == 0), backward_heavy = (r == 0) == (t.action.chunk2 == 0);
      // 0.8 x (F of the forward chunk + B of the backward chunk)
      EXPECT_NEAR(t.end - t.start, 0.8 * ((forward_heavy ? 1 : 0) + (backward_heavy ? 2 : 0)), 1e-12)
          << "rank " << r << " " << sp::to_string(t.action);
    }
  EXPECT_GT(pairs, 0u);
}

TEST(ScheduleRender, TextAndSvg) {
  const auto s = make("dualpipe", 4, 8);
  const auto sim = sp::simulate(s, sp::ActionCosts{});
  const std::string text = sp::render_text(s, sim);
  EXPECT_EQ(text.rfind("rank 0 |F0", 0), 0u) << text;
  EXPECT_NE(text.find("rank 3 |f4"), std::string::npos) << text;  // route 1 starts at the last rank
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4);
  const std::string svg = sp::render_svg(s, sim);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  size_t rects = 0, computes = 0;
  for (size_t at = svg.find("<rect"); at != std::string::npos; at = svg.find("<rect", at + 1)) ++rects;
  for (const auto& row : sim.timeline) computes += row.size();
  EXPECT_EQ(rects, computes);
}

// point_to_point_order(): what NCCL (matching by order, not tag) needs. A hand-swapped pair of
// receives is caught with both messages named; every generator posts each rank pair's messages in
// one agreed order over the survey (the docs' table; before post_in_one_order dualpipe kept it in
// 4 of 8 layouts and dualpipev in 2).
TEST(SchedulePointToPointOrder, SwappedReceivesAreNamedAndGeneratorsAreSurveyed) {
  auto s = make("1f1b", 2, 4);
  EXPECT_EQ(sp::point_to_point_order(s), "");
  auto& r1 = s.actions[1];
  const size_t a = find(r1, {Op::RecvF, 1, 0}), b = find(r1, {Op::RecvF, 2, 0});
  ASSERT_LT(a, r1.size());
  ASSERT_LT(b, r1.size());
  const Action early = r1[b];  // post micro-batch 2's receive before 1's: still valid under tag
  r1.erase(r1.begin() + long(b));  // matching (posted before its consumer), but out of order
  r1.insert(r1.begin() + long(a), early);
  EXPECT_EQ(violation(s), "");
  const std::string msg = sp::point_to_point_order(s);
  EXPECT_NE(msg.find("rank 0 -> rank 1, message 1: sent F of micro-batch 1 from stage 0, received as F of micro-batch 2 "
                     "from stage 0"),
            std::string::npos)
      << msg;

  for (const auto& name : sp::schedule_names()) {
    int ordered = 0, total = 0;
    std::string first;
    for (int pp = 2; pp <= 8; pp += 2)
      for (int mb = 2 * pp; mb <= 3 * pp; mb += pp) {
        sp::Schedule g;
        try {
          g = make(name, pp, mb);
        } catch (const std::invalid_argument&) {
          continue;
        }
        const std::string m = sp::point_to_point_order(g);
        ++total;
        if (m.empty()) ++ordered;
        else if (first.empty()) first = "pp=" + std::to_string(pp) + " M=" + std::to_string(mb) + ": " + m;
      }
    std::printf("%-12s %d of %d layouts in one order per rank pair%s%s\n", name.c_str(), ordered, total,
                first.empty() ? "" : "; first disagreement: ", first.c_str());
    EXPECT_EQ(ordered, total) << name << ": " << first;
  }
}

namespace {

// The simulator's message under `model`, or "" when the run finishes.
std::string stuck(const sp::Schedule& s, sp::CommModel model) {
  try {
    sp::simulate(s, sp::ActionCosts{}, model);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// Moves the post `a` of rank r to just before the action `before`.
void move_before(std::vector<Action>& acts, const Action& a, const Action& before) {
  const size_t from = find(acts, a);
  ASSERT_LT(from, acts.size()) << sp::to_string(a);
  acts.erase(acts.begin() + long(from));
  const size_t to = find(acts, before);
  ASSERT_LT(to, acts.size()) << sp::to_string(before);
  acts.insert(acts.begin() + long(to), a);
}

}  // namespace

// CommModel::InOrder (schedule.h): NCCL's one blocking stream of sends and receives per rank. The
// survey of the docs (pp 2..8 even, M = 2 pp, 3 pp and odd or uneven counts each schedule
// accepts): every layout keeps one order per rank pair, finishes in order, and in order takes
// exactly the tag-matched time at the generator's unit costs (post_in_one_order's claim), and
// still finishes under other costs and a message cost.
TEST(ScheduleInOrder, EverySurveyedLayoutFinishesInOrderAsFastAsTagged) {
  int checked = 0;
  for (const auto& name : sp::schedule_names())
    for (int pp = 2; pp <= 8; pp += 2)
      for (int mb : {2 * pp, 3 * pp, 2 * pp + 1, 2 * pp + 2, 3 * pp + 1, 4 * pp}) {
        sp::Schedule s;
        try {
          s = make(name, pp, mb);
        } catch (const std::invalid_argument&) {
          continue;  // odd M for dualpipe, M % pp for interleaved
        }
        SCOPED_TRACE(name + " pp=" + std::to_string(pp) + " mb=" + std::to_string(mb));
        EXPECT_EQ(sp::point_to_point_order(s), "");
        EXPECT_EQ(violation(s, sp::CommModel::InOrder), "");
        const auto tagged = sp::simulate(s, sp::ActionCosts{});
        const auto in_order = sp::simulate(s, sp::ActionCosts{}, sp::CommModel::InOrder);
        EXPECT_EQ(in_order.makespan, tagged.makespan);
        EXPECT_EQ(in_order.busy, tagged.busy);
        const sp::ActionCosts other{1.3, 2.9, 0.7, 3.1, 0.25};
        EXPECT_GE(sp::simulate(s, other, sp::CommModel::InOrder).makespan, sp::simulate(s, other).makespan);
        ++checked;
      }
  // 6 x 4 x 6 less dualpipe's odd M (2 per pp) and interleaved's M % pp != 0 (2 at pp 2, else 3).
  EXPECT_EQ(checked, 6 * 4 * 6 - 4 * 2 - (2 + 3 * 3));
}

// Receives posted out of the sender's order: fine by tag, and point_to_point_order names the
// disagreement; in order, the receiver's first receive meets a send of another message, so both
// stop there.
TEST(ScheduleInOrder, SwappedReceivesAreCaughtByBothChecks) {
  auto s = make("dualpipe", 4, 8);
  auto& r1 = s.actions[1];
  move_before(r1, {Op::RecvF, 1, 0}, {Op::RecvF, 0, 0});
  EXPECT_EQ(violation(s), "");
  EXPECT_EQ(stuck(s, sp::CommModel::Tagged), "");
  const std::string order = sp::point_to_point_order(s);
  EXPECT_NE(order.find("rank 0 -> rank 1, message 0: sent F of micro-batch 0 from stage 0, received as F of micro-batch 1"),
            std::string::npos)
      << order;
  EXPECT_EQ(violation(s, sp::CommModel::InOrder).rfind("point-to-point order: rank 0 -> rank 1", 0), 0u)
      << violation(s, sp::CommModel::InOrder);
  const std::string msg = stuck(s, sp::CommModel::InOrder);
  EXPECT_EQ(msg.rfind("deadlock (in-order): ", 0), 0u) << msg;
  EXPECT_NE(msg.find("(RecvF1.0) waits for a matching send (rank 0 posts another message in that position)"),
            std::string::npos)
      << msg;
}

// Both directions of a rank pair in the same per-direction orders, interleaved differently on the
// two sides: point_to_point_order cannot see it, the in-order run can. This is the old rule (each
// receive just before its consumer) for 1F1B: rank 0 sends forwards 0 and 1 before it receives
// backward 0, rank 1 sends backward 0 before it receives forward 1, and each send blocks its
// stream until the other takes it. (Buffered small messages would pass; large ones hang.)
TEST(ScheduleInOrder, InterleavedDirectionsDeadlockOnlyInOrder) {
  auto s = make("1f1b", 2, 2);
  EXPECT_EQ(violation(s, sp::CommModel::InOrder), "");
  move_before(s.actions[1], {Op::RecvF, 1, 0}, {Op::F, 1, 0});
  EXPECT_EQ(violation(s), "");
  EXPECT_EQ(sp::point_to_point_order(s), "");
  const std::string msg = violation(s, sp::CommModel::InOrder);
  EXPECT_EQ(msg.rfind("deadlock (in-order): rank 0 ", 0), 0u) << msg;
  EXPECT_NE(msg.find("(SendF1.0) waits for rank 1 to reach its action"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1 action"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(SendB0.0) waits for rank 0 to reach its action"), std::string::npos) << msg;
}

// In order, a message holds both streams for its cost and starts when both ends are ready: one F
// on rank 0, the message (0.5), F and B on rank 1, the message back, B on rank 0: the same as
// tag-matched when nothing else is queued.
TEST(ScheduleInOrder, MessageCostOnBothStreams) {
  const sp::ActionCosts c{1, 2, 1, 3, 0.5};
  const auto s = make("1f1b", 2, 1);
  const auto sim = sp::simulate(s, c, sp::CommModel::InOrder);
  EXPECT_NEAR(sim.makespan, 1 + 0.5 + 1 + 2 + 0.5 + 2, 1e-12);
  ASSERT_EQ(sim.timeline[1].size(), 2u);
  EXPECT_NEAR(sim.timeline[1][0].start, 1.5, 1e-12);
}
