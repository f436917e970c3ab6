#pragma once
// Loading a Config: YAML files merged in order, then --set overrides, then one validation pass.
// Every error is a ConfigError whose message is one line naming where (file:line or --set), the
// key path and what was expected, e.g.
//   configs/x.yaml:12: optim.lr: expected a positive number, got "abc"
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/config.h"

namespace YAML {
class Node;
}

namespace shoestring {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// files: applied in order (later override earlier); sets: "key.path=value", applied last.
Config load_config(const std::vector<std::string>& files, const std::vector<std::string>& sets);

// Parses a YAML document given as text (for tests); `origin` names it in messages.
Config load_config_text(const std::string& yaml, const std::string& origin,
                        const std::vector<std::string>& sets = {});

// The fully resolved config as YAML, every key present, in schema order.
std::string to_yaml(const Config& c);

// For the YAML readers (configs and sweep files), so that their messages name places alike:
// "ORIGIN:LINE" of a node, or just ORIGIN when the node has no position.
std::string yaml_where(const std::string& origin, const YAML::Node& n);
// A mapping key as text. YAML allows a list or a mapping as a key ({a: 1}: 2, `? [a]`), on which
// as<std::string>() would throw yaml-cpp's bare "bad conversion", naming neither file nor line;
// this throws ConfigError "WHERE: expected EXPECTED, got a mapping" (or list, or null key: a null
// key is refused unless `null_ok`).
std::string yaml_key(const YAML::Node& key, const std::string& where, const std::string& expected,
                     bool null_ok = false);

// Closest schema key (or section) to `word`, for did-you-mean hints; empty when nothing is close.
std::string closest_key(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace shoestring
