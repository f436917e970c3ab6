#pragma once
// What the checkpoint tests share: run folders, the tiny MoE config they train, paths inside a run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/run_files.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

namespace shoestring::ckpt_test {

namespace fs = std::filesystem;

inline fs::path fresh_dir(const std::string& name) { return shoestring::testing::fresh_dir("shoestring_ckpt", name); }
using shoestring::testing::deterministic_metrics;

// The tiny MoE (router biases moving, MTP on) in float32: small enough for seconds per run.
inline std::vector<std::string> tiny_moe_sets(const fs::path& dir, int64_t steps, int64_t interval, int64_t keep = 3) {
  return {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
          "model.kv_lora_rank=16", "model.intermediate_size=64", "model.moe_intermediate_size=16",
          "train.seq_len=16", "train.micro_batch_size=4", "train.steps=" + std::to_string(steps), "train.threads=1",
          "optim.warmup_steps=1", "train.router_bias_gamma=0.01", "log.progress=off", "log.every=1000",
          "log.run_dir=" + dir.string(), "checkpoint.interval=" + std::to_string(interval),
          "checkpoint.keep=" + std::to_string(keep)};
}

inline Config tiny_moe(const fs::path& dir, int64_t steps, int64_t interval, int64_t keep = 3) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, tiny_moe_sets(dir, steps, interval, keep));
}

// Trains with SHOESTRING_FAULT raising SIGTERM inside step `at`.
inline TrainSummary train_until_sigterm(const Config& c, int64_t at) {
  ::setenv("SHOESTRING_FAULT", ("rank=0,step=" + std::to_string(at) + ",mode=sigterm").c_str(), 1);
  TrainSummary s = train(c, parallel::World{});
  ::unsetenv("SHOESTRING_FAULT");
  return s;
}

inline std::string ckpt_dir(const fs::path& run, int64_t step) { return (run / "checkpoints" / ckpt::step_dir_name(step)).string(); }

inline bool one_line(const std::string& s) { return std::count(s.begin(), s.end(), '\n') == 1; }

// A copy of checkpoint `src` at `dst` whose manifest has its first `from` replaced by `to`.
inline std::string edited_copy(const std::string& src, const fs::path& dst, const std::string& from, const std::string& to) {
  fs::copy(src, dst, fs::copy_options::recursive);
  const fs::path m = dst / ckpt::kManifestName;
  std::string text = shoestring::testing::read_file(m);
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  std::ofstream(m, std::ios::trunc) << text;
  return dst.string();
}


}  // namespace shoestring::ckpt_test
