#pragma once
// What a sweep knows about its runs on disk. Each run's own status file
// (<dir>/<run>/sweep-status.json) is the truth: Slurm array tasks of one sweep run concurrently and
// each writes only its own. <dir>/sweep.json is the summary of all of them, rewritten (atomically)
// after every change; it is for people and scripts, never read back.
#include <cstdint>
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

// The last step number in <run dir>/metrics.jsonl (0 when absent or empty). A run is finished when
// it equals train.steps: the status file may lag behind (a sweep killed right after the trainer
// finished), the metrics cannot.
int64_t last_metrics_step(const std::string& run_dir);

// A flat JSON line's number field ("key":1.5), or false when absent.
bool json_number(const std::string& line, const std::string& key, double& out);

std::string utc_now();

}  // namespace shoestring::sweep
