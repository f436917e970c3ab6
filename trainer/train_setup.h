#pragma once
// What train() builds before its first step: the layout (mesh, device, precision), the data
// loaders, the model on this rank, and what updates it (gradient reducer, AdamW, routers, pipeline
// executor). Several of these constructions are collective, so train() builds them in this order
// on every rank.
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/datasets.h"
#include "data/loader.h"
#include "parallel/grad_reducer.h"
#include "parallel/mesh.h"
#include "parallel/pipeline_executor.h"
#include "parallel/world.h"
#include "trainer/config.h"
#include "trainer/expert_parallel.h"
#include "trainer/model/router.h"
#include "trainer/model/transformer.h"
#include "trainer/optim/adamw.h"
#include "trainer/pipeline_plan.h"

namespace shoestring {

// The layout a config gives on the ranks started: decided before any data or weights exist.
struct TrainLayout {
  parallel::MeshShape shape;
  int64_t accum = 1;  // micro-batches per rank per step
  parallel::Schedule schedule;
  int threads = 0;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;  // activations and parameters
  parallel::CommOptions comm_opts;
  parallel::Mesh mesh;
  bool rank0 = false;
};

// Layout errors (parallel.* against the ranks started) are config errors, found before any work.
// Sets the thread count and the current GPU.
TrainLayout train_layout(const Config& cfg, const parallel::World& world);

// The training and validation loaders of this rank (its dp slice).
struct TrainData {
  // `converting` (ckpt convert) reads no data: the synthetic source stands in.
  TrainData(const Config& cfg, const TrainLayout& layout, bool converting);
  data::Datasets datasets;
  data::Loader loader;
  std::unique_ptr<data::Loader> val_loader;  // null without validation data or data.eval_interval
};

// The process groups gradients travel over: the mesh's MPI groups on CPU, NCCL mirrors of them
// when training on GPUs across ranks.
struct CommGroups {
  parallel::GroupPtr dp, ep_replica, ep;  // ep: the expert all-to-all (tokens on the device)
  parallel::GroupPtr pp;                  // activations and gradients between pipeline stages
};

// The model as this rank holds it: its expert shard and its pipeline chunks, with the same
// weights as every other rank of its groups.
struct TrainModel {
  model::Transformer net;
  CommGroups comm;
  // Counted whole: the banner describes the model, not this rank's shard of it.
  int64_t param_count = 0, activated_count = 0;
  std::shared_ptr<EpDispatcher> ep_dispatch;  // with parallel.ep > 1
  PipelinePlan plan;
};

TrainModel build_model(const Config& cfg, const TrainLayout& layout, const parallel::World& world);

// A MoE router this rank holds: its index among all routers of the model (main model, then MTP
// modules) and whether this rank reports it (one pipeline rank per router).
struct LocalRouter {
  model::Router router;
  size_t index = 0;
  bool reports = true;
};

// Routers: all of the model's, by index; this rank updates those it holds. chunk_routers[c]:
// the routers chunk c's forward passes, in the order it appends their statistics.
struct RouterTable {
  std::vector<LocalRouter> routers;
  std::vector<std::vector<size_t>> chunk_routers;
  size_t n_routers = 0;
};

// What turns a step's backward into updated weights on this rank.
struct TrainUpdater {
  TrainUpdater(const Config& cfg, const TrainLayout& layout, TrainModel& m);
  TrainUpdater(const TrainUpdater&) = delete;
  TrainUpdater& operator=(const TrainUpdater&) = delete;

  parallel::GradReducer reducer;
  optim::AdamW opt;
  std::vector<at::Tensor> grads;  // the reducer's owned gradients, slot by slot of opt
  // Collective over pp: sub-groups for the tensors several pipeline ranks hold.
  SharedGradSync shared_grads;
  std::vector<char> norm_skip;  // gradients another pipeline rank counts in the norm
  parallel::GroupPtr norm_group;
  RouterTable routers;
  parallel::PipelineExecutor executor;
};

struct TrainOptions;

// Everything above, built in the order train() needs it (members are initialised in declaration
// order, and the constructions that are collective run in the same order on every rank).
struct TrainSetup {
  TrainSetup(const Config& cfg, const parallel::World& world, const TrainOptions& options);

  TrainLayout layout;
  // ckpt convert: load a checkpoint into this layout and save it again, without reading data.
  bool converting = false;
  TrainData data;
  TrainModel model;
  TrainUpdater updater;
};

}  // namespace shoestring
