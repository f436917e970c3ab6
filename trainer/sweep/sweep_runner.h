#pragma once
// `shoestring sweep run`: trains a sweep's runs one after another, each as a child process
// (`shoestring train ... --resume auto`), so that one crash does not end the sweep and every run
// resumes from its own checkpoints. docs/sweeps.md describes the states and signals.
#include <string>
#include <vector>

#include "trainer/sweep/sweep_file.h"

namespace shoestring::sweep {

struct RunnerOptions {
  std::string executable;   // the shoestring binary the children run (normally /proc/self/exe)
  int np = 1;               // > 1: each run under `mpirun -np N`
  std::string mpirun = "mpirun";
  std::string only;         // run just this one (a Slurm array task)
};

// Returns the exit code: 0 every selected run is done, 1 some failed or have metrics that cannot
// be read (those are not trained again; the others were still tried), 42 (kPreemptedExitCode)
// stopped by SIGTERM/SIGINT/SIGUSR1 after the running child saved and stopped: run it again to
// resume.
int run_sweep(const SweepFile& s, const std::vector<RunSpec>& runs, const RunnerOptions& o);

// The sweep's directory holds a Slurm array script, one task per run (docs/sweeps.md).
std::string slurm_script(const SweepFile& s, const std::vector<RunSpec>& runs, const RunnerOptions& o,
                         const std::string& sweep_file_abs);

}  // namespace shoestring::sweep
