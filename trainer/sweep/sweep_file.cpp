#include "trainer/sweep/sweep_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "trainer/config_loader.h"

namespace fs = std::filesystem;

namespace shoestring::sweep {

namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) { throw ConfigError(where + ": " + what); }

// A null key reads as yaml-cpp's "null", which each caller then refuses by that name.
std::string key_text(const YAML::Node& key, const std::string& where) {
  return yaml_key(key, where, "a key such as optim.lr", /*null_ok=*/true);
}

// A value as --set takes it: a scalar, or a list joined with commas (list-valued keys).
std::string value_text(const YAML::Node& v, const std::string& where, const std::string& key) {
  if (v.IsScalar()) return v.Scalar();
  if (v.IsSequence()) {
    std::string joined;
    for (const auto& item : v) {
      if (!item.IsScalar()) fail(where, key + ": expected a value or a list of values, got a nested structure");
      joined += (joined.empty() ? "" : ",") + item.Scalar();
    }
    return joined;
  }
  fail(where, key + ": expected a value, got " + (v.IsMap() ? "a mapping" : "nothing"));
}

bool is_integer_text(const std::string& s) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

double number(const YAML::Node& v, const std::string& where, const std::string& key) {
  if (!v.IsScalar()) fail(where, key + ": expected a number");
  try {
    size_t used = 0;
    const double d = std::stod(v.Scalar(), &used);
    if (used == v.Scalar().size() && std::isfinite(d)) return d;
  } catch (const std::exception&) {
  }
  fail(where, key + ": expected a number, got \"" + v.Scalar() + "\"");
}

void check_key_path(const std::string& key, const std::string& where) {
  if (key.find('.') == std::string::npos || key.front() == '.' || key.back() == '.')
    fail(where, key + ": expected a config key path such as optim.lr");
  // resolve_run gives every run its own folder: a value set here would be dropped without a word.
  if (key == "log.run_dir") fail(where, key + ": the sweep sets it for every run (<dir>/<run name>); set dir: instead");
}

// Two equal values on one axis make two identical runs: twice the time for one result, and a
// report that averages a run with itself. Numbers compare by value (1e-3 is 0.001).
void check_distinct(const Axis& a, const std::string& what) {
  auto same = [](const std::string& x, const std::string& y) {
    if (x == y) return true;
    try {
      size_t ux = 0, uy = 0;
      const double dx = std::stod(x, &ux), dy = std::stod(y, &uy);
      return ux == x.size() && uy == y.size() && dx == dy;
    } catch (const std::exception&) {
      return false;
    }
  };
  for (size_t i = 0; i < a.values.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (same(a.values[i], a.values[j]))
        fail(a.where, what + ": " + a.values[i] + (a.values[i] == a.values[j] ? "" : " (= " + a.values[j] + ")") +
                          " appears twice: the two runs would be identical");
}

// More runs than a person reads in a plan or a report, and expanding 10^8 of them takes minutes
// and gigabytes; several sweep files split a larger study.
constexpr double kMaxRuns = 10000;

Axis parse_random_axis(const std::string& key, const YAML::Node& spec, const std::string& where) {
  check_key_path(key, where);
  if (!spec.IsMap() || spec.size() != 1)
    fail(where, key + ": expected one of {log_uniform: [lo, hi]}, {uniform: [lo, hi]}, {choice: [a, b, ...]}");
  Axis a;
  a.key = key;
  a.where = where;
  const std::string kind = key_text(spec.begin()->first, where);
  const YAML::Node& v = spec.begin()->second;
  if (kind == "choice") {
    a.kind = Axis::Choice;
    if (!v.IsSequence() || v.size() == 0) fail(where, key + ": choice needs a non-empty list of values");
    for (const auto& item : v) a.values.push_back(value_text(item, where, key));
    return a;
  }
  if (kind != "uniform" && kind != "log_uniform")
    fail(where, key + ": unknown distribution \"" + kind + "\" (log_uniform, uniform or choice)");
  a.kind = kind == "uniform" ? Axis::Uniform : Axis::LogUniform;
  if (!v.IsSequence() || v.size() != 2) fail(where, key + ": " + kind + " needs [lo, hi]");
  a.lo = number(v[0], where, key);
  a.hi = number(v[1], where, key);
  a.integer = is_integer_text(v[0].Scalar()) && is_integer_text(v[1].Scalar());
  if (!(a.lo < a.hi)) fail(where, key + ": " + kind + " needs lo < hi");
  if (a.kind == Axis::LogUniform && a.lo <= 0) fail(where, key + ": log_uniform needs lo > 0");
  return a;
}

// Draws are rounded to 4 significant digits: the value in the run's name is the value it trains
// with, and the names stay short.
std::string format_draw(double x, bool integer) {
  char buf[32];
  if (integer) std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(std::llround(x)));
  else std::snprintf(buf, sizeof buf, "%.4g", x);
  return buf;
}

// A uniform double in [0, 1) from 53 random bits: std::uniform_real_distribution is not specified
// bit for bit, and the same seed must give the same runs with every standard library.
double unit(std::mt19937_64& g) { return double(g() >> 11) * 0x1.0p-53; }

std::string draw(const Axis& a, std::mt19937_64& g) {
  const double u = unit(g);
  switch (a.kind) {
    case Axis::Choice:
      return a.values[std::min(a.values.size() - 1, size_t(u * double(a.values.size())))];
    case Axis::Uniform:
      return a.integer ? format_draw(std::floor(a.lo + u * (a.hi - a.lo + 1)), true) : format_draw(a.lo + u * (a.hi - a.lo), false);
    case Axis::LogUniform:
      return format_draw(std::exp(std::log(a.lo) + u * (std::log(a.hi) - std::log(a.lo))), a.integer);
    default:
      return "";
  }
}

std::string short_name(const std::vector<Axis>& axes, size_t i) {
  const std::string& key = axes[i].key;
  if (axes[i].kind == Axis::Seeds) return "seed";
  const std::string last = key.substr(key.rfind('.') + 1);
  for (size_t j = 0; j < axes.size(); ++j)
    if (j != i && axes[j].kind != Axis::Seeds && axes[j].key.substr(axes[j].key.rfind('.') + 1) == last) return key;
  return last;
}

// Run names are folder names: anything but [A-Za-z0-9._+=-] becomes '_'.
std::string sanitize(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '+' && c != '-' && c != '=') c = '_';
  return out;
}

// load_config reports an override as "--set key=value: ..."; in a sweep the user wrote it in the
// sweep file, so the message points there.
Config load_with(const SweepFile& s, const std::vector<Override>& overrides, const std::vector<std::string>& where,
                 const std::string& run) {
  std::vector<std::string> sets;
  for (const auto& [k, v] : overrides) sets.push_back(k + "=" + v);
  try {
    return load_config({s.base}, sets);
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    for (size_t i = 0; i < sets.size(); ++i) {
      const std::string prefix = "--set " + sets[i] + ": ";
      if (msg.rfind(prefix, 0) == 0) throw ConfigError(where[i] + ": " + msg.substr(prefix.size()) + (run.empty() ? "" : " (run " + run + ")"));
    }
    throw ConfigError(s.path + ": " + (run.empty() ? "" : "run " + run + ": ") + msg);
  }
}

}  // namespace

bool Axis::log_scale() const {
  if (kind == LogUniform) return true;
  const std::string last = key.substr(key.rfind('.') + 1);
  return last == "lr" || last == "min_lr";
}

SweepFile parse_sweep_text(const std::string& yaml, const std::string& origin, const std::string& folder) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::ParserException& e) {
    fail(origin + ":" + std::to_string(e.mark.line + 1), "YAML syntax error: " + e.msg);
  }
  if (!root.IsMap()) fail(origin, "expected a mapping with base:, grid:, random:, seeds:, set:, name:, dir:");
  SweepFile s;
  s.path = origin;
  s.name = fs::path(origin).stem().string();
  std::vector<Axis> grid, random, seeds;
  double samples_asked = 0;
  for (const auto& kv : root) {
    const std::string where = yaml_where(origin, kv.first);
    const std::string key = key_text(kv.first, where);
    const YAML::Node& v = kv.second;
    if (key == "base" || key == "name" || key == "dir") {
      if (!v.IsScalar() || v.Scalar().empty()) fail(where, key + ": expected a non-empty string");
      (key == "base" ? s.base : key == "name" ? s.name : s.dir) = v.Scalar();
    } else if (key == "set") {
      if (!v.IsMap()) fail(where, "set: expected a mapping of key.path: value");
      for (const auto& item : v) {
        const std::string w = yaml_where(origin, item.first), k = key_text(item.first, w);
        check_key_path(k, w);
        s.common.emplace_back(k, value_text(item.second, w, k));
        s.common_where.push_back(w);
      }
    } else if (key == "grid") {
      if (!v.IsMap()) fail(where, "grid: expected a mapping of key.path: [values]");
      for (const auto& item : v) {
        Axis a;
        a.where = yaml_where(origin, item.first);
        a.key = key_text(item.first, a.where);
        check_key_path(a.key, a.where);
        if (!item.second.IsSequence()) fail(a.where, a.key + ": expected a list of values");
        if (item.second.size() == 0) fail(a.where, a.key + ": empty axis (no values)");
        for (const auto& x : item.second) a.values.push_back(value_text(x, a.where, a.key));
        check_distinct(a, a.key);
        grid.push_back(a);
      }
    } else if (key == "random") {
      if (!v.IsMap()) fail(where, "random: expected samples:, seed: and axes:");
      if (!v["samples"] || !v["axes"]) fail(where, "random: needs samples: and axes:");
      const double samples = number(v["samples"], yaml_where(origin, v["samples"]), "random.samples");
      if (samples < 1 || samples != std::floor(samples)) fail(yaml_where(origin, v["samples"]), "random.samples: expected an integer >= 1");
      // The number of runs is checked below; capped here so that the cast is exact.
      samples_asked = samples;
      s.samples = int64_t(std::min(samples, kMaxRuns + 1));
      if (v["seed"]) {
        const std::string w = yaml_where(origin, v["seed"]);
        auto bad_seed = [&] { fail(w, "random.seed: expected an integer from 0 to 2^64-1, got " + v["seed"].Scalar()); };
        const std::string text = v["seed"].IsScalar() ? v["seed"].Scalar() : "";
        if (is_integer_text(text) && text[0] != '-') {
          // Digits exactly: through a double, 2^64-1 would round to 2^64 (refused) and seeds above
          // 2^53 would silently become their neighbours.
          const size_t at = text[0] == '+' ? 1 : 0;
          const auto [end, ec] = std::from_chars(text.data() + at, text.data() + text.size(), s.random_seed);
          if (ec != std::errc() || end != text.data() + text.size()) bad_seed();
        } else {
          // A negative or huge double converted to uint64_t is undefined behaviour, not an error.
          const double seed = number(v["seed"], w, "random.seed");
          if (seed < 0 || seed != std::floor(seed) || seed >= 0x1p64) bad_seed();
          s.random_seed = uint64_t(seed);
        }
      }
      for (const auto& sub : v) {
        const std::string k = key_text(sub.first, yaml_where(origin, sub.first));
        if (k != "samples" && k != "seed" && k != "axes") fail(yaml_where(origin, sub.first), "random." + k + ": unknown key (samples, seed, axes)");
      }
      if (!v["axes"].IsMap() || v["axes"].size() == 0) fail(yaml_where(origin, v["axes"]), "random.axes: expected a non-empty mapping of key.path: {distribution}");
      for (const auto& item : v["axes"])
        random.push_back(parse_random_axis(key_text(item.first, yaml_where(origin, item.first)), item.second, yaml_where(origin, item.first)));
    } else if (key == "seeds") {
      if (!v.IsSequence() || v.size() == 0) fail(where, "seeds: expected a non-empty list of integers");
      Axis a;
      a.key = "train.seed";
      a.kind = Axis::Seeds;
      a.where = where;
      for (const auto& x : v) {
        if (!x.IsScalar() || !is_integer_text(x.Scalar())) fail(where, "seeds: expected integers");
        a.values.push_back(x.Scalar());
      }
      check_distinct(a, "seeds");
      seeds.push_back(a);
    } else {
      fail(where, key + ": unknown key (base, set, grid, random, seeds, name, dir)");
    }
  }
  if (s.base.empty()) fail(origin, "base: missing (the config every run starts from, e.g. base: configs/tiny.yaml)");
  // Relative to the sweep file first, so a sweep next to its config works from anywhere.
  const fs::path beside = fs::path(folder) / s.base;
  if (fs::path(s.base).is_relative() && fs::exists(beside)) s.base = beside.lexically_normal().string();
  else if (!fs::exists(s.base)) fail(origin, "base: " + s.base + ": no such file (looked beside the sweep file and in the working directory)");
  if (s.name != sanitize(s.name)) fail(origin, "name: \"" + s.name + "\" may only hold letters, digits and . _ + -");
  if (s.dir.empty()) s.dir = "runs/sweeps/" + s.name;
  for (auto* group : {&grid, &random, &seeds}) s.axes.insert(s.axes.end(), group->begin(), group->end());
  char text[32];
  std::snprintf(text, sizeof text, "%.15g", samples_asked);
  double runs = samples_asked > 0 ? samples_asked : 1;
  std::string factors = samples_asked > 0 ? std::string("random.samples ") + text : "";
  for (const auto& a : s.axes)
    if (a.kind == Axis::Grid || a.kind == Axis::Seeds) {
      runs *= double(a.values.size());
      factors += (factors.empty() ? "" : " x ") + (a.kind == Axis::Seeds ? std::string("seeds") : a.key) + " " +
                 std::to_string(a.values.size());
    }
  if (runs > kMaxRuns) {
    std::snprintf(text, sizeof text, runs < 1e15 ? "%.0f" : "%.3g", runs);
    fail(origin, std::string(text) + " runs (" + factors + "): at most 10000 runs per sweep; split it into several sweep files");
  }
  for (size_t i = 0; i < s.axes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (s.axes[i].key == s.axes[j].key) fail(s.axes[i].where, s.axes[i].key + ": appears on two axes");
  // Validate with the base: a misspelt axis key is reported now, not after hours of other runs.
  std::vector<Override> all = s.common;
  std::vector<std::string> where = s.common_where;
  for (const auto& a : s.axes) {
    all.emplace_back(a.key, a.values.empty() ? format_draw(a.lo, a.integer) : a.values.front());
    where.push_back(a.where);
  }
  load_with(s, all, where, "");
  return s;
}

SweepFile parse_sweep_file(const std::string& path) {
  // An ifstream opens a directory without complaint and reads nothing.
  if (std::error_code ec; fs::is_directory(path, ec)) throw ConfigError(path + ": is a directory, expected a sweep file (YAML)");
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read the sweep file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_sweep_text(text.str(), path, fs::path(path).parent_path().string());
}

std::vector<RunSpec> expand(const SweepFile& s) {
  // Random draws: one list of `samples` points, drawn once, crossed with every grid combination.
  std::vector<std::vector<std::string>> draws;
  std::mt19937_64 gen(s.random_seed);
  for (int64_t k = 0; k < s.samples; ++k) {
    std::vector<std::string> point;
    for (const auto& a : s.axes)
      if (a.kind == Axis::Uniform || a.kind == Axis::LogUniform || a.kind == Axis::Choice) point.push_back(draw(a, gen));
    draws.push_back(point);
  }
  // Levels: each grid axis, then the random samples as one level, then seeds; mixed-radix count.
  std::vector<size_t> radix;
  for (const auto& a : s.axes)
    if (a.kind == Axis::Grid) radix.push_back(a.values.size());
  if (s.samples > 0) radix.push_back(size_t(s.samples));
  for (const auto& a : s.axes)
    if (a.kind == Axis::Seeds) radix.push_back(a.values.size());
  size_t total = 1;
  for (size_t r : radix) total *= r;
  const int width = std::max<int>(3, int(std::to_string(total - 1).size()));
  std::vector<RunSpec> runs;
  for (size_t n = 0; n < total; ++n) {
    std::vector<size_t> digit(radix.size());
    for (size_t i = radix.size(), rest = n; i-- > 0;) digit[i] = rest % radix[i], rest /= radix[i];
    RunSpec r;
    r.index = int(n);
    const std::string digits = std::to_string(n);
    r.name = "r" + std::string(size_t(std::max<int>(0, width - int(digits.size()))), '0') + digits;
    size_t level = 0, random_i = 0;
    const size_t random_level = std::count_if(s.axes.begin(), s.axes.end(), [](const Axis& a) { return a.kind == Axis::Grid; });
    for (size_t i = 0; i < s.axes.size(); ++i) {
      const Axis& a = s.axes[i];
      std::string value;
      if (a.kind == Axis::Grid) value = a.values[digit[level++]];
      else if (a.kind == Axis::Seeds) value = a.values[digit.back()];
      else value = draws[digit[random_level]][random_i++];
      r.overrides.emplace_back(a.key, value);
      std::string part = short_name(s.axes, i);
      part.append("=").append(value);
      r.name.append("-").append(sanitize(part));
    }
    runs.push_back(r);
  }
  return runs;
}

int64_t sweep_checkpoint_interval(int64_t steps) { return std::max<int64_t>(1, steps / 10); }

Config resolve_common(const SweepFile& s) { return load_with(s, s.common, s.common_where, ""); }

Config resolve_run(const SweepFile& s, const RunSpec& r) {
  std::vector<Override> all = s.common;
  std::vector<std::string> where = s.common_where;
  for (size_t i = 0; i < r.overrides.size(); ++i) {
    all.push_back(r.overrides[i]);
    const std::string& key = r.overrides[i].first;
    const auto axis = std::find_if(s.axes.begin(), s.axes.end(), [&](const Axis& a) { return a.key == key; });
    where.push_back(axis != s.axes.end() ? axis->where : s.path);
  }
  Config c = load_with(s, all, where, r.name);
  c.log.run_dir = (fs::path(s.dir) / r.name).string();
  if (c.checkpoint.interval == 0) c.checkpoint.interval = sweep_checkpoint_interval(c.train.steps);
  c.name = r.name;
  return c;
}

std::vector<Difference> differences(const Config& a, const Config& b) {
  const YAML::Node ya = YAML::Load(to_yaml(a)), yb = YAML::Load(to_yaml(b));
  auto text = [](const YAML::Node& n) {
    if (n.IsScalar()) return n.Scalar();
    if (n.IsSequence()) {
      std::string j = "[";
      for (const auto& x : n) j += (j.size() > 1 ? ", " : "") + (x.IsScalar() ? x.Scalar() : std::string("?"));
      return j + "]";
    }
    return std::string();
  };
  std::vector<Difference> out;
  for (const auto& sec : yb) {
    if (!sec.second.IsMap()) continue;
    const std::string sname = sec.first.as<std::string>();
    for (const auto& kv : sec.second) {
      const std::string k = kv.first.as<std::string>();
      const YAML::Node other = ya[sname] ? ya[sname][k] : YAML::Node();
      const std::string from = other ? text(other) : "", to = text(kv.second);
      if (from != to) out.push_back({sname + "." + k, from, to});
    }
  }
  return out;
}

int64_t tokens_per_step(const Config& c, int ranks) {
  const int64_t dp = c.parallel.dp > 0 ? c.parallel.dp : std::max<int64_t>(1, ranks / std::max<int64_t>(1, c.parallel.pp));
  const int64_t batch = c.train.global_batch > 0 ? c.train.global_batch : c.train.micro_batch_size * c.train.grad_accum * dp;
  return batch * c.train.seq_len;
}

}  // namespace shoestring::sweep
