#pragma once
// What tests read back from a run: a fresh scratch directory name and metrics.jsonl without the
// fields that legitimately differ between identical runs.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

namespace shoestring::testing {

// <temp>/<prefix>_<name>_<pid>, removed if it exists.
inline std::filesystem::path fresh_dir(const std::string& prefix, const std::string& name) {
  const std::filesystem::path d =
      std::filesystem::temp_directory_path() / (prefix + "_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  return d;
}

// A whole file's bytes ("" when it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// metrics.jsonl without the timing fields (tokens_per_s and everything after it).
inline std::vector<std::string> deterministic_metrics(const std::filesystem::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<std::string> out;
  const std::regex timing(R"(,"tokens_per_s":.*)");
  for (std::string line; std::getline(in, line);) out.push_back(std::regex_replace(line, timing, ""));
  return out;
}

}  // namespace shoestring::testing
