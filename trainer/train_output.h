#pragma once
// What a training run writes about itself: its run directory, the banner at the top of its log,
// the continuation of metrics.jsonl on resume, and its peak memory.
#include <cstdint>
#include <filesystem>
#include <string>

#include <ATen/core/Tensor.h>

#include "parallel/mesh.h"
#include "parallel/world.h"
#include "trainer/config.h"
#include "trainer/pipeline_plan.h"
#include "trainer/train.h"

namespace shoestring {

// Rank 0 names and creates the run directory (or, for ckpt convert, the output directory);
// every rank of `world_group` learns it, or that it failed, from rank 0.
std::string open_run_dir(const Config& cfg, const TrainOptions& options, bool converting,
                         parallel::ProcessGroup& world_group, bool rank0);

// Writes run_dir/config.yaml (atomically). A new run's is written by open_run_dir; a resumed run's
// only after its checkpoint loaded, so a refused resume leaves the one that resumes it intact.
void write_run_config(const std::string& run_dir, const Config& cfg);

// A resumed run's metrics.jsonl continues from the checkpoint: lines after the last one of its
// step (written before the interruption, and about to be written again) are dropped. The last
// one, since after a rollback step numbers repeat and the checkpoint is from the latest pass.
void truncate_metrics(const std::filesystem::path& path, int64_t last_step);

std::string banner(const Config& cfg, int64_t accum, int dp, int64_t params, int64_t activated, const at::Device& dev,
                   int threads, const parallel::World& world, const std::string& data);

std::string parallel_line(const Config& cfg, const parallel::Mesh& mesh, int64_t accum, int64_t state_bytes,
                          const std::string& backend, const PipelinePlan& plan);

// On CUDA: the caching allocator's peak of bytes handed to tensors on `device`; 0 on CPU.
int64_t peak_device_bytes(const at::Device& device);

}  // namespace shoestring
