#pragma once
// The accelerators the planner knows: peak dense throughput, memory, and the two bandwidths a
// layout's communication crosses (inside a node, between nodes). Figures are vendor spec sheets'
// (trainer/planner/gpu_table.cpp says which); the planner applies its own achieved fractions.
#include <stdexcept>
#include <string>
#include <vector>

namespace shoestring::planner {

// A request the planner cannot answer as asked (unknown GPU, a layout that does not divide the
// GPUs): the CLI prints the message on one line and exits 2.
struct PlanError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct GpuSpec {
  std::string name;           // h100, h200, h800, a100, cpu
  std::string description;    // "NVIDIA H100 SXM5 80GB"
  double bf16_tflops = 0;     // dense (no 2:4 sparsity)
  double fp8_tflops = 0;      // dense; 0 = no FP8 tensor cores (fp8 runs at the BF16 rate)
  double memory_gib = 0;      // device memory as the driver reports it
  double nvlink_gbs = 0;      // intra-node, per GPU, one direction
  double network_gbs = 0;     // inter-node, per GPU, one direction
  double price_per_hour = 0;  // default $/GPU-hour; --price overrides
};

const std::vector<GpuSpec>& gpu_table();
std::string gpu_names();  // "h100, h200, h800, a100, cpu"
// The named entry (case-insensitive); "cpu" is this machine: its physical memory, and nominal
// throughput and bandwidths (its times mean little; its memory is what the CPU runs measure).
// PlanError listing the known names otherwise.
GpuSpec find_gpu(const std::string& name);

}  // namespace shoestring::planner
