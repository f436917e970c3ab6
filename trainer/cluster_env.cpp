#include "trainer/cluster_env.h"

#include <cstdlib>

namespace shoestring {

const std::vector<std::string>& reported_environment_variables() {
  // NCCL: which NIC / HCA, whether P2P, InfiniBand and GPUDirect RDMA are on, forced algorithms.
  // Open MPI / UCX: the transports of the CPU (MPI) backend. Then GPU visibility and threads, and
  // the Slurm job and rank (what the job's log lines are matched against in sacct).
  static const std::vector<std::string> names = {
      "NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_DEBUG", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE",
      "NCCL_NET_GDR_LEVEL", "NCCL_ALGO", "NCCL_PROTO", "OMPI_MCA_btl", "OMPI_MCA_pml",
      "OMPI_MCA_btl_tcp_if_include", "UCX_NET_DEVICES", "UCX_TLS", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
      "SLURM_JOB_ID", "SLURM_PROCID"};
  return names;
}

std::string environment_line() {
  std::string line;
  for (const auto& name : reported_environment_variables())
    if (const char* value = std::getenv(name.c_str())) line += " " + name + "=" + value;
  return line.empty() ? line : "  env     " + line;
}

}  // namespace shoestring
