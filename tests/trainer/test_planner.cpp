// The cost/memory planner (trainer/planner/): parameter counts, memory arithmetic, the bubble,
// fit decisions and the layout search, each against something computed independently.
#include <gtest/gtest.h>

#include "parallel/mesh.h"
#include "trainer/config_loader.h"
#include "trainer/model/param_count.h"
#include "trainer/model/transformer.h"
#include "trainer/planner/layout_search.h"
#include "trainer/planner/plan_report.h"
#include "trainer/sweep/run_estimate.h"

using namespace shoestring;
using namespace shoestring::planner;

namespace {

Config shipped(const std::string& name, const std::vector<std::string>& sets = {}) {
  return load_config({std::string(SHOESTRING_SOURCE_DIR "/configs/") + name + ".yaml"}, sets);
}

Hardware hardware(const std::string& gpu, int gpus) {
  Hardware hw;
  hw.gpu = find_gpu(gpu);
  hw.gpus = gpus;
  return hw;
}

TEST(Planner, ParameterCountsAreTheModelsAndEveryStageAddsUp) {
  for (const char* name : {"tiny", "tiny-moe"}) {
    const Config cfg = shipped(name);
    const Plan p = make_plan(cfg, hardware("h100", 1), {});
    model::Transformer net(cfg.model);
    EXPECT_EQ(p.params.total, net->parameter_count()) << name;
    EXPECT_EQ(p.params.activated, net->activated_parameter_count()) << name;
    EXPECT_EQ(p.params.total, model::count_parameters(cfg.model).total) << name;
    // One rank holds everything: the planner's per-stage split must add back to the model.
    ASSERT_EQ(p.memory.ranks.size(), 1u);
    EXPECT_DOUBLE_EQ(p.memory.ranks[0].params, double(net->parameter_count())) << name;
  }
  // pp 2: the stages share the model; tiny-moe's last stage also holds the embedding (its MTP
  // module embeds the next tokens), so the sum exceeds the model by exactly that table.
  Config cfg = shipped("tiny-moe", {"parallel.pp=2", "parallel.microbatches=4"});
  const Plan p = make_plan(cfg, hardware("h100", 2), {});
  ASSERT_EQ(p.memory.ranks.size(), 2u);
  EXPECT_DOUBLE_EQ(p.memory.ranks[0].params + p.memory.ranks[1].params,
                   double(p.params.total + cfg.model.vocab_size * cfg.model.d_model));
}

TEST(Planner, DeepSeekV3ConfigHasThePublishedSize) {
  // DeepSeek-V3 (arXiv 2412.19437 §1, §4.2): 671B total, 37B activated per token, MTP excluded.
  const Config cfg = shipped("deepseek-v3");
  ModelConfig main = cfg.model;
  main.mtp_depth = 0;
  const model::ParamCount c = model::count_parameters(main);
  EXPECT_NEAR(double(c.total), 671e9, 0.005 * 671e9);
  EXPECT_NEAR(double(c.activated), 37e9, 0.02 * 37e9);
  // One MTP module adds a block, two norms and the 2d x d projection (its head and embedding are shared).
  EXPECT_NEAR(double(model::count_parameters(cfg.model).total - c.total), 11.6e9, 0.05e9);
}

TEST(Planner, ModelStateBytesByHand) {
  // A dense model of P parameters on 4 data-parallel ranks: 4 B weights + 4 B gradients + 8 B
  // of AdamW moments per parameter, the moments split four ways with ZeRO-1.
  Config cfg;
  cfg.model.vocab_size = 100, cfg.model.d_model = 16, cfg.model.n_layers = 2, cfg.model.n_heads = 2,
  cfg.model.n_kv_heads = 2, cfg.model.intermediate_size = 32;
  // embedding 2 x 100 x 16, final norm 16, per block 2 x 16 + attention 4 x 16 x 16 + SwiGLU 3 x 16 x 32
  const double P = 2 * 100 * 16 + 16 + 2 * (2 * 16 + 4 * 16 * 16 + 3 * 16 * 32);
  ASSERT_EQ(double(model::count_parameters(cfg.model).total), P);
  const Plan off = make_plan(cfg, hardware("h100", 4), {});
  EXPECT_DOUBLE_EQ(off.memory.ranks[0].weights, 4 * P);
  EXPECT_DOUBLE_EQ(off.memory.ranks[0].grads, 4 * P);
  EXPECT_DOUBLE_EQ(off.memory.ranks[0].optimizer, 8 * P);
  cfg.parallel.zero1 = true;
  const Plan on = make_plan(cfg, hardware("h100", 4), {});
  EXPECT_DOUBLE_EQ(on.memory.ranks[0].weights, 4 * P);
  EXPECT_DOUBLE_EQ(on.memory.ranks[0].optimizer, 8 * P / 4);
  // Activations: one micro-batch in flight without a pipeline; bf16 halves fp32's.
  EXPECT_EQ(off.memory.ranks[0].inflight, 1);
  cfg.train.precision = "bf16";
  const Plan half = make_plan(cfg, hardware("h100", 4), {});
  EXPECT_LT(half.memory.ranks[0].activations, off.memory.ranks[0].activations);
  EXPECT_GT(half.memory.ranks[0].activations, 0.5 * off.memory.ranks[0].activations);  // norms stay fp32
}

TEST(Planner, ExpertsAreDividedOverEp) {
  Config cfg = shipped("tiny-moe");
  const Plan ep1 = make_plan(cfg, hardware("h100", 4), {});
  cfg.parallel.ep = 4;
  const Plan ep4 = make_plan(cfg, hardware("h100", 4), {});
  // Routed experts: 3 MoE layers (2 blocks and the MTP module's) of 8 experts x 3 x 96 x 64.
  const double experts = 3 * 8 * (3.0 * 96 * 64);
  EXPECT_DOUBLE_EQ(ep1.memory.ranks[0].params - ep4.memory.ranks[0].params, experts * 3 / 4);  // ep 4 keeps a quarter
}

TEST(Planner, UniformStagesBubbleIsTheOneF1BFormula) {
  // DeepSeek-V3 Table 2: 1F1B idles (PP-1)(F+B) on every rank; here F = 1.5 s, B = 2F.
  parallel::ScheduleOptions o;
  o.name = "1f1b", o.pp = 4, o.microbatches = 8;
  const parallel::Schedule s = parallel::make_schedule(o);
  const double f = 1.5;
  const parallel::Simulation sim = simulate_pipeline(s, std::vector<double>(4, f), 0.0);
  for (int r = 0; r < 4; ++r) EXPECT_NEAR(sim.bubble[size_t(r)], 3 * (f + 2 * f), 1e-9) << r;
  EXPECT_NEAR(sim.makespan, 8 * 3 * f + 3 * 3 * f, 1e-9);
}

TEST(Planner, FitsOrNot) {
  const Plan big = make_plan(shipped("moe-16b"), hardware("a100", 1), {});
  EXPECT_FALSE(big.memory.fits);
  // 15.7B parameters x (4 B weights + 4 B gradients) alone exceed 80 GiB.
  EXPECT_GT(big.memory.ranks[0].weights + big.memory.ranks[0].grads, big.memory.capacity);
  EXPECT_NE(render_text(big).find("DOES NOT FIT"), std::string::npos);
  EXPECT_NE(render_json(big).find("\"fits\":false"), std::string::npos);
  const Plan small = make_plan(shipped("tiny-moe"), hardware("h100", 1), {});
  EXPECT_TRUE(small.memory.fits);
}

TEST(Planner, BadLayoutsAreRefused) {
  EXPECT_THROW(make_plan(shipped("tiny", {"parallel.pp=2"}), hardware("h100", 3), {}), PlanError);
  EXPECT_THROW(make_plan(shipped("tiny-moe", {"parallel.ep=2"}), hardware("h100", 3), {}), PlanError);  // ep | dp
  EXPECT_THROW(find_gpu("v100"), PlanError);
  EXPECT_EQ(find_gpu("H100").name, "h100");
}

// Beyond the limits (plan_report.h) the planner refuses at once, naming the key, rather than
// splitting 200,000 layers for a minute or replaying 16,384 ranks for longer.
TEST(Planner, TooLargeModelsAndPipelinesAreRefusedNamingTheKey) {
  auto message = [](const Config& c, int gpus) {
    try {
      make_plan(c, hardware("h100", gpus), {});
    } catch (const PlanTooLarge& e) {
      return std::string(e.what());
    }
    return std::string("(no PlanTooLarge)");
  };
  EXPECT_EQ(message(shipped("tiny", {"model.n_layers=200000"}), 1),
            "model.n_layers=200000: the planner handles at most 4096 transformer blocks");
  EXPECT_EQ(message(shipped("tiny", {"parallel.pp=16384"}), 16384),
            "parallel.pp=16384: the planner handles at most 1024 pipeline ranks");
  // 4096 layers: 64 stages are the most (64 x 4096^2 = 2^30); explicit stage_layers need no split.
  EXPECT_NO_THROW(make_plan(shipped("tiny", {"model.n_layers=4096", "parallel.pp=64"}), hardware("h100", 64), {}));
  EXPECT_NE(message(shipped("tiny", {"model.n_layers=4096", "parallel.pp=128"}), 128)
                .find("model.n_layers=4096 over 128 pipeline stages"),
            std::string::npos);
  // The sweep's estimate says why it has none.
  EXPECT_EQ(sweep::run_estimate(shipped("tiny", {"model.n_layers=1000000"})),
            "n/a: model.n_layers=1000000: the planner handles at most 4096 transformer blocks");
  // A search is refused for the model's size; a layout beyond the limits is counted, not hidden.
  EXPECT_THROW(search_layouts(shipped("tiny", {"model.n_layers=5000"}), hardware("h100", 8), {}), PlanTooLarge);
  SearchResult r;
  r.too_large = 3;
  EXPECT_NE(render_search_table(r).find("3 layout(s) not planned: beyond the planner's limits"), std::string::npos);
}

// --gpus near INT_MAX: the search neither overflows its pp counter (it divided by zero) nor counts
// through two billion expert-parallel widths.
TEST(Planner, SearchOverAHugeGpuCountFinishes) {
  const SearchResult r = search_layouts(shipped("tiny"), hardware("h100", 2147483647), {});
  EXPECT_FALSE(r.plans.empty());
}

TEST(Planner, TimeAndCostAreConsistent) {
  PlanOptions o;
  o.tokens = 1e9;
  o.price = 3;
  const Plan p = make_plan(shipped("small-moe"), hardware("h100", 8), o);
  EXPECT_GT(p.step.step_s, 0);
  EXPECT_NEAR(p.step.tokens_per_s, p.step.tokens_per_step / p.step.step_s, 1e-6 * p.step.tokens_per_s);
  EXPECT_NEAR(p.gpu_hours, 8 * 1e9 / p.step.tokens_per_s / 3600, 1e-9 * p.gpu_hours);
  EXPECT_NEAR(p.dollars, 3 * p.gpu_hours, 1e-9 * p.dollars);
  EXPECT_GT(p.step.mfu, 0);
  EXPECT_LE(p.step.mfu, 0.4 + 1e-12);  // never above the assumed achieved fraction
}

TEST(Planner, SearchListsOnlyValidLayoutsSortedByCost) {
  const Config cfg = shipped("tiny-moe", {"train.global_batch=64"});
  const Hardware hw = hardware("h100", 8);
  const SearchResult r = search_layouts(cfg, hw, {});
  ASSERT_FALSE(r.plans.empty());
  EXPECT_LT(r.plans.size(), r.considered);  // some candidates are refused
  for (size_t i = 0; i < r.plans.size(); ++i) {
    const Config& c = r.plans[i].cfg;
    const parallel::MeshShape shape{int(c.parallel.pp), int(c.parallel.dp), int(c.parallel.ep)};
    EXPECT_EQ(parallel::check_mesh(shape, 8), "");
    EXPECT_EQ(cfg.model.n_routed_experts % c.parallel.ep, 0);
    parallel::ScheduleOptions o;
    o.name = r.plans[i].schedule->name, o.pp = int(c.parallel.pp), o.microbatches = r.plans[i].schedule->microbatches;
    EXPECT_NO_THROW(parallel::make_schedule(o));
    EXPECT_EQ(c.train.micro_batch_size * r.plans[i].schedule->microbatches * c.parallel.dp, 64);
    if (i > 0 && r.plans[i].memory.fits == r.plans[i - 1].memory.fits) {
      EXPECT_LE(r.plans[i - 1].dollars, r.plans[i].dollars);
    }
    if (i > 0) {
      EXPECT_GE(int(r.plans[i - 1].memory.fits), int(r.plans[i].memory.fits));
    }
  }
  EXPECT_NE(render_search_table(r).find("pp   dp   ep"), std::string::npos);
}

}  // namespace

namespace {

// A plan as its JSON and text, or the kind of error that refused it.
std::string outcome(const Config& cfg, const Hardware& hw, const PlanOptions& o, PlanCache* cache) {
  try {
    const Plan p = make_plan(cfg, hw, o, cache);
    return render_json(p) + render_text(p);
  } catch (const PlanTooLarge&) {
    return "PlanTooLarge";
  } catch (const PlanError&) {
    return "PlanError";
  } catch (const ConfigError&) {
    return "ConfigError";
  }
}

}  // namespace

// The search's cache (schedules, their validation, simulations, splits) changes no plan: every
// searched layout planned again on its own gives the same bytes.
TEST(Planner, SearchPlansEqualTheirUncachedPlans) {
  const Hardware hw = hardware("h100", 8);
  const SearchResult r = search_layouts(shipped("tiny-moe", {"train.global_batch=64", "model.n_layers=8"}), hw, {});
  ASSERT_GT(r.plans.size(), 100u);
  for (const Plan& p : r.plans) {
    Config c = p.cfg;
    c.parallel.dp = 0;
    EXPECT_EQ(outcome(c, hw, p.opts, nullptr), render_json(p) + render_text(p));
  }
}

// The cache refuses layouts beyond the trainer's micro-batch limit (16384 / stages) before
// building their schedules; step_schedule refuses them after. The two must agree at the limit.
TEST(Planner, CachedPlansRefuseWhatTheTrainerRefuses) {
  const Hardware hw = hardware("h100", 4);
  PlanOptions o;
  o.exact_partition = false;
  PlanCache cache;
  for (const std::string& name : parallel::schedule_names()) {
    const int stages = name == "interleaved" || name == "dualpipev" ? 8 : 4;  // pp 4, 2 chunks (DualPipe: 4 stages twice)
    for (int m : {16384 / stages, 16384 / stages + 1, 16384 / stages + 4}) {
      const Config c = shipped("tiny-moe", {"model.n_layers=8", "parallel.pp=4", "parallel.schedule=" + name,
                                            "parallel.microbatches=" + std::to_string(m)});
      const std::string plain = outcome(c, hw, o, nullptr);
      EXPECT_EQ(outcome(c, hw, o, &cache), plain) << name << " " << m;
      EXPECT_EQ(plain == "ConfigError", m > 16384 / stages || (name == "interleaved" && m % 4 != 0)) << name << " " << m;
    }
  }
}
