#pragma once
// A sweep file (docs/sweeps.md): one base config, overrides common to every run, and axes (a grid,
// random samples, seeds) whose combinations are the runs. Parsing and expansion are pure: the same
// file gives the same runs, names and order on every invocation, so `sweep run` can be stopped and
// started again, and a Slurm array index always means the same run.
// Every problem is a ConfigError with one line naming the sweep file (and line) and the key path.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "trainer/config.h"

namespace shoestring::sweep {

using Override = std::pair<std::string, std::string>;  // key.path, value as --set would take it

struct Axis {
  enum Kind { Grid, Uniform, LogUniform, Choice, Seeds };
  std::string key;                  // config key path, e.g. optim.lr
  Kind kind = Grid;
  std::vector<std::string> values;  // Grid, Choice, Seeds
  double lo = 0, hi = 0;            // Uniform, LogUniform
  bool integer = false;             // Uniform, LogUniform: both bounds written as integers
  std::string where;                // "file:line" of the axis in the sweep file
  bool log_scale() const;           // plotted on a log axis (log_uniform, or a learning rate)
};

struct SweepFile {
  std::string path;   // the sweep file as given
  std::string name;   // `name:`, default: the file's stem
  std::string dir;    // `dir:` (relative to the working directory), default runs/sweeps/<name>
  std::string base;   // the base config, resolved (see resolve_base)
  std::vector<Override> common;         // `set:`, applied to every run before the axes
  std::vector<std::string> common_where;
  std::vector<Axis> axes;               // grid axes (file order), then random axes, then seeds
  int64_t samples = 0;                  // random: samples per grid combination
  uint64_t random_seed = 0;
};

struct RunSpec {
  int index = 0;
  std::string name;                // r000-lr=0.003-seed=1
  std::vector<Override> overrides; // one per axis, in axis order
};

// `base:` is looked up relative to the sweep file's folder first, then the working directory.
SweepFile parse_sweep_file(const std::string& path);
// For tests: the file's text, the name it is reported under and the folder `base:` is relative to.
SweepFile parse_sweep_text(const std::string& yaml, const std::string& origin, const std::string& folder);

// The runs, in order: grid combinations (first axis outermost) x random samples x seeds.
std::vector<RunSpec> expand(const SweepFile& s);

// A run's resolved config: base file, then `set:`, then the run's overrides, then what the sweep
// itself fixes (log.run_dir = <dir>/<run name>; checkpoint.interval when the result has 0, see
// sweep_checkpoint_interval). A bad key or value throws ConfigError naming the sweep file line.
Config resolve_run(const SweepFile& s, const RunSpec& r);
// The base config alone (with `set:`), to show what each run changes.
Config resolve_common(const SweepFile& s);

// Sweeps must survive interruptions: a run whose config has no periodic checkpoints saves one every
// tenth of its steps (at least every step), so a killed run loses at most 10% of its work.
int64_t sweep_checkpoint_interval(int64_t steps);

// Key paths whose values differ between two configs, with both values: (key, from, to).
struct Difference {
  std::string key, from, to;
};
std::vector<Difference> differences(const Config& a, const Config& b);

// Tokens one optimizer step consumes (global batch x seq_len) when run on `ranks` processes.
int64_t tokens_per_step(const Config& c, int ranks);

}  // namespace shoestring::sweep
