#include "trainer/planner/plan_report.h"

#include <cstdio>
#include <stdexcept>

#include "parallel/mesh.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/pipeline_plan.h"

namespace shoestring::planner {

namespace {

std::string fmt(const char* f, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}

std::string hours(double s) {
  if (s < 3600 * 48) return fmt("%.1f h", s / 3600);
  return fmt("%.1f days", s / 86400);
}

}  // namespace

std::string gib(double bytes) {
  if (bytes < double(1 << 30)) return fmt("%.1f MiB", bytes / double(1 << 20));
  return fmt("%.2f GiB", bytes / double(1 << 30));
}

std::string si(double x) {
  if (x >= 1e12) return fmt("%.2fT", x / 1e12);
  if (x >= 1e9) return fmt("%.2fB", x / 1e9);
  if (x >= 1e6) return fmt("%.2fM", x / 1e6);
  if (x >= 1e3) return fmt("%.2fK", x / 1e3);
  return fmt("%.3g", x);
}

void check_plan_size(const Config& cfg) {
  if (cfg.model.n_layers > kMaxPlanLayers)
    throw PlanTooLarge("model.n_layers=" + std::to_string(cfg.model.n_layers) + ": the planner handles at most " +
                       std::to_string(kMaxPlanLayers) + " transformer blocks");
  if (cfg.parallel.pp > kMaxPlanRanks)
    throw PlanTooLarge("parallel.pp=" + std::to_string(cfg.parallel.pp) + ": the planner handles at most " +
                       std::to_string(kMaxPlanRanks) + " pipeline ranks");
}

int64_t schedule_chunks(const std::string& name, int64_t virtual_stages) {
  if (name == "interleaved") return virtual_stages;  // schedule_classic.cpp
  return name == "dualpipe" || name == "dualpipev" ? 2 : 1;  // schedule_dualpipe.cpp
}

namespace {

// The trainer's micro-batch limit (pipeline_plan.cpp step_schedule: its message tags), which it
// checks on the built schedule.
constexpr int64_t kTrainerTagMicrobatchStages = 16384;

// step_schedule through the cache: built and validated once per key, a refusal kept and rethrown.
const PlanCache::Built& cached_schedule(PlanCache& cache, const Config& cfg, int pp, int64_t microbatches) {
  const std::string name = pp == 1 ? "1f1b" : cfg.parallel.schedule;
  auto [it, fresh] = cache.schedules.try_emplace({name, pp, microbatches, cfg.parallel.virtual_stages});
  PlanCache::Built& b = it->second;
  if (fresh) {
    try {
      // Schedules beyond the trainer's limit are refused before they are built: they are the
      // largest a search meets (1F1B, pp 32 x 1920 micro-batches) and building them took half its
      // time. Stages: chunks per rank x pp, but DualPipe's two chunks are the same pp stages run
      // from both ends (schedule_dualpipe.cpp). step_schedule's message, unless the layout also
      // breaks a schedule constraint, which step_schedule names first (a search shows neither);
      // tests/trainer/test_planner.cpp checks that the two refuse the same layouts.
      const int64_t stages = pp * (name == "dualpipe" ? 1 : schedule_chunks(name, cfg.parallel.virtual_stages));
      if (stages > 0 && microbatches > kTrainerTagMicrobatchStages / stages)
        throw ConfigError("parallel.microbatches: at most " + std::to_string(kTrainerTagMicrobatchStages / stages) +
                          " micro-batches per step with " + std::to_string(stages) + " pipeline stages, got " +
                          std::to_string(microbatches));
      b.schedule = std::make_shared<const parallel::Schedule>(step_schedule(cfg, pp, microbatches));
      b.validation = parallel::validate(*b.schedule);
    } catch (...) {
      b.error = std::current_exception();
    }
  }
  if (b.error) std::rethrow_exception(b.error);
  return b;
}

}  // namespace

Plan make_plan(Config cfg, const Hardware& hw, const PlanOptions& opts, PlanCache* cache) {
  check_plan_size(cfg);
  const int pp = int(cfg.parallel.pp);
  if (hw.gpus < 1) throw PlanError("--gpus must be at least 1, got " + std::to_string(hw.gpus));
  if (hw.gpus_per_node < 1) throw PlanError("--gpus-per-node must be at least 1");
  if (hw.gpus % pp != 0)
    throw PlanError("--gpus " + std::to_string(hw.gpus) + " is not divisible by parallel.pp=" + std::to_string(pp));
  const int dp = hw.gpus / pp;
  if (cfg.parallel.dp != 0 && cfg.parallel.dp != dp)
    throw PlanError("parallel.dp=" + std::to_string(cfg.parallel.dp) + " disagrees with --gpus " +
                    std::to_string(hw.gpus) + " / parallel.pp=" + std::to_string(pp) + " = " + std::to_string(dp));
  cfg.parallel.dp = dp;
  const parallel::MeshShape shape{pp, dp, int(cfg.parallel.ep)};
  if (const std::string why = parallel::check_mesh(shape, hw.gpus); !why.empty()) throw PlanError(why);
  if (cfg.model.n_routed_experts > 0 && cfg.model.n_routed_experts % cfg.parallel.ep != 0)
    throw PlanError("parallel.ep=" + std::to_string(cfg.parallel.ep) + " does not divide model.n_routed_experts=" +
                    std::to_string(cfg.model.n_routed_experts));
  Plan p;
  p.hw = hw;
  p.opts = opts;
  p.params = model::count_parameters(cfg.model);
  const int64_t accum = accumulation_steps(cfg, dp);
  const std::string name = pp == 1 ? "1f1b" : cfg.parallel.schedule;
  // A PlanError, not PlanTooLarge: the trainer refuses such a layout too (kMaxPlanForwards).
  const int64_t chunks = schedule_chunks(name, cfg.parallel.virtual_stages);
  if (double(pp) * double(accum) * double(chunks) > kMaxPlanForwards)
    throw PlanError("parallel.pp=" + std::to_string(pp) + " x " + std::to_string(accum) + " micro-batches per step" +
                    (chunks > 1 ? " x " + std::to_string(chunks) + " chunks per rank (" + name + ")" : "") +
                    ": the planner builds schedules of at most 65536 micro-batch forwards, and the trainer allows fewer "
                    "(micro-batches per step = parallel.microbatches, or train.global_batch / (train.micro_batch_size x dp))");
  const PlanCache::Built* built = cache ? &cached_schedule(*cache, cfg, pp, accum) : nullptr;
  p.schedule = built ? built->schedule : std::make_shared<const parallel::Schedule>(step_schedule(cfg, pp, accum));
  const parallel::Schedule& schedule = *p.schedule;
  const double layers = double(cfg.model.n_layers);
  if (cfg.parallel.stage_layers.empty() && double(schedule.stages) * layers * layers > kMaxPlanSplitSteps)
    throw PlanTooLarge("model.n_layers=" + std::to_string(cfg.model.n_layers) + " over " + std::to_string(schedule.stages) +
                       " pipeline stages (parallel.pp x chunks per rank): the planner splits at most stages x n_layers^2 = 2^30 "
                       "(4096 layers over 64 stages, 1024 over 1024); give parallel.stage_layers, or use fewer stages");
  auto split = [&] {
    try {
      return partition_stages(cfg.model, cfg.train.seq_len, schedule.stages, cfg.parallel.stage_layers,
                              opts.exact_partition ? &schedule : nullptr);
    } catch (const std::invalid_argument& e) {
      throw PlanError(e.what());
    }
  };
  // The min-max split depends on the model and the stage count alone: once per count in a search.
  if (cache && !opts.exact_partition && cfg.parallel.stage_layers.empty()) {
    auto it = cache->splits.find(schedule.stages);
    if (it == cache->splits.end()) it = cache->splits.emplace(schedule.stages, split()).first;
    p.spans = it->second;
  } else {
    p.spans = split();
  }
  p.stages = stage_costs(cfg, p.spans);
  p.memory = memory_plan(cfg, schedule, p.spans, hw.gpu.memory_gib * double(1 << 30), opts.margin,
                         built ? &built->validation : nullptr);
  p.step = estimate_step(cfg, schedule, p.stages, p.memory, hw, cache ? &cache->simulations : nullptr);
  p.price = opts.price >= 0 ? opts.price : hw.gpu.price_per_hour;
  p.train_s = p.step.tokens_per_s > 0 ? opts.tokens / p.step.tokens_per_s : 0.0;
  p.gpu_hours = p.train_s / 3600 * hw.gpus;
  p.dollars = p.gpu_hours * p.price;
  if (cfg.train.precision == "fp8" && hw.gpu.fp8_tflops <= 0)
    p.notes.push_back(hw.gpu.name + " has no FP8 tensor cores: fp8 GEMMs are timed at the BF16 rate");
  if (pp > 1 || cfg.parallel.ep > 1)
    p.notes.push_back("start-up: the trainer builds the whole model (" + gib(p.memory.startup) +
                      " fp32) on every rank before keeping its shard; " +
                      (p.memory.startup <= p.memory.capacity ? "that fits" : "that does NOT fit this device"));
  p.cfg = std::move(cfg);
  return p;
}

std::string render_text(const Plan& p) {
  const Config& c = p.cfg;
  const auto& mem = p.memory;
  const auto& e = p.step;
  std::string o;
  char line[512];
  auto add = [&](const char* f, auto... a) {
    std::snprintf(line, sizeof line, f, a...);
    o += line;
  };
  add("plan: %s on %d x %s (%s), %d per node\n", c.name.c_str(), p.hw.gpus, p.hw.gpu.name.c_str(),
      p.hw.gpu.description.c_str(), p.hw.gpus_per_node);
  add("layout: pp %lld x dp %lld (ep %lld), zero1 %s, schedule %s, %d micro-batches of %lld x %lld tokens, %s\n",
      (long long)c.parallel.pp, (long long)c.parallel.dp, (long long)c.parallel.ep, c.parallel.zero1 ? "on" : "off",
      p.schedule->name.c_str(), p.schedule->microbatches, (long long)c.train.micro_batch_size,
      (long long)c.train.seq_len, c.train.precision.c_str());
  add("stages: %s\n", describe(p.spans).c_str());
  add("parameters: total %s (%lld), activated per token %s (%lld), embedding %s\n", si(double(p.params.total)).c_str(),
      (long long)p.params.total, si(double(p.params.activated)).c_str(), (long long)p.params.activated,
      si(double(p.params.embedding)).c_str());
  o += "\nmemory per rank (bytes: weights fp32 4/param, gradients fp32 4/param, AdamW moments 8/param";
  o += c.parallel.zero1 ? " / dp)\n" : ")\n";
  o += "  pp rank  params     weights     gradients   optimizer   activations(in flight)  buffers     workspace   total\n";
  for (const auto& r : mem.ranks)
    add("  %7d  %-9s  %-10s  %-10s  %-10s  %-10s (%3d)        %-10s  %-10s  %s\n", r.pp_rank, si(r.params).c_str(),
        gib(r.weights).c_str(), gib(r.grads).c_str(), gib(r.optimizer).c_str(), gib(r.activations).c_str(), r.inflight,
        gib(r.comm_buffers).c_str(), gib(r.workspace).c_str(), gib(r.total()).c_str());
  const double worst = mem.ranks[mem.worst].total();
  add("  activations: %s per micro-batch for the largest layer; worst rank %d: %s of %s usable (%s less %.0f%% margin): %s\n",
      gib(mem.act_per_mb_layer).c_str(), mem.ranks[mem.worst].pp_rank, gib(worst).c_str(),
      gib(mem.capacity * (1 - mem.margin)).c_str(), gib(mem.capacity).c_str(), mem.margin * 100,
      mem.fits ? "FITS" : "DOES NOT FIT");
  add("\npipeline: bubble %.1f%% of the step (mean over pp ranks), worst rank %.1f%%\n", e.bubble_fraction * 100,
      e.worst_bubble_fraction * 100);
  const auto& cm = e.comm;
  o += "communication per rank per step:\n";
  add("  dp gradients  %-10s  %8.3f s  %s\n", gib(cm.dp_bytes).c_str(), cm.dp_s, cm.dp_inter ? "inter-node" : "intra-node");
  add("  ep all-to-all %-10s  %8.3f s  %s (%s per MoE layer per micro-batch, forward)\n", gib(cm.ep_bytes).c_str(), cm.ep_s,
      cm.ep_inter ? "inter-node" : "intra-node", gib(cm.ep_bytes_per_layer).c_str());
  add("  pp activations %-10s %8.3f s  %s\n", gib(cm.pp_bytes).c_str(), cm.pp_s, cm.pp_inter ? "inter-node" : "intra-node");
  add("\nstep (compute at %.0f%% of peak): compute %.3f s, pipeline %.3f s, exposed ep %.3f s, exposed dp %.3f s -> %.3f s\n",
      p.hw.efficiency * 100, e.compute_s, e.makespan_s, e.exposed_ep_s, e.exposed_dp_s, e.step_s);
  add("throughput: %s tokens per step, %s tokens/s, MFU %.1f%% (model FLOPs %s per step vs BF16 peak)\n",
      si(e.tokens_per_step).c_str(), si(e.tokens_per_s).c_str(), e.mfu * 100, si(e.flops_per_step).c_str());
  add("training %s tokens: %s, %s GPU-hours, $%s at $%.2f per GPU-hour\n", si(p.opts.tokens).c_str(),
      hours(p.train_s).c_str(), si(p.gpu_hours).c_str(), si(p.dollars).c_str(), p.price);
  for (const auto& n : p.notes) o += "note: " + n + "\n";
  return o;
}

std::string render_json(const Plan& p) {
  const Config& c = p.cfg;
  const auto& mem = p.memory;
  const auto& e = p.step;
  std::string o = "{";
  char buf[256];
  auto num = [&](const char* key, double v, bool comma = true) {
    std::snprintf(buf, sizeof buf, "\"%s\":%.17g%s", key, v, comma ? "," : "");
    o += buf;
  };
  auto str = [&](const char* key, const std::string& v) { o += std::string("\"") + key + "\":\"" + v + "\","; };
  str("config", c.name);
  str("gpu", p.hw.gpu.name);
  num("gpus", p.hw.gpus);
  num("gpus_per_node", p.hw.gpus_per_node);
  o += "\"layout\":{";
  num("pp", double(c.parallel.pp));
  num("dp", double(c.parallel.dp));
  num("ep", double(c.parallel.ep));
  o += std::string("\"zero1\":") + (c.parallel.zero1 ? "true" : "false") + ",";
  str("schedule", p.schedule->name);
  str("precision", c.train.precision);
  num("micro_batch_size", double(c.train.micro_batch_size));
  num("microbatches", p.schedule->microbatches, false);
  o += "},\"params\":{";
  num("total", double(p.params.total));
  num("activated", double(p.params.activated));
  num("embedding", double(p.params.embedding), false);
  o += "},\"memory\":{\"ranks\":[";
  for (size_t i = 0; i < mem.ranks.size(); ++i) {
    const auto& r = mem.ranks[i];
    o += i ? ",{" : "{";
    num("pp_rank", r.pp_rank);
    num("params", r.params);
    num("weights", r.weights);
    num("grads", r.grads);
    num("optimizer", r.optimizer);
    num("activations", r.activations);
    num("inflight", r.inflight);
    num("comm_buffers", r.comm_buffers);
    num("workspace", r.workspace);
    num("total", r.total(), false);
    o += "}";
  }
  o += "],";
  num("worst_total", mem.ranks[mem.worst].total());
  num("startup", mem.startup);
  num("capacity", mem.capacity);
  num("margin", mem.margin);
  o += std::string("\"fits\":") + (mem.fits ? "true" : "false") + "},\"comm\":{";
  num("dp_bytes", e.comm.dp_bytes);
  num("dp_s", e.comm.dp_s);
  num("ep_bytes", e.comm.ep_bytes);
  num("ep_s", e.comm.ep_s);
  num("pp_bytes", e.comm.pp_bytes);
  num("pp_s", e.comm.pp_s, false);
  o += "},\"step\":{";
  num("efficiency", p.hw.efficiency);
  num("compute_s", e.compute_s);
  num("makespan_s", e.makespan_s);
  num("bubble_fraction", e.bubble_fraction);
  num("worst_bubble_fraction", e.worst_bubble_fraction);
  num("exposed_ep_s", e.exposed_ep_s);
  num("exposed_dp_s", e.exposed_dp_s);
  num("step_s", e.step_s);
  num("tokens_per_step", e.tokens_per_step);
  num("tokens_per_s", e.tokens_per_s);
  num("flops_per_step", e.flops_per_step);
  num("mfu", e.mfu, false);
  o += "},\"training\":{";
  num("tokens", p.opts.tokens);
  num("seconds", p.train_s);
  num("gpu_hours", p.gpu_hours);
  num("price_per_gpu_hour", p.price);
  num("dollars", p.dollars, false);
  o += "},\"notes\":[";
  for (size_t i = 0; i < p.notes.size(); ++i) o += (i ? ",\"" : "\"") + p.notes[i] + "\"";
  o += "]}\n";
  return o;
}

}  // namespace shoestring::planner
