#include "trainer/model/embedding.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ops/weight_grad_slot.h"

namespace shoestring::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

struct DeferrableEmbedding : torch::autograd::Function<DeferrableEmbedding> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& w, const at::Tensor& indices) {
    ctx->save_for_backward({w, indices});
    return at::embedding(w, indices);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &w = saved[0], &indices = saved[1], &g = grads[0];
    const int64_t rows = w.size(0);
    // What autograd's EmbeddingBackward0 computes (padding_idx -1, no frequency scaling, dense).
    return {ops::weight_grads({}, {w},
                              [g, indices, rows] {
                                return std::vector<at::Tensor>{at::embedding_backward(g, indices, rows, -1, false, false)};
                              })[0],
            at::Tensor()};
  }
};

}  // namespace

at::Tensor embedding(const at::Tensor& w, const at::Tensor& indices) {
  if (!w.requires_grad() || !at::GradMode::is_enabled()) return at::embedding(w, indices);
  return DeferrableEmbedding::apply(w, indices);
}

}  // namespace shoestring::model
