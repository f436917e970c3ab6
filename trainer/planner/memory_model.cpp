#include "trainer/planner/memory_model.h"

#include <algorithm>

#include "trainer/model/param_count.h"

namespace shoestring::planner {

namespace {

constexpr double kF32 = 4;

// Attention's saved tensors per token, in elements of the compute dtype (the norms' fp32 copies
// are added by the caller). MLA (trainer/model/mla.cpp): the query projection (and its low-rank
// input and norm), the roped query and its concatenation, the compressed kv with its norm, the
// expanded keys/values, the roped key concatenation, a contiguous v, the attention output and its
// transposed copy, the output projection. Flash-style SDPA keeps only a log-sum-exp per head.
double attention_elems(const ModelConfig& m) {
  const double d = double(m.d_model), h = double(m.n_heads);
  if (m.attention == "gqa") {
    const double hd = d / h, kv = double(m.n_kv_heads) * hd;
    return d + 2 * kv + d + kv + d + d + d + h;  // q, k, v, roped q and k, output, copy, projection, lse
  }
  const double dn = double(m.qk_nope_head_dim), dr = double(m.qk_rope_head_dim), dv = double(m.v_head_dim);
  const double c = double(m.kv_lora_rank), q = h * (dn + dr);
  const double q_lora = m.q_lora_rank > 0 ? 2.0 * double(m.q_lora_rank) : 0.0;
  return q_lora + q + h * dr + q + (c + dr) + c + h * (dn + dv) + dr + q + h * dv + 2 * h * dv + d + h;
}

// The feed-forward's saved tensors per token, elements. SwiGLU keeps w1 x, silu(w1 x), w3 x and
// their product (4 x width) and its output. MoE adds the router's logits and scores (fp32, counted
// here as two compute elements each), each selected expert's gathered input and weighted output.
double ffn_elems(const ModelConfig& m, bool moe) {
  const double d = double(m.d_model);
  if (!moe) return 4.0 * double(m.intermediate_size) + d;
  const double mi = double(m.moe_intermediate_size), k = double(m.n_activated_experts);
  const double shared = double(m.n_shared_experts) * (4.0 * mi + d);
  return 4.0 * double(m.n_routed_experts) + k * (d + 4.0 * mi + d) + shared + d;
}

}  // namespace

double activation_element_bytes(const std::string& precision) {
  if (precision == "fp64") return 8;
  if (precision == "fp32") return 4;
  return 2;  // bf16; fp8 keeps bf16 activations around its GEMMs (docs/fp8.md)
}

double block_activation_bytes(const ModelConfig& m, bool moe, const std::string& precision) {
  const double s = activation_element_bytes(precision), d = double(m.d_model);
  // Two RMSNorms: each keeps its fp32 input and its output; two residual sums.
  const double norms = 2 * (d * std::max(s, kF32) + d * s) + 2 * d * s;
  return norms + s * (attention_elems(m) + ffn_elems(m, moe));
}

double head_activation_bytes(const ModelConfig& m, const std::string& precision) {
  const double s = activation_element_bytes(precision), d = double(m.d_model), v = double(m.vocab_size);
  // Final norm; logits in the compute dtype, their fp32 copy (none when they are fp32 already)
  // and the log-softmax the loss keeps.
  const double head = d * (std::max(s, kF32) + s) + v * (s + (s < kF32 ? kF32 : 0.0) + kF32);
  const bool moe = m.n_routed_experts > 0;
  // Each MTP module (DeepSeek-V3 §2.2): two norms, the concatenation, the projection, a block, a head.
  const double mtp = 2 * d * (std::max(s, kF32) + s) + 3 * d * s + block_activation_bytes(m, moe, precision) + head;
  return head + double(m.mtp_depth) * mtp;
}

std::vector<StageCost> stage_costs(const Config& cfg, const std::vector<StageSpan>& spans) {
  const ModelConfig& m = cfg.model;
  const std::string& prec = cfg.train.precision;
  const std::vector<double> flops = layer_flops(m, cfg.train.seq_len);
  const double d = double(m.d_model), embed = double(m.vocab_size) * d;
  const double expert = 3.0 * d * double(m.moe_intermediate_size);
  auto is_moe = [&](int64_t layer) { return m.n_routed_experts > 0 && layer >= m.n_dense_layers; };
  auto linear_flops = [&](bool moe) {
    const double router = moe ? double(m.n_routed_experts) * d : 0.0;  // the gate stays high precision
    return 2.0 * (double(model::attention_params(m)) + double(model::ffn_params(m, moe).second) - router);
  };
  std::vector<StageCost> out;
  for (const StageSpan& span : spans) {
    StageCost c;
    if (span.embed) {
      c.dense_params += embed;
      c.flops += flops.front();
    }
    for (int64_t layer = span.first; layer < span.last; ++layer) {
      const bool moe = is_moe(layer);
      const auto [total, active] = model::ffn_params(m, moe);
      const double experts = moe ? double(m.n_routed_experts) * expert : 0.0;
      c.dense_params += 2 * d + double(model::attention_params(m)) + double(total) - experts;
      c.expert_params += experts;
      const double act = block_activation_bytes(m, moe, prec);
      c.act_bytes += act;
      c.peak_layer_act_bytes = std::max(c.peak_layer_act_bytes, act);
      c.flops += flops[size_t(layer + 1)];
      c.fp8_flops += linear_flops(moe);
      c.moe_layers += moe ? 1 : 0;
    }
    if (span.head) {
      const bool moe = m.n_routed_experts > 0;
      // Final norm, the output head (the embedding itself when tied), and the table again when
      // this stage is not the first but needs it (tied head, or MTP embedding next tokens).
      c.dense_params += d + (m.tie_embeddings ? 0.0 : embed);
      if (!span.embed && (m.tie_embeddings || m.mtp_depth > 0)) c.dense_params += embed;
      const double experts = moe ? double(m.n_routed_experts) * expert : 0.0;
      const double mtp_block = 2 * d + double(model::attention_params(m)) + double(model::ffn_params(m, moe).first);
      c.dense_params += double(m.mtp_depth) * (2 * d + 2 * d * d + mtp_block - experts);
      c.expert_params += double(m.mtp_depth) * experts;
      c.act_bytes += head_activation_bytes(m, prec);
      // The head's backward transient: the loss gradient and the logits' gradient of one head, fp32.
      c.peak_layer_act_bytes = std::max(c.peak_layer_act_bytes, 2 * kF32 * double(m.vocab_size));
      c.flops += flops.back();
      c.fp8_flops += double(m.mtp_depth) * linear_flops(moe);
      c.moe_layers += int(m.mtp_depth) * (moe ? 1 : 0);
    }
    out.push_back(c);
  }
  return out;
}

MemoryPlan memory_plan(const Config& cfg, const parallel::Schedule& schedule, const std::vector<StageSpan>& spans,
                       double capacity_bytes, double margin, const parallel::Validation* checked) {
  const ModelConfig& m = cfg.model;
  const std::vector<StageCost> stages = stage_costs(cfg, spans);
  const parallel::Validation v = checked ? *checked : parallel::validate(schedule);
  const double dp = double(cfg.parallel.dp), ep = double(cfg.parallel.ep);
  const double tokens = double(cfg.train.micro_batch_size * cfg.train.seq_len);
  const double s = activation_element_bytes(cfg.train.precision);
  MemoryPlan out;
  out.capacity = capacity_bytes;
  out.margin = margin;
  out.startup = kF32 * double(model::count_parameters(m).total);
  for (const StageCost& c : stages)
    out.act_per_mb_layer = std::max(out.act_per_mb_layer, c.peak_layer_act_bytes * tokens);
  for (int r = 0; r < schedule.pp; ++r) {
    RankMemory mem;
    mem.pp_rank = r;
    double dense = 0, experts = 0, act_chunk = 0, act_layer = 0;
    int moe_layers = 0;
    for (int ch = 0; ch < schedule.chunks; ++ch) {
      const StageCost& c = stages[size_t(schedule.model_stage(r, ch))];
      dense += c.dense_params;
      experts += c.expert_params / ep;
      act_chunk = std::max(act_chunk, c.act_bytes * tokens);
      act_layer = std::max(act_layer, c.peak_layer_act_bytes * tokens);
      moe_layers = std::max(moe_layers, c.moe_layers);
    }
    mem.params = dense + experts;
    mem.weights = kF32 * mem.params;
    mem.grads = kF32 * mem.params;
    // AdamW's two fp32 moments; ZeRO-1 shards dense ones over dp, expert ones over the ep replicas.
    mem.optimizer = 2 * kF32 * (cfg.parallel.zero1 ? dense / dp + experts / (dp / ep) : dense + experts);
    mem.inflight = v.peak_activations[size_t(r)];
    // In-flight micro-batch chunks times the largest chunk's saved activations.
    mem.activations = double(mem.inflight) * act_chunk;
    // Backward transients (StageCost::peak_layer_act_bytes) of the largest chunk.
    mem.workspace = act_layer;
    // Buffers: one gradient bucket staged for the collective; EP dispatch send + receive of one
    // MoE layer's routed tokens; PP send + receive of one activation.
    double bufs = 0;
    if (cfg.parallel.dp > 1) bufs += cfg.parallel.bucket_mb * double(1 << 20);
    if (cfg.parallel.ep > 1 && moe_layers > 0) bufs += 2 * tokens * double(m.n_activated_experts) * double(m.d_model) * s;
    if (schedule.pp > 1) bufs += 2 * 2 * tokens * double(m.d_model) * s;
    mem.comm_buffers = bufs;
    out.ranks.push_back(mem);
    if (mem.total() > out.ranks[out.worst].total()) out.worst = out.ranks.size() - 1;
  }
  out.fits = out.ranks[out.worst].total() <= capacity_bytes * (1 - margin);
  return out;
}

}  // namespace shoestring::planner
