#pragma once
// The device mesh: this rank's place in the (pp, dp, ep) layout and the process groups of each
// dimension. Built once at start-up and passed down; nothing else computes ranks.
//
// Rank layout, innermost first (neighbouring ranks share a node, so the chattiest group goes
// inside): ep (an all-to-all in every MoE layer, forward and backward), then the rest of dp (one
// gradient reduction per step), then pp (point-to-point activations between neighbours):
//   dp_rank = ep_replica * ep + ep_rank,   rank = pp_rank * dp + dp_rank.
// Experts are sharded over the ep ranks of a dp group (ep divides dp, no tensor parallelism):
// the dp/ep ranks holding the same experts form the ep-replica group, which reduces expert
// gradients; dense gradients are reduced over the whole dp group.
#include <string>

#include "parallel/process_group.h"

namespace shoestring::parallel {

struct MeshShape {
  int pp = 1, dp = 1, ep = 1;
  int world_size() const { return pp * dp; }
};

struct MeshCoord {
  int pp = 0, dp = 0;
  int ep = 0;          // rank in the ep group: which expert shard this rank holds
  int ep_replica = 0;  // which copy of the expert shards (rank in the ep-replica group)
};

// Empty when the shape is usable on `world_size` ranks, else what is wrong (e.g.
// "dp=3 x pp=2 needs 6 ranks, the launcher started 4").
std::string check_mesh(const MeshShape& shape, int world_size);

MeshCoord coord_of(const MeshShape& shape, int rank);
int rank_of(const MeshShape& shape, const MeshCoord& c);

// "rank 5: pp 1, dp 1 (ep 1 of replica 0)" -- for logs and error prefixes.
std::string describe(const MeshShape& shape, int rank);

struct Mesh {
  MeshShape shape;
  MeshCoord coord;
  GroupPtr world;
  GroupPtr dp;          // same pp stage, all dp ranks
  GroupPtr ep;          // the ep ranks of one replica (consecutive ranks)
  GroupPtr ep_replica;  // ranks holding the same experts: reduces expert gradients
  GroupPtr pp;          // same dp rank, all stages
};

// Splits `world` into the mesh's groups (a collective over world: every rank calls it). Throws
// std::invalid_argument with check_mesh's message when the shape does not fit.
Mesh make_mesh(const MeshShape& shape, const GroupPtr& world);

}  // namespace shoestring::parallel
