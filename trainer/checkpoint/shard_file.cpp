#include "trainer/checkpoint/shard_file.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "trainer/checkpoint/manifest.h"

namespace shoestring::ckpt {

namespace h5 = data::h5;

namespace {

hid_t mem_type(const at::Tensor& t, const std::string& where) {
  if (t.scalar_type() == at::kFloat) return H5T_NATIVE_FLOAT;
  if (t.scalar_type() == at::kDouble) return H5T_NATIVE_DOUBLE;
  throw CheckpointError(where + ": only float32/float64 tensors can be checkpointed, got " +
                        std::string(c10::toString(t.scalar_type())));
}

}  // namespace

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw CheckpointError(path + ": cannot open to fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw CheckpointError(path + ": fsync failed");
}

void write_shard_file(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& datasets) {
  h5::QuietErrors quiet;
  {
    h5::Id f = h5::file(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT));
    if (!f.ok()) throw CheckpointError(path + ": cannot create: " + h5::last_error());
    for (const auto& [name, t] : datasets) {
      const hid_t mt = mem_type(t, path + " " + name);
      const hsize_t n = hsize_t(t.numel());
      h5::Id space = h5::space(H5Screate_simple(1, &n, nullptr));
      // Stored little-endian IEEE whatever the host, so files move between machines.
      const hid_t ft = mt == H5T_NATIVE_FLOAT ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
      h5::Id d = h5::dataset(H5Dcreate2(f, name.c_str(), ft, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      if (!d.ok() || H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
        throw CheckpointError(path + ": cannot write dataset " + name + ": " + h5::last_error());
    }
    if (H5Fflush(f, H5F_SCOPE_LOCAL) < 0) throw CheckpointError(path + ": cannot flush: " + h5::last_error());
  }
  fsync_path(path, false);
}

std::vector<std::string> check_datasets(const std::string& path, const std::vector<DatasetExpectation>& expected) {
  h5::QuietErrors quiet;
  h5::Id f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!f.ok()) return {path + ": cannot open as HDF5: " + h5::last_error()};
  std::vector<std::string> problems;
  for (const auto& e : expected) {
    const std::string what = path + ": dataset " + e.dataset + " (a piece of " + e.tensor + ")";
    h5::Id d = h5::dataset(H5Dopen2(f, e.dataset.c_str(), H5P_DEFAULT));
    if (!d.ok()) {
      problems.push_back(what + ": missing");
      continue;
    }
    h5::Id space = h5::space(H5Dget_space(d));
    h5::Id type = h5::type(H5Dget_type(d));
    hsize_t len = 0;
    const bool shape_ok = H5Sget_simple_extent_ndims(space) == 1 &&
                          H5Sget_simple_extent_dims(space, &len, nullptr) == 1 && int64_t(len) == e.numel;
    // The manifest's dtype is the saved tensor's, so the dataset's float size must equal it; HDF5
    // would convert float64 data into a float32 tensor silently.
    const size_t bytes = e.dtype == "float64" ? 8 : e.dtype == "float32" ? 4 : 0;
    const bool type_ok = bytes == 0 || (type.ok() && H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == bytes);
    if (!shape_ok || !type_ok)
      problems.push_back(what + ": not 1-D " + e.dtype + " with " + std::to_string(e.numel) +
                         " elements as the manifest says");
  }
  return problems;
}

void ShardReader::read(const std::string& file, const std::string& name, int64_t expected, int64_t first,
                       at::Tensor out) {
  h5::QuietErrors quiet;
  const std::string path = (std::filesystem::path(dir_) / file).string();
  auto it = files_.find(file);
  if (it == files_.end()) {
    h5::Id f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!f.ok()) throw CheckpointError(path + ": cannot open as HDF5: " + h5::last_error());
    it = files_.emplace(file, std::move(f)).first;
  }
  h5::Id d = h5::dataset(H5Dopen2(it->second, name.c_str(), H5P_DEFAULT));
  if (!d.ok()) throw CheckpointError(path + ": no dataset " + name);
  h5::Id space = h5::space(H5Dget_space(d));
  hsize_t len = 0;
  if (H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, &len, nullptr) != 1 ||
      int64_t(len) != expected)
    throw CheckpointError(path + ": dataset " + name + " is not 1-D with " + std::to_string(expected) +
                          " elements as the manifest says");
  if (first < 0 || first + out.numel() > expected)
    throw CheckpointError(path + ": dataset " + name + ": range outside the dataset");
  if (out.numel() == 0) return;
  const hsize_t start = hsize_t(first), count = hsize_t(out.numel());
  H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
  h5::Id mspace = h5::space(H5Screate_simple(1, &count, nullptr));
  if (H5Dread(d, mem_type(out, path), mspace, space, H5P_DEFAULT, out.data_ptr()) < 0)
    throw CheckpointError(path + ": cannot read dataset " + name + ": " + h5::last_error());
}

}  // namespace shoestring::ckpt
