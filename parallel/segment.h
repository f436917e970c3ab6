#pragma once
// One separately backwardable piece of a forward pass. The pipeline executor backwards a forward
// cut into segments one segment at a time, so that it can interleave that backward with another
// micro-batch's forward (DualPipe's overlapped pairs, pipeline_executor.h); an expert-parallel
// MoE block cuts at its two exchanges, which then travel between the segments instead of
// blocking inside autograd (trainer/model/expert_dispatch.h, ExchangeCut).
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace shoestring::parallel {

// The gradients of the previous segment's outputs, once they are there (waits for them).
using GradsFuture = std::function<std::vector<at::Tensor>()>;
// Starts turning the gradients of a segment's inputs into those of the previous segment's outputs
// (e.g. an exchange that sends them back where the inputs came from).
using SegmentLink = std::function<GradsFuture(std::vector<at::Tensor> input_grads)>;

struct Segment {
  std::vector<at::Tensor> inputs;   // leaves that require grad (none for a first piece reading no activation)
  std::vector<at::Tensor> outputs;  // functions of the parameters and `inputs` only
  at::Tensor aux;                   // optional scalar added to the loss, backpropagated with this segment
  SegmentLink link;                 // unset: input i's gradient is output i's of the previous segment
};

}  // namespace shoestring::parallel
