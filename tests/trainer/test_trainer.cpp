#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <cmath>
#include <cstdio>
#include <regex>

#include "tests/run_files.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"
#include "trainer/train_output.h"

using namespace shoestring;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) { return shoestring::testing::fresh_dir("shoestring_trainer", name); }
using shoestring::testing::deterministic_metrics;

Config tiny(const fs::path& run_dir, int64_t steps) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny.yaml"},
                     // The shipped config trains on the fortunes corpus; these tests pin the synthetic
                     // chain (and its 256-token vocabulary) whose losses they measured.
                     {"data.source=synthetic", "model.vocab_size=256", "data.eval_interval=0",
                      "train.steps=" + std::to_string(steps), "train.threads=1", "log.progress=off",
                      "log.every=1000", "log.run_dir=" + run_dir.string()});
}

TEST(Trainer, TinyLossFallsTowardsTheSyntheticFloor) {
  const fs::path dir = fresh_dir("falls");
  const TrainSummary s = train(tiny(dir, 60), parallel::World{});
  EXPECT_EQ(s.steps, 60);
  // Measured on 2026-11-26 (2-core CPU, 1 thread): 5.567 -> 1.694 after 60 steps; the floor is ln 4 = 1.386
  // and a uniform guess is ln 256 = 5.545. Requiring a drop of 3.0 nats leaves room for
  // platform-level float differences while failing on any real learning regression.
  EXPECT_GT(s.first_loss, 5.0);
  EXPECT_LT(s.final_loss, s.first_loss - 3.0);
  EXPECT_GT(s.final_loss, 1.386);  // cannot beat the entropy of the data
  EXPECT_EQ(deterministic_metrics(dir).size(), 60u);
  EXPECT_TRUE(fs::exists(dir / "config.yaml"));
  EXPECT_TRUE(fs::exists(dir / "train.log"));
  fs::remove_all(dir);
}

TEST(Trainer, Bf16ComputeAlsoLearns) {
  const fs::path dir = fresh_dir("bf16");
  Config c = tiny(dir, 40);
  c.train.precision = "bf16";
  const TrainSummary s = train(c, parallel::World{});
  // Measured on 2026-11-26 (2-core CPU, 1 thread): 5.567 -> 2.1457 in 40 steps (fp32: 2.1456).
  EXPECT_LT(s.final_loss, s.first_loss - 3.0);
  fs::remove_all(dir);
}

TEST(Trainer, SameSeedGivesBitIdenticalMetrics) {
  const fs::path a = fresh_dir("a"), b = fresh_dir("b");
  train(tiny(a, 8), parallel::World{});
  train(tiny(b, 8), parallel::World{});
  const auto ma = deterministic_metrics(a), mb = deterministic_metrics(b);
  ASSERT_EQ(ma.size(), 8u);
  EXPECT_EQ(ma, mb);  // loss, lr and grad_norm printed with 17 digits: equal text = equal bits
  Config other = tiny(fresh_dir("c"), 8);
  other.train.seed = 99;
  train(other, parallel::World{});
  EXPECT_NE(deterministic_metrics(other.log.run_dir), ma);
  for (const auto& d : {a, b, fs::path(other.log.run_dir)}) fs::remove_all(d);
}

// Mean expert_imbalance of the last `n` steps of a run.
double late_imbalance(const fs::path& run_dir, size_t n) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<double> v;
  const std::regex field(R"("expert_imbalance":([0-9.eE+-]+))");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, field)) v.push_back(std::stod(m[1]));
  }
  double sum = 0;
  for (size_t i = v.size() - n; i < v.size(); ++i) sum += v[i];
  return sum / double(n);
}

TEST(Trainer, TinyMoeLearnsAndBiasBalancingLowersImbalance) {
  auto run = [](const std::string& name, double gamma) {
    const fs::path dir = fresh_dir(name);
    Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"},
                           {"data.source=synthetic", "model.vocab_size=256", "data.eval_interval=0",
                            "train.steps=80", "train.threads=1", "log.progress=off", "log.every=1000",
                            "log.run_dir=" + dir.string(), "train.router_bias_gamma=" + std::to_string(gamma)});
    const TrainSummary s = train(c, parallel::World{});
    const double imbalance = late_imbalance(dir, 20);
    fs::remove_all(dir);
    return std::make_pair(s, imbalance);
  };
  const auto [balanced, imb_on] = run("moe_on", 0.001);
  const auto [unbalanced, imb_off] = run("moe_off", 0.0);
  std::printf("tiny-moe 80 steps: loss %.4f -> %.4f; late imbalance gamma=0.001 %.4f, gamma=0 %.4f\n",
              balanced.first_loss, balanced.final_loss, imb_on, imb_off);
  // Measured 2026-11-26 (2-core CPU, 1 thread): loss 5.579 -> 1.658; mean max/mean expert load
  // over the last 20 steps 1.085 with gamma = 0.001 against 1.211 with gamma = 0.
  EXPECT_LT(balanced.final_loss, balanced.first_loss - 3.0);
  EXPECT_LT(imb_on, imb_off - 0.05);
}

TEST(Trainer, Fp8TrainingTracksFp32OnTinyMoe) {
  auto run = [](const std::string& precision) {
    const fs::path dir = fresh_dir("prec_" + precision);
    const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"},
                                 {"data.source=synthetic", "model.vocab_size=256", "data.eval_interval=0",
                                  "train.steps=60", "train.threads=1", "log.progress=off", "log.every=1000",
                                  "log.run_dir=" + dir.string(), "train.precision=" + precision});
    const TrainSummary s = train(c, parallel::World{});
    fs::remove_all(dir);
    return s.final_loss;
  };
  const double fp32 = run("fp32"), fp8 = run("fp8");
  const double rel = std::fabs(fp8 - fp32) / fp32;
  std::printf("tiny-moe 60 steps: final loss fp32 %.5f fp8 %.5f (relative difference %.3f%%)\n", fp32, fp8, 100 * rel);
  // Measured 2026-11-26 (2-core CPU, 1 thread): 1.92890 vs 1.93051, 0.083%. DeepSeek-V3 reports
  // < 0.25% on long runs (§3.3); we allow 0.3% for this short, noisy one.
  EXPECT_LT(rel, 3e-3);
  EXPECT_NE(fp8, fp32);  // the FP8 path really ran
}

TEST(Trainer, RefusesToOverwriteAnExistingRun) {
  const fs::path dir = fresh_dir("exists");
  train(tiny(dir, 1), parallel::World{});
  try {
    train(tiny(dir, 1), parallel::World{});
    FAIL() << "second run into the same directory must fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run"), std::string::npos);
  }
  fs::remove_all(dir);
}

TEST(Trainer, BannerWarnsWhenWarmupOutlastsTheRun) {
  const auto text = [](int64_t steps) {
    Config c = tiny("unused", steps);  // tiny.yaml warms up for 20 steps
    return banner(c, 1, 1, 1, 1, at::Device(at::kCPU), 1, parallel::World{}, "synthetic");
  };
  EXPECT_EQ(text(21).find("warning"), std::string::npos) << text(21);
  // 10 of 20 warmup steps: lr_at(9) = 3e-3 * 10 / 20.
  EXPECT_NE(text(10).find("warning  optim.warmup_steps (20) is not below train.steps (10): the learning rate peaks at "
                          "0.0015, short of optim.lr 0.003"),
            std::string::npos)
      << text(10);
}

TEST(Trainer, GradientAccumulationMatchesOneLargeBatch) {
  // 2 micro-batches of 4 see the same 8 samples as 1 micro-batch of 8: same first-step loss and
  // gradient norm up to float summation order.
  const fs::path a = fresh_dir("accum"), b = fresh_dir("big");
  Config ca = tiny(a, 1), cb = tiny(b, 1);
  ca.train.micro_batch_size = 4;
  ca.train.grad_accum = 2;
  cb.train.micro_batch_size = 8;
  const auto sa = train(ca, parallel::World{}), sb = train(cb, parallel::World{});
  EXPECT_NEAR(sa.first_loss, sb.first_loss, 1e-5);
  fs::remove_all(a);
  fs::remove_all(b);
}

}  // namespace

// Resuming at step 2 keeps the lines up to step 2 and drops what a killed run left after them:
// later steps, a torn last line, a line cut right after its "step" key.
TEST(Trainer, ResumeTruncatesMetricsToTheCheckpointStep) {
  const fs::path dir = fresh_dir("truncate");
  fs::create_directories(dir);
  const fs::path file = dir / "metrics.jsonl";
  std::ofstream(file) << "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"loss\":3.25}\n{\"step\":3,\"loss\":3}\n"
                      << "{\"step\":4,\"lo\n{\"step\":";
  shoestring::truncate_metrics(file, 2);
  std::ifstream in(file);
  const std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(kept, "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"loss\":3.25}\n");
  fs::remove_all(dir);
}
