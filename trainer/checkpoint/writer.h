#pragma once
// Saving a checkpoint: every rank writes its pieces to its own HDF5 file in a temporary directory,
// rank 0 gathers what each wrote (pieces, size, SHA-256), writes manifest.json, fsyncs and renames
// the directory into place, then moves `latest` and prunes old checkpoints. A crash at any moment
// leaves the previous checkpoints intact and at most a step_N.tmp-PID directory, which is never
// taken for a checkpoint (no step_N name, no manifest until everything else is durable).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "parallel/process_group.h"
#include "trainer/checkpoint/manifest.h"

namespace shoestring::ckpt {

// Elements [offset, offset + data.numel()) of global tensor `tensor` (shape `shape`), held by this
// rank. data: 1-D, float32 or float64, any device.
struct LocalPiece {
  std::string tensor;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  at::Tensor data;
};

// Collective over `world` (every rank calls it). `meta` carries everything but files and tensors.
// Returns the checkpoint's directory. std::runtime_error on every rank when any rank failed.
// Retention: the newest `keep` complete checkpoints (0: all), plus forever every step that is a
// multiple of `keep_every` (0: none). It is the three phases below in a row.
std::string save_checkpoint(parallel::ProcessGroup& world, const std::vector<LocalPiece>& pieces, Manifest meta,
                            const std::string& root, int64_t keep, int64_t keep_every = 0);

// Rank 0 after a rollback to `step`: the checkpoints of later steps belong to the abandoned branch
// (--resume auto would otherwise pick them); each is renamed to a .tmp- name, then deleted.
void drop_checkpoints_after(const std::string& root, int64_t step);

// The phases, for saving in the background (CheckpointSaver):
// 1. collective: rank 0 creates the temporary directory; every rank learns its name.
std::string begin_save(parallel::ProcessGroup& world, const std::string& root, int64_t step);
// 2. local, no communication (safe on another thread): this rank's file, and its description for
//    commit_save (or the error that stops the commit).
std::string write_rank_file(const std::string& tmp, int rank, const std::vector<LocalPiece>& pieces);
// 3. collective: rank 0 writes the manifest from every rank's description, renames the directory
//    into place, moves `latest` and prunes.
std::string commit_save(parallel::ProcessGroup& world, const std::string& tmp, const std::string& written, Manifest meta,
                        const std::string& root, int64_t keep, int64_t keep_every);

}  // namespace shoestring::ckpt
