// `shoestring ckpt export --format safetensors` loaded into Hugging Face transformers computes our
// model's function: each case trains a tiny model for two steps, checkpoints it, exports the
// checkpoint, rebuilds our model from the same checkpoint, runs it forward on a random batch and
// writes tokens and logits (tensor_exchange.h); tests/reference/check_hf_export.py loads the
// export with AutoModelForCausalLM and compares its logits (tolerance and why: that file).
//
// transformers is not among the project's dependencies (its wheels are too large for CI, see
// docs/checkpoints.md), so this test is run by hand with a PYTHONPATH that holds it, and skips,
// saying so, where Python cannot import it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/reference/tensor_exchange.h"
#include "tests/run_files.h"
#include "trainer/checkpoint/export_safetensors.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/config_loader.h"
#include "trainer/model/transformer.h"
#include "trainer/train.h"

using namespace shoestring;
using namespace shoestring::testing;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> common_sets(const fs::path& run) {
  return {"data.source=synthetic", "data.eval_interval=0", "train.seq_len=16", "train.micro_batch_size=4",
          "train.steps=2", "train.threads=1", "optim.warmup_steps=1", "log.progress=off", "log.every=1000",
          "log.run_dir=" + run.string(), "checkpoint.interval=2"};
}

// Our model rebuilt from the checkpoint alone: every parameter and buffer read back by name.
model::Transformer from_checkpoint(const std::string& dir) {
  ckpt::CheckpointReader reader(dir);
  const Config cfg = load_config_text(reader.manifest().config_yaml, dir + "/manifest.json config");
  model::Transformer net(cfg.model, at::kFloat);
  at::NoGradGuard no_grad;
  auto fill = [&](const std::string& name, at::Tensor t) {
    reader.read(name, t.sizes().vec(), 0, t.view({-1}));
  };
  for (const auto& p : net->named_parameters()) fill("param/" + p.key(), p.value());
  for (const auto& b : net->named_buffers()) fill("buffer/" + b.key(), b.value());
  return net;
}

// A config.json edit that changes the function HF computes, to show the comparison catches it.
struct Mutation {
  std::string from, to;
};

// Trains `config` with `sets` for two steps, exports step 2, and has transformers check it; then
// checks that the export with `wrong` applied to its config.json fails the comparison.
void check(const std::string& name, const std::string& config, std::vector<std::string> sets, const Mutation& wrong) {
  const fs::path run = fresh_dir("shoestring_hf", name), out = fresh_dir("shoestring_hf", name + "_export"),
                 xchg = fresh_dir("shoestring_hf", name + "_exchange");
  for (const auto& s : common_sets(run)) sets.push_back(s);
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/" + config}, sets);
  at::set_num_threads(1);
  ASSERT_EQ(train(c, parallel::World{}).steps, 2);
  const std::string ck = (run / "checkpoints" / ckpt::step_dir_name(2)).string();
  ckpt::export_safetensors(ck, out.string());

  model::Transformer net = from_checkpoint(ck);
  at::manual_seed(7);
  const at::Tensor tokens = at::randint(c.model.vocab_size, {2, c.train.seq_len}, at::TensorOptions().dtype(at::kLong));
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = net->forward(tokens);
  }
  {
    TensorWriter w(xchg);
    w.add("input.tokens", tokens);
    w.add("output.logits", logits);
  }
  const std::string args = " " + shell_quoted(xchg.string());
  const PythonRun py = run_python("check_hf_export.py", shell_quoted(out.string()) + args);
  if (py.rc == 3 || py.rc == 127)
    GTEST_SKIP() << (py.rc == 127 ? "no python3" : line_starting(py.log, "check_hf_export.py"))
                 << "; transformers is installed by hand for this test (docs/checkpoints.md)";
  EXPECT_EQ(py.rc, 0) << py.log;
  std::cout << "  " << name << ": " << py.log;

  const fs::path bad = fresh_dir("shoestring_hf", name + "_wrong");
  fs::copy(out, bad);
  std::string text;
  {
    std::ifstream in(bad / "config.json");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const size_t at = text.find(wrong.from);
  ASSERT_NE(at, std::string::npos) << wrong.from << " not in config.json:\n" << text;
  std::ofstream(bad / "config.json", std::ios::trunc) << text.replace(at, wrong.from.size(), wrong.to);
  const PythonRun caught = run_python("check_hf_export.py", shell_quoted(bad.string()) + args);
  EXPECT_EQ(caught.rc, 1) << "config.json with " << wrong.to << " should not match:\n" << caught.log;
  std::cout << "  " << name << " with " << wrong.to << ": " << caught.log;
  if (py.rc == 0 && caught.rc == 1)
    for (const fs::path& d : {run, out, xchg, bad}) fs::remove_all(d);
}

}  // namespace

// DeepSeek-V3: MLA with compressed queries, a dense first layer, shared + routed experts,
// group-limited routing that excludes a group, a route scale, trained router biases (so the
// bias changes the choice) and an MTP module (dropped by the export).
TEST(HfExport, MlaMoeLoadsAsDeepseekV3AndMatchesOurLogits) {
  check("mla_moe", "configs/tiny-moe.yaml",
        {"model.q_lora_rank=16", "model.n_shared_experts=2", "model.n_limited_groups=1", "model.route_scale=2.5",
         "train.router_bias_gamma=0.01"},
        {"\"rope_interleave\": true", "\"rope_interleave\": false"});
}

// No shared experts: HF's are exported with no rows (they add nothing); top-1 routing over four
// groups of two experts, two of them allowed.
TEST(HfExport, MlaMoeWithoutSharedExpertsMatchesOurLogits) {
  check("mla_moe_unshared", "configs/tiny-moe.yaml",
        {"model.n_shared_experts=0", "model.n_expert_groups=4", "model.n_limited_groups=2",
         "model.n_activated_experts=1", "train.router_bias_gamma=0.01"},
        {"\"topk_group\": 2", "\"topk_group\": 4"});
}

// Eight groups of one expert, four allowed: exported as one group (export_safetensors.cpp).
TEST(HfExport, MlaMoeWithGroupsOfOneExpertMatchesOurLogits) {
  check("mla_moe_groups_of_one", "configs/tiny-moe.yaml",
        {"model.n_expert_groups=8", "model.n_limited_groups=4", "train.router_bias_gamma=0.01"},
        {"\"routed_scaling_factor\": 1.0", "\"routed_scaling_factor\": 2.0"});
}

// MLA without MoE layers and with tied embeddings: DeepseekV3 with every layer dense, no lm_head.
TEST(HfExport, MlaDenseTiedLoadsAsDeepseekV3AndMatchesOurLogits) {
  check("mla_dense_tied", "configs/tiny-moe.yaml",
        {"model.n_routed_experts=0", "model.mtp_depth=0", "model.tie_embeddings=true"},
        {"\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 0.1"});
}

// GQA (fewer kv heads than query heads): Llama, with the rotary rows permuted by the export.
TEST(HfExport, GqaLoadsAsLlamaAndMatchesOurLogits) {
  check("gqa", "configs/tiny.yaml", {}, {"\"rope_theta\": 10000.0", "\"rope_theta\": 500000.0"});
}

TEST(HfExport, GqaOneKvHeadTiedLoadsAsLlamaAndMatchesOurLogits) {
  check("gqa_tied", "configs/tiny.yaml", {"model.n_kv_heads=1", "model.tie_embeddings=true"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"});
}
