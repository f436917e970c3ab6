#include "trainer/preemption.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>

namespace shoestring {

namespace {

volatile std::sig_atomic_t g_signal = 0;
struct sigaction g_old_term, g_old_usr1;
// Written before the handlers are installed: a handler may only write(), not format.
char g_term_msg[400], g_usr1_msg[400];

void format_message(char (&buf)[400], int rank, const char* sig) {
  // mpirun also sends SIGTERM to every rank when one rank fails; the survivors' line must not read
  // as if the job were being stopped cleanly for no reason.
  std::snprintf(buf, sizeof buf,
                "[rank %d] stop requested (%s): finishing this step, saving a checkpoint, then exiting with code 42 "
                "(a second signal exits at once). If another rank failed, this is mpirun stopping the job: that "
                "rank's error is above.\n",
                rank, sig);
}

void on_signal(int sig) {
  if (g_signal != 0) _exit(128 + sig);
  g_signal = sig;
  const char* msg = sig == SIGUSR1 ? g_usr1_msg : g_term_msg;
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, std::strlen(msg));
}

}  // namespace

PreemptionHandlers::PreemptionHandlers(int rank) {
  g_signal = 0;
  format_message(g_term_msg, rank, "SIGTERM");
  format_message(g_usr1_msg, rank, "SIGUSR1");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGUSR1, &sa, &g_old_usr1);
}

PreemptionHandlers::~PreemptionHandlers() {
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGUSR1, &g_old_usr1, nullptr);
}

int preemption_signal() { return g_signal; }

}  // namespace shoestring
