#include "trainer/train_step.h"

#include <ATen/ATen.h>

#include <cmath>

#include "trainer/distributed.h"
#include "trainer/optim/adamw.h"
#include "trainer/pipeline_stages.h"

namespace shoestring {

namespace {

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
double mean_validation_loss(model::Transformer& net, const PipelinePlan& plan, parallel::ProcessGroup& pp,
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

double bias_gamma_at(const TrainConfig& t, int64_t step) {
  return t.router_bias_stop_step > 0 && step >= t.router_bias_stop_step ? 0.0 : t.router_bias_gamma;
}

double mtp_lambda_at(const TrainConfig& t, int64_t step) {
  return t.mtp_lambda_switch_step > 0 && step >= t.mtp_lambda_switch_step ? t.mtp_lambda_late : t.mtp_lambda;
}

std::vector<data::Batch> read_batches(TrainSetup& s) {
  std::vector<data::Batch> batches;
  for (int64_t micro = 0; micro < s.layout.accum; ++micro) {
    data::Batch b = s.data.loader.next();
    b.inputs = b.inputs.to(s.layout.device);
    b.targets = b.targets.to(s.layout.device);
    batches.push_back(std::move(b));
  }
  return batches;
}

StepTotals forward_backward(TrainSetup& s, const Config& cfg, const std::vector<data::Batch>& batches,
                            const model::LossWeights& weights, bool poison, StepRecord& r,
                            std::vector<std::vector<parallel::ExecutedAction>>* traces) {
  const parallel::MeshShape& shape = s.layout.shape;
  const parallel::Mesh& mesh = s.layout.mesh;
  const int64_t accum = s.layout.accum;
  const PipelinePlan& plan = s.model.plan;
  model::Transformer& net = s.model.net;
  parallel::GradReducer& reducer = s.updater.reducer;
  const auto& chunk_routers = s.updater.routers.chunk_routers;
  const double micro_total = double(accum * shape.dp);  // micro-batches per step over all ranks
  // Summed over the step's micro-batches: main loss, mtp loss, balance loss, dropped tokens,
  // then the expert loads of every router of the model (zero for those of other stages).
  std::vector<double> sums(4, 0.0);
  std::vector<at::Tensor> load(s.updater.routers.n_routers);
  parallel::StageCallbacks callbacks;
  callbacks.forward = [&](int mb, int chunk, int, const at::Tensor& input, const parallel::ForwardMode& mode) {
    const StageSpan& span = plan.chunks[size_t(chunk)];
    model::LossBreakdown lb;
    parallel::StageOutput o = stage_forward(*net, span, input, batches[size_t(mb)].inputs,
                                            batches[size_t(mb)].targets, weights, double(accum), lb, mode);
    if (poison && mb == 0) {  // the loss, or on an earlier stage the activation it comes from
      const double nan = std::nan("");
      o.output = o.output * nan;
      if (!o.segments.empty()) o.segments.back().outputs = {o.output};
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
  const auto act_options = at::TensorOptions().dtype(s.layout.dtype).device(s.layout.device);
  callbacks.activation_buffer = [&](int, int) {
    return at::empty({cfg.train.micro_batch_size, cfg.train.seq_len, cfg.model.d_model}, act_options);
  };
  // One pipeline rank: gradients are reduced while the last backward runs (the DP hooks).
  // Several: after the schedule, once the copies of shared tensors have been summed.
  if (shape.pp == 1) callbacks.before_backward = [&](int, int, bool last) { reducer.prepare_backward(last); };
  s.updater.executor.run(callbacks);
  if (traces) traces->push_back(s.updater.executor.trace());
  if (shape.pp > 1) {
    s.updater.shared_grads.sync();
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
  return {loss, std::move(load)};
}

double global_grad_norm(TrainSetup& s) {
  return std::sqrt(s.updater.reducer.global_grad_sq(*s.updater.norm_group, s.updater.norm_skip));
}

void apply_update(TrainSetup& s, const Config& cfg, int64_t step, double lr, double grad_norm,
                  const std::vector<at::Tensor>& load, StepRecord& r) {
  parallel::GradReducer& reducer = s.updater.reducer;
  if (const double c = optim::clip_scale(grad_norm, cfg.optim.grad_clip); c != 1.0) reducer.scale_grads(c);
  s.updater.opt.step(lr, s.updater.grads);
  reducer.all_gather_params();
  update_router_biases(s.updater.routers.routers, load, bias_gamma_at(cfg.train, step), *s.layout.mesh.pp, r);
}

void record_ep_traffic(TrainSetup& s, StepRecord& r) {
  if (!s.model.ep_dispatch) return;
  const EpTraffic traffic = s.model.ep_dispatch->take_traffic();
  at::Tensor most = at::tensor(
      std::vector<int64_t>{traffic.sent, traffic.received, traffic.sent_bytes, traffic.received_bytes}, at::kLong);
  s.layout.mesh.world->all_reduce(most, parallel::ReduceOp::Max)->wait();
  r.has_ep = true;
  r.ep_rows_sent = most[0].item<int64_t>();
  r.ep_rows_received = most[1].item<int64_t>();
  r.ep_bytes_sent = most[2].item<int64_t>();
  r.ep_bytes_received = most[3].item<int64_t>();
}

double validation_loss(TrainSetup& s, const Config& cfg, const model::LossWeights& weights) {
  return mean_validation_loss(s.model.net, s.model.plan, *s.model.comm.pp, *s.data.val_loader,
                              cfg.data.eval_batches * s.layout.accum, s.layout.device, s.layout.dtype, weights,
                              *s.layout.mesh.dp);
}

}  // namespace shoestring
