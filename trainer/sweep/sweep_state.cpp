#include "trainer/sweep/sweep_state.h"

#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "trainer/train.h"

namespace fs = std::filesystem;

namespace shoestring::sweep {

namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string json_string(const std::string& text, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = text.find(k);
  if (at == std::string::npos) return "";
  const size_t open = text.find('"', at + k.size());
  const size_t close = open == std::string::npos ? open : text.find('"', open + 1);
  return close == std::string::npos ? "" : text.substr(open + 1, close - open - 1);
}

// Write to a temporary file and rename: a reader never sees half a file, even after a crash.
void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) throw std::runtime_error(tmp.string() + ": cannot write");
  }
  fs::rename(tmp, path);
}

}  // namespace

bool json_number(const std::string& line, const std::string& key, double& out) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  if (at == std::string::npos) return false;
  const char* begin = line.c_str() + at + k.size();
  char* end = nullptr;
  out = std::strtod(begin, &end);
  return end != begin;
}

std::string utc_now() { return utc_stamp("%Y-%m-%dT%H:%M:%SZ"); }

std::string status_path(const SweepFile& s, const std::string& run) {
  return (fs::path(s.dir) / run / "sweep-status.json").string();
}

RunStatus read_status(const SweepFile& s, const std::string& run) {
  RunStatus st;
  std::ifstream in(status_path(s, run));
  if (!in) return st;
  std::stringstream text;
  text << in.rdbuf();
  const std::string t = text.str();
  if (const std::string v = json_string(t, "status"); !v.empty()) st.status = v;
  double d = 0;
  if (json_number(t, "exit_code", d)) st.exit_code = int(d);
  if (json_number(t, "attempts", d)) st.attempts = int(d);
  if (json_number(t, "ranks", d)) st.ranks = int(d);
  st.updated = json_string(t, "updated");
  return st;
}

void write_status(const SweepFile& s, const std::string& run, const RunStatus& st) {
  fs::create_directories(fs::path(s.dir) / run);
  std::ostringstream o;
  o << "{\"run\":" << quoted(run) << ",\"status\":" << quoted(st.status) << ",\"exit_code\":" << st.exit_code
    << ",\"attempts\":" << st.attempts << ",\"ranks\":" << st.ranks << ",\"updated\":" << quoted(st.updated) << "}\n";
  write_atomically(status_path(s, run), o.str());
}

void write_summary(const SweepFile& s, const std::vector<RunSpec>& runs) {
  fs::create_directories(s.dir);
  std::ostringstream o;
  o << "{\n  \"name\": " << quoted(s.name) << ",\n  \"sweep_file\": " << quoted(s.path) << ",\n  \"base\": "
    << quoted(s.base) << ",\n  \"updated\": " << quoted(utc_now()) << ",\n  \"runs\": [";
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunStatus st = read_status(s, runs[i].name);
    o << (i ? "," : "") << "\n    {\"name\": " << quoted(runs[i].name) << ", \"status\": " << quoted(st.status)
      << ", \"exit_code\": " << st.exit_code << ", \"attempts\": " << st.attempts << ", \"overrides\": {";
    for (size_t j = 0; j < runs[i].overrides.size(); ++j)
      o << (j ? ", " : "") << quoted(runs[i].overrides[j].first) << ": " << quoted(runs[i].overrides[j].second);
    o << "}}";
  }
  o << "\n  ]\n}\n";
  write_atomically(fs::path(s.dir) / "sweep.json", o.str());
}

int64_t last_metrics_step(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  int64_t last = 0;
  double step = 0;
  for (std::string line; std::getline(in, line);)
    if (json_number(line, "step", step)) last = int64_t(step);
  return last;
}

}  // namespace shoestring::sweep
