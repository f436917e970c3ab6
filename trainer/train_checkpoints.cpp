#include "trainer/train_checkpoints.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "trainer/config_loader.h"
#include "trainer/distributed.h"

namespace shoestring {

namespace {

using Clock = std::chrono::steady_clock;

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", s);
  return buf;
}

}  // namespace

ckpt::Manifest RunCheckpoints::manifest_at(int64_t step, std::string loader_state) const {
  ckpt::Manifest meta;
  meta.step = step;
  meta.adam_steps = opt.steps_taken();
  meta.loader_state = std::move(loader_state);
  meta.layout = layout;
  meta.code_version = options.code_version;
  meta.config_yaml = to_yaml(cfg);
  return meta;
}

RunCheckpoints run_checkpoints(TrainSetup& s, const Config& cfg, const parallel::World& world,
                               const TrainOptions& options, const std::string& run_dir) {
  const parallel::MeshShape& shape = s.layout.shape;
  const parallel::Mesh& mesh = s.layout.mesh;
  const PipelinePlan& plan = s.model.plan;
  const std::string ckpt_root = s.converting ? options.convert_to : checkpoint_root(cfg, run_dir);
  ckpt::TrainStateRefs state{mesh, s.model.net, s.updater.reducer, s.updater.opt};
  if (shape.pp > 1) state.pp_writes = [&plan](const std::string& name) { return plan.writes(name); };
  // The candidates come from the shared checkpoint directory, the same list on every rank.
  const ckpt::Verifier verifier = [&mesh](const std::string& dir) {
    std::string mine;
    for (const auto& p : ckpt::verify_share(dir, mesh.world->rank(), mesh.world->size())) mine += p + "\n";
    std::vector<std::string> problems;
    for (const auto& part : all_gather_strings(*mesh.world, mine)) {
      std::istringstream lines(part);
      for (std::string l; std::getline(lines, l);) problems.push_back(l);
    }
    return problems;
  };
  // A run that will save finds out now, not at its first save hours later, that it cannot.
  if (!s.converting && (cfg.checkpoint.interval > 0 || !cfg.checkpoint.dir.empty())) {
    std::string failure;
    if (mesh.world->rank() == 0) {
      std::error_code ec;
      std::filesystem::create_directories(ckpt_root, ec);
      if (ec) failure = ckpt_root + ": cannot create the checkpoint directory (checkpoint.dir): " + ec.message();
    }
    failure = broadcast_string(*mesh.world, failure);
    if (!failure.empty()) throw std::runtime_error(failure);  // as an uncreatable run directory: exit 1
  }
  const ckpt::Layout layout{world.size, shape.dp, shape.ep, shape.pp, cfg.parallel.zero1};
  return RunCheckpoints{ckpt_root, state, verifier, layout, cfg, options, s.updater.opt};
}

// Resume: rank 0 picks and verifies the checkpoint (checksums included) before any weights are
// used; every rank then reads the slices its layout needs. Returns the step to continue from
// (0: a fresh start) and leaves in `ckpt_warnings` what rank 0 reports. ckpt convert saves the
// checkpoint again under this layout here.
int64_t resume_run(TrainSetup& s, const RunCheckpoints& ck, const Config& cfg, const TrainOptions& options,
                   TrainSummary& summary, std::vector<std::string>& ckpt_warnings) {
  const bool converting = s.converting;
  const std::string& ckpt_root = ck.root;
  int64_t start_step = 0;
  if (!options.resume.empty()) {
    const std::string chosen = ckpt::choose_checkpoint(options.resume, ckpt_root, ckpt_warnings, ck.verifier);
    if (!s.layout.rank0) ckpt_warnings.clear();  // rank 0 reports them
    if (!chosen.empty()) {
      const auto t0 = Clock::now();
      ckpt::CheckpointReader reader(chosen);
      load_state(reader, ck.state);
      const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
      try {
        if (!converting) {
          const data::LoaderState saved = data::LoaderState::parse(reader.manifest().loader_state);
          // Said here, where the checkpoint and the key are known (the loader would refuse too).
          if (saved.seed != uint64_t(cfg.train.seed))
            throw ckpt::CheckpointError(chosen + ": saved with train.seed " + std::to_string(saved.seed) +
                                        ", this run has train.seed " + std::to_string(cfg.train.seed) +
                                        ": the sample order would differ (resume with --set train.seed=" +
                                        std::to_string(saved.seed) + ")");
          s.data.loader.restore(saved);
        }
      } catch (const std::invalid_argument& e) {
        throw ckpt::CheckpointError(chosen + ": " + e.what());
      }
      start_step = reader.manifest().step;
      if (converting) {  // the source's own record, re-saved under this layout
        summary.last_checkpoint = ckpt::save_checkpoint(*s.layout.mesh.world, ckpt::collect_pieces(ck.state),
                                                        ck.manifest_at(start_step, reader.manifest().loader_state),
                                                        ckpt_root, 0);
        summary.resumed_from_step = start_step;
        return start_step;
      }
      if (start_step > cfg.train.steps)
        throw ckpt::CheckpointError(chosen + ": saved at step " + std::to_string(start_step) + ", beyond train.steps " +
                                    std::to_string(cfg.train.steps));
      summary.resumed_from_step = start_step;
      ckpt_warnings.push_back("  resumed  from " + chosen + " (step " + std::to_string(start_step) + ", saved under " +
                              reader.manifest().layout.to_string() + "; loaded in " +
                              seconds_text(load_s) + " s)");
    } else if (converting) {
      throw ckpt::CheckpointError(ckpt_root + ": no checkpoint to convert");
    } else {
      ckpt_warnings.push_back("  resume   no checkpoint in " + ckpt_root + ": starting from step 0");
    }
  }
  return start_step;
}

void RunSaves::report(const ckpt::SaveReport& s) {
  if (s.dir.empty()) return;
  summary.last_checkpoint = s.dir;
  const double mib = double(s.bytes) / (1 << 20);
  char line[512];
  if (cfg.checkpoint.async)
    std::snprintf(line, sizeof line, "  saved    %s (%.1f MiB, written in the background in %.2f s; commit %.3f s)",
                  s.dir.c_str(), mib, s.written_s, s.blocked_s);
  else
    std::snprintf(line, sizeof line, "  saved    %s (%.1f MiB in %.2f s, %.0f MiB/s)", s.dir.c_str(), mib,
                  s.written_s, mib / s.written_s);
  progress.message(line);
}

void RunSaves::save(int64_t step) {
  ckpt::SaveReport previous;
  const ckpt::SaveReport s = saver.save(ckpt::collect_pieces(ck.state), ck.manifest_at(step, loader.state().to_string()), &previous);
  report(previous);
  summary.save_blocked_s.push_back(s.blocked_s);
  if (cfg.checkpoint.async) {
    char line[200];
    std::snprintf(line, sizeof line, "  saving   step %lld in the background (the step blocked %.3f s)",
                  static_cast<long long>(step), s.blocked_s);
    progress.message(line);
  }
  report(s);
}

}  // namespace shoestring
