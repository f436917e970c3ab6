#pragma once
// The launcher and network settings a multi-node run depends on, for the start banner: when a job
// is slow or hangs, the first question is which interface, transport and GPUs it used.
#include <string>
#include <vector>

namespace shoestring {

// The variables environment_line() reports, in the order it prints them.
const std::vector<std::string>& reported_environment_variables();

// "  env      NCCL_SOCKET_IFNAME=eth0 OMP_NUM_THREADS=8" with those that are set (an empty value
// counts as set: NCCL reads it), or "" when none is.
std::string environment_line();

}  // namespace shoestring
