#pragma once
// The one place where `shoestring sweep plan` asks for a run's estimate: the planner's memory per
// rank on this machine (trainer/planner/, `shoestring plan --gpu cpu`); "" (printed as "n/a") when
// the planner cannot plan the run.
#include <string>

#include "trainer/config.h"

namespace shoestring::sweep {

// One line for a person, e.g. "~1.2 GiB/rank model state + activations"; "" when not available.
std::string run_estimate(const Config& c);

}  // namespace shoestring::sweep
