#!/usr/bin/env bash
# End-to-end training on one GPU (issue 12): small-moe in bf16 and fp8 with tokens/s, MFU and
# peak memory; PyTorch eager (tests/reference/model_ref.py on this machine's torch, autocast bf16)
# on the same model and data in the same run; fp8 against bf16 loss curves of one short run.
#
#   OUT=/tmp/out BIN=.carry/gpu-run/shoestring bench/gpu/train_e2e.sh
#
# Called by bench/gpu/run.sh, whose BIN is a wrapper that finds the carried libraries. Steps:
#   1. bench/train_vs_pytorch.py --device cuda, bf16: ours (`bench train --gpu`) then PyTorch eager;
#      ours' line doubles as the bf16 bench (bench_bf16.json).
#   2. `bench train` in fp8 (bench_fp8.json).
#   3. `train` for up to CURVE_STEPS steps in bf16 and in fp8 (at once), same seed and synthetic data, a reduced
#      batch and a validation loss every 100 steps on a fixed set (CURVE_SETS); metrics to
#      curve_{bf16,fp8}.jsonl; bench/gpu/e2e_summary.py compares the last 200 steps both runs
#      finished, mean against mean and paired step by step with a standard error, and the last
#      validation loss both reached (a run cut by its timeout still counts up to where it got:
#      metrics.jsonl is flushed every step).
# Every step has a timeout; the defaults keep the whole script under 4.5 minutes (265 s of
# timeouts, the two curves running at once for 115 s: on an H100 on 2026-11-26 one curve alone ran
# 289 bf16 or 161 fp8 steps in 60 s, and the loss only starts to fall after ~100 steps). For a
# CPU check of the logic: DEVICE=cpu CONFIG=configs/tiny-moe.yaml CURVE_STEPS=30 CURVE_SETS=""
# GPU= (see docs/performance.md).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-/tmp/out}
BIN=${BIN:-$ROOT/.carry/gpu-run/shoestring}
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-configs/small-moe.yaml}
PY=${PYTHON:-python3}                 # with torch (CUDA on the GPU machine)
GPU=${GPU-h100}                        # the planner's table name for the peak (MFU); empty: no MFU
BENCH_STEPS=${BENCH_STEPS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-3}
CURVE_STEPS=${CURVE_STEPS:-5000}  # the timeout ends them first
CURVE_SETS=${CURVE_SETS-train.micro_batch_size=4 train.seq_len=512 optim.warmup_steps=50 train.threads=8 data.eval_interval=100 data.eval_batches=16}
T_PEER=${T_PEER:-95} T_BENCH=${T_BENCH:-55} T_CURVE=${T_CURVE:-115}
PARTS=" ${E2E_PARTS:-peer bench curves} "  # a subset reruns part of the check
CURVE_PARALLEL=${CURVE_PARALLEL:-1}      # both curves at once on the one GPU (same wall time for both); 0: one after the other
mkdir -p "$OUT"
LOG=$OUT/train_e2e.log
exec > >(tee -a "$LOG") 2>&1
cd "$ROOT" || exit 1
date -u +%FT%TZ
# Synthetic data on both sides (the GPU machine holds no corpus); no checkpoints: only compute is timed.
COMMON=(--set data.source=synthetic --set checkpoint.interval=0 --set train.device="$DEVICE")
GPU_ARG=()
[[ -n $GPU ]] && GPU_ARG=(--gpu "$GPU")
FAILED=0
fail() { echo "FAIL: $1"; FAILED=$((FAILED + 1)); }

rm -f "$OUT/bench_bf16.json" "$OUT/bench_fp8.json"
if [[ $PARTS == *" peer "* ]]; then
echo "== 1. ours vs PyTorch eager, bf16, $CONFIG on $DEVICE"
if timeout "$T_PEER" "$PY" bench/train_vs_pytorch.py --binary "$BIN" --config "$CONFIG" --device "$DEVICE" \
    --threads "${THREADS:-16}" --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" --repeats 1 \
    --ours-args "${GPU_ARG[*]}" --set train.precision=bf16 --set checkpoint.interval=0 \
    --json "$OUT/peer_bf16.json" >/dev/null; then
  "$PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["results"][0]["shoestring_bench"]))' \
    "$OUT/peer_bf16.json" > "$OUT/bench_bf16.json"
elif [[ $? -eq 124 ]]; then
  fail "PyTorch peer (bench/train_vs_pytorch.py): stopped by its ${T_PEER}s timeout"
else  # a quick failure (most likely the Python side): ours alone, so the bf16 figures still come
  fail "PyTorch peer (bench/train_vs_pytorch.py)"
  echo "== 1b. ours alone, bf16"
  timeout "$T_BENCH" "$BIN" bench train --config "$CONFIG" "${COMMON[@]}" --set train.precision=bf16 "${GPU_ARG[@]}" \
    --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" --json "$OUT/bench_bf16.json" || fail "bench train bf16"
fi
fi

if [[ $PARTS == *" bench "* ]]; then
echo "== 2. bench train fp8, $CONFIG on $DEVICE"
timeout "$T_BENCH" "$BIN" bench train --config "$CONFIG" "${COMMON[@]}" --set train.precision=fp8 "${GPU_ARG[@]}" \
  --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" --json "$OUT/bench_fp8.json" || fail "bench train fp8"
fi

SETS=()
for s in $CURVE_SETS; do SETS+=(--set "$s"); done
curve() {  # curve PRECISION: one loss-curve run; its metrics land in $OUT/curve_PRECISION.jsonl
  local p=$1 rc
  rm -rf "/tmp/e2e-curve-$p"
  # KILL, not TERM: a stopped trainer saves a checkpoint first (GBs for small-moe, and that once
  # outlasted the caller's limit, losing both curves); metrics.jsonl is flushed every step anyway.
  timeout --signal=KILL "$T_CURVE" "$BIN" train --config "$CONFIG" "${COMMON[@]}" --set train.precision=$p "${SETS[@]}" \
    --set train.steps="$CURVE_STEPS" --set log.every=50 --set log.run_dir="/tmp/e2e-curve-$p" >"/tmp/e2e-curve-$p.log" 2>&1
  rc=$?
  cat "/tmp/e2e-curve-$p.log"
  [[ $rc -eq 137 ]] && echo "   ($p stopped by its ${T_CURVE}s timeout; compared up to the last step it finished)"
  [[ $rc -ne 0 && $rc -ne 137 ]] && echo "FAIL: curve $p (exit $rc)"
  cp "/tmp/e2e-curve-$p/metrics.jsonl" "$OUT/curve_$p.jsonl" 2>/dev/null || echo "FAIL: curve $p: no metrics.jsonl"
}
if [[ $PARTS == *" curves "* ]]; then
  echo "== 3. loss curves bf16 and fp8: $CURVE_STEPS steps, ${CURVE_SETS:-the config batch}$([[ $CURVE_PARALLEL == 1 ]] && echo ", both at once")"
  rm -f /tmp/e2e-curves-*.out
  if [[ $CURVE_PARALLEL == 1 ]]; then
    curve bf16 >/tmp/e2e-curves-bf16.out &
    bf16_pid=$!
    curve fp8 >/tmp/e2e-curves-fp8.out
    wait "$bf16_pid"  # not a bare wait: that would also wait for the log's tee
  else
    curve bf16 >/tmp/e2e-curves-bf16.out; curve fp8 >/tmp/e2e-curves-fp8.out
  fi
  cat /tmp/e2e-curves-bf16.out /tmp/e2e-curves-fp8.out
  FAILED=$((FAILED + $(cat /tmp/e2e-curves-*.out | grep -c "^FAIL")))
fi

echo "== summary ($DEVICE, $CONFIG)"
"$PY" bench/gpu/e2e_summary.py --out "$OUT" || fail "summary"
echo "== $FAILED failed"
exit $FAILED
