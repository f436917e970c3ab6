#include "trainer/checkpoint/export_safetensors.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "trainer/checkpoint/manifest.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/config_loader.h"

namespace shoestring::ckpt {

namespace {

namespace fs = std::filesystem;

enum class Split { None, Experts, RopeQ, RopeK };

// The whole mapping, ours -> Hugging Face. `only` limits a rule to one attention kind, because
// both kinds name their query projection attn.wq. $1 is the layer; {j} the expert of a stacked
// [E, ...] tensor. Layouts checked against HF's modeling code, and the loaded export's logits
// against ours by tests/reference/test_hf_export.cpp (run by hand, docs/checkpoints.md):
//  - MLA: wq/wq_b rows are per head [nope, rope], wkv_a rows [latent, rope], wkv_b rows per head
//    [k_nope, v], exactly HF's splits; our rotary is interleaved (pairs 2i, 2i+1), which HF
//    DeepseekV3 applies with rope_interleave = true (written to config.json), so no permutation.
//  - GQA: HF Llama rotates half-split pairs (i, i + d/2): q and k rows are permuted per head
//    (RopeQ/RopeK), the permutation of HF's convert_llama_weights_to_hf, which leaves q.k intact.
struct Rule {
  const char* ours;
  const char* hf;
  const char* only;  // "", "mla" or "gqa"
  Split split;
};

const Rule kRules[] = {
    {R"(param/tok_embed)", "model.embed_tokens.weight", "", Split::None},
    {R"(param/final_norm\.weight)", "model.norm.weight", "", Split::None},
    {R"(param/head)", "lm_head.weight", "", Split::None},
    {R"(param/blocks\.(\d+)\.attn_norm\.weight)", "model.layers.$1.input_layernorm.weight", "", Split::None},
    {R"(param/blocks\.(\d+)\.mlp_norm\.weight)", "model.layers.$1.post_attention_layernorm.weight", "", Split::None},
    // MLA
    {R"(param/blocks\.(\d+)\.attn\.wq)", "model.layers.$1.self_attn.q_proj.weight", "mla", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.wq_a)", "model.layers.$1.self_attn.q_a_proj.weight", "mla", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.q_norm\.weight)", "model.layers.$1.self_attn.q_a_layernorm.weight", "mla", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.wq_b)", "model.layers.$1.self_attn.q_b_proj.weight", "mla", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.wkv_a)", "model.layers.$1.self_attn.kv_a_proj_with_mqa.weight", "mla", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.kv_norm\.weight)", "model.layers.$1.self_attn.kv_a_layernorm.weight", "mla", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.wkv_b)", "model.layers.$1.self_attn.kv_b_proj.weight", "mla", Split::None},
    // GQA
    {R"(param/blocks\.(\d+)\.attn\.wq)", "model.layers.$1.self_attn.q_proj.weight", "gqa", Split::RopeQ},
    {R"(param/blocks\.(\d+)\.attn\.wk)", "model.layers.$1.self_attn.k_proj.weight", "gqa", Split::RopeK},
    {R"(param/blocks\.(\d+)\.attn\.wv)", "model.layers.$1.self_attn.v_proj.weight", "gqa", Split::None},
    {R"(param/blocks\.(\d+)\.attn\.wo)", "model.layers.$1.self_attn.o_proj.weight", "", Split::None},
    // Dense SwiGLU: w1 gate, w3 up, w2 down (silu(x W1) * x W3) W2.
    {R"(param/blocks\.(\d+)\.mlp\.w1)", "model.layers.$1.mlp.gate_proj.weight", "", Split::None},
    {R"(param/blocks\.(\d+)\.mlp\.w3)", "model.layers.$1.mlp.up_proj.weight", "", Split::None},
    {R"(param/blocks\.(\d+)\.mlp\.w2)", "model.layers.$1.mlp.down_proj.weight", "", Split::None},
    // MoE
    {R"(param/blocks\.(\d+)\.moe\.router\.weight)", "model.layers.$1.mlp.gate.weight", "", Split::None},
    {R"(buffer/blocks\.(\d+)\.moe\.router\.bias)", "model.layers.$1.mlp.gate.e_score_correction_bias", "", Split::None},
    {R"(param/blocks\.(\d+)\.moe\.w1)", "model.layers.$1.mlp.experts.{j}.gate_proj.weight", "", Split::Experts},
    {R"(param/blocks\.(\d+)\.moe\.w3)", "model.layers.$1.mlp.experts.{j}.up_proj.weight", "", Split::Experts},
    {R"(param/blocks\.(\d+)\.moe\.w2)", "model.layers.$1.mlp.experts.{j}.down_proj.weight", "", Split::Experts},
    {R"(param/blocks\.(\d+)\.moe\.shared\.w1)", "model.layers.$1.mlp.shared_experts.gate_proj.weight", "", Split::None},
    {R"(param/blocks\.(\d+)\.moe\.shared\.w3)", "model.layers.$1.mlp.shared_experts.up_proj.weight", "", Split::None},
    {R"(param/blocks\.(\d+)\.moe\.shared\.w2)", "model.layers.$1.mlp.shared_experts.down_proj.weight", "", Split::None},
};

// kRules' patterns, compiled once (big models have thousands of tensors).
const std::regex& rule_regex(size_t k) {
  static const std::vector<std::regex> compiled = [] {
    std::vector<std::regex> v;
    for (const Rule& r : kRules) v.emplace_back(r.ours);
    return v;
  }();
  return compiled[k];
}

bool dropped(const std::string& name) {
  return name.rfind("adam_", 0) == 0 || name.rfind("param/mtp.", 0) == 0 || name.rfind("buffer/mtp.", 0) == 0;
}

std::string fmt(double v) {  // shortest round-trip text, valid JSON for finite values
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

const char* st_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kDouble: return "F64";
    case at::kBFloat16: return "BF16";
    default: throw std::runtime_error("export: unsupported dtype");
  }
}

// Interleaved rotary rows (per head: pair i at rows 2i, 2i+1) to half-split (i, i + hd/2).
at::Tensor rope_to_half_split(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1), hd = rows / heads;
  return w.view({heads, hd / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

}  // namespace

std::vector<ExportTensor> export_plan(const ModelConfig& cfg, const std::vector<std::string>& names,
                                      const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<ExportTensor> out;
  for (size_t n = 0; n < names.size(); ++n) {
    const std::string& name = names[n];
    if (dropped(name)) continue;
    const Rule* hit = nullptr;
    std::smatch m;
    for (size_t k = 0; k < std::size(kRules); ++k) {
      const Rule& r = kRules[k];
      if (*r.only && cfg.attention != r.only) continue;
      if (std::regex_match(name, m, rule_regex(k))) {
        hit = &r;
        break;
      }
    }
    if (!hit) throw std::runtime_error("export: no Hugging Face name for checkpoint tensor " + name);
    const std::string hf = m.format(hit->hf);
    const auto& shape = shapes[n];
    switch (hit->split) {
      case Split::Experts:
        for (int64_t j = 0; j < shape.at(0); ++j) {
          std::string e = hf;
          e.replace(e.find("{j}"), 3, std::to_string(j));
          out.push_back({e, name, j, 0, {shape.begin() + 1, shape.end()}});
        }
        break;
      case Split::RopeQ: out.push_back({hf, name, -1, cfg.n_heads, shape}); break;
      case Split::RopeK: out.push_back({hf, name, -1, cfg.n_kv_heads, shape}); break;
      case Split::None: out.push_back({hf, name, -1, 0, shape}); break;
    }
  }
  // HF DeepseekV3 always builds shared experts, of moe_intermediate_size * n_shared_experts rows:
  // without ours they are [0, d] and [d, 0], which add nothing, and HF loads them only if the file
  // has them (else it reports them missing). They take the router's dtype; no data is read.
  if (cfg.attention == "mla" && cfg.n_routed_experts > 0 && cfg.n_shared_experts == 0) {
    const std::string gate = ".mlp.gate.weight";
    const size_t n = out.size();
    for (size_t k = 0; k < n; ++k) {
      const std::string& hf = out[k].hf_name;
      if (hf.size() < gate.size() || hf.compare(hf.size() - gate.size(), gate.size(), gate) != 0) continue;
      const std::string s = hf.substr(0, hf.size() - gate.size()) + ".mlp.shared_experts.";
      const int64_t d = cfg.d_model;
      const std::string src = out[k].source;
      out.push_back({s + "gate_proj.weight", src, -1, 0, {0, d}});
      out.push_back({s + "up_proj.weight", src, -1, 0, {0, d}});
      out.push_back({s + "down_proj.weight", src, -1, 0, {d, 0}});
    }
  }
  return out;
}

std::string hf_config_json(const ModelConfig& c, const std::string& torch_dtype) {
  const bool mla = c.attention == "mla", moe = c.n_routed_experts > 0;
  std::ostringstream j;
  auto num = [&](const char* k, int64_t v) { j << "  \"" << k << "\": " << v << ",\n"; };
  auto real = [&](const char* k, double v) { j << "  \"" << k << "\": " << fmt(v) << ",\n"; };
  auto str = [&](const char* k, const std::string& v) { j << "  \"" << k << "\": \"" << v << "\",\n"; };
  j << "{\n";
  // A GQA model with MoE has no Hugging Face architecture: it keeps our own model_type.
  const char* type = mla ? "deepseek_v3" : (moe ? "shoestring_gqa_moe" : "llama");
  j << "  \"architectures\": [" << (mla ? "\"DeepseekV3ForCausalLM\"" : moe ? "" : "\"LlamaForCausalLM\"") << "],\n";
  str("model_type", type);
  str("torch_dtype", torch_dtype);
  str("hidden_act", "silu");
  num("vocab_size", c.vocab_size);
  num("hidden_size", c.d_model);
  num("num_hidden_layers", c.n_layers);
  num("num_attention_heads", c.n_heads);
  num("num_key_value_heads", mla ? c.n_heads : c.n_kv_heads);
  num("intermediate_size", c.intermediate_size);
  num("max_position_embeddings", c.max_seq_len);
  real("rope_theta", c.rope_theta);
  real("rms_norm_eps", c.norm_eps);
  j << "  \"tie_word_embeddings\": " << (c.tie_embeddings ? "true" : "false") << ",\n";
  j << "  \"attention_bias\": false,\n  \"mlp_bias\": false,\n";
  if (mla) {
    if (c.q_lora_rank > 0) num("q_lora_rank", c.q_lora_rank);
    else j << "  \"q_lora_rank\": null,\n";
    num("kv_lora_rank", c.kv_lora_rank);
    num("qk_nope_head_dim", c.qk_nope_head_dim);
    num("qk_rope_head_dim", c.qk_rope_head_dim);
    num("v_head_dim", c.v_head_dim);
    num("head_dim", c.qk_rope_head_dim);
    j << "  \"rope_interleave\": true,\n";
  } else {
    num("head_dim", c.d_model / c.n_heads);
  }
  if (mla || moe) {
    // Without routed experts every layer is dense: first_k_dense_replace = all layers.
    num("first_k_dense_replace", moe ? c.n_dense_layers : c.n_layers);
    num("n_routed_experts", c.n_routed_experts);
    num("n_shared_experts", c.n_shared_experts);
    num("num_experts_per_tok", c.n_activated_experts);
    num("moe_intermediate_size", c.moe_intermediate_size);
    // HF scores a group by its top two experts and fails on groups of one. With one expert per
    // group, limiting to the best n_limited_groups (>= top-k, checked at load) picks the same
    // top-k experts as no limit, which HF expresses as a single group.
    const bool single = moe && c.n_routed_experts == c.n_expert_groups;
    num("n_group", single ? 1 : c.n_expert_groups);
    num("topk_group", single ? 1 : c.n_limited_groups);
    real("routed_scaling_factor", c.route_scale);
    j << "  \"norm_topk_prob\": true,\n";
    str("scoring_func", "sigmoid");
    str("topk_method", "noaux_tc");
    num("num_nextn_predict_layers", 0);
  }
  j << "  \"producer\": \"shoestring\"\n}\n";
  return j.str();
}

ExportResult export_safetensors(const std::string& ckpt_dir, const std::string& out_dir, const std::string& dtype) {
  if (!dtype.empty() && dtype != "fp32" && dtype != "bf16")
    throw std::invalid_argument("--dtype must be fp32 or bf16, not '" + dtype + "'");
  const auto problems = verify(ckpt_dir);  // never export weights that fail their checksums
  if (!problems.empty()) throw CheckpointError(problems.front());
  CheckpointReader reader(ckpt_dir);
  const Manifest& man = reader.manifest();
  const Config cfg = load_config_text(man.config_yaml, ckpt_dir + "/manifest.json config");

  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& t : man.tensors) names.push_back(t.name), shapes.push_back(t.shape);
  const auto plan = export_plan(cfg.model, names, shapes);

  auto source_dtype = [&](const std::string& name) { return man.find(name)->dtype == "float64" ? at::kDouble : at::kFloat; };
  auto out_dtype = [&](const ExportTensor& t) {
    return dtype == "bf16" ? at::kBFloat16 : dtype == "fp32" ? at::kFloat : source_dtype(t.source);
  };

  // The config's head counts must fit the stored rows (a manifest's config is not checksummed):
  // found here, not as a LibTorch view error halfway through the file.
  for (const auto& t : plan)
    if (t.rope_heads > 0 && (t.shape.size() != 2 || t.shape[0] % (2 * t.rope_heads) != 0))
      throw CheckpointError(ckpt_dir + ": tensor " + t.source + " has " + std::to_string(t.shape.at(0)) +
                            " rows, not a whole number of heads of even size for the " + std::to_string(t.rope_heads) +
                            " heads its config gives");

  // Header: names in plan order, data laid out contiguously in the same order.
  std::ostringstream h;
  h << "{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"shoestring\",\"step\":\"" << man.step << "\"}";
  uint64_t offset = 0;
  for (const auto& t : plan) {
    int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    const uint64_t bytes = uint64_t(numel) * at::elementSize(out_dtype(t));
    h << ",\"" << t.hf_name << "\":{\"dtype\":\"" << st_dtype(out_dtype(t)) << "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) h << (d ? "," : "") << t.shape[d];
    h << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]}";
    offset += bytes;
  }
  h << "}";
  std::string header = h.str();
  header.append((8 - header.size() % 8) % 8, ' ');  // the data starts 8-byte aligned

  // A failed export removes what it created (the temporary files, OUTDIR and any parents it had to
  // create) and nothing else: docs/checkpoints.md promises that nothing is written before success.
  std::error_code ec;
  fs::path created;  // the outermost directory this call creates; empty when OUTDIR exists
  for (fs::path p = out_dir; !p.empty() && !fs::exists(p, ec) && p != p.parent_path(); p = p.parent_path()) created = p;
  fs::create_directories(out_dir, ec);
  if (ec) throw std::runtime_error("cannot create " + out_dir + ": " + ec.message());
  const std::string tag = ".tmp-" + std::to_string(::getpid());  // never an existing file of the user's
  const std::string path = out_dir + "/model.safetensors", tmp = path + tag;
  const std::string config_path = out_dir + "/config.json", config_tmp = config_path + tag;
  const uint64_t n = header.size();
  const bool had_model = fs::exists(path, ec);
  bool renamed_model = false;
  try {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write " + tmp);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));  // little-endian
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(header.data(), std::streamsize(n));
    for (const auto& t : plan) {
      if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) continue;  // no bytes
      const TensorEntry* e = man.find(t.source);
      const int64_t per = t.expert >= 0 ? e->numel() / e->shape.at(0) : e->numel();
      at::Tensor v = at::empty({per}, at::TensorOptions().dtype(source_dtype(t.source)));
      reader.read(t.source, e->shape, t.expert >= 0 ? t.expert * per : 0, v);
      v = v.view(t.shape);
      if (t.rope_heads > 0) v = rope_to_half_split(v, t.rope_heads);
      v = v.to(out_dtype(t)).contiguous();  // host order is little-endian on every platform we build for
      f.write(static_cast<const char*>(v.data_ptr()), std::streamsize(v.nbytes()));
    }
    f.close();
    if (!f) throw std::runtime_error("cannot write " + tmp + " (disk full?)");

    std::ofstream c(config_tmp, std::ios::trunc);
    const bool f64 = dtype.empty() && !plan.empty() && source_dtype(plan.front().source) == at::kDouble;
    c << hf_config_json(cfg.model, dtype == "bf16" ? "bfloat16" : f64 ? "float64" : "float32");
    c.close();
    if (!c) throw std::runtime_error("cannot write " + config_tmp);
    fs::rename(tmp, path, ec);
    if (ec) throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
    renamed_model = true;
    fs::rename(config_tmp, config_path, ec);
    if (ec) throw std::runtime_error("cannot rename " + config_tmp + " to " + config_path + ": " + ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    fs::remove(config_tmp, ignored);
    if (renamed_model && !had_model) fs::remove(path, ignored);  // no model without its config.json
    if (!created.empty()) fs::remove_all(created, ignored);
    throw;
  }
  return {plan.size(), 8 + n + offset};
}

}  // namespace shoestring::ckpt
