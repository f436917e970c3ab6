#include "parallel/process_group.h"

#include "parallel/local_group.h"
#include "parallel/mpi_group.h"

namespace shoestring::parallel {

GroupPtr make_world_group(const World& world, const CommOptions& opts) {
  return world.mpi ? make_mpi_world_group(opts) : make_local_group("world");
}

}  // namespace shoestring::parallel
