#include "trainer/planner/gpu_table.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>

namespace shoestring::planner {

// Sources (vendor spec sheets, dense figures, i.e. half the "with sparsity" numbers):
// - H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet: BF16 989.4 TFLOPS, FP8 1978.9 TFLOPS,
//   80 GB HBM3 (79.6 GiB as nvidia-smi reports), NVLink 4 900 GB/s bidirectional = 450 one way.
// - H200 SXM: NVIDIA H200 datasheet: same tensor cores as H100 SXM, 141 GB HBM3e (140.4 GiB
//   reported), NVLink 900 GB/s bidirectional.
// - H800 SXM: the export H100: same compute, NVLink cut to 400 GB/s bidirectional. DeepSeek-V3
//   (arXiv 2412.19437, §3.2.2) states ~160 GB/s achievable NVLink and 50 GB/s IB per GPU on it.
// - A100 SXM4 80GB: NVIDIA A100 datasheet: BF16 312 TFLOPS, no FP8, 80 GB HBM2e, NVLink 3
//   600 GB/s bidirectional.
// Inter-node: one 400 Gb/s NDR InfiniBand NIC per GPU (50 GB/s) on Hopper nodes (DGX H100
// reference design), 200 Gb/s HDR (25 GB/s) on A100 nodes (DGX A100).
// Prices: rough 2026 on-demand cloud rates per GPU-hour; H800 at the $2 DeepSeek-V3 §1 assumes.
// Users should pass their own with --price.
const std::vector<GpuSpec>& gpu_table() {
  static const std::vector<GpuSpec> table = {
      {"h100", "NVIDIA H100 SXM5 80GB", 989.4, 1978.9, 79.6, 450, 50, 2.50},
      {"h200", "NVIDIA H200 SXM 141GB", 989.4, 1978.9, 140.4, 450, 50, 3.50},
      {"h800", "NVIDIA H800 SXM 80GB", 989.4, 1978.9, 79.6, 200, 50, 2.00},
      {"a100", "NVIDIA A100 SXM4 80GB", 312.0, 0.0, 80.0, 300, 25, 1.50},
  };
  return table;
}

std::string gpu_names() {
  std::string out;
  for (const auto& g : gpu_table()) out += g.name + ", ";
  return out + "cpu";
}

GpuSpec find_gpu(const std::string& name) {
  std::string key = name;
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (key == "a100-80gb") key = "a100";
  for (const auto& g : gpu_table())
    if (g.name == key) return g;
  if (key == "cpu") {
    // Nominal figures: about 0.05 TFLOPS per core of fp32 GEMM and memory bandwidth standing in
    // for both links (MPI over shared memory). Memory is real: what the machine has.
    const double pages = double(sysconf(_SC_PHYS_PAGES)), page = double(sysconf(_SC_PAGESIZE));
    const double cores = std::max(1.0, double(sysconf(_SC_NPROCESSORS_ONLN)));
    return {"cpu", "this machine's CPU (nominal throughput)", 0.05 * cores, 0.0, pages * page / double(1 << 30),
            5, 5, 0.0};
  }
  throw PlanError("unknown --gpu '" + name + "' (known: " + gpu_names() + ")");
}

}  // namespace shoestring::planner
