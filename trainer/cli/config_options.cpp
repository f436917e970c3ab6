#include "trainer/cli/config_options.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>

namespace po = boost::program_options;

namespace shoestring::cli {

void add_config_options(po::options_description& opts, ConfigOptions& out) {
  opts.add_options()
      ("config,c", po::value(&out.files)->composing(), "YAML config file (repeatable; later files override earlier)")
      ("set,s", po::value(&out.sets)->composing(), "override one key: --set train.steps=100 (repeatable)");
}

std::optional<int> parse_command_line(const po::options_description& opts, const std::vector<std::string>& args,
                                      po::variables_map& vm, const po::positional_options_description* positional) {
  try {
    po::command_line_parser parser(args);
    parser.options(opts);
    if (positional) parser.positional(*positional);
    const po::parsed_options parsed = parser.run();
    // Without a positional description Boost keeps stray words aside and store() drops them:
    // `bench moe extra` would run as if `extra` were not there.
    for (const auto& o : parsed.options)
      if (o.position_key >= 0 && o.string_key.empty() && !o.value.empty()) {
        std::cerr << "shoestring: unexpected argument '" << o.value.front() << "' (see --help)\n";
        return 2;
      }
    po::store(parsed, vm);
    // --help before notify(), which enforces required options: `plan schedule --help` must work.
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "shoestring: " << e.what() << " (see --help)\n";
    return 2;
  }
  return std::nullopt;
}

std::string unwritable_output(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return "";
  std::error_code ec;
  if (fs::is_directory(path, ec)) return path + ": is a directory, expected a file name";
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) return path + ": folder " + parent.string() + " does not exist";
  return "";
}

std::string unwritable_output(const boost::program_options::variables_map& vm, const std::string& flag,
                              const std::string& path) {
  if (vm.count(flag.substr(2)) && path.empty()) return flag + ": expected a file name, got an empty one";
  const std::string why = unwritable_output(path);
  return why.empty() ? why : flag + " " + why;
}

void write_output(const std::string& path, const std::string& text, const std::string& what) {
  std::ofstream f(path);
  if (!(f << text) || (f.close(), !f)) throw std::runtime_error(path + ": cannot write the " + what);
}

}  // namespace shoestring::cli
