#include <boost/program_options.hpp>

#include <iostream>

#include "trainer/cli/commands.h"
#include "trainer/cli/config_options.h"
#include "shoestring/build_info.h"
#include "trainer/config_loader.h"
#include "trainer/preemption.h"
#include "trainer/train.h"

namespace po = boost::program_options;

namespace shoestring::cli {

int cmd_train(const Args& args, const parallel::World& world) {
  po::options_description opts(
      "shoestring train --config FILE [--config FILE ...] [--set key=value ...] [--resume auto|DIR]\n\n"
      "Train a model. Exit codes: 0 done, 1 runtime failure, 2 usage/config/data/checkpoint error,\n"
      "42 stopped by SIGTERM/SIGUSR1 after saving a checkpoint (docs/checkpoints.md)");
  ConfigOptions cfg_opts;
  TrainOptions options;
  opts.add_options()("help,h", "show this help")(
      "resume", po::value(&options.resume),
      "auto (the newest valid checkpoint in checkpoint.dir; none: start fresh) or a checkpoint directory");
  add_config_options(opts, cfg_opts);
  po::positional_options_description positional;
  positional.add("config", -1);  // `shoestring train configs/tiny.yaml` works too
  po::variables_map vm;
  if (const auto rc = parse_command_line(opts, args, vm, &positional)) return *rc;
  if (cfg_opts.files.empty()) {
    std::cerr << "shoestring train: no config given; use --config FILE (e.g. configs/tiny.yaml)\n";
    return 2;
  }
  if ((vm.count("resume") && options.resume.empty()) ||
      (!options.resume.empty() && options.resume != "auto" && options.resume.rfind("-", 0) == 0)) {
    std::cerr << "shoestring train: --resume takes auto or a checkpoint directory\n";
    return 2;
  }
  options.code_version = std::string("shoestring ") + SHOESTRING_VERSION + " (git " + SHOESTRING_GIT_COMMIT + ")";
  const TrainSummary s = train(load_config(cfg_opts.files, cfg_opts.sets), world, options);
  // Launch scripts requeue on this code: the checkpoint to resume from is in place.
  return s.preempted ? kPreemptedExitCode : 0;
}

}  // namespace shoestring::cli
