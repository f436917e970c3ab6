// simulate(): the replay engine with the caller's costs, plus the per-rank bubble.
#include <stdexcept>

#include "parallel/schedule.h"
#include "parallel/schedule_build.h"
#include "parallel/schedule_replay.h"

namespace shoestring::parallel {

Simulation simulate(const Schedule& s, const ActionCosts& costs) {
  const detail::Replay run = detail::replay(s, costs);
  if (!run.finished) throw std::invalid_argument("deadlock: " + run.stuck);
  Simulation sim;
  sim.makespan = run.makespan;
  sim.busy = run.busy;
  sim.timeline = run.timeline;
  for (size_t r = 0; r < s.actions.size(); ++r) {
    // Bubble = makespan - busy: every moment the rank is not computing, from the common start
    // to the end of the step (schedule.h, simulate()).
    sim.bubble.push_back(run.makespan - run.busy[r]);
    sim.peak_activations.push_back(detail::peak_activations(s.actions[r]));
  }
  return sim;
}

}  // namespace shoestring::parallel
