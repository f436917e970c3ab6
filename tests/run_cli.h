#pragma once
// Runs the real `shoestring` executable from the source root, as a user would, for end-to-end
// tests: its exit code and its stdout + stderr.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace shoestring::testing {

struct CliResult {
  int code;            // exit status, -1 if it did not exit normally
  std::string output;  // stdout + stderr
};

// Any shell command, run from the source root.
inline CliResult run_command(const std::string& command) {
  const std::string cmd = "cd " SHOESTRING_SOURCE_DIR " && " + command + " 2>&1";
  CliResult r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), int(buf.size()), p)) r.output += buf.data();
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline CliResult run_shoestring(const std::string& args) {
  return run_command(SHOESTRING_BINARY_DIR "/bin/shoestring " + args);
}

}  // namespace shoestring::testing
