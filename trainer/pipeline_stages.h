#pragma once
// How the model is cut into pipeline stages, and what one stage computes. A stage is a contiguous
// run of transformer blocks; the first stage also embeds the tokens, the last also applies the
// final norm, the output head and the MTP modules and computes the loss. The model stays plain
// single-device code: a stage calls its public pieces (embed, run_blocks, head_losses).
#include <string>
#include <vector>

#include "parallel/pipeline_executor.h"
#include "parallel/schedule.h"
#include "trainer/config.h"
#include "trainer/model/transformer.h"

namespace shoestring {

struct StageSpan {
  int64_t first = 0, last = 0;  // transformer blocks [first, last)
  bool embed = false, head = false;
};

// Estimated forward FLOPs per token of each layer: [0] the embedding, [1..n_layers] the blocks
// (attention projections and scores, dense or activated MoE feed-forward), [n_layers + 1] the
// head (final norm, output projection, MTP modules). Backward scales them all alike.
std::vector<double> layer_flops(const ModelConfig& m, int64_t seq_len);
// Model FLOPs of one trained token (forward and backward, 3 x the forward of layer_flops): the
// numerator of MFU in `bench train` and of the planner's step FLOPs.
double model_flops_per_token(const ModelConfig& m, int64_t seq_len);

// `stages` spans covering the model: block counts from `counts` when given (one per stage), else
// the contiguous split minimising the most expensive stage under layer_flops. When `schedule`
// holds several chunks per rank (interleaved, DualPipe, DualPipeV), a rank's load is the sum of
// its stages, so the split is the one whose simulated step (parallel::simulate with costs from
// layer_flops) is shortest, then whose most expensive stage is cheapest: over every split while
// there are at most 5,000, else by moving single blocks across boundaries from the
// stage-balanced split while that shortens the step. (Exhaustive: among splits within 1% of the
// shortest step, the one with the cheapest most expensive stage.)
std::vector<StageSpan> partition_stages(const ModelConfig& m, int64_t seq_len, int stages,
                                        const std::vector<int64_t>& counts,
                                        const parallel::Schedule* schedule = nullptr);
std::string describe(const std::vector<StageSpan>& spans);  // "[embed+0-3] [4-7+head]"

// Whether a stage needs a parameter or buffer (by its name in the whole model): the embedding
// table goes with the first stage, and with the last too when the head is tied to it or MTP
// modules embed their next tokens.
bool stage_uses(const StageSpan& span, const std::string& name, const ModelConfig& m);

// One micro-batch through one stage. `input` is the previous stage's activation (undefined on the
// first); `scale` divides every loss (1 / micro-batches). The last stage returns its loss (main +
// lambda * MTP + alpha * balance of its MoE layers) and fills `losses`; other stages return their
// activation and, with a balance loss, alpha * the balance of their MoE layers as aux.
// mode.segmented: the stage as a chain of segments (the embedding, each block, the head; each
// block's segment carries its alpha * balance / scale as aux, the head's loss the rest), the same
// gradients as one piece; mode.in_flight is passed to each MoE block (BlockImpl::forward).
parallel::StageOutput stage_forward(model::TransformerImpl& net, const StageSpan& span, const at::Tensor& input,
                                    const at::Tensor& tokens, const at::Tensor& targets,
                                    const model::LossWeights& w, double scale, model::LossBreakdown& losses,
                                    const parallel::ForwardMode& mode = {});

}  // namespace shoestring
