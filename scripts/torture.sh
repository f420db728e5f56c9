#!/usr/bin/env bash
# The long tier of the reliability tests (`make torture`): minutes to hours.
#   1. loom: every interleaving of the core lock, RLock and event up to a higher preemption
#      bound than `make test` uses (scripts/loom.sh long);
#   2. sanitizers: AddressSanitizer (and ThreadSanitizer where it runs) on the core crate's
#      tests, valgrind memcheck on more of the extension's tests (scripts/sanitizers.sh long);
#   3. per interpreter: fork / signal / exit / 64-thread storms and the leak checks at their
#      long sizes (RTHREAD_TORTURE=long), differential fuzzing (100 000 steps), figures printed
#      as each test ends (pytest -s), then CPython's own
#      test_threading, test_queue and test_thread with lock-order checking set to raise (no
#      false report may fail them); host interpreters first, then CPython 3.14 and 3.15 in the
#      sid chroot when this runs as root.
# Every step prints its figures; the summary at the end lists what failed.
# Options: TORTURE_STEPS="loom sanitizers python sid" to run a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
steps=${TORTURE_STEPS:-"loom sanitizers python sid"}
failed=""
# Storms and leaks before the (longest) fuzzing, so a run cut short still has their figures.
files="tests/test_storms.py tests/test_leaks.py tests/test_fuzz.py"
log=target/torture; mkdir -p "$log"

run() {  # run NAME CMD...: runs a step, tees its output to target/torture/NAME.log
  local name=$1; shift
  echo "== torture: $name"
  local t0=$SECONDS
  if "$@" 2>&1 | tee "$log/$name.log"; then
    echo "== torture: $name passed in $((SECONDS - t0)) s"
  else
    echo "== torture: $name FAILED after $((SECONDS - t0)) s"
    failed="$failed $name"
  fi
}

# Started in the background by a shell without job control, Python inherits SIGINT ignored;
# then interrupt_main() does nothing and test_threading's test that stops a runaway recursion
# with it never ends (seen on 3.12). Run CPython's tests with SIGINT at its default.
sigint_default='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable] + sys.argv[1:])'

python_tier() {  # python_tier VERSION PYTHON
  scripts/install.sh "$1" "$2" &&
    RTHREAD_TORTURE=long ".venv/$1/bin/python" -m pytest -q -s -rA -p no:cacheprovider $files &&
    RTHREAD=1 RTHREAD_LOCKDEP=raise ".venv/$1/bin/python" -c "$sigint_default" -m test -j2 test_threading test_queue test_thread
}

for step in $steps; do
  case $step in
    loom) run loom scripts/loom.sh long ;;
    sanitizers) run sanitizers scripts/sanitizers.sh long ;;
    python)
      while read -r v p; do
        [ -n "$v" ] && run "python$v" python_tier "$v" "$p"
      done <<< "$(RTHREAD_PYTHONS="${RTHREAD_PYTHONS:-3.9 3.10 3.11 3.12 3.13}" scripts/pythons.sh)"
      ;;
    sid)
      if [ "$(id -u)" -ne 0 ]; then
        echo "== torture: sid skipped (needs root for the chroot)"; failed="$failed sid(not-root)"
        continue
      fi
      scripts/sid.sh setup || { failed="$failed sid-setup"; continue; }
      for v in 3.14 3.15; do
        run "sid-python$v" scripts/sid.sh run env TORTURE_STEPS=python RTHREAD_PYTHONS=$v scripts/torture.sh
      done
      ;;
    *) echo "unknown torture step: $step" >&2; failed="$failed $step" ;;
  esac
done
if [ -n "$failed" ]; then
  echo "torture: FAILED:$failed (logs in $log/)" >&2
  exit 1
fi
echo "torture: every step passed (logs in $log/)"
