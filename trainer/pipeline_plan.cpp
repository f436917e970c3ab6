#include "trainer/pipeline_plan.h"

#include <ATen/ATen.h>

#include <set>
#include <stdexcept>

#include "trainer/config_loader.h"

namespace shoestring {

parallel::Schedule step_schedule(const Config& cfg, int pp, int64_t microbatches) {
  parallel::ScheduleOptions o;
  o.name = pp == 1 ? "1f1b" : cfg.parallel.schedule;
  o.pp = pp;
  o.microbatches = int(microbatches);
  o.virtual_stages = int(cfg.parallel.virtual_stages);
  parallel::Schedule s;
  try {
    s = parallel::make_schedule(o);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("parallel.microbatches / parallel.schedule: ") + e.what() +
                      " (micro-batches per step = parallel.microbatches, or train.global_batch / "
                      "(train.micro_batch_size x dp))");
  }
  // The executor tags each message with (kind, micro-batch, stage) within MPI's guaranteed 32767.
  if (const int most = 16384 / s.stages; s.microbatches > most)
    throw ConfigError("parallel.microbatches: at most " + std::to_string(most) + " micro-batches per step with " +
                      std::to_string(s.stages) + " pipeline stages, got " + std::to_string(s.microbatches));
  return s;
}

bool PipelinePlan::holds(const std::string& name) const {
  auto it = holders.find(name);
  if (it == holders.end()) return false;
  for (int r : it->second)
    if (r == rank) return true;
  return false;
}

bool PipelinePlan::writes(const std::string& name) const {
  auto it = holders.find(name);
  return it != holders.end() && !it->second.empty() && it->second.front() == rank;
}

PipelinePlan make_pipeline_plan(const Config& cfg, parallel::Schedule schedule, int pp_rank,
                                const std::vector<std::string>& names) {
  PipelinePlan plan;
  plan.schedule = std::move(schedule);
  plan.rank = pp_rank;
  const auto& s = plan.schedule;
  try {
    plan.stages = partition_stages(cfg.model, cfg.train.seq_len, s.stages, cfg.parallel.stage_layers, &s);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
  for (int c = 0; c < s.chunks; ++c) plan.chunks.push_back(plan.stages[size_t(s.model_stage(pp_rank, c))]);
  for (const auto& name : names) {
    std::set<int> ranks;
    for (int r = 0; r < s.pp; ++r)
      for (int c = 0; c < s.chunks; ++c)
        if (stage_uses(plan.stages[size_t(s.model_stage(r, c))], name, cfg.model)) ranks.insert(r);
    plan.holders[name] = std::vector<int>(ranks.begin(), ranks.end());
  }
  return plan;
}

void release_unheld(model::TransformerImpl& net, const PipelinePlan& plan) {
  at::NoGradGuard no_grad;
  for (auto& item : net.named_parameters())
    if (!plan.holds(item.key())) item.value().set_data(at::empty({0}, item.value().options()));
}

SharedGradSync::SharedGradSync(const PipelinePlan& plan, const parallel::GroupPtr& pp,
                               const std::vector<std::pair<std::string, at::Tensor>>& params) {
  // Every rank walks the same sets in the same (map) order: split is collective over pp.
  std::map<std::vector<int>, std::vector<std::string>> by_set;
  for (const auto& [name, ranks] : plan.holders)
    if (ranks.size() > 1) by_set[ranks].push_back(name);
  std::map<std::string, at::Tensor> mine(params.begin(), params.end());
  for (const auto& [ranks, names] : by_set) {
    bool member = false;
    for (int r : ranks) member = member || r == plan.rank;
    parallel::GroupPtr g = pp->size() > 1 ? pp->split(member ? 0 : -1, plan.rank, "pp_shared") : nullptr;
    if (!member) continue;
    Set set{g, {}};
    for (const auto& n : names)
      if (auto it = mine.find(n); it != mine.end()) set.params.push_back(it->second);
    if (!set.params.empty()) sets_.push_back(std::move(set));
  }
}

void SharedGradSync::sync() {
  at::NoGradGuard no_grad;
  for (auto& set : sets_) {
    std::vector<parallel::WorkPtr> works;
    // One all-reduce per tensor: the .grad tensors are views into the DP reducer's buckets and
    // are reduced in place; the sets are small (an embedding, or a DualPipe stage).
    for (auto& p : set.params) works.push_back(set.group->all_reduce(p.mutable_grad()));
    for (auto& w : works) w->wait();
  }
}

}  // namespace shoestring

namespace shoestring {

double pipeline_eval_loss(model::TransformerImpl& net, const PipelinePlan& plan, parallel::ProcessGroup& pp,
                          const at::Tensor& tokens, const at::Tensor& targets, const model::LossWeights& w,
                          const at::TensorOptions& act) {
  at::NoGradGuard no_grad;
  const parallel::Schedule& s = plan.schedule;
  at::Tensor x;
  double loss = 0;
  // Route 0 visits the stages in order; each rank runs the ones it holds, receiving from and
  // sending to the neighbours on other ranks. The chain has no cycle, so blocking waits are safe.
  for (int st = 0; st < s.stages; ++st) {
    const parallel::Hop& h = s.hop(0, st);
    if (h.rank != plan.rank) continue;
    if (st > 0 && s.hop(0, st - 1).rank != plan.rank) {
      x = at::empty({tokens.size(0), tokens.size(1), net.hidden_size()}, act);
      pp.recv(x, s.hop(0, st - 1).rank, st)->wait();
    }
    const StageSpan& span = plan.stages[size_t(st)];
    model::LossBreakdown lb;
    const parallel::StageOutput o = stage_forward(net, span, x, tokens, targets, w, 1.0, lb);
    if (span.head) {
      loss = lb.main.item<double>();
    } else {
      x = o.output.contiguous();
      if (s.hop(0, st + 1).rank != plan.rank) pp.send(x, s.hop(0, st + 1).rank, st + 1)->wait();
    }
  }
  if (pp.size() == 1) return loss;
  at::Tensor t = at::full({1}, loss, at::TensorOptions().dtype(at::kDouble));
  pp.all_reduce(t)->wait();
  return t.item<double>();
}

}  // namespace shoestring
