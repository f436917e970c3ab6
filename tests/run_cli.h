#pragma once
// Runs the real `shoestring` executable from the source root, as a user would, for end-to-end
// tests: its exit code and its stdout + stderr.
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <string>

namespace shoestring::testing {

struct CliResult {
  int code = -1;        // exit status, -1 if it did not exit normally
  std::string output;   // stdout + stderr
  double seconds = 0;   // wall time
};

// Any shell command, run from the source root.
inline CliResult run_command(const std::string& command) {
  const std::string cmd = "cd " SHOESTRING_SOURCE_DIR " && " + command + " 2>&1";
  const auto t0 = std::chrono::steady_clock::now();
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), int(buf.size()), p)) r.output += buf.data();
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

inline CliResult run_shoestring(const std::string& args) {
  return run_command(SHOESTRING_BINARY_DIR "/bin/shoestring " + args);
}

}  // namespace shoestring::testing
