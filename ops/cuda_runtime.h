#pragma once
// Whether this process can use a CUDA GPU through LibTorch.
//
// We link c10/torch_cpu only; libtorch_cuda.so (which registers LibTorch's CUDA kernels and
// allocator) is dlopen'ed on first use so the same binary runs on machines without the CUDA
// libraries that libtorch_cuda.so needs (cuSPARSELt, NVSHMEM, cuFile).
#include <string>

namespace shoestring::ops {

struct CudaStatus {
  bool available = false;  // a GPU can be used
  std::string reason;      // why not, when unavailable; the device name when available
};

// Loads libtorch_cuda.so from LibTorch's own lib directory (once) and checks for a device.
const CudaStatus& cuda_status();

// Visible CUDA devices (0 when cuda_status() is unavailable).
int cuda_device_count();

// The PCI bus id of visible device `index` ("0000:1b:00.0"): one physical GPU, however
// CUDA_VISIBLE_DEVICES numbers it; empty when cuda_status() is unavailable.
std::string cuda_device_bus_id(int index);

// True when our CUDA kernels were compiled into this binary.
bool built_with_cuda();

// What the CUDA entry points do in a build without CUDA: throw, saying so and naming `what`.
[[noreturn]] void built_without_cuda(const char* what);

}  // namespace shoestring::ops
