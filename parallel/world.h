#pragma once
// The process world: MPI when launched by mpirun/srun, a single process otherwise. Created once
// in main() and passed down; nobody else computes ranks.
#include <string>
#include <vector>

namespace shoestring::parallel {

struct World {
  int rank = 0, size = 1;              // global
  int local_rank = 0, local_size = 1;  // on this node
  int node = 0;  // the world rank of this node's first rank: one id per node, as MPI groups them
  bool mpi = false;                    // MPI was initialised (launched by an MPI launcher)
};

// Initialises MPI when the environment shows an MPI launcher; safe to call once per process.
World init_world(int* argc, char*** argv);
void finalize_world(const World& w);

// Ends every rank of the job with exit code `code` (MPI_Abort); a plain exit without MPI.
[[noreturn]] void abort_world(int code);

// Intra-op threads per rank: `requested` when > 0, else this node's cores shared among its ranks,
// so ranks x threads never oversubscribe the cores.
int threads_per_rank(int requested, const World& w);

// Every rank's `mine`, by world rank: collective over the world ({mine} for a single process).
std::vector<std::string> all_gather_strings(const World& w, const std::string& mine);

// Where a rank computes, compared across ranks before NCCL is set up.
struct RankDevice {
  int node = 0;      // World::node: which ranks share a node (host names may repeat across nodes)
  std::string host;  // the node's name, for messages
  std::string gpu;   // its GPU's PCI bus id; empty: it trains on the CPU
  int visible = 0;   // GPUs visible to the rank
};
std::string encode(const RankDevice& d);
RankDevice decode_rank_device(const std::string& s);
// What NCCL would refuse later, said now in one line: ranks on different kinds of device, or two
// ranks of a node on one GPU (NCCL: "Duplicate GPU detected"). Empty when the placement is fine.
std::string device_placement_problem(const std::vector<RankDevice>& by_rank);

// "Open MPI v4.1.4, ..." as the library reports it (works before MPI_Init).
std::string mpi_library_version();

}  // namespace shoestring::parallel
