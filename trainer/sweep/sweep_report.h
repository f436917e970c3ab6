#pragma once
// `shoestring sweep report`: one row per run from its metrics.jsonl, written as
// <dir>/report.csv (for scripts) and <dir>/report.md (for people), plus PNG plots drawn by gnuplot
// when it is installed: every run's loss curve, and the final loss against each axis.
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/sweep/sweep_file.h"

namespace shoestring::sweep {

struct RunRow {
  std::string name;
  std::vector<std::string> axis_values;  // in the sweep's axis order
  std::string status;                    // "unreadable" when problem is set
  std::string problem;                   // why the metrics cannot be read (metrics_problem); no numbers then
  int64_t steps_done = 0, steps = 0;
  double final_loss = 0, best_loss = 0;  // NaN when no step was logged
  double final_val_loss = 0, best_val_loss = 0;  // NaN without validation
  double median_tokens_per_s = 0;
  double elapsed_s = 0;  // summed over the attempts (each resume restarts elapsed_s)
  int64_t tokens = 0;    // tokens trained: steps done x tokens per step
  std::vector<std::pair<int64_t, double>> loss_curve;  // (step, loss)
};

// Reads every run's files; a run that never started is a row with status pending and no numbers,
// one whose metrics cannot be read a row with status unreadable, its problem, and no numbers.
std::vector<RunRow> gather(const SweepFile& s, const std::vector<RunSpec>& runs);

std::string report_csv(const SweepFile& s, const std::vector<RunRow>& rows);
std::string report_markdown(const SweepFile& s, const std::vector<RunRow>& rows, const std::vector<std::string>& plots);

// Writes the gnuplot script and runs it; returns the PNG paths written (relative to s.dir).
// `skipped` says why there are none (gnuplot missing or failing, nothing to plot).
std::vector<std::string> draw_plots(const SweepFile& s, const std::vector<RunRow>& rows, std::string& skipped);

}  // namespace shoestring::sweep
