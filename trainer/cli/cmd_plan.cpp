// shoestring plan schedule ...: build, validate and simulate a pipeline schedule without running
// anything, print its timeline and bubble (docs/pipeline.md).
#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "parallel/schedule.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"

namespace po = boost::program_options;

namespace shoestring::cli {

namespace {

constexpr const char* kUsage =
    "usage: shoestring plan schedule --schedule NAME --pp N --microbatches M [--virtual-stages V] [--svg FILE]\n"
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
  if (costs.f < 0 || costs.b < 0 || costs.w < 0 || costs.fb < 0 || costs.comm < 0 || costs.w > costs.b) {
    std::cerr << "shoestring plan: costs must be >= 0 and --cost-w at most --cost-b\n";
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
  std::cout << parallel::render_text(s, sim) << "\n";
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

}  // namespace

int cmd_plan(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    (args.empty() ? std::cerr : std::cout) << kUsage;
    return args.empty() ? 2 : 0;
  }
  if (args[0] != "schedule") {
    std::cerr << "shoestring plan: unknown plan '" << args[0] << "' (plans: schedule; see shoestring plan --help)\n";
    return 2;
  }
  return plan_schedule(Args(args.begin() + 1, args.end()));
}

}  // namespace shoestring::cli
