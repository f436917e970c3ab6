#include "trainer/config_loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include "trainer/config_schema.h"
#include "trainer/model/param_count.h"

namespace shoestring {

namespace {

// Where each key got its current value, so cross-field errors can point at the right line.
using Origins = std::map<std::string, std::string>;

[[noreturn]] void fail(const std::string& where, const std::string& key, const std::string& msg) {
  throw ConfigError(where + ": " + key + ": " + msg);
}

std::string quote_text(const std::string& s) { return "\"" + s + "\""; }

std::vector<std::string> sections() {
  std::vector<std::string> out;
  for (const auto& f : config_schema()) {
    std::string sec = f.path.substr(0, f.path.find('.'));
    if (std::find(out.begin(), out.end(), sec) == out.end()) out.push_back(sec);
  }
  return out;
}

// The first key of a section, for examples in messages.
std::string find_field_in(const std::string& section) {
  for (const auto& f : config_schema())
    if (f.path.rfind(section + ".", 0) == 0) return f.path.substr(section.size() + 1);
  return "key";
}

std::vector<std::string> keys() {
  std::vector<std::string> out;
  for (const auto& f : config_schema()) out.push_back(f.path);
  return out;
}

std::string expected(const FieldSpec& f) {
  const bool pos = f.rule == FieldRule::Positive, nonneg = f.rule == FieldRule::NonNegative;
  switch (f.type) {
    case FieldType::Int:
      return pos ? "a positive integer" : nonneg ? "a non-negative integer" : "an integer";
    case FieldType::Float:
      if (f.rule == FieldRule::Unit) return "a number in [0, 1]";
      if (f.rule == FieldRule::Below1) return "a number in [0, 1)";
      return pos ? "a positive number" : nonneg ? "a non-negative number" : "a number";
    case FieldType::IntList:
      return pos ? "a list of positive integers" : nonneg ? "a list of non-negative integers" : "a list of integers";
    case FieldType::Bool: return "true or false";
    case FieldType::String: return "a string";
    case FieldType::Choice:
    case FieldType::StringList: {
      if (f.choices.empty()) return "a list of strings";
      std::string s = f.type == FieldType::Choice ? "one of " : "a list of ";
      for (size_t i = 0; i < f.choices.size(); ++i) s += (i ? ", " : "") + f.choices[i];
      return s;
    }
  }
  return "?";
}

bool rule_ok(FieldRule r, double x) {
  switch (r) {
    case FieldRule::Any: return true;
    case FieldRule::Positive: return x > 0;
    case FieldRule::NonNegative: return x >= 0;
    case FieldRule::Unit: return x >= 0 && x <= 1;
    case FieldRule::Below1: return x >= 0 && x < 1;
  }
  return false;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Parses one scalar text for field f, or throws with the expected type.
// "[a, b]" or "a, b" -> trimmed items; "" and "[]" are the empty list. An empty item ("a,,b")
// is an error (a typo, not a shorter list); one trailing comma is allowed (YAML sequences are
// joined with one).
std::vector<std::string> split_list(const FieldSpec& f, const std::string& text, const std::string& where) {
  std::string t = trim(text);
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') t = trim(t.substr(1, t.size() - 2));
  if (!t.empty() && t.back() == ',') t.pop_back();
  std::vector<std::string> items;
  if (t.empty()) return items;
  std::stringstream ss(t);
  for (std::string item; std::getline(ss, item, ',');) {
    item = trim(item);
    if (item.empty()) fail(where, f.path, "expected " + expected(f) + ", got an empty item in " + quote_text(text));
    items.push_back(item);
  }
  if (t.back() == ',') fail(where, f.path, "expected " + expected(f) + ", got an empty item in " + quote_text(text));
  return items;
}

bool parse_int(const std::string& text, FieldRule rule, int64_t& v) {
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  return !text.empty() && ec == std::errc() && p == end && rule_ok(rule, double(v));
}

// Parses one scalar text for field f, or throws with the expected type.
ConfigValue parse_scalar(const FieldSpec& f, const std::string& text, const std::string& where) {
  auto bad = [&]() { return ConfigError(where + ": " + f.path + ": expected " + expected(f) + ", got " + quote_text(text)); };
  switch (f.type) {
    case FieldType::Int: {
      int64_t v = 0;
      if (!parse_int(text, f.rule, v)) throw bad();
      return v;
    }
    case FieldType::IntList: {
      std::vector<int64_t> items;
      for (const std::string& item : split_list(f, text, where)) {
        int64_t v = 0;
        if (!parse_int(item, f.rule, v)) fail(where, f.path, "expected " + expected(f) + ", got " + quote_text(item));
        items.push_back(v);
      }
      return items;
    }
    case FieldType::Float: {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || !rule_ok(f.rule, v)) throw bad();
      return v;
    }
    case FieldType::Bool: {
      std::string t = text;
      std::transform(t.begin(), t.end(), t.begin(), ::tolower);
      if (t == "true" || t == "yes" || t == "on") return true;
      if (t == "false" || t == "no" || t == "off") return false;
      throw bad();
    }
    case FieldType::String: return text;
    case FieldType::Choice:
      if (std::find(f.choices.begin(), f.choices.end(), text) == f.choices.end()) throw bad();
      return text;
    case FieldType::StringList: {
      std::vector<std::string> items;
      for (const std::string& item : split_list(f, text, where)) {
        if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), item) == f.choices.end())
          fail(where, f.path, "expected " + expected(f) + ", got " + quote_text(item));
        items.push_back(item);
      }
      return items;
    }
  }
  throw bad();
}

std::string unknown_key_message(const std::string& key) {
  const bool is_section = key.find('.') == std::string::npos;
  const std::string hint = closest_key(key, is_section ? sections() : keys());
  return std::string(is_section ? "unknown section" : "unknown key") +
         (hint.empty() ? "" : "; did you mean " + hint + "?");
}

const FieldSpec& require_field(const std::string& path, const std::string& where) {
  const FieldSpec* f = find_field(path);
  if (!f) fail(where, path, unknown_key_message(path));
  return *f;
}

void apply_yaml(Config& c, Origins& origins, const YAML::Node& root, const std::string& origin) {
  if (root.IsNull()) return;  // an empty file changes nothing
  if (!root.IsMap()) throw ConfigError(yaml_where(origin, root) + ": expected a mapping of sections (model, train, ...)");
  // yaml-cpp keeps both of a repeated key, and the later one would win without a word.
  std::map<std::string, std::string> seen;  // section or section.key -> where it first appeared
  const auto first_time = [&](const std::string& key, const std::string& where) {
    const auto [it, inserted] = seen.emplace(key, where);
    if (!inserted) fail(where, key, "duplicate key (first at " + it->second + ")");
  };
  for (const auto& sec : root) {
    const std::string swhere = yaml_where(origin, sec.first);
    const std::string sname = yaml_key(sec.first, swhere, "a key name");
    const auto known = sections();
    if (std::find(known.begin(), known.end(), sname) == known.end())
      fail(swhere, sname, unknown_key_message(sname));
    first_time(sname, swhere);
    if (sec.second.IsNull()) continue;
    if (!sec.second.IsMap()) fail(swhere, sname, "expected a mapping of keys");
    for (const auto& kv : sec.second) {
      const std::string where = yaml_where(origin, kv.first);
      const std::string path = sname + "." + yaml_key(kv.first, where, "a key name");
      const FieldSpec& f = require_field(path, where);
      first_time(path, where);
      const YAML::Node& v = kv.second;
      ConfigValue value;
      if ((f.type == FieldType::StringList || f.type == FieldType::IntList) && v.IsSequence()) {
        std::string joined;
        for (const auto& item : v) {
          if (!item.IsScalar()) fail(where, path, "expected " + expected(f) + ", got a nested structure");
          joined += item.Scalar() + ",";
        }
        value = parse_scalar(f, joined, where);
      } else if (v.IsScalar()) {
        value = parse_scalar(f, v.Scalar(), where);
      } else if (v.IsNull()) {
        if (f.type != FieldType::String) fail(where, path, "expected " + expected(f) + ", got nothing");
        value = std::string();
      } else {
        fail(where, path, "expected " + expected(f) + ", got a " + (v.IsMap() ? "mapping" : "list"));
      }
      f.set(c, value);
      origins[path] = where;
    }
  }
}

void apply_set(Config& c, Origins& origins, const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string where = "--set " + assignment;
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(where + ": expected key.path=value");
  const std::string path = trim(assignment.substr(0, eq));
  const auto known = sections();
  if (std::find(known.begin(), known.end(), path) != known.end())
    fail(where, path, "is a section; set one of its keys, e.g. --set " + path + "." +
                          find_field_in(path) + "=...");
  const FieldSpec& f = require_field(path, where);
  std::string text = trim(assignment.substr(eq + 1));
  if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') && text.back() == text.front())
    text = text.substr(1, text.size() - 2);
  f.set(c, parse_scalar(f, text, where));
  origins[path] = where;
}

// Cross-field rules: checked once, on the merged result.
void validate(const Config& c, const Origins& origins) {
  auto at = [&](const std::string& key) {
    auto it = origins.find(key);
    return it == origins.end() ? std::string("config (default)") : it->second;
  };
  const auto& m = c.model;
  auto num = [](int64_t x) { return std::to_string(x); };
  if (m.attention == "gqa") {
    if (m.d_model % m.n_heads != 0)
      fail(at("model.n_heads"), "model.n_heads", "must divide model.d_model (" + num(m.d_model) + "), got " + num(m.n_heads));
    if ((m.d_model / m.n_heads) % 2 != 0)
      fail(at("model.n_heads"), "model.n_heads", "head size d_model/n_heads must be even for rotary embeddings, got " + num(m.d_model / m.n_heads));
    if (m.n_heads % m.n_kv_heads != 0)
      fail(at("model.n_kv_heads"), "model.n_kv_heads", "must divide model.n_heads (" + num(m.n_heads) + "), got " + num(m.n_kv_heads));
  } else if (m.qk_rope_head_dim % 2 != 0) {
    fail(at("model.qk_rope_head_dim"), "model.qk_rope_head_dim", "must be even for rotary embeddings, got " + num(m.qk_rope_head_dim));
  }
  if (m.n_routed_experts > 0) {
    const int64_t e = m.n_routed_experts;
    if (m.n_activated_experts > e)
      fail(at("model.n_activated_experts"), "model.n_activated_experts", "must not exceed model.n_routed_experts (" + num(e) + "), got " + num(m.n_activated_experts));
    if (e % m.n_expert_groups != 0)
      fail(at("model.n_expert_groups"), "model.n_expert_groups", "must divide model.n_routed_experts (" + num(e) + "), got " + num(m.n_expert_groups));
    if (m.n_limited_groups > m.n_expert_groups)
      fail(at("model.n_limited_groups"), "model.n_limited_groups", "must not exceed model.n_expert_groups (" + num(m.n_expert_groups) + "), got " + num(m.n_limited_groups));
    if (m.n_activated_experts > m.n_limited_groups * (e / m.n_expert_groups))
      fail(at("model.n_activated_experts"), "model.n_activated_experts", "must not exceed the experts in the allowed groups (n_limited_groups * n_routed_experts / n_expert_groups = " + num(m.n_limited_groups * (e / m.n_expert_groups)) + "), got " + num(m.n_activated_experts));
    if (m.n_dense_layers > m.n_layers)
      fail(at("model.n_dense_layers"), "model.n_dense_layers", "must not exceed model.n_layers (" + num(m.n_layers) + "), got " + num(m.n_dense_layers));
  }
  if (m.mtp_depth >= c.train.seq_len)
    fail(at("model.mtp_depth"), "model.mtp_depth", "must be below train.seq_len (" + num(c.train.seq_len) + "), got " + num(m.mtp_depth));
  if (c.train.seq_len > m.max_seq_len)
    fail(at("train.seq_len"), "train.seq_len", "must not exceed model.max_seq_len (" + std::to_string(m.max_seq_len) + "), got " + std::to_string(c.train.seq_len));
  if (c.optim.min_lr > c.optim.lr)
    fail(at("optim.min_lr"), "optim.min_lr", "must not exceed optim.lr (" + format_value(c.optim.lr) + "), got " + format_value(c.optim.min_lr));
  const auto& t = c.train;
  if (t.global_batch > 0) {
    if (t.grad_accum != 1)
      fail(at("train.grad_accum"), "train.grad_accum", "set either train.global_batch or train.grad_accum, not both (global_batch fixes the accumulation steps)");
    if (t.global_batch % t.micro_batch_size != 0)
      fail(at("train.global_batch"), "train.global_batch", "must be a multiple of train.micro_batch_size (" + num(t.micro_batch_size) + "), got " + num(t.global_batch));
    if (c.parallel.dp > 0 && t.global_batch % (t.micro_batch_size * c.parallel.dp) != 0)
      fail(at("train.global_batch"), "train.global_batch", "must be a multiple of train.micro_batch_size x parallel.dp (" + num(t.micro_batch_size * c.parallel.dp) + "), got " + num(t.global_batch));
  }
  const auto& par = c.parallel;
  if (par.dp > 0 && par.dp % par.ep != 0)
    fail(at("parallel.ep"), "parallel.ep", "must divide parallel.dp (" + num(par.dp) + "), got " + num(par.ep));
  if (par.pp > 1 && !par.stage_layers.empty()) {
    const int64_t stages = par.pp * (par.schedule == "interleaved" ? par.virtual_stages : par.schedule == "dualpipev" ? 2 : 1);
    int64_t sum = 0;
    for (int64_t n : par.stage_layers) sum += n;
    if (int64_t(par.stage_layers.size()) != stages)
      fail(at("parallel.stage_layers"), "parallel.stage_layers", "needs one entry per pipeline stage (" + num(stages) + " with " + par.schedule + " and pp " + num(par.pp) + "), got " + num(int64_t(par.stage_layers.size())));
    if (sum != m.n_layers)
      fail(at("parallel.stage_layers"), "parallel.stage_layers", "must sum to model.n_layers (" + num(m.n_layers) + "), got " + num(sum));
  }
  if (par.ep > 1 && m.n_routed_experts == 0)
    fail(at("parallel.ep"), "parallel.ep", "needs routed experts to shard (model.n_routed_experts is 0); use 1");
  if (par.ep > 1 && m.n_routed_experts % par.ep != 0)
    fail(at("parallel.ep"), "parallel.ep", "must divide model.n_routed_experts (" + num(m.n_routed_experts) + "), got " + num(par.ep));
  if (par.ep_dispatch_dtype == "fp8" && par.ep <= 1)
    fail(at("parallel.ep_dispatch_dtype"), "parallel.ep_dispatch_dtype", "fp8 needs expert parallelism (parallel.ep > 1, got " + num(par.ep) + "): without it no token rows are dispatched");
  if (par.ep_max_nodes > 0 && m.n_limited_groups < m.n_expert_groups)
    fail(at("parallel.ep_max_nodes"), "parallel.ep_max_nodes", "cannot be combined with group-limited routing (model.n_limited_groups " + num(m.n_limited_groups) + " < model.n_expert_groups " + num(m.n_expert_groups) + "); set one of them");
  if (c.train.nonfinite == "rollback" && c.checkpoint.interval == 0)
    fail(at("train.nonfinite"), "train.nonfinite", "rollback needs checkpoints to roll back to: set checkpoint.interval > 0");
  const auto& d = c.data;
  if (d.source != "synthetic" && d.path.empty())
    fail(at("data.source"), "data.path", "required with data.source: " + d.source + " (a dataset file, a shard pattern or a list)");
  if (d.source != "synthetic" && d.eval_interval > 0 && d.val_path.empty() && d.val_fraction == 0)
    fail(at("data.eval_interval"), "data.eval_interval", "needs validation data: set data.val_path or data.val_fraction > 0");
  try {
    model::count_parameters(m);
  } catch (const std::overflow_error& e) {
    fail("config", "model", e.what());
  }
  if (c.data.synthetic_branching > m.vocab_size)
    fail(at("data.synthetic_branching"), "data.synthetic_branching", "must not exceed model.vocab_size (" + std::to_string(m.vocab_size) + "), got " + std::to_string(c.data.synthetic_branching));
}

YAML::Node parse_yaml(const std::string& text, const std::string& origin) {
  try {
    // YAML::Load reads the first document only: a second one (after `---`) would be dropped unread.
    const std::vector<YAML::Node> docs = YAML::LoadAll(text);
    for (size_t i = 1; i < docs.size(); ++i)
      if (!docs[i].IsNull())
        throw ConfigError(yaml_where(origin, docs[i]) +
                          ": a second YAML document (after ---); a config file holds one (pass several files with --config)");
    return docs.empty() ? YAML::Node() : docs.front();
  } catch (const YAML::ParserException& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
}

}  // namespace

std::string yaml_where(const std::string& origin, const YAML::Node& n) {
  const auto m = n.Mark();
  return m.line >= 0 ? origin + ":" + std::to_string(m.line + 1) : origin;
}

std::string yaml_key(const YAML::Node& key, const std::string& where, const std::string& expected, bool null_ok) {
  if (key.IsScalar() || (null_ok && key.IsNull())) return key.as<std::string>();
  throw ConfigError(where + ": expected " + expected + ", got a " +
                    (key.IsMap() ? "mapping" : key.IsSequence() ? "list" : "null key"));
}

std::string closest_key(const std::string& word, const std::vector<std::string>& candidates) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= b.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  std::string best;
  size_t best_d = std::max<size_t>(3, word.size() / 3) + 1;  // farther than this is no hint
  for (const auto& c : candidates) {
    const size_t d = distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  if (!best.empty()) return best;
  // Too far to be a typo, but maybe the right name in the wrong section or cut short: run.dir for
  // log.run_dir, optim.warmup for optim.warmup_steps, train.warmup_steps for optim.warmup_steps.
  auto flat = [](std::string s) {
    std::replace(s.begin(), s.end(), '.', '_');
    return s;
  };
  auto leaf = [](const std::string& s) { return s.substr(s.rfind('.') + 1); };
  const std::string w = flat(word);
  best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    const bool related = leaf(c) == leaf(word) || (w.size() >= 4 && flat(c).find(w) != std::string::npos);
    if (!related) continue;
    const size_t d = distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

Config load_config_text(const std::string& yaml, const std::string& origin, const std::vector<std::string>& sets) {
  Config c;
  Origins origins;
  apply_yaml(c, origins, parse_yaml(yaml, origin), origin);
  for (const auto& s : sets) apply_set(c, origins, s);
  validate(c, origins);
  return c;
}

Config load_config(const std::vector<std::string>& files, const std::vector<std::string>& sets) {
  Config c;
  Origins origins;
  for (const auto& file : files) {
    // An ifstream opens a directory without complaint and reads nothing: all defaults.
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) throw ConfigError(file + ": is a directory, expected a YAML config file");
    std::ifstream in(file);
    if (!in) throw ConfigError(file + ": cannot read config file (missing or unreadable)");
    std::stringstream ss;
    ss << in.rdbuf();
    const YAML::Node root = parse_yaml(ss.str(), file);
    // An empty file (or only comments) would train the defaults under this file's name: almost
    // certainly the wrong file, or one truncated on its way here.
    if (root.IsNull()) throw ConfigError(file + ": empty config file (expected sections such as model: and train:)");
    apply_yaml(c, origins, root, file);
    c.name = std::filesystem::path(file).stem().string();
  }
  for (const auto& s : sets) apply_set(c, origins, s);
  validate(c, origins);
  return c;
}

std::string to_yaml(const Config& c) {
  std::string out, section;
  for (const auto& f : config_schema()) {
    const std::string sec = f.path.substr(0, f.path.find('.'));
    if (sec != section) {
      out += sec + ":\n";
      section = sec;
    }
    out += "  " + f.path.substr(sec.size() + 1) + ": " + format_value(f.get(c)) + "\n";
  }
  return out;
}

}  // namespace shoestring
