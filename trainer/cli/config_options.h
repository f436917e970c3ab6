#pragma once
// --config (repeatable: later files override earlier) and --set key=value (repeatable), shared
// by every subcommand that takes a config.
#include <boost/program_options.hpp>

#include <optional>
#include <string>
#include <vector>

namespace shoestring::cli {

struct ConfigOptions {
  std::vector<std::string> files;
  std::vector<std::string> sets;
};

void add_config_options(boost::program_options::options_description& opts, ConfigOptions& out);

// Parses args into vm. Returns the exit code when the command must stop here: 2 after a usage
// error (one line on stderr), 0 after printing --help (every command has a --help option).
// Returns nullopt when the command should go on.
std::optional<int> parse_command_line(const boost::program_options::options_description& opts,
                                      const std::vector<std::string>& args, boost::program_options::variables_map& vm,
                                      const boost::program_options::positional_options_description* positional = nullptr);

// Why `path` cannot be an output file ("" when it can, or when no path was given): checked before
// a command does its work, not after.
std::string unwritable_output(const std::string& path);
// The same for output flag `flag` ("--json") holding `path`, message prefixed with the flag; a flag
// given an empty name is an error too, not "write no file".
std::string unwritable_output(const boost::program_options::variables_map& vm, const std::string& flag,
                              const std::string& path);

// Writes `text` to `path`, throwing "<path>: cannot write the <what>" when any part fails (the
// close included): an output flag must not end with exit 0 and no file.
void write_output(const std::string& path, const std::string& text, const std::string& what);

}  // namespace shoestring::cli
