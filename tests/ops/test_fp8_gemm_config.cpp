// The tile heuristic is a pure host function: testable without a GPU.
#include <gtest/gtest.h>

#include "ops/fp8_gemm_config.h"

#include <set>
#include <tuple>

#include "ops/fp8_tile_order.h"

namespace {

using namespace shoestring::ops;

TEST(Fp8GemmConfig, PicksTensorCoresOnHopperAndSimtBefore) {
  EXPECT_EQ(choose_fp8_gemm_config(4096, 7168, 2048, {90, 132}).kernel, Fp8GemmKernel::kWgmmaPersistent);
  EXPECT_EQ(choose_fp8_gemm_config(128, 7168, 2048, {90, 132}).kernel, Fp8GemmKernel::kWgmmaTma);
  EXPECT_EQ(choose_fp8_gemm_config(4096, 7168, 2048, {89, 128}).kernel, Fp8GemmKernel::kMma);
  EXPECT_EQ(choose_fp8_gemm_config(4096, 7168, 2048, {100, 148}).kernel, Fp8GemmKernel::kMma)
      << "sm_90a code does not run on later architectures";
  EXPECT_EQ(choose_fp8_gemm_config(4096, 7168, 2048, {90, 132}, Fp8GemmKernel::kMma).kernel, Fp8GemmKernel::kMma);
  EXPECT_THROW(choose_fp8_gemm_config(128, 128, 128, {100, 148}, Fp8GemmKernel::kWgmmaTma), std::invalid_argument);
  EXPECT_THROW(choose_fp8_gemm_config(128, 128, 128, {89, 128}, Fp8GemmKernel::kWgmmaTma), std::invalid_argument);
  EXPECT_EQ(choose_fp8_gemm_config(4096, 7168, 2048, {80, 108}).kernel, Fp8GemmKernel::kSimt);
  EXPECT_EQ(choose_fp8_gemm_config(128, 128, 128, {90, 132}, Fp8GemmKernel::kSimt).kernel, Fp8GemmKernel::kSimt);
  EXPECT_THROW(choose_fp8_gemm_config(128, 128, 128, {80, 108}, Fp8GemmKernel::kMma), std::invalid_argument);
}

TEST(Fp8GemmConfig, SmallMGetsSmallerTilesToFillTheGpu) {
  const Fp8DeviceInfo h200{90, 132};
  for (int64_t m : {1, 128, 4096}) EXPECT_EQ(choose_fp8_gemm_config(m, 7168, 2048, h200).block_m, 128) << "wgmma: 128x128";
  const Fp8DeviceInfo ada{89, 128};
  // mma: M = 128, N = 2112: 17 blocks of 128x128 for 128 SMs -> 64-row tiles.
  EXPECT_EQ(choose_fp8_gemm_config(128, 2112, 7168, ada).block_m, 64);
  // M = 4096, N = 7168: 32 * 56 = 1792 blocks -> 128-row tiles.
  EXPECT_EQ(choose_fp8_gemm_config(4096, 7168, 2048, ada).block_m, 128);
  for (const Fp8DeviceInfo& dev : {h200, ada})
    for (int64_t m : {1, 128, 4096})
      EXPECT_EQ(choose_fp8_gemm_config(m, 7168, 2048, dev).block_n, 128) << "one weight scale block per tile";
}

TEST(Fp8GemmConfig, PersistentKernelsAreHopperOnlyAndAutoTakesTheSquareOneWhereItFills) {
  const Fp8DeviceInfo h100{90, 132};
  for (auto [k, bn] : {std::pair{Fp8GemmKernel::kWgmmaPersistent, 128}, std::pair{Fp8GemmKernel::kWgmmaN160, 160},
                       std::pair{Fp8GemmKernel::kWgmmaN192, 192}, std::pair{Fp8GemmKernel::kWgmmaN192Multicast, 192},
                       std::pair{Fp8GemmKernel::kWgmmaBanded, 128}, std::pair{Fp8GemmKernel::kWgmmaStaged, 128},
                       std::pair{Fp8GemmKernel::kWgmmaStore, 128}, std::pair{Fp8GemmKernel::kWgmmaMulticast, 128}}) {
    const Fp8GemmConfig c = choose_fp8_gemm_config(4096, 7168, 2048, h100, k);
    EXPECT_EQ(c.kernel, k);
    EXPECT_EQ(c.block_m, 128);
    EXPECT_EQ(c.block_n, bn);
    EXPECT_TRUE(c.persistent);
    EXPECT_NE(c.describe().find("persistent"), std::string::npos) << c.describe();
    EXPECT_TRUE(is_wgmma_kernel(k));
    EXPECT_EQ(c.multicast, k == Fp8GemmKernel::kWgmmaN192Multicast || k == Fp8GemmKernel::kWgmmaMulticast);
    const bool banded = k == Fp8GemmKernel::kWgmmaBanded || k == Fp8GemmKernel::kWgmmaStaged ||
                        k == Fp8GemmKernel::kWgmmaStore;
    EXPECT_EQ(c.tile_band, banded ? 8 : k == Fp8GemmKernel::kWgmmaMulticast ? 4 : 1);
    EXPECT_EQ(c.tma_store, k == Fp8GemmKernel::kWgmmaStore);
    EXPECT_EQ(c.describe().find("TMA") != std::string::npos, c.tma_store) << c.describe();
    EXPECT_EQ(c.staged_scales, k == Fp8GemmKernel::kWgmmaStaged);
    EXPECT_EQ(c.describe().find("staged") != std::string::npos, c.staged_scales) << c.describe();
    EXPECT_THROW(choose_fp8_gemm_config(128, 128, 128, {89, 128}, k), std::invalid_argument);
    EXPECT_THROW(choose_fp8_gemm_config(128, 128, 128, {100, 148}, k), std::invalid_argument);
  }
  // Auto: the persistent 128-wide kernel where the 128x128 tiles fill half the SMs or more (so it
  // never splits K), the one-tile-per-block kernel below that (H100, 2026-11-27: docs/fp8.md); never
  // the wider ones.
  const auto auto_kernel = [&](int64_t m, int64_t n) { return choose_fp8_gemm_config(m, n, 2048, h100); };
  for (auto [m, n] : {std::pair<int64_t, int64_t>{4096, 7168}, {128, 24576}, {66 * 128, 128}}) {
    EXPECT_EQ(auto_kernel(m, n).kernel, Fp8GemmKernel::kWgmmaPersistent) << m << "x" << n;
    EXPECT_EQ(auto_kernel(m, n).k_splits, 1) << m << "x" << n;
  }
  for (auto [m, n] : {std::pair<int64_t, int64_t>{128, 7168}, {128, 2112}, {65 * 128, 128}}) {
    EXPECT_EQ(auto_kernel(m, n).kernel, Fp8GemmKernel::kWgmmaTma) << m << "x" << n;
    EXPECT_FALSE(auto_kernel(m, n).persistent);
  }
  EXPECT_FALSE(is_wgmma_kernel(Fp8GemmKernel::kMma));
}

TEST(Fp8GemmConfig, CandidatesSplitKOnlyWhenTheTilesFillLessThanHalfTheGpu) {
  const Fp8DeviceInfo h100{90, 132};
  auto splits = [&](Fp8GemmKernel k, int64_t m, int64_t n, int64_t kk) {
    return choose_fp8_gemm_config(m, n, kk, h100, k).k_splits;
  };
  // M = 128, N = 2112, K = 7168: 17 tiles of 128x128 -> 132 / 17 = 7 spans (56 K blocks allow 14).
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaPersistent, 128, 2112, 7168), 7);
  // 11 tiles of 128x192 -> 12 spans.
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaN192, 128, 2112, 7168), 12);
  // K = 1024 (8 blocks): at least 4 blocks per span -> 2.
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaN160, 128, 2112, 1024), 2);
  // Enough tiles (192 >= 66, or 544 at M = 4096), or too little K: no split.
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaPersistent, 128, 24576, 1536), 1);
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaPersistent, 4096, 2112, 7168), 1);
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaPersistent, 128, 128, 384), 1);
  // The measured kernels never split.
  EXPECT_EQ(splits(Fp8GemmKernel::kWgmmaTma, 128, 2112, 7168), 1);
  EXPECT_EQ(splits(Fp8GemmKernel::kMma, 128, 2112, 7168), 1);
  EXPECT_NE(choose_fp8_gemm_config(128, 2112, 7168, h100, Fp8GemmKernel::kWgmmaN192).describe().find("split-K 12"),
            std::string::npos);
}

TEST(Fp8TileOrder, EveryTileOnceRowByRowOrInBands) {
  for (int band : {1, 2, 3, 8})
    for (auto [tiles_m, tiles_n, groups] : {std::tuple{1, 1, 1}, {10, 3, 2}, {17, 56, 1}, {8, 5, 3}, {3, 7, 1}}) {
      std::set<std::tuple<int, int, int>> seen;
      for (int t = 0; t < tiles_m * tiles_n * groups; ++t) {
        const TileIndex i = tile_order(t, tiles_n, tiles_m, band);
        ASSERT_TRUE(i.row >= 0 && i.row < tiles_m && i.col >= 0 && i.col < tiles_n && i.group >= 0 && i.group < groups)
            << "band " << band << " unit " << t;
        seen.emplace(i.row, i.col, i.group);
      }
      EXPECT_EQ(int(seen.size()), tiles_m * tiles_n * groups) << "band " << band << ": a tile twice";
    }
  // Row by row: columns fastest.
  EXPECT_EQ(tile_order(5, 4, 10, 1).row, 1);
  EXPECT_EQ(tile_order(5, 4, 10, 1).col, 1);
  // Bands of 8 over 10 rows x 4 columns: units 0-7 are column 0 of rows 0-7, 8 is column 1 of row 0;
  // the last band has 2 rows: unit 32 is row 8, 33 row 9 of column 0, 34 row 8 of column 1.
  for (int t = 0; t < 8; ++t) EXPECT_EQ(tile_order(t, 4, 10, 8).row, t);
  EXPECT_EQ(tile_order(8, 4, 10, 8).col, 1);
  EXPECT_EQ(tile_order(8, 4, 10, 8).row, 0);
  EXPECT_EQ(tile_order(33, 4, 10, 8).row, 9);
  EXPECT_EQ(tile_order(34, 4, 10, 8).row, 8);
  EXPECT_EQ(tile_order(34, 4, 10, 8).col, 1);
  EXPECT_EQ(tile_order(40, 4, 10, 8).group, 1);
  EXPECT_NE(choose_fp8_gemm_config(4096, 7168, 2048, {90, 132}, Fp8GemmKernel::kWgmmaBanded).describe().find("bands of 8"),
            std::string::npos);
}

TEST(Fp8GemmConfig, KernelNamesRoundTrip) {
  for (Fp8GemmKernel k : kAllFp8GemmKernels) EXPECT_EQ(fp8_gemm_kernel_from_name(fp8_gemm_kernel_name(k)), k);
  try {
    fp8_gemm_kernel_from_name("cutlass");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'cutlass'"), std::string::npos) << e.what();
  }
}

TEST(Fp8GemmConfig, KernelListsMatchWholeNames) {
  EXPECT_TRUE(fp8_gemm_kernel_listed("mma,wgmma-n192", Fp8GemmKernel::kWgmmaN192));
  EXPECT_TRUE(fp8_gemm_kernel_listed("mma", Fp8GemmKernel::kMma));
  EXPECT_FALSE(fp8_gemm_kernel_listed("mma,wgmma-n192-mc", Fp8GemmKernel::kWgmmaN192)) << "a prefix is not a name";
  EXPECT_FALSE(fp8_gemm_kernel_listed("", Fp8GemmKernel::kMma));
}

TEST(Fp8GemmConfig, RejectsEmptyShapes) {
  EXPECT_THROW(choose_fp8_gemm_config(0, 128, 128, {}), std::invalid_argument);
  EXPECT_NE(choose_fp8_gemm_config(1, 1, 1, {}).describe().find("mma"), std::string::npos);
}

}  // namespace
