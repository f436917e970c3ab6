#include "parallel/world.h"

#include "parallel/comm_thread.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace shoestring::parallel {

namespace {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

}  // namespace

World init_world(int* argc, char*** argv) {
  World w;
  // A plain `shoestring train` is a single process: initialising MPI as a singleton would start
  // Open MPI's runtime for nothing and fails in some containers.
  if (!launched_by_mpi()) return w;
  // MULTIPLE so that code outside the process groups may still call MPI while the comm thread
  // runs; the comm thread itself only needs SERIALIZED and falls back to progressing on the
  // caller's thread below that (comm_thread.h).
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  w.mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &w.local_rank);
  MPI_Comm_size(node, &w.local_size);
  MPI_Comm_free(&node);
  return w;
}

void finalize_world(const World& w) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (w.mpi && !finalized) {
    shutdown_comm_engine();
    MPI_Finalize();
  }
}

void abort_world(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

int threads_per_rank(int requested, const World& w) {
  if (requested > 0) return requested;
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, w.local_size));
}

std::string mpi_library_version() {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(buf, &len);
  std::string s(buf, size_t(len));
  const auto nl = s.find_first_of("\n,");
  return nl == std::string::npos ? s : s.substr(0, nl);
}

}  // namespace shoestring::parallel
