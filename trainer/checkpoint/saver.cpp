#include "trainer/checkpoint/saver.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "parallel/process_group.h"

namespace shoestring::ckpt {

namespace {

// Test-only: a slow disk (SHOESTRING_TEST_SAVE_DELAY_MS), so a test can tell a save that blocks
// the loop from one written while training goes on.
void test_delay() {
  if (const char* ms = std::getenv("SHOESTRING_TEST_SAVE_DELAY_MS"))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
}

uint64_t dir_bytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(dir, ec)) bytes += f.file_size(ec);
  return bytes;
}

}  // namespace

CheckpointSaver::CheckpointSaver(parallel::ProcessGroup& world, SaveSettings settings)
    : world_(world), settings_(std::move(settings)) {}

CheckpointSaver::~CheckpointSaver() {
  if (writer_.joinable()) writer_.join();
}

SaveReport CheckpointSaver::save(const std::vector<LocalPiece>& pieces, Manifest meta, SaveReport* previous) {
  SaveReport prior = finish();  // its wait is in its own report
  if (previous) *previous = prior;
  const double t1 = parallel::steady_seconds();
  // The copy is the whole stall of an asynchronous save: after it the parameters and moments may
  // change under the next step while the thread writes the copy. Taken before any state changes,
  // so a failed copy leaves no save in flight.
  std::vector<LocalPiece> host;
  if (settings_.async)
    for (const auto& p : pieces)
      host.push_back({p.tensor, p.shape, p.offset, p.data.detach().to(at::kCPU, p.data.scalar_type(), false, true)});
  tmp_ = begin_save(world_, settings_.root, meta.step);
  meta_ = std::move(meta);
  started_ = t1;
  written_.clear();
  in_flight_ = true;
  if (!settings_.async) {
    test_delay();
    written_ = write_rank_file(tmp_, world_.rank(), pieces);
    return commit(0);
  }
  host_ = std::move(host);
  done_ = false;
  writer_ = std::thread([this] {
    test_delay();
    written_ = write_rank_file(tmp_, world_.rank(), host_);  // never throws: errors become an "E" line
    host_.clear();
    done_ = true;
  });
  SaveReport r;
  r.step = meta_.step;
  r.blocked_s = parallel::steady_seconds() - t1;
  return r;
}

SaveReport CheckpointSaver::poll() {
  if (!in_flight_) return {};
  at::Tensor done = at::full({1}, int64_t(done_.load()), at::kLong);
  if (world_.size() > 1) world_.all_reduce(done, parallel::ReduceOp::Min)->wait();
  if (done.item<int64_t>() == 0) return {};
  return finish();
}

SaveReport CheckpointSaver::finish() {
  if (!in_flight_) return {};
  const double t0 = parallel::steady_seconds();
  if (writer_.joinable()) writer_.join();
  return commit(parallel::steady_seconds() - t0);
}

SaveReport CheckpointSaver::commit(double blocked_before) {
  const double t0 = parallel::steady_seconds();
  in_flight_ = false;
  SaveReport r;
  r.step = meta_.step;
  r.dir = commit_save(world_, tmp_, written_, meta_, settings_.root, settings_.keep, settings_.keep_every);
  r.bytes = dir_bytes(r.dir);
  r.written_s = parallel::steady_seconds() - started_;
  r.blocked_s = blocked_before + (parallel::steady_seconds() - t0);
  if (!settings_.async) r.blocked_s = r.written_s;
  return r;
}

}  // namespace shoestring::ckpt
