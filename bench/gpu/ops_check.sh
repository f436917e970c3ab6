#!/usr/bin/env bash
# GPU bring-up check for ops/ (issue 9): build the FP8 kernels against the machine's own LibTorch,
# run the unit + gpu tests, the FP8 bench and compute-sanitizer memcheck, and keep every log in
# ${OUT:-/tmp/out}. Meant for a bare GPU machine with python3 + torch (CUDA), nvcc, cmake, ninja and
# compute-sanitizer, but no googletest and no network: GoogleTest sources are expected at
# .carry/googletest (a copy of /usr/src/googletest) and are built and installed into the build dir.
#
# Overrides (environment): SHOESTRING_TORCH_PREFIX (LibTorch's share/cmake), SHOESTRING_BUILD_DIR,
# SHOESTRING_GTEST_SRC, SHOESTRING_CUDA_ARCHS (default 90a), JOBS (default 16), SKIP_RUN=1 (configure
# and build only: for checking the script on a machine without a GPU).
# Target: under ~6 minutes on 16 cores. Exit status: number of failed steps.
set -uo pipefail
export PATH="$PATH:${CUDA_HOME:-/usr/local/cuda}/bin"  # compute-sanitizer, cuobjdump

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-/tmp/out}
BUILD=${SHOESTRING_BUILD_DIR:-$ROOT/build-gpu}
GTEST_SRC=${SHOESTRING_GTEST_SRC:-$ROOT/.carry/googletest}
ARCHS=${SHOESTRING_CUDA_ARCHS:-90a}
JOBS=${JOBS:-16}
mkdir -p "$OUT" "$BUILD"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
FAILED=0
START=$(date +%s)

log() { echo "[ops_check +$(($(date +%s) - START))s] $*" | tee -a "$SUMMARY"; }
# step NAME TIMEOUT_S LOGFILE CMD...: runs CMD with a timeout, logs its output, records pass/fail.
step() {
  local name=$1 limit=$2 logf=$3
  shift 3
  log "start $name"
  timeout --signal=KILL "$limit" "$@" >"$OUT/$logf" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then log "ok    $name"; else log "FAIL  $name (rc=$rc, log $logf)"; FAILED=$((FAILED + 1)); fi
  return $rc
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname)  cores: $(nproc)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: unavailable"
  nvcc --version 2>&1 | tail -1
  cmake --version | head -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "git: no commit"
} >"$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt" >>"$SUMMARY"

TORCH_PREFIX=${SHOESTRING_TORCH_PREFIX:-$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null)}
if [ -z "$TORCH_PREFIX" ]; then log "FAIL  cannot find LibTorch (python3 -c 'import torch' failed; set SHOESTRING_TORCH_PREFIX)"; exit 1; fi
log "LibTorch cmake prefix: $TORCH_PREFIX"

# GoogleTest from source (the GPU machine has none installed); installed into the build dir and
# found by the project's find_package(GTest) through CMAKE_PREFIX_PATH.
PREFIX_PATH="$TORCH_PREFIX"
if [ -d "$GTEST_SRC" ]; then
  GTEST_PREFIX=$BUILD/_gtest
  if [ ! -f "$GTEST_PREFIX/lib/cmake/GTest/GTestConfig.cmake" ] && [ ! -f "$GTEST_PREFIX/lib64/cmake/GTest/GTestConfig.cmake" ]; then
    step googletest 300 googletest.log bash -c "cmake -S '$GTEST_SRC' -B '$BUILD/_gtest_build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX='$GTEST_PREFIX' -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
      && cmake --build '$BUILD/_gtest_build' -j $JOBS && cmake --install '$BUILD/_gtest_build'" || exit 1
  fi
  PREFIX_PATH="$TORCH_PREFIX;$GTEST_PREFIX"
else
  log "no GoogleTest sources at $GTEST_SRC: relying on an installed GoogleTest"
fi

# CMake < 3.26 does not know nvcc's C++20 flag ("CUDA20 ... does not support this"); tell it.
RULES=$BUILD/_cuda20_rules.cmake
printf 'set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")\nset(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")\n' >"$RULES"

step configure 300 configure.log cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSHOESTRING_OPS_ONLY=ON -DSHOESTRING_CUDA=ON -DSHOESTRING_CUDA_ARCHS="$ARCHS" \
  -DCMAKE_PREFIX_PATH="$PREFIX_PATH" -DCMAKE_USER_MAKE_RULES_OVERRIDE_CUDA="$RULES" || { log "summary: configure failed"; exit 1; }
step build 900 build.log cmake --build "$BUILD" -j "$JOBS" || { log "summary: build failed"; exit 1; }

if [ "${SKIP_RUN:-0}" = 1 ]; then log "SKIP_RUN=1: built, not running"; exit "$FAILED"; fi

# Register / spill report of our kernels (cuobjdump needs no GPU).
cuobjdump --dump-resource-usage "$BUILD/ops/libshoestring_ops.a" >"$OUT/resource_usage.txt" 2>&1 || true
step unit-tests 120 ctest-unit.log ctest --test-dir "$BUILD" -L unit --output-on-failure
# The gpu test binary itself (not via ctest) so its [measured] lines and skips are in the log; a
# skip here means the machine has no usable GPU, which counts as a failure of this check.
step gpu-tests 300 test_fp8_gpu.log "$BUILD/tests/test_fp8_gpu"
if grep -q "SKIPPED" "$OUT/test_fp8_gpu.log"; then log "FAIL  gpu tests skipped: $(grep -m1 -o 'no GPU.*' "$OUT/test_fp8_gpu.log")"; FAILED=$((FAILED + 1)); fi
grep "\[measured\]" "$OUT/test_fp8_gpu.log" >>"$SUMMARY"
step bench 300 bench_fp8.txt "$BUILD/bin/shoestring_ops_bench" ${BENCH_FLAGS:-} --json "$OUT/bench_fp8.json"
cat "$OUT/bench_fp8.txt" >>"$SUMMARY"
step memcheck 300 memcheck.log compute-sanitizer --tool memcheck --error-exitcode 3 "$BUILD/tests/test_fp8_gpu"
grep -E "ERROR SUMMARY" "$OUT/memcheck.log" >>"$SUMMARY"

log "summary: $FAILED failed step(s); logs in $OUT"
exit "$FAILED"
