#pragma once
// The order in which the persistent GEMM's blocks walk C's tiles (fp8_gemm_wgmma_persistent.cu):
// block b takes units b, b + grid, b + 2 grid, ..., so the units a wave runs at once are
// consecutive numbers. Row by row, a wave of 132 blocks on N = 7168 (56 tiles of 128) covers all
// 56 columns of 2-3 rows: every B column is read for only 2-3 A rows before L2 must hold it again.
// In bands of rows (CUTLASS's swizzle, Triton's GROUP_M) the wave covers `band` rows x 132 / band
// columns, and each operand tile read into L2 serves more of the wave. Plain C++ so that a CPU
// test checks the mapping (tests/ops/test_fp8_gemm_config.cpp).
#include "ops/fp8_format.h"  // SHOESTRING_HD

namespace shoestring::ops {

struct TileIndex {
  int row, col, group;  // in tiles; group: the k-group (split-K span or expert of a k-grouped GEMM)
};

// Unit t of `groups` x tiles_m x tiles_n, groups one after another. band <= 1: columns fastest,
// row by row. band > 1: rows in bands of `band` (the last one may be shorter); inside a band,
// rows fastest, then columns. Both are bijections onto the tiles (the test checks it).
SHOESTRING_HD TileIndex tile_order(int t, int tiles_n, int tiles_m, int band) {
  const int per_group = tiles_n * tiles_m;
  const int group = t / per_group, r = t % per_group;
  if (band <= 1) return {r / tiles_n, r % tiles_n, group};
  const int per_band = band * tiles_n, first_row = (r / per_band) * band, w = r % per_band;
  const int rows = tiles_m - first_row < band ? tiles_m - first_row : band;
  return {first_row + w % rows, w / rows, group};
}

}  // namespace shoestring::ops
