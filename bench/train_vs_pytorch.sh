#!/usr/bin/env bash
# bench/train_vs_pytorch.sh --config FILE [--threads 1,2] [--steps N] [--warmup W] [--repeats R]
#                           [--json OUT] [--set key=value ...]
# Training tokens/s of build/bin/shoestring against PyTorch eager, same machine, model, data and
# thread count (bench/train_vs_pytorch.py says how). Runs with the Python torch that launch/setup
# unpacked beside the LibTorch that build/ uses (its env.sh), so both sides are one torch build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
build=${SHOESTRING_BUILD_DIR:-$root/build}
die() { printf 'bench/train_vs_pytorch.sh: %s\n' "$1" >&2 && exit 1; }

[[ -x $build/bin/shoestring ]] || die "no $build/bin/shoestring: run launch/setup first"
torch_dir=$(sed -n 's/^Torch_DIR:[A-Z]*=//p' "$build/CMakeCache.txt")
env=${SHOESTRING_PYTHON_ENV:-$(realpath -m "$torch_dir/../../../..")/env.sh}
[[ -f $env ]] || die "no $env: launch/setup writes it beside the torch it unpacks (or set SHOESTRING_PYTHON_ENV)"
# shellcheck disable=SC1090
source "$env"
exec "${SHOESTRING_PYTHON:-python3}" "$root/bench/train_vs_pytorch.py" --binary "$build/bin/shoestring" "$@"
