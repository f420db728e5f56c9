#!/usr/bin/env bash
# The sanitizer tier of rthread's torture suite.
#
#   scripts/sanitizers.sh short   AddressSanitizer (+ LeakSanitizer) on rthread-core's tests, and
#                                 valgrind memcheck on a short pytest run of the extension on the
#                                 default interpreter (scripts/default-python.sh). For `make test`.
#   scripts/sanitizers.sh long    AddressSanitizer, ThreadSanitizer (std rebuilt with it:
#                                 -Zbuild-std, needs rust-src), and memcheck on more test files on
#                                 every interpreter found (3.9-3.13 here) and on 3.14/3.15 in the
#                                 Debian sid chroot (scripts/sid.sh; root). For `make torture`.
#
# Steps on their own: asan | tsan | memcheck VERSION PYTHON [TEST_FILE...] |
#                     memcheck-sid VERSION [TEST_FILE...]
#
# The sanitizers need nightly flags: the stable toolchain takes them with RUSTC_BOOTSTRAP=1.
# Each builds in its own target dir (target/asan, target/tsan) for the host triple, given
# explicitly so that build scripts and proc macros are not instrumented. Before each sanitizer
# run, a canary (crates/rthread-core/tests/sanitizer_canary.rs) must be reported by it: a
# sanitizer that is silently not there fails the tier instead of passing it.
#
# memcheck runs pytest under `valgrind --tool=memcheck --leak-check=full` with
# PYTHONMALLOC=malloc (so every Python object is a malloc block valgrind sees) and hands the
# XML to scripts/valgrind_check.py, which fails on any error, or definitely-lost block,
# attributed to rthread (a frame of the extension before any Python evaluation frame; see
# there) and prints the totals. valgrind is installed with apt-get when missing (root).
#
# Environment: RTHREAD_PYTHONS restricts the interpreters (as for make test);
# RTHREAD_SAN_SID=0 leaves out the sid chroot in `long`; RTHREAD_SAN_TSAN=require makes a
# ThreadSanitizer that cannot run a failure instead of a reported skip.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# pytest files for memcheck: the short set fits in about two minutes under valgrind on one
# interpreter; the long set adds the rest of the behaviour suites (not the ones that time
# things, run thousands of subprocesses, or benchmark).
SHORT_FILES=(tests/test_threads.py tests/test_parity_lock.py)
LONG_FILES=(tests/test_threads.py tests/test_parity_lock.py tests/test_local.py
  tests/test_parity_module.py tests/test_names.py tests/test_excepthook.py tests/test_debug.py)
SID_VERSIONS=(3.14 3.15)

die() { echo "scripts/sanitizers.sh: $*" >&2; exit 1; }
host_triple() { rustc -vV | sed -n 's/^host: //p'; }
now() { date +%s; }

summary=()
note() { summary+=("$*"); echo "== $*"; }

# Runs the core crate's tests under sanitizer $1 (address|thread) with extra cargo args.
core_tests() {
  local san=$1 dir=$2; shift 2
  local triple; triple=$(host_triple)
  local -a env=(RUSTC_BOOTSTRAP=1 "RUSTFLAGS=-Zsanitizer=$san" "RUSTDOCFLAGS=-Zsanitizer=$san"
    "CARGO_TARGET_DIR=$top/target/$dir")
  local canary_log=$top/target/$dir-canary.log
  mkdir -p "$top/target"
  # The canary first: it must fail, with the sanitizer's report.
  local -a canaries=(address_canary_use_after_free address_canary_leak)
  local -a patterns=("AddressSanitizer: heap-use-after-free" "LeakSanitizer: detected memory leaks")
  if [ "$san" = thread ]; then
    canaries=(thread_canary_data_race); patterns=("ThreadSanitizer: data race")
  fi
  local i
  for i in "${!canaries[@]}"; do
    if env "${env[@]}" RTHREAD_SAN_CANARY="$san" cargo test "$@" -p rthread-core \
        --target "$triple" --test sanitizer_canary -- --ignored --exact "${canaries[$i]}" \
        >"$canary_log" 2>&1; then
      tail -n 30 "$canary_log" >&2
      die "$san sanitizer: canary ${canaries[$i]} passed: the sanitizer is not in the build"
    fi
    grep -q "${patterns[$i]}" "$canary_log" || {
      tail -n 30 "$canary_log" >&2
      die "$san sanitizer: canary ${canaries[$i]} failed without '${patterns[$i]}' (log above)"
    }
    echo "   canary ${canaries[$i]}: reported (${patterns[$i]})"
  done
  env "${env[@]}" cargo test "$@" --no-fail-fast -p rthread-core --target "$triple"
}

asan() {
  local t0; t0=$(now)
  echo "== AddressSanitizer: rthread-core tests (target/asan)"
  # LeakSanitizer is part of ASan on Linux; said explicitly so that a default change shows.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} core_tests address asan
  note "AddressSanitizer + LeakSanitizer, rthread-core tests: passed in $(($(now) - t0)) s"
}

tsan() {
  local t0; t0=$(now)
  echo "== ThreadSanitizer: rthread-core tests, std rebuilt with the sanitizer (target/tsan)"
  # Without -Zbuild-std, rustc refuses to link TSan-instrumented crates against the
  # uninstrumented std ("mixing -Zsanitizer will cause an ABI mismatch"); forcing it
  # (-Cunsafe-allow-abi-mismatch) gives false races on every std lock and channel, whose
  # synchronisation TSan cannot see. So std is rebuilt, from the rust-src component.
  local sysroot; sysroot=$(rustc --print sysroot)
  if [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
    echo "   rust-src is not installed: rustup component add rust-src"
    local err
    if ! err=$(rustup component add rust-src 2>&1); then
      local why="ThreadSanitizer: NOT RUN: -Zbuild-std needs the rust-src component, and 'rustup component add rust-src' failed: $(tail -n1 <<< "$err")"
      [ "${RTHREAD_SAN_TSAN:-}" = require ] && die "$why"
      note "$why"
      return 0
    fi
  fi
  # TSan's default is to report and carry on; the test binary then exits 66.
  TSAN_OPTIONS=${TSAN_OPTIONS:-second_deadlock_stack=1} core_tests thread tsan -Zbuild-std
  note "ThreadSanitizer (std rebuilt), rthread-core tests: passed in $(($(now) - t0)) s"
}

need_valgrind() {
  command -v valgrind >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "valgrind is not installed and this is not root: apt-get install valgrind"
  echo "== installing valgrind (apt-get)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2
  command -v valgrind >/dev/null || die "apt-get did not install valgrind"
}

# memcheck VERSION PYTHON [FILES...]: build and install for that interpreter, run pytest on the
# files under memcheck, check the XML.
memcheck() {
  local version=$1 python=$2; shift 2
  local -a files=("$@")
  [ ${#files[@]} -gt 0 ] || files=("${SHORT_FILES[@]}")
  need_valgrind
  local t0; t0=$(now)
  echo "== memcheck, Python $version: build"
  # (Called with `|| ...`, where set -e does not apply: each step checks its own status.)
  scripts/install.sh "$version" "$python" || {
    note "memcheck Python $version: FAILED: scripts/install.sh did not build it"; return 1; }
  local out=$top/target/valgrind/$version
  rm -rf "$out"; mkdir -p "$out"
  echo "== memcheck, Python $version ($(valgrind --version)): pytest ${files[*]}"
  local t1 rc=0; t1=$(now)
  # --num-callers: deep enough that a stack reaches rthread or a Python eval frame.
  # The pytest timeout is raised: everything runs 20-50 times slower, on one thread at a time.
  PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --num-callers=60 \
    --xml=yes --xml-file="$out/memcheck.xml" --log-file="$out/valgrind.log" \
    ".venv/$version/bin/python" -m pytest -q -p no:cacheprovider -o timeout=900 "${files[@]}" \
    || rc=$?
  local secs=$(($(now) - t1))
  if [ "$rc" != 0 ]; then
    tail -n 20 "$out/valgrind.log" >&2
    note "memcheck Python $version: FAILED: pytest under valgrind exited $rc (log: $out/valgrind.log)"
    return 1
  fi
  local line crc=0
  line=$(".venv/$version/bin/python" scripts/valgrind_check.py --label "Python $version" \
    "$out/memcheck.xml") || crc=$?
  echo "$line"
  note "memcheck Python $version, ${#files[@]} test files: pytest under valgrind ${secs} s (with build $(($(now) - t0)) s): $(head -n1 <<< "$line" | sed 's/^valgrind Python [^:]*: //')"
  if [ "$crc" != 0 ]; then
    echo "memcheck, Python $version: errors or definite leaks attributed to rthread (XML: $out/memcheck.xml)" >&2
    return 1
  fi
}

# memcheck-sid VERSION [FILES...]: the same inside the sid chroot, for 3.14/3.15.
memcheck_sid() {
  local version=$1; shift
  scripts/sid.sh setup
  # The chroot is made without valgrind: installed there on first use (kept in the cache).
  scripts/sid.sh run bash -c 'command -v valgrind >/dev/null || {
      echo "== installing valgrind in the sid chroot (apt-get)" >&2
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2; }'
  scripts/sid.sh run scripts/sanitizers.sh memcheck "$version" "/usr/bin/python$version" "$@"
}

print_summary() {
  echo
  echo "== sanitizers $1: summary"
  printf '   %s\n' "${summary[@]}"
}

case "${1:-}" in
  short)
    t0=$(now)
    asan
    set -- $(scripts/default-python.sh)
    failed=0
    memcheck "$1" "$2" "${SHORT_FILES[@]}" || failed=1
    note "short tier: $(($(now) - t0)) s"
    print_summary short
    exit "$failed"
    ;;
  long)
    t0=$(now)
    asan
    tsan
    failed=""
    found=$(scripts/pythons.sh)
    while read -r v p; do
      [ -n "$v" ] || continue
      memcheck "$v" "$p" "${LONG_FILES[@]}" || failed="$failed $v"
    done <<< "$found"
    if [ "${RTHREAD_SAN_SID:-1}" != 0 ]; then
      [ "$(id -u)" = 0 ] || die "the sid chroot (3.14, 3.15) needs root; RTHREAD_SAN_SID=0 leaves it out"
      wanted=" ${RTHREAD_PYTHONS:-${SID_VERSIONS[*]}} "
      for v in "${SID_VERSIONS[@]}"; do
        [[ $wanted == *" $v "* ]] || continue
        # A version already found on the host was run above.
        if awk -v v="$v" '$1==v {f=1} END {exit !f}' <<< "$found"; then continue; fi
        # It runs in the chroot, whose summary lines are printed there: collect them here.
        log=$top/target/valgrind/sid-$v.log
        mkdir -p "$(dirname "$log")"
        memcheck_sid "$v" "${LONG_FILES[@]}" 2>&1 | tee "$log" || failed="$failed $v"
        line=$(sed -n 's/^== \(memcheck Python .*\)$/\1/p' "$log" | tail -n1)
        summary+=("${line:-memcheck Python $v: no result (log: $log)} (sid chroot)")
      done
    else
      note "memcheck in the sid chroot (3.14, 3.15): left out (RTHREAD_SAN_SID=0)"
    fi
    note "long tier: $(($(now) - t0)) s"
    [ -z "$failed" ] || note "memcheck FAILED on:$failed"
    print_summary long
    [ -z "$failed" ]
    ;;
  asan) asan ;;
  tsan) tsan ;;
  memcheck) shift; [ $# -ge 2 ] || die "usage: memcheck VERSION PYTHON [FILES...]"; memcheck "$@" ;;
  memcheck-sid) shift; [ $# -ge 1 ] || die "usage: memcheck-sid VERSION [FILES...]"; memcheck_sid "$@" ;;
  *) die "usage: scripts/sanitizers.sh short|long (or: asan | tsan | memcheck VERSION PYTHON [FILES...] | memcheck-sid VERSION [FILES...])" ;;
esac
