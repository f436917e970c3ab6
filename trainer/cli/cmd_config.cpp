#include <boost/program_options.hpp>

#include <iostream>

#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/config_schema.h"
#include "trainer/model/param_count.h"

namespace po = boost::program_options;

namespace shoestring::cli {

int cmd_config(const Args& args) {
  po::options_description opts("shoestring config [options]\n\nResolve and check a configuration");
  ConfigOptions cfg_opts;
  bool print = false, keys = false, params = false;
  opts.add_options()("help,h", "show this help")
      ("print", po::bool_switch(&print), "print the fully resolved config as YAML")
      ("keys", po::bool_switch(&keys), "list every key with its type, default and meaning")
      ("params", po::bool_switch(&params), "print the model's total and activated parameter counts");
  add_config_options(opts, cfg_opts);
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm)) return *rc;
  if (keys) {
    // The schema's keys do not depend on a config: anything else given would be ignored unread.
    if (print || params || !cfg_opts.files.empty() || !cfg_opts.sets.empty()) {
      std::cerr << "shoestring config: --keys lists the schema and takes no --print, --params, --config or --set\n";
      return 2;
    }
    const Config defaults;
    for (const auto& f : config_schema())
      std::cout << f.path << " (" << type_name(f.type) << ", default " << format_value(f.get(defaults))
                << "): " << f.doc << "\n";
    return 0;
  }
  const Config c = load_config(cfg_opts.files, cfg_opts.sets);
  if (print) std::cout << to_yaml(c);
  if (params) {
    const model::ParamCount n = model::count_parameters(c.model);
    std::cout << "parameters: " << n.total << " total, " << n.activated << " activated per token, " << n.embedding
              << " in embedding + head\n";
  }
  if (!print && !params) std::cout << "config OK\n";
  return 0;
}

}  // namespace shoestring::cli
