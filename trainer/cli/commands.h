#pragma once
// Subcommands of the `shoestring` executable. Each parses its own flags (Boost.Program_options)
// and returns the process exit code: 0 ok, 1 runtime failure, 2 bad usage or config.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "parallel/world.h"

namespace shoestring::cli {

using Args = std::vector<std::string>;  // the arguments after the subcommand name

// A command with subcommands given nothing (usage on stderr, exit 2) or --help/-h first (usage on
// stdout, exit 0): that exit code; otherwise nullopt.
inline std::optional<int> usage_exit(const Args& args, const char* usage) {
  if (!args.empty() && args[0] != "--help" && args[0] != "-h") return std::nullopt;
  (args.empty() ? std::cerr : std::cout) << usage;
  return args.empty() ? 2 : 0;
}

int cmd_train(const Args& args, const parallel::World& world);
int cmd_config(const Args& args);
int cmd_bench(const Args& args, const parallel::World& world);
int cmd_data(const Args& args);
int cmd_ckpt(const Args& args, const parallel::World& world);
int cmd_plan(const Args& args);
int cmd_launch(const Args& args);
int cmd_sweep(const Args& args);
std::string version_text();

}  // namespace shoestring::cli
