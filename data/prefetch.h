#pragma once
// A background thread that produces batches ahead of the training loop into a bounded queue, so
// reading and decompressing tokens overlaps the model's step instead of adding to it. Batches
// come out strictly in order; an error on the thread (a corrupt chunk) is rethrown by next() once
// the batches before it have been handed out.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace shoestring::data {

class Prefetcher {
 public:
  using Produce = std::function<void(uint64_t batch_index, std::vector<int64_t>& out)>;
  // depth: batches held ready (>= 1).
  Prefetcher(Produce produce, size_t depth, uint64_t first_batch);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Drops what is queued and continues from `first_batch` (resume, or a new evaluation pass).
  void restart(uint64_t first_batch);
  // The next batch in order; blocks while the thread is behind.
  std::vector<int64_t> next();
  // Seconds next() spent waiting for the thread: what reading still costs the training step.
  double wait_seconds() const { return wait_s_; }

 private:
  void run();
  Produce produce_;
  size_t depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<int64_t>> queue_;
  uint64_t next_produce_;
  uint64_t generation_ = 0;  // bumped by restart(): work started before it is discarded
  std::exception_ptr error_;
  bool stop_ = false;
  double wait_s_ = 0;
  std::thread thread_;
};

}  // namespace shoestring::data
