#include "parallel/world.h"

#include "parallel/comm_thread.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <map>
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
  w.node = w.rank;
  MPI_Allreduce(MPI_IN_PLACE, &w.node, 1, MPI_INT, MPI_MIN, node);
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

std::vector<std::string> all_gather_strings(const World& w, const std::string& mine) {
  if (!w.mpi || w.size == 1) return {mine};
  const int len = int(mine.size());
  std::vector<int> lens(size_t(w.size)), displs(size_t(w.size));
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int total = 0;
  for (size_t r = 0; r < lens.size(); ++r) {
    displs[r] = total;
    total += lens[r];
  }
  std::string all(size_t(total), '\0');
  MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> out;
  for (size_t r = 0; r < lens.size(); ++r) out.push_back(all.substr(size_t(displs[r]), size_t(lens[r])));
  return out;
}

// Host names and bus ids hold no tab.
std::string encode(const RankDevice& d) {
  return std::to_string(d.node) + "\t" + std::to_string(d.visible) + "\t" + d.gpu + "\t" + d.host;
}

RankDevice decode_rank_device(const std::string& s) {
  RankDevice d;
  const size_t a = s.find('\t'), b = a == std::string::npos ? a : s.find('\t', a + 1),
               c = b == std::string::npos ? b : s.find('\t', b + 1);
  if (c == std::string::npos) return d;
  d.node = std::atoi(s.c_str());
  d.visible = std::atoi(s.c_str() + a + 1);
  d.gpu = s.substr(b + 1, c - b - 1);
  d.host = s.substr(c + 1);
  return d;
}

std::string device_placement_problem(const std::vector<RankDevice>& by_rank) {
  auto where = [&](size_t r) { return "rank " + std::to_string(r) + " (node " + by_rank[r].host + ")"; };
  for (size_t r = 1; r < by_rank.size(); ++r)
    if (by_rank[r].gpu.empty() != by_rank[0].gpu.empty()) {
      const size_t gpu = by_rank[0].gpu.empty() ? r : 0, cpu = gpu == 0 ? r : 0;
      return "train.device: " + where(gpu) + " trains on GPU " + by_rank[gpu].gpu + " but " + where(cpu) +
             " has none; every rank must train on the same kind of device: start every rank on a GPU node, or set "
             "train.device=cpu";
    }
  std::map<std::pair<int, std::string>, size_t> first;  // (node, bus id) -> its first rank
  for (size_t r = 0; r < by_rank.size(); ++r) {
    const RankDevice& d = by_rank[r];
    if (d.gpu.empty()) continue;
    const auto [it, fresh] = first.try_emplace({d.node, d.gpu}, r);
    if (fresh) continue;
    return "train.device: ranks " + std::to_string(it->second) + " and " + std::to_string(r) + " both use GPU " + d.gpu +
           " on node " + d.host + " (a rank takes GPU local rank mod the " + std::to_string(d.visible) +
           " it sees), and NCCL needs a GPU per rank: start at most as many ranks per node as it has GPUs, give each "
           "rank its own (CUDA_VISIBLE_DEVICES, srun --gpus-per-task=1), or set train.device=cpu";
  }
  return {};
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
