#include "trainer/checkpoint/writer.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "data/data_error.h"
#include "data/sha256.h"
#include "trainer/checkpoint/shard_file.h"
#include "trainer/distributed.h"

namespace fs = std::filesystem;

namespace shoestring::ckpt {

namespace {

std::string dtype_name(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? "float64" : t.scalar_type() == at::kFloat ? "float32" : "unsupported";
}

}  // namespace

std::string write_rank_file(const std::string& tmp, int rank, const std::vector<LocalPiece>& pieces) {
  char name[32];
  std::snprintf(name, sizeof name, "rank_%05d.h5", rank);
  std::ostringstream desc;
  try {
    std::vector<std::pair<std::string, at::Tensor>> datasets;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const auto& p = pieces[i];
      if (p.data.numel() == 0) continue;
      const std::string ds = "d" + std::to_string(i);
      datasets.emplace_back(ds, p.data.detach().to(at::kCPU).contiguous().view({-1}));
      std::string shape;
      for (size_t d = 0; d < p.shape.size(); ++d) shape += (d ? "," : "") + std::to_string(p.shape[d]);
      desc << "P " << p.tensor << ' ' << dtype_name(p.data) << ' ' << (shape.empty() ? "-" : shape) << ' ' << p.offset
           << ' ' << p.data.numel() << ' ' << ds << '\n';
    }
    const std::string path = (fs::path(tmp) / name).string();
    write_shard_file(path, datasets);
    uint64_t bytes = 0;
    const std::string sum = data::sha256_file(path, &bytes);
    return "F " + std::string(name) + ' ' + std::to_string(bytes) + ' ' + sum + '\n' + desc.str();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    return "E rank " + std::to_string(rank) + ": " + msg + '\n';
  }
}

namespace {

void add_rank(Manifest& m, std::map<std::string, size_t>& index, int rank, const std::string& desc) {
  std::istringstream in(desc);
  std::string file;
  for (std::string line; std::getline(in, line);) {
    std::istringstream l(line);
    std::string kind;
    l >> kind;
    if (kind == "E") throw CheckpointError(line.substr(2));
    if (kind == "F") {
      FileEntry f;
      f.rank = rank;
      l >> f.name >> f.bytes >> f.sha256;
      file = f.name;
      m.files.push_back(f);
      continue;
    }
    std::string tensor, dtype, shape, ds;
    int64_t offset = 0, numel = 0;
    l >> tensor >> dtype >> shape >> offset >> numel >> ds;
    auto [it, fresh] = index.emplace(tensor, m.tensors.size());
    if (fresh) {
      TensorEntry e;
      e.name = tensor;
      e.dtype = dtype;
      if (shape != "-") {
        std::istringstream sh(shape);
        for (std::string d; std::getline(sh, d, ',');) e.shape.push_back(std::stoll(d));
      }
      m.tensors.push_back(std::move(e));
    }
    m.tensors[it->second].pieces.push_back({file, ds, offset, numel});
  }
}

void write_durably(const fs::path& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw CheckpointError(path.string() + ": cannot write");
  }
  fsync_path(path.string(), false);
}

// Rank 0, after the new checkpoint is complete: keep it and the newest `keep` - 1 others, and drop
// temporary directories that earlier crashed saves left behind. The new one always stays, even when
// newer steps exist (a run resumed from an older checkpoint). Steps that are multiples of
// `keep_every` (> 0) stay forever and do not count towards `keep`.
void prune(const fs::path& root, int64_t keep, int64_t keep_every, const std::string& own_tmp, const fs::path& fresh) {
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) == 0 && name.find(".tmp-") != std::string::npos && e.path() != own_tmp)
      fs::remove_all(e.path());
  }
  if (keep <= 0) return;
  int64_t kept = 1;  // `fresh`
  for (const auto& [step, dir] : step_dirs(root.string())) {
    if (dir == fresh || (keep_every > 0 && step % keep_every == 0)) continue;
    if (kept < keep) {
      ++kept;
      continue;
    }
    // Renamed first (atomic): a kill inside remove_all, which deletes file by file, leaves a .tmp-
    // directory that is never taken for a checkpoint and that the next save removes.
    const fs::path doomed = dir.string() + ".tmp-pruned-" + std::to_string(::getpid());
    fs::rename(dir, doomed);
    fs::remove_all(doomed);
  }
}

}  // namespace

std::string begin_save(parallel::ProcessGroup& world, const std::string& root, int64_t step) {
  std::string tmp;
  if (world.rank() == 0) {
    try {
      tmp = (fs::path(root) / step_dir_name(step)).string() + ".tmp-" + std::to_string(::getpid());
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    } catch (const std::exception& e) {
      tmp = "\x01" + root + ": cannot create a checkpoint directory: " + e.what();
    }
  }
  tmp = broadcast_string(world, tmp);
  if (!tmp.empty() && tmp[0] == '\x01') throw std::runtime_error(tmp.substr(1));
  return tmp;
}

std::string commit_save(parallel::ProcessGroup& world, const std::string& tmp, const std::string& written, Manifest meta,
                        const std::string& root, int64_t keep, int64_t keep_every) {
  const fs::path final_dir = fs::path(root) / step_dir_name(meta.step);
  const std::vector<std::string> parts = all_gather_strings(world, written);
  std::string result;
  if (world.rank() == 0) {
    try {
      std::map<std::string, size_t> index;
      for (int r = 0; r < int(parts.size()); ++r) add_rank(meta, index, r, parts[size_t(r)]);
      write_durably(fs::path(tmp) / kManifestName, to_json(meta));
      fsync_path(tmp, true);
      // Re-saving a step (after resuming from an older checkpoint): the old one goes aside first,
      // as rename cannot replace a non-empty directory.
      if (fs::exists(final_dir)) {
        const std::string aside = final_dir.string() + ".tmp-old-" + std::to_string(::getpid());
        fs::rename(final_dir, aside);
        fs::remove_all(aside);
      }
      fs::rename(tmp, final_dir);
      fsync_path(root, true);
      write_durably(fs::path(root) / ("latest.tmp-" + std::to_string(::getpid())), final_dir.filename().string() + "\n");
      fs::rename(fs::path(root) / ("latest.tmp-" + std::to_string(::getpid())), fs::path(root) / "latest");
      fsync_path(root, true);
      result = final_dir.string();
      try {  // the checkpoint is committed: a failure to delete old ones must not fail the save
        prune(root, keep, keep_every, tmp, final_dir);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "warning: checkpoint of step %lld saved, but pruning old ones failed: %s\n",
                     static_cast<long long>(meta.step), e.what());
      }
    } catch (const std::exception& e) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      result = std::string("\x01") + e.what();
    }
  }
  result = broadcast_string(world, result);
  // A failed save is a runtime failure (disk full, permissions), not a bad input: exit code 1.
  if (result.empty() || result[0] == '\x01')
    throw std::runtime_error("checkpoint of step " + std::to_string(meta.step) + ": " + (result.empty() ? "failed" : result.substr(1)));
  return result;
}

void drop_checkpoints_after(const std::string& root, int64_t step) {
  for (const auto& [s, dir] : step_dirs(root)) {
    if (s <= step) break;  // newest first: the rest are older
    const fs::path doomed = dir.string() + ".tmp-abandoned-" + std::to_string(::getpid());
    fs::rename(dir, doomed);  // atomic: a kill below leaves a .tmp- directory, never a half step_N
    fs::remove_all(doomed);
  }
}

std::string save_checkpoint(parallel::ProcessGroup& world, const std::vector<LocalPiece>& pieces, Manifest meta,
                            const std::string& root, int64_t keep, int64_t keep_every) {
  const std::string tmp = begin_save(world, root, meta.step);
  return commit_save(world, tmp, write_rank_file(tmp, world.rank(), pieces), std::move(meta), root, keep, keep_every);
}

}  // namespace shoestring::ckpt
