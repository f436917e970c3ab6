#pragma once
// Loading a Config: YAML files merged in order, then --set overrides, then one validation pass.
// Every error is a ConfigError whose message is one line naming where (file:line or --set), the
// key path and what was expected, e.g.
//   configs/x.yaml:12: optim.lr: expected a positive number, got "abc"
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/config.h"

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

// Closest schema key (or section) to `word`, for did-you-mean hints; empty when nothing is close.
std::string closest_key(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace shoestring
