#include "trainer/pipeline_bench.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <tuple>

#include "parallel/process_group.h"
#include "parallel/schedule.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/train.h"

namespace fs = std::filesystem;

namespace shoestring {

namespace {

// One rank's timed steps, as text: "step op chunk start end wait" per compute action.
std::string serialize(const std::vector<std::vector<parallel::ExecutedAction>>& steps, size_t first) {
  std::ostringstream s;
  s.precision(17);
  for (size_t i = first; i < steps.size(); ++i)
    for (const auto& a : steps[i])
      s << i << ' ' << int(a.action.op) << ' ' << a.action.chunk << ' ' << a.start << ' ' << a.end << ' ' << a.wait
        << '\n';
  return s.str();
}

struct Timed {
  int op = 0, chunk = 0;
  double start = 0, end = 0, wait = 0;
  double compute() const { return end - start - wait; }
};

// Mean compute time of each op on each (rank, chunk), turned into simulator costs: a chunk that
// never ran a plain B (zero bubble: I and W) costs I + W for it; one that never ran an FB pair
// costs F + B for it; W is 0 where the schedule does not split backward.
std::vector<std::vector<parallel::ActionCosts>> measured_costs(
    const std::map<int64_t, std::vector<std::vector<Timed>>>& steps, int pp, int chunks) {
  std::map<std::tuple<int, int, int>, std::pair<double, int64_t>> sum;  // (rank, chunk, op)
  for (const auto& [step, ranks] : steps)
    for (int r = 0; r < pp; ++r)
      for (const Timed& t : ranks[size_t(r)]) {
        auto& e = sum[{r, t.chunk, t.op}];
        e.first += t.compute();
        e.second += 1;
      }
  std::vector<std::vector<parallel::ActionCosts>> out(size_t(pp), std::vector<parallel::ActionCosts>(size_t(chunks), parallel::ActionCosts{}));
  for (int r = 0; r < pp; ++r)
    for (int c = 0; c < chunks; ++c) {
      auto mean = [&](parallel::Op op) {
        auto it = sum.find({r, c, int(op)});
        return it == sum.end() ? -1.0 : it->second.first / double(it->second.second);
      };
      parallel::ActionCosts& k = out[size_t(r)][size_t(c)];
      k.w = std::max(0.0, mean(parallel::Op::W));
      const double b = mean(parallel::Op::B), i = mean(parallel::Op::I), f = mean(parallel::Op::F),
                   fb = mean(parallel::Op::FB);
      k.b = b >= 0 ? b : std::max(0.0, i) + k.w;
      k.f = f >= 0 ? f : std::max(0.0, fb - k.b);
      k.fb = fb >= 0 ? fb : k.f + k.b;
      k.comm = 0;
    }
  // A measured FB pairs a forward of chunk c with a backward of the other chunk (DualPipe's two
  // directions); the simulator wants fb for a same-chunk pair and rescales it by what the halves
  // cost (schedule.h, simulate()), so convert: fb_c x (f_c + b_c) / (f_c + b_other).
  if (chunks == 2)
    for (auto& per_rank : out)
      for (int c = 0; c < 2; ++c) {
        parallel::ActionCosts& k = per_rank[size_t(c)];
        const double pair = k.f + per_rank[size_t(1 - c)].b;
        if (pair > 0) k.fb = k.fb * (k.f + k.b) / pair;
      }
  return out;
}

std::string json_costs(const std::vector<std::vector<parallel::ActionCosts>>& costs) {
  std::string out = "[";
  char buf[160];
  for (size_t r = 0; r < costs.size(); ++r)
    for (size_t c = 0; c < costs[r].size(); ++c) {
      const auto& k = costs[r][c];
      std::snprintf(buf, sizeof buf, "%s{\"rank\":%zu,\"chunk\":%zu,\"F\":%.4g,\"B\":%.4g,\"W\":%.4g,\"FB\":%.4g}",
                    out.size() > 1 ? "," : "", r, c, k.f * 1e3, k.b * 1e3, k.w * 1e3, k.fb * 1e3);
      out += buf;
    }
  return out + "]";
}

std::string json_array(const std::vector<double>& xs, double scale) {
  std::string out = "[";
  char buf[32];
  for (size_t i = 0; i < xs.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s%.4g", i ? "," : "", xs[i] * scale);
    out += buf;
  }
  return out + "]";
}

double max_of(const std::vector<double>& xs) { return xs.empty() ? 0 : *std::max_element(xs.begin(), xs.end()); }

}  // namespace

int run_pipeline_bench(const parallel::World& world, const PipelineBenchOptions& o, std::ostream& out,
                       std::string& error) {
  const int pp = world.size;
  if (o.config_files.empty()) return error = "no config given; use --config FILE", 2;
  if (o.steps <= 0) return error = "--steps must be > 0, got " + std::to_string(o.steps), 2;
  if (o.warmup < 0) return error = "--warmup must be >= 0, got " + std::to_string(o.warmup), 2;
  if (o.microbatches < 0)
    return error = "--microbatches must be >= 0 (0: 4 x pp), got " + std::to_string(o.microbatches), 2;
  const auto known = parallel::schedule_names();
  for (const auto& name : o.schedules)
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      parallel::ScheduleOptions unknown;
      unknown.name = name;
      try {  // its first check: "unknown schedule 'x' (schedules: ...)", the names listed
        (void)parallel::make_schedule(unknown);
      } catch (const std::invalid_argument& e) {
        return error = std::string("--schedules: ") + e.what(), 2;
      }
    }
  // After the options: a mistake in them is named whatever the ranks.
  if (pp < 2) return error = "needs at least 2 ranks (mpirun -np N, N = pipeline ranks)", 2;
  const int64_t m = o.microbatches > 0 ? o.microbatches : 4 * pp;
  const parallel::GroupPtr group = parallel::make_world_group(world, {});
  std::map<std::string, double> bubbles;  // schedule -> measured bubble of the worst rank
  for (const std::string& name : o.schedules) {
    const fs::path dir = fs::temp_directory_path() / ("shoestring-bench-pipeline-" + std::to_string(::getpid()));
    auto sets = o.sets;
    sets.insert(sets.end(), {"parallel.pp=" + std::to_string(pp), "parallel.dp=1", "parallel.ep=1",
                             "parallel.schedule=" + name, "parallel.microbatches=" + std::to_string(m),
                             "train.global_batch=0", "train.grad_accum=1", "data.eval_interval=0",
                             "checkpoint.interval=0", "train.steps=" + std::to_string(o.warmup + o.steps),
                             "log.progress=off", "log.every=1000000",
                             "log.run_dir=" + dir.string()});  // rank 0's is the one used
    const Config cfg = load_config(o.config_files, sets);
    parallel::ScheduleOptions so;
    so.name = name;
    so.pp = pp;
    so.microbatches = int(m);
    so.virtual_stages = int(cfg.parallel.virtual_stages);
    parallel::Schedule schedule;
    try {  // a schedule this pp or M does not allow is reported and skipped, not fatal
      schedule = parallel::make_schedule(so);
    } catch (const std::invalid_argument& e) {
      if (world.rank == 0)
        out << "{\"bench\":\"pipeline\",\"schedule\":\"" << name << "\",\"skipped\":\"" << e.what() << "\"}"
            << std::endl;
      continue;
    }
    TrainOptions options;
    options.keep_pipeline_traces = true;
    const TrainSummary s = train(cfg, world, options);
    if (world.rank == 0) fs::remove_all(s.run_dir);
    const auto all = all_gather_strings(*group, serialize(s.pipeline_traces, size_t(o.warmup)));
    if (world.rank != 0) continue;

    // Per step: the span over all ranks and each rank's compute time (waits for received inputs
    // excluded: they are bubble).
    std::map<int64_t, std::vector<std::vector<Timed>>> steps;  // step -> rank -> actions
    for (int r = 0; r < pp; ++r) {
      std::istringstream in(all[size_t(r)]);
      int64_t step;
      Timed t;
      while (in >> step >> t.op >> t.chunk >> t.start >> t.end >> t.wait) {
        auto& ranks = steps[step];
        ranks.resize(size_t(pp));
        ranks[size_t(r)].push_back(t);
      }
    }
    std::vector<double> bubble(size_t(pp), 0.0);
    double makespan = 0;
    for (const auto& [step, ranks] : steps) {
      double t0 = 1e300, t1 = -1e300;
      std::vector<double> busy(size_t(pp), 0.0);
      for (int r = 0; r < pp; ++r)
        for (const Timed& t : ranks[size_t(r)]) {
          t0 = std::min(t0, t.start);
          t1 = std::max(t1, t.end);
          busy[size_t(r)] += t.compute();
        }
      makespan += (t1 - t0) / double(steps.size());
      for (int r = 0; r < pp; ++r) bubble[size_t(r)] += (t1 - t0 - busy[size_t(r)]) / double(steps.size());
    }
    const auto costs = measured_costs(steps, pp, schedule.chunks);
    const parallel::Simulation sim = parallel::simulate(schedule, costs);
    bubbles[name] = max_of(bubble);
    char line[640];
    std::snprintf(line, sizeof line,
                  "{\"bench\":\"pipeline\",\"schedule\":\"%s\",\"pp\":%d,\"microbatches\":%lld,\"timed_steps\":%lld,"
                  "\"makespan_ms\":{\"measured\":%.4g,\"simulated\":%.4g},"
                  "\"bubble_ms\":{\"measured\":%s,\"simulated\":%s},"
                  "\"worst_bubble_ms\":{\"measured\":%.4g,\"simulated\":%.4g},\"cost_ms\":",
                  name.c_str(), pp, static_cast<long long>(m), static_cast<long long>(steps.size()), makespan * 1e3,
                  sim.makespan * 1e3, json_array(bubble, 1e3).c_str(), json_array(sim.bubble, 1e3).c_str(),
                  max_of(bubble) * 1e3, max_of(sim.bubble) * 1e3);
    out << line << json_costs(costs) << "}" << std::endl;
  }
  if (world.rank == 0 && bubbles.count("1f1b") && bubbles.count("dualpipe")) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "{\"bench\":\"pipeline\",\"compare\":\"dualpipe vs 1f1b\",\"worst_bubble_ms\":{\"dualpipe\":%.4g,"
                  "\"1f1b\":%.4g},\"dualpipe_below_1f1b\":%s}",
                  bubbles["dualpipe"] * 1e3, bubbles["1f1b"] * 1e3,
                  bubbles["dualpipe"] < bubbles["1f1b"] ? "true" : "false");
    out << line << std::endl;
  }
  return 0;
}

}  // namespace shoestring
