#include "trainer/train_setup.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <unistd.h>

#include <stdexcept>

#include "ops/cuda_runtime.h"
#include "trainer/config_loader.h"
#include "trainer/distributed.h"
#include "trainer/model/convert_fp8.h"
#include "trainer/train.h"

namespace shoestring {

namespace {

// Each rank takes the GPU of its local rank (ranks on a node = GPUs on it, as mpirun/srun place
// them).
at::Device local_device(const std::string& wanted, int local_rank) {
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

// local_device, checked against every other rank's (collective): a job whose ranks share a GPU or
// mix GPUs and CPUs stops here with one config error instead of failing inside NCCL's set-up.
at::Device pick_device(const std::string& wanted, const parallel::World& world) {
  const at::Device dev = local_device(wanted, world.local_rank);
  if (world.size == 1) return dev;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  parallel::RankDevice mine{world.node, host, dev.is_cuda() ? ops::cuda_device_bus_id(dev.index()) : "",
                            dev.is_cuda() ? ops::cuda_device_count() : 0};
  if (dev.is_cuda() && mine.gpu.empty()) mine.gpu = "#" + std::to_string(dev.index());  // no bus id: the index
  std::vector<parallel::RankDevice> all;
  for (const std::string& s : parallel::all_gather_strings(world, parallel::encode(mine)))
    all.push_back(parallel::decode_rank_device(s));
  if (const std::string problem = parallel::device_placement_problem(all); !problem.empty()) throw ConfigError(problem);
  return dev;
}

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

data::DatasetOptions train_dataset_options(const Config& cfg, int dp, bool converting) {
  Config data_cfg = cfg;
  if (converting) data_cfg.data.source = "synthetic";
  return dataset_options(data_cfg, dp);
}

data::LoaderOptions loader_options(const Config& cfg, const TrainLayout& layout) {
  data::LoaderOptions lo{cfg.train.micro_batch_size * layout.shape.dp, cfg.train.seq_len};
  lo.dp_rank = layout.mesh.coord.dp;
  lo.dp_size = layout.shape.dp;
  lo.prefetch = size_t(cfg.data.prefetch);
  lo.seed = uint64_t(cfg.train.seed);
  return lo;
}

// Routed experts are reduced over the ranks holding the same experts, the rest over all of dp.
std::vector<parallel::ReducedParam> reduced_params(TrainModel& m) {
  std::vector<parallel::ReducedParam> reduced;
  for (const auto& item : m.net->named_parameters()) {
    if (!m.plan.holds(item.key())) continue;
    reduced.push_back({item.key(), item.value(), model::is_routed_expert(item.key()) ? 1 : 0});
  }
  return reduced;
}

std::vector<std::pair<std::string, at::Tensor>> held_params(TrainModel& m) {
  std::vector<std::pair<std::string, at::Tensor>> held;
  for (const auto& item : m.net->named_parameters()) {
    if (!m.plan.holds(item.key())) continue;
    held.emplace_back(item.key(), item.value());
  }
  return held;
}

parallel::ReducerOptions reducer_options(const Config& cfg, const TrainLayout& layout) {
  parallel::ReducerOptions ro;
  ro.bucket_mb = cfg.parallel.bucket_mb;
  ro.zero1 = cfg.parallel.zero1;
  ro.grad_scale = 1.0 / double(layout.shape.dp);
  return ro;
}

std::vector<optim::Slot> optimizer_slots(const parallel::GradReducer& reducer, const Config& cfg) {
  std::vector<optim::Slot> slots;
  for (const auto& o : reducer.owned()) {
    const std::string& name = reducer.params()[o.param].name;
    slots.push_back({name, o.value, optim::decays(cfg.optim, model::parameter_kind(name))});
  }
  return slots;
}

std::vector<at::Tensor> owned_grads(const parallel::GradReducer& reducer) {
  std::vector<at::Tensor> grads;
  for (const auto& o : reducer.owned()) grads.push_back(o.grad);
  return grads;
}

std::vector<char> skipped_in_norm(const parallel::GradReducer& reducer, const PipelinePlan& plan) {
  std::vector<char> skip;
  for (const auto& p : reducer.params()) skip.push_back(!plan.writes(p.name));
  return skip;
}

RouterTable router_table(TrainModel& m, const Config& cfg) {
  RouterTable t;
  t.chunk_routers.resize(m.plan.chunks.size());
  for (const auto& item : m.net->named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto r = std::dynamic_pointer_cast<model::RouterImpl>(item.value());
    if (!r) continue;
    const std::string name = item.key();
    const std::string param = name + ".weight";
    if (m.plan.holds(param)) t.routers.push_back({model::Router(r), t.n_routers, m.plan.writes(param)});
    for (size_t c = 0; c < m.plan.chunks.size(); ++c)
      if (stage_uses(m.plan.chunks[c], name, cfg.model)) t.chunk_routers[c].push_back(t.n_routers);
    ++t.n_routers;
  }
  return t;
}

// ckpt convert reads no data: the loader state is carried over from the source checkpoint as text.
bool is_converting(const TrainOptions& options) {
  const bool converting = !options.convert_to.empty();
  if (converting && options.resume.empty()) throw std::invalid_argument("train: convert_to needs a checkpoint to resume");
  return converting;
}

}  // namespace

TrainLayout train_layout(const Config& cfg, const parallel::World& world) {
  const parallel::MeshShape shape = mesh_shape(cfg, world.size);
  const int64_t accum = accumulation_steps(cfg, shape.dp);
  parallel::Schedule schedule = step_schedule(cfg, shape.pp, accum);
  const int threads = parallel::threads_per_rank(int(cfg.train.threads), world);
  at::set_num_threads(threads);
  const at::Device device = pick_device(cfg.train.device, world);
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
  parallel::Mesh mesh = parallel::make_mesh(shape, parallel::make_world_group(world, comm_opts));
  return TrainLayout{shape, accum, std::move(schedule), threads, device, dtype, comm_opts, std::move(mesh),
                     world.rank == 0};
}

// Bad data (missing file, wrong tokenizer, too short) fails here, before the model is built
// or the run directory exists.
TrainData::TrainData(const Config& cfg, const TrainLayout& layout, bool converting)
    : datasets(data::open_datasets(train_dataset_options(cfg, layout.shape.dp, converting))),
      loader(datasets.train, loader_options(cfg, layout)) {
  if (cfg.data.eval_interval > 0 && datasets.val) {
    data::LoaderOptions lo = loader_options(cfg, layout);
    lo.prefetch = 0;  // read on demand: evaluations are rare and always start from sample 0
    val_loader = std::make_unique<data::Loader>(datasets.val, lo);
  }
}

TrainModel build_model(const Config& cfg, const TrainLayout& layout, const parallel::World& world) {
  const parallel::Mesh& mesh = layout.mesh;
  at::manual_seed(uint64_t(cfg.train.seed));
  model::Transformer net(cfg.model, layout.dtype);
  if (layout.dtype == at::kDouble) net->to(at::kDouble);
  net->to(layout.device);
  if (cfg.train.precision == "fp8") model::convert_to_fp8(*net);
  const CommGroups comm = comm_groups(mesh, layout.device, layout.comm_opts);
  const int64_t param_count = net->parameter_count(), activated_count = net->activated_parameter_count();
  // Built whole above (the same initialisation as one process), then each rank keeps its shard.
  std::shared_ptr<EpDispatcher> ep_dispatch;
  if (layout.shape.ep > 1) {
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
  PipelinePlan plan = make_pipeline_plan(cfg, layout.schedule, mesh.coord.pp, tensor_names);
  if (layout.shape.pp > 1) release_unheld(*net, plan);
  broadcast_model(net, plan, *comm.dp, *comm.ep_replica);
  return TrainModel{std::move(net), comm, param_count, activated_count, std::move(ep_dispatch), std::move(plan)};
}

TrainUpdater::TrainUpdater(const Config& cfg, const TrainLayout& layout, TrainModel& m)
    : reducer(reduced_params(m), {m.comm.dp, m.comm.ep_replica}, reducer_options(cfg, layout)),
      opt(optimizer_slots(reducer, cfg), cfg.optim),
      grads(owned_grads(reducer)),
      shared_grads(m.plan, m.comm.pp, held_params(m)),
      norm_skip(skipped_in_norm(reducer, m.plan)),
      norm_group(layout.shape.pp > 1 ? layout.mesh.world : layout.mesh.dp),
      routers(router_table(m, cfg)),
      executor(m.plan.schedule, m.comm.pp, cfg.parallel.overlap_fb, cfg.parallel.fill_waits) {}

TrainSetup::TrainSetup(const Config& cfg, const parallel::World& world, const TrainOptions& options)
    : layout(train_layout(cfg, world)),
      converting(is_converting(options)),
      data(cfg, layout, converting),
      model(build_model(cfg, layout, world)),
      updater(cfg, layout, model) {}

}  // namespace shoestring
