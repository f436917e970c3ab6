// The mesh as data: coordinates, the documented rank layout, and the errors for shapes that do
// not fit the ranks started.
#include <gtest/gtest.h>

#include <set>

#include "parallel/mesh.h"
#include "parallel/world.h"

using namespace shoestring::parallel;

namespace {

TEST(Mesh, CoordinatesRoundTripAndEpIsInnermost) {
  const MeshShape s{2, 4, 2};  // pp 2, dp 4, ep 2: 8 ranks
  ASSERT_EQ(s.world_size(), 8);
  std::set<std::tuple<int, int, int, int>> seen;
  for (int r = 0; r < 8; ++r) {
    const MeshCoord c = coord_of(s, r);
    EXPECT_EQ(rank_of(s, c), r);
    seen.insert({c.pp, c.dp, c.ep, c.ep_replica});
  }
  EXPECT_EQ(seen.size(), 8u);
  // Neighbouring ranks share the ep group, then the dp group; pp is outermost.
  EXPECT_EQ(coord_of(s, 0).ep, 0);
  EXPECT_EQ(coord_of(s, 1).ep, 1);
  EXPECT_EQ(coord_of(s, 1).ep_replica, 0);
  EXPECT_EQ(coord_of(s, 2).ep_replica, 1);
  EXPECT_EQ(coord_of(s, 3).pp, 0);
  EXPECT_EQ(coord_of(s, 4).pp, 1);
  EXPECT_EQ(coord_of(s, 4).dp, 0);
  EXPECT_EQ(describe(s, 5), "rank 5: pp 1, dp 1 (ep 1 of replica 0)");
}

TEST(Mesh, ShapesThatDoNotFitAreExplained) {
  EXPECT_EQ(check_mesh({1, 4, 2}, 4), "");
  EXPECT_EQ(check_mesh({2, 3, 1}, 4), "dp=3 x pp=2 needs 6 ranks, the launcher started 4");
  EXPECT_NE(check_mesh({1, 4, 3}, 4).find("ep=3 must divide dp=4"), std::string::npos);
  EXPECT_NE(check_mesh({0, 4, 1}, 4).find("at least 1"), std::string::npos);
}

TEST(Mesh, OneProcessGetsGroupsOfOne) {
  const Mesh m = make_mesh({1, 1, 1}, make_world_group(World{}, CommOptions{}));
  for (const GroupPtr& g : {m.world, m.dp, m.ep, m.ep_replica, m.pp}) {
    ASSERT_TRUE(g);
    EXPECT_EQ(g->size(), 1);
    EXPECT_EQ(g->rank(), 0);
  }
  EXPECT_EQ(m.dp->name(), "dp");
  EXPECT_EQ(m.ep_replica->name(), "ep_replica");
  EXPECT_THROW(make_mesh({1, 2, 1}, m.world), std::invalid_argument);
}

}  // namespace

// Placement checks run before NCCL: what it would refuse is said as one line naming the ranks.
// Nodes are told apart by MPI's grouping (World::node), host names only label them.
TEST(DevicePlacement, OneGpuPerRankOrAllOnTheCpuIsFine) {
  EXPECT_EQ(device_placement_problem({{0, "a", "", 0}, {0, "a", "", 0}, {2, "b", "", 0}}), "");
  // The same bus id on two nodes is two GPUs (srun --gpus-per-task=1: each rank sees its own as 0).
  EXPECT_EQ(device_placement_problem({{0, "a", "0000:1b:00.0", 1}, {1, "b", "0000:1b:00.0", 1}, {0, "a", "0000:2c:00.0", 2}}),
            "");
  // ... even when the two nodes report the same host name (containers, cloned images).
  EXPECT_EQ(device_placement_problem({{0, "localhost", "0000:1b:00.0", 1}, {1, "localhost", "0000:1b:00.0", 1}}), "");
}

TEST(DevicePlacement, TwoRanksOnOneGpuAreNamed) {
  const std::string p = device_placement_problem({{0, "a", "0000:1b:00.0", 1},
                                                  {1, "b", "0000:1b:00.0", 1},
                                                  {0, "a", "0000:2c:00.0", 1},
                                                  {0, "a", "0000:1b:00.0", 1}});
  EXPECT_NE(p.find("ranks 0 and 3 both use GPU 0000:1b:00.0 on node a"), std::string::npos) << p;
  EXPECT_NE(p.find("mod the 1 it sees"), std::string::npos) << p;
  EXPECT_NE(p.find("train.device=cpu"), std::string::npos) << p;
}

TEST(DevicePlacement, GpuAndCpuRanksInOneJobAreNamed) {
  std::string p = device_placement_problem({{0, "a", "0000:1b:00.0", 1}, {1, "b", "", 0}});
  EXPECT_NE(p.find("rank 0 (node a) trains on GPU 0000:1b:00.0 but rank 1 (node b) has none"), std::string::npos) << p;
  p = device_placement_problem({{0, "b", "", 0}, {0, "b", "", 0}, {2, "a", "0000:1b:00.0", 4}});
  EXPECT_NE(p.find("rank 2 (node a) trains on GPU 0000:1b:00.0 but rank 0 (node b) has none"), std::string::npos) << p;
}

TEST(DevicePlacement, EncodesAndDecodesARanksDevice) {
  for (const RankDevice& d : {RankDevice{12, "node-7.cluster", "0000:1b:00.0", 8}, RankDevice{0, "h", "", 0}}) {
    const RankDevice back = decode_rank_device(encode(d));
    EXPECT_EQ(back.node, d.node);
    EXPECT_EQ(back.host, d.host);
    EXPECT_EQ(back.gpu, d.gpu);
    EXPECT_EQ(back.visible, d.visible);
  }
}
