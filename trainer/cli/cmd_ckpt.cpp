// shoestring ckpt inspect DIR | verify DIR | convert DIR ... | export DIR ...: checkpoints without training.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>

#include "shoestring/build_info.h"
#include "trainer/config_loader.h"
#include "trainer/train.h"

#include "trainer/checkpoint/export_safetensors.h"
#include "trainer/checkpoint/manifest.h"
#include "trainer/cli/commands.h"

namespace shoestring::cli {

namespace {

constexpr const char* kUsage =
    "usage: shoestring ckpt inspect DIR   layout, step, tensors, sizes, checksums\n"
    "       shoestring ckpt verify DIR    exit 0 when the checkpoint is complete and intact, else 1 and one\n"
    "                                     line per problem (2 when DIR holds no readable manifest)\n"
    "       [mpirun -np N] shoestring ckpt convert DIR --out ROOT [--set parallel.KEY=VALUE ...]\n"
    "                                     re-save DIR under the layout of its config with the --set\n"
    "                                     changes, run with that layout's rank count: ROOT/step_N\n"
    "       shoestring ckpt export DIR --format safetensors --out OUTDIR [--dtype fp32|bf16] [--force]\n"
    "                                     model weights with Hugging Face names + config.json\n"
    "                                     (docs/checkpoints.md); optimizer state and MTP dropped;\n"
    "                                     --force replaces an existing OUTDIR/model.safetensors, config.json\n";

// verify()'s problems plus the one ckpt export and convert would meet next: an embedded config that
// is YAML but not a valid config (verify itself lives below the config loader).
std::vector<std::string> problems_of(const std::string& dir, const ckpt::Manifest& m) {
  auto problems = ckpt::verify(dir, m);
  if (problems.empty()) {
    try {
      load_config_text(m.config_yaml, dir + "/" + ckpt::kManifestName + " (config)");
    } catch (const ConfigError& e) {
      problems.push_back(e.what());
    }
  }
  return problems;
}

int inspect(const std::string& dir) {
  const ckpt::Manifest m = ckpt::read_manifest(dir);  // CheckpointError -> exit 2 in main
  const auto problems = problems_of(dir, m);
  uint64_t bytes = 0;
  for (const auto& f : m.files) bytes += f.bytes;
  std::printf("checkpoint %s\n  step     %lld (AdamW step %lld)\n  layout   %s\n  data     %s\n  code     %s\n",
              dir.c_str(), static_cast<long long>(m.step), static_cast<long long>(m.adam_steps),
              m.layout.to_string().c_str(), m.loader_state.c_str(), m.code_version.c_str());
  std::printf("  files    %zu, %.2f MiB\n", m.files.size(), double(bytes) / (1 << 20));
  for (const auto& f : m.files) {
    bool ok = true;
    for (const auto& p : problems)
      if (p.find(f.name) != std::string::npos) ok = false;
    std::printf("    %-16s rank %-4d %12llu bytes  sha256 %.16s...  %s\n", f.name.c_str(), f.rank,
                static_cast<unsigned long long>(f.bytes), f.sha256.c_str(), ok ? "ok" : "BAD");
  }
  std::printf("  tensors  %zu\n", m.tensors.size());
  for (const auto& t : m.tensors) {
    std::string shape;
    for (size_t d = 0; d < t.shape.size(); ++d) shape += (d ? "x" : "") + std::to_string(t.shape[d]);
    std::printf("    %-60s %-8s %-16s %zu piece(s)\n", t.name.c_str(), t.dtype.c_str(), shape.empty() ? "scalar" : shape.c_str(),
                t.pieces.size());
  }
  std::printf("  status   %s\n", problems.empty() ? "ok" : (std::to_string(problems.size()) + " problem(s); see ckpt verify").c_str());
  return problems.empty() ? 0 : 1;
}

// ckpt ACTION DIR [--name value ...] [--flag ...]: the directory, every value of each accepted
// option (repeatable, in order) and the flags given. A usage error prints one line naming the
// action and the argument, and gives nullopt.
struct DirArgs {
  std::string dir;
  std::map<std::string, std::vector<std::string>> values;
  std::set<std::string> flags;
  std::string last(const std::string& name) const {
    const auto it = values.find(name);
    return it == values.end() ? "" : it->second.back();
  }
};

std::optional<DirArgs> parse_dir_args(const Args& args, const std::set<std::string>& names,
                                      const std::set<std::string>& flags = {}) {
  const std::string who = "shoestring ckpt " + args[0] + ": ";
  DirArgs out;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (names.count(a)) {
      // `--out --force` is a forgotten value, not an output directory named --force.
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0) {
        std::cerr << who << a << " needs a value (see shoestring ckpt --help)\n";
        return std::nullopt;
      }
      out.values[a].push_back(args[++i]);
    } else if (flags.count(a)) {
      out.flags.insert(a);
    } else if (a.rfind("-", 0) != 0 && out.dir.empty()) {
      out.dir = a;
    } else {
      std::cerr << who << "unexpected argument '" << a << "' (see shoestring ckpt --help)\n";
      return std::nullopt;
    }
  }
  if (out.dir.empty()) {
    std::cerr << who << "needs a checkpoint directory DIR (see shoestring ckpt --help)\n";
    return std::nullopt;
  }
  return out;
}

// ckpt export DIR --format safetensors --out OUTDIR [--dtype D] [--force]: usage errors are one
// line, exit 2.
int export_cmd(const Args& args) {
  const auto parsed = parse_dir_args(args, {"--format", "--out", "--dtype"}, {"--force"});
  if (!parsed) return 2;
  const std::string &dir = parsed->dir, format = parsed->last("--format"), out = parsed->last("--out"),
                    dtype = parsed->last("--dtype");
  if (out.empty()) {
    std::cerr << "shoestring ckpt export: needs --out OUTDIR (see shoestring ckpt --help)\n";
    return 2;
  }
  if (format != "safetensors") {
    std::cerr << "shoestring ckpt export: --format must be safetensors" << (format.empty() ? "" : ", not '" + format + "'")
              << "\n";
    return 2;
  }
  if (!dtype.empty() && dtype != "fp32" && dtype != "bf16") {
    std::cerr << "shoestring ckpt export: --dtype must be fp32 or bf16, not '" << dtype << "'\n";
    return 2;
  }
  ckpt::read_manifest(dir);  // not a checkpoint at all: say that first (CheckpointError -> exit 2)
  // Another model's export is not replaced by accident; --force replaces files, never a directory.
  std::string existing, directories;
  for (const char* name : {"model.safetensors", "config.json"}) {
    const std::filesystem::path p = std::filesystem::path(out) / name;
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::symlink_status(p, ec))) continue;
    std::string& list = std::filesystem::is_directory(p, ec) ? directories : existing;
    list += (list.empty() ? "" : ", ") + p.string();
  }
  if (!directories.empty()) {
    std::cerr << "shoestring ckpt export: " << directories << ": is a directory, expected a file; choose another --out\n";
    return 2;
  }
  if (!existing.empty() && !parsed->flags.count("--force")) {
    std::cerr << "shoestring ckpt export: " << existing << " already exist(s); choose another --out or pass --force to replace\n";
    return 2;
  }
  const auto r = ckpt::export_safetensors(dir, out, dtype);  // CheckpointError -> 2, others -> 1 in main
  std::printf("%s: %zu tensors, %.2f MiB -> %s/model.safetensors, %s/config.json\n", dir.c_str(), r.tensors,
              double(r.bytes) / (1 << 20), out.c_str(), out.c_str());
  return 0;
}

// ckpt convert DIR --out ROOT [--set k=v ...]: the checkpoint's own config with the --set changes
// (normally parallel.*) gives the target layout; the ranks of this job load DIR into it and save.
int convert_cmd(const Args& args, const parallel::World& world) {
  namespace fs = std::filesystem;
  const auto parsed = parse_dir_args(args, {"--out", "--set"});
  if (!parsed) return 2;
  const std::string &dir = parsed->dir, out = parsed->last("--out");
  const std::vector<std::string> sets = parsed->values.count("--set") ? parsed->values.at("--set") : std::vector<std::string>{};
  if (out.empty()) {
    std::cerr << "shoestring ckpt convert: needs --out ROOT (see shoestring ckpt --help)\n";
    return 2;
  }
  const ckpt::Manifest m = ckpt::read_manifest(dir);  // CheckpointError -> exit 2 in main
  const std::string target = (fs::path(out) / ckpt::step_dir_name(m.step)).string();
  if (fs::exists(target)) {
    std::cerr << "shoestring ckpt convert: " << target << " already exists; choose another --out\n";
    return 2;
  }
  const Config cfg = load_config_text(m.config_yaml, dir + "/" + ckpt::kManifestName + " (config)", sets);
  TrainOptions options;
  options.resume = dir;
  options.convert_to = out;
  options.code_version = std::string("shoestring ") + SHOESTRING_VERSION + " (git " + SHOESTRING_GIT_COMMIT + ")";
  // train() creates ROOT (rank 0) before it verifies and loads DIR: a failure removes what this
  // command created, ROOT (and parents) only when they did not exist, else TARGET and the
  // step_N.tmp-PID of a failed save (rank 0's pid names it).
  fs::path created;
  std::error_code ec;
  for (fs::path p = out; !p.empty() && !fs::exists(p, ec) && p != p.parent_path(); p = p.parent_path()) created = p;
  TrainSummary s;
  try {
    s = train(cfg, world, options);
  } catch (...) {
    if (world.rank == 0 && !created.empty()) fs::remove_all(created, ec);
    if (world.rank == 0 && created.empty())  // TARGET did not exist either (checked above)
      for (const std::string& p : {target + ".tmp-" + std::to_string(::getpid()), target}) fs::remove_all(p, ec);
    throw;
  }
  if (world.rank == 0)
    std::printf("%s (%s) -> %s (%s)\n", dir.c_str(), m.layout.to_string().c_str(), s.last_checkpoint.c_str(),
                ckpt::read_manifest(s.last_checkpoint).layout.to_string().c_str());
  return 0;
}

}  // namespace

int cmd_ckpt(const Args& args, const parallel::World& world) {
  if (args.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  // --help anywhere (ckpt verify --help) is a request for help, never a directory named --help.
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
  const std::string& action = args[0];
  if (action == "export") return export_cmd(args);
  if (action == "convert") return convert_cmd(args, world);
  if (action != "inspect" && action != "verify") {
    std::cerr << "shoestring ckpt: unknown action '" << action << "' (inspect, verify, convert, export; see --help)\n";
    return 2;
  }
  const auto parsed = parse_dir_args(args, {});
  if (!parsed) return 2;
  if (action == "inspect") return inspect(parsed->dir);
  // No readable manifest: not a checkpoint at all, a checkpoint error (exit 2 in main) as for the
  // other actions; problems of a readable checkpoint are verify's findings (exit 1).
  const ckpt::Manifest m = ckpt::read_manifest(parsed->dir);
  const auto problems = problems_of(parsed->dir, m);
  for (const auto& p : problems) std::cout << p << "\n";
  if (problems.empty()) std::cout << parsed->dir << ": ok\n";
  return problems.empty() ? 0 : 1;
}

}  // namespace shoestring::cli
