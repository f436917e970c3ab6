#include <boost/program_options.hpp>

#include <iostream>

#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

namespace po = boost::program_options;

namespace shoestring::cli {

int cmd_train(const Args& args, const parallel::World& world) {
  po::options_description opts(
      "shoestring train --config FILE [--config FILE ...] [--set key=value ...]\n\nTrain a model");
  ConfigOptions cfg_opts;
  opts.add_options()("help,h", "show this help");
  add_config_options(opts, cfg_opts);
  po::positional_options_description positional;
  positional.add("config", -1);  // `shoestring train configs/tiny.yaml` works too
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm, &positional)) return *rc;
  if (cfg_opts.files.empty()) {
    std::cerr << "shoestring train: no config given; use --config FILE (e.g. configs/tiny.yaml)\n";
    return 2;
  }
  train(load_config(cfg_opts.files, cfg_opts.sets), world);
  return 0;
}

}  // namespace shoestring::cli
