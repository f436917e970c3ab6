#pragma once
// SIGTERM / SIGUSR1 (what Slurm sends before preempting a job): the first asks the training loop
// to finish its step, save a checkpoint and exit with kPreemptedExitCode; a second one exits at
// once with 128 + the signal number, as an unhandled signal would report.
namespace shoestring {

inline constexpr int kPreemptedExitCode = 42;

// Installs the handlers for its lifetime (and clears any earlier request); restores the previous
// ones after. `rank` prefixes the line each signal prints.
class PreemptionHandlers {
 public:
  explicit PreemptionHandlers(int rank);
  ~PreemptionHandlers();
  PreemptionHandlers(const PreemptionHandlers&) = delete;
  PreemptionHandlers& operator=(const PreemptionHandlers&) = delete;
};

// The signal that asked to stop (0: none yet). Async-signal-safe to set, cheap to read.
int preemption_signal();

}  // namespace shoestring
