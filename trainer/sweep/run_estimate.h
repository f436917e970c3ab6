#pragma once
// The one place where `shoestring sweep plan` asks for a run's estimate: the planner's memory per
// rank on this machine (trainer/planner/, `shoestring plan --gpu cpu`); "" (printed as "n/a") when
// the planner cannot plan the run.
#include <string>

#include "trainer/config.h"

namespace shoestring::sweep {

// One line for a person, e.g. "~1.2 GiB/rank model state + activations"; "n/a: why" when the run
// is beyond the planner's limits (e.g. model.n_layers); "" when not available otherwise.
std::string run_estimate(const Config& c);

}  // namespace shoestring::sweep
