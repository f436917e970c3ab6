#include "parallel/process_group.h"

#include "parallel/local_group.h"
#include "parallel/mpi_group.h"

#include <chrono>

namespace shoestring::parallel {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

GroupPtr make_world_group(const World& world, const CommOptions& opts) {
  return world.mpi ? make_mpi_world_group(opts) : make_local_group("world");
}

}  // namespace shoestring::parallel
