#pragma once
// One rank's checkpoint file: HDF5 holding flat 1-D datasets d0, d1, ... (the manifest says which
// global tensor range each one is). Flat datasets keep resharding a matter of element ranges.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "data/hdf5_handles.h"

namespace shoestring::ckpt {

// Creates `path` (it must not exist) with datasets[i] = (name, 1-D contiguous CPU float32/float64
// tensor), then fsyncs it. CheckpointError on failure.
void write_shard_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& datasets);

// Reads element ranges of datasets, keeping each file open once.
class ShardReader {
 public:
  explicit ShardReader(std::string dir) : dir_(std::move(dir)) {}
  // Elements [first, first + out.numel()) of dataset `name` of `file` into `out` (1-D contiguous
  // CPU float32/float64; HDF5 converts between the two). `expected` is the dataset's length per
  // the manifest. CheckpointError naming the file on failure.
  void read(const std::string& file, const std::string& name, int64_t expected, int64_t first, at::Tensor out);

 private:
  std::string dir_;
  std::map<std::string, data::h5::Id> files_;
};

// fsync a file or a directory (so a rename is durable); CheckpointError on failure.
void fsync_path(const std::string& path, bool directory);

}  // namespace shoestring::ckpt
