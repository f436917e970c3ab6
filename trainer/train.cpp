#include "trainer/train.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "data/loader.h"
#include "ops/cuda_runtime.h"
#include "trainer/config_loader.h"
#include "trainer/metrics.h"
#include "trainer/model/convert_fp8.h"
#include "trainer/model/transformer.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/progress.h"

namespace fs = std::filesystem;

namespace shoestring {

namespace {

using Clock = std::chrono::steady_clock;

at::Device pick_device(const std::string& wanted) {
  if (wanted == "cpu") return at::kCPU;
  const auto& cuda = ops::cuda_status();
  if (wanted == "cuda" && !cuda.available)
    throw std::runtime_error("train.device: cuda was requested but no GPU is usable: " + cuda.reason);
  return cuda.available ? at::Device(at::kCUDA) : at::Device(at::kCPU);
}

std::string utc_stamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

void prepare_run_dir(const std::string& dir, const Config& cfg) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create run directory: " + ec.message());
  if (fs::exists(fs::path(dir) / "metrics.jsonl"))
    throw std::runtime_error(dir + ": already holds a run (metrics.jsonl); set log.run_dir to a new directory");
  std::ofstream(fs::path(dir) / "config.yaml") << to_yaml(cfg);
}

std::string banner(const Config& cfg, int64_t params, int64_t activated, const at::Device& dev, int threads,
                   const parallel::World& world, const std::string& data) {
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
    << "  train    " << cfg.train.steps << " steps x " << cfg.train.grad_accum << " x "
    << cfg.train.micro_batch_size << " seqs x " << cfg.train.seq_len << " tokens, " << cfg.train.precision
    << ", seed " << cfg.train.seed << "\n"
    << "  optim    adamw lr " << cfg.optim.lr << " (" << cfg.optim.schedule << ", warmup "
    << cfg.optim.warmup_steps << "), wd " << cfg.optim.weight_decay << ", clip " << cfg.optim.grad_clip << "\n"
    << "  data     " << data << "\n"
    << "  device   " << dev.str() << ", " << threads << " threads/rank, " << world.size << " rank(s)";
  return s.str();
}

// Schedules of the MoE/MTP hyper-parameters (DeepSeek-V3 §4.2: gamma 0.001 then 0 for the last
// part of training; MTP weight 0.3 then 0.1). `step` is 1-based.
double bias_gamma_at(const TrainConfig& t, int64_t step) {
  return t.router_bias_stop_step > 0 && step >= t.router_bias_stop_step ? 0.0 : t.router_bias_gamma;
}

double mtp_lambda_at(const TrainConfig& t, int64_t step) {
  return t.mtp_lambda_switch_step > 0 && step >= t.mtp_lambda_switch_step ? t.mtp_lambda_late : t.mtp_lambda;
}

// Auxiliary-loss-free balancing after the optimizer step, from the loads of the whole step, and
// the load metrics of the step.
void update_router_biases(std::vector<model::Router>& routers, const std::vector<at::Tensor>& load, double gamma,
                          StepRecord& r) {
  if (routers.empty()) return;
  r.has_moe = true;
  double bias_sq = 0;
  for (size_t i = 0; i < routers.size(); ++i) {
    const at::Tensor l = load[i].to(at::kDouble);
    r.expert_imbalance_layers.push_back((l.max() / l.mean()).item<double>());
    routers[i]->update_bias(load[i], gamma);
    bias_sq += routers[i]->bias.to(at::kDouble).pow(2).sum().item<double>();
  }
  double sum = 0;
  for (double x : r.expert_imbalance_layers) sum += x;
  r.expert_imbalance = sum / double(r.expert_imbalance_layers.size());
  r.router_bias_norm = std::sqrt(bias_sq);
}

// Mean main loss over the fixed validation batches: the loader restarts at sample 0 each time,
// so every evaluation sees the same sequences.
double validation_loss(model::Transformer& net, data::Loader& val, int64_t batches, const at::Device& device,
                       const model::LossWeights& weights) {
  at::NoGradGuard no_grad;
  val.set_consumed_samples(0);
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const data::Batch b = val.next();
    sum += net->losses(b.inputs.to(device), b.targets.to(device), weights).main.item<double>();
  }
  return sum / double(batches);
}

}  // namespace

data::DatasetOptions dataset_options(const Config& cfg) {
  data::DatasetOptions o;
  o.source = cfg.data.source;
  o.paths = cfg.data.path;
  o.tokenizer = cfg.data.tokenizer;
  o.val_paths = cfg.data.val_path;
  o.val_fraction = cfg.data.val_fraction;
  o.seq_len = cfg.train.seq_len;
  o.seed = uint64_t(cfg.train.seed);
  o.model_vocab = cfg.model.vocab_size;
  o.global_batch = cfg.train.micro_batch_size;  // x the data-parallel size once DP arrives
  o.synthetic_branching = cfg.data.synthetic_branching;
  return o;
}

std::string resolve_run_dir(const Config& cfg) {
  if (!cfg.log.run_dir.empty()) return cfg.log.run_dir;
  std::string base = "runs/" + cfg.name + "-" + utc_stamp(), dir = base;
  for (int i = 2; fs::exists(dir); ++i) dir = base + "-" + std::to_string(i);
  return dir;
}

TrainSummary train(const Config& cfg, const parallel::World& world) {
  if (world.size > 1)
    throw std::runtime_error("multi-process training (data/expert/pipeline parallelism) is not implemented yet; run one process");
  const int threads = parallel::threads_per_rank(int(cfg.train.threads), world);
  at::set_num_threads(threads);
  const at::Device device = pick_device(cfg.train.device);
  // fp8 keeps activations in bf16 around the FP8 GEMMs, as DeepSeek-V3 §3.3 does.
  const at::ScalarType dtype = cfg.train.precision == "fp32" ? at::kFloat : at::kBFloat16;

  // Bad data (missing file, wrong tokenizer, too short) fails here, before the model is built
  // or the run directory exists.
  const data::Datasets datasets = data::open_datasets(dataset_options(cfg));
  data::LoaderOptions lo{cfg.train.micro_batch_size, cfg.train.seq_len};
  lo.prefetch = size_t(cfg.data.prefetch);
  lo.seed = uint64_t(cfg.train.seed);
  data::Loader loader(datasets.train, lo);
  std::unique_ptr<data::Loader> val_loader;
  if (cfg.data.eval_interval > 0 && datasets.val) {
    lo.prefetch = 0;  // read on demand: evaluations are rare and always start from sample 0
    val_loader = std::make_unique<data::Loader>(datasets.val, lo);
  }

  at::manual_seed(uint64_t(cfg.train.seed));
  model::Transformer net(cfg.model, dtype);
  net->to(device);
  if (cfg.train.precision == "fp8") model::convert_to_fp8(*net);

  std::vector<optim::NamedParam> params;
  std::vector<bool> decay;
  for (const auto& item : net->named_parameters()) {
    params.push_back({item.key(), item.value()});
    decay.push_back(optim::decays(cfg.optim, model::parameter_kind(item.key())));
  }
  optim::AdamW opt(params, decay, cfg.optim);
  std::vector<model::Router> routers = net->routers();

  TrainSummary summary;
  summary.threads = threads;
  summary.tokens_per_step = cfg.train.grad_accum * cfg.train.micro_batch_size * cfg.train.seq_len;
  summary.run_dir = resolve_run_dir(cfg);
  prepare_run_dir(summary.run_dir, cfg);
  MetricsWriter metrics((fs::path(summary.run_dir) / "metrics.jsonl").string());
  const bool bar = cfg.log.progress == "on" || (cfg.log.progress == "auto" && isatty(STDOUT_FILENO));
  Progress progress(cfg.train.steps, cfg.log.every, bar, (fs::path(summary.run_dir) / "train.log").string());
  progress.message(banner(cfg, net->parameter_count(), net->activated_parameter_count(), device, threads, world,
                          datasets.description));
  progress.message("  run dir  " + summary.run_dir);

  const double tokens_per_step = double(summary.tokens_per_step);
  const auto start = Clock::now();
  for (int64_t step = 0; step < cfg.train.steps; ++step) {
    const auto t0 = Clock::now();
    for (auto& p : params) p.param.mutable_grad() = at::Tensor();
    const model::LossWeights weights{mtp_lambda_at(cfg.train, step + 1), cfg.train.balance_alpha};
    StepRecord r;
    std::vector<at::Tensor> load;  // per MoE layer, summed over the step's micro-batches
    double loss_sum = 0;
    for (int64_t micro = 0; micro < cfg.train.grad_accum; ++micro) {
      const data::Batch batch = loader.next();
      model::LossBreakdown out = net->losses(batch.inputs.to(device), batch.targets.to(device), weights);
      (out.total / double(cfg.train.grad_accum)).backward();
      loss_sum += out.main.item<double>();
      if (out.mtp.defined()) r.mtp_loss += out.mtp.item<double>() / double(cfg.train.grad_accum);
      if (out.balance.defined()) r.balance_loss += out.balance.item<double>() / double(cfg.train.grad_accum);
      load.resize(out.moe.size());
      for (size_t i = 0; i < out.moe.size(); ++i) {
        load[i] = load[i].defined() ? load[i] + out.moe[i].load : out.moe[i].load;
        r.dropped_tokens += out.moe[i].dropped;
      }
    }
    const double loss = loss_sum / double(cfg.train.grad_accum);
    if (!std::isfinite(loss))
      throw std::runtime_error("step " + std::to_string(step + 1) + ": loss is " + std::to_string(loss) +
                               "; stopping (lower optim.lr or set optim.grad_clip)");
    const double grad_norm = optim::clip_grad_norm(params, cfg.optim.grad_clip);
    const double lr = optim::lr_at(cfg.optim, step, cfg.train.steps);
    opt.step(lr);
    update_router_biases(routers, load, bias_gamma_at(cfg.train, step + 1), r);
    r.has_mtp = cfg.model.mtp_depth > 0;

    const auto t1 = Clock::now();
    // After t1: evaluation time is not training time (tokens_per_s, bench train).
    if (val_loader && ((step + 1) % cfg.data.eval_interval == 0 || step + 1 == cfg.train.steps)) {
      r.has_val = true;
      r.val_loss = validation_loss(net, *val_loader, cfg.data.eval_batches, device, weights);
    }
    r.step = step + 1;
    r.loss = loss;
    r.lr = lr;
    r.grad_norm = grad_norm;
    r.tokens_per_s = tokens_per_step / std::chrono::duration<double>(t1 - t0).count();
    r.elapsed_s = std::chrono::duration<double>(t1 - start).count();
    metrics.write(r);
    progress.update(r);
    if (step == 0) summary.first_loss = loss;
    summary.final_loss = loss;
    summary.steps = r.step;
    summary.step_seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  progress.finish();
  char done[160];
  std::snprintf(done, sizeof done, "done: %lld steps, loss %.4f -> %.4f", static_cast<long long>(summary.steps),
                summary.first_loss, summary.final_loss);
  progress.message(done);
  return summary;
}

}  // namespace shoestring
