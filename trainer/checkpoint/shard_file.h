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

// What the manifest says one dataset of a rank file holds: `numel` elements of `dtype` (float32 |
// float64), a piece of tensor `tensor`.
struct DatasetExpectation {
  std::string dataset, tensor, dtype;
  int64_t numel = 0;
};

// One line per dataset of the HDF5 file `path` that ShardReader::read would refuse or convert
// lossily: missing, not 1-D with `numel` elements, or not an IEEE float of dtype's size. Opens the
// file, so call it only once its SHA-256 matched (libhdf5 must never parse a corrupt file).
std::vector<std::string> check_datasets(const std::string& path, const std::vector<DatasetExpectation>& expected);

// fsync a file or a directory (so a rename is durable); CheckpointError on failure.
void fsync_path(const std::string& path, bool directory);

}  // namespace shoestring::ckpt
