#include "trainer/moe_bench.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>

#include "ops/fp8_rows.h"
#include "ops/moe_permute.h"
#include "parallel/all_to_all_v.h"
#include "parallel/process_group.h"
#include "trainer/expert_parallel.h"

namespace shoestring {

namespace {

using Clock = std::chrono::steady_clock;

// Seconds per call of `body`, the slowest rank's (a step waits for it).
template <class F>
double time_per_call(parallel::ProcessGroup& g, int iters, F&& body) {
  g.barrier()->wait();
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) body();
  at::Tensor t = at::full({1}, std::chrono::duration<double>(Clock::now() - t0).count() / iters, at::kDouble);
  g.all_reduce(t, parallel::ReduceOp::Max)->wait();
  return t.item<double>();
}

}  // namespace

int run_moe_bench(const parallel::World& world, const MoeBenchOptions& o, std::ostream& out, std::string& error) {
  const parallel::GroupPtr g = parallel::make_world_group(world, {});
  const int ranks = g->size();
  const at::ScalarType dtype = o.dtype == "bfloat16" ? at::kBFloat16
                               : o.dtype == "float32" ? at::kFloat
                               : o.dtype == "float64" ? at::kDouble
                                                      : at::kChar;
  if (dtype == at::kChar) return error = "--dtype must be bfloat16, float32 or float64, got " + o.dtype, 2;
  if (o.dispatch_dtype != "auto" && o.dispatch_dtype != "fp8")
    return error = "--dispatch-dtype must be auto or fp8, got " + o.dispatch_dtype, 2;
  const bool fp8 = o.dispatch_dtype == "fp8";
  for (const auto& [flag, value, least] : {std::tuple{"--tokens", int64_t(o.tokens), 1}, {"--d-model", int64_t(o.d_model), 1},
                                           {"--experts", int64_t(o.experts), 1}, {"--top-k", int64_t(o.top_k), 1},
                                           {"--iters", int64_t(o.iters), 1}, {"--rounds", int64_t(o.rounds), 1},
                                           {"--warmup", int64_t(o.warmup), 0}})
    if (value < least)
      return error = std::string(flag) + " must be >= " + std::to_string(least) + ", got " + std::to_string(value), 2;
  if (o.top_k > o.experts)
    return error = "--top-k " + std::to_string(o.top_k) + " exceeds --experts " + std::to_string(o.experts), 2;
  if (o.experts % ranks != 0)
    return error = "--experts " + std::to_string(o.experts) + " must be divisible by the " + std::to_string(ranks) +
                   " ranks",
           2;
  at::NoGradGuard no_grad;
  at::manual_seed(uint64_t(1 + g->rank()));
  const int64_t per_rank = o.experts / ranks;
  const at::Tensor x = at::randn({o.tokens, o.d_model}).to(dtype);
  // Uniformly random top-k experts (distinct per token), gates summing to 1.
  const at::Tensor ids = std::get<1>(at::rand({o.tokens, o.experts}).topk(o.top_k, -1));
  const at::Tensor gates = at::softmax(at::randn({o.tokens, o.top_k}), -1);
  const ops::Permutation perm = ops::plan_permutation(ids, o.experts);
  const auto unchanged = [](const at::Tensor& rows, const std::vector<int64_t>&) { return rows; };
  const model::LocalExperts identity{g->rank() * per_rank, per_rank, o.experts, unchanged};
  EpDispatcher dispatcher(g, fp8 ? EpDispatchDtype::kFp8 : EpDispatchDtype::kAuto);

  // The raw exchange moves the same rows: one per (token, destination rank), as the dispatcher.
  const at::Tensor dest = at::floor_divide(at::repeat_interleave(at::tensor(perm.counts, at::kLong)), per_rank);
  const at::Tensor keys = std::get<0>(at::_unique2(dest * o.tokens + perm.source_token));
  const at::Tensor counts = at::bincount(at::floor_divide(keys, o.tokens), {}, ranks);
  const std::vector<int64_t> send(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + ranks);
  const std::vector<int64_t> recv = parallel::exchange_counts(*g, send, at::kCPU);
  const int64_t rows_sent = keys.size(0);
  int64_t rows_recv = 0;
  for (int64_t r : recv) rows_recv += r;
  // There: token rows, or their FP8 bytes; back: rows of --dtype.
  const int64_t there_bytes = fp8 ? ops::fp8_row_bytes(o.d_model) : o.d_model * int64_t(c10::elementSize(dtype));
  const at::Tensor send_x = fp8 ? at::randint(256, {rows_sent, there_bytes}, at::kByte)
                                : at::randn({rows_sent, o.d_model}).to(dtype);
  const at::Tensor recv_x = at::empty({rows_recv, send_x.size(1)}, send_x.options());
  const at::Tensor partial = at::randn({rows_recv, o.d_model}).to(dtype), back = at::empty({rows_sent, o.d_model}, partial.options());
  // The single-process dispatcher on the same tokens, all experts local: the permute, expand and
  // gate-weighted sum a MoE layer does without expert parallelism, for the breakdown.
  const model::LocalExperts all_local{0, o.experts, o.experts, unchanged};
  model::LocalDispatcher local_dispatcher;
  auto ours = [&] { dispatcher.run(x, gates, perm, identity); };
  auto local = [&] { local_dispatcher.run(x, gates, perm, all_local); };
  auto raw = [&] {
    g->all_to_all(recv_x, send_x, recv, send)->wait();
    g->all_to_all(back, partial, send, recv)->wait();
  };
  for (int i = 0; i < o.warmup; ++i) ours(), raw();
  for (int i = 0; i < o.warmup; ++i) local();
  double best_ours = std::numeric_limits<double>::infinity(), best_raw = best_ours, best_local = best_ours;
  for (int round = 0; round < o.rounds; ++round) {
    best_ours = std::min(best_ours, time_per_call(*g, o.iters, ours));
    best_raw = std::min(best_raw, time_per_call(*g, o.iters, raw));
    best_local = std::min(best_local, time_per_call(*g, o.iters, local));
  }
  // Token bytes this rank moves per call, there and back (gates and masks not counted: they are
  // the dispatcher's overhead); the total over ranks / the slowest rank's time is the rate.
  at::Tensor bytes = at::full(
      {1}, double(rows_sent * (there_bytes + o.d_model * int64_t(c10::elementSize(dtype)))), at::kDouble);
  g->all_reduce(bytes)->wait();
  if (g->rank() == 0) {
    char line[512];
    const double b = bytes.item<double>();
    // raw / what EP adds beyond the single-process layout work; null when ours is not slower.
    char beyond_buf[32] = "null";
    if (best_ours > best_local) std::snprintf(beyond_buf, sizeof beyond_buf, "%.3f", best_raw / (best_ours - best_local));
    const std::string beyond = beyond_buf;
    std::snprintf(line, sizeof line,
                  "{\"bench\":\"moe\",\"ranks\":%d,\"tokens_per_rank\":%lld,\"d_model\":%lld,\"experts\":%lld,"
                  "\"top_k\":%lld,\"dtype\":\"%s\",\"dispatch_dtype\":\"%s\",\"rows_sent_rank0\":%lld,\"bytes\":%.0f,\"ours_ms\":%.4g,"
                  "\"ours_gbps\":%.4g,\"raw_ms\":%.4g,\"raw_gbps\":%.4g,\"ratio\":%.3f,\"local_ms\":%.4g,"
                  "\"ratio_beyond_local\":%s}\n",
                  ranks, static_cast<long long>(o.tokens), static_cast<long long>(o.d_model),
                  static_cast<long long>(o.experts), static_cast<long long>(o.top_k), o.dtype.c_str(), o.dispatch_dtype.c_str(),
                  static_cast<long long>(rows_sent), b, best_ours * 1e3, b / best_ours / 1e9, best_raw * 1e3,
                  b / best_raw / 1e9, best_raw / best_ours, best_local * 1e3,
                  beyond.c_str());
    out << line << std::flush;
  }
  return 0;
}

}  // namespace shoestring
