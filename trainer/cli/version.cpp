#include <H5public.h>
#include <torch/version.h>

#include <sstream>

#include "parallel/world.h"
#include "shoestring/build_info.h"
#include "trainer/cli/commands.h"
#ifdef SHOESTRING_WITH_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef SHOESTRING_HAVE_NCCL
#include <nccl.h>
#endif

namespace shoestring::cli {

std::string version_text() {
  std::ostringstream s;
  s << "shoestring " << SHOESTRING_VERSION << " (git " << SHOESTRING_GIT_COMMIT << ", " << SHOESTRING_BUILD_TYPE << ")\n"
    << "  LibTorch " << TORCH_VERSION << "\n";
#ifdef SHOESTRING_WITH_CUDA
  s << "  CUDA     " << CUDART_VERSION / 1000 << "." << (CUDART_VERSION % 1000) / 10 << " (kernels built)\n";
#else
  s << "  CUDA     off (built without CUDA kernels)\n";
#endif
#ifdef SHOESTRING_HAVE_NCCL
  s << "  NCCL     " << NCCL_MAJOR << "." << NCCL_MINOR << "." << NCCL_PATCH << " (headers)\n";
#else
  s << "  NCCL     not found at build time\n";
#endif
  s << "  MPI      " << parallel::mpi_library_version() << "\n"
    << "  HDF5     " << H5_VERS_MAJOR << "." << H5_VERS_MINOR << "." << H5_VERS_RELEASE << "\n";
  return s.str();
}

}  // namespace shoestring::cli
