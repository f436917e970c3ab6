#pragma once
// The training loop's saves. Synchronous: save() returns once the checkpoint is committed.
// Asynchronous (checkpoint.async): save() copies this rank's pieces to host memory, hands them to a
// background thread that writes and hashes the rank file, and returns; the loop calls poll()
// every step, and the save is committed (manifest, rename, `latest`, pruning: the collective part)
// in the first step after every rank's thread finished. Until then the checkpoint is a .tmp
// directory that resume never picks. The background thread does no communication, so training
// collectives never race with it; HDF5 (built thread-safe) serialises its calls with the loader's.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "trainer/checkpoint/writer.h"

namespace shoestring::ckpt {

struct SaveSettings {
  std::string root;
  int64_t keep = 0, keep_every = 0;
  bool async = false;
};

// A committed checkpoint, or a started one (dir empty).
struct SaveReport {
  std::string dir;        // committed: the checkpoint directory; "" when only started
  int64_t step = 0;
  uint64_t bytes = 0;     // committed: the files' total size
  double blocked_s = 0;   // time the caller's save() or commit spent blocked
  double written_s = 0;   // committed: from save() to commit (async: the background write)
};

class CheckpointSaver {
 public:
  CheckpointSaver(parallel::ProcessGroup& world, SaveSettings settings);
  ~CheckpointSaver();  // joins a writer still running; its save stays uncommitted (.tmp)
  CheckpointSaver(const CheckpointSaver&) = delete;
  CheckpointSaver& operator=(const CheckpointSaver&) = delete;

  // Collective. A save still in flight is committed first (it is returned in `previous`).
  SaveReport save(const std::vector<LocalPiece>& pieces, Manifest meta, SaveReport* previous = nullptr);
  // Collective; cheap when nothing is in flight (no communication). Commits the save in flight once
  // every rank's writer has finished: returns it (dir set), else a report with an empty dir.
  SaveReport poll();
  // Collective: waits for the save in flight and commits it (empty dir when there was none).
  SaveReport finish();
  bool pending() const { return in_flight_; }

 private:
  SaveReport commit(double blocked_before);

  parallel::ProcessGroup& world_;
  SaveSettings settings_;
  bool in_flight_ = false;
  std::string tmp_, written_;
  Manifest meta_;
  std::vector<LocalPiece> host_;
  std::thread writer_;
  std::atomic<bool> done_{false};
  double started_ = 0;
};

}  // namespace shoestring::ckpt
