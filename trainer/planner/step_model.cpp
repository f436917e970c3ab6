#include "trainer/planner/step_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>

#include "trainer/pipeline_stages.h"

namespace shoestring::planner {

namespace {

constexpr double kTera = 1e12, kGiga = 1e9;

// Dense rate for a precision: bf16 and fp8's high-precision part at the BF16 peak, fp32 as TF32
// (half the BF16 peak on Ampere and Hopper). The "cpu" entry's one figure serves every precision.
double dense_rate(const std::string& precision, const Hardware& hw) {
  const double peak = hw.gpu.bf16_tflops * kTera * hw.efficiency;
  if (hw.gpu.name == "cpu") return peak;
  return precision == "fp32" || precision == "fp64" ? peak / 2 : peak;
}

}  // namespace

std::vector<double> stage_forward_seconds(const Config& cfg, const std::vector<StageCost>& stages, const Hardware& hw) {
  const double tokens = double(cfg.train.micro_batch_size * cfg.train.seq_len);
  const double rate = dense_rate(cfg.train.precision, hw);
  const bool fp8 = cfg.train.precision == "fp8" && hw.gpu.fp8_tflops > 0;
  const double fp8_rate = hw.gpu.fp8_tflops * kTera * hw.efficiency;
  std::vector<double> out;
  for (const StageCost& c : stages) {
    const double t = fp8 ? (c.flops - c.fp8_flops) / rate + c.fp8_flops / fp8_rate : c.flops / rate;
    out.push_back(t * tokens);
  }
  return out;
}

parallel::Simulation simulate_pipeline(const parallel::Schedule& schedule, const std::vector<double>& f_s, double comm_s) {
  return parallel::simulate(schedule, parallel::costs_from_forward(schedule, f_s, comm_s));
}

const parallel::Simulation& SimulationCache::get(const parallel::Schedule& schedule, const std::vector<double>& f_s,
                                                 double comm_s) {
  Key key{schedule.name, schedule.pp, schedule.microbatches, schedule.chunks, {std::bit_cast<uint64_t>(comm_s)}};
  for (double f : f_s) std::get<4>(key).push_back(std::bit_cast<uint64_t>(f));
  auto it = sims_.find(key);
  if (it == sims_.end()) {
    parallel::Simulation sim = simulate_pipeline(schedule, f_s, comm_s);
    sim.timeline.clear();
    it = sims_.emplace(std::move(key), std::move(sim)).first;
  }
  return it->second;
}

StepEstimate estimate_step(const Config& cfg, const parallel::Schedule& schedule, const std::vector<StageCost>& stages,
                           const MemoryPlan& memory, const Hardware& hw, SimulationCache* sims) {
  const ModelConfig& m = cfg.model;
  const int pp = schedule.pp, dp = int(cfg.parallel.dp), ep = int(cfg.parallel.ep), gpn = hw.gpus_per_node;
  const double mb = double(schedule.microbatches);
  const double tokens = double(cfg.train.micro_batch_size * cfg.train.seq_len);
  const double s = activation_element_bytes(cfg.train.precision);
  const double nvlink = hw.gpu.nvlink_gbs * kGiga, network = hw.gpu.network_gbs * kGiga;
  StepEstimate e;
  e.tokens_per_step = tokens * mb * double(dp);
  e.flops_per_step = model_flops_per_token(m, cfg.train.seq_len) * e.tokens_per_step;

  // Placement (parallel/mesh.h): rank = pp_rank x dp + dp_rank, ep ranks consecutive inside dp.
  CommVolume& c = e.comm;
  c.pp_inter = pp > 1 && pp * dp > gpn;  // some stage boundary crosses a node when the job does
  c.dp_inter = dp > gpn;
  c.ep_inter = ep > gpn;

  // PP: each boundary carries one activation forward and its gradient back per micro-batch.
  const double pp_msg = tokens * double(m.d_model) * s;
  const double pp_msg_s = pp > 1 ? pp_msg / (c.pp_inter ? network : nvlink) : 0.0;
  c.pp_bytes = pp > 1 ? 2 * pp_msg * mb * double(schedule.chunks) : 0.0;
  c.pp_s = pp > 1 ? 2 * pp_msg_s * mb * double(schedule.chunks) : 0.0;

  const std::vector<double> f_s = stage_forward_seconds(cfg, stages, hw);
  const parallel::Simulation sim = sims ? sims->get(schedule, f_s, pp_msg_s) : simulate_pipeline(schedule, f_s, pp_msg_s);
  e.makespan_s = sim.makespan;
  for (int r = 0; r < pp; ++r) {
    e.compute_s = std::max(e.compute_s, sim.busy[size_t(r)]);
    const double frac = sim.makespan > 0 ? sim.bubble[size_t(r)] / sim.makespan : 0.0;
    e.bubble_fraction += frac / pp;
    e.worst_bubble_fraction = std::max(e.worst_bubble_fraction, frac);
  }

  // The busiest pipeline rank's chunks: MoE layers and held parameters.
  const RankMemory& worst = memory.ranks[memory.worst];
  int moe_layers = 0;
  double last_backward_s = 0;
  for (int ch = 0; ch < schedule.chunks; ++ch) {
    const size_t st = size_t(schedule.model_stage(worst.pp_rank, ch));
    moe_layers += stages[st].moe_layers;
    last_backward_s += 2 * f_s[st];
  }

  // EP: per MoE layer and micro-batch, dispatch (fp8 payload with fp8 training or fp8 dispatch,
  // DeepSeek-V3 §3.3.3) and combine (bf16) forward, and the same two backward. The share bound for
  // other ranks is (ep-1)/ep; over nodes, node-limited routing (parallel.ep_max_nodes, §2.1.2) sends each
  // token at most once to each of at most M nodes, the NVLink forward fans it out.
  if (ep > 1 && moe_layers > 0) {
    const double k = double(m.n_activated_experts), d = double(m.d_model);
    const double dispatch = cfg.train.precision == "fp8" || cfg.parallel.ep_dispatch_dtype == "fp8" ? 1.0 : s;
    const double per_token = d * (dispatch + s);  // one copy: dispatch + combine
    double intra = 0, inter = 0;
    if (!c.ep_inter) {
      intra = tokens * k * per_token * double(ep - 1) / ep;
    } else {
      const double nodes = double(ep) / gpn;
      // Node-limited reach: parallel.ep_max_nodes, or group-limited routing when the expert groups
      // line up with nodes (DeepSeek-V3: 8 groups on 8 nodes, top-4 groups = at most 4 nodes).
      double reach = std::min(k, nodes);
      const double groups = double(m.n_expert_groups), limited = double(m.n_limited_groups);
      if (cfg.parallel.ep_max_nodes > 0)
        reach = std::min<double>(double(cfg.parallel.ep_max_nodes), nodes);
      else if (limited < groups && groups >= nodes && int64_t(groups) % int64_t(nodes) == 0)
        reach = std::min(reach, std::ceil(limited / (groups / nodes)));
      inter = tokens * per_token * reach * (nodes - 1) / nodes;
      intra = tokens * k * per_token * double(gpn - 1) / ep;
    }
    c.ep_bytes_per_layer = intra + inter;
    const double layer_s = intra / nvlink + inter / network;
    c.ep_bytes = 2 * c.ep_bytes_per_layer * moe_layers * mb;  // x2: backward
    c.ep_s = 2 * layer_s * moe_layers * mb;
    // DualPipe pairs each chunk's all-to-all with another micro-batch's compute (§3.2.1); the
    // other schedules wait for it.
    const bool overlapped = schedule.name == "dualpipe" || schedule.name == "dualpipev";
    e.exposed_ep_s = overlapped ? std::max(0.0, c.ep_s - e.compute_s) : c.ep_s;
  }

  // DP: fp32 gradients, dense ones over dp, routed experts over the dp/ep replicas. Ring volume
  // 2(g-1)/g x bytes for all-reduce; ZeRO-1's reduce-scatter + parameter all-gather moves the same.
  if (dp > 1) {
    const double expert_params = [&] {
      double x = 0;
      for (int ch = 0; ch < schedule.chunks; ++ch)
        x += stages[size_t(schedule.model_stage(worst.pp_rank, ch))].expert_params / ep;
      return x;
    }();
    const double dense_params = worst.params - expert_params;
    const double g = double(dp), gr = double(dp / ep);
    c.dp_bytes = 4 * (dense_params * 2 * (g - 1) / g + (gr > 1 ? expert_params * 2 * (gr - 1) / gr : 0.0));
    c.dp_s = c.dp_bytes / (c.dp_inter ? network : nvlink);
    // Buckets are reduced while the last micro-batch's backward runs; ZeRO-1's all-gather (half
    // the volume) follows the optimizer step and is never hidden.
    if (cfg.parallel.zero1)
      e.exposed_dp_s = std::max(0.0, c.dp_s / 2 - last_backward_s) + c.dp_s / 2;
    else
      e.exposed_dp_s = std::max(0.0, c.dp_s - last_backward_s);
  }

  e.step_s = e.makespan_s + e.exposed_ep_s + e.exposed_dp_s;
  e.tokens_per_s = e.step_s > 0 ? e.tokens_per_step / e.step_s : 0.0;
  const double peak = hw.gpu.bf16_tflops * kTera * double(hw.gpus);
  e.mfu = e.step_s > 0 ? e.flops_per_step / (e.step_s * peak) : 0.0;
  return e;
}

}  // namespace shoestring::planner
