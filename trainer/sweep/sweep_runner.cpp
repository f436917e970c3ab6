#include "trainer/sweep/sweep_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "trainer/config_loader.h"
#include "trainer/preemption.h"
#include "trainer/sweep/sweep_state.h"

namespace fs = std::filesystem;

namespace shoestring::sweep {

namespace {

// Signal state shared with the handler: the first SIGTERM/SIGINT/SIGUSR1 is forwarded to the
// running trainer (which saves a checkpoint and exits 42) and no further run is started; a second
// one is forwarded too, and the trainer then stops at once (trainer/preemption.h).
volatile sig_atomic_t g_stop = 0;
volatile sig_atomic_t g_child = 0;
volatile sig_atomic_t g_forward = SIGTERM;

void on_signal(int sig) {
  if (!g_stop) g_stop = sig;
  if (g_child > 0) ::kill(pid_t(g_child), int(g_forward));
}

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1};

class SignalForwarding {
 public:
  SignalForwarding() {
    g_stop = 0;
    g_child = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~SignalForwarding() {
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  struct sigaction old_[std::size(kSignals)] {};
};

sigset_t blocked_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  return set;
}

// Starts argv as a child and waits for it; returns its exit code, or -N when signal N killed it.
// The lock file descriptor is inherited on purpose: the run stays locked while the trainer lives,
// even when this sweep process was killed (see run_one).
int run_child(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  // Blocked across fork so the handler never sees a child pid that is not yet recorded.
  const sigset_t set = blocked_signals();
  sigset_t old;
  sigprocmask(SIG_BLOCK, &set, &old);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    sigprocmask(SIG_SETMASK, &old, nullptr);
    throw std::runtime_error(std::string("cannot start a run: fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Its own process group: a Ctrl-C at the terminal reaches only the sweep, which asks the
    // trainer to checkpoint (SIGTERM) instead of the trainer dying on SIGINT mid-step.
    ::setpgid(0, 0);
    // A sweep killed outright (SIGKILL) must not leave its trainer running unattended.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(128 + SIGTERM);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s : kSignals) sigaction(s, &dfl, nullptr);
    sigprocmask(SIG_SETMASK, &old, nullptr);
    ::execvp(cargv[0], cargv.data());
    std::fprintf(stderr, "shoestring sweep: cannot run %s: %s\n", cargv[0], std::strerror(errno));
    ::_exit(127);
  }
  g_child = pid;
  // A signal that came before the block (while this run was being prepared) has not reached any
  // trainer yet; one still pending is forwarded by the handler once unblocked.
  if (g_stop) ::kill(pid, int(g_forward));
  sigprocmask(SIG_SETMASK, &old, nullptr);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
}

// A per-run lock: two `sweep run`s of one sweep (two array tasks with the same index, a user
// starting it twice) must never train the same run directory at once.
int lock_run(const fs::path& dir) {
  fs::create_directories(dir);
  const int fd = ::open((dir / ".sweep-lock").c_str(), O_RDWR | O_CREAT, 0644);
  if (fd < 0) throw std::runtime_error((dir / ".sweep-lock").string() + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string describe(int code) {
  if (code == 0) return "exit 0";
  if (code == kPreemptedExitCode) return "exit 42 (stopped after saving a checkpoint)";
  if (code < 0) return "killed by signal " + std::to_string(-code) + " (" + strsignal(-code) + ")";
  return "exit " + std::to_string(code);
}

enum class Outcome { Done, Failed, Stopped, Busy, Unreadable };

Outcome run_one(const SweepFile& s, const std::vector<RunSpec>& runs, size_t i, const RunnerOptions& o) {
  const RunSpec& r = runs[i];
  const Config cfg = resolve_run(s, r);
  const fs::path dir = cfg.log.run_dir;
  const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(runs.size()) + " " + r.name + "]";
  RunStatus st = read_status(s, r.name);
  const MetricsFile before = read_metrics(dir.string());
  // A result that cannot be read is not trained again: resuming drops the bad lines (and from a
  // checkpoint at train.steps logs nothing), so the run would come back "failed" on every
  // `sweep run`, its evidence gone after the first. Its files are left as they are.
  if (const std::string problem = metrics_problem(cfg, before); !problem.empty()) {
    std::cout << std::flush;
    std::cerr << "sweep " << tag << " unreadable metrics: " << problem << "; not trained again (resuming would drop what "
              << "it cannot read): repair the file, or delete " << dir.string() << " to train the run afresh\n" << std::flush;
    return Outcome::Unreadable;
  }
  if (before.last_step >= cfg.train.steps) {
    if (st.status != "done") {
      st.status = "done", st.exit_code = 0, st.updated = utc_now();
      write_status(s, r.name, st);
    }
    std::cout << "sweep " << tag << " done already (" << cfg.train.steps << " steps): skipped\n" << std::flush;
    return Outcome::Done;
  }
  const int lock = lock_run(dir);
  if (lock < 0) {
    std::cout << "sweep " << tag << " busy: another `sweep run` is training it; skipped\n" << std::flush;
    return Outcome::Busy;
  }
  // The resolved config is what the run trains with, whatever happens to the base file later.
  const fs::path config_file = dir / "sweep-config.yaml";
  {
    std::ofstream out(config_file, std::ios::trunc);
    out << "# Written by `shoestring sweep run " << s.path << "` for run " << r.name << "\n" << to_yaml(cfg);
  }
  std::vector<std::string> argv;
  if (o.np > 1) argv = {o.mpirun, "-np", std::to_string(o.np)};
  argv.insert(argv.end(), {o.executable, "train", "--config", config_file.string(), "--set",
                           "log.run_dir=" + dir.string(), "--resume", "auto"});
  const int64_t done_before = before.last_step;
  std::cout << "sweep " << tag << (done_before > 0 ? " resuming (metrics at step " + std::to_string(done_before) + ")" : " starting")
            << ": " << [&] {
                 std::string line;
                 for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
                 return line;
               }() << "\n" << std::flush;
  st.status = "running", st.attempts += 1, st.ranks = std::max(1, o.np), st.exit_code = 0, st.updated = utc_now();
  write_status(s, r.name, st);
  write_summary(s, runs);
  // mpirun takes SIGTERM as "kill the job"; it passes SIGUSR1 on to the ranks, which the trainer
  // treats like SIGTERM.
  g_forward = o.np > 1 ? SIGUSR1 : SIGTERM;
  const int code = run_child(argv);
  ::close(lock);
  const MetricsFile after = read_metrics(dir.string());
  const int64_t steps_done = after.last_step;
  Outcome outcome;
  if (code == 0 && after.error.empty() && steps_done >= cfg.train.steps) st.status = "done", outcome = Outcome::Done;
  else if (g_stop) st.status = "preempted", outcome = Outcome::Stopped;
  else st.status = "failed", outcome = Outcome::Failed;
  st.exit_code = code;
  st.updated = utc_now();
  write_status(s, r.name, st);
  write_summary(s, runs);
  std::cout << "sweep " << tag << " " << st.status << ": " << describe(code) << ", metrics at step " << steps_done << "/"
            << cfg.train.steps << "\n" << std::flush;
  // The trainer said it finished but its metrics do not show it: say why, not just "exit 0".
  if (code == 0 && outcome == Outcome::Failed)
    if (const std::string problem = metrics_problem(cfg, after); !problem.empty())
      std::cerr << "sweep " << tag << " unreadable metrics: " << problem << "\n" << std::flush;
  return outcome;
}

}  // namespace

int run_sweep(const SweepFile& s, const std::vector<RunSpec>& runs, const RunnerOptions& o) {
  SignalForwarding forwarding;
  fs::create_directories(s.dir);
  write_summary(s, runs);
  int done = 0, failed = 0, busy = 0, unreadable = 0;
  const int selected = o.only.empty() ? int(runs.size()) : 1;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!o.only.empty() && runs[i].name != o.only) continue;
    if (g_stop) break;
    switch (run_one(s, runs, i, o)) {
      case Outcome::Done: ++done; break;
      case Outcome::Failed: ++failed; break;
      case Outcome::Busy: ++busy; break;
      case Outcome::Unreadable: ++unreadable; break;
      case Outcome::Stopped: break;
    }
  }
  if (g_stop) {
    std::cout << "sweep " << s.name << ": stopped by signal " << int(g_stop) << " (" << strsignal(int(g_stop)) << ") after " << done
              << " of " << selected << " runs; run `shoestring sweep run " << s.path << (o.only.empty() ? "" : " --only " + o.only)
              << (o.np > 1 ? " --np " + std::to_string(o.np) : "") << "` again to resume\n";
    return kPreemptedExitCode;
  }
  std::cout << "sweep " << s.name << ": " << done << " of " << selected << " runs done";
  if (failed) std::cout << ", " << failed << " failed (each run's train.log says why; `sweep run` again retries them)";
  if (unreadable) std::cout << ", " << unreadable << " with unreadable metrics (not trained again; see above)";
  if (busy) std::cout << ", " << busy << " busy elsewhere";
  std::cout << "; state in " << (fs::path(s.dir) / "sweep.json").string() << "\n";
  return done == selected ? 0 : 1;
}

std::string slurm_script(const SweepFile& s, const std::vector<RunSpec>& runs, const RunnerOptions& o,
                         const std::string& sweep_file_abs) {
  const std::string dir = fs::absolute(s.dir).lexically_normal().string();
  std::ostringstream b;
  b << "#!/bin/bash\n"
    << "# Written by `shoestring sweep run " << s.path << " --slurm`: one array task per run of sweep " << s.name << ".\n"
    << "# Submit with: sbatch " << (fs::path(dir) / "sweep.sbatch").string() << "\n"
    << "# A task stopped by Slurm (USR1 two minutes before its time limit, or preemption) saves a\n"
    << "# checkpoint, exits 42 and is requeued; it resumes from the checkpoint (docs/sweeps.md).\n"
    << "#SBATCH --job-name=" << s.name << "\n"
    << "#SBATCH --array=0-" << runs.size() - 1 << "\n"
    << "#SBATCH --ntasks=" << std::max(1, o.np) << "\n"
    << "#SBATCH --output=" << dir << "/slurm-%A_%a.out\n"
    << "#SBATCH --signal=B:USR1@120\n"
    << "#SBATCH --requeue\n"
    << "#SBATCH --open-mode=append\n\n"
    << "set -u\n"
    << "cd " << shell_quote(fs::current_path().string()) << "\n"
    << "runs=(";
  for (const auto& r : runs) b << "\n  " << r.name;
  b << "\n)\n"
    << "name=${runs[$SLURM_ARRAY_TASK_ID]}\n"
    << shell_quote(o.executable) << " sweep run " << shell_quote(sweep_file_abs) << " --only \"$name\"" << (o.np > 1 ? " --np " + std::to_string(o.np) : "")
    << " &\n"
    << "child=$!\n"
    << "# The signal reaches this shell (B:); pass it on to the sweep, which passes it to the trainer.\n"
    << "trap 'kill -USR1 $child' USR1 TERM\n"
    << "wait $child; rc=$?\n"
    << "while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done  # wait returns early on a trapped signal\n"
    << "if [ $rc -eq 42 ]; then\n"
    << "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n"
    << "fi\n"
    << "exit $rc\n";
  return b.str();
}

}  // namespace shoestring::sweep
