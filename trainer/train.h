#pragma once
// The single-process training loop (parallel layouts arrive with later issues and wrap this
// same step).
#include <string>
#include <vector>

#include "data/datasets.h"
#include "parallel/world.h"
#include "trainer/config.h"

namespace shoestring {

struct TrainSummary {
  int64_t steps = 0;
  double first_loss = 0, final_loss = 0;
  std::string run_dir;
  std::vector<double> step_seconds;  // wall time of each optimizer step
  int64_t tokens_per_step = 0;
  int threads = 0;
};

// Runtime failures (NaN loss, unusable device, unwritable run dir) throw std::runtime_error with
// a one-line message; main() turns it into exit code 1.
TrainSummary train(const Config& cfg, const parallel::World& world);

// The data.* / train.* settings the data pipeline needs, as data/'s plain options.
data::DatasetOptions dataset_options(const Config& cfg);

// The run directory this config resolves to (log.run_dir, or runs/<name>-<UTC time>).
std::string resolve_run_dir(const Config& cfg);

}  // namespace shoestring
