#pragma once
// Checkpoints of a training run: what they hold, resuming from one (or converting it: ckpt
// convert), and saving them as training goes.
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "parallel/world.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/checkpoint/saver.h"
#include "trainer/checkpoint/train_state.h"
#include "trainer/config.h"
#include "trainer/progress.h"
#include "trainer/train.h"
#include "trainer/train_setup.h"

namespace shoestring {

// What a checkpoint of this run holds and where it goes.
struct RunCheckpoints {
  std::string root;
  ckpt::TrainStateRefs state;
  // Every rank takes part: each hashes its share of the files, so verification scales with ranks.
  ckpt::Verifier verifier;
  const ckpt::Layout layout;  // what a checkpoint of this run records besides its tensors and files
  const Config& cfg;
  const TrainOptions& options;
  const optim::AdamW& opt;

  ckpt::Manifest manifest_at(int64_t step, std::string loader_state) const;
};

// The checkpoint root (checkpoint.dir, <run dir>/checkpoints, or ckpt convert's output), the
// state a checkpoint holds, and how a candidate is verified.
RunCheckpoints run_checkpoints(TrainSetup& s, const Config& cfg, const parallel::World& world,
                               const TrainOptions& options, const std::string& run_dir);

// Resume: rank 0 picks and verifies the checkpoint (checksums included) before any weights are
// used; every rank then reads the slices its layout needs. Returns the step to continue from
// (0: a fresh start) and leaves in `ckpt_warnings` what rank 0 reports. ckpt convert saves the
// checkpoint again under this layout here.
int64_t resume_run(TrainSetup& s, const RunCheckpoints& ck, const Config& cfg, const TrainOptions& options,
                   TrainSummary& summary, std::vector<std::string>& ckpt_warnings);

// Checkpoints saved while training, each reported on the log once every rank has written it.
struct RunSaves {
  ckpt::CheckpointSaver saver;
  const Config& cfg;
  const RunCheckpoints& ck;
  data::Loader& loader;
  Progress& progress;
  TrainSummary& summary;

  // Logs a save every rank has finished (nothing when `s` is empty) and records it in the summary.
  void report(const ckpt::SaveReport& s);
  // Saves step `step` (1-based: the steps completed), in the background with checkpoint.async.
  void save(int64_t step);
};

}  // namespace shoestring
