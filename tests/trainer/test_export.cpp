// `shoestring ckpt export --format safetensors`: the file is read back by the small safetensors
// reader below (written from the format's description, sharing no code with the exporter), and
// names, shapes, dtypes, bytes and config.json are checked against the documented mapping and the
// trained parameters.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include "tests/run_cli.h"
#include "tests/run_files.h"
#include "trainer/checkpoint/export_safetensors.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

using namespace shoestring;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) { return shoestring::testing::fresh_dir("shoestring_export", name); }

struct StTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// An independent safetensors reader: u64 little-endian header length, JSON header, raw bytes.
struct StFile {
  uint64_t header_len = 0, file_size = 0;
  std::map<std::string, StTensor> tensors;
  YAML::Node metadata;
  std::string data;  // everything after the header

  explicit StFile(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    file_size = all.size();
    if (all.size() < 8) throw std::runtime_error("short file");
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(all[size_t(i)]);
    if (8 + header_len > all.size()) throw std::runtime_error("header past the end");
    const YAML::Node h = YAML::Load(all.substr(8, header_len));  // JSON is YAML
    for (const auto& kv : h) {
      const std::string name = kv.first.as<std::string>();
      if (name == "__metadata__") {
        metadata = kv.second;
        continue;
      }
      StTensor t;
      t.dtype = kv.second["dtype"].as<std::string>();
      t.shape = kv.second["shape"].as<std::vector<int64_t>>();
      t.begin = kv.second["data_offsets"][0].as<uint64_t>();
      t.end = kv.second["data_offsets"][1].as<uint64_t>();
      tensors[name] = t;
    }
    data = all.substr(8 + header_len);
  }

  // The tensor as float32 (F32 copied, BF16 widened: the top 16 bits of a float32).
  at::Tensor get(const std::string& name) const {
    const StTensor& t = tensors.at(name);
    const char* p = data.data() + t.begin;
    const int64_t n = int64_t(t.end - t.begin) / (t.dtype == "F32" ? 4 : 2);
    std::vector<float> v(size_t(n), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits = 0;
      if (t.dtype == "F32") std::memcpy(&bits, p + 4 * i, 4);
      else bits = uint32_t(static_cast<unsigned char>(p[2 * i]) | static_cast<unsigned char>(p[2 * i + 1]) << 8) << 16;
      std::memcpy(&v[size_t(i)], &bits, 4);
    }
    return at::tensor(v).view(t.shape);
  }
};

// Every tensor's bytes lie back to back from 0 to the end of the file, sized by dtype and shape.
void expect_contiguous(const StFile& f) {
  EXPECT_EQ(f.header_len % 8, 0u);
  std::vector<StTensor> ts;
  for (const auto& [name, t] : f.tensors) ts.push_back(t);
  std::sort(ts.begin(), ts.end(), [](const StTensor& a, const StTensor& b) { return a.begin < b.begin; });
  uint64_t at = 0;
  for (const auto& t : ts) {
    EXPECT_EQ(t.begin, at);
    uint64_t numel = 1;
    for (auto d : t.shape) numel *= uint64_t(d);
    EXPECT_EQ(t.end - t.begin, numel * (t.dtype == "F32" ? 4 : 2));
    at = t.end;
  }
  EXPECT_EQ(8 + f.header_len + at, f.file_size);
}

std::map<std::string, at::Tensor> by_name(const TrainSummary& s) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [name, p] : s.parameters) m[name] = p.detach().to(at::kFloat);
  return m;
}

std::vector<std::string> common_sets(const fs::path& dir) {
  return {"data.source=synthetic", "model.vocab_size=64", "data.eval_interval=0", "model.d_model=32",
          "model.intermediate_size=64", "train.seq_len=16", "train.micro_batch_size=4", "train.steps=2",
          "train.threads=1", "optim.warmup_steps=1", "log.progress=off", "log.every=1000",
          "log.run_dir=" + dir.string(), "checkpoint.interval=2"};
}

Config tiny_moe(const fs::path& dir) {
  auto sets = common_sets(dir);
  for (const char* s : {"model.kv_lora_rank=16", "model.moe_intermediate_size=16", "train.router_bias_gamma=0.01"})
    sets.push_back(s);
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, sets);
}

Config tiny_gqa(const fs::path& dir) {
  return load_config({SHOESTRING_SOURCE_DIR "/configs/tiny.yaml"}, common_sets(dir));
}

TrainSummary train_keeping(const Config& c) {
  TrainOptions o;
  o.keep_parameters = true;
  return train(c, parallel::World{}, o);
}

std::string step2(const fs::path& run) { return (run / "checkpoints" / ckpt::step_dir_name(2)).string(); }

}  // namespace

TEST(Export, TinyMoeHasDeepseekV3NamesShapesAndTheTrainedValues) {
  const fs::path run = fresh_dir("moe"), out = fresh_dir("moe_out");
  const Config c = tiny_moe(run);
  const TrainSummary s = train_keeping(c);
  ASSERT_EQ(s.steps, 2);
  ckpt::export_safetensors(step2(run), out.string());
  const StFile f(out / "model.safetensors");
  expect_contiguous(f);
  EXPECT_EQ(f.metadata["format"].as<std::string>(), "pt");

  // The expected names and shapes, written out from docs/checkpoints.md's table.
  const auto& m = c.model;
  const int64_t d = m.d_model, H = m.n_heads, E = m.n_routed_experts, hm = m.moe_intermediate_size;
  ASSERT_EQ(m.q_lora_rank, 0);
  std::map<std::string, std::vector<int64_t>> want = {{"model.embed_tokens.weight", {m.vocab_size, d}},
                                                      {"model.norm.weight", {d}},
                                                      {"lm_head.weight", {m.vocab_size, d}}};
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string L = "model.layers." + std::to_string(i) + ".";
    want[L + "input_layernorm.weight"] = {d};
    want[L + "post_attention_layernorm.weight"] = {d};
    want[L + "self_attn.q_proj.weight"] = {H * (m.qk_nope_head_dim + m.qk_rope_head_dim), d};
    want[L + "self_attn.kv_a_proj_with_mqa.weight"] = {m.kv_lora_rank + m.qk_rope_head_dim, d};
    want[L + "self_attn.kv_a_layernorm.weight"] = {m.kv_lora_rank};
    want[L + "self_attn.kv_b_proj.weight"] = {H * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank};
    want[L + "self_attn.o_proj.weight"] = {d, H * m.v_head_dim};
    if (i < m.n_dense_layers) {
      want[L + "mlp.gate_proj.weight"] = {m.intermediate_size, d};
      want[L + "mlp.up_proj.weight"] = {m.intermediate_size, d};
      want[L + "mlp.down_proj.weight"] = {d, m.intermediate_size};
      continue;
    }
    want[L + "mlp.gate.weight"] = {E, d};
    want[L + "mlp.gate.e_score_correction_bias"] = {E};
    for (int64_t j = 0; j < E; ++j) {
      const std::string X = L + "mlp.experts." + std::to_string(j) + ".";
      want[X + "gate_proj.weight"] = {hm, d};
      want[X + "up_proj.weight"] = {hm, d};
      want[X + "down_proj.weight"] = {d, hm};
    }
    const int64_t hs = m.n_shared_experts * hm;
    want[L + "mlp.shared_experts.gate_proj.weight"] = {hs, d};
    want[L + "mlp.shared_experts.up_proj.weight"] = {hs, d};
    want[L + "mlp.shared_experts.down_proj.weight"] = {d, hs};
  }
  ASSERT_GT(m.mtp_depth, 0);  // the checkpoint holds an MTP module, and it must be dropped
  EXPECT_EQ(f.tensors.size(), want.size());
  for (const auto& [name, shape] : want) {
    auto it = f.tensors.find(name);
    ASSERT_NE(it, f.tensors.end()) << name;
    EXPECT_EQ(it->second.shape, shape) << name;
    EXPECT_EQ(it->second.dtype, "F32") << name;
  }
  for (const auto& [name, t] : f.tensors) {
    EXPECT_EQ(name.find("mtp"), std::string::npos) << name;
    EXPECT_EQ(name.find("adam"), std::string::npos) << name;
  }

  // Values: bit-equal to the trained parameters (the checkpoint is of the last step).
  auto p = by_name(s);
  const std::string moe = "blocks." + std::to_string(m.n_dense_layers) + ".moe.";
  const std::string L = "model.layers." + std::to_string(m.n_dense_layers) + ".mlp.";
  for (int64_t j = 0; j < E; ++j) {
    const std::string X = L + "experts." + std::to_string(j) + ".";
    EXPECT_TRUE(at::equal(f.get(X + "gate_proj.weight"), p.at(moe + "w1")[j])) << j;
    EXPECT_TRUE(at::equal(f.get(X + "up_proj.weight"), p.at(moe + "w3")[j])) << j;
    EXPECT_TRUE(at::equal(f.get(X + "down_proj.weight"), p.at(moe + "w2")[j])) << j;
  }
  EXPECT_FALSE(at::equal(f.get(L + "experts.0.gate_proj.weight"), f.get(L + "experts.1.gate_proj.weight")));
  EXPECT_TRUE(at::equal(f.get(L + "gate.weight"), p.at(moe + "router.weight")));
  EXPECT_TRUE(at::equal(f.get(L + "shared_experts.down_proj.weight"), p.at(moe + "shared.w2")));
  ASSERT_FALSE(s.router_biases.empty());
  const at::Tensor bias = s.router_biases[0].to(at::kFloat);
  EXPECT_GT(bias.abs().max().item<float>(), 0.0f);  // the biases moved: a zero export would fail
  EXPECT_TRUE(at::equal(f.get(L + "gate.e_score_correction_bias"), bias));
  EXPECT_TRUE(at::equal(f.get("model.embed_tokens.weight"), p.at("tok_embed")));
  EXPECT_TRUE(at::equal(f.get("lm_head.weight"), p.at("head")));
  EXPECT_TRUE(at::equal(f.get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), p.at("blocks.0.attn.wkv_a")));
  EXPECT_TRUE(at::equal(f.get("model.layers.0.mlp.down_proj.weight"), p.at("blocks.0.mlp.w2")));

  // config.json (JSON is YAML).
  const YAML::Node j = YAML::LoadFile((out / "config.json").string());
  EXPECT_EQ(j["model_type"].as<std::string>(), "deepseek_v3");
  EXPECT_EQ(j["hidden_size"].as<int64_t>(), d);
  EXPECT_EQ(j["num_hidden_layers"].as<int64_t>(), m.n_layers);
  EXPECT_EQ(j["num_attention_heads"].as<int64_t>(), H);
  EXPECT_TRUE(j["q_lora_rank"].IsNull());
  EXPECT_EQ(j["kv_lora_rank"].as<int64_t>(), 16);
  EXPECT_EQ(j["qk_nope_head_dim"].as<int64_t>(), m.qk_nope_head_dim);
  EXPECT_EQ(j["qk_rope_head_dim"].as<int64_t>(), m.qk_rope_head_dim);
  EXPECT_EQ(j["v_head_dim"].as<int64_t>(), m.v_head_dim);
  EXPECT_EQ(j["n_routed_experts"].as<int64_t>(), E);
  EXPECT_EQ(j["n_shared_experts"].as<int64_t>(), m.n_shared_experts);
  EXPECT_EQ(j["num_experts_per_tok"].as<int64_t>(), m.n_activated_experts);
  EXPECT_EQ(j["moe_intermediate_size"].as<int64_t>(), 16);
  EXPECT_EQ(j["intermediate_size"].as<int64_t>(), 64);
  EXPECT_EQ(j["first_k_dense_replace"].as<int64_t>(), m.n_dense_layers);
  EXPECT_EQ(j["n_group"].as<int64_t>(), m.n_expert_groups);
  EXPECT_EQ(j["topk_group"].as<int64_t>(), m.n_limited_groups);
  EXPECT_EQ(j["routed_scaling_factor"].as<double>(), m.route_scale);
  EXPECT_TRUE(j["norm_topk_prob"].as<bool>());
  EXPECT_EQ(j["scoring_func"].as<std::string>(), "sigmoid");
  EXPECT_EQ(j["topk_method"].as<std::string>(), "noaux_tc");
  EXPECT_EQ(j["vocab_size"].as<int64_t>(), 64);
  EXPECT_EQ(j["max_position_embeddings"].as<int64_t>(), m.max_seq_len);
  EXPECT_EQ(j["rope_theta"].as<double>(), m.rope_theta);
  EXPECT_EQ(j["rms_norm_eps"].as<double>(), m.norm_eps);
  EXPECT_FALSE(j["tie_word_embeddings"].as<bool>());
  EXPECT_TRUE(j["rope_interleave"].as<bool>());
  EXPECT_EQ(j["num_nextn_predict_layers"].as<int64_t>(), 0);
}

TEST(Export, DenseGqaHasLlamaNamesWithRopeRowsInHalfSplitOrder) {
  const fs::path run = fresh_dir("gqa"), out = fresh_dir("gqa_out"), out16 = fresh_dir("gqa_bf16");
  const Config c = tiny_gqa(run);
  const auto& m = c.model;
  ASSERT_EQ(m.attention, "gqa");
  ASSERT_LT(m.n_kv_heads, m.n_heads);
  const TrainSummary s = train_keeping(c);
  ckpt::export_safetensors(step2(run), out.string());
  const StFile f(out / "model.safetensors");
  expect_contiguous(f);
  const int64_t d = m.d_model, hd = d / m.n_heads;
  EXPECT_EQ(f.tensors.size(), 3u + 9u * size_t(m.n_layers));
  EXPECT_EQ(f.tensors.at("model.layers.1.self_attn.k_proj.weight").shape, (std::vector<int64_t>{m.n_kv_heads * hd, d}));
  EXPECT_EQ(f.tensors.at("model.layers.1.mlp.up_proj.weight").shape, (std::vector<int64_t>{m.intermediate_size, d}));
  auto p = by_name(s);
  // HF Llama's rotate_half pairs row i with i + hd/2 of each head; ours pairs 2i with 2i + 1.
  for (const auto& [hf, ours, heads] : {std::tuple{"q_proj", "wq", m.n_heads}, std::tuple{"k_proj", "wk", m.n_kv_heads}}) {
    const at::Tensor got = f.get(std::string("model.layers.1.self_attn.") + hf + ".weight");
    const at::Tensor w = p.at(std::string("blocks.1.attn.") + ours);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i)
        for (int64_t c2 = 0; c2 < 2; ++c2)
          ASSERT_TRUE(at::equal(got[h * hd + c2 * hd / 2 + i], w[h * hd + 2 * i + c2])) << hf << " " << h << " " << i;
  }
  EXPECT_TRUE(at::equal(f.get("model.layers.1.self_attn.v_proj.weight"), p.at("blocks.1.attn.wv")));
  EXPECT_TRUE(at::equal(f.get("model.layers.0.mlp.gate_proj.weight"), p.at("blocks.0.mlp.w1")));
  const YAML::Node j = YAML::LoadFile((out / "config.json").string());
  EXPECT_EQ(j["model_type"].as<std::string>(), "llama");
  EXPECT_EQ(j["num_key_value_heads"].as<int64_t>(), m.n_kv_heads);
  EXPECT_EQ(j["head_dim"].as<int64_t>(), hd);
  EXPECT_FALSE(j["n_routed_experts"]);

  // --dtype bf16: the same names, BF16, values rounded from the float32 ones.
  ckpt::export_safetensors(step2(run), out16.string(), "bf16");
  const StFile g(out16 / "model.safetensors");
  expect_contiguous(g);
  EXPECT_EQ(g.tensors.size(), f.tensors.size());
  EXPECT_EQ(g.tensors.at("model.embed_tokens.weight").dtype, "BF16");
  EXPECT_TRUE(at::equal(g.get("model.embed_tokens.weight"), p.at("tok_embed").to(at::kBFloat16).to(at::kFloat)));
  EXPECT_EQ(YAML::LoadFile((out16 / "config.json").string())["torch_dtype"].as<std::string>(), "bfloat16");
}

TEST(Export, CliErrorsAreOneLineWithExitCodes) {
  using shoestring::testing::run_shoestring;
  const fs::path run = fresh_dir("cli"), out = fresh_dir("cli_out");
  train(tiny_gqa(run), parallel::World{});
  const std::string ck = step2(run);
  auto one_line = [](const std::string& s) { return std::count(s.begin(), s.end(), '\n') == 1; };

  auto r = run_shoestring("ckpt export " + ck + " --format safetensors --out " + out.string());
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out / "model.safetensors") && fs::exists(out / "config.json"));
  EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 2);  // no temporary left

  r = run_shoestring("ckpt export " + (run / "nope").string() + " --format safetensors --out " + out.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output) && r.output.find("checkpoint error") != std::string::npos) << r.output;

  r = run_shoestring("ckpt export " + ck + " --format gguf --out " + out.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output) && r.output.find("gguf") != std::string::npos) << r.output;

  r = run_shoestring("ckpt export " + ck + " --format safetensors");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output)) << r.output;

  r = run_shoestring("ckpt export " + ck + " --format safetensors --out " + out.string() + " --dtype fp8");
  EXPECT_EQ(r.code, 2) << r.output;

  // Unwritable: OUTDIR below a regular file (root ignores permission bits, not this).
  r = run_shoestring("ckpt export " + ck + " --format safetensors --out " + ck + "/manifest.json/x");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(one_line(r.output) && r.output.find("manifest.json/x") != std::string::npos) << r.output;

  // A corrupt checkpoint is refused before any weight is exported.
  fs::resize_file(ck + "/rank_00000.h5", fs::file_size(ck + "/rank_00000.h5") - 1);
  const fs::path out2 = fresh_dir("cli_out2");
  r = run_shoestring("ckpt export " + ck + " --format safetensors --out " + out2.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output) && r.output.find("rank_00000.h5") != std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out2 / "model.safetensors"));
}

// An existing export is not replaced silently (it was): refused with one line naming the files,
// exit 2, unless --force; a directory in a file's place is refused even then.
TEST(Export, ExistingOutputIsReplacedOnlyWithForce) {
  using shoestring::testing::run_shoestring;
  const fs::path run = fresh_dir("force"), out = fresh_dir("force_out");
  train(tiny_gqa(run), parallel::World{});
  const std::string cmd = "ckpt export " + step2(run) + " --format safetensors --out " + out.string();
  ASSERT_EQ(run_shoestring(cmd).code, 0);
  std::ofstream(out / "config.json", std::ios::trunc) << "mine";
  auto r = run_shoestring(cmd);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_EQ(r.output, "shoestring ckpt export: " + (out / "model.safetensors").string() + ", " +
                          (out / "config.json").string() +
                          " already exist(s); choose another --out or pass --force to replace\n");
  EXPECT_EQ(shoestring::testing::read_file(out / "config.json"), "mine");
  r = run_shoestring(cmd + " --force");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(shoestring::testing::read_file(out / "config.json").find("\"model_type\": \"llama\""), std::string::npos);
  fs::remove(out / "config.json");
  fs::create_directories(out / "config.json" / "inside");
  r = run_shoestring(cmd + " --force");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find((out / "config.json").string() + ": is a directory, expected a file"), std::string::npos)
      << r.output;
  EXPECT_TRUE(fs::is_directory(out / "config.json" / "inside"));
  for (const auto& d : {run, out}) fs::remove_all(d);
}

// A failed export removes what it wrote (it left model.safetensors.tmp, and an OUTDIR it had
// created) and nothing that was there before.
TEST(Export, AFailedExportRemovesOnlyWhatItCreated) {
  using shoestring::testing::run_shoestring;
  const fs::path run = fresh_dir("fail"), out = fresh_dir("fail_out");
  train(tiny_gqa(run), parallel::World{});
  // Fails at the last step, renaming config.json onto a directory (the CLI refuses that earlier).
  fs::create_directories(out / "config.json" / "inside");
  EXPECT_THROW(ckpt::export_safetensors(step2(run), out.string()), std::runtime_error);
  EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 1);
  EXPECT_TRUE(fs::is_directory(out / "config.json" / "inside"));
  // A config whose head count does not fit the stored k rows (the manifest is not checksummed):
  // it failed in a LibTorch view halfway through the file (exit 1, no path); now a checkpoint
  // error before anything is written.
  const fs::path bad = run / "bad";
  fs::copy(step2(run), bad, fs::copy_options::recursive);
  std::string m = shoestring::testing::read_file(bad / "manifest.json");
  for (const std::string key : {"n_heads: ", "n_kv_heads: "}) m.replace(m.find(key), key.size() + 1, key + "16");
  std::ofstream(bad / "manifest.json", std::ios::trunc) << m;
  const fs::path fresh = out / "new" / "dir";
  const auto r = run_shoestring("ckpt export " + bad.string() + " --format safetensors --out " + fresh.string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find(bad.string() + ": tensor param/blocks.0.attn.wk has 16 rows"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out / "new"));
  for (const auto& d : {run, out}) fs::remove_all(d);
}

TEST(Export, CompressedQueriesAndTiedEmbeddings) {
  const fs::path run = fresh_dir("qlora"), out = fresh_dir("qlora_out");
  auto sets = common_sets(run);
  for (const char* s : {"model.kv_lora_rank=16", "model.moe_intermediate_size=16", "model.q_lora_rank=8",
                        "model.tie_embeddings=true"})
    sets.push_back(s);
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, sets);
  const TrainSummary s = train_keeping(c);
  ckpt::export_safetensors(step2(run), out.string());
  const StFile f(out / "model.safetensors");
  expect_contiguous(f);
  const auto& m = c.model;
  const std::string A = "model.layers.2.self_attn.";
  EXPECT_EQ(f.tensors.at(A + "q_a_proj.weight").shape, (std::vector<int64_t>{8, m.d_model}));
  EXPECT_EQ(f.tensors.at(A + "q_a_layernorm.weight").shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(f.tensors.at(A + "q_b_proj.weight").shape,
            (std::vector<int64_t>{m.n_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim), 8}));
  EXPECT_TRUE(at::equal(f.get(A + "q_b_proj.weight"), by_name(s).at("blocks.2.attn.wq_b")));
  EXPECT_EQ(f.tensors.count(A + "q_proj.weight"), 0u);
  EXPECT_EQ(f.tensors.count("lm_head.weight"), 0u);
  const YAML::Node j = YAML::LoadFile((out / "config.json").string());
  EXPECT_EQ(j["q_lora_rank"].as<int64_t>(), 8);
  EXPECT_TRUE(j["tie_word_embeddings"].as<bool>());
}

// HF DeepseekV3 always has shared experts; without ours the export holds them with no rows, so
// that transformers finds every weight it builds (tests/reference/test_hf_export.cpp loads it).
TEST(Export, MoeWithoutSharedExpertsGetsEmptySharedExperts) {
  const fs::path run = fresh_dir("unshared"), out = fresh_dir("unshared_out");
  auto sets = common_sets(run);
  for (const char* s : {"model.kv_lora_rank=16", "model.moe_intermediate_size=16", "model.n_shared_experts=0"})
    sets.push_back(s);
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, sets);
  train(c, parallel::World{});
  ckpt::export_safetensors(step2(run), out.string());
  const StFile f(out / "model.safetensors");
  expect_contiguous(f);
  const int64_t d = c.model.d_model;
  for (int64_t i = 0; i < c.model.n_layers; ++i) {
    const std::string S = "model.layers." + std::to_string(i) + ".mlp.shared_experts.";
    if (i < c.model.n_dense_layers) {
      EXPECT_EQ(f.tensors.count(S + "gate_proj.weight"), 0u) << i;
      continue;
    }
    for (const auto& [name, shape] : {std::pair{"gate_proj.weight", std::vector<int64_t>{0, d}},
                                      std::pair{"up_proj.weight", std::vector<int64_t>{0, d}},
                                      std::pair{"down_proj.weight", std::vector<int64_t>{d, 0}}}) {
      const auto it = f.tensors.find(S + name);
      ASSERT_NE(it, f.tensors.end()) << S + name;
      EXPECT_EQ(it->second.shape, shape) << S + name;
      EXPECT_EQ(it->second.begin, it->second.end) << S + name;
      EXPECT_EQ(it->second.dtype, "F32") << S + name;
    }
  }
  EXPECT_EQ(YAML::LoadFile((out / "config.json").string())["n_shared_experts"].as<int64_t>(), 0);
}

// One expert per group: limiting groups is then no limit, written as HF's single group (HF
// scores groups by their top two experts and cannot take groups of one).
TEST(Export, GroupsOfOneExpertAreOneGroupInConfigJson) {
  ModelConfig m;
  m.attention = "mla";
  m.n_routed_experts = 8;
  m.n_expert_groups = 8;
  m.n_limited_groups = 4;
  YAML::Node j = YAML::Load(ckpt::hf_config_json(m));
  EXPECT_EQ(j["n_group"].as<int64_t>(), 1);
  EXPECT_EQ(j["topk_group"].as<int64_t>(), 1);
  m.n_expert_groups = 4;
  m.n_limited_groups = 2;
  j = YAML::Load(ckpt::hf_config_json(m));
  EXPECT_EQ(j["n_group"].as<int64_t>(), 4);
  EXPECT_EQ(j["topk_group"].as<int64_t>(), 2);
}

TEST(Export, ATensorWithoutARuleIsAnErrorNotDropped) {
  ModelConfig m;
  m.attention = "mla";
  EXPECT_THROW(ckpt::export_plan(m, {"param/blocks.0.attn.new_thing"}, {{4, 4}}), std::runtime_error);
  // The MLA rules do not apply to a GQA model, and MTP/optimizer tensors are dropped.
  m.attention = "gqa";
  EXPECT_THROW(ckpt::export_plan(m, {"param/blocks.0.attn.wkv_a"}, {{4, 4}}), std::runtime_error);
  EXPECT_TRUE(ckpt::export_plan(m, {"param/mtp.0.proj", "adam_m/tok_embed", "buffer/mtp.0.block.moe.router.bias"},
                                {{4, 8}, {4, 4}, {4}})
                  .empty());
}
