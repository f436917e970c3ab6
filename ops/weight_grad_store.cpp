#include "ops/weight_grad_store.h"

#include <ATen/ATen.h>

#include <mutex>
#include <stdexcept>
#include <utility>

namespace shoestring::ops {

namespace {

// One store per process (see the header for why not thread-local). The mutex matters because
// autograd's device threads push while the executor's thread may ask capturing().
struct Store {
  std::mutex mu;
  bool capturing = false;
  std::vector<WeightGradFn> fns;
};

Store& store() {
  static Store s;
  return s;
}

std::mutex g_filler_mu;
WaitFiller::Piece g_filler;
// Held while a piece runs: waits on two autograd device threads (a CPU and a GPU exchange) must
// not run pieces of the same work at once.
std::mutex g_piece_mu;

}  // namespace

WaitFiller::WaitFiller(Piece piece) {
  const std::lock_guard<std::mutex> lock(g_filler_mu);
  if (g_filler) throw std::logic_error("WaitFiller: one is already installed");
  g_filler = std::move(piece);
}

WaitFiller::~WaitFiller() {
  const std::lock_guard<std::mutex> lock(g_filler_mu);
  g_filler = nullptr;
}

bool WaitFiller::installed() {
  const std::lock_guard<std::mutex> lock(g_filler_mu);
  return bool(g_filler);
}

bool WaitFiller::run_one() {
  Piece piece;
  {
    const std::lock_guard<std::mutex> lock(g_filler_mu);
    piece = g_filler;
  }
  if (!piece) return false;
  const std::lock_guard<std::mutex> running(g_piece_mu);
  return piece();
}

void WeightGradStore::begin_capture() {
  Store& s = store();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (s.capturing) throw std::logic_error("WeightGradStore::begin_capture: a capture is already open");
  s.capturing = true;
  s.fns.clear();
}

std::vector<WeightGradFn> WeightGradStore::end_capture() {
  Store& s = store();
  const std::lock_guard<std::mutex> lock(s.mu);
  s.capturing = false;
  return std::exchange(s.fns, {});
}

bool WeightGradStore::capturing() {
  Store& s = store();
  const std::lock_guard<std::mutex> lock(s.mu);
  return s.capturing;
}

void WeightGradStore::push(WeightGradFn fn) {
  Store& s = store();
  const std::lock_guard<std::mutex> lock(s.mu);
  // A closure queued with no capture open would never run and its weight would silently miss
  // its gradient.
  if (!s.capturing) throw std::logic_error("WeightGradStore::push: no capture is open");
  s.fns.push_back(std::move(fn));
}

WeightGradFn WeightGradStore::take_first() {
  Store& s = store();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (s.fns.empty()) return {};
  WeightGradFn fn = std::move(s.fns.front());
  s.fns.erase(s.fns.begin());
  return fn;
}

void accumulate_grad(const at::Tensor& w, const at::Tensor& grad) {
  at::Tensor& slot = w.mutable_grad();
  if (slot.defined()) {
    slot.add_(grad);
  } else if (grad.strides() == w.strides()) {
    slot = grad;
  } else {
    slot = at::empty_strided(w.sizes(), w.strides(), w.options()).copy_(grad);
  }
}

}  // namespace shoestring::ops
