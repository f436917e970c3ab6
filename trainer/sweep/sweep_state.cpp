#include "trainer/sweep/sweep_state.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "trainer/checkpoint/manifest.h"
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

namespace {

// The value after "key": in a flat JSON line, as far as the next ',' or '}' ("" when absent).
std::string json_raw(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  if (at == std::string::npos) return "";
  const size_t begin = at + k.size(), end = line.find_first_of(",}", begin);
  return line.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// Whether `line` is a record as MetricsWriter writes it: one JSON object on one line with an
// integer "step" >= 1 and a "loss" that is a number or null (a skipped step, metrics.cpp).
bool metrics_record(const std::string& line, int64_t& step) {
  if (line.size() < 2 || line.front() != '{' || line.back() != '}') return false;
  const std::string s = json_raw(line, "step"), loss = json_raw(line, "loss");
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 18) return false;
  step = std::stoll(s);
  if (step < 1 || loss.empty()) return false;
  if (loss == "null") return true;
  char* end = nullptr;
  std::strtod(loss.c_str(), &end);
  return end == loss.c_str() + loss.size();
}

// A line of a damaged file as it can be shown in a one-line message: printable, at most 40 bytes.
std::string excerpt(const std::string& line) {
  std::string out;
  for (size_t i = 0; i < line.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(line[i]);
    out += c >= 0x20 && c < 0x7f ? char(c) : '?';
  }
  return line.size() > 40 ? out + "..." : out;
}

}  // namespace

MetricsFile read_metrics(const std::string& run_dir, const MetricsRecord& each) {
  MetricsFile m;
  m.path = (fs::path(run_dir) / "metrics.jsonl").string();
  std::error_code ec;
  if (!fs::exists(m.path, ec)) return m;
  m.exists = true;
  if (fs::is_directory(m.path, ec)) {
    m.error = m.path + ": is a directory, expected the trainer's metrics file";
    return m;
  }
  std::ifstream in(m.path, std::ios::binary);
  if (!in) {
    m.error = m.path + ": cannot be read: " + std::strerror(errno);
    return m;
  }
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    const bool last_unterminated = in.eof();  // getline hit the end before a newline
    int64_t step = 0;
    if (metrics_record(line, step)) {
      ++m.records;
      m.last_step = step;
      if (each) each(line);
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (last_unterminated) {
      m.torn_line = number;
      break;
    }
    m.error = m.path + ":" + std::to_string(number) +
              ": expected a JSON record with an integer \"step\" and a numeric \"loss\", as the trainer writes, got '" +
              excerpt(line) + "'";
    // The excerpt stops at 40 bytes: a record that is bad only for its line ending would look fine.
    if (line.back() == '\r' && metrics_record(line.substr(0, line.size() - 1), step))
      m.error += " (the line ends in \\r\\n; the trainer writes \\n, and its resume would drop such lines)";
    break;
  }
  if (m.error.empty() && in.bad()) m.error = m.path + ": read error after line " + std::to_string(number);
  return m;
}

int64_t newest_checkpoint_step(const Config& cfg) {
  std::error_code ec;
  try {
    for (const auto& [step, dir] : ckpt::step_dirs(checkpoint_root(cfg, cfg.log.run_dir)))
      if (fs::is_regular_file(dir / ckpt::kManifestName, ec)) return step;
  } catch (const fs::filesystem_error&) {
    // An unreadable checkpoint folder: this check has nothing to compare with, as when there is none.
  }
  return -1;
}

std::string metrics_problem(const Config& cfg, const MetricsFile& m) {
  if (!m.error.empty()) return m.error;
  if (m.last_step >= cfg.train.steps) return "";
  const int64_t checkpoint = newest_checkpoint_step(cfg);
  if (checkpoint < cfg.train.steps) return "";
  std::string where = m.path + ": ";
  if (!m.exists) where += "missing";
  else if (m.records == 0) where += "holds no record";
  else where += "ends at step " + std::to_string(m.last_step);
  if (m.torn_line > 0) where += " (then an incomplete line " + std::to_string(m.torn_line) + ")";
  return where + ", but the run's checkpoint " + ckpt::step_dir_name(checkpoint) + " reached train.steps " +
         std::to_string(cfg.train.steps) + ": the file was truncated or replaced";
}

}  // namespace shoestring::sweep
