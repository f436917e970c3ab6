#include "trainer/planner/layout_search.h"

#include <algorithm>
#include <cstdio>

#include "trainer/config_loader.h"
#include "trainer/distributed.h"

namespace shoestring::planner {

int64_t search_global_batch(const Config& cfg, int gpus) {
  if (cfg.train.global_batch > 0) return cfg.train.global_batch;
  if (gpus % cfg.parallel.pp != 0)
    throw PlanError("--gpus " + std::to_string(gpus) + " is not divisible by parallel.pp=" + std::to_string(cfg.parallel.pp));
  const int dp = gpus / int(cfg.parallel.pp);
  return cfg.train.micro_batch_size * accumulation_steps(cfg, dp) * dp;
}

SearchResult search_layouts(const Config& cfg, const Hardware& hw, const PlanOptions& opts) {
  SearchResult out;
  Config whole = cfg;
  whole.parallel.pp = 1;  // the search picks pp; the model's own size is checked here, once
  check_plan_size(whole);
  out.global_batch = search_global_batch(cfg, hw.gpus);
  const int64_t experts = cfg.model.n_routed_experts;
  std::vector<std::string> precisions = {"bf16"};
  if (hw.gpu.fp8_tflops > 0) precisions.push_back("fp8");
  // Bounds in int64 and by the blocks (at most kMaxPlanLayers) and experts: --gpus 2147483647 must
  // neither overflow the counter nor count two billion expert-parallel widths.
  const int64_t most_pp = std::min<int64_t>(hw.gpus, cfg.model.n_layers);
  PlanCache cache;
  for (int64_t pp = 1; pp <= most_pp; ++pp) {
    if (hw.gpus % pp != 0) continue;
    const int dp = int(hw.gpus / pp);
    if (out.global_batch % dp != 0) continue;  // the batch must split over dp ranks
    const int64_t per_rank = out.global_batch / dp;
    const int64_t most_ep = std::min<int64_t>(dp, std::max<int64_t>(1, experts));
    for (int ep = 1; ep <= most_ep; ++ep) {
      if (dp % ep != 0 || (ep > 1 && (experts == 0 || experts % ep != 0))) continue;
      for (int zero1 = 0; zero1 <= (dp > 1 ? 1 : 0); ++zero1)
        for (int64_t mbs = 1; mbs <= per_rank; mbs *= 2) {
          if (per_rank % mbs != 0) continue;
          for (const std::string& schedule : parallel::schedule_names()) {
            if (pp == 1 && schedule != "1f1b") continue;  // pp 1 runs the trivial schedule whatever is named
            for (const std::string& precision : precisions) {
              Config c = cfg;
              c.parallel.pp = pp;
              c.parallel.dp = 0;
              c.parallel.ep = ep;
              c.parallel.zero1 = zero1 != 0;
              c.parallel.schedule = schedule;
              c.parallel.microbatches = 0;
              c.parallel.stage_layers.clear();
              c.train.global_batch = out.global_batch;
              c.train.grad_accum = 1;
              c.train.micro_batch_size = mbs;
              c.train.precision = precision;
              ++out.considered;
              try {
                PlanOptions o = opts;
                o.exact_partition = false;
                out.plans.push_back(make_plan(c, hw, o, &cache));
              } catch (const PlanTooLarge&) {
                ++out.too_large;  // said under the table: a layout left out must not look invalid
              } catch (const PlanError&) {
              } catch (const ConfigError&) {
              }
            }
          }
        }
    }
  }
  std::stable_sort(out.plans.begin(), out.plans.end(), [](const Plan& a, const Plan& b) {
    if (a.memory.fits != b.memory.fits) return a.memory.fits;
    if (a.dollars != b.dollars) return a.dollars < b.dollars;
    if (a.step.step_s != b.step.step_s) return a.step.step_s < b.step.step_s;
    return a.memory.ranks[a.memory.worst].total() < b.memory.ranks[b.memory.worst].total();
  });
  return out;
}

std::string render_search_table(const SearchResult& r, size_t top) {
  std::string o;
  char line[320];
  std::snprintf(line, sizeof line, "%zu valid layouts of %zu considered, global batch %lld sequences; best %zu by cost:\n",
                r.plans.size(), r.considered, (long long)r.global_batch, std::min(top, r.plans.size()));
  o += line;
  o += "   #  pp   dp   ep  zero1  mbs   M  schedule     prec  memory/rank  fits  bubble  step s    tokens/s  MFU    GPU-hours  cost $\n";
  for (size_t i = 0; i < r.plans.size() && i < top; ++i) {
    const Plan& p = r.plans[i];
    const auto& c = p.cfg;
    std::snprintf(line, sizeof line,
                  "%4zu %3lld %4lld %4lld  %-5s %4lld %3d  %-11s  %-4s  %-11s  %-4s  %5.1f%%  %-9.4g  %-8s  %4.1f%%  %-9s  %s\n",
                  i + 1, (long long)c.parallel.pp, (long long)c.parallel.dp, (long long)c.parallel.ep,
                  c.parallel.zero1 ? "on" : "off", (long long)c.train.micro_batch_size, p.schedule->microbatches,
                  p.schedule->name.c_str(), c.train.precision.c_str(), gib(p.memory.ranks[p.memory.worst].total()).c_str(),
                  p.memory.fits ? "yes" : "NO", p.step.bubble_fraction * 100, p.step.step_s, si(p.step.tokens_per_s).c_str(),
                  p.step.mfu * 100, si(p.gpu_hours).c_str(), si(p.dollars).c_str());
    o += line;
  }
  if (r.too_large > 0) o += too_large_note(r) + "\n";
  return o;
}

std::string too_large_note(const SearchResult& r) {
  return std::to_string(r.too_large) + " layout(s) not planned: beyond the planner's limits (parallel.pp at most " +
         std::to_string(kMaxPlanRanks) + ", pipeline stages x model.n_layers^2 at most 2^30)";
}

}  // namespace shoestring::planner
