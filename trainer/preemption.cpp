#include "trainer/preemption.h"

#include <unistd.h>

#include <csignal>

namespace shoestring {

namespace {

volatile std::sig_atomic_t g_signal = 0;
struct sigaction g_old_term, g_old_usr1;

void on_signal(int sig) {
  if (g_signal != 0) _exit(128 + sig);
  g_signal = sig;
  static const char msg[] =
      "shoestring: stop requested: finishing this step, saving a checkpoint, then exiting with code 42 "
      "(send the signal again to exit at once)\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
}

}  // namespace

PreemptionHandlers::PreemptionHandlers() {
  g_signal = 0;
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
