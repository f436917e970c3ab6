#include "parallel/mesh.h"

#include <stdexcept>

namespace shoestring::parallel {

std::string check_mesh(const MeshShape& s, int world_size) {
  if (s.pp < 1 || s.dp < 1 || s.ep < 1)
    return "pp, dp and ep must be at least 1 (got pp=" + std::to_string(s.pp) + " dp=" + std::to_string(s.dp) +
           " ep=" + std::to_string(s.ep) + ")";
  if (s.dp % s.ep != 0)
    return "ep=" + std::to_string(s.ep) + " must divide dp=" + std::to_string(s.dp) +
           " (experts are sharded over a subset of the data-parallel ranks)";
  if (s.world_size() != world_size)
    return "dp=" + std::to_string(s.dp) + " x pp=" + std::to_string(s.pp) + " needs " +
           std::to_string(s.world_size()) + " ranks, the launcher started " + std::to_string(world_size);
  return {};
}

MeshCoord coord_of(const MeshShape& s, int rank) {
  MeshCoord c;
  c.pp = rank / s.dp;
  c.dp = rank % s.dp;
  c.ep = c.dp % s.ep;
  c.ep_replica = c.dp / s.ep;
  return c;
}

int rank_of(const MeshShape& s, const MeshCoord& c) { return c.pp * s.dp + c.ep_replica * s.ep + c.ep; }

std::string describe(const MeshShape& s, int rank) {
  const MeshCoord c = coord_of(s, rank);
  std::string d = "rank " + std::to_string(rank) + ": pp " + std::to_string(c.pp) + ", dp " + std::to_string(c.dp);
  if (s.ep > 1) d += " (ep " + std::to_string(c.ep) + " of replica " + std::to_string(c.ep_replica) + ")";
  return d;
}

Mesh make_mesh(const MeshShape& shape, const GroupPtr& world) {
  if (const std::string bad = check_mesh(shape, world->size()); !bad.empty()) throw std::invalid_argument(bad);
  Mesh m;
  m.shape = shape;
  m.coord = coord_of(shape, world->rank());
  m.world = world;
  const MeshCoord& c = m.coord;
  // Every rank makes the same four splits in the same order; colors name the coordinates the
  // members share, keys order them along the dimension.
  m.dp = world->split(c.pp, c.dp, "dp");
  m.ep = world->split(c.pp * shape.dp + c.ep_replica, c.ep, "ep");
  m.ep_replica = world->split(c.pp * shape.ep + c.ep, c.ep_replica, "ep_replica");
  m.pp = world->split(c.dp, c.pp, "pp");
  return m;
}

}  // namespace shoestring::parallel
