#pragma once
// PLANNER HOOK: the one place where `shoestring sweep plan` asks for a run's cost estimate (time per
// step, memory per rank, ...). The planner (`shoestring plan`, written separately) fills it in;
// until then it returns "" and `sweep plan` prints "n/a".
#include <string>

#include "trainer/config.h"

namespace shoestring::sweep {

// One line for a person, e.g. "~0.8 s/step, 3.1 GiB/rank, 4.2 h"; "" when no estimate is available.
std::string run_estimate(const Config& c);

}  // namespace shoestring::sweep
