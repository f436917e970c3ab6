#pragma once
// Choosing the checkpoint to resume from, and reading any element range of any saved tensor
// whatever the layout that saved it (resharding is reading other ranges).
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "trainer/checkpoint/manifest.h"
#include "trainer/checkpoint/shard_file.h"

namespace shoestring::ckpt {

// `spec` is "auto" or a checkpoint directory. auto: the newest step_N/ under `root` that verifies
// (checksums included); each newer one that does not adds a warning naming why; "" when `root`
// holds no checkpoint (a fresh start); CheckpointError when it holds some but none is valid. A
// path: it must verify, else CheckpointError with its first problem. `verifier` lists a
// directory's problems (default: verify(), checksums included); train() passes one that shares the
// hashing among all ranks, which then all call this together. max_step >= 0: auto ignores
// checkpoints of later steps (a rollback never moves forward).
using Verifier = std::function<std::vector<std::string>(const std::string& dir)>;
std::string choose_checkpoint(const std::string& spec, const std::string& root, std::vector<std::string>& warnings,
                              const Verifier& verifier = {}, int64_t max_step = -1);

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& dir);
  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // Elements [offset, offset + out.numel()) of the flattened global tensor `name`, whose global
  // shape must be `shape`, into `out` (a 1-D view; any device, float32/float64). CheckpointError
  // naming the tensor when the checkpoint lacks it or holds another shape.
  void read(const std::string& name, const std::vector<int64_t>& shape, int64_t offset, at::Tensor out);

 private:
  std::string dir_;
  Manifest manifest_;
  ShardReader files_;
};

}  // namespace shoestring::ckpt
