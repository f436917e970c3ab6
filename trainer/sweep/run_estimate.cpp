#include "trainer/sweep/run_estimate.h"

namespace shoestring::sweep {

// PLANNER HOOK (see run_estimate.h): replace the body with the planner's estimate.
std::string run_estimate(const Config& /*c*/) { return ""; }

}  // namespace shoestring::sweep
