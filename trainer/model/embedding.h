#pragma once
#include <ATen/core/Tensor.h>

namespace shoestring::model {

// at::embedding(w, indices) whose weight gradient a zero-bubble pipeline may defer to W like a
// linear's (ops/weight_grad_store.h); otherwise the gradient is at::embedding's, bit for bit.
// Deferring it matters when the embedding is tied to the output head (and read again by the MTP
// modules): the head's share is deferred, and a weight whose gradient came partly during I and
// partly at W would see its additions reordered when an I runs W closures early (filled waits).
at::Tensor embedding(const at::Tensor& w, const at::Tensor& indices);

}  // namespace shoestring::model
