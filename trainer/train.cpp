#include "trainer/train.h"

#include <ATen/ATen.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "trainer/checkpoint/resume.h"
#include "trainer/checkpoint/saver.h"
#include "trainer/checkpoint/train_state.h"
#include "trainer/cluster_env.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/metrics.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/preemption.h"
#include "trainer/progress.h"
#include "trainer/tensorboard.h"
#include "trainer/train_checkpoints.h"
#include "trainer/train_output.h"
#include "trainer/train_setup.h"
#include "trainer/train_step.h"

namespace fs = std::filesystem;

namespace shoestring {

std::string utc_stamp(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

data::DatasetOptions dataset_options(const Config& cfg, int dp) {
  data::DatasetOptions o;
  o.source = cfg.data.source;
  o.paths = cfg.data.path;
  o.tokenizer = cfg.data.tokenizer;
  o.val_paths = cfg.data.val_path;
  o.val_fraction = cfg.data.val_fraction;
  o.seq_len = cfg.train.seq_len;
  o.seed = uint64_t(cfg.train.seed);
  o.model_vocab = cfg.model.vocab_size;
  o.global_batch = cfg.train.micro_batch_size * dp;
  o.synthetic_branching = cfg.data.synthetic_branching;
  return o;
}

std::string checkpoint_root(const Config& cfg, const std::string& run_dir) {
  return cfg.checkpoint.dir.empty() ? (fs::path(run_dir) / "checkpoints").string() : cfg.checkpoint.dir;
}

std::string resolve_run_dir(const Config& cfg) {
  if (!cfg.log.run_dir.empty()) return cfg.log.run_dir;
  std::string base = "runs/" + cfg.name + "-" + utc_stamp(), dir = base;
  for (int i = 2; fs::exists(dir); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

namespace {

// A loss or norm in a message: "nan" (std::to_string gives "-nan" for a NaN with its sign bit set).
std::string number_text(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

using Clock = std::chrono::steady_clock;

std::unique_ptr<MetricsWriter> open_metrics(const std::string& run_dir, const TrainOptions& options,
                                            int64_t start_step, bool rank0) {
  if (rank0 && !options.resume.empty()) truncate_metrics(fs::path(run_dir) / "metrics.jsonl", start_step);
  std::unique_ptr<MetricsWriter> metrics;
  if (rank0) metrics = std::make_unique<MetricsWriter>((fs::path(run_dir) / "metrics.jsonl").string(), !options.resume.empty());
  return metrics;
}

std::unique_ptr<TensorBoardWriter> open_tensorboard(const Config& cfg, const std::string& run_dir,
                                                    const TrainOptions& options, int64_t start_step, bool rank0) {
  std::unique_ptr<TensorBoardWriter> tensorboard;  // docs/tensorboard.md
  if (rank0 && cfg.log.tensorboard)
    tensorboard = std::make_unique<TensorBoardWriter>((fs::path(run_dir) / "tb").string(), options.resume.empty() ? -1 : start_step);
  return tensorboard;
}

// Where each step's record goes: metrics.jsonl and TensorBoard on rank 0, the progress bar or
// log lines on every rank (train.log on rank 0, rank-N.log on the others).
struct RunLog {
  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;
  Progress progress;
};

Progress open_progress(const Config& cfg, const parallel::World& world, const std::string& run_dir, bool rank0) {
  // mpirun gives ranks a pseudo-terminal even when its own output goes to a file: under a
  // launcher `auto` means plain lines.
  const bool bar = cfg.log.progress == "on" || (cfg.log.progress == "auto" && isatty(STDOUT_FILENO) && world.size == 1);
  const std::string log_name = rank0 ? "train.log" : "rank-" + std::to_string(world.rank) + ".log";
  return Progress(cfg.train.steps, cfg.log.every, bar, (fs::path(run_dir) / log_name).string(), rank0);
}

void log_banner(Progress& progress, const TrainSetup& s, const Config& cfg, const parallel::World& world,
                const std::string& run_dir, const std::vector<std::string>& ckpt_warnings) {
  const TrainLayout& l = s.layout;
  progress.message(banner(cfg, l.accum, l.shape.dp, s.model.param_count, s.model.activated_count, l.device, l.threads,
                          world, s.data.datasets.description));
  progress.message(parallel_line(cfg, l.mesh, l.accum, s.updater.opt.state_bytes(), s.model.comm.dp->backend(), s.model.plan));
  if (const std::string env = environment_line(); !env.empty()) progress.message(env);
  if (!l.rank0) progress.message("  " + parallel::describe(l.shape, world.rank));
  progress.message("  run dir  " + run_dir);
  for (const auto& w : ckpt_warnings) progress.message(w);
}

// Everything the step loop reads and changes, in one place.
struct TrainRun {
  const Config& cfg;
  const parallel::World& world;
  const TrainOptions& options;
  TrainSetup& s;
  const RunCheckpoints& ck;
  RunLog& log;
  RunSaves& saves;
  TrainSummary& summary;
  int64_t start_step = 0;
  Clock::time_point start;
  int64_t consecutive_bad = 0;   // train.nonfinite=skip|rollback: non-finite steps in a row
  int64_t rolled_back_from = 0;  // the furthest step reached before the last rollback
};

// What the loop does after a step: go on, stop (a signal), or continue from an earlier step.
struct StepEnd {
  bool stop = false;
  int64_t rollback_to = -1;
};

// train.nonfinite=rollback, after too many non-finite steps in a row: back to the last good
// checkpoint. Returns the step restored.
int64_t roll_back(TrainRun& run, int64_t step) {
  const std::string& ckpt_root = run.ck.root;
  Progress& progress = run.log.progress;
  // PaLM's remedy for a loss spike: back to the last good weights, and on with the data after
  // the batches that led there (the loader is not rewound, so they are skipped).
  run.saves.report(run.saves.saver.finish());
  std::vector<std::string> warnings;
  // Skipped steps changed nothing, so a checkpoint saved since the last update holds the weights
  // that led here: go back before that update.
  const int64_t last_update = step + 1 - run.consecutive_bad;
  const std::string chosen = ckpt::choose_checkpoint("auto", ckpt_root, warnings, run.ck.verifier, last_update - 1);
  if (run.s.layout.rank0)
    for (const auto& w : warnings) progress.message(w);
  if (chosen.empty())
    throw std::runtime_error("step " + std::to_string(step + 1) + ": " + std::to_string(run.consecutive_bad) +
                             " consecutive non-finite steps and no checkpoint before step " +
                             std::to_string(last_update) + " in " + ckpt_root + " to roll back to");
  ckpt::CheckpointReader reader(chosen);
  load_state(reader, run.ck.state);
  const int64_t rollback_to = reader.manifest().step;
  if (run.s.layout.rank0) ckpt::drop_checkpoints_after(ckpt_root, rollback_to);
  return rollback_to;
}

// One optimizer step (0-based `step`) and what follows it: validation, the step's record,
// the non-finite policy, the preemption check and checkpoints.
StepEnd run_step(TrainRun& run, int64_t step) {
  const Config& cfg = run.cfg;
  TrainSetup& s = run.s;
  TrainSummary& summary = run.summary;
  RunSaves& saves = run.saves;
  Progress& progress = run.log.progress;
  const double tokens_per_step = double(summary.tokens_per_step);

  const auto t0 = Clock::now();
  s.updater.reducer.zero_grad();
  const model::LossWeights weights{mtp_lambda_at(cfg.train, step + 1), cfg.train.balance_alpha};
  StepRecord r;
  const std::vector<data::Batch> batches = read_batches(s);
  // mode=nan: a test-only poisoned micro-batch 0; steps replayed after a rollback are not poisoned again.
  const bool poison = step + 1 > run.rolled_back_from && maybe_inject_fault(run.world.rank, step + 1);
  const StepTotals totals =
      forward_backward(s, cfg, batches, weights, poison, r, run.options.keep_pipeline_traces ? &summary.pipeline_traces : nullptr);
  const double loss = totals.loss;
  const double grad_norm = global_grad_norm(s);
  // Both values are already reduced over dp (the loss by all_reduce_sum, the norm by
  // global_grad_sq), so every rank takes the same branch without another collective.
  const bool bad = !std::isfinite(loss) || !std::isfinite(grad_norm);
  run.consecutive_bad = bad ? run.consecutive_bad + 1 : 0;
  const double lr = optim::lr_at(cfg.optim, step, cfg.train.steps);
  if (bad) {
    // skip: no optimizer step (moments and Adam's step count untouched), no router-bias move;
    // the gradients are zeroed at the next step's start. The LR schedule follows the step number.
    r.skipped = true;
    ++summary.skipped_steps;
  } else {
    apply_update(s, cfg, step + 1, lr, grad_norm, totals.load, r);
  }
  r.skipped_steps = summary.skipped_steps;
  record_ep_traffic(s, r);
  r.has_mtp = cfg.model.mtp_depth > 0;

  const auto t1 = Clock::now();
  // After t1: evaluation time is not training time (tokens_per_s, bench train).
  if (s.data.val_loader && ((step + 1) % cfg.data.eval_interval == 0 || step + 1 == cfg.train.steps)) {
    r.has_val = true;
    r.val_loss = validation_loss(s, cfg, weights);
  }
  r.step = step + 1;
  r.loss = loss;
  r.lr = lr;
  r.grad_norm = grad_norm;
  r.tokens_per_s = tokens_per_step / std::chrono::duration<double>(t1 - t0).count();
  r.elapsed_s = std::chrono::duration<double>(t1 - run.start).count();
  const bool give_up = run.consecutive_bad >= cfg.train.nonfinite_max;
  int64_t rollback_to = -1;
  if (give_up && cfg.train.nonfinite == "rollback" && summary.rollbacks < cfg.train.rollback_max) {
    rollback_to = roll_back(run, step);
    r.rolled_back_to = rollback_to;
  }
  if (run.log.metrics) run.log.metrics->write(r);
  if (run.log.tensorboard) run.log.tensorboard->write(r);
  if (bad && cfg.train.nonfinite == "stop") {  // after the bad step's metrics line, as for skip
    saves.report(saves.saver.finish());  // a save in flight holds good weights: keep it
    throw std::runtime_error("step " + std::to_string(step + 1) + ": " +
                             (std::isfinite(loss) ? "gradient norm is " + number_text(grad_norm)
                                                  : "loss is " + number_text(loss)) +
                             "; stopping (lower optim.lr or set optim.grad_clip)");
  }
  if (give_up && rollback_to < 0) {  // the line above keeps the last bad step's record
    saves.report(saves.saver.finish());  // a save in flight holds good weights: keep it
    const bool rollback = cfg.train.nonfinite == "rollback";
    throw std::runtime_error("step " + std::to_string(step + 1) + ": loss " + number_text(loss) +
                             ", gradient norm " + number_text(grad_norm) + ": " + std::to_string(run.consecutive_bad) +
                             " consecutive non-finite steps" +
                             (rollback ? " after " + std::to_string(summary.rollbacks) + " rollbacks (train.rollback_max)"
                                       : std::string(" skipped (train.nonfinite_max)")) +
                             "; stopping (lower optim.lr, set optim.grad_clip, or resume from an earlier checkpoint)");
  }
  progress.update(r);
  if (summary.losses.empty()) summary.first_loss = loss;  // not a replay after a rollback to the start
  summary.final_loss = loss;
  summary.losses.push_back(loss);
  summary.steps = r.step;
  summary.step_seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
  if (rollback_to >= 0) {
    ++summary.rollbacks;
    progress.message("  rollback after step " + std::to_string(step + 1) + ": " + std::to_string(run.consecutive_bad) +
                     " non-finite steps in a row; restored step " + std::to_string(rollback_to) +
                     ", continuing with the data after the bad batches");
    run.rolled_back_from = std::max(run.rolled_back_from, step + 1);
    run.consecutive_bad = 0;
    return {false, rollback_to};
  }
  // Every rank must stop after the same step: one tiny max-reduction of "was I signalled".
  bool stop = preemption_signal() != 0;
  if (run.world.size > 1) {
    at::Tensor flag = at::full({1}, int64_t(stop), at::kLong);
    s.layout.mesh.world->all_reduce(flag, parallel::ReduceOp::Max)->wait();
    stop = flag.item<int64_t>() != 0;
  }
  saves.report(saves.saver.poll());  // an asynchronous save that every rank has finished writing
  const bool last = step + 1 == cfg.train.steps;
  const int64_t every = cfg.checkpoint.interval;
  if (stop || (every > 0 && ((step + 1) % every == 0 || last))) saves.save(step + 1);
  if (stop && !last) {  // a signal in the last step: the run is complete anyway
    summary.preempted = true;
    saves.report(saves.saver.finish());
    progress.message("  stopped  after step " + std::to_string(step + 1) + " on a signal; resume with --resume auto");
    return {true, -1};
  }
  return {};
}

// After the last step: memory peaks, the closing line, and what tests ask to keep.
void finish_run(TrainRun& run) {
  TrainSetup& s = run.s;
  TrainSummary& summary = run.summary;
  Progress& progress = run.log.progress;
  const at::Device& device = s.layout.device;
  run.saves.report(run.saves.saver.finish());
  progress.finish();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  summary.peak_rss_bytes = int64_t(usage.ru_maxrss) * 1024;  // Linux reports KiB
  summary.peak_device_bytes = peak_device_bytes(device);
  summary.device = device.str();
  char done[260];
  const double rss_mib = double(summary.peak_rss_bytes) / (1 << 20);
  const int n = summary.losses.empty()  // resumed from a checkpoint saved at train.steps
                    ? std::snprintf(done, sizeof done, "done: no steps to run (resumed at step %lld of %lld), peak memory %.0f MiB on this rank",
                                    static_cast<long long>(run.start_step), static_cast<long long>(run.cfg.train.steps), rss_mib)
                    : std::snprintf(done, sizeof done, "done: %lld steps, loss %.4f -> %.4f, peak memory %.0f MiB on this rank",
                                    static_cast<long long>(summary.steps), summary.first_loss, summary.final_loss, rss_mib);
  if (device.is_cuda())
    std::snprintf(done + n, sizeof done - size_t(n), " (host), %.0f MiB allocated on its GPU at the peak",
                  double(summary.peak_device_bytes) / (1 << 20));
  progress.message(done);
  summary.trace = s.updater.reducer.trace();
  if (run.options.keep_parameters) {
    for (const auto& item : s.model.net->named_parameters())
      if (s.model.plan.holds(item.key())) summary.parameters.emplace_back(item.key(), item.value().detach().to(at::kCPU).clone());
    for (const auto& lr : s.updater.routers.routers) summary.router_biases.push_back(lr.router->bias.detach().to(at::kCPU).clone());
  }
}

}  // namespace

TrainSummary train(const Config& cfg, const parallel::World& world, const TrainOptions& options) {
  TrainSetup s(cfg, world, options);
  const bool rank0 = s.layout.rank0;

  TrainSummary summary;
  summary.threads = s.layout.threads;
  summary.accum_steps = s.layout.accum;
  summary.optimizer_state_bytes = s.updater.opt.state_bytes();
  summary.tokens_per_step = s.layout.accum * s.layout.shape.dp * cfg.train.micro_batch_size * cfg.train.seq_len;
  const std::string run_dir = open_run_dir(cfg, options, s.converting, *s.layout.mesh.world, rank0);
  summary.run_dir = run_dir;

  const RunCheckpoints ck = run_checkpoints(s, cfg, world, options, run_dir);
  std::vector<std::string> ckpt_warnings;
  const int64_t start_step = resume_run(s, ck, cfg, options, summary, ckpt_warnings);
  if (s.converting) return summary;  // resume_run() saved the converted checkpoint (or threw)
  if (rank0 && !options.resume.empty()) write_run_config(run_dir, cfg);

  RunLog log{open_metrics(run_dir, options, start_step, rank0),
             open_tensorboard(cfg, run_dir, options, start_step, rank0), open_progress(cfg, world, run_dir, rank0)};
  log_banner(log.progress, s, cfg, world, run_dir, ckpt_warnings);
  RunSaves saves{ckpt::CheckpointSaver(*s.layout.mesh.world,
                                       {ck.root, cfg.checkpoint.keep, cfg.checkpoint.keep_every, cfg.checkpoint.async}),
                 cfg, ck, s.data.loader, log.progress, summary};
  const PreemptionHandlers preemption(world.rank);

  TrainRun run{cfg, world, options, s, ck, log, saves, summary, start_step, Clock::now()};
  for (int64_t step = start_step; step < cfg.train.steps; ++step) {
    const StepEnd end = run_step(run, step);
    if (end.rollback_to >= 0)
      step = end.rollback_to - 1;  // the loop's ++ makes it rollback_to
    else if (end.stop)
      break;
  }
  finish_run(run);
  return summary;
}

}  // namespace shoestring
