#!/usr/bin/env bash
# Model checking of rthread-core's lock, RLock and one-shot event under loom
# (crates/rthread-core/tests/loom.rs; see crates/rthread-core/src/sync.rs for the cfg(loom) switch).
#
#   scripts/loom.sh short   every model at preemption bound 2 (for `make test`; seconds, plus the build)
#   scripts/loom.sh long    every model at bound 3, then bound 4 on the models that finish there in
#                           minutes (for `make torture`)
#
# LOOM_MAX_PREEMPTIONS overrides the bound of `short`. Extra arguments go to the test binary
# (e.g. a test name filter). Prints, per model, the interleavings loom explored, and the total.
# Release mode with debug assertions and overflow checks on (the lock's debug_asserts are checked
# too), without the workspace's fat LTO, which only costs build time here. A separate target
# directory keeps the --cfg loom build from invalidating the normal one.
set -euo pipefail
mode=${1:-short}
shift || true
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="$top/target/loom"
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true

# The models of `long`'s bound-4 pass: those whose state space stays in minutes there. The
# three-thread models (lock_exclusion_three_threads, lock_no_lost_wakeup_two_waiters,
# event_set_wakes_every_waiter, rlock_*) stop at bound 3.
LONG_BOUND4_FILTERS=(lock_exclusion_two_threads lock_no_lost_wakeup_one_waiter lock_timed_acquire
  lock_release lock_try_acquire lock_gated lock_interrupted_wait event_timed_wait mutation_)

start=$(date +%s)
echo "== loom: building (RUSTFLAGS=$RUSTFLAGS, target dir $CARGO_TARGET_DIR)"
cargo test -q -p rthread-core --release --test loom --no-run 2>&1 | grep -v '^\s*Executable' || true
built=$(date +%s)
echo "   built in $((built - start)) s"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
one() { # one BOUND [test-binary args...]: one test run, its output shown and logged
  local bound=$1
  shift
  set +e
  LOOM_MAX_PREEMPTIONS=$bound cargo test -q -p rthread-core --release --test loom -- \
    --nocapture --test-threads 2 "$@" 2>&1 | tee -a "$log" |
    grep --line-buffered -oE '(loom (model|mutation) .*|^  .*|^test result.*|^failures.*|.*panicked.*)'
  local st=${PIPESTATUS[0]}
  set -e
  [ "$st" -eq 0 ] || status=$st
}

run() { # run BOUND [filter...]
  local bound=$1
  shift
  echo "== loom: preemption bound $bound${*:+ (models: $*)}"
  local t0
  t0=$(date +%s)
  if [ $# -eq 0 ]; then
    one "$bound" "${EXTRA[@]}"
  else
    for f in "$@"; do one "$bound" "$f" "${EXTRA[@]}"; done
  fi
  echo "   bound $bound done in $(($(date +%s) - t0)) s"
}

EXTRA=("$@")
case $mode in
  short) run "${LOOM_MAX_PREEMPTIONS:-2}" ;;
  long)
    run 3
    run 4 "${LONG_BOUND4_FILTERS[@]}"
    ;;
  *) echo "usage: scripts/loom.sh short|long [test-binary args]" >&2; exit 2 ;;
esac

total=$(grep -oE 'loom model [^:]+: [0-9]+ interleavings' "$log" | awk '{s += $(NF-1)} END {print s+0}')
models=$(grep -oE 'loom model [^:]+: [0-9]+ interleavings' "$log" | wc -l)
mutants=$(grep -oE 'loom mutation .* caught after' "$log" | wc -l)
echo "== loom $mode: $models model runs, $total interleavings explored in all, $mutants mutants caught, $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ "$status" -ne 0 ]; then
  echo "loom $mode: FAILED (cargo test exit status $status)" >&2
  exit "$status"
fi
