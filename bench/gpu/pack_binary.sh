#!/usr/bin/env bash
# Packs build/bin/shoestring and build/tests/test_nccl_gpu (stripped) and the non-LibTorch, non-CUDA, non-libc shared libraries it
# needs into .carry/gpu-run, for bench/gpu/train_check.sh on a GPU machine without those packages.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=$ROOT/.carry/gpu-run
rm -rf "$DEST" && mkdir -p "$DEST/lib"
strip -o "$DEST/shoestring" "$ROOT/build/bin/shoestring"
# The NCCL backend's GPU test (1-rank communicator) rides along; it needs the same libraries.
[[ ! -x $ROOT/build/tests/test_nccl_gpu ]] || strip -o "$DEST/test_nccl_gpu" "$ROOT/build/tests/test_nccl_gpu"
ldd "$ROOT/build/bin/shoestring" | awk '/=> \// {print $3}' |
  grep -v -E '/torch/lib/|/cuda|libc\.so|libm\.so|libgcc_s|libpthread|libdl\.so|librt\.so|libutil\.so|ld-linux' |
  while read -r lib; do cp -L "$lib" "$DEST/lib/"; done
du -sh "$DEST"
