#include "trainer/checkpoint/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "data/data_error.h"
#include "data/sha256.h"
#include "trainer/checkpoint/shard_file.h"

namespace fs = std::filesystem;

namespace shoestring::ckpt {

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return -1;  // read_manifest refuses such shapes
  return n;
}

std::string Layout::to_string() const {
  return "dp " + std::to_string(dp) + " ep " + std::to_string(ep) + " pp " + std::to_string(pp) + " zero1 " +
         (zero1 ? "on" : "off") + " (" + std::to_string(world_size) + " ranks)";
}

const TensorEntry* Manifest::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

}  // namespace

std::string to_json(const Manifest& m) {
  std::ostringstream s;
  s << "{\n  \"format\": " << quote(kFormat) << ",\n  \"step\": " << m.step << ",\n  \"adam_steps\": " << m.adam_steps
    << ",\n  \"loader_state\": " << quote(m.loader_state) << ",\n  \"layout\": {\"world_size\": " << m.layout.world_size
    << ", \"dp\": " << m.layout.dp << ", \"ep\": " << m.layout.ep << ", \"pp\": " << m.layout.pp
    << ", \"zero1\": " << (m.layout.zero1 ? "true" : "false") << "},\n  \"code_version\": " << quote(m.code_version)
    << ",\n  \"config\": " << quote(m.config_yaml) << ",\n  \"files\": [";
  for (size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    s << (i ? "," : "") << "\n    {\"name\": " << quote(f.name) << ", \"rank\": " << f.rank << ", \"bytes\": " << f.bytes
      << ", \"sha256\": " << quote(f.sha256) << "}";
  }
  s << "\n  ],\n  \"tensors\": [";
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const auto& t = m.tensors[i];
    s << (i ? "," : "") << "\n    {\"name\": " << quote(t.name) << ", \"dtype\": " << quote(t.dtype) << ", \"shape\": [";
    for (size_t d = 0; d < t.shape.size(); ++d) s << (d ? ", " : "") << t.shape[d];
    s << "], \"pieces\": [";
    for (size_t p = 0; p < t.pieces.size(); ++p) {
      const auto& pc = t.pieces[p];
      s << (p ? ", " : "") << "{\"file\": " << quote(pc.file) << ", \"dataset\": " << quote(pc.dataset)
        << ", \"offset\": " << pc.offset << ", \"numel\": " << pc.numel << "}";
    }
    s << "]}";
  }
  s << "\n  ]\n}\n";
  return s.str();
}

namespace {

// A name of a file of the checkpoint directory itself: the manifest must not make verify or the
// reader open anything outside it (../x, /dev/..., sub/dir).
bool plain_file_name(const std::string& n) { return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos; }

// What the JSON types cannot say: sizes that fit int64 and pieces inside their tensor, so neither
// verify's coverage check nor the reader's range arithmetic can overflow.
void check_ranges(const Manifest& m, const std::string& path) {
  const Layout& l = m.layout;
  if (m.adam_steps < 0 || l.world_size < 1 || l.dp < 1 || l.ep < 1 || l.pp < 1)
    throw CheckpointError(path + ": adam_steps must be >= 0 and the layout's world_size, dp, ep, pp >= 1");
  for (const auto& f : m.files)
    if (!plain_file_name(f.name))
      throw CheckpointError(path + ": file name '" + f.name + "' is not a plain name inside the checkpoint directory");
  for (const auto& t : m.tensors) {
    const int64_t n = t.numel();
    if (n < 0 || std::any_of(t.shape.begin(), t.shape.end(), [](int64_t d) { return d < 0; }))
      throw CheckpointError(path + ": tensor " + t.name + ": shape needs sizes >= 0 whose product fits in int64");
    for (const auto& p : t.pieces) {
      if (!plain_file_name(p.file))
        throw CheckpointError(path + ": tensor " + t.name + ": piece file '" + p.file +
                              "' is not a plain name inside the checkpoint directory");
      if (p.offset < 0 || p.numel < 0 || p.offset > n - p.numel)
        throw CheckpointError(path + ": tensor " + t.name + ": piece [" + std::to_string(p.offset) + ", +" +
                              std::to_string(p.numel) + ") lies outside its " + std::to_string(n) + " elements");
    }
  }
}

}  // namespace

Manifest read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw CheckpointError(dir + ": no such directory (expected a checkpoint directory)");
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw CheckpointError(path + ": missing (not a complete checkpoint)");
  // yaml-cpp would read a directory through an ifstream and fail in libstdc++'s own words
  // ("basic_filebuf::underflow ... Is a directory"), naming no file; a FIFO would block.
  if (fs::is_directory(st)) throw CheckpointError(path + ": is a directory, expected a file");
  if (!fs::is_regular_file(st)) throw CheckpointError(path + ": not a regular file");
  // JSON is YAML: yaml-cpp, already a dependency, parses the manifest.
  try {
    const YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap() || root["format"].as<std::string>("") != kFormat)
      throw CheckpointError(path + ": not a " + std::string(kFormat) + " manifest");
    Manifest m;
    m.step = root["step"].as<int64_t>();
    m.adam_steps = root["adam_steps"].as<int64_t>();
    m.loader_state = root["loader_state"].as<std::string>();
    const YAML::Node l = root["layout"];
    m.layout = {l["world_size"].as<int>(), l["dp"].as<int>(), l["ep"].as<int>(), l["pp"].as<int>(), l["zero1"].as<bool>()};
    m.code_version = root["code_version"].as<std::string>("");
    m.config_yaml = root["config"].as<std::string>("");
    for (const auto& f : root["files"])
      m.files.push_back({f["name"].as<std::string>(), f["rank"].as<int>(), f["bytes"].as<uint64_t>(),
                         f["sha256"].as<std::string>()});
    for (const auto& t : root["tensors"]) {
      TensorEntry e;
      e.name = t["name"].as<std::string>();
      e.dtype = t["dtype"].as<std::string>();
      for (const auto& d : t["shape"]) e.shape.push_back(d.as<int64_t>());
      for (const auto& p : t["pieces"])
        e.pieces.push_back({p["file"].as<std::string>(), p["dataset"].as<std::string>(), p["offset"].as<int64_t>(),
                            p["numel"].as<int64_t>()});
      m.tensors.push_back(std::move(e));
    }
    if (m.step < 0 || m.tensors.empty()) throw CheckpointError(path + ": no step or no tensors");
    check_ranges(m, path);
    return m;
  } catch (const YAML::Exception& e) {
    throw CheckpointError(path + ": malformed manifest: " + e.msg);
  } catch (const std::ios_base::failure& e) {
    throw CheckpointError(path + ": cannot read: " + e.what());
  }
}

namespace {

std::vector<std::string> verify_part(const std::string& dir, const Manifest& m, bool checksums, int rank, int size) {
  std::vector<std::string> problems;
  std::map<std::string, const FileEntry*> files;
  // Every dataset each file must hold, as the reader will ask for it.
  std::map<std::string, std::vector<DatasetExpectation>> datasets;
  for (const auto& t : m.tensors)
    for (const auto& p : t.pieces) datasets[p.file].push_back({p.dataset, t.name, t.dtype, p.numel});
  for (size_t i = 0; i < m.files.size(); ++i) {
    const FileEntry& f = m.files[i];
    files[f.name] = &f;
    if (int(i % size_t(size)) != rank) continue;
    const fs::path p = fs::path(dir) / f.name;
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      problems.push_back(p.string() + ": is a directory, expected a file");
      continue;
    }
    const uint64_t size = fs::file_size(p, ec);
    if (ec) {
      problems.push_back(p.string() + ": missing (" + ec.message() + ")");
      continue;
    }
    if (size != f.bytes) {
      problems.push_back(p.string() + ": " + std::to_string(size) + " bytes, the manifest says " +
                         std::to_string(f.bytes) + " (truncated or overwritten)");
      continue;
    }
    if (!checksums) continue;
    try {
      const std::string sum = data::sha256_file(p.string());
      if (sum != f.sha256) {
        problems.push_back(p.string() + ": SHA-256 " + sum + " does not match the manifest's " + f.sha256);
        continue;
      }
    } catch (const data::DataError& e) {
      problems.push_back(e.what());
      continue;
    }
    // Only now, its bytes being the writer's, may libhdf5 open it. Metadata only: cheap next to
    // the hash. The manifest is not hashed, so a dataset it names may still be absent.
    for (auto& problem : check_datasets(p.string(), datasets[f.name])) problems.push_back(std::move(problem));
  }
  if (rank != 0) return problems;
  const std::string where = (fs::path(dir) / kManifestName).string() + ": ";
  // ckpt export and convert build the model from this config: it must at least be a YAML mapping.
  try {
    if (!YAML::Load(m.config_yaml).IsMap()) problems.push_back(where + "the embedded config is not a YAML mapping");
  } catch (const YAML::Exception& e) {
    problems.push_back(where + "the embedded config is not valid YAML: " + e.msg);
  }
  for (const auto& t : m.tensors) {
    if (t.dtype != "float32" && t.dtype != "float64") problems.push_back(where + "tensor " + t.name + ": unknown dtype " + t.dtype);
    // Pieces must tile [0, numel) exactly once: a gap would leave elements unrestored.
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const auto& p : t.pieces) {
      if (!files.count(p.file))
        problems.push_back(where + "tensor " + t.name + ": piece in " + p.file + ", a file the manifest does not list");
      ranges.emplace_back(p.offset, p.numel);
    }
    std::sort(ranges.begin(), ranges.end());
    int64_t at = 0;
    bool ok = true;
    for (const auto& [off, n] : ranges) {
      if (off != at || n <= 0) ok = false;
      at = off + n;
    }
    if (!ok || at != t.numel())
      problems.push_back(where + "tensor " + t.name + ": its pieces do not cover its " + std::to_string(t.numel()) +
                         " elements exactly once");
  }
  return problems;
}

}  // namespace

std::vector<std::string> verify(const std::string& dir, bool checksums) { return verify_share(dir, 0, 1, checksums); }

std::vector<std::string> verify(const std::string& dir, const Manifest& m, bool checksums) {
  return verify_part(dir, m, checksums, 0, 1);
}

std::vector<std::string> verify_share(const std::string& dir, int rank, int size, bool checksums) {
  try {
    return verify_part(dir, read_manifest(dir), checksums, rank, size);
  } catch (const CheckpointError& e) {
    if (rank == 0) return {e.what()};
    return {};
  }
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%07lld", static_cast<long long>(step));
  return buf;
}

int64_t parse_step_dir_name(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step_") != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

std::vector<std::pair<int64_t, fs::path>> step_dirs(const std::string& root) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return found;
  for (const auto& e : fs::directory_iterator(root))
    if (const int64_t s = parse_step_dir_name(e.path().filename().string()); s >= 0 && e.is_directory())
      found.emplace_back(s, e.path());
  std::sort(found.rbegin(), found.rend());
  return found;
}

}  // namespace shoestring::ckpt
