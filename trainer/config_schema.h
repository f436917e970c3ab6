#pragma once
// The schema: one entry per config key, with its type, rule, default and meaning. The loader, the
// `--set` parser, `config --print` and the docs test all read this one table.
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "trainer/config.h"

namespace shoestring {

using ConfigValue = std::variant<int64_t, double, bool, std::string, std::vector<std::string>, std::vector<int64_t>>;

enum class FieldType { Int, Float, Bool, String, Choice, StringList, IntList };
enum class FieldRule { Any, Positive, NonNegative, Unit /* [0, 1] */, Below1 /* [0, 1) */ };

struct FieldSpec {
  std::string path;  // "section.key"
  FieldType type;
  FieldRule rule = FieldRule::Any;
  std::vector<std::string> choices;  // Choice: allowed values; StringList: allowed items
  // IntList: rule applies to each item
  std::string doc;
  std::function<void(Config&, const ConfigValue&)> set;
  std::function<ConfigValue(const Config&)> get;
};

const std::vector<FieldSpec>& config_schema();
const FieldSpec* find_field(const std::string& path);

std::string type_name(FieldType t);         // as written in docs/configuration.md
std::string format_value(const ConfigValue& v);  // YAML-ish text: 3e-4, true, cosine, [a, b]

}  // namespace shoestring
