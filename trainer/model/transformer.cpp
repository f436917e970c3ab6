#include "trainer/model/transformer.h"

#include <ATen/ATen.h>

#include <stdexcept>

#include "trainer/model/embedding.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

namespace {

bool is_moe_layer(const ModelConfig& cfg, int64_t layer) {
  return cfg.n_routed_experts > 0 && layer >= cfg.n_dense_layers;
}

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
}

}  // namespace

BlockImpl::BlockImpl(const ModelConfig& cfg, bool use_moe) {
  attn_norm_ = register_module("attn_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  if (cfg.attention == "mla") mla_ = register_module("attn", MLA(cfg));
  else gqa_ = register_module("attn", Attention(cfg, cfg.n_layers));
  mlp_norm_ = register_module("mlp_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  if (use_moe) moe = register_module("moe", MoE(cfg));
  else mlp_ = register_module("mlp", SwiGLU(cfg.d_model, cfg.intermediate_size, cfg.init_std, cfg.n_layers));
}

at::Tensor BlockImpl::attention_residual(const at::Tensor& x, const RotaryTables& rope) {
  const at::Tensor a = attn_norm_->forward(x);
  return x + (mla_ ? mla_->forward(a, rope) : gqa_->forward(a, rope));
}

MoEInFlight BlockImpl::moe_to_last_step(const at::Tensor& f, std::vector<MoEStats>* stats,
                                        const std::function<void()>& in_flight, bool cut) {
  MoEInFlight s = moe->forward_begin(f, stats, cut);
  if (in_flight) in_flight();
  moe->forward_experts(s);
  if (in_flight) in_flight();
  return s;
}

at::Tensor BlockImpl::forward(const at::Tensor& x, const RotaryTables& rope, std::vector<MoEStats>* stats,
                             const std::function<void()>& in_flight) {
  const at::Tensor h = attention_residual(x, rope);
  const at::Tensor f = mlp_norm_->forward(h);
  if (!moe) return h + mlp_->forward(f);
  MoEInFlight s = moe_to_last_step(f, stats, in_flight, /*cut=*/false);
  return h + moe->forward_end(s);
}

std::vector<parallel::Segment> BlockImpl::forward_segments(const at::Tensor& x, const RotaryTables& rope,
                                                           std::vector<MoEStats>* stats,
                                                           const std::function<void()>& in_flight) {
  const at::Tensor h = attention_residual(x, rope);
  const at::Tensor f = mlp_norm_->forward(h);
  using Segments = std::vector<parallel::Segment>;
  if (!moe) return Segments{{{x}, {h + mlp_->forward(f)}, {}, {}}};
  MoEInFlight s = moe_to_last_step(f, stats, in_flight, /*cut=*/true);
  const at::Tensor routed = moe->forward_end(s);
  if (s.cuts().empty()) return Segments{{{x}, {h + routed}, {}, {}}};  // nothing travelled
  if (s.cuts().size() != 2 || s.cuts()[1].received.size() != 1)
    throw std::logic_error("BlockImpl::forward_segments: a cut MoE forward needs its dispatch and combine");
  // Three pieces: to the dispatch; the experts, between the exchanges; from the combine on. The
  // residual h and the shared experts' output cross the middle piece: the last piece reads them
  // as leaves, and their gradients wait in `carried` until the first piece runs.
  const ExchangeCut &dispatch = s.cuts()[0], &combine = s.cuts()[1];
  const at::Tensor h_leaf = h.detach().requires_grad_(true);
  const at::Tensor y = h_leaf + routed;
  parallel::Segment first{{x}, dispatch.sent, {}, {}}, middle{dispatch.received, combine.sent, {}, {}},
      last{combine.received, {y}, {}, {}};
  first.outputs.push_back(h);
  last.inputs.push_back(h_leaf);
  if (s.shared().defined()) {
    first.outputs.push_back(s.shared());
    last.inputs.push_back(s.shared_leaf());
  }
  auto carried = std::make_shared<std::vector<at::Tensor>>();
  last.link = [reverse = combine.reverse, carried](std::vector<at::Tensor> g) {
    carried->assign(g.begin() + 1, g.end());
    g.resize(1);
    return reverse(std::move(g));
  };
  middle.link = [reverse = dispatch.reverse, carried](std::vector<at::Tensor> g) -> parallel::GradsFuture {
    parallel::GradsFuture sent = reverse(std::move(g));
    return [sent, carried] {
      std::vector<at::Tensor> out = sent();
      out.insert(out.end(), carried->begin(), carried->end());
      return out;
    };
  };
  return Segments{std::move(first), std::move(middle), std::move(last)};
}

MTPModuleImpl::MTPModuleImpl(const ModelConfig& cfg) {
  h_norm = register_module("h_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  e_norm = register_module("e_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  proj = register_parameter("proj", normal_weight(cfg.d_model, 2 * cfg.d_model, cfg.init_std));
  block = register_module("block", Block(cfg, is_moe_layer(cfg, cfg.n_layers)));
}

at::Tensor MTPModuleImpl::forward(const at::Tensor& h, const at::Tensor& next_embed, const RotaryTables& rope,
                                  std::vector<MoEStats>* stats) {
  const at::Tensor joined = at::cat({h_norm->forward(h), e_norm->forward(next_embed)}, -1);
  return block->forward(project(joined, proj), rope, stats);
}

TransformerImpl::TransformerImpl(const ModelConfig& cfg, at::ScalarType compute_dtype)
    : cfg_(cfg), compute_dtype_(compute_dtype) {
  // Construction order fixes the order of random draws, so the seed alone determines the init.
  tok_embed_ = register_parameter("tok_embed", at::randn({cfg.vocab_size, cfg.d_model}) * cfg.init_std);
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.n_layers; ++i) blocks_->push_back(Block(cfg, is_moe_layer(cfg, i)));
  final_norm_ = register_module("final_norm", RMSNorm(cfg.d_model, cfg.norm_eps));
  if (!cfg.tie_embeddings)
    head_ = register_parameter("head", normal_weight(cfg.vocab_size, cfg.d_model, cfg.init_std));
  mtp_ = register_module("mtp", torch::nn::ModuleList());
  for (int64_t k = 0; k < cfg.mtp_depth; ++k) mtp_->push_back(MTPModule(cfg));
  const int64_t rope_dim = cfg.attention == "mla" ? cfg.qk_rope_head_dim : cfg.d_model / cfg.n_heads;
  rope_ = rotary_tables(rope_dim, cfg.max_seq_len, cfg.rope_theta);
}

at::Tensor TransformerImpl::embed(const at::Tensor& tokens) {
  return model::embedding(tok_embed_, tokens).to(compute_dtype_);
}

at::Tensor TransformerImpl::run_blocks(at::Tensor x, int64_t first, int64_t last, std::vector<MoEStats>* stats,
                                       const std::function<void()>& in_flight) {
  for (int64_t i = first; i < last; ++i)
    x = blocks_[size_t(i)]->as<BlockImpl>()->forward(x, rope_, stats, in_flight);
  return x;
}

std::vector<parallel::Segment> TransformerImpl::block_segments(int64_t i, const at::Tensor& x,
                                                               std::vector<MoEStats>* stats,
                                                               const std::function<void()>& in_flight) {
  return blocks_[size_t(i)]->as<BlockImpl>()->forward_segments(x, rope_, stats, in_flight);
}

at::Tensor TransformerImpl::trunk(const at::Tensor& tokens, std::vector<MoEStats>* stats) {
  return run_blocks(embed(tokens), 0, int64_t(blocks_->size()), stats);
}

at::Tensor TransformerImpl::logits(const at::Tensor& h) {
  const at::Tensor out = project(final_norm_->forward(h), cfg_.tie_embeddings ? tok_embed_ : head_);
  return out.to(at::promote_types(out.scalar_type(), at::kFloat));
}

at::Tensor TransformerImpl::forward(const at::Tensor& tokens) { return logits(trunk(tokens, nullptr)); }

at::Tensor TransformerImpl::loss(const at::Tensor& tokens, const at::Tensor& targets) {
  return losses(tokens, targets).main;
}

LossBreakdown TransformerImpl::losses(const at::Tensor& tokens, const at::Tensor& targets, const LossWeights& w) {
  LossBreakdown out;
  head_losses(trunk(tokens, &out.moe), tokens, targets, w, out);
  add_balance(out, w);
  return out;
}

void TransformerImpl::head_losses(const at::Tensor& h_main, const at::Tensor& tokens, const at::Tensor& targets,
                                  const LossWeights& w, LossBreakdown& out) {
  at::Tensor h = h_main;
  out.main = cross_entropy(logits(h), targets);
  out.total = out.main;
  // MTP depth k predicts t_{i+k+1} at position i from h^{k-1}_i and Emb(t_{i+k}); with inputs
  // t_0..t_{T-1} and targets t_1..t_T that is inputs[:, k:] and targets[:, k:] against the first
  // T-k positions (DeepSeek-V3 eq. 21-25). Sequences shrink by one per depth.
  const int64_t t = tokens.size(1), depth = int64_t(mtp_->size());
  for (int64_t k = 1; k <= depth; ++k) {
    const at::Tensor next_embed = model::embedding(tok_embed_, tokens.narrow(1, k, t - k)).to(compute_dtype_);
    h = mtp_[size_t(k - 1)]->as<MTPModuleImpl>()->forward(h.narrow(1, 0, t - k), next_embed, rope_, &out.moe);
    const at::Tensor lk = cross_entropy(logits(h), targets.narrow(1, k, t - k));
    out.mtp = out.mtp.defined() ? out.mtp + lk : lk;
  }
  if (depth > 0) {
    out.mtp = out.mtp / double(depth);
    out.total = out.total + w.mtp_lambda * out.mtp;
  }
}

void TransformerImpl::add_balance(LossBreakdown& out, const LossWeights& w) {
  for (const auto& s : out.moe) out.balance = out.balance.defined() ? out.balance + s.balance_loss : s.balance_loss;
  if (!out.balance.defined() || w.balance_alpha <= 0) return;
  const at::Tensor weighted = w.balance_alpha * out.balance;
  out.total = out.total.defined() ? out.total + weighted : weighted;
}

int64_t TransformerImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

int64_t TransformerImpl::activated_parameter_count() const {
  int64_t n = 0;
  for (const auto& item : named_parameters()) {
    const std::string& name = item.key();
    if (name.rfind("mtp.", 0) == 0) continue;
    const auto& p = item.value();
    const bool routed = name.find(".moe.w") != std::string::npos;
    n += routed ? p.numel() / p.size(0) * cfg_.n_activated_experts : p.numel();  // per expert x k, sharded or not
  }
  return n;
}

std::vector<Router> TransformerImpl::routers() {
  std::vector<Router> out;
  for (const auto& m : modules(/*include_self=*/false))
    if (auto r = std::dynamic_pointer_cast<RouterImpl>(m)) out.push_back(Router(r));
  return out;
}

std::vector<MoE> TransformerImpl::moe_layers() {
  std::vector<MoE> out;
  for (const auto& m : modules(/*include_self=*/false))
    if (auto l = std::dynamic_pointer_cast<MoEImpl>(m)) out.push_back(MoE(l));
  return out;
}

std::string parameter_kind(const std::string& name) {
  if (name.find("norm") != std::string::npos) return "norm";
  if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) return "bias";
  if (name == "tok_embed") return "embedding";
  if (name == "head") return "head";
  return "weight";
}

bool is_routed_expert(const std::string& name) {
  for (const char* suffix : {"moe.w1", "moe.w2", "moe.w3"}) {
    const std::string s = suffix;
    if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
        (name.size() == s.size() || name[name.size() - s.size() - 1] == '.'))
      return true;
  }
  return false;
}

}  // namespace shoestring::model
