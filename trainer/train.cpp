#include "trainer/train.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef SHOESTRING_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

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
#include "parallel/grad_reducer.h"
#include "parallel/pipeline_executor.h"
#include "trainer/distributed.h"
#include "trainer/expert_parallel.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/checkpoint/train_state.h"
#include "trainer/checkpoint/saver.h"
#include "trainer/cluster_env.h"
#include "trainer/config_loader.h"
#include "trainer/metrics.h"
#include "trainer/tensorboard.h"
#include "trainer/pipeline_plan.h"
#include "trainer/model/convert_fp8.h"
#include "trainer/model/transformer.h"
#include "trainer/optim/adamw.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/preemption.h"
#include "trainer/progress.h"

namespace fs = std::filesystem;

namespace shoestring {

namespace {

using Clock = std::chrono::steady_clock;

// Each rank takes the GPU of its local rank (ranks on a node = GPUs on it, as mpirun/srun place
// them).
at::Device pick_device(const std::string& wanted, int local_rank) {
  if (wanted == "cpu") return at::kCPU;
  const auto& cuda = ops::cuda_status();
  if (wanted == "cuda" && !cuda.available)
    throw std::runtime_error("train.device: cuda was requested but no GPU is usable: " + cuda.reason);
  if (!cuda.available) return at::kCPU;
  const int n = ops::cuda_device_count();
  const at::Device dev(at::kCUDA, at::DeviceIndex(n > 0 ? local_rank % n : 0));
  // The current device too (cudaSetDevice), for anything that allocates on "the" GPU.
  c10::impl::VirtualGuardImpl(at::kCUDA).setDevice(dev);
  return dev;
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

void prepare_run_dir(const std::string& dir, const Config& cfg, bool resuming) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create run directory: " + ec.message());
  if (!resuming && fs::exists(fs::path(dir) / "metrics.jsonl"))
    throw std::runtime_error(dir + ": already holds a run (metrics.jsonl); set log.run_dir to a new directory, or "
                             "pass --resume to continue it");
  std::ofstream(fs::path(dir) / "config.yaml") << to_yaml(cfg);
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

// A MoE router this rank holds: its index among all routers of the model (main model, then MTP
// modules) and whether this rank reports it (one pipeline rank per router).
struct LocalRouter {
  model::Router router;
  size_t index = 0;
  bool reports = true;
};

// Auxiliary-loss-free balancing after the optimizer step, from the global loads of the whole step
// (`load` indexed like all routers), and the load metrics of the step, gathered over `pp`.
void update_router_biases(std::vector<LocalRouter>& routers, const std::vector<at::Tensor>& load, double gamma,
                          parallel::ProcessGroup& pp, StepRecord& r) {
  if (load.empty()) return;
  r.has_moe = true;
  std::vector<double> report(load.size() + 1, 0.0);  // imbalance per router, then the squared bias norm
  for (auto& lr : routers) {
    lr.router->update_bias(load[lr.index], gamma);
    if (!lr.reports) continue;
    const at::Tensor l = load[lr.index].to(at::kDouble);
    report[lr.index] = (l.max() / l.mean()).item<double>();
    report.back() += lr.router->bias.to(at::kDouble).pow(2).sum().item<double>();
  }
  if (pp.size() > 1) all_reduce_sum(pp, report);
  r.expert_imbalance_layers.assign(report.begin(), report.end() - 1);
  double sum = 0;
  for (double x : r.expert_imbalance_layers) sum += x;
  r.expert_imbalance = sum / double(r.expert_imbalance_layers.size());
  r.router_bias_norm = std::sqrt(report.back());
}

// Mean main loss over the fixed validation batches: the loader restarts at sample 0 each time,
// so every evaluation sees the same sequences. `batches` micro-batches on each rank; the set is
// data.eval_batches global batches, the same sequences whatever the layout.
double validation_loss(model::Transformer& net, const PipelinePlan& plan, parallel::ProcessGroup& pp,
                       data::Loader& val, int64_t batches, const at::Device& device, at::ScalarType dtype,
                       const model::LossWeights& weights, parallel::ProcessGroup& dp) {
  at::NoGradGuard no_grad;
  val.set_consumed_samples(0);
  std::vector<double> sum{0.0};
  for (int64_t i = 0; i < batches; ++i) {
    const data::Batch b = val.next();
    const at::Tensor inputs = b.inputs.to(device), targets = b.targets.to(device);
    sum[0] += pp.size() == 1 ? net->losses(inputs, targets, weights).main.item<double>()
                             : pipeline_eval_loss(*net, plan, pp, inputs, targets, weights,
                                                  at::TensorOptions().dtype(dtype).device(device));
  }
  all_reduce_sum(dp, sum);
  return sum[0] / double(batches * dp.size());
}

}  // namespace

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

// The process groups gradients travel over: the mesh's MPI groups on CPU, NCCL mirrors of them
// when training on GPUs across ranks.
struct CommGroups {
  parallel::GroupPtr dp, ep_replica, ep;  // ep: the expert all-to-all (tokens on the device)
  parallel::GroupPtr pp;                  // activations and gradients between pipeline stages
};

CommGroups comm_groups(const parallel::Mesh& mesh, const at::Device& device, const parallel::CommOptions& o) {
  if (!device.is_cuda() || mesh.world->size() == 1) return {mesh.dp, mesh.ep_replica, mesh.ep, mesh.pp};
  return {parallel::make_nccl_group(*mesh.dp, device.index(), o),
          parallel::make_nccl_group(*mesh.ep_replica, device.index(), o),
          mesh.ep->size() > 1 ? parallel::make_nccl_group(*mesh.ep, device.index(), o) : mesh.ep,
          mesh.pp->size() > 1 ? parallel::make_nccl_group(*mesh.pp, device.index(), o) : mesh.pp};
}

// Every rank starts from the weights and router biases of the first rank of its group: the
// seeds already agree, this makes it a guarantee (as DDP does). Expert shards come from the first
// rank holding the same experts (ep_replica), everything else from dp rank 0.
void broadcast_model(model::Transformer& net, const PipelinePlan& plan, parallel::ProcessGroup& dp,
                     parallel::ProcessGroup& ep_replica) {
  at::NoGradGuard no_grad;
  std::vector<parallel::WorkPtr> works;
  for (const auto& item : net->named_parameters()) {
    if (!plan.holds(item.key())) continue;
    parallel::ProcessGroup& g = model::is_routed_expert(item.key()) ? ep_replica : dp;
    if (g.size() > 1) works.push_back(g.broadcast(item.value(), 0));
  }
  if (dp.size() > 1)
    for (auto& b : net->buffers())
      if (b.is_contiguous()) works.push_back(dp.broadcast(b, 0));
  for (auto& w : works) w->wait();
}

// A resumed run's metrics.jsonl continues from the checkpoint: lines after the last one of its
// step (written before the interruption, and about to be written again) are dropped. The last
// one, since after a rollback step numbers repeat and the checkpoint is from the latest pass.
void truncate_metrics(const fs::path& path, int64_t last_step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::vector<std::pair<int64_t, std::string>> lines;
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find("\"step\":");
    if (at != std::string::npos) lines.emplace_back(std::stoll(line.substr(at + 7)), line);
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

}  // namespace

TrainSummary train(const Config& cfg, const parallel::World& world, const TrainOptions& options) {
  // Layout errors (parallel.* against the ranks started) are config errors, found before any work.
  const parallel::MeshShape shape = mesh_shape(cfg, world.size);
  const int64_t accum = accumulation_steps(cfg, shape.dp);
  const parallel::Schedule schedule = step_schedule(cfg, shape.pp, accum);
  const int threads = parallel::threads_per_rank(int(cfg.train.threads), world);
  at::set_num_threads(threads);
  const at::Device device = pick_device(cfg.train.device, world.local_rank);
  // NCCL matches point-to-point messages by order. The schedules now post every rank pair's
  // messages in one order and finish under NCCL's model (schedule.h, CommModel::InOrder), a CPU
  // run matched by order alone gives the tag-matched results bit for bit, and NCCL splits accept
  // the pipeline's negative colours; what is left is a run on GPUs (docs/pipeline.md). Until one
  // has passed, refuse rather than risk a hung exchange.
  if (shape.pp > 1 && device.is_cuda())
    throw ConfigError("parallel.pp=" + std::to_string(shape.pp) +
                      ": pipeline parallelism has not yet been run on GPUs (its NCCL message order is checked "
                      "on CPU only); set train.device=cpu or parallel.pp=1");
  // fp8 keeps activations in bf16 around the FP8 GEMMs, as DeepSeek-V3 §3.3 does.
  const at::ScalarType dtype = cfg.train.precision == "fp32"   ? at::kFloat
                               : cfg.train.precision == "fp64" ? at::kDouble
                                                               : at::kBFloat16;
  const parallel::CommOptions comm_opts{cfg.parallel.timeout_s};
  const parallel::Mesh mesh = parallel::make_mesh(shape, parallel::make_world_group(world, comm_opts));
  const bool rank0 = world.rank == 0;

  // Bad data (missing file, wrong tokenizer, too short) fails here, before the model is built
  // or the run directory exists.
  // ckpt convert reads no data: the loader state is carried over from the source checkpoint as text.
  const bool converting = !options.convert_to.empty();
  if (converting && options.resume.empty()) throw std::invalid_argument("train: convert_to needs a checkpoint to resume");
  Config data_cfg = cfg;
  if (converting) data_cfg.data.source = "synthetic";
  const data::Datasets datasets = data::open_datasets(dataset_options(data_cfg, shape.dp));
  data::LoaderOptions lo{cfg.train.micro_batch_size * shape.dp, cfg.train.seq_len};
  lo.dp_rank = mesh.coord.dp;
  lo.dp_size = shape.dp;
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
  if (dtype == at::kDouble) net->to(at::kDouble);
  net->to(device);
  if (cfg.train.precision == "fp8") model::convert_to_fp8(*net);
  const CommGroups comm = comm_groups(mesh, device, comm_opts);
  // Counted whole: the banner describes the model, not this rank's shard of it.
  const int64_t param_count = net->parameter_count(), activated_count = net->activated_parameter_count();
  // Built whole above (the same initialisation as one process), then each rank keeps its shard.
  std::shared_ptr<EpDispatcher> ep_dispatch;
  if (shape.ep > 1) {
    ep_dispatch = shard_experts(net, comm.ep, parse_ep_dispatch_dtype(cfg.parallel.ep_dispatch_dtype));
    if (cfg.parallel.ep_max_nodes > 0) {
      const int64_t nodes = ep_nodes(mesh.ep->world_ranks(), world.local_size);
      for (auto& router : net->routers()) router->limit_nodes(nodes, cfg.parallel.ep_max_nodes);
    }
  }
  // Pipeline: this rank keeps the layers of its chunks (the whole model was built for the same
  // initialisation as one process).
  std::vector<std::string> tensor_names;
  for (const auto& item : net->named_parameters()) tensor_names.push_back(item.key());
  for (const auto& item : net->named_buffers()) tensor_names.push_back(item.key());
  const PipelinePlan plan = make_pipeline_plan(cfg, schedule, mesh.coord.pp, tensor_names);
  if (shape.pp > 1) release_unheld(*net, plan);
  broadcast_model(net, plan, *comm.dp, *comm.ep_replica);

  // Routed experts are reduced over the ranks holding the same experts, the rest over all of dp.
  std::vector<parallel::ReducedParam> reduced;
  std::vector<std::pair<std::string, at::Tensor>> held;
  for (const auto& item : net->named_parameters()) {
    if (!plan.holds(item.key())) continue;
    reduced.push_back({item.key(), item.value(), model::is_routed_expert(item.key()) ? 1 : 0});
    held.emplace_back(item.key(), item.value());
  }
  parallel::ReducerOptions ro;
  ro.bucket_mb = cfg.parallel.bucket_mb;
  ro.zero1 = cfg.parallel.zero1;
  ro.grad_scale = 1.0 / double(shape.dp);
  parallel::GradReducer reducer(std::move(reduced), {comm.dp, comm.ep_replica}, ro);
  std::vector<optim::Slot> slots;
  for (const auto& o : reducer.owned()) {
    const std::string& name = reducer.params()[o.param].name;
    slots.push_back({name, o.value, optim::decays(cfg.optim, model::parameter_kind(name))});
  }
  optim::AdamW opt(std::move(slots), cfg.optim);
  std::vector<at::Tensor> grads;
  for (const auto& o : reducer.owned()) grads.push_back(o.grad);
  // Collective over pp: sub-groups for the tensors several pipeline ranks hold.
  SharedGradSync shared_grads(plan, comm.pp, held);
  std::vector<char> norm_skip;  // gradients another pipeline rank counts in the norm
  for (const auto& p : reducer.params()) norm_skip.push_back(!plan.writes(p.name));
  parallel::GroupPtr norm_group = shape.pp > 1 ? mesh.world : mesh.dp;
  // Routers: all of the model's, by index; this rank updates those it holds. chunk_routers[c]:
  // the routers chunk c's forward passes, in the order it appends their statistics.
  std::vector<LocalRouter> routers;
  std::vector<std::vector<size_t>> chunk_routers(plan.chunks.size());
  size_t n_routers = 0;
  for (const auto& item : net->named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto r = std::dynamic_pointer_cast<model::RouterImpl>(item.value());
    if (!r) continue;
    const std::string name = item.key();
    const std::string param = name + ".weight";
    if (plan.holds(param)) routers.push_back({model::Router(r), n_routers, plan.writes(param)});
    for (size_t c = 0; c < plan.chunks.size(); ++c)
      if (stage_uses(plan.chunks[c], name, cfg.model)) chunk_routers[c].push_back(n_routers);
    ++n_routers;
  }
  parallel::PipelineExecutor executor(plan.schedule, comm.pp);

  TrainSummary summary;
  summary.threads = threads;
  summary.accum_steps = accum;
  summary.optimizer_state_bytes = opt.state_bytes();
  summary.tokens_per_step = accum * shape.dp * cfg.train.micro_batch_size * cfg.train.seq_len;
  // Rank 0 names and creates the run directory; everyone learns it (or that it failed) from rank 0.
  std::string run_dir, failure;
  if (rank0) {
    try {
      if (converting) {
        run_dir = options.convert_to;
        fs::create_directories(run_dir);
      } else {
        run_dir = resolve_run_dir(cfg);
        prepare_run_dir(run_dir, cfg, !options.resume.empty());
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  run_dir = broadcast_string(*mesh.world, failure.empty() ? run_dir : std::string());
  if (!failure.empty()) throw std::runtime_error(failure);
  if (run_dir.empty()) throw std::runtime_error("rank 0 could not prepare the run directory (see its message)");
  summary.run_dir = run_dir;

  // Resume: rank 0 picks and verifies the checkpoint (checksums included) before any weights are
  // used; every rank then reads the slices its layout needs.
  const std::string ckpt_root = converting ? options.convert_to : checkpoint_root(cfg, run_dir);
  ckpt::TrainStateRefs state{mesh, net, reducer, opt};
  if (shape.pp > 1) state.pp_writes = [&plan](const std::string& name) { return plan.writes(name); };
  std::vector<std::string> ckpt_warnings;
  // Every rank takes part: each hashes its share of the files, so verification scales with ranks.
  // The candidates come from the shared checkpoint directory, the same list on every rank.
  const ckpt::Verifier verifier = [&](const std::string& dir) {
    std::string mine;
    for (const auto& p : ckpt::verify_share(dir, mesh.world->rank(), mesh.world->size())) mine += p + "\n";
    std::vector<std::string> problems;
    for (const auto& part : all_gather_strings(*mesh.world, mine)) {
      std::istringstream lines(part);
      for (std::string l; std::getline(lines, l);) problems.push_back(l);
    }
    return problems;
  };
  // What a checkpoint of this run records besides its tensors and files.
  const ckpt::Layout layout{world.size, shape.dp, shape.ep, shape.pp, cfg.parallel.zero1};
  auto manifest_at = [&](int64_t step, std::string loader_state) {
    ckpt::Manifest meta;
    meta.step = step;
    meta.adam_steps = opt.steps_taken();
    meta.loader_state = std::move(loader_state);
    meta.layout = layout;
    meta.code_version = options.code_version;
    meta.config_yaml = to_yaml(cfg);
    return meta;
  };
  int64_t start_step = 0;
  if (!options.resume.empty()) {
    const std::string chosen = ckpt::choose_checkpoint(options.resume, ckpt_root, ckpt_warnings, verifier);
    if (!rank0) ckpt_warnings.clear();  // rank 0 reports them
    if (!chosen.empty()) {
      const auto t0 = Clock::now();
      ckpt::CheckpointReader reader(chosen);
      load_state(reader, state);
      const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
      try {
        if (!converting) loader.restore(data::LoaderState::parse(reader.manifest().loader_state));
      } catch (const std::invalid_argument& e) {
        throw ckpt::CheckpointError(chosen + ": " + e.what());
      }
      start_step = reader.manifest().step;
      if (converting) {  // the source's own record, re-saved under this layout
        summary.last_checkpoint = ckpt::save_checkpoint(
            *mesh.world, ckpt::collect_pieces(state), manifest_at(start_step, reader.manifest().loader_state), ckpt_root, 0);
        summary.resumed_from_step = start_step;
        return summary;
      }
      if (start_step > cfg.train.steps)
        throw ckpt::CheckpointError(chosen + ": saved at step " + std::to_string(start_step) + ", beyond train.steps " +
                                    std::to_string(cfg.train.steps));
      summary.resumed_from_step = start_step;
      ckpt_warnings.push_back("  resumed  from " + chosen + " (step " + std::to_string(start_step) + ", saved under " +
                              reader.manifest().layout.to_string() + "; loaded in " +
                              std::to_string(load_s).substr(0, 5) + " s)");
    } else if (converting) {
      throw ckpt::CheckpointError(ckpt_root + ": no checkpoint to convert");
    } else {
      ckpt_warnings.push_back("  resume   no checkpoint in " + ckpt_root + ": starting from step 0");
    }
  }
  if (rank0 && !options.resume.empty()) truncate_metrics(fs::path(run_dir) / "metrics.jsonl", start_step);
  std::unique_ptr<MetricsWriter> metrics;
  if (rank0) metrics = std::make_unique<MetricsWriter>((fs::path(run_dir) / "metrics.jsonl").string(), !options.resume.empty());
  std::unique_ptr<TensorBoardWriter> tensorboard;  // docs/tensorboard.md
  if (rank0 && cfg.log.tensorboard)
    tensorboard = std::make_unique<TensorBoardWriter>((fs::path(run_dir) / "tb").string(), options.resume.empty() ? -1 : start_step);
  // mpirun gives ranks a pseudo-terminal even when its own output goes to a file: under a
  // launcher `auto` means plain lines.
  const bool bar = cfg.log.progress == "on" || (cfg.log.progress == "auto" && isatty(STDOUT_FILENO) && world.size == 1);
  const std::string log_name = rank0 ? "train.log" : "rank-" + std::to_string(world.rank) + ".log";
  Progress progress(cfg.train.steps, cfg.log.every, bar, (fs::path(run_dir) / log_name).string(), rank0);
  progress.message(banner(cfg, accum, shape.dp, param_count, activated_count, device, threads, world,
                          datasets.description));
  progress.message(parallel_line(cfg, mesh, accum, opt.state_bytes(), comm.dp->backend(), plan));
  if (const std::string env = environment_line(); !env.empty()) progress.message(env);
  if (!rank0) progress.message("  " + parallel::describe(shape, world.rank));
  progress.message("  run dir  " + run_dir);
  for (const auto& w : ckpt_warnings) progress.message(w);

  ckpt::CheckpointSaver saver(*mesh.world, {ckpt_root, cfg.checkpoint.keep, cfg.checkpoint.keep_every, cfg.checkpoint.async});
  auto report_save = [&](const ckpt::SaveReport& s) {
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
  };
  auto save = [&](int64_t step) {
    ckpt::SaveReport previous;
    const ckpt::SaveReport s = saver.save(ckpt::collect_pieces(state), manifest_at(step, loader.state().to_string()), &previous);
    report_save(previous);
    summary.save_blocked_s.push_back(s.blocked_s);
    if (cfg.checkpoint.async) {
      char line[200];
      std::snprintf(line, sizeof line, "  saving   step %lld in the background (the step blocked %.3f s)",
                    static_cast<long long>(step), s.blocked_s);
      progress.message(line);
    }
    report_save(s);
  };
  const PreemptionHandlers preemption;

  const double tokens_per_step = double(summary.tokens_per_step);
  const double micro_total = double(accum * shape.dp);  // micro-batches per step over all ranks
  const auto start = Clock::now();
  int64_t consecutive_bad = 0;  // train.nonfinite=skip|rollback: non-finite steps in a row
  int64_t rolled_back_from = 0;  // the furthest step reached before the last rollback
  for (int64_t step = start_step; step < cfg.train.steps; ++step) {
    const auto t0 = Clock::now();
    reducer.zero_grad();
    const model::LossWeights weights{mtp_lambda_at(cfg.train, step + 1), cfg.train.balance_alpha};
    StepRecord r;
    // Every pipeline rank reads the step's micro-batches (the same ones, from its dp slice): the
    // first stage needs the inputs, the last the targets, and the loader state stays the same.
    std::vector<data::Batch> batches;
    for (int64_t micro = 0; micro < accum; ++micro) {
      data::Batch b = loader.next();
      b.inputs = b.inputs.to(device);
      b.targets = b.targets.to(device);
      batches.push_back(std::move(b));
    }
    // mode=nan: a test-only poisoned micro-batch 0; steps replayed after a rollback are not poisoned again.
    bool poison = step + 1 > rolled_back_from && maybe_inject_fault(world.rank, step + 1);
    // Summed over the step's micro-batches: main loss, mtp loss, balance loss, dropped tokens,
    // then the expert loads of every router of the model (zero for those of other stages).
    std::vector<double> sums(4, 0.0);
    std::vector<at::Tensor> load(n_routers);
    parallel::StageCallbacks callbacks;
    callbacks.forward = [&](int mb, int chunk, int, const at::Tensor& input) {
      const StageSpan& span = plan.chunks[size_t(chunk)];
      model::LossBreakdown lb;
      parallel::StageOutput o = stage_forward(*net, span, input, batches[size_t(mb)].inputs,
                                              batches[size_t(mb)].targets, weights, double(accum), lb);
      if (poison && mb == 0) {  // the loss, or on an earlier stage the activation it comes from
        const double nan = std::nan("");
        o.output = o.output * nan;
        if (span.head) lb.main = lb.main * nan;
        poison = false;
      }
      if (span.head) {
        sums[0] += lb.main.item<double>();
        if (lb.mtp.defined()) sums[1] += lb.mtp.item<double>();
      }
      if (lb.balance.defined()) sums[2] += lb.balance.item<double>();
      for (size_t i = 0; i < lb.moe.size(); ++i) {
        const size_t k = chunk_routers[size_t(chunk)].at(i);
        load[k] = load[k].defined() ? load[k] + lb.moe[i].load : lb.moe[i].load;
        sums[3] += double(lb.moe[i].dropped);
      }
      return o;
    };
    const auto act_options = at::TensorOptions().dtype(dtype).device(device);
    callbacks.activation_buffer = [&](int, int) {
      return at::empty({cfg.train.micro_batch_size, cfg.train.seq_len, cfg.model.d_model}, act_options);
    };
    // One pipeline rank: gradients are reduced while the last backward runs (the DP hooks).
    // Several: after the schedule, once the copies of shared tensors have been summed.
    if (shape.pp == 1) callbacks.before_backward = [&](int, int, bool last) { reducer.prepare_backward(last); };
    executor.run(callbacks);
    if (options.keep_pipeline_traces) summary.pipeline_traces.push_back(executor.trace());
    if (shape.pp > 1) {
      shared_grads.sync();
      reducer.prepare_backward(true);
    }
    reducer.finish();
    // Loads are token counts, exact in float64: every rank sums the same global load and so moves
    // its router biases identically.
    for (size_t i = 0; i < load.size(); ++i) {
      const int64_t e = cfg.model.n_routed_experts;
      if (!load[i].defined()) {
        sums.insert(sums.end(), size_t(e), 0.0);
        continue;
      }
      const at::Tensor c = load[i].to(at::kCPU, at::kDouble).contiguous();
      sums.insert(sums.end(), c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    }
    all_reduce_sum(*mesh.dp, sums);
    if (shape.pp > 1) all_reduce_sum(*mesh.pp, sums);
    for (size_t i = 0, at_ = 4; i < load.size(); ++i) {
      const int64_t e = cfg.model.n_routed_experts;
      load[i] = at::tensor(std::vector<double>(sums.begin() + long(at_), sums.begin() + long(at_ + size_t(e))),
                           at::kDouble);
      at_ += size_t(e);
    }
    const double loss = sums[0] / micro_total;
    r.mtp_loss = sums[1] / micro_total;
    r.balance_loss = sums[2] / micro_total;
    r.dropped_tokens = int64_t(sums[3]);
    const double grad_norm = std::sqrt(reducer.global_grad_sq(*norm_group, norm_skip));
    // Both values are already reduced over dp (the loss by all_reduce_sum, the norm by
    // global_grad_sq), so every rank takes the same branch without another collective.
    const bool bad = !std::isfinite(loss) || !std::isfinite(grad_norm);
    if (bad && cfg.train.nonfinite == "stop") {
      report_save(saver.finish());  // a save in flight holds good weights: keep it
      throw std::runtime_error("step " + std::to_string(step + 1) + ": " +
                               (std::isfinite(loss) ? "gradient norm is " + std::to_string(grad_norm)
                                                    : "loss is " + std::to_string(loss)) +
                               "; stopping (lower optim.lr or set optim.grad_clip)");
    }
    consecutive_bad = bad ? consecutive_bad + 1 : 0;
    const double lr = optim::lr_at(cfg.optim, step, cfg.train.steps);
    if (bad) {
      // skip: no optimizer step (moments and Adam's step count untouched), no router-bias move;
      // the gradients are zeroed at the next step's start. The LR schedule follows the step number.
      r.skipped = true;
      ++summary.skipped_steps;
    } else {
      if (const double c = optim::clip_scale(grad_norm, cfg.optim.grad_clip); c != 1.0) reducer.scale_grads(c);
      opt.step(lr, grads);
      reducer.all_gather_params();
      update_router_biases(routers, load, bias_gamma_at(cfg.train, step + 1), *mesh.pp, r);
    }
    r.skipped_steps = summary.skipped_steps;
    if (ep_dispatch) {
      const EpTraffic traffic = ep_dispatch->take_traffic();
      at::Tensor most = at::tensor(std::vector<int64_t>{traffic.sent, traffic.received}, at::kLong);
      mesh.world->all_reduce(most, parallel::ReduceOp::Max)->wait();
      r.has_ep = true;
      r.ep_rows_sent = most[0].item<int64_t>();
      r.ep_rows_received = most[1].item<int64_t>();
    }
    r.has_mtp = cfg.model.mtp_depth > 0;

    const auto t1 = Clock::now();
    // After t1: evaluation time is not training time (tokens_per_s, bench train).
    if (val_loader && ((step + 1) % cfg.data.eval_interval == 0 || step + 1 == cfg.train.steps)) {
      r.has_val = true;
      r.val_loss = validation_loss(net, plan, *comm.pp, *val_loader, cfg.data.eval_batches * accum, device, dtype,
                                   weights, *mesh.dp);
    }
    r.step = step + 1;
    r.loss = loss;
    r.lr = lr;
    r.grad_norm = grad_norm;
    r.tokens_per_s = tokens_per_step / std::chrono::duration<double>(t1 - t0).count();
    r.elapsed_s = std::chrono::duration<double>(t1 - start).count();
    const bool give_up = consecutive_bad >= cfg.train.nonfinite_max;
    int64_t rollback_to = -1;
    if (give_up && cfg.train.nonfinite == "rollback" && summary.rollbacks < cfg.train.rollback_max) {
      // PaLM's remedy for a loss spike: back to the last good weights, and on with the data after
      // the batches that led there (the loader is not rewound, so they are skipped).
      report_save(saver.finish());
      std::vector<std::string> warnings;
      // Skipped steps changed nothing, so a checkpoint saved since the last update holds the weights
      // that led here: go back before that update.
      const int64_t last_update = step + 1 - consecutive_bad;
      const std::string chosen = ckpt::choose_checkpoint("auto", ckpt_root, warnings, verifier, last_update - 1);
      if (rank0)
        for (const auto& w : warnings) progress.message(w);
      if (chosen.empty())
        throw std::runtime_error("step " + std::to_string(step + 1) + ": " + std::to_string(consecutive_bad) +
                                 " consecutive non-finite steps and no checkpoint before step " +
                                 std::to_string(last_update) + " in " + ckpt_root + " to roll back to");
      ckpt::CheckpointReader reader(chosen);
      load_state(reader, state);
      rollback_to = reader.manifest().step;
      r.rolled_back_to = rollback_to;
      if (rank0) ckpt::drop_checkpoints_after(ckpt_root, rollback_to);
    }
    if (metrics) metrics->write(r);
    if (tensorboard) tensorboard->write(r);
    if (give_up && rollback_to < 0) {  // the line above keeps the last bad step's record
      report_save(saver.finish());  // a save in flight holds good weights: keep it
      const bool rollback = cfg.train.nonfinite == "rollback";
      throw std::runtime_error("step " + std::to_string(step + 1) + ": loss " + std::to_string(loss) +
                               ", gradient norm " + std::to_string(grad_norm) + ": " + std::to_string(consecutive_bad) +
                               " consecutive non-finite steps" +
                               (rollback ? " after " + std::to_string(summary.rollbacks) + " rollbacks (train.rollback_max)"
                                         : std::string(" skipped (train.nonfinite_max)")) +
                               "; stopping (lower optim.lr, set optim.grad_clip, or resume from an earlier checkpoint)");
    }
    progress.update(r);
    if (step == start_step) summary.first_loss = loss;
    summary.final_loss = loss;
    summary.losses.push_back(loss);
    summary.steps = r.step;
    summary.step_seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
    if (rollback_to >= 0) {
      ++summary.rollbacks;
      progress.message("  rollback after step " + std::to_string(step + 1) + ": " + std::to_string(consecutive_bad) +
                       " non-finite steps in a row; restored step " + std::to_string(rollback_to) +
                       ", continuing with the data after the bad batches");
      rolled_back_from = std::max(rolled_back_from, step + 1);
      consecutive_bad = 0;
      step = rollback_to - 1;  // the loop's ++ makes it rollback_to
      continue;
    }
    // Every rank must stop after the same step: one tiny max-reduction of "was I signalled".
    bool stop = preemption_signal() != 0;
    if (world.size > 1) {
      at::Tensor flag = at::full({1}, int64_t(stop), at::kLong);
      mesh.world->all_reduce(flag, parallel::ReduceOp::Max)->wait();
      stop = flag.item<int64_t>() != 0;
    }
    report_save(saver.poll());  // an asynchronous save that every rank has finished writing
    const bool last = step + 1 == cfg.train.steps;
    const int64_t every = cfg.checkpoint.interval;
    if (stop || (every > 0 && ((step + 1) % every == 0 || last))) save(step + 1);
    if (stop && !last) {  // a signal in the last step: the run is complete anyway
      summary.preempted = true;
      report_save(saver.finish());
      progress.message("  stopped  after step " + std::to_string(step + 1) + " on a signal; resume with --resume auto");
      break;
    }
  }
  report_save(saver.finish());
  progress.finish();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  summary.peak_rss_bytes = int64_t(usage.ru_maxrss) * 1024;  // Linux reports KiB
  summary.peak_device_bytes = peak_device_bytes(device);
  summary.device = device.str();
  char done[260];
  const int n = std::snprintf(done, sizeof done, "done: %lld steps, loss %.4f -> %.4f, peak memory %.0f MiB on this rank",
                              static_cast<long long>(summary.steps), summary.first_loss, summary.final_loss,
                              double(summary.peak_rss_bytes) / (1 << 20));
  if (device.is_cuda())
    std::snprintf(done + n, sizeof done - size_t(n), " (host), %.0f MiB allocated on its GPU at the peak",
                  double(summary.peak_device_bytes) / (1 << 20));
  progress.message(done);
  summary.trace = reducer.trace();
  if (options.keep_parameters) {
    for (const auto& item : net->named_parameters())
      if (plan.holds(item.key())) summary.parameters.emplace_back(item.key(), item.value().detach().to(at::kCPU).clone());
    for (const auto& lr : routers) summary.router_biases.push_back(lr.router->bias.detach().to(at::kCPU).clone());
  }
  return summary;
}

}  // namespace shoestring
