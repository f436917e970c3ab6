// libFuzzer target: a checkpoint whose manifest.json is the fuzz input, over two valid rank files
// written once at start-up. Every input must end in a CheckpointError or in tensors read whole:
// read_manifest, verify, choose_checkpoint (explicit and auto) and CheckpointReader::read of every
// tensor (whole and an inner range). Any other exception, crash, hang or UB is a finding.
//
// HDF5 stamps creation times into its files, so their sizes are stable but their SHA-256 is not:
// the input's @SHA0@/@SHA1@ and @SIZE0@/@SIZE1@ are replaced by rank_00000.h5's and
// rank_00001.h5's real values, letting seeds (and mutations of them) pass verification. Corrupt
// HDF5 bytes are not fuzzed here: verification rejects any file whose SHA-256 differs before
// libhdf5 opens it (test_checkpoint proves that order).
#include <ATen/ATen.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/sha256.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/checkpoint/shard_file.h"

namespace fs = std::filesystem;
using namespace shoestring::ckpt;

namespace {

struct Fixture {
  fs::path root, dir;
  std::string sha[2], size[2];
};

// checkpoints/step_0000001/rank_0000{0,1}.h5: param/w [2, 3] float32 split 4 + 2 over the two
// files, param/b [3] float64 in rank 1's; a seed manifest describing them is in the seeds.
Fixture make_fixture() {
  // libFuzzer ends with _Exit (no atexit), so each start removes what dead earlier runs left.
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path())) {
    const std::string n = e.path().filename().string(), prefix = "shoestring_fuzz_ckpt_";
    if (n.rfind(prefix, 0) == 0 && n.size() > prefix.size() &&
        n.find_first_not_of("0123456789", prefix.size()) == std::string::npos &&
        ::kill(pid_t(std::stol(n.substr(prefix.size()))), 0) != 0 && errno == ESRCH)
      fs::remove_all(e.path());
  }
  Fixture f;
  f.root = fs::temp_directory_path() / ("shoestring_fuzz_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(f.root);
  f.dir = f.root / step_dir_name(1);
  fs::create_directories(f.dir);
  const at::Tensor w = at::arange(6, at::kFloat), b = at::arange(3, at::kDouble);
  write_shard_file((f.dir / "rank_00000.h5").string(), {{"d0", w.narrow(0, 0, 4).contiguous()}});
  write_shard_file((f.dir / "rank_00001.h5").string(), {{"d0", w.narrow(0, 4, 2).contiguous()}, {"d1", b}});
  for (int r = 0; r < 2; ++r) {
    uint64_t n = 0;
    f.sha[r] = shoestring::data::sha256_file((f.dir / ("rank_0000" + std::to_string(r) + ".h5")).string(), &n);
    f.size[r] = std::to_string(n);
  }
  return f;
}

const Fixture& fixture() {
  static const Fixture f = make_fixture();
  return f;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

void read_all(const std::string& dir) {
  CheckpointReader r(dir);
  for (const auto& t : r.manifest().tensors) {
    const int64_t n = t.numel();  // read_manifest guarantees 0 <= n without overflow
    if (n > (1 << 16)) continue;
    const auto dtype = t.dtype == "float64" ? at::kDouble : at::kFloat;
    r.read(t.name, t.shape, 0, at::empty({n}, dtype));
    if (n > 2) r.read(t.name, t.shape, 1, at::empty({n - 2}, dtype));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = fixture();
  std::string text(reinterpret_cast<const char*>(data), size);
  for (int r = 0; r < 2; ++r) {
    replace_all(text, "@SHA" + std::to_string(r) + "@", f.sha[r]);
    replace_all(text, "@SIZE" + std::to_string(r) + "@", f.size[r]);
  }
  std::ofstream((f.dir / kManifestName).string(), std::ios::binary | std::ios::trunc) << text;
  const std::string dir = f.dir.string();
  try {
    const Manifest m = read_manifest(dir);
    (void)verify(dir, m);
  } catch (const CheckpointError&) {
  }
  std::vector<std::string> warnings;
  try {
    choose_checkpoint(dir, f.root.string(), warnings);
  } catch (const CheckpointError&) {
  }
  try {
    choose_checkpoint("auto", f.root.string(), warnings);
  } catch (const CheckpointError&) {
  }
  // The reader regardless of verify's verdict: it must hold up on its own, not only behind verify.
  try {
    read_all(dir);
  } catch (const CheckpointError&) {
  }
  return 0;
}
