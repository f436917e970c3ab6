#!/usr/bin/env bash
# GPU check of the training path: trains the tiny configs on CUDA (and on CPU in the same run, as
# the reference), measures `shoestring bench train` for small-moe on the GPU, runs the NCCL
# backend's test and `shoestring bench comm --backend nccl` (ours against raw NCCL, 1 rank).
#
# The GPU machine lacks yaml-cpp, Boost.Program_options and Open MPI, so this runs a `shoestring`
# binary built on the CPU machine (same x86-64, same LibTorch 2.11.0+cu130 ABI) together with
# those libraries, both carried in .carry/gpu-run (made by bench/gpu/pack_binary.sh). LibTorch and
# the CUDA libraries are the GPU machine's own (its python3's torch wheel).
# Output: ${OUT:-/tmp/out}/train_check.log, one metrics file per run and bench_comm_nccl.jsonl.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-/tmp/out}
CARRY=${SHOESTRING_GPU_RUN:-$ROOT/.carry/gpu-run}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-200}
mkdir -p "$OUT"
LOG=$OUT/train_check.log
exec > >(tee -a "$LOG") 2>&1

TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || echo "${TORCH_LIB:-}")
NV_LIBS=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$CARRY/lib:$TORCH_LIB:$NV_LIBS:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
BIN=$CARRY/shoestring
cd "$ROOT" || exit 1
date -u +%FT%TZ
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
"$BIN" --version || { echo "FAIL: the carried binary does not start"; ldd "$BIN" | grep "not found"; exit 1; }

FAILED=0
run() {  # run NAME ARGS...: a training run; its metrics land in $OUT/NAME.jsonl
  local name=$1; shift
  rm -rf "/tmp/run-$name"
  echo "== $name: shoestring $*"
  if timeout 240 "$BIN" "$@" --set log.run_dir="/tmp/run-$name" --set log.every=50; then
    cp "/tmp/run-$name/metrics.jsonl" "$OUT/$name.jsonl"
  else
    echo "FAIL: $name"; FAILED=$((FAILED + 1))
  fi
}
run tiny-$DEVICE train --config configs/tiny.yaml --set train.device=$DEVICE --set train.steps=$STEPS
run tinymoe-$DEVICE train --config configs/tiny-moe.yaml --set train.device=$DEVICE --set train.steps=$STEPS
run tinymoe-cpu train --config configs/tiny-moe.yaml --set train.device=cpu --set train.steps=$STEPS
echo "== bench train small-moe ($DEVICE, bf16 as configured)"
timeout 240 "$BIN" bench train --config configs/small-moe.yaml --set train.device=$DEVICE ${SMALL_SETS:-} \
  --steps ${BENCH_STEPS:-10} --warmup 3 --json "$OUT/bench_small_moe.json" || { echo "FAIL: bench small-moe"; FAILED=$((FAILED + 1)); }
if [[ -x $CARRY/test_nccl_gpu ]]; then
  echo "== NCCL backend on one GPU (tests/parallel/test_nccl_gpu.cpp)"
  timeout 180 "$CARRY/test_nccl_gpu" || { echo "FAIL: test_nccl_gpu"; FAILED=$((FAILED + 1)); }
fi
# Ours beside the raw NCCL calls (ncclAllReduce etc. on a communicator and stream of their own).
# One GPU is a 1-rank communicator, where the bus factor of every op but broadcast is 0, so busbw
# reads 0: time_us and raw_time_us are the figures (ratio is raw time / ours). Under mpirun where
# there is one; without Open MPI (this machine) it runs as one process, and the local world group
# bootstraps NCCL.
echo "== bench comm, NCCL, 1 rank: ours and raw NCCL"
LAUNCH=""
command -v mpirun >/dev/null 2>&1 && LAUNCH="mpirun -np 1"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 180 $LAUNCH "$BIN" bench comm --backend nccl \
  --min-bytes 1M --max-bytes 256M | tee "$OUT/bench_comm_nccl.jsonl" || { echo "FAIL: bench comm nccl"; FAILED=$((FAILED + 1)); }
echo "== summary: $FAILED failed"
exit $FAILED
