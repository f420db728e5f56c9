#!/usr/bin/env bash
# Model checking of rthread-core's lock, RLock and one-shot event under loom
# (crates/rthread-core/tests/loom.rs; see crates/rthread-core/src/sync.rs for the cfg(loom) switch).
#
#   scripts/loom.sh short   every model at preemption bound 2 (for `make test`: seconds, plus the build)
#   scripts/loom.sh long    every model at bound 4, then bound 5 on all but the largest models
#                           (for `make torture`: bound 4 took 37 minutes on the shared 2-core
#                           machine, 24 million interleavings; bound 5 about 5 more)
#
# A bound b explores every interleaving with at most b preemptions, a superset of bound b-1's.
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

# The models left out of `long`'s bound-5 pass (three or more threads each, or the watchdog's
# cancel model; at bound 4 they explore 0.1 to 2.3 million interleavings, up to 8 minutes
# apiece; the cancel model is the 2.3 million one, and at bound 5 it alone explored 21.8 million
# in 30 minutes, without a failure: `LOOM_MAX_PREEMPTIONS=5 scripts/loom.sh short
# lock_cancel_wakes_sleeper` runs it).
LONG_BOUND5_SKIP=(--skip event_set_wakes_every_waiter --skip lock_exclusion_three_threads
  --skip lock_no_lost_wakeup_two_waiters --skip rlock_owner_and_count
  --skip lock_cancel_wakes_sleeper)

start=$(date +%s)
echo "== loom: building (RUSTFLAGS=$RUSTFLAGS, target dir $CARGO_TARGET_DIR)"
cargo test -q -p rthread-core --release --test loom --no-run
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

run() { # run BOUND [test-binary args...]
  local bound=$1
  shift
  echo "== loom: preemption bound $bound${*:+ ($*)}"
  local t0
  t0=$(date +%s)
  one "$bound" "$@" "${EXTRA[@]}"
  echo "   bound $bound done in $(($(date +%s) - t0)) s"
}

EXTRA=("$@")
case $mode in
  short) run "${LOOM_MAX_PREEMPTIONS:-2}" ;;
  long)
    run 4
    run 5 "${LONG_BOUND5_SKIP[@]}"
    ;;
  *) echo "usage: scripts/loom.sh short|long [test-binary args]" >&2; exit 2 ;;
esac

# (`|| true`: with a test filter, a count may match nothing, which is no failure under pipefail.)
total=$( (grep -oE 'loom model [^:]+: [0-9]+ interleavings' "$log" || true) | awk '{s += $(NF-1)} END {print s+0}')
models=$( (grep -oE 'loom model [^:]+: [0-9]+ interleavings' "$log" || true) | wc -l)
mutants=$( (grep -oE 'loom mutation .* caught after' "$log" || true) | wc -l)
echo "== loom $mode: $models model runs, $total interleavings explored in all, $mutants mutants caught, $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ "$status" -ne 0 ]; then
  echo "loom $mode: FAILED (cargo test exit status $status)" >&2
  exit "$status"
fi
