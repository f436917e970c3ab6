#pragma once
// What a sweep knows about its runs on disk. Each run's own status file
// (<dir>/<run>/sweep-status.json) is the truth: Slurm array tasks of one sweep run concurrently and
// each writes only its own. <dir>/sweep.json is the summary of all of them, rewritten (atomically)
// after every change; it is for people and scripts, never read back.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "trainer/sweep/sweep_file.h"

namespace shoestring::sweep {

struct RunStatus {
  std::string status = "pending";  // pending | running | done | preempted | failed
  int exit_code = 0;               // the last attempt's (failed: the trainer's; -N: killed by signal N)
  int attempts = 0;                // starts of the trainer, resumes included
  int ranks = 1;                   // processes the last attempt ran on (tokens per step depend on it)
  std::string updated;             // UTC time of the last change
};

std::string status_path(const SweepFile& s, const std::string& run);
RunStatus read_status(const SweepFile& s, const std::string& run);  // pending when there is none
void write_status(const SweepFile& s, const std::string& run, const RunStatus& st);
void write_summary(const SweepFile& s, const std::vector<RunSpec>& runs);  // <dir>/sweep.json

// <run dir>/metrics.jsonl, read strictly: every line must be a record as the trainer writes it
// ({"step":N,"loss":X,...}; loss null for a skipped step). A run is finished when its last step
// equals train.steps: the status file may lag behind (a sweep killed right after the trainer
// finished), the metrics cannot. Two things are not errors, being what a killed trainer leaves
// and what its resume drops (truncate_metrics): an incomplete last line (no newline after it) and
// empty lines. Anything else is not guessed around: the numbers would be garbage, and resuming
// would silently drop the line (docs/sweeps.md, "Unreadable metrics").
struct MetricsFile {
  std::string path;
  bool exists = false;
  int64_t records = 0;
  int64_t last_step = 0;   // of the last record; 0 when there is none
  int64_t torn_line = 0;   // > 0: the number of an incomplete last line (ignored)
  std::string error;       // "FILE:LINE: expected ..., got '...'" at the first bad line; "" when readable
};
// `each` sees every record, in order, up to the first bad line.
using MetricsRecord = std::function<void(const std::string& line)>;
MetricsFile read_metrics(const std::string& run_dir, const MetricsRecord& each = {});

// The step of the newest checkpoint (step_N/ holding a manifest.json) of a run's config, or -1.
// Not verified (that is the trainer's job on resume): it only tells a run that trained to the end.
int64_t newest_checkpoint_step(const Config& cfg);

// Why a run's result cannot be read, or "" when it can: metrics.jsonl has a line that is not a
// record, or the run's checkpoints reached train.steps but its metrics did not (a truncated or
// replaced file; resuming cannot help: the trainer has no steps left to log).
std::string metrics_problem(const Config& cfg, const MetricsFile& m);

// A flat JSON line's number field ("key":1.5), or false when absent.
bool json_number(const std::string& line, const std::string& key, double& out);

std::string utc_now();

}  // namespace shoestring::sweep
