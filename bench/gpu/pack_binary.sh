#!/usr/bin/env bash
# Packs build/bin/shoestring and the GPU test binaries (stripped) with the shared libraries they need
# that are neither LibTorch's, CUDA's nor libc's into .carry/gpu-run, for bench/gpu/run.sh on a GPU
# machine that lacks them (yaml-cpp, Boost.Program_options, Open MPI, HDF5, ...).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=$ROOT/.carry/gpu-run
rm -rf "$DEST" && mkdir -p "$DEST/lib"
bins=("$ROOT/build/bin/shoestring" "$ROOT/build/tests/test_fp8_gpu" "$ROOT/build/tests/test_nccl_gpu"
  "$ROOT/build/tests/test_moe_rows_gpu")
for b in "${bins[@]}"; do
  [[ -x $b ]] || { echo "pack_binary.sh: missing $b (build it first)" >&2; exit 1; }
  strip -o "$DEST/$(basename "$b")" "$b"
done
ldd "${bins[@]}" | awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/torch/lib/|/cuda|libc\.so|libm\.so|libgcc_s|libpthread|libdl\.so|librt\.so|libutil\.so|ld-linux' |
  while read -r lib; do cp -L "$lib" "$DEST/lib/"; done
du -sh "$DEST"
