// train.nonfinite: a step whose loss or gradient norm is not finite, made by the test-only
// SHOESTRING_FAULT mode=nan (the loss of step S times NaN, so its gradients are NaN too).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/run_files.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;

namespace {

using shoestring::testing::deterministic_metrics;

// A constant LR, so runs of different lengths share their steps' schedules exactly.
Config tiny(const std::string& name, int64_t steps, const std::string& policy = "skip", int64_t max = 5,
            int64_t checkpoint_interval = 0) {
  const fs::path dir = shoestring::testing::fresh_dir("shoestring_nonfinite", name);
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny.yaml"},
                     {"checkpoint.interval=" + std::to_string(checkpoint_interval), "data.source=synthetic", "model.vocab_size=256", "data.eval_interval=0",
                      "optim.schedule=constant", "train.steps=" + std::to_string(steps), "train.threads=1",
                      "log.progress=off", "log.every=1000", "log.run_dir=" + dir.string(),
                      "train.nonfinite=" + policy, "train.nonfinite_max=" + std::to_string(max)});
}

// Trains with a NaN loss in `k` steps from `at` (0: no fault).
TrainSummary train_with_nan(const Config& c, int64_t at, int64_t k = 1) {
  if (at > 0) ::setenv("SHOESTRING_FAULT", ("rank=0,step=" + std::to_string(at) + ",mode=nan:" + std::to_string(k)).c_str(), 1);
  TrainOptions o;
  o.keep_parameters = true;
  try {
    TrainSummary s = train(c, parallel::World{}, o);
    ::unsetenv("SHOESTRING_FAULT");
    return s;
  } catch (...) {
    ::unsetenv("SHOESTRING_FAULT");
    throw;
  }
}

// metrics.jsonl as written (deterministic_metrics drops everything from tokens_per_s on).
std::vector<std::string> raw_lines(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool same_parameters(const TrainSummary& a, const TrainSummary& b) {
  if (a.parameters.size() != b.parameters.size()) return false;
  for (size_t i = 0; i < a.parameters.size(); ++i)
    if (!a.parameters[i].second.equal(b.parameters[i].second)) return false;
  return true;
}

TEST(Nonfinite, SkippedStepUpdatesNothingIsCountedAndTheRunContinues) {
  const Config before = tiny("before", 2), bad_last = tiny("bad_last", 3), cont = tiny("cont", 5);
  const TrainSummary a = train_with_nan(before, 0);
  const TrainSummary b = train_with_nan(bad_last, 3);
  // Step 3 was skipped: the parameters are exactly those after step 2.
  EXPECT_EQ(b.steps, 3);
  EXPECT_EQ(b.skipped_steps, 1);
  EXPECT_TRUE(same_parameters(a, b));
  const auto ma = deterministic_metrics(before.log.run_dir), mb = deterministic_metrics(bad_last.log.run_dir);
  ASSERT_EQ(mb.size(), 3u);
  EXPECT_EQ(mb[0], ma[0]);
  EXPECT_EQ(mb[1], ma[1]);
  EXPECT_NE(mb[2].find("\"loss\":null"), std::string::npos) << mb[2];  // JSON has no nan
  const std::string line3 = raw_lines(bad_last.log.run_dir)[2];
  EXPECT_NE(line3.find("\"skipped\":true,\"skipped_steps\":1"), std::string::npos) << line3;

  // Training goes on after it: finite losses, parameters move, the count stays on later lines.
  const TrainSummary c = train_with_nan(cont, 3);
  ASSERT_EQ(c.losses.size(), 5u);
  EXPECT_TRUE(std::isnan(c.losses[2]));
  EXPECT_TRUE(std::isfinite(c.losses[3]) && std::isfinite(c.losses[4]));
  EXPECT_FALSE(same_parameters(b, c));
  for (const auto& [name, value] : c.parameters) EXPECT_TRUE(value.isfinite().all().item<bool>()) << name;
  const auto mc = raw_lines(cont.log.run_dir);
  ASSERT_EQ(mc.size(), 5u);
  EXPECT_EQ(mc[3].find("\"skipped\":true"), std::string::npos) << mc[3];
  EXPECT_NE(mc[4].find("\"skipped_steps\":1"), std::string::npos) << mc[4];
  EXPECT_EQ(raw_lines(before.log.run_dir)[0].find("skipped"), std::string::npos);  // normal lines unchanged
  for (const auto* c2 : {&before, &bad_last, &cont}) fs::remove_all(c2->log.run_dir);
}

TEST(Nonfinite, TooManyConsecutiveSkipsStopNamingTheStep) {
  // Two bad steps in a row are tolerated with nonfinite_max 3 ...
  const Config ok = tiny("two", 5, "skip", 3);
  const TrainSummary s = train_with_nan(ok, 2, 2);
  EXPECT_EQ(s.steps, 5);
  EXPECT_EQ(s.skipped_steps, 2);
  // ... three are not: the run stops after the third, which still gets its metrics line.
  const Config stop = tiny("three", 6, "skip", 3);
  try {
    train_with_nan(stop, 2, 3);
    FAIL() << "expected a runtime error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("step 4: loss nan, gradient norm nan: "), std::string::npos) << what;
    EXPECT_NE(what.find("3 consecutive non-finite steps skipped (train.nonfinite_max)"), std::string::npos) << what;
  }
  EXPECT_EQ(deterministic_metrics(stop.log.run_dir).size(), 4u);
  for (const auto* c : {&ok, &stop}) fs::remove_all(c->log.run_dir);
}

TEST(Nonfinite, StopPolicyStopsAtTheFirstBadStepWithTodaysMessage) {
  const Config c = tiny("stop", 4, "stop");
  try {
    train_with_nan(c, 2);
    FAIL() << "expected a runtime error";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(std::regex_search(std::string(e.what()),
                                  std::regex(R"(^step 2: loss is nan; stopping \(lower optim\.lr or set optim\.grad_clip\)$)")))
        << e.what();
  }
  // The bad step gets its metrics line (loss null, no update), as the last step of skip does.
  const std::vector<std::string> lines = deterministic_metrics(c.log.run_dir);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[1].find("\"step\":2,"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"loss\":null"), std::string::npos) << lines[1];
  fs::remove_all(c.log.run_dir);
}

// rollback: two bad steps (5, 6) in a row with nonfinite_max 2. Skipped steps change nothing, so
// the state is the one after step 4's update, which may be what led to the divergence: the run goes
// back to the newest checkpoint before that update (step 2), drops the abandoned step 4, and goes
// on from step 3 with the batches after the bad ones. The independent reference is the step-2
// checkpoint of a clean run, resumed with its loader state moved past 4 steps' samples by editing
// the manifest: steps 3-8 must match it bit for bit, parameters included.
TEST(Nonfinite, RollbackRestoresTheCheckpointAndSkipsTheBadBatches) {
  const Config rb = tiny("rollback", 8, "rollback", 2, 2);
  const TrainSummary a = train_with_nan(rb, 5, 2);
  EXPECT_EQ(a.rollbacks, 1);
  EXPECT_EQ(a.steps, 8);
  const auto lines = raw_lines(rb.log.run_dir);
  ASSERT_EQ(lines.size(), 12u);  // steps 1-6, then 3-8 again
  EXPECT_NE(lines[5].find("\"step\":6,"), std::string::npos) << lines[5];
  EXPECT_NE(lines[5].find("\"rolled_back_to\":2"), std::string::npos) << lines[5];
  EXPECT_NE(lines[6].find("\"step\":3,"), std::string::npos) << lines[6];
  for (size_t i = 6; i < 12; ++i) EXPECT_EQ(lines[i].find("\"skipped\":true"), std::string::npos) << lines[i];

  const Config clean = tiny("rollback_ref", 2, "skip", 5, 2);
  train_with_nan(clean, 0);
  const fs::path ckpt = fs::path(clean.log.run_dir) / "checkpoints" / "step_0000002";
  std::ifstream in(ckpt / "manifest.json");
  std::string manifest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(manifest, m, std::regex(R"(position=(\d+) samples=(\d+))")));
  const long samples = std::stol(m[2]), skip = samples / 2 * 4;  // steps 3-6's samples
  manifest.replace(size_t(m.position(0)), size_t(m.length(0)),
                   "position=" + std::to_string(std::stol(m[1]) + skip) + " samples=" + std::to_string(samples + skip));
  std::ofstream(ckpt / "manifest.json", std::ios::trunc) << manifest;
  Config ref = tiny("rollback_ref_resumed", 8, "skip");
  ref.log.run_dir = clean.log.run_dir;
  TrainOptions o;
  o.keep_parameters = true;
  o.resume = ckpt.string();
  const TrainSummary b = train(ref, parallel::World{}, o);
  ASSERT_EQ(b.losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(a.losses[6 + i], b.losses[i]) << "step " << i + 3;
  EXPECT_TRUE(same_parameters(a, b));
  for (const std::string& d : {rb.log.run_dir, clean.log.run_dir, ref.log.run_dir}) fs::remove_all(d);
}

TEST(Nonfinite, RollbackStopsWithoutACheckpointOrAfterRollbackMax) {
  const Config early = tiny("rollback_early", 6, "rollback", 2, 4);  // bad steps 2-3 come before the first checkpoint
  try {
    train_with_nan(early, 2, 2);
    FAIL() << "expected a runtime error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("step 3: 2 consecutive non-finite steps and no checkpoint before step 1 in"),
              std::string::npos)
        << e.what();
  }
  // Steps 3-4 roll back to 1 (before step 2's update); the replayed 2-4 are fine (a fault fires
  // once per step number), then 5-6 are bad again: with rollback_max 1 that stops the run.
  Config twice = tiny("rollback_twice", 8, "rollback", 2, 1);
  twice.train.rollback_max = 1;
  try {
    train_with_nan(twice, 3, 4);
    FAIL() << "expected a runtime error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("2 consecutive non-finite steps after 1 rollbacks (train.rollback_max)"),
              std::string::npos)
        << e.what();
  }
  try {
    tiny("rollback_nockpt", 2, "rollback");
    FAIL() << "expected a config error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.nonfinite: rollback needs checkpoints"), std::string::npos) << e.what();
  }
  for (const std::string& d : {early.log.run_dir, twice.log.run_dir}) fs::remove_all(d);
}

}  // namespace
