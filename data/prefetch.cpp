#include "data/prefetch.h"

#include <chrono>

namespace shoestring::data {

Prefetcher::Prefetcher(Produce produce, size_t depth, uint64_t first_batch)
    : produce_(std::move(produce)), depth_(depth < 1 ? 1 : depth), next_produce_(first_batch) {
  thread_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Prefetcher::restart(uint64_t first_batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;
    queue_.clear();
    error_ = nullptr;
    next_produce_ = first_batch;
  }
  cv_.notify_all();
}

void Prefetcher::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || (queue_.size() < depth_ && !error_); });
    if (stop_) return;
    const uint64_t gen = generation_, batch = next_produce_++;
    lock.unlock();
    std::vector<int64_t> out;
    std::exception_ptr err;
    try {
      produce_(batch, out);
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    if (gen != generation_) continue;  // restarted meanwhile: this batch belongs to the old stream
    if (err) error_ = err;
    else queue_.push_back(std::move(out));
    cv_.notify_all();
  }
}

std::vector<int64_t> Prefetcher::next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || error_; });
  wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (queue_.empty()) std::rethrow_exception(error_);
  std::vector<int64_t> out = std::move(queue_.front());
  queue_.pop_front();
  cv_.notify_all();
  return out;
}

}  // namespace shoestring::data
