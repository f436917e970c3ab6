#include "trainer/pipeline_stages.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "trainer/model/param_count.h"

namespace shoestring {

namespace {

// Attention scores and the weighted sum: 2 x (q.k and p.v) multiply-adds per head dimension, over
// half the sequence on average (causal).
double attention_score_flops(const ModelConfig& m, int64_t seq_len) {
  const double qk = m.attention == "mla" ? double(m.n_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim))
                                         : double(m.d_model);
  const double v = m.attention == "mla" ? double(m.n_heads * m.v_head_dim) : double(m.d_model);
  return 2.0 * (qk + v) * double(seq_len) / 2.0;
}

double block_flops(const ModelConfig& m, int64_t seq_len, bool moe) {
  return 2.0 * double(model::attention_params(m) + model::ffn_params(m, moe).second) +
         attention_score_flops(m, seq_len);
}

}  // namespace

std::vector<double> layer_flops(const ModelConfig& m, int64_t seq_len) {
  std::vector<double> out;
  out.push_back(double(m.d_model));  // a lookup: next to nothing, but not free
  for (int64_t i = 0; i < m.n_layers; ++i)
    out.push_back(block_flops(m, seq_len, m.n_routed_experts > 0 && i >= m.n_dense_layers));
  const double head = 2.0 * double(m.d_model * m.vocab_size);
  const double mtp = 2.0 * double(2 * m.d_model * m.d_model) + block_flops(m, seq_len, m.n_routed_experts > 0) + head;
  out.push_back(head + double(m.mtp_depth) * mtp);
  return out;
}

double model_flops_per_token(const ModelConfig& m, int64_t seq_len) {
  const std::vector<double> forward = layer_flops(m, seq_len);
  return 3.0 * std::accumulate(forward.begin(), forward.end(), 0.0);
}

namespace {

// How good a split is when ranks hold several stages: the makespan the simulator predicts for the
// schedule with each stage's forward costing its FLOPs (parallel::costs_from_forward), then the
// most expensive stage. The busiest rank alone would not do: it ignores how stages feed each other.
struct SplitCost {
  const std::vector<double>& c;  // layer_flops
  const parallel::Schedule& schedule;

  std::pair<double, double> operator()(const std::vector<int64_t>& per) const {
    std::vector<double> stage(per.size(), 0);
    size_t at = 1;
    for (size_t s = 0; s < per.size(); ++s) {
      stage[s] = (s == 0 ? c.front() : 0) + (s + 1 == per.size() ? c.back() : 0);
      for (int64_t i = 0; i < per[s]; ++i) stage[s] += c[at++];
    }
    return {parallel::simulate(schedule, parallel::costs_from_forward(schedule, stage)).makespan,
            *std::max_element(stage.begin(), stage.end())};
  }
};

// Every way of writing n as `parts` ordered non-negative counts, in lexicographic order.
void for_each_split(int64_t n, size_t parts, std::vector<int64_t>& per, size_t at,
                    const std::function<void(const std::vector<int64_t>&)>& fn) {
  if (at + 1 == parts) {
    per[at] = n;
    fn(per);
    return;
  }
  for (int64_t k = 0; k <= n; ++k) {
    per[at] = k;
    for_each_split(n - k, parts, per, at + 1, fn);
  }
}

double splits_count(int64_t n, int64_t parts) {  // C(n + parts - 1, parts - 1)
  double c = 1;
  for (int64_t i = 1; i < parts; ++i) c = c * double(n + i) / double(i);
  return c;
}

// The split minimising SplitCost: exhaustive while there are few splits (with a 1% tolerance on
// the step, below), else moving one block at a time across a stage boundary from `per` while that
// improves it.
std::vector<int64_t> balance_ranks(const SplitCost& cost, int64_t n, std::vector<int64_t> per) {
  if (splits_count(n, int64_t(per.size())) <= 5000) {
    // Among the splits within 1% of the shortest simulated step, the one with the cheapest most
    // expensive stage: the estimate is not precise enough to prefer a lopsided split for less.
    std::vector<std::pair<std::pair<double, double>, std::vector<int64_t>>> all;
    std::vector<int64_t> scratch(per.size(), 0);
    for_each_split(n, per.size(), scratch, 0, [&](const std::vector<int64_t>& p) { all.emplace_back(cost(p), p); });
    double shortest = all.front().first.first;
    for (const auto& a : all) shortest = std::min(shortest, a.first.first);
    const auto* best = &all.front();
    for (const auto& a : all)
      if (a.first.first <= shortest * 1.01 && (best->first.first > shortest * 1.01 || a.first.second < best->first.second))
        best = &a;
    return best->second;
  }
  auto best_cost = cost(per);
  for (bool improved = true; improved;) {
    improved = false;
    for (size_t b = 0; b + 1 < per.size(); ++b)
      for (int dir : {1, -1}) {
        std::vector<int64_t> p = per;
        int64_t& from = dir > 0 ? p[b] : p[b + 1];
        int64_t& to = dir > 0 ? p[b + 1] : p[b];
        if (from == 0) continue;
        --from;
        ++to;
        if (const auto k = cost(p); k < best_cost) {
          best_cost = k;
          per = p;
          improved = true;
        }
      }
  }
  return per;
}

}  // namespace

std::vector<StageSpan> partition_stages(const ModelConfig& m, int64_t seq_len, int stages,
                                        const std::vector<int64_t>& counts, const parallel::Schedule* schedule) {
  const int64_t n = m.n_layers;
  std::vector<int64_t> per(size_t(stages), 0);
  if (!counts.empty()) {
    if (int64_t(counts.size()) != stages)
      throw std::invalid_argument("parallel.stage_layers: needs " + std::to_string(stages) + " entries, got " +
                                  std::to_string(counts.size()));
    per = counts;
  } else {
    // best[s][j]: the least possible cost of the most expensive of stages 0..s-1 holding blocks [0, j).
    const std::vector<double> c = layer_flops(m, seq_len);
    std::vector<double> prefix(size_t(n) + 1, 0);
    for (int64_t i = 0; i < n; ++i) prefix[size_t(i) + 1] = prefix[size_t(i)] + c[size_t(i) + 1];
    auto cost = [&](int s, int64_t a, int64_t b) {  // stage s holding blocks [a, b)
      return prefix[size_t(b)] - prefix[size_t(a)] + (s == 0 ? c.front() : 0) + (s == stages - 1 ? c.back() : 0);
    };
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<std::vector<double>> best(size_t(stages) + 1, std::vector<double>(size_t(n) + 1, inf));
    std::vector<std::vector<int64_t>> cut(size_t(stages) + 1, std::vector<int64_t>(size_t(n) + 1, 0));
    best[0][0] = 0;
    for (int s = 1; s <= stages; ++s)
      for (int64_t j = 0; j <= n; ++j)
        for (int64_t a = 0; a <= j; ++a) {
          const double v = std::max(best[size_t(s) - 1][size_t(a)], cost(s - 1, a, j));
          // Ties go to the later cut, so earlier stages (which hold activations longest) stay light.
          if (v <= best[size_t(s)][size_t(j)]) {
            best[size_t(s)][size_t(j)] = v;
            cut[size_t(s)][size_t(j)] = a;
          }
        }
    for (int64_t s = stages, j = n; s > 0; --s) {
      const int64_t a = cut[size_t(s)][size_t(j)];
      per[size_t(s) - 1] = j - a;
      j = a;
    }
    if (schedule && schedule->chunks > 1) per = balance_ranks(SplitCost{c, *schedule}, n, per);
  }
  std::vector<StageSpan> spans;
  int64_t at = 0;
  for (int s = 0; s < stages; ++s) {
    spans.push_back({at, at + per[size_t(s)], s == 0, s == stages - 1});
    at += per[size_t(s)];
  }
  if (at != n)
    throw std::invalid_argument("parallel.stage_layers: sums to " + std::to_string(at) + ", model.n_layers is " +
                                std::to_string(n));
  return spans;
}

std::string describe(const std::vector<StageSpan>& spans) {
  std::string out;
  for (const auto& s : spans) {
    out += out.empty() ? "[" : " [";
    if (s.embed) out += "embed+";
    out += s.last > s.first ? std::to_string(s.first) + "-" + std::to_string(s.last - 1) : "none";
    if (s.head) out += "+head";
    out += "]";
  }
  return out;
}

bool stage_uses(const StageSpan& span, const std::string& name, const ModelConfig& m) {
  if (name == "tok_embed") return span.embed || (span.head && (m.tie_embeddings || m.mtp_depth > 0));
  if (name.rfind("blocks.", 0) == 0) {
    const int64_t i = std::stoll(name.substr(7));
    return i >= span.first && i < span.last;
  }
  return span.head;  // final_norm, head, mtp.*
}

namespace {

parallel::StageOutput segmented_stage_forward(model::TransformerImpl& net, const StageSpan& span,
                                              const at::Tensor& input, const at::Tensor& tokens,
                                              const at::Tensor& targets, const model::LossWeights& w, double scale,
                                              model::LossBreakdown& losses, const std::function<void()>& in_flight) {
  parallel::StageOutput o;
  // Each block reads a detached copy of the previous block's output, so its graph ends at that leaf.
  auto next_input = [&] {
    if (o.segments.empty()) return input;
    return o.segments.back().outputs.at(0).detach().requires_grad_(true);
  };
  if (span.embed) o.segments.push_back({{}, {net.embed(tokens)}, {}, {}});
  for (int64_t i = span.first; i < span.last; ++i) {
    const size_t before = losses.moe.size();
    std::vector<parallel::Segment> block = net.block_segments(i, next_input(), &losses.moe, in_flight);
    // The balance loss's graph (the router) lies in the block's first segment.
    if (w.balance_alpha > 0 && losses.moe.size() > before)
      block.front().aux = w.balance_alpha * losses.moe.back().balance_loss / scale;
    for (auto& seg : block) o.segments.push_back(std::move(seg));
  }
  if (span.head) {
    // The head's segment: main + lambda * MTP + alpha * the balance of the MTP modules' MoE layers.
    model::LossBreakdown head;
    const at::Tensor x = next_input();
    net.head_losses(x, tokens, targets, w, head);
    model::TransformerImpl::add_balance(head, w);
    o.segments.push_back({{x}, {head.total / scale}, {}, {}});
    losses.main = head.main;
    losses.mtp = head.mtp;
    losses.moe.insert(losses.moe.end(), head.moe.begin(), head.moe.end());
  }
  model::TransformerImpl::add_balance(losses, w);  // the reported balance (losses.total is not backpropagated)
  if (o.segments.empty()) return {input, {}, {}};   // a stage without blocks passes its input on
  o.output = o.segments.back().outputs.at(0);
  return o;
}

}  // namespace

parallel::StageOutput stage_forward(model::TransformerImpl& net, const StageSpan& span, const at::Tensor& input,
                                    const at::Tensor& tokens, const at::Tensor& targets,
                                    const model::LossWeights& w, double scale, model::LossBreakdown& losses,
                                    const parallel::ForwardMode& mode) {
  if (mode.segmented) return segmented_stage_forward(net, span, input, tokens, targets, w, scale, losses, mode.in_flight);
  at::Tensor x = span.embed ? net.embed(tokens) : input;
  x = net.run_blocks(x, span.first, span.last, &losses.moe, mode.in_flight);
  if (span.head) net.head_losses(x, tokens, targets, w, losses);
  model::TransformerImpl::add_balance(losses, w);
  if (span.head) return {losses.total / scale, {}, {}};
  return {x, losses.total.defined() ? losses.total / scale : at::Tensor(), {}};
}

}  // namespace shoestring
