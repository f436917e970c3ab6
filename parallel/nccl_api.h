#pragma once
// NCCL, loaded with dlopen on first use (CUDA builds with nccl.h only: SHOESTRING_HAVE_NCCL).
//
// Why not link it: libnccl is ~300 MB, absent on CPU machines and CI, and LibTorch's own
// libtorch_cuda.so already loads one; linking ours could put two different NCCLs in one process.
// dlopen("libnccl.so.2") returns the copy libtorch_cuda.so loaded when there is one (glibc matches
// loaded libraries by soname), so both talk the same protocol version.
// nccl.h is included for the types and enums only; every call goes through Api's pointers.
#include <nccl.h>

#include <string>

namespace shoestring::parallel::nccl {

struct Api {
  decltype(&::ncclGetVersion) GetVersion = nullptr;
  decltype(&::ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&::ncclCommInitRank) CommInitRank = nullptr;
  decltype(&::ncclCommAbort) CommAbort = nullptr;
  decltype(&::ncclCommDestroy) CommDestroy = nullptr;
  decltype(&::ncclCommGetAsyncError) CommGetAsyncError = nullptr;
  decltype(&::ncclGetErrorString) GetErrorString = nullptr;
  decltype(&::ncclAllReduce) AllReduce = nullptr;
  decltype(&::ncclReduceScatter) ReduceScatter = nullptr;
  decltype(&::ncclAllGather) AllGather = nullptr;
  decltype(&::ncclBroadcast) Broadcast = nullptr;
  decltype(&::ncclSend) Send = nullptr;
  decltype(&::ncclRecv) Recv = nullptr;
  decltype(&::ncclGroupStart) GroupStart = nullptr;
  decltype(&::ncclGroupEnd) GroupEnd = nullptr;
  // Optional: null when the loaded library predates them (CommSplit: 2.18, GetLastError: 2.13).
  ncclResult_t (*CommSplit)(ncclComm_t, int, int, ncclComm_t*, ncclConfig_t*) = nullptr;
  const char* (*GetLastError)(ncclComm_t) = nullptr;

  std::string path;  // the file that was loaded
  int version = 0;   // NCCL_VERSION_CODE of the loaded library, e.g. 22703
};

// Loads NCCL once per process. Throws std::runtime_error listing every location tried and why
// each failed, or naming the missing symbol.
const Api& api();

// "2.27.3" from a version code (>= 2.9 codes are major*10000 + minor*100 + patch).
std::string version_string(int code);

// Throws std::runtime_error("<what>: <NCCL error string> (<last error>)") unless r is ncclSuccess.
void check(ncclResult_t r, const std::string& what, ncclComm_t comm = nullptr);

}  // namespace shoestring::parallel::nccl
