// shoestring ckpt inspect DIR | verify DIR | convert DIR ... | export DIR ...: checkpoints without training.
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
    "                                     line per problem\n"
    "       [mpirun -np N] shoestring ckpt convert DIR --out ROOT [--set parallel.KEY=VALUE ...]\n"
    "                                     re-save DIR under the layout of its config with the --set\n"
    "                                     changes, run with that layout's rank count: ROOT/step_N\n"
    "       shoestring ckpt export DIR --format safetensors --out OUTDIR [--dtype fp32|bf16]\n"
    "                                     model weights with Hugging Face names + config.json\n"
    "                                     (docs/checkpoints.md); optimizer state and MTP dropped\n";

int inspect(const std::string& dir) {
  const ckpt::Manifest m = ckpt::read_manifest(dir);  // CheckpointError -> exit 2 in main
  const auto problems = ckpt::verify(dir, m);
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

// ckpt SUBCOMMAND DIR [--name value ...]: the directory and every value of each accepted option
// (repeatable, in order). A usage error prints one line and gives nullopt.
struct DirArgs {
  std::string dir;
  std::map<std::string, std::vector<std::string>> values;
  std::string last(const std::string& name) const {
    const auto it = values.find(name);
    return it == values.end() ? "" : it->second.back();
  }
};

std::optional<DirArgs> parse_dir_args(const Args& args, const std::set<std::string>& names) {
  DirArgs out;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (names.count(a)) {
      if (i + 1 >= args.size()) {
        std::cerr << "usage error: " << a << " needs a value\n";
        return std::nullopt;
      }
      out.values[a].push_back(args[++i]);
    } else if (a.rfind("--", 0) != 0 && out.dir.empty()) {
      out.dir = a;
    } else {
      std::cerr << "usage error: unexpected argument '" << a << "' (shoestring ckpt --help)\n";
      return std::nullopt;
    }
  }
  return out;
}

// ckpt export DIR --format safetensors --out OUTDIR [--dtype D]: usage errors are one line, exit 2.
int export_cmd(const Args& args) {
  const auto parsed = parse_dir_args(args, {"--format", "--out", "--dtype"});
  if (!parsed) return 2;
  const std::string &dir = parsed->dir, format = parsed->last("--format"), out = parsed->last("--out"),
                    dtype = parsed->last("--dtype");
  if (dir.empty() || out.empty()) {
    std::cerr << "usage error: ckpt export needs DIR and --out OUTDIR (shoestring ckpt --help)\n";
    return 2;
  }
  if (format != "safetensors") {
    std::cerr << "usage error: --format must be safetensors" << (format.empty() ? "" : ", not '" + format + "'") << "\n";
    return 2;
  }
  if (!dtype.empty() && dtype != "fp32" && dtype != "bf16") {
    std::cerr << "usage error: --dtype must be fp32 or bf16, not '" << dtype << "'\n";
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
  const auto parsed = parse_dir_args(args, {"--out", "--set"});
  if (!parsed) return 2;
  const std::string &dir = parsed->dir, out = parsed->last("--out");
  const std::vector<std::string> sets = parsed->values.count("--set") ? parsed->values.at("--set") : std::vector<std::string>{};
  if (dir.empty() || out.empty()) {
    std::cerr << "usage error: ckpt convert needs DIR and --out ROOT (shoestring ckpt --help)\n";
    return 2;
  }
  const ckpt::Manifest m = ckpt::read_manifest(dir);  // CheckpointError -> exit 2 in main
  const std::string target = (std::filesystem::path(out) / ckpt::step_dir_name(m.step)).string();
  if (std::filesystem::exists(target)) {
    std::cerr << "ckpt convert: " << target << " already exists; choose another --out\n";
    return 2;
  }
  const Config cfg = load_config_text(m.config_yaml, dir + "/" + ckpt::kManifestName + " (config)", sets);
  TrainOptions options;
  options.resume = dir;
  options.convert_to = out;
  options.code_version = std::string("shoestring ") + SHOESTRING_VERSION + " (git " + SHOESTRING_GIT_COMMIT + ")";
  const TrainSummary s = train(cfg, world, options);
  if (world.rank == 0)
    std::printf("%s (%s) -> %s (%s)\n", dir.c_str(), m.layout.to_string().c_str(), s.last_checkpoint.c_str(),
                ckpt::read_manifest(s.last_checkpoint).layout.to_string().c_str());
  return 0;
}

}  // namespace

int cmd_ckpt(const Args& args, const parallel::World& world) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << kUsage;
    return 0;
  }
  if (!args.empty() && args[0] == "export") return export_cmd(args);
  if (!args.empty() && args[0] == "convert") return convert_cmd(args, world);
  if (args.size() != 2 || (args[0] != "inspect" && args[0] != "verify")) {
    std::cerr << kUsage;
    return 2;
  }
  if (args[0] == "inspect") return inspect(args[1]);
  const auto problems = ckpt::verify(args[1]);
  for (const auto& p : problems) std::cout << p << "\n";
  if (problems.empty()) std::cout << args[1] << ": ok\n";
  return problems.empty() ? 0 : 1;
}

}  // namespace shoestring::cli
