#pragma once
// The run configuration: plain structs with defaults, one per YAML section. Filled from YAML files
// and --set overrides by config_loader, validated once, then treated as immutable.
// Every key is described in trainer/config_schema.cpp and documented in docs/configuration.md
// (tests/trainer/test_config_docs.cpp keeps the two in step).
#include <cstdint>
#include <string>
#include <vector>

namespace shoestring {

struct ModelConfig {
  int64_t vocab_size = 256;
  int64_t d_model = 128;
  int64_t n_layers = 2;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t intermediate_size = 384;
  int64_t max_seq_len = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  bool tie_embeddings = false;
  double init_std = 0.02;
  // Attention: gqa (grouped-query) or mla (multi-head latent attention, DeepSeek-V2 §2.1).
  std::string attention = "gqa";
  int64_t q_lora_rank = 0;  // mla: 0 = queries are not compressed
  int64_t kv_lora_rank = 32;
  int64_t qk_nope_head_dim = 16;
  int64_t qk_rope_head_dim = 8;
  int64_t v_head_dim = 16;
  // Mixture of experts (DeepSeekMoE): 0 routed experts = a dense model.
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 1;
  int64_t n_activated_experts = 2;
  int64_t moe_intermediate_size = 64;
  int64_t n_dense_layers = 1;
  int64_t n_expert_groups = 1;
  int64_t n_limited_groups = 1;
  double route_scale = 1.0;
  double capacity_factor = 0.0;  // 0 = dropless
  int64_t mtp_depth = 0;         // multi-token prediction modules (DeepSeek-V3 §2.2)
};

struct TrainConfig {
  int64_t steps = 200;
  int64_t micro_batch_size = 8;
  int64_t grad_accum = 1;     // used when global_batch is 0
  int64_t global_batch = 0;   // sequences per optimizer step over all dp ranks; 0 = micro x accum x dp
  int64_t seq_len = 64;
  int64_t seed = 1234;
  std::string precision = "fp32";  // fp32 | bf16 | fp8 | fp64
  std::string device = "auto";     // auto | cpu | cuda
  int64_t threads = 0;             // 0: cores / ranks on this node
  // Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2) and the MoE/MTP loss weights.
  double router_bias_gamma = 0.001;
  int64_t router_bias_stop_step = 0;  // 0: never; else gamma = 0 from this step on
  double balance_alpha = 0.0;         // sequence-wise balance loss weight (DeepSeek-V3 uses 1e-4)
  double mtp_lambda = 0.3;
  double mtp_lambda_late = 0.1;
  int64_t mtp_lambda_switch_step = 0;  // 0: never switch to mtp_lambda_late
  // A step whose loss or global gradient norm is not finite (docs/checkpoints.md, Faults).
  std::string nonfinite = "skip";  // skip | stop | rollback
  int64_t nonfinite_max = 5;       // consecutive non-finite steps before the run stops (skip) or rolls back
  int64_t rollback_max = 3;        // rollback: rollbacks in one run before it stops
};

struct OptimConfig {
  double lr = 3e-3;
  double min_lr = 3e-4;
  std::string schedule = "cosine";  // cosine | wsd | constant
  int64_t warmup_steps = 20;
  double decay_fraction = 0.2;  // wsd: share of the steps spent decaying
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // 0 disables clipping
  std::vector<std::string> no_decay = {"norm", "bias", "embedding"};
};

struct DataConfig {
  std::string source = "synthetic";  // synthetic | hdf5 | llmc
  int64_t synthetic_branching = 4;   // successors per token in the synthetic Markov chain
  std::vector<std::string> path;     // hdf5/llmc: files or shard patterns, read as one stream
  std::string tokenizer = "byte";    // byte | path of a SentencePiece model (checked against the dataset)
  std::vector<std::string> val_path; // validation files; empty: the last val_fraction of the stream
  double val_fraction = 0.0;
  int64_t eval_interval = 0;         // steps between validation losses; 0 = never
  int64_t eval_batches = 8;          // global batches per validation loss (a fixed set)
  int64_t prefetch = 4;              // batches read ahead on a background thread; 0 = none
};

// The device mesh and data parallelism (docs/parallelism.md).
struct ParallelConfig {
  int64_t dp = 0;  // data-parallel ranks; 0 = world size / pp
  int64_t pp = 1;  // pipeline ranks
  std::string schedule = "1f1b";        // gpipe | 1f1b | interleaved | zb1p | dualpipe | dualpipev
  int64_t microbatches = 0;             // per pipeline per step; 0 = the accumulation steps
  int64_t virtual_stages = 2;           // interleaved: chunks per rank
  std::vector<int64_t> stage_layers;    // transformer blocks per stage; empty = balanced by cost
  bool overlap_fb = true;               // dualpipe(v): interleave an FB pair's halves (docs/pipeline.md)
  bool fill_waits = true;               // zero-bubble I: earlier W closures fill exchange waits (docs/pipeline.md)
  int64_t ep = 1;  // expert-parallel ranks (divides dp)
  int64_t ep_max_nodes = 0;  // node-limited routing: nodes a token's experts may span; 0 = off
  std::string ep_dispatch_dtype = "auto";  // auto (the token dtype) | fp8 (E4M3 + 1x128 scales)
  bool zero1 = false;
  double bucket_mb = 25;
  double timeout_s = 300;
};

struct LogConfig {
  std::string run_dir;        // empty: runs/<config name>-<UTC time>
  int64_t every = 10;         // steps between plain log lines (non-terminal output)
  std::string progress = "auto";  // auto | on | off
  bool tensorboard = true;        // also write <run_dir>/tb/events.out.tfevents.* (docs/tensorboard.md)
};

// Checkpoints (docs/checkpoints.md).
struct CheckpointConfig {
  std::string dir;        // empty: <run dir>/checkpoints
  int64_t interval = 0;   // steps between checkpoints; 0 = never (a preemption signal still saves)
  int64_t keep = 3;       // complete checkpoints kept (the newest); 0 = all
  int64_t keep_every = 0;  // also keep every checkpoint whose step is a multiple of this, forever; 0 = none
  bool async = false;     // write in a background thread; the step blocks only for the host copy
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  ParallelConfig parallel;
  LogConfig log;
  CheckpointConfig checkpoint;
  std::string name = "run";  // stem of the last --config file; used for the default run dir
};

}  // namespace shoestring
