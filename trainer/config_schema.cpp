#include "trainer/config_schema.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

namespace shoestring {

namespace {

template <class T>
constexpr FieldType type_of() {
  if constexpr (std::is_same_v<T, int64_t>) return FieldType::Int;
  if constexpr (std::is_same_v<T, double>) return FieldType::Float;
  if constexpr (std::is_same_v<T, bool>) return FieldType::Bool;
  if constexpr (std::is_same_v<T, std::string>) return FieldType::String;
  if constexpr (std::is_same_v<T, std::vector<std::string>>) return FieldType::StringList;
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) return FieldType::IntList;
}

// Binds a schema entry to Config::*section.*member, so the table cannot name a field that the
// structs lack.
template <class S, class T>
FieldSpec field(std::string path, S Config::*section, T S::*member, std::string doc,
                FieldRule rule = FieldRule::Any, std::vector<std::string> choices = {}) {
  FieldSpec f;
  f.path = std::move(path);
  f.type = type_of<T>();
  if (f.type == FieldType::String && !choices.empty()) f.type = FieldType::Choice;
  f.rule = rule;
  f.choices = std::move(choices);
  f.doc = std::move(doc);
  f.set = [section, member](Config& c, const ConfigValue& v) { (c.*section).*member = std::get<T>(v); };
  f.get = [section, member](const Config& c) { return ConfigValue((c.*section).*member); };
  return f;
}

std::vector<FieldSpec> build() {
  using C = Config;
  using R = FieldRule;
  std::vector<FieldSpec> s;
  // model
  s.push_back(field("model.vocab_size", &C::model, &ModelConfig::vocab_size, "Vocabulary size (embedding rows and output logits).", R::Positive));
  s.push_back(field("model.d_model", &C::model, &ModelConfig::d_model, "Hidden size of the residual stream.", R::Positive));
  s.push_back(field("model.n_layers", &C::model, &ModelConfig::n_layers, "Number of transformer blocks.", R::Positive));
  s.push_back(field("model.n_heads", &C::model, &ModelConfig::n_heads, "Attention query heads; must divide d_model.", R::Positive));
  s.push_back(field("model.n_kv_heads", &C::model, &ModelConfig::n_kv_heads, "Key/value heads (grouped-query attention); must divide n_heads.", R::Positive));
  s.push_back(field("model.intermediate_size", &C::model, &ModelConfig::intermediate_size, "Hidden size of the SwiGLU feed-forward.", R::Positive));
  s.push_back(field("model.max_seq_len", &C::model, &ModelConfig::max_seq_len, "Longest sequence the rotary tables cover; train.seq_len must not exceed it.", R::Positive));
  s.push_back(field("model.rope_theta", &C::model, &ModelConfig::rope_theta, "Rotary embedding base.", R::Positive));
  s.push_back(field("model.norm_eps", &C::model, &ModelConfig::norm_eps, "RMSNorm epsilon.", R::Positive));
  s.push_back(field("model.tie_embeddings", &C::model, &ModelConfig::tie_embeddings, "Share the token embedding with the output head."));
  s.push_back(field("model.init_std", &C::model, &ModelConfig::init_std, "Std of the normal init of embeddings and linears (output projections are scaled by 1/sqrt(2*n_layers)).", R::Positive));
  s.push_back(field("model.attention", &C::model, &ModelConfig::attention, "Attention kind: gqa (grouped-query) or mla (multi-head latent attention).", R::Any, {"gqa", "mla"}));
  s.push_back(field("model.q_lora_rank", &C::model, &ModelConfig::q_lora_rank, "mla: rank of the query compression; 0 projects queries directly.", R::NonNegative));
  s.push_back(field("model.kv_lora_rank", &C::model, &ModelConfig::kv_lora_rank, "mla: rank of the joint key/value compression (the cached latent).", R::Positive));
  s.push_back(field("model.qk_nope_head_dim", &C::model, &ModelConfig::qk_nope_head_dim, "mla: per-head query/key size without rotary embedding.", R::Positive));
  s.push_back(field("model.qk_rope_head_dim", &C::model, &ModelConfig::qk_rope_head_dim, "mla: size of the decoupled rotary query/key (the rotary key is shared by all heads); even.", R::Positive));
  s.push_back(field("model.v_head_dim", &C::model, &ModelConfig::v_head_dim, "mla: per-head value size.", R::Positive));
  s.push_back(field("model.n_routed_experts", &C::model, &ModelConfig::n_routed_experts, "Routed experts per MoE layer; 0 makes every layer a dense SwiGLU.", R::NonNegative));
  s.push_back(field("model.n_shared_experts", &C::model, &ModelConfig::n_shared_experts, "Shared experts per MoE layer, applied to every token.", R::NonNegative));
  s.push_back(field("model.n_activated_experts", &C::model, &ModelConfig::n_activated_experts, "Routed experts chosen per token (top-k).", R::Positive));
  s.push_back(field("model.moe_intermediate_size", &C::model, &ModelConfig::moe_intermediate_size, "Hidden size of each expert's SwiGLU.", R::Positive));
  s.push_back(field("model.n_dense_layers", &C::model, &ModelConfig::n_dense_layers, "With experts: the first n_dense_layers layers stay dense SwiGLU.", R::NonNegative));
  s.push_back(field("model.n_expert_groups", &C::model, &ModelConfig::n_expert_groups, "Group-limited routing: experts are split into this many groups.", R::Positive));
  s.push_back(field("model.n_limited_groups", &C::model, &ModelConfig::n_limited_groups, "Group-limited routing: each token picks experts from its best this-many groups.", R::Positive));
  s.push_back(field("model.route_scale", &C::model, &ModelConfig::route_scale, "Routed scaling factor applied to the normalised top-k gates.", R::Positive));
  s.push_back(field("model.capacity_factor", &C::model, &ModelConfig::capacity_factor, "0 = dropless; else each expert takes at most ceil(factor * tokens * k / experts) tokens and the rest are dropped (counted in metrics).", R::NonNegative));
  s.push_back(field("model.mtp_depth", &C::model, &ModelConfig::mtp_depth, "Multi-token prediction modules; 0 disables.", R::NonNegative));
  // train
  s.push_back(field("train.steps", &C::train, &TrainConfig::steps, "Optimizer steps to run.", R::Positive));
  s.push_back(field("train.micro_batch_size", &C::train, &TrainConfig::micro_batch_size, "Sequences per micro-batch.", R::Positive));
  s.push_back(field("train.grad_accum", &C::train, &TrainConfig::grad_accum, "Micro-batches accumulated per optimizer step on each rank; used only when train.global_batch is 0.", R::Positive));
  s.push_back(field("train.global_batch", &C::train, &TrainConfig::global_batch, "Sequences per optimizer step summed over the data-parallel ranks; a multiple of micro_batch_size x parallel.dp, which sets the accumulation steps. 0 = micro_batch_size x grad_accum x dp.", R::NonNegative));
  s.push_back(field("train.seq_len", &C::train, &TrainConfig::seq_len, "Tokens per training sequence.", R::Positive));
  s.push_back(field("train.seed", &C::train, &TrainConfig::seed, "Seed of the initialisation and the data order.", R::NonNegative));
  s.push_back(field("train.precision", &C::train, &TrainConfig::precision, "Compute dtype of matmuls; master weights, norms, softmax and loss stay fp32. fp8: bf16 activations with the eligible linears in FP8 (docs/fp8.md). fp64: everything in float64 (CPU reference runs, e.g. checking parallel layouts against one process).", R::Any, {"fp32", "bf16", "fp8", "fp64"}));
  s.push_back(field("train.device", &C::train, &TrainConfig::device, "Where to train: auto picks cuda when a GPU is usable, else cpu.", R::Any, {"auto", "cpu", "cuda"}));
  s.push_back(field("train.threads", &C::train, &TrainConfig::threads, "Intra-op threads per rank; 0 = cores on this node / ranks on this node.", R::NonNegative));
  s.push_back(field("train.router_bias_gamma", &C::train, &TrainConfig::router_bias_gamma, "Bias update speed of auxiliary-loss-free balancing: after each step an expert's bias moves by gamma towards balance.", R::NonNegative));
  s.push_back(field("train.router_bias_stop_step", &C::train, &TrainConfig::router_bias_stop_step, "From this step on gamma is 0 (biases frozen); 0 = never.", R::NonNegative));
  s.push_back(field("train.balance_alpha", &C::train, &TrainConfig::balance_alpha, "Weight of the complementary sequence-wise balance loss; 0 disables.", R::NonNegative));
  s.push_back(field("train.mtp_lambda", &C::train, &TrainConfig::mtp_lambda, "Weight of the multi-token-prediction loss (averaged over depths).", R::NonNegative));
  s.push_back(field("train.mtp_lambda_late", &C::train, &TrainConfig::mtp_lambda_late, "MTP loss weight from train.mtp_lambda_switch_step on.", R::NonNegative));
  s.push_back(field("train.mtp_lambda_switch_step", &C::train, &TrainConfig::mtp_lambda_switch_step, "Step at which the MTP weight becomes mtp_lambda_late; 0 = never.", R::NonNegative));
  s.push_back(field("train.nonfinite", &C::train, &TrainConfig::nonfinite, "A step whose loss or global gradient norm is not finite: skip (no update, counted in metrics.jsonl), stop (exit 1 after writing that step's metrics line), or rollback (skipped like skip; after train.nonfinite_max in a row, the newest valid checkpoint saved before the last update is restored (weights, optimizer state, router biases), later checkpoints are deleted, and training goes on from its step with the data after the bad batches; docs/checkpoints.md).", R::Any, {"skip", "stop", "rollback"}));
  s.push_back(field("train.nonfinite_max", &C::train, &TrainConfig::nonfinite_max, "Consecutive non-finite steps after which skip stops the run (exit 1) and rollback rolls back.", R::Positive));
  s.push_back(field("train.rollback_max", &C::train, &TrainConfig::rollback_max, "rollback: the run stops (exit 1) instead of rolling back a further time after this many rollbacks.", R::Positive));
  // optim
  s.push_back(field("optim.lr", &C::optim, &OptimConfig::lr, "Peak learning rate of AdamW.", R::Positive));
  s.push_back(field("optim.min_lr", &C::optim, &OptimConfig::min_lr, "Learning rate at the end of the decay.", R::NonNegative));
  s.push_back(field("optim.schedule", &C::optim, &OptimConfig::schedule, "Learning-rate schedule after warmup: cosine decay, warmup-stable-decay, or constant.", R::Any, {"cosine", "wsd", "constant"}));
  s.push_back(field("optim.warmup_steps", &C::optim, &OptimConfig::warmup_steps, "Linear warmup steps from 0 to lr.", R::NonNegative));
  s.push_back(field("optim.decay_fraction", &C::optim, &OptimConfig::decay_fraction, "wsd: fraction of train.steps spent in the final linear decay to min_lr.", R::Unit));
  s.push_back(field("optim.weight_decay", &C::optim, &OptimConfig::weight_decay, "Decoupled weight decay (AdamW).", R::NonNegative));
  s.push_back(field("optim.beta1", &C::optim, &OptimConfig::beta1, "AdamW first-moment decay.", R::Below1));
  s.push_back(field("optim.beta2", &C::optim, &OptimConfig::beta2, "AdamW second-moment decay.", R::Below1));
  s.push_back(field("optim.eps", &C::optim, &OptimConfig::eps, "AdamW epsilon.", R::Positive));
  s.push_back(field("optim.grad_clip", &C::optim, &OptimConfig::grad_clip, "Clip the global gradient norm to this value; 0 disables.", R::NonNegative));
  s.push_back(field("optim.no_decay", &C::optim, &OptimConfig::no_decay, "Parameter kinds excluded from weight decay.", R::Any, {"norm", "bias", "embedding", "head"}));
  // data
  s.push_back(field("data.source", &C::data, &DataConfig::source, "Training tokens: synthetic = a seeded random Markov chain (known entropy floor); hdf5 = token datasets made by `shoestring data prepare`; llmc = llm.c .bin shards.", R::Any, {"synthetic", "hdf5", "llmc"}));
  s.push_back(field("data.synthetic_branching", &C::data, &DataConfig::synthetic_branching, "Successors per token in the synthetic chain; the best reachable loss is ln(branching).", R::Positive));
  s.push_back(field("data.path", &C::data, &DataConfig::path, "hdf5/llmc: dataset files or shard patterns (* ? [ ]), one or a list, read as one stream in the given (pattern: sorted) order."));
  s.push_back(field("data.tokenizer", &C::data, &DataConfig::tokenizer, "byte, or the path of the SentencePiece .model the dataset was made with; an hdf5 dataset made with another tokenizer is refused."));
  s.push_back(field("data.val_path", &C::data, &DataConfig::val_path, "Validation dataset files or patterns; empty = hold out the last data.val_fraction of data.path."));
  s.push_back(field("data.val_fraction", &C::data, &DataConfig::val_fraction, "Fraction of the training tokens held out (from the end) for validation when data.val_path is empty; split at the nearest document boundary.", R::Below1));
  s.push_back(field("data.eval_interval", &C::data, &DataConfig::eval_interval, "Steps between validation losses (val_loss in metrics.jsonl); 0 = never.", R::NonNegative));
  s.push_back(field("data.eval_batches", &C::data, &DataConfig::eval_batches, "Global batches (micro_batch_size x accumulation steps x dp sequences) of the fixed validation set averaged into each val_loss.", R::Positive));
  s.push_back(field("data.prefetch", &C::data, &DataConfig::prefetch, "Batches read ahead on a background thread; 0 reads in the training thread.", R::NonNegative));
  // parallel
  s.push_back(field("parallel.dp", &C::parallel, &ParallelConfig::dp, "Data-parallel ranks; 0 = all ranks / parallel.pp. dp x pp must equal the number of ranks started.", R::NonNegative));
  s.push_back(field("parallel.pp", &C::parallel, &ParallelConfig::pp, "Pipeline-parallel ranks: the model is cut into stages run by this many ranks (docs/pipeline.md).", R::Positive));
  s.push_back(field("parallel.schedule", &C::parallel, &ParallelConfig::schedule, "Pipeline schedule (docs/pipeline.md): gpipe, 1f1b, interleaved (parallel.virtual_stages chunks per rank), zb1p (zero bubble), dualpipe (even pp; every stage held twice) or dualpipev (two chunks per rank in a V). Ignored with pp 1.", R::Any, {"gpipe", "1f1b", "interleaved", "zb1p", "dualpipe", "dualpipev"}));
  s.push_back(field("parallel.microbatches", &C::parallel, &ParallelConfig::microbatches, "Micro-batches each pipeline runs per optimizer step (the gradient-accumulation steps); 0 = from train.global_batch or train.grad_accum. Each schedule has a minimum (dualpipe: 2 x pp), reported when it is not met.", R::NonNegative));
  s.push_back(field("parallel.virtual_stages", &C::parallel, &ParallelConfig::virtual_stages, "interleaved schedule: model chunks per pipeline rank (stages = virtual_stages x pp).", R::Positive));
  s.push_back(field("parallel.stage_layers", &C::parallel, &ParallelConfig::stage_layers, "Transformer blocks of each pipeline stage, first to last (the embedding goes with the first stage, the final norm, head and MTP modules with the last); one entry per stage, summing to model.n_layers. Empty = balanced by estimated cost.", R::NonNegative));
  s.push_back(field("parallel.overlap_fb", &C::parallel, &ParallelConfig::overlap_fb, "dualpipe and dualpipev: run each overlapped forward+backward pair interleaved, one backward segment (a block, or a third of an expert-parallel MoE block, cut at its exchanges) each time the forward's expert all-to-all is in flight, so each half's exchanges travel while the other computes (DeepSeek-V3 §3.2.1). false: the forward, then the backward. Same results either way."));
  s.push_back(field("parallel.fill_waits", &C::parallel, &ParallelConfig::fill_waits, "zb1p, dualpipe and dualpipev: during a backward-input (I), each wait for an expert exchange's gradients first runs the next deferred weight-gradient closure of the oldest W still pending, so the GEMMs compute while the exchange travels (on a GPU they are queued before the stream waits). Closures keep their W's order, so results are the same bit for bit. false: deferred weight gradients run only at their W."));
  s.push_back(field("parallel.ep", &C::parallel, &ParallelConfig::ep, "Expert-parallel ranks: the routed experts of each MoE layer are sharded over this many ranks of a data-parallel group. Must divide parallel.dp and model.n_routed_experts.", R::Positive));
  s.push_back(field("parallel.ep_max_nodes", &C::parallel, &ParallelConfig::ep_max_nodes, "Node-limited routing (DeepSeek-V3 §2.1.2): with expert parallelism over several nodes, each token uses experts on at most this many nodes, those with the highest sum of its top ceil(k / ep_max_nodes) affinities. 0 = off; no effect while the ep group fits in that many nodes. Not with group-limited routing (model.n_limited_groups < model.n_expert_groups).", R::NonNegative));
  s.push_back(field("parallel.ep_dispatch_dtype", &C::parallel, &ParallelConfig::ep_dispatch_dtype, "What the expert-parallel dispatch sends for each token row: auto = the rows in the compute dtype; fp8 = E4M3 codes with one fp32 scale per 1x128 tile (DeepSeek-V3 §3.3.3), d + 4 ceil(d/128) bytes per row, dequantized by the receiver before the experts. Only the forward token dispatch: gates, the combine and every backward exchange stay in the compute dtype (gradients pass straight through the quantization). fp8 needs parallel.ep > 1.", R::Any, {"auto", "fp8"}));
  s.push_back(field("parallel.zero1", &C::parallel, &ParallelConfig::zero1, "ZeRO-1: shard the optimizer state over the data-parallel ranks (gradients are reduce-scattered, updated parameters all-gathered)."));
  s.push_back(field("parallel.bucket_mb", &C::parallel, &ParallelConfig::bucket_mb, "Gradient bucket size in MiB: a bucket's reduction starts as soon as backward has produced all its gradients.", R::Positive));
  s.push_back(field("parallel.timeout_s", &C::parallel, &ParallelConfig::timeout_s, "Seconds a collective may take before the job is aborted with a message naming the collective, the group and the ranks that did not arrive.", R::Positive));
  // log
  s.push_back(field("log.run_dir", &C::log, &LogConfig::run_dir, "Run directory for config.yaml, metrics.jsonl and train.log; empty = runs/<config name>-<UTC time>."));
  s.push_back(field("log.every", &C::log, &LogConfig::every, "Steps between plain log lines when output is not a terminal.", R::Positive));
  s.push_back(field("log.progress", &C::log, &LogConfig::progress, "Progress bar: auto (only on a terminal, and not under mpirun/srun), on, off.", R::Any, {"auto", "on", "off"}));
  s.push_back(field("log.tensorboard", &C::log, &LogConfig::tensorboard, "Also write TensorBoard event files to <run_dir>/tb/ (docs/tensorboard.md).", R::Any));
  // checkpoint
  s.push_back(field("checkpoint.dir", &C::checkpoint, &CheckpointConfig::dir, "Directory of the step_NNNNNNN/ checkpoints and the `latest` pointer; empty = <run dir>/checkpoints. Created at start when the run will save (`checkpoint.interval` > 0, or this key set): one that cannot be created stops the run before its first step."));
  s.push_back(field("checkpoint.interval", &C::checkpoint, &CheckpointConfig::interval, "Save a checkpoint every this many steps (and after the last step); 0 = never, except when a SIGTERM/SIGUSR1 asks the run to stop.", R::NonNegative));
  s.push_back(field("checkpoint.keep", &C::checkpoint, &CheckpointConfig::keep, "Complete checkpoints kept: older ones are deleted once a newer one is complete; 0 keeps all.", R::NonNegative));
  s.push_back(field("checkpoint.keep_every", &C::checkpoint, &CheckpointConfig::keep_every, "Also keep, forever, every checkpoint whose step is a multiple of this (they do not count towards checkpoint.keep); 0 = none.", R::NonNegative));
  s.push_back(field("checkpoint.async", &C::checkpoint, &CheckpointConfig::async, "Write checkpoints in a background thread: the step blocks only for the copy of this rank's state to host memory, and the save is committed (manifest, `latest`) at the first step after every rank finished writing.", R::Any));
  return s;
}

}  // namespace

const std::vector<FieldSpec>& config_schema() {
  static const std::vector<FieldSpec> schema = build();
  return schema;
}

const FieldSpec* find_field(const std::string& path) {
  for (const auto& f : config_schema())
    if (f.path == path) return &f;
  return nullptr;
}

std::string type_name(FieldType t) {
  switch (t) {
    case FieldType::Int: return "int";
    case FieldType::Float: return "float";
    case FieldType::Bool: return "bool";
    case FieldType::String: return "string";
    case FieldType::Choice: return "choice";
    case FieldType::StringList: return "list";
    case FieldType::IntList: return "int list";
  }
  return "?";
}

std::string format_value(const ConfigValue& v) {
  struct V {
    std::string operator()(int64_t x) const { return std::to_string(x); }
    std::string operator()(double x) const {
      char buf[64];
      if (x == std::floor(x) && std::fabs(x) < 1e15) {  // 10000.0 rather than 1e+04
        std::snprintf(buf, sizeof buf, "%.1f", x);
        return buf;
      }
      std::snprintf(buf, sizeof buf, "%.17g", x);
      // Shortest text that reads back to the same double, so printed configs round-trip exactly.
      for (int p = 1; p <= 17; ++p) {
        char b[64];
        std::snprintf(b, sizeof b, "%.*g", p, x);
        if (std::strtod(b, nullptr) == x) return b;
      }
      return buf;
    }
    std::string operator()(bool x) const { return x ? "true" : "false"; }
    std::string operator()(const std::string& x) const { return x.empty() ? "\"\"" : x; }
    std::string operator()(const std::vector<std::string>& xs) const {
      std::string s = "[";
      for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + xs[i];
      return s + "]";
    }
    std::string operator()(const std::vector<int64_t>& xs) const {
      std::string s = "[";
      for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + std::to_string(xs[i]);
      return s + "]";
    }
  };
  return std::visit(V{}, v);
}

}  // namespace shoestring
