# shellcheck shell=bash disable=SC2034
# Shared by the launch scripts (sourced, not run): where things are, timing, errors.

# The repository root, from this file's own path, so that every script works from any cwd.
SHOESTRING_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SHOESTRING_BUILD_DIR=$SHOESTRING_ROOT/build
SHOESTRING_BIN=$SHOESTRING_BUILD_DIR/bin/shoestring
# shellcheck source=launch/versions.sh
source "$SHOESTRING_ROOT/launch/versions.sh"

# The program name used in messages; each script sets SS_PROG before sourcing this file.
: "${SS_PROG:=launch}"

# ss_die MESSAGE [STATUS]: one line on stderr, then exit (status 1 unless given).
ss_die() {
  printf '%s: %s\n' "$SS_PROG" "$1" >&2
  exit "${2:-1}"
}

ss_note() { printf '%s: %s\n' "${SS_PROG#launch/}" "$*"; }

# ss_now: microseconds since the epoch (EPOCHREALTIME, whatever the locale's decimal separator).
ss_now() { printf '%s' "${EPOCHREALTIME//[!0-9]/}"; }

# ss_secs START [END]: elapsed seconds with one decimal, e.g. "12.3s".
ss_secs() {
  local end=${2:-$(ss_now)}
  local tenths=$(((end - $1 + 50000) / 100000))
  printf '%d.%ds' $((tenths / 10)) $((tenths % 10))
}

# Paths removed when the script exits, however it exits.
SS_CLEANUP=()
ss_cleanup() { ((${#SS_CLEANUP[@]} == 0)) || rm -rf -- "${SS_CLEANUP[@]}"; }
trap ss_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
