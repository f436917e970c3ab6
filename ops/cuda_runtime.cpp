#include "ops/cuda_runtime.h"

#include <ATen/Context.h>
#include <dlfcn.h>
#ifdef SHOESTRING_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <filesystem>
#include <stdexcept>

namespace shoestring::ops {

namespace {

// Directory of libtorch_cpu.so: libtorch_cuda.so is its sibling in every LibTorch layout.
std::string torch_lib_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&at::globalContext), &info) == 0 || info.dli_fname == nullptr)
    return {};
  return std::filesystem::path(info.dli_fname).parent_path().string();
}

CudaStatus probe() {
  CudaStatus s;
  if (!built_with_cuda()) {
    s.reason = "this binary was built without CUDA (SHOESTRING_CUDA=OFF or no nvcc)";
    return s;
  }
  const std::string dir = torch_lib_dir();
  const std::string lib = (std::filesystem::path(dir) / "libtorch_cuda.so").string();
  if (!std::filesystem::exists(lib)) {
    s.reason = "LibTorch at " + dir + " has no libtorch_cuda.so (a CPU-only LibTorch)";
    return s;
  }
  if (dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    const char* err = dlerror();
    s.reason = std::string("cannot load ") + lib + ": " + (err ? err : "unknown error");
    return s;
  }
  if (!at::hasCUDA()) {
    s.reason = "no CUDA device is visible (driver missing or CUDA_VISIBLE_DEVICES empty)";
    return s;
  }
  s.available = true;
  s.reason = "cuda";
  return s;
}

}  // namespace

const CudaStatus& cuda_status() {
  static const CudaStatus status = probe();
  return status;
}

int cuda_device_count() { return cuda_status().available ? int(at::getNumGPUs()) : 0; }

std::string cuda_device_bus_id(int index) {
#ifdef SHOESTRING_WITH_CUDA
  char id[32] = {};
  if (cuda_status().available && cudaDeviceGetPCIBusId(id, int(sizeof id), index) == cudaSuccess) return id;
#endif
  (void)index;
  return {};
}

bool built_with_cuda() {
#ifdef SHOESTRING_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void built_without_cuda(const char* what) {
  throw std::runtime_error(std::string(what) + ": this binary was built without CUDA (SHOESTRING_CUDA=OFF)");
}

}  // namespace shoestring::ops
