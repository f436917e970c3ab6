#include "parallel/nccl_api.h"

#include <c10/core/CPUAllocator.h>
#include <dlfcn.h>

#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace shoestring::parallel::nccl {

namespace {

// Directory of libc10.so, i.e. LibTorch's lib dir (same trick as ops/cuda_runtime.cpp, which
// keeps its copy private).
std::string torch_lib_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&c10::GetCPUAllocator), &info) == 0 || info.dli_fname == nullptr) return {};
  return std::filesystem::path(info.dli_fname).parent_path().string();
}

// In search order. The soname first: it returns the NCCL libtorch_cuda.so already loaded, or the
// system's (ld.so.conf, LD_LIBRARY_PATH). Then the pip wheel layout (torch/lib/../../nvidia/nccl)
// and a LibTorch archive that bundles its own copy.
std::vector<std::string> candidates() {
  std::vector<std::string> c{"libnccl.so.2"};
  const std::string dir = torch_lib_dir();
  if (!dir.empty()) {
    const std::filesystem::path lib(dir);
    c.push_back((lib / ".." / ".." / "nvidia" / "nccl" / "lib" / "libnccl.so.2").lexically_normal().string());
    c.push_back((lib / "libnccl.so.2").string());
  }
  return c;
}

template <typename F>
void bind(void* h, const char* name, F& fn, bool required) {
  fn = reinterpret_cast<F>(dlsym(h, name));
  if (fn == nullptr && required)
    throw std::runtime_error(std::string("NCCL library has no symbol ") + name + " (too old? need NCCL >= 2.9)");
}

Api load() {
  std::string tried;
  void* h = nullptr;
  Api a;
  for (const std::string& path : candidates()) {
    // RTLD_LOCAL: our pointers are all we need; do not let its symbols satisfy anyone else's.
    h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h != nullptr) {
      a.path = path;
      break;
    }
    const char* err = dlerror();
    tried += "\n  " + path + ": " + (err ? err : "unknown error");
  }
  if (h == nullptr) throw std::runtime_error("cannot load NCCL; tried:" + tried);
  // dlopen by soname gives no path: ask the loader where the library actually came from.
  Dl_info info{};
  if (void* sym = dlsym(h, "ncclGetVersion"); sym != nullptr && dladdr(sym, &info) != 0 && info.dli_fname)
    a.path = info.dli_fname;

  bind(h, "ncclGetVersion", a.GetVersion, true);
  bind(h, "ncclGetUniqueId", a.GetUniqueId, true);
  bind(h, "ncclCommInitRank", a.CommInitRank, true);
  bind(h, "ncclCommAbort", a.CommAbort, true);
  bind(h, "ncclCommDestroy", a.CommDestroy, true);
  bind(h, "ncclCommGetAsyncError", a.CommGetAsyncError, true);
  bind(h, "ncclGetErrorString", a.GetErrorString, true);
  bind(h, "ncclAllReduce", a.AllReduce, true);
  bind(h, "ncclReduceScatter", a.ReduceScatter, true);
  bind(h, "ncclAllGather", a.AllGather, true);
  bind(h, "ncclBroadcast", a.Broadcast, true);
  bind(h, "ncclSend", a.Send, true);
  bind(h, "ncclRecv", a.Recv, true);
  bind(h, "ncclGroupStart", a.GroupStart, true);
  bind(h, "ncclGroupEnd", a.GroupEnd, true);
  bind(h, "ncclCommSplit", a.CommSplit, false);
  bind(h, "ncclGetLastError", a.GetLastError, false);
  if (a.GetVersion(&a.version) != ncclSuccess) throw std::runtime_error("ncclGetVersion failed for " + a.path);
  // The handle stays open for the life of the process: communicators may outlive any owner.
  return a;
}

}  // namespace

const Api& api() {
  // A failed load is retried (and throws again) on the next call. The table is never freed: the
  // watchdog thread may still use it while static destructors run at exit.
  static std::mutex mu;
  static const Api* table = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (table == nullptr) table = new Api(load());
  return *table;
}

std::string version_string(int code) {
  return std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." + std::to_string(code % 100);
}

void check(ncclResult_t r, const std::string& what, ncclComm_t comm) {
  if (r == ncclSuccess) return;
  const Api& a = api();
  std::string msg = what + ": " + a.GetErrorString(r);
  // GetLastError(nullptr) is the calling thread's last error, which is what a failed init leaves.
  if (a.GetLastError != nullptr)
    if (const char* last = a.GetLastError(comm); last != nullptr && *last != '\0') msg += std::string(" (") + last + ")";
  throw std::runtime_error(msg);
}

}  // namespace shoestring::parallel::nccl
