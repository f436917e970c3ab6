#pragma once
// The decoder-only model as plain single-device code: it never mentions ranks or devices beyond
// the tensors it is given. Parallelism is applied from outside (parallel/, later issues).
//
// Layers: embedding -> n_layers blocks [norm -> attention (GQA or MLA) -> residual; norm -> FFN
// (dense SwiGLU for the first n_dense_layers, else MoE) -> residual] -> norm -> head, plus
// mtp_depth multi-token-prediction modules (DeepSeek-V3 §2.2) used only in training.
#include <functional>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "parallel/segment.h"
#include "trainer/config.h"
#include "trainer/model/attention.h"
#include "trainer/model/mla.h"
#include "trainer/model/moe.h"
#include "trainer/model/rms_norm.h"
#include "trainer/model/swiglu.h"

namespace shoestring::model {

class BlockImpl : public torch::nn::Module {
 public:
  // moe: whether this block's feed-forward is a MoE layer (else dense SwiGLU).
  BlockImpl(const ModelConfig& cfg, bool moe);
  // in_flight, when set, is called while the MoE layer's dispatch and again while its combine is
  // in flight (MoEImpl::forward_begin): a pipeline overlaps another micro-batch's work there.
  at::Tensor forward(const at::Tensor& x, const RotaryTables& rope, std::vector<MoEStats>* stats,
                     const std::function<void()>& in_flight = {});
  // The same forward from x (a leaf that requires grad) as separately backwardable segments
  // (parallel/segment.h): one, or, for a MoE layer whose dispatcher exchanges, three cut at the
  // dispatch and the combine, which then travel between the segments' backward passes too.
  std::vector<parallel::Segment> forward_segments(const at::Tensor& x, const RotaryTables& rope,
                                                  std::vector<MoEStats>* stats,
                                                  const std::function<void()>& in_flight = {});

  MoE moe{nullptr};

 private:
  at::Tensor attention_residual(const at::Tensor& x, const RotaryTables& rope);  // x + attention(norm(x))
  // The MoE forward up to forward_end, calling in_flight while its dispatch, then its combine, travel.
  MoEInFlight moe_to_last_step(const at::Tensor& f, std::vector<MoEStats>* stats,
                               const std::function<void()>& in_flight, bool cut);

  RMSNorm attn_norm_{nullptr}, mlp_norm_{nullptr};
  Attention gqa_{nullptr};
  MLA mla_{nullptr};
  SwiGLU mlp_{nullptr};
};
TORCH_MODULE(Block);

// One MTP module (DeepSeek-V3 §2.2, eq. 21-23): h' = M [RMSNorm(h); RMSNorm(Emb(t_{i+k}))], then
// one transformer block; embedding and output head are shared with the main model.
class MTPModuleImpl : public torch::nn::Module {
 public:
  MTPModuleImpl(const ModelConfig& cfg);
  at::Tensor forward(const at::Tensor& h, const at::Tensor& next_embed, const RotaryTables& rope,
                     std::vector<MoEStats>* stats);

  RMSNorm h_norm{nullptr}, e_norm{nullptr};
  at::Tensor proj;  // [d, 2d]
  Block block{nullptr};
};
TORCH_MODULE(MTPModule);

struct LossWeights {
  double mtp_lambda = 0.3;     // weight of the mean MTP loss over depths (DeepSeek-V3 eq. 25)
  double balance_alpha = 0.0;  // weight of the sequence-wise balance loss (eq. 17)
};

// The parts of one training forward pass.
struct LossBreakdown {
  at::Tensor total;         // what backward() is called on
  at::Tensor main;          // next-token cross entropy
  at::Tensor mtp;           // mean MTP cross entropy over depths (undefined without MTP)
  at::Tensor balance;       // summed unweighted balance loss of all MoE layers (undefined without MoE)
  std::vector<MoEStats> moe;  // per MoE layer, main model then MTP modules
};

class TransformerImpl : public torch::nn::Module {
 public:
  // compute_dtype: dtype of activations and matmuls (kFloat, kBFloat16, or kDouble for tests).
  TransformerImpl(const ModelConfig& cfg, at::ScalarType compute_dtype = at::kFloat);

  // tokens [batch, seq] int64 -> logits [batch, seq, vocab] in fp32 (fp64 for kDouble). MTP
  // modules are not used: this is the inference path.
  at::Tensor forward(const at::Tensor& tokens);
  // Training losses for next-token targets [batch, seq] (inputs shifted by one).
  LossBreakdown losses(const at::Tensor& tokens, const at::Tensor& targets, const LossWeights& w = {});
  // Just the main next-token cross entropy.
  at::Tensor loss(const at::Tensor& tokens, const at::Tensor& targets);

  // Final hidden states of the main model (before the final norm), [batch, seq, d].
  at::Tensor hidden(const at::Tensor& tokens) { return trunk(tokens, nullptr); }

  // The pieces losses() is made of, for pipeline stages that each run a contiguous part of it:
  // embed -> run_blocks over [0, n_layers) -> head_losses -> add_balance.
  at::Tensor embed(const at::Tensor& tokens);
  at::Tensor run_blocks(at::Tensor x, int64_t first, int64_t last, std::vector<MoEStats>* stats,
                        const std::function<void()>& in_flight = {});
  // Block i from x (a leaf that requires grad) as segments: BlockImpl::forward_segments.
  std::vector<parallel::Segment> block_segments(int64_t i, const at::Tensor& x, std::vector<MoEStats>* stats,
                                                const std::function<void()>& in_flight = {});
  // From the main model's final hidden states h: out.main, out.mtp and out.total = main +
  // lambda * mtp; the MTP blocks' MoE stats are appended to out.moe.
  void head_losses(const at::Tensor& h, const at::Tensor& tokens, const at::Tensor& targets, const LossWeights& w,
                   LossBreakdown& out);
  // out.balance = the summed balance losses of out.moe; out.total += alpha * balance.
  static void add_balance(LossBreakdown& out, const LossWeights& w);

  int64_t parameter_count() const;
  // Parameters a token passes through: all but the unselected routed experts, without MTP.
  int64_t activated_parameter_count() const;
  std::vector<Router> routers();  // every MoE router, main model then MTP modules
  std::vector<MoE> moe_layers();  // every MoE layer, in the same order
  void set_compute_dtype(at::ScalarType dt) { compute_dtype_ = dt; }
  int64_t hidden_size() const { return cfg_.d_model; }

 private:
  at::Tensor trunk(const at::Tensor& tokens, std::vector<MoEStats>* stats);  // final hidden states
  at::Tensor logits(const at::Tensor& h);

  ModelConfig cfg_;
  at::ScalarType compute_dtype_;
  RotaryTables rope_;
  at::Tensor tok_embed_, head_;
  torch::nn::ModuleList blocks_, mtp_;
  RMSNorm final_norm_{nullptr};
};
TORCH_MODULE(Transformer);

// Parameter kind for weight-decay grouping: "norm", "bias", "embedding", "head" or "weight".
std::string parameter_kind(const std::string& name);

// Whether a parameter (by its name in named_parameters()) holds routed experts: the stacked
// [experts, ...] weights of a MoE layer, which expert parallelism shards and whose gradients are
// reduced over the ranks holding the same experts. Shared experts are not routed.
bool is_routed_expert(const std::string& name);

}  // namespace shoestring::model
