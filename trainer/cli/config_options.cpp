#include "trainer/cli/config_options.h"

#include <iostream>

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
    po::store(parser.run(), vm);
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

}  // namespace shoestring::cli
