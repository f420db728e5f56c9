"""Storms (issue 11): forks, signals, exits and 64-way contention, each run in
fresh interpreters with threading on rthread, each with a pass/fail
criterion and its figures printed (stderr; `pytest -s` or `-rA`) and kept in
the test's user_properties.

Short tier by default (part of `make test`); RTHREAD_TORTURE=long gives the
issue's numbers (`make torture`). The programs are in tests/torture/ and run
on their own too (each says how at the top)."""

import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from storm_util import LONG, report, run, run_json, tier

LONG_TIMEOUT = pytest.mark.timeout(3600 if LONG else 120)


# -- fork storm ---------------------------------------------------------------

@LONG_TIMEOUT
def test_fork_storm(record_property):
    forks = tier(100, 1000)
    figures = run_json("fork_storm.py", forks, 5, timeout=tier(110, 3000))
    report(record_property, "fork_storm", figures)
    # A child still running after its 5 s is a failure ("parent: child N status -1"); the
    # storm found one: a fork that split a new thread's thread-state creation (forkgate.rs).
    # FORK_STORM_GDB=1 prints such a child's stacks.
    assert figures["_status"] == 0 and figures["failed"] == 0, figures["_stderr"]
    assert figures["forks"] == forks
    assert figures["churn_errors"] == []
    # Every child used every lock and a thread, and finished within its 5 s.
    assert figures["child_max_ms"] < 5000
    # The storm did what it says: churners were holding locks at some forks,
    # and started threads all along.
    assert figures["locks_reinit_in_children"] > 0
    assert figures["threads_started_in_parent"] > forks
    assert figures["_stderr"] == ""


# -- signal storm -------------------------------------------------------------

@LONG_TIMEOUT
def test_signal_storm(record_property):
    seconds, rounds = tier((4, 40), (60, 400))
    # The built-in under the same storm at the same time, for comparison: how
    # late waits come back depends on the machine's load, and this tells how
    # much of it is ours.
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            pool.submit(run_json, "signal_storm.py", seconds, rounds, on_rthread=on, timeout=seconds * 4 + 60)
            for on in (True, False)
        ]
        ours, builtin = (r.result() for r in runs)
    report(record_property, "signal_storm", ours)
    report(record_property, "signal_storm_builtin", builtin)
    assert ours["_status"] == 0 and ours["_stderr"] == "", ours["_stderr"]
    assert ours["signals"] > seconds * 200  # the handler really ran, often
    # No wait ends early or with the wrong result, none hangs.
    assert ours["early_count"] == 0, ours["early"]
    assert ours["wrong_result"] == 0
    assert ours["hung_workers"] == 0
    waits = ours["waits_workers"] + ours["waits_main"]
    assert waits > 0
    assert ours["overshoot_workers"]["max_ms"] < 1000 and ours["overshoot_main"]["max_ms"] < 1000
    # Every exception the handler raised reached the main loop, once, in order.
    assert ours["raised"] > 0
    assert ours["caught"] == ours["raised"] and ours["caught_in_order_once"]
    # Ctrl-C: every interrupt ended the wait, promptly (a lost one would take
    # forever; the bound only catches that).
    assert ours["ctrl_c_missed"] == 0
    assert ours["ctrl_c_acquire"]["n"] + ours["ctrl_c_join"]["n"] == rounds
    assert ours["ctrl_c_acquire"]["max_ms"] < 1000 and ours["ctrl_c_join"]["max_ms"] < 1000
    # Deadlines within 10 ms. On a loaded machine some waits of either module
    # come back later than that (the thread was not scheduled), so the share of
    # late ones is compared with the built-in's, run alongside.
    late = ours["late_over_10ms"] / waits
    builtin_waits = builtin["waits_workers"] + builtin["waits_main"]
    builtin_late = builtin["late_over_10ms"] / max(1, builtin_waits)
    assert late <= max(0.01, builtin_late + 0.01), (late, builtin_late)


CTRL_C_DURING_SPIN = r"""
import os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
held = threading.Lock()
held.acquire()
worst = 0.0
for n in range(20):
    go = threading.Event()
    def fire():
        go.wait()  # runs as soon as the main thread lets go of the GIL to wait
        os.kill(os.getpid(), signal.SIGINT)
    killer = threading.Thread(target=fire)
    killer.start()
    t0 = time.monotonic()
    try:
        go.set()
        if n % 2:
            held.acquire(timeout=30)
        else:
            held.acquire()  # no timeout: before the fix, this one never ended
        sys.exit("acquire ended without KeyboardInterrupt")
    except KeyboardInterrupt:
        worst = max(worst, time.monotonic() - t0)
    killer.join()
print(worst)
"""


def test_ctrl_c_landing_while_the_main_thread_spins_is_not_held_back():
    # Regression (found by the signal storm): a SIGINT delivered right after
    # the main thread released the GIL to wait, while it still spun, had its
    # C handler run then and interrupted no system call, so the
    # KeyboardInterrupt only came when the wait ended: after the whole 30 s
    # timeout here, never for acquire() without one.
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_SPIN],
        env={**os.environ, "RTHREAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    worst = float(proc.stdout)
    print(f"worst Ctrl-C latency over 20 rounds: {worst * 1000:.2f} ms", file=sys.stderr)
    assert worst < 5.0


# -- exit storm ---------------------------------------------------------------

# CPython 3.10 itself sometimes dies of SIGSEGV when a daemon thread wakes at
# the very end of exit (see test_finalization.py, measured there on the
# built-in and on rthread alike): tolerated on 3.10 only, as a rare event.
SEGV_SHARE_310 = 0.02 if sys.version_info[:2] == (3, 10) else 0.0


def _exit_once(seed):
    start = time.monotonic()
    try:
        proc = run("exit_storm.py", seed, timeout=60)
    except subprocess.TimeoutExpired as exc:
        return ("hang", seed, str(exc.stderr)[-2000:], 60.0)
    return (proc.returncode, seed, proc.stderr + ("" if "exiting with" in proc.stdout else "[no output]"), time.monotonic() - start)


@LONG_TIMEOUT
def test_exit_storm(record_property):
    runs = tier(40, 1000)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_exit_once, range(runs)))
    segv = [r for r in results if r[0] == -signal.SIGSEGV and not r[2]]
    failures = [r for r in results if (r[0] != 0 or r[2]) and r not in segv]
    durations = sorted(r[3] for r in results)
    figures = {
        "runs": runs,
        "failures": len(failures),
        "sigsegv": len(segv),
        "run_median_s": round(statistics.median(durations), 3),
        "run_max_s": round(durations[-1], 3),
    }
    report(record_property, "exit_storm", figures)
    assert not failures, f"{len(failures)}/{runs} runs failed; first: {failures[0]!r}"
    assert len(segv) <= SEGV_SHARE_310 * runs, f"{len(segv)}/{runs} runs died of SIGSEGV"


# -- contention storm ---------------------------------------------------------

@LONG_TIMEOUT
def test_contention_storm(record_property):
    seconds = tier(4, 60)
    figures = run_json("contention_storm.py", seconds, 64, 4, timeout=seconds + 120)
    report(record_property, "contention_storm", figures)
    assert figures["_status"] == 0 and figures["_stderr"] == "", figures["_stderr"]
    assert figures["two_holders"] == 0, figures["violations"]
    assert figures["early_timeouts"] == 0
    # A free lock with waiters was always taken within the watchdog's bound
    # (2 s): no release with waiters was left without a grant.
    assert figures["stalls"] == []
    assert figures["hung_workers"] == 0 and figures["still_locked"] == []
    # Every kind of operation happened, many times.
    for key in ("acquired", "tries_failed", "timed_out", "handoffs", "self_releases"):
        assert figures[key] > 100, key
