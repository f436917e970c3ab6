#include "trainer/train_output.h"

#ifdef SHOESTRING_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include "trainer/checkpoint/manifest.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/optim/lr_schedule.h"

namespace fs = std::filesystem;

namespace shoestring {

namespace {

void prepare_run_dir(const std::string& dir, const Config& cfg, const TrainOptions& options) {
  const bool resuming = !options.resume.empty();
  // A checkpoint named on the command line is looked at before anything is created: a mistyped
  // --resume must not leave an empty run directory behind. (resume_run verifies it in full.)
  if (resuming && options.resume != "auto") {
    if (!fs::is_directory(options.resume)) throw ckpt::CheckpointError(options.resume + ": no such checkpoint directory");
    ckpt::read_manifest(options.resume);
  }
  if (!resuming && fs::exists(fs::path(dir) / "metrics.jsonl"))
    throw ConfigError(dir + ": already holds a run (metrics.jsonl); set log.run_dir to a new directory, or "
                      "pass --resume to continue it");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create run directory: " + ec.message());
  // A resumed run's config.yaml is rewritten only once its checkpoint has loaded
  // (write_run_config): a refused resume must leave the file that resumes the run intact.
  if (!resuming) write_run_config(dir, cfg);
}

}  // namespace

void write_run_config(const std::string& run_dir, const Config& cfg) {
  // Through a temporary and a rename, so the file is whole or unchanged even if the job dies.
  const fs::path path = fs::path(run_dir) / "config.yaml", tmp = fs::path(run_dir) / "config.yaml.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << to_yaml(cfg);
    out.close();  // errors such as a full quota can surface only here
    if (!out) throw std::runtime_error(tmp.string() + ": cannot write the run's config");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error(path.string() + ": cannot write the run's config: " + ec.message());
}

std::string open_run_dir(const Config& cfg, const TrainOptions& options, bool converting,
                         parallel::ProcessGroup& world_group, bool rank0) {
  // Rank 0 prepares the directory; the others learn the outcome and fail with the same kind of
  // error, so that a config error stays one line and exit code 2 on every rank.
  constexpr char kOk = 'o', kConfig = 'c', kCheckpoint = 'k', kOther = 'x';
  std::string reply;
  if (rank0) {
    try {
      std::string run_dir = converting ? options.convert_to : resolve_run_dir(cfg);
      if (converting)
        fs::create_directories(run_dir);
      else
        prepare_run_dir(run_dir, cfg, options);
      reply = std::string(1, kOk) + run_dir;
    } catch (const ConfigError& e) {
      reply = std::string(1, kConfig) + e.what();
    } catch (const ckpt::CheckpointError& e) {
      reply = std::string(1, kCheckpoint) + e.what();
    } catch (const std::exception& e) {
      reply = std::string(1, kOther) + e.what();
    }
  }
  reply = broadcast_string(world_group, reply);
  const char kind = reply.empty() ? kOther : reply[0];
  if (kind == kOk) return reply.substr(1);
  const std::string what = kind == kConfig || rank0 ? reply.substr(1) : "rank 0 could not prepare the run directory (see its message)";
  if (kind == kConfig) throw ConfigError(what);
  if (kind == kCheckpoint) throw ckpt::CheckpointError(what);
  throw std::runtime_error(what);
}

void truncate_metrics(const fs::path& path, int64_t last_step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::vector<std::pair<int64_t, std::string>> lines;
  // Every line this trainer writes is one whole record with a step; anything else (the torn last
  // line of a run killed mid-write) is dropped.
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find("\"step\":");
    if (at == std::string::npos || line.empty() || line.back() != '}') continue;
    const char* first = line.c_str() + at + 7;
    char* end = nullptr;
    const long long step = std::strtoll(first, &end, 10);
    if (end != first) lines.emplace_back(step, line);
  }
  in.close();
  size_t end = 0;  // lines kept: [0, end)
  for (size_t i = 0; i < lines.size(); ++i)
    if (lines[i].first == last_step) end = i + 1;
  std::string kept;
  for (size_t i = 0; i < lines.size(); ++i)
    if (end > 0 ? i < end : lines[i].first <= last_step) kept += lines[i].second + "\n";
  std::ofstream(path, std::ios::trunc) << kept;
}

std::string banner(const Config& cfg, int64_t accum, int dp, int64_t params, int64_t activated, const at::Device& dev,
                   int threads, const parallel::World& world, const std::string& data) {
  std::ostringstream s;
  const auto& m = cfg.model;
  s << "shoestring train: " << cfg.name << "\n"
    << "  model    " << params << " parameters, " << activated << " activated per token (" << m.n_layers
    << " layers, d_model " << m.d_model << ", " << m.attention << " " << m.n_heads << " heads, vocab " << m.vocab_size;
  if (m.n_routed_experts > 0)
    s << ", " << m.n_routed_experts << " routed experts top-" << m.n_activated_experts << " + " << m.n_shared_experts
      << " shared, " << m.n_dense_layers << " dense layers";
  if (m.mtp_depth > 0) s << ", mtp depth " << m.mtp_depth;
  s << ")\n"
    << "  train    " << cfg.train.steps << " steps x " << accum << " x " << dp << " data-parallel ranks x "
    << cfg.train.micro_batch_size << " seqs x " << cfg.train.seq_len << " tokens, " << cfg.train.precision
    << ", seed " << cfg.train.seed << "\n"
    << "  optim    adamw lr " << cfg.optim.lr << " (" << cfg.optim.schedule << ", warmup "
    << cfg.optim.warmup_steps << "), wd " << cfg.optim.weight_decay << ", clip " << cfg.optim.grad_clip << "\n"
    << "  data     " << data << "\n"
    << "  device   " << dev.str() << ", " << threads << " threads/rank, " << world.size << " rank(s)";
  // Legal (a short smoke run of a long recipe), but usually an override that forgot the warmup.
  if (cfg.optim.warmup_steps >= cfg.train.steps && cfg.train.steps > 0)
    s << "\n  warning  optim.warmup_steps (" << cfg.optim.warmup_steps << ") is not below train.steps ("
      << cfg.train.steps << "): the learning rate peaks at "
      << optim::lr_at(cfg.optim, cfg.train.steps - 1, cfg.train.steps) << ", short of optim.lr " << cfg.optim.lr;
  return s.str();
}

std::string parallel_line(const Config& cfg, const parallel::Mesh& mesh, int64_t accum, int64_t state_bytes,
                          const std::string& backend, const PipelinePlan& plan) {
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "  parallel dp %d x pp %d (ep %d), %s gradients in %g MiB buckets, zero1 %s, %lld micro-batches "
                "per rank per step, optimizer state %.1f MiB on this rank",
                mesh.shape.dp, mesh.shape.pp, mesh.shape.ep, backend.c_str(), cfg.parallel.bucket_mb,
                cfg.parallel.zero1 ? "on" : "off", static_cast<long long>(accum), double(state_bytes) / (1 << 20));
  std::string out = buf;
  if (mesh.shape.pp > 1)
    out += "\n  pipeline " + plan.schedule.name + ", " + std::to_string(plan.schedule.stages) + " stages " +
           describe(plan.stages) + ", " + std::to_string(plan.schedule.chunks) + " chunk(s) per rank";
  return out;
}

int64_t peak_device_bytes(const at::Device& device) {
#ifdef SHOESTRING_WITH_CUDA
  // The allocator is a data symbol of libc10_cuda (reached here through a copy relocation): should
  // that copy ever not be the one LibTorch set, report nothing rather than call through null.
  auto* allocator = c10::cuda::CUDACachingAllocator::get();
  if (device.is_cuda() && allocator != nullptr) {
    const auto stats = allocator->getDeviceStats(device.index());
    return stats.allocated_bytes[size_t(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  (void)device;
  return 0;
}

}  // namespace shoestring
