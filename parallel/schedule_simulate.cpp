// simulate(): the replay engine with the caller's costs, plus the per-rank bubble.
#include <stdexcept>
#include <string>

#include "parallel/schedule.h"
#include "parallel/schedule_build.h"
#include "parallel/schedule_replay.h"

namespace shoestring::parallel {

std::vector<std::vector<ActionCosts>> uniform_costs(const Schedule& s, const ActionCosts& c) {
  return std::vector<std::vector<ActionCosts>>(size_t(s.pp), std::vector<ActionCosts>(size_t(s.chunks), c));
}

std::vector<std::vector<ActionCosts>> costs_from_forward(const Schedule& s, const std::vector<double>& stage_forward,
                                                         double comm) {
  std::vector<std::vector<ActionCosts>> out(size_t(s.pp));
  for (int r = 0; r < s.pp; ++r)
    for (int ch = 0; ch < s.chunks; ++ch) {
      const double f = stage_forward.at(size_t(s.model_stage(r, ch)));
      out[size_t(r)].push_back(ActionCosts{f, 2 * f, f, 3 * f, comm});
    }
  return out;
}

Simulation simulate(const Schedule& s, const ActionCosts& costs, CommModel model) {
  return simulate(s, uniform_costs(s, costs), model);
}

Simulation simulate(const Schedule& s, const std::vector<std::vector<ActionCosts>>& costs, CommModel model) {
  if (costs.size() != size_t(s.pp))
    throw std::invalid_argument("simulate: costs for " + std::to_string(costs.size()) + " ranks, schedule has " +
                                std::to_string(s.pp));
  for (const auto& per_rank : costs)
    if (per_rank.size() != size_t(s.chunks))
      throw std::invalid_argument("simulate: costs for " + std::to_string(per_rank.size()) + " chunks per rank, schedule has " +
                                  std::to_string(s.chunks));
  const bool in_order = model == CommModel::InOrder;
  const detail::Replay run = in_order ? detail::replay_in_order(s, costs) : detail::replay(s, costs);
  if (!run.finished) throw std::invalid_argument(std::string(in_order ? "deadlock (in-order): " : "deadlock: ") + run.stuck);
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
