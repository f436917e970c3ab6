// shoestring sweep plan|run|report FILE: many training runs from one sweep file (docs/sweeps.md).
#include <spawn.h>
#include <sys/wait.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/model/param_count.h"
#include "trainer/sweep/run_estimate.h"
#include "trainer/sweep/sweep_file.h"
#include "trainer/sweep/sweep_report.h"
#include "trainer/sweep/sweep_runner.h"
#include "trainer/sweep/sweep_state.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

extern char** environ;

namespace shoestring::cli {

namespace {

// sbatch SCRIPT, its output passed through; its exit status, or 2 when sbatch cannot be started.
int submit_sbatch(const std::string& script) {
  pid_t pid = 0;
  std::vector<char*> argv{const_cast<char*>("sbatch"), const_cast<char*>(script.c_str()), nullptr};
  if (const int err = posix_spawnp(&pid, "sbatch", nullptr, nullptr, argv.data(), environ); err != 0) {
    std::cerr << "shoestring sweep run: cannot run sbatch (" << std::strerror(err)
              << "): not on a Slurm login node? submit " << script << " there\n";
    return 2;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
  std::cerr << "shoestring sweep run: sbatch " << script << " failed (status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1)
            << ")\n";
  return 1;
}

// The whole file, or "" when it cannot be read (a folder in its place fails at write_script).
std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_script(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error(path.string() + ": cannot write the batch script");
  fs::permissions(path, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
}

constexpr const char* kUsage =
    "usage: shoestring sweep <plan|run|report> SWEEP_FILE [options]\n"
    "  plan    list the runs, what each changes, parameters and tokens (--print-config N: one run's YAML)\n"
    "  run     train the runs one after another, resuming interrupted ones (--np N, --only NAME, --slurm)\n"
    "  report  gather the runs' metrics into report.csv, report.md and PNG plots\n"
    "docs/sweeps.md describes the sweep file.\n";

std::string axis_text(const sweep::Axis& a) {
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
    return out;
  };
  char buf[96];
  switch (a.kind) {
    case sweep::Axis::Grid: return a.key + " (grid: " + list(a.values) + ")";
    case sweep::Axis::Seeds: return a.key + " (seeds: " + list(a.values) + ")";
    case sweep::Axis::Choice: return a.key + " (random choice: " + list(a.values) + ")";
    case sweep::Axis::Uniform: std::snprintf(buf, sizeof buf, " (uniform in [%g, %g])", a.lo, a.hi); return a.key + buf;
    case sweep::Axis::LogUniform: std::snprintf(buf, sizeof buf, " (log-uniform in [%g, %g])", a.lo, a.hi); return a.key + buf;
  }
  return a.key;
}

std::string thousands(int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

int sweep_plan(const sweep::SweepFile& s, const std::vector<sweep::RunSpec>& runs, int64_t print_config, int np) {
  // Resolving every run validates every value of every axis before anything trains.
  std::vector<Config> configs;
  for (const auto& r : runs) configs.push_back(sweep::resolve_run(s, r));
  if (print_config >= 0) {
    if (print_config >= int64_t(runs.size())) {
      std::cerr << "shoestring sweep plan: --print-config " << print_config << ": the sweep has runs 0.." << runs.size() - 1 << "\n";
      return 2;
    }
    std::cout << "# run " << runs[print_config].name << " of sweep " << s.name << " (" << s.path << ")\n" << to_yaml(configs[print_config]);
    return 0;
  }
  const Config common = sweep::resolve_common(s);
  std::cout << "sweep " << s.name << ": " << runs.size() << " run" << (runs.size() == 1 ? "" : "s") << " from " << s.path
            << ", base " << s.base << ", in " << s.dir << "/\n";
  for (size_t i = 0; i < s.common.size(); ++i)
    std::cout << (i ? ", " : "  set     ") << s.common[i].first << "=" << s.common[i].second << (i + 1 == s.common.size() ? "\n" : "");
  for (const auto& a : s.axes) std::cout << "  axis    " << axis_text(a) << "\n";
  int64_t total_tokens = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Config& c = configs[i];
    const auto params = model::count_parameters(c.model);
    const int64_t per_step = sweep::tokens_per_step(c, np);
    total_tokens += per_step * c.train.steps;
    // `sweep report` and `sweep run` refuse such a run's numbers; the plan says so too.
    const bool unreadable = !sweep::metrics_problem(c, sweep::read_metrics(c.log.run_dir)).empty();
    std::cout << "\n" << runs[i].name << "  [" << sweep::read_status(s, runs[i].name).status
              << (unreadable ? ", unreadable metrics" : "") << "]\n  overrides  ";
    for (size_t j = 0; j < runs[i].overrides.size(); ++j)
      std::cout << (j ? " " : "") << runs[i].overrides[j].first << "=" << runs[i].overrides[j].second;
    std::cout << (runs[i].overrides.empty() ? "(none)\n" : "\n") << "  differs    ";
    std::string diff;
    for (const auto& d : sweep::differences(common, c))
      diff += (diff.empty() ? "" : ", ") + d.key + " " + (d.from.empty() ? "\"\"" : d.from) + " -> " + d.to;
    std::cout << (diff.empty() ? "nothing" : diff) << " (from base + set)\n"
              << "  params     " << thousands(params.total) << " total, " << thousands(params.activated) << " activated per token\n"
              << "  tokens     " << thousands(per_step) << " per step x " << c.train.steps << " steps = " << thousands(per_step * c.train.steps)
              << (c.parallel.dp == 0 && c.train.global_batch == 0 ? " (dp " + std::to_string(std::max(1, np) / std::max<int64_t>(1, c.parallel.pp)) + ")" : "")
              << "\n";
    const std::string estimate = sweep::run_estimate(c);
    std::cout << "  estimate   " << (estimate.empty() ? "n/a (no planner estimate yet)" : estimate) << "\n";
  }
  std::cout << "\ntotal " << thousands(total_tokens) << " tokens over " << runs.size() << " runs\n";
  return 0;
}

int sweep_report(const sweep::SweepFile& s, const std::vector<sweep::RunSpec>& runs) {
  fs::create_directories(s.dir);
  const auto rows = sweep::gather(s, runs);
  std::string skipped;
  const auto plots = sweep::draw_plots(s, rows, skipped);
  // write_output throws naming the file (a folder named report.csv, a full disk): never "wrote" it.
  write_output((fs::path(s.dir) / "report.csv").string(), sweep::report_csv(s, rows), "sweep report");
  write_output((fs::path(s.dir) / "report.md").string(), sweep::report_markdown(s, rows, plots), "sweep report");
  int done = 0, unreadable = 0;
  for (const auto& r : rows) {
    done += r.status == "done";
    if (r.problem.empty()) continue;
    ++unreadable;
    std::cerr << "shoestring sweep report: " << r.name << ": unreadable metrics: " << r.problem << "\n";
  }
  std::cout << "sweep " << s.name << ": " << done << " of " << rows.size() << " runs done";
  if (unreadable) std::cout << ", " << unreadable << " with unreadable metrics (no numbers reported for them)";
  std::cout << "; wrote " << (fs::path(s.dir) / "report.csv").string() << ", " << (fs::path(s.dir) / "report.md").string();
  for (const auto& p : plots) std::cout << ", " << (fs::path(s.dir) / p).string();
  std::cout << "\n";
  if (!skipped.empty()) std::cout << "plots skipped: " << skipped << "\n";
  // The tables hold every other run; a script must still learn that a result is missing.
  return unreadable ? 1 : 0;
}

}  // namespace

int cmd_sweep(const Args& args) {
  if (const auto rc = usage_exit(args, kUsage)) return *rc;
  const std::string action = args[0];
  if (action != "plan" && action != "run" && action != "report") {
    std::cerr << "shoestring sweep: unknown action '" << action << "' (plan, run, report; see --help)\n";
    return 2;
  }
  std::vector<std::string> files;  // all positional words: a second one is refused below, by name
  int64_t print_config = -1;  // -1: not given
  int np = 1;
  std::string only;
  bool slurm = false, submit = false;
  po::options_description opts("shoestring sweep " + action + " SWEEP_FILE");
  opts.add_options()("help,h", "show this help")("file", po::value(&files), "the sweep file (YAML, docs/sweeps.md)");
  if (action == "plan")
    opts.add_options()("print-config", po::value(&print_config), "print run N's resolved config (YAML) instead")(
        "np", po::value(&np)->default_value(1), "ranks each run will use (tokens per step depend on it)");
  if (action == "run")
    opts.add_options()("np", po::value(&np)->default_value(1), "ranks per run: > 1 runs each under `mpirun -np N`")(
        "only", po::value(&only), "train only the run with this name")(
        "slurm", po::bool_switch(&slurm), "write <dir>/sweep.sbatch (a Slurm job array, one task per run) instead of running")(
        "submit", po::bool_switch(&submit), "with --slurm: also submit it (sbatch SCRIPT)");
  po::positional_options_description positional;
  positional.add("file", -1);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, Args(args.begin() + 1, args.end()), vm, &positional)) return *rc;
  // As every other command says it (parse_command_line); Boost's "too many positional options"
  // would not name the word.
  if (files.size() > 1) {
    std::cerr << "shoestring: unexpected argument '" << files[1] << "' (see --help)\n";
    return 2;
  }
  const std::string file = files.empty() ? "" : files[0];
  if (file.empty()) {
    std::cerr << "shoestring sweep " << action << ": no sweep file given (see --help)\n";
    return 2;
  }
  if (vm.count("print-config") && print_config < 0) {
    std::cerr << "shoestring sweep plan: --print-config " << print_config << ": expected a run number from 0\n";
    return 2;
  }
  if (np < 1) {
    std::cerr << "shoestring sweep " << action << ": --np must be at least 1\n";
    return 2;
  }
  // An empty name selected every run: a Slurm array task whose index is past the end of the
  // script's run list (a sweep file edited after submitting) would train the whole sweep.
  if (vm.count("only") && only.empty()) {
    std::cerr << "shoestring sweep run: --only: expected a run name (`shoestring sweep plan FILE` lists them), got ''\n";
    return 2;
  }
  if (submit && !slurm) {
    std::cerr << "shoestring sweep run: --submit goes with --slurm\n";
    return 2;
  }
  const sweep::SweepFile s = sweep::parse_sweep_file(file);
  // Every action reads or writes the runs' folders there; create_directories would say only
  // "filesystem error: ... File exists".
  if (std::error_code ec; fs::exists(s.dir, ec) && !fs::is_directory(s.dir, ec)) {
    std::cerr << "shoestring sweep " << action << ": " << file << ": dir " << s.dir
              << " is a file, expected a folder for the sweep's runs\n";
    return 2;
  }
  const std::vector<sweep::RunSpec> runs = sweep::expand(s);
  if (action == "plan") return sweep_plan(s, runs, print_config, np);
  if (action == "report") return sweep_report(s, runs);
  if (!only.empty() && std::none_of(runs.begin(), runs.end(), [&](const sweep::RunSpec& r) { return r.name == only; })) {
    std::cerr << "shoestring sweep run: --only " << only << ": no such run (`shoestring sweep plan " << file << "` lists them)\n";
    return 2;
  }
  // Every run is validated before the first one starts: a typo in the last grid value must not
  // surface hours into the sweep.
  for (const auto& r : runs) sweep::resolve_run(s, r);
  sweep::RunnerOptions o;
  o.executable = fs::read_symlink("/proc/self/exe").string();
  o.np = np;
  o.only = only;
  if (slurm) {
    fs::create_directories(s.dir);
    const fs::path out = fs::path(s.dir) / "sweep.sbatch";
    const std::string script = sweep::slurm_script(s, runs, o, fs::absolute(file).lexically_normal().string());
    // docs/sweeps.md has users add partition and time lines to sweep.sbatch. A copy of what was last
    // written there tells their edits from a script regenerated with other options (--np): an edited
    // one (or one of unknown origin) that differs from the fresh script is kept, the fresh one goes
    // beside it.
    if (fs::exists(out) && !fs::is_regular_file(out)) throw std::runtime_error(out.string() + ": is not a file; move it away");
    const fs::path last = fs::path(s.dir) / ".sweep.sbatch.written";
    const std::string existing = fs::exists(out) ? read_text(out) : script;
    const bool kept = existing != script && !(fs::exists(last) && read_text(last) == existing);
    const fs::path written = kept ? fs::path(out.string() + ".new") : out;
    write_script(written, script);
    if (!kept) std::ofstream(last, std::ios::trunc) << script;
    if (kept)
      std::cout << "kept " << out.string() << ": edited since it was written; the fresh script is " << written.string()
                << " (compare them, then merge or move it over)\n";
    else
      std::cout << "wrote " << out.string() << ": " << runs.size() << " array tasks";
    if (!submit) {
      if (!kept) std::cout << "; submit with `sbatch " << out.string() << "`\n";
      return 0;
    }
    // Which of the two to submit is the user's call: the kept one has their edits, the fresh one
    // this sweep file's runs (an array index names a run by its position).
    if (kept) {
      std::cerr << "shoestring sweep run: not submitted: choose between " << out.string() << " and " << written.string()
                << ", then run sbatch on it\n";
      return 1;
    }
    std::cout << "\n+ sbatch " << out.string() << std::endl;
    return submit_sbatch(out.string());
  }
  return sweep::run_sweep(s, runs, o);
}

}  // namespace shoestring::cli
