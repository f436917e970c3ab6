#pragma once
// A small cache of large scratch tensors for code that allocates the same big buffers on every
// call (the expert-parallel dispatcher: 10^4 x 10^3 rows per pass). On CPU, glibc serves blocks
// over 32 MiB with a fresh mmap each time, so every pass pays a page fault per 4 KiB page before
// doing any work; reusing the memory removes that. Off the CPU (CUDA's caching allocator already
// reuses memory, and a private cache would only keep blocks from everything else) `get` is at::empty.
//
// A buffer is handed out again only once nothing else refers to its storage (the pool's own
// tensor is the storage's only owner): tensors saved by autograd, views and results held by the
// caller all keep it busy. So `get` is safe with autograd on; with it off, buffers come back at
// once. Contents of a returned tensor are uninitialised, as with at::empty.
#include <ATen/ATen.h>

#include <cstddef>
#include <mutex>
#include <vector>

namespace shoestring::parallel {

class BufferPool {
 public:
  explicit BufferPool(size_t max_buffers = 24) : max_buffers_(max_buffers) {}

  at::Tensor get(at::IntArrayRef shape, const at::TensorOptions& options) {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const size_t bytes = size_t(numel) * options.dtype().itemsize();
    if (bytes < kMinBytes || !options.device().is_cpu()) return at::empty(shape, options);
    const std::lock_guard lock(mu_);  // one pool may serve several threads (LocalDispatcher's is per process)
    Entry* pick = nullptr;
    for (Entry& e : entries_)
      if (e.buffer.storage().use_count() == 1 && e.buffer.device() == options.device() && e.bytes >= bytes &&
          (!pick || e.bytes < pick->bytes))
        pick = &e;
    if (!pick) {
      if (entries_.size() >= max_buffers_) {  // evict a free buffer, else give up caching
        size_t i = 0;
        while (i < entries_.size() && entries_[i].buffer.storage().use_count() != 1) ++i;
        if (i == entries_.size()) return at::empty(shape, options);
        entries_.erase(entries_.begin() + std::ptrdiff_t(i));
      }
      // 1/8 headroom, in whole 2 MiB, so slightly larger shapes next call still fit
      const size_t cap = (bytes + bytes / 8 + (size_t(2) << 20) - 1) / (size_t(2) << 20) * (size_t(2) << 20);
      entries_.push_back({at::empty({int64_t(cap)}, options.dtype(at::kByte)), cap});
      pick = &entries_.back();
    }
    return pick->buffer.narrow(0, 0, int64_t(bytes)).view(options.dtype().toScalarType()).view(shape);
  }

  at::Tensor zeros(at::IntArrayRef shape, const at::TensorOptions& options) { return get(shape, options).zero_(); }

 private:
  static constexpr size_t kMinBytes = size_t(1) << 20;  // smaller blocks come from malloc's heap
  struct Entry {
    at::Tensor buffer;  // [bytes] uint8
    size_t bytes;
  };
  size_t max_buffers_;
  std::mutex mu_;
  std::vector<Entry> entries_;
};

}  // namespace shoestring::parallel
