#pragma once
// Runs every rank of a schedule under the communication semantics of schedule.h: the one engine
// behind the validator's deadlock check and the simulator, so the two can never disagree.
#include <string>

#include "parallel/schedule.h"

namespace shoestring::parallel::detail {

struct Replay {
  bool finished = false;
  std::string stuck;  // when !finished: every stuck rank, its next action and what it waits for
  double makespan = 0;
  std::vector<double> busy;
  std::vector<std::vector<TimedAction>> timeline;  // compute actions only
};

// Assumes the static checks of validate() passed (indices in range, each input produced once).
// costs[rank][chunk]: what each action of that chunk costs there (an FB: schedule.h, simulate()).
Replay replay(const Schedule& s, const std::vector<std::vector<ActionCosts>>& costs);

}  // namespace shoestring::parallel::detail
