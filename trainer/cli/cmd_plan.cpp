// shoestring plan ...: the cost/memory planner (docs/planning.md): one layout from a config on N
// GPUs (memory per rank, communication, step time, cost of a token budget), or a search over
// layouts; and `plan schedule`: build, validate and simulate a pipeline schedule without running
// anything, print its timeline and bubble (docs/pipeline.md).
#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "parallel/schedule.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/planner/layout_search.h"
#include "trainer/planner/plan_report.h"

namespace po = boost::program_options;

namespace shoestring::cli {

namespace {

constexpr const char* kUsage =
    "usage: shoestring plan --config FILE [--set key=value ...] --gpus N --gpu NAME [--gpus-per-node 8]\n"
    "                       [--tokens 1e9] [--price USD] [--efficiency 0.4] [--margin 0.1] [--search] [--json]\n"
    "  plan the config's layout on N GPUs: memory per rank, communication, step time, cost of --tokens;\n"
    "  --search ranks every valid layout instead (docs/planning.md)\n"
    "       shoestring plan schedule --schedule NAME --pp N --microbatches M [--virtual-stages V] [--svg FILE]\n"
    "                                [--cost-f F --cost-b B --cost-w W --cost-fb FB --cost-comm C]\n"
    "  validate and simulate a pipeline schedule; print its timeline, bubble and activation memory\n";

// DeepSeek-V3 Table 2 (and the DualPipe README): the bubble each schedule is published with, in
// the costs of one stage. DualPipeV is DualPipe cut in half: its pp ranks play DualPipe's PP/2.
struct Formula {
  const char* text;
  double value;
};

bool paper_formula(const parallel::Schedule& s, const parallel::ActionCosts& c, Formula& out) {
  const double pp = s.pp;
  if (s.name == "1f1b") out = {"(PP-1)(F+B)", (pp - 1) * (c.f + c.b)};
  else if (s.name == "zb1p") out = {"(PP-1)(F+B-2W)", (pp - 1) * (c.f + c.b - 2 * c.w)};
  else if (s.name == "dualpipe") out = {"(PP/2-1)(F&B+B-3W)", (pp / 2 - 1) * (c.fb + c.b - 3 * c.w)};
  else if (s.name == "dualpipev") out = {"(PP-1)(F&B+B-3W), PP = ranks", (pp - 1) * (c.fb + c.b - 3 * c.w)};
  else return false;
  return true;
}

// How large a schedule `plan schedule` builds. The validator checks each consumer against its
// rank's earlier actions and looks each stage up along its route, so the time grows with the
// square of the actions per rank and with the stages (measured, one core: 1f1b pp 2 x 100,000
// micro-batches 42 s, pp 3000 x 4 micro-batches 42 s; within these limits the slowest shapes,
// 1f1b pp 1024 x 64 and gpipe pp 6 x 10,000, take 4-6 s and under 400 MB).
constexpr int64_t kMaxRanks = 1024;       // --pp
constexpr int64_t kMaxStages = 1024;      // pp x chunks per rank
constexpr int64_t kMaxPerRank = 10000;    // micro-batches x chunks per rank
constexpr int64_t kMaxForwards = 65536;   // pp x micro-batches x chunks per rank

// "" when the schedule o asks for is within the limits above, else why not (one line). Values the
// generators refuse anyway (pp < 1, too few micro-batches) are left to make_schedule's message.
std::string schedule_too_large(const parallel::ScheduleOptions& o) {
  if (o.pp < 1 || o.microbatches < 1 || o.virtual_stages < 1) return "";
  const int64_t pp = o.pp, m = o.microbatches;
  const int64_t chunks = planner::schedule_chunks(o.name, o.virtual_stages);
  const std::string per_rank = chunks == 1 ? ""
                               : o.name == "interleaved" ? " x --virtual-stages " + std::to_string(chunks)
                                                         : " x " + std::to_string(chunks) + " chunks per rank (" + o.name + ")";
  if (pp > kMaxRanks) return "--pp " + std::to_string(pp) + ": at most " + std::to_string(kMaxRanks) + " pipeline ranks";
  if (m * chunks > kMaxPerRank)
    return "--microbatches " + std::to_string(m) + per_rank + (chunks == 1 ? "" : " = " + std::to_string(m * chunks)) +
           ": at most " + std::to_string(kMaxPerRank) + " micro-batch forwards per rank";
  if (pp * chunks > kMaxStages)
    return "--pp " + std::to_string(pp) + per_rank + " = " + std::to_string(pp * chunks) + " model stages: at most " +
           std::to_string(kMaxStages);
  if (pp * m * chunks > kMaxForwards)
    return "--pp " + std::to_string(pp) + " x --microbatches " + std::to_string(m) + per_rank + " = " +
           std::to_string(pp * m * chunks) + " micro-batch forwards: at most " + std::to_string(kMaxForwards) +
           ", so that a plan takes seconds";
  return "";
}

// A flag's value as the user would write it back (%g: 1e+300, nan).
std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A cost flag's problem, or "": costs are times in any one unit, so they must be finite numbers
// (nan and inf break the replay's arithmetic), at most 1e12 (sums over every action stay exact
// enough and finite), and positive where an action without time makes no timeline (F, B, F&B).
std::string bad_cost(const char* flag, double v, bool positive) {
  if (std::isfinite(v) && v <= 1e12 && (positive ? v > 0 : v >= 0)) return "";
  return std::string(flag) + " " + number(v) + ": expected a finite number " + (positive ? "> 0" : ">= 0") + " and at most 1e12";
}

// The text timeline gives the shortest compute action one column (parallel/schedule_render.cpp),
// so costs of very different sizes (--cost-comm 1e7 beside --cost-f 1) make rows of millions of
// columns: 2.4 GB and 20 s for pp 4. Rows of more than this many columns are not drawn.
constexpr double kMaxTimelineCells = 4e6;  // pp x makespan / shortest action

double timeline_cells(const parallel::Schedule& s, const parallel::Simulation& sim, double& unit) {
  unit = 0;
  for (const auto& row : sim.timeline)
    for (const auto& t : row)
      if (t.end > t.start && (unit == 0 || t.end - t.start < unit)) unit = t.end - t.start;
  if (unit <= 0) unit = 1;
  return double(s.pp) * sim.makespan / unit;
}

int plan_schedule(const Args& args) {
  parallel::ScheduleOptions o;
  parallel::ActionCosts costs;
  std::string svg;
  po::options_description opts("shoestring plan schedule");
  opts.add_options()
      ("help,h", "show this help")
      ("schedule", po::value(&o.name)->required(), "gpipe | 1f1b | interleaved | zb1p | dualpipe | dualpipev")
      ("pp", po::value(&o.pp)->required(), "pipeline ranks")
      ("microbatches", po::value(&o.microbatches)->required(), "micro-batches per step")
      ("virtual-stages", po::value(&o.virtual_stages)->default_value(2), "interleaved: chunks per rank")
      ("svg", po::value(&svg), "also write the timeline as an SVG picture to this file")
      ("cost-f", po::value(&costs.f)->default_value(1), "forward of one chunk")
      ("cost-b", po::value(&costs.b)->default_value(2), "full backward of one chunk (input-only backward: B - W)")
      ("cost-w", po::value(&costs.w)->default_value(1), "weight-gradient part of the backward")
      ("cost-fb", po::value(&costs.fb)->default_value(3), "overlapped forward + backward pair (DualPipe's F&B)")
      ("cost-comm", po::value(&costs.comm)->default_value(0), "time from a send to its arrival");
  po::variables_map vm;
  if (auto rc = parse_command_line(opts, args, vm)) return *rc;
  for (const std::string& why : {bad_cost("--cost-f", costs.f, true), bad_cost("--cost-b", costs.b, true),
                                 bad_cost("--cost-w", costs.w, false), bad_cost("--cost-fb", costs.fb, true),
                                 bad_cost("--cost-comm", costs.comm, false)})
    if (!why.empty()) {
      std::cerr << "shoestring plan: " << why << "\n";
      return 2;
    }
  if (costs.w > costs.b) {
    std::cerr << "shoestring plan: --cost-w " << costs.w << " must be at most --cost-b " << costs.b
              << " (W is the weight-gradient part of the backward)\n";
    return 2;
  }
  // An existing file is overwritten, as output flags are; a directory is not a file, and a
  // missing folder would fail only after the work.
  if (const std::string why = unwritable_output(vm, "--svg", svg); !why.empty()) {
    std::cerr << "shoestring plan: " << why << "\n";
    return 2;
  }
  if (const std::string why = schedule_too_large(o); !why.empty()) {
    std::cerr << "shoestring plan: " << why << "\n";
    return 2;
  }
  parallel::Schedule s;
  try {
    s = parallel::make_schedule(o);
  } catch (const std::invalid_argument& e) {
    std::cerr << "shoestring plan: " << e.what() << "\n";
    return 2;
  }
  // A generated schedule that fails validation is our bug, not the user's: main reports it (exit 1).
  const parallel::Validation v = parallel::validate(s);
  const parallel::Simulation sim = parallel::simulate(s, costs);
  double unit = 1;
  if (const double cells = timeline_cells(s, sim, unit); cells <= kMaxTimelineCells) {
    std::cout << parallel::render_text(s, sim) << "\n";
  } else {
    std::printf("timeline not drawn: %d rows of %.3g columns (makespan %g in columns of the shortest action, %g); "
                "costs of more similar sizes draw one\n\n",
                s.pp, sim.makespan / unit, sim.makespan, unit);
  }
  std::printf("schedule %s: pp %d, %d micro-batches, %d stages, %d chunk(s) per rank, parameters x%d\n",
              s.name.c_str(), s.pp, s.microbatches, s.stages, s.chunks, s.duplicated_params() ? 2 : 1);
  std::printf("costs: F %g  B %g  W %g  F&B %g  comm %g\n", costs.f, costs.b, costs.w, costs.fb, costs.comm);
  std::printf("makespan %g\n", sim.makespan);
  std::printf("rank  busy  bubble  peak activations (chunks)\n");
  for (int r = 0; r < s.pp; ++r)
    std::printf("%4d  %4g  %6g  %d\n", r, sim.busy[size_t(r)], sim.bubble[size_t(r)], v.peak_activations[size_t(r)]);
  Formula f{};
  if (paper_formula(s, costs, f)) {
    const double worst = *std::max_element(sim.bubble.begin(), sim.bubble.end());
    std::printf("bubble: paper %s = %g; simulated rank 0 %g, worst rank %g\n", f.text, f.value, sim.bubble[0], worst);
  }
  const std::string order = parallel::point_to_point_order(s);
  std::printf("point-to-point order: %s\n", order.empty() ? "one order per rank pair (order-matching transports such as NCCL can carry it)"
                                                            : ("differs between sender and receiver (NCCL could not carry it): " + order).c_str());
  // The same costs under NCCL's model (schedule.h, CommModel::InOrder): one blocking stream of
  // sends and receives per rank.
  try {
    const parallel::Simulation strict = parallel::simulate(s, costs, parallel::CommModel::InOrder);
    std::printf("in-order run (NCCL: one blocking stream of sends and receives per rank): finishes, makespan %g\n",
                strict.makespan);
  } catch (const std::invalid_argument& e) {
    std::printf("in-order run (NCCL: one blocking stream of sends and receives per rank): %s\n", e.what());
  }
  if (!svg.empty()) {
    std::ofstream out(svg);
    out << parallel::render_svg(s, sim);
    if (!out) {
      std::cerr << "shoestring plan: cannot write " << svg << "\n";
      return 1;
    }
  }
  return 0;
}

int plan_layout(const Args& args) {
  ConfigOptions co;
  std::string gpu;
  planner::Hardware hw;
  planner::PlanOptions po_;
  bool search = false, json = false;
  int64_t top = 20;
  po::options_description opts("shoestring plan");
  add_config_options(opts, co);
  opts.add_options()
      ("help,h", "show this help")
      ("gpus", po::value(&hw.gpus)->required(), "GPUs in the job")
      ("gpu", po::value(&gpu)->required(), "GPU kind: h100, h200, h800, a100, or cpu (this machine)")
      ("gpus-per-node", po::value(&hw.gpus_per_node)->default_value(8), "GPUs per node (NVLink domain)")
      ("tokens", po::value(&po_.tokens)->default_value(1e9), "training tokens to price")
      ("price", po::value(&po_.price), "$ per GPU-hour (default: the GPU table's)")
      ("efficiency", po::value(&hw.efficiency)->default_value(0.4), "achieved fraction of peak FLOPS for compute")
      ("margin", po::value(&po_.margin)->default_value(0.1), "share of device memory kept free")
      ("search", po::bool_switch(&search), "rank every valid layout by cost instead")
      ("top", po::value(&top)->default_value(20), "--search: rows to print")
      ("json", po::bool_switch(&json), "machine-readable output");
  po::variables_map vm;
  if (auto rc = parse_command_line(opts, args, vm)) return *rc;
  try {
    if (co.files.empty()) throw planner::PlanError("--config is required");
    // Each test is written so that nan fails it: nan compares false with everything.
    if (!(hw.efficiency > 0 && hw.efficiency <= 1))
      throw planner::PlanError("--efficiency " + number(hw.efficiency) + ": expected a fraction in (0, 1]");
    if (!(po_.margin >= 0 && po_.margin < 1))
      throw planner::PlanError("--margin " + number(po_.margin) + ": expected a fraction in [0, 1)");
    if (!(po_.tokens > 0 && std::isfinite(po_.tokens)))
      throw planner::PlanError("--tokens " + number(po_.tokens) + ": expected a finite number > 0");
    // Unset, the GPU table's price is used (PlanOptions::price < 0); a given price must be one.
    if (vm.count("price") && !(po_.price >= 0 && std::isfinite(po_.price)))
      throw planner::PlanError("--price " + number(po_.price) + ": expected a finite number of $ per GPU-hour >= 0");
    if (top < 1) throw planner::PlanError("--top " + std::to_string(top) + ": expected at least 1 row");
    hw.gpu = planner::find_gpu(gpu);
    const Config cfg = load_config(co.files, co.sets);
    if (search) {
      const planner::SearchResult r = planner::search_layouts(cfg, hw, po_);
      if (json) {
        std::cout << "[";
        for (size_t i = 0; i < r.plans.size() && i < size_t(top); ++i) {
          std::string one = planner::render_json(r.plans[i]);
          one.pop_back();  // the newline
          std::cout << (i ? ",\n" : "") << one;
        }
        std::cout << "]\n";
        if (r.too_large > 0) std::cerr << "shoestring plan: " << planner::too_large_note(r) << "\n";
      } else {
        std::cout << planner::render_search_table(r, size_t(top));
      }
      if (r.plans.empty()) {
        std::cerr << "shoestring plan: no valid layout for " << hw.gpus << " GPUs and a global batch of "
                  << r.global_batch << " sequences\n";
        return 1;
      }
      return 0;
    }
    const planner::Plan p = planner::make_plan(cfg, hw, po_);
    std::cout << (json ? planner::render_json(p) : planner::render_text(p));
  } catch (const planner::PlanError& e) {
    std::cerr << "shoestring plan: " << e.what() << "\n";
    return 2;
  } catch (const ConfigError& e) {
    std::cerr << "shoestring plan: config error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

}  // namespace

int cmd_plan(const Args& args) {
  if (const auto rc = usage_exit(args, kUsage)) return *rc;
  if (args[0].rfind("--", 0) == 0) return plan_layout(args);
  if (args[0] != "schedule") {
    std::cerr << "shoestring plan: unknown plan '" << args[0] << "' (plans: schedule, or --config ...; see shoestring plan --help)\n";
    return 2;
  }
  return plan_schedule(Args(args.begin() + 1, args.end()));
}

}  // namespace shoestring::cli
