#pragma once
// The checkpoint manifest (manifest.json, written by rank 0 last, before the directory is renamed
// into place): what every tensor is globally and which pieces of which per-rank HDF5 files hold
// it, plus everything else a resume needs. It knows nothing of the model: tensors are flat
// element ranges of named global tensors, so any layout can read any other layout's pieces.
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace shoestring::ckpt {

// A checkpoint that cannot be used (missing, corrupt, incompatible): a one-line message naming the
// file and what is wrong. The CLI turns it into exit code 2.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Elements [offset, offset + numel) of the flattened global tensor, stored as the 1-D dataset
// `dataset` of `file` (relative to the checkpoint directory).
struct Piece {
  std::string file, dataset;
  int64_t offset = 0, numel = 0;
};

struct TensorEntry {
  std::string name;  // param/<name>, adam_m/<name>, adam_v/<name>, buffer/<name>
  std::string dtype;  // float32 | float64
  std::vector<int64_t> shape;  // global
  std::vector<Piece> pieces;
  int64_t numel() const;  // -1 when the product overflows int64 (read_manifest refuses that)
};

struct FileEntry {
  std::string name;
  int rank = 0;
  uint64_t bytes = 0;
  std::string sha256;
};

struct Layout {
  int world_size = 1, dp = 1, ep = 1, pp = 1;
  bool zero1 = false;
  std::string to_string() const;  // "dp 4 ep 2 pp 1 zero1 on (4 ranks)"
};

struct Manifest {
  int64_t step = 0;        // optimizer steps completed
  int64_t adam_steps = 0;  // AdamW's t (bias correction)
  std::string loader_state;  // data::LoaderState::to_string()
  Layout layout;
  std::string code_version;
  std::string config_yaml;  // the resolved config of the run that saved it
  std::vector<FileEntry> files;
  std::vector<TensorEntry> tensors;

  const TensorEntry* find(const std::string& name) const;
};

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kFormat = "shoestring-checkpoint-1";

std::string to_json(const Manifest& m);
// Reads DIR/manifest.json; CheckpointError naming the file on anything malformed, including
// negative or overflowing sizes, pieces outside their tensor and file names that leave DIR.
Manifest read_manifest(const std::string& dir);

// Every problem of the checkpoint in DIR, one line each (empty = valid): a missing or malformed
// manifest, missing files, wrong sizes, checksum mismatches and (once a file's checksum matched)
// datasets the manifest names that the file lacks or holds with another length or dtype (both
// only when `checksums`), an embedded config that is not a YAML mapping, unknown dtypes, and
// tensors whose pieces do not cover them exactly once.
std::vector<std::string> verify(const std::string& dir, bool checksums = true);
std::vector<std::string> verify(const std::string& dir, const Manifest& m, bool checksums = true);
// The share of that work of member `rank` of `size` verifying together (hashing is the slow part):
// the files whose index % size == rank, and (rank 0) the manifest and the tensors' coverage. The
// union over ranks is verify()'s result.
std::vector<std::string> verify_share(const std::string& dir, int rank, int size, bool checksums = true);

// step_0000012 for 12.
std::string step_dir_name(int64_t step);
// 12 for "step_0000012"; -1 for anything else (temporary directories included).
int64_t parse_step_dir_name(const std::string& name);
// The (step, path) of every step_N/ directory under `root`, newest first; none when `root` is not a
// directory, std::filesystem::filesystem_error when it is one that cannot be read.
std::vector<std::pair<int64_t, std::filesystem::path>> step_dirs(const std::string& root);

}  // namespace shoestring::ckpt
