#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "trainer/config_loader.h"
#include "trainer/pipeline_plan.h"
#include "trainer/distributed.h"
#include "trainer/config_schema.h"

using shoestring::Config;
using shoestring::ConfigError;
using shoestring::load_config;
using shoestring::load_config_text;

namespace {

// The message of the ConfigError that loading throws, or "" if it loads.
std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    load_config_text(yaml, "x.yaml", sets);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("shoestring_test_" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(Config, EmptyDocumentGivesDefaults) {
  const Config c = load_config_text("", "x.yaml");
  EXPECT_EQ(c.model.d_model, Config{}.model.d_model);
  EXPECT_EQ(c.optim.schedule, "cosine");
}

TEST(Config, ReadsEveryType) {
  const Config c = load_config_text(
      "model:\n  d_model: 64\n  tie_embeddings: true\ntrain:\n  precision: bf16\n"
      "optim:\n  lr: 1e-3\n  no_decay: [norm]\nlog:\n  run_dir: /tmp/x\n",
      "x.yaml");
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_EQ(c.train.precision, "bf16");
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);
  EXPECT_EQ(c.optim.no_decay, std::vector<std::string>{"norm"});
  EXPECT_EQ(c.log.run_dir, "/tmp/x");
}

TEST(Config, ExactMessages) {
  EXPECT_EQ(error_of("train:\n  steps: 10\noptim:\n  lr: abc\n"),
            "x.yaml:4: optim.lr: expected a positive number, got \"abc\"");
  EXPECT_EQ(error_of("model:\n  d_modle: 64\n"), "x.yaml:2: model.d_modle: unknown key; did you mean model.d_model?");
  EXPECT_EQ(error_of("modle:\n  d_model: 64\n"), "x.yaml:1: modle: unknown section; did you mean model?");
  EXPECT_EQ(error_of("train:\n  precision: fp16\n"), "x.yaml:2: train.precision: expected one of fp32, bf16, fp8, fp64, got \"fp16\"");
  EXPECT_EQ(error_of("model:\n  n_heads: 3\n"), "x.yaml:2: model.n_heads: must divide model.d_model (128), got 3");
  // A repeated key or section would otherwise let the later one win silently.
  EXPECT_EQ(error_of("train:\n  steps: 10\n  steps: 20\n"), "x.yaml:3: train.steps: duplicate key (first at x.yaml:2)");
  EXPECT_EQ(error_of("train:\n  steps: 10\noptim:\n  lr: 0.1\ntrain:\n  seed: 3\n"),
            "x.yaml:5: train: duplicate key (first at x.yaml:1)");
  // A directory opens as an empty stream: it must not load as all defaults.
  try {
    shoestring::load_config({std::filesystem::temp_directory_path().string()}, {});
    ADD_FAILURE() << "a directory loaded as a config";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(": is a directory, expected a YAML config file"), std::string::npos) << e.what();
  }
  // Nor an empty file, or one holding only comments.
  const std::string empty = (std::filesystem::temp_directory_path() / "shoestring_empty_config.yaml").string();
  for (const char* text : {"", "# nothing here\n\n"}) {
    std::ofstream(empty) << text;
    try {
      shoestring::load_config({empty}, {});
      ADD_FAILURE() << "an empty file loaded as a config: '" << text << "'";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()), empty + ": empty config file (expected sections such as model: and train:)");
    }
  }
  std::filesystem::remove(empty);
}

// Inputs that once slipped past the checks: dropped unread, a yaml-cpp message without the file, a
// hint pointing at the very word typed, a parameter count wrapped around int64.
TEST(Config, OddInputsAreNamed) {
  EXPECT_EQ(error_of("model:\n  d_model: 64\n---\ntrain:\n  steps: 5\n"),
            "x.yaml:4: a second YAML document (after ---); a config file holds one (pass several files with --config)");
  EXPECT_EQ(error_of("model: {d_model: 64}\n---\n"), "");  // a trailing, empty document drops nothing
  EXPECT_EQ(error_of("model:\n  ? [a]\n  : 1\n"), "x.yaml:2: expected a key name, got a list");
  EXPECT_EQ(error_of("? {a: 1}\n: 1\n"), "x.yaml:1: expected a key name, got a mapping");
  EXPECT_EQ(error_of("", {"model=1"}), "--set model=1: model: is a section; set one of its keys, e.g. --set model.vocab_size=...");
  EXPECT_EQ(error_of("", {"model.d_model=4000000000", "model.vocab_size=4000000000"}),
            "config: model: the model's parameter count exceeds 2^63 (shrink model.d_model, model.n_layers, "
            "model.vocab_size, the feed-forward or the experts)");
}

TEST(Config, TypeAndRangeRules) {
  EXPECT_NE(error_of("train:\n  steps: 0\n").find("expected a positive integer, got \"0\""), std::string::npos);
  EXPECT_NE(error_of("train:\n  steps: 1.5\n").find("expected a positive integer"), std::string::npos);
  EXPECT_NE(error_of("train:\n  seed: -1\n").find("expected a non-negative integer"), std::string::npos);
  EXPECT_NE(error_of("optim:\n  beta2: 1.0\n").find("expected a number in [0, 1)"), std::string::npos);
  EXPECT_NE(error_of("optim:\n  decay_fraction: 1.5\n").find("expected a number in [0, 1]"), std::string::npos);
  EXPECT_NE(error_of("optim:\n  lr: nan\n").find("expected a positive number"), std::string::npos);
  EXPECT_NE(error_of("model:\n  tie_embeddings: maybe\n").find("expected true or false"), std::string::npos);
  EXPECT_NE(error_of("optim:\n  no_decay: [norm, weights]\n").find("got \"weights\""), std::string::npos);
  EXPECT_NE(error_of("model:\n  d_model: [1, 2]\n").find("got a list"), std::string::npos);
  EXPECT_NE(error_of("model:\n  d_model:\n").find("got nothing"), std::string::npos);
  EXPECT_NE(error_of("model: 3\n").find("model: expected a mapping of keys"), std::string::npos);
  EXPECT_NE(error_of("- a\n- b\n").find("expected a mapping of sections"), std::string::npos);
  EXPECT_NE(error_of("model:\n  d_model: [1\n").find("YAML syntax error"), std::string::npos);
}

TEST(Config, CrossFieldRules) {
  EXPECT_NE(error_of("model:\n  n_kv_heads: 3\n").find("model.n_kv_heads: must divide model.n_heads (4)"), std::string::npos);
  EXPECT_NE(error_of("model:\n  d_model: 132\n  n_heads: 4\n  n_kv_heads: 4\n").find("must be even"), std::string::npos);
  EXPECT_NE(error_of("train:\n  seq_len: 512\n").find("train.seq_len: must not exceed model.max_seq_len (256)"), std::string::npos);
  EXPECT_NE(error_of("optim:\n  lr: 1e-4\n  min_lr: 1e-3\n").find("optim.min_lr: must not exceed optim.lr"), std::string::npos);
  EXPECT_NE(error_of("model:\n  vocab_size: 8\ndata:\n  synthetic_branching: 9\n").find("data.synthetic_branching"), std::string::npos);
  // A cross-field error points at the line that set the offending key.
  EXPECT_EQ(error_of("train:\n  steps: 5\nmodel:\n  n_kv_heads: 3\n").rfind("x.yaml:4:", 0), 0u);
}

TEST(Config, BatchAndLayoutRules) {
  EXPECT_NE(error_of("train:\n  global_batch: 16\n  grad_accum: 2\n").find("set either train.global_batch or train.grad_accum"), std::string::npos);
  EXPECT_NE(error_of("train:\n  micro_batch_size: 3\n  global_batch: 16\n").find("train.global_batch: must be a multiple of train.micro_batch_size (3)"), std::string::npos);
  EXPECT_NE(error_of("train:\n  micro_batch_size: 2\n  global_batch: 16\nparallel:\n  dp: 3\n").find("multiple of train.micro_batch_size x parallel.dp (6)"), std::string::npos);
  EXPECT_NE(error_of("parallel:\n  dp: 4\n  ep: 3\n").find("parallel.ep: must divide parallel.dp (4)"), std::string::npos);
  EXPECT_EQ(error_of("parallel:\n  pp: 2\n"), "");
  EXPECT_NE(error_of("model:\n  n_layers: 4\nparallel:\n  pp: 2\n  stage_layers: [1, 2]\n").find("parallel.stage_layers: must sum to model.n_layers (4), got 3"), std::string::npos);
  EXPECT_NE(error_of("model:\n  n_layers: 4\nparallel:\n  pp: 2\n  schedule: dualpipev\n  stage_layers: [2, 2]\n").find("needs one entry per pipeline stage (4 with dualpipev and pp 2), got 2"), std::string::npos);
  EXPECT_NE(error_of("parallel:\n  stage_layers: [1, -2]\n").find("expected a list of non-negative integers, got \"-2\""), std::string::npos);
  EXPECT_NE(error_of("parallel:\n  stage_layers: [1,,2]\n").find("parallel.stage_layers: expected a list of non-negative integers"), std::string::npos);
  EXPECT_NE(error_of("parallel:\n  schedule: pipedream\n").find("one of gpipe, 1f1b, interleaved, zb1p, dualpipe, dualpipev"), std::string::npos);
  EXPECT_EQ(error_of("model:\n  n_layers: 4\nparallel:\n  pp: 2\n  schedule: interleaved\n  stage_layers: [1, 1, 0, 2]\n"), "");
  EXPECT_NE(error_of("parallel:\n  dp: 4\n  ep: 2\n").find("parallel.ep: needs routed experts to shard (model.n_routed_experts is 0)"), std::string::npos);
  EXPECT_NE(error_of("model:\n  n_routed_experts: 6\nparallel:\n  dp: 4\n  ep: 4\n").find("parallel.ep: must divide model.n_routed_experts (6), got 4"), std::string::npos);
  EXPECT_EQ(error_of("model:\n  n_routed_experts: 8\nparallel:\n  dp: 4\n  ep: 4\n"), "");
  // FP8 dispatch needs an ep group to dispatch over; the width needs nothing (ragged tiles pad).
  EXPECT_NE(error_of("parallel:\n  ep_dispatch_dtype: fp8\n").find("parallel.ep_dispatch_dtype: fp8 needs expert parallelism (parallel.ep > 1, got 1)"), std::string::npos);
  EXPECT_NE(error_of("parallel:\n  ep_dispatch_dtype: e5m2\n").find("one of auto, fp8"), std::string::npos);
  EXPECT_EQ(error_of("model:\n  d_model: 72\n  n_routed_experts: 8\nparallel:\n  dp: 4\n  ep: 4\n  ep_dispatch_dtype: fp8\n"), "");
  EXPECT_EQ(error_of("parallel:\n  ep_dispatch_dtype: auto\n"), "");
  EXPECT_EQ(error_of("train:\n  micro_batch_size: 2\n  global_batch: 16\nparallel:\n  dp: 4\n  zero1: true\n"), "");
}

TEST(Config, MeshAndAccumulationFromTheRanksStarted) {
  Config c = load_config_text("train:\n  micro_batch_size: 2\n  global_batch: 16\n", "x.yaml", {});
  EXPECT_EQ(mesh_shape(c, 4).dp, 4);  // dp 0 = every rank
  EXPECT_EQ(accumulation_steps(c.train, 4), 2);
  EXPECT_EQ(accumulation_steps(c.train, 1), 8);
  try {
    accumulation_steps(c.train, 3);
    ADD_FAILURE() << "16 sequences do not split over 3 ranks of 2";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.global_batch=16 must be a multiple of"), std::string::npos);
  }
  c.parallel.dp = 3;
  try {
    mesh_shape(c, 2);
    ADD_FAILURE() << "dp 3 on 2 ranks";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "parallel.dp=3 x parallel.pp=1 needs 3 ranks, mpirun started 2");
  }
  Config plain;  // no global batch: grad_accum per rank
  plain.train.grad_accum = 3;
  EXPECT_EQ(accumulation_steps(plain.train, 8), 3);
}

TEST(Config, PipelineMicroBatchesAndSchedule) {
  Config c = load_config_text("train:\n  micro_batch_size: 2\n  global_batch: 16\nparallel:\n  microbatches: 4\n", "x.yaml", {});
  EXPECT_EQ(accumulation_steps(c, 2), 4);  // 16 / (2 x 2): they agree
  try {
    accumulation_steps(c, 1);
    ADD_FAILURE() << "8 micro-batches from global_batch, 4 from parallel.microbatches";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.microbatches=4 disagrees with train.global_batch=16"), std::string::npos);
  }
  Config m = load_config_text("parallel:\n  microbatches: 6\n  schedule: dualpipe\n", "x.yaml", {});
  EXPECT_EQ(accumulation_steps(m, 1), 6);
  EXPECT_EQ(step_schedule(m, 1, 6).name, "1f1b");  // pp 1: the trivial schedule, whatever is configured
  EXPECT_EQ(step_schedule(m, 2, 6).name, "dualpipe");
  try {
    step_schedule(m, 4, 6);
    ADD_FAILURE() << "dualpipe with pp 4 needs 8 micro-batches";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("at least 8 micro-batches"), std::string::npos) << e.what();
  }
  try {
    step_schedule(m, 2, 9000);
    ADD_FAILURE() << "9000 micro-batches x 2 stages overflow the message tags";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.microbatches: at most 8192"), std::string::npos) << e.what();
  }
}

TEST(Config, SetOverridesAreTypeChecked) {
  const Config c = load_config_text("train:\n  steps: 10\n", "x.yaml", {"train.steps=20", "optim.no_decay=[norm,head]", "log.run_dir=\"a b\""});
  EXPECT_EQ(c.train.steps, 20);
  EXPECT_EQ(c.optim.no_decay, (std::vector<std::string>{"norm", "head"}));
  EXPECT_EQ(c.log.run_dir, "a b");
  EXPECT_EQ(error_of("", {"optim.lr=abc"}), "--set optim.lr=abc: optim.lr: expected a positive number, got \"abc\"");
  EXPECT_EQ(error_of("", {"train.stesp=3"}), "--set train.stesp=3: train.stesp: unknown key; did you mean train.steps?");
  // Too far for a typo, but the right name in another section or cut short.
  EXPECT_EQ(error_of("", {"run.dir=x"}), "--set run.dir=x: run.dir: unknown key; did you mean log.run_dir?");
  EXPECT_EQ(error_of("", {"optim.warmup=3"}),
            "--set optim.warmup=3: optim.warmup: unknown key; did you mean optim.warmup_steps?");
  EXPECT_EQ(error_of("", {"train.warmup_steps=3"}),
            "--set train.warmup_steps=3: train.warmup_steps: unknown key; did you mean optim.warmup_steps?");
  EXPECT_EQ(error_of("", {"train.qqqqq=3"}), "--set train.qqqqq=3: train.qqqqq: unknown key");
  EXPECT_EQ(error_of("", {"train.steps"}), "--set train.steps: expected key.path=value");
  EXPECT_EQ(error_of("", {"parallel.stage_layers=1,,2"}),
            "--set parallel.stage_layers=1,,2: parallel.stage_layers: expected a list of non-negative integers, got an "
            "empty item in \"1,,2\"");
  EXPECT_EQ(error_of("", {"parallel.stage_layers=[]"}), "");
  EXPECT_NE(error_of("", {"model.n_heads=3"}).find("--set model.n_heads=3: model.n_heads: must divide"), std::string::npos);
}

TEST(Config, LaterFilesOverrideEarlier) {
  const auto base = write_temp("base.yaml", "train:\n  steps: 10\n  seed: 7\nmodel:\n  d_model: 64\n");
  const auto exp = write_temp("exp.yaml", "train:\n  steps: 30\n");
  const Config c = load_config({base, exp}, {"train.seed=9"});
  EXPECT_EQ(c.train.steps, 30);     // from exp
  EXPECT_EQ(c.model.d_model, 64);   // from base
  EXPECT_EQ(c.train.seed, 9);       // from --set
  EXPECT_EQ(c.name, "shoestring_test_exp");
  try {
    load_config({"/nonexistent/x.yaml"}, {});
    FAIL() << "missing file must throw";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "/nonexistent/x.yaml: cannot read config file (missing or unreadable)");
  }
}

TEST(Config, PrintedYamlReadsBackToTheSameConfig) {
  const Config a = load_config_text("optim:\n  lr: 3.3e-4\n  no_decay: []\nmodel:\n  tie_embeddings: true\n", "x.yaml");
  const std::string yaml = shoestring::to_yaml(a);
  const Config b = load_config_text(yaml, "printed.yaml");
  EXPECT_EQ(shoestring::to_yaml(b), yaml);
  EXPECT_EQ(b.optim.lr, 3.3e-4);  // exact: floats print with round-trip precision
  EXPECT_TRUE(b.optim.no_decay.empty());
}

TEST(Config, EveryShippedConfigLoads) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(SHOESTRING_SOURCE_DIR "/configs")) {
    if (e.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW(load_config({e.path().string()}, {})) << e.path();
    ++n;
  }
  EXPECT_GE(n, 1);
}

TEST(Config, DidYouMeanStaysQuietForFarWords) {
  EXPECT_EQ(shoestring::closest_key("zzzzzzzz", {"model", "train"}), "");
  EXPECT_EQ(shoestring::closest_key("trian", {"model", "train"}), "train");
}

}  // namespace
