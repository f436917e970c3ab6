#pragma once
// `shoestring ckpt export DIR --format safetensors`: the model weights of a checkpoint as one
// safetensors file with Hugging Face tensor names (DeepseekV3 for MLA models, Llama for GQA) plus
// a config.json, so other tools can load the model. Optimizer state and MTP modules are dropped.
// The name mapping is the table in export_safetensors.cpp, documented in docs/checkpoints.md.
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/config.h"

namespace shoestring::ckpt {

// One tensor of the export: which checkpoint tensor (or which expert of a stacked one) it is.
struct ExportTensor {
  std::string hf_name;          // e.g. model.layers.1.mlp.experts.3.gate_proj.weight
  std::string source;           // checkpoint tensor, e.g. param/blocks.1.moe.w1 (for a tensor with
                                // no elements, the one whose dtype it takes; nothing is read)
  int64_t expert = -1;          // >= 0: slice `expert` of the stacked [E, ...] source
  int64_t rope_heads = 0;       // > 0: rows are rope heads to permute interleaved -> half-split
  std::vector<int64_t> shape;   // exported shape
};

// The export of every param/ and buffer/ tensor of `names` (global names with their shapes)
// for a model of `cfg`. adam_* and mtp.* are dropped; a tensor no rule maps is an error
// (std::runtime_error naming it), so a new parameter is never silently left out.
std::vector<ExportTensor> export_plan(const ModelConfig& cfg, const std::vector<std::string>& names,
                                      const std::vector<std::vector<int64_t>>& shapes);

// config.json for `cfg` (deepseek_v3 for MLA; llama for dense GQA).
std::string hf_config_json(const ModelConfig& cfg, const std::string& torch_dtype = "float32");

struct ExportResult {
  size_t tensors = 0;
  uint64_t bytes = 0;  // of model.safetensors
};

// Verifies the checkpoint in `ckpt_dir` (CheckpointError when it is missing or invalid), then
// writes out_dir/model.safetensors and out_dir/config.json (std::runtime_error when they cannot be
// written). dtype: "" (the checkpoint's), "fp32", "bf16". Existing files of those names are
// replaced (the CLI refuses that without --force); on failure only what this call created is
// removed again.
ExportResult export_safetensors(const std::string& ckpt_dir, const std::string& out_dir, const std::string& dtype = "");

}  // namespace shoestring::ckpt
