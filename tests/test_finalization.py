"""Daemon threads still inside Python when the interpreter exits must not
crash or hang the exit (until 3.14, CPython ends them with pthread_exit, a
forced unwind through rthread's frames)."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

RUNS = 100

PROGRAM = r"""
import time
import rthread as _thread

held = _thread.allocate_lock()
held.acquire()
rheld = _thread.RLock()
rheld.acquire()  # owned by the main thread until the end
started = []  # list.append is atomic under the GIL

def spin():
    started.append(1)
    while True:
        sum(range(100))

def sleeper():
    started.append(1)
    while True:
        time.sleep(0.001)

def blocked():
    started.append(1)
    held.acquire()

def timed():
    started.append(1)
    while True:
        held.acquire(timeout=0.001)

def rblocked():
    started.append(1)
    rheld.acquire()

for fn in (spin, spin, sleeper, blocked, timed, rblocked):
    _thread.start_new_thread(fn, ())
while len(started) < 6:
    time.sleep(0.001)
print("exiting with daemon threads inside Python")
"""


# The same with threading running on rthread: non-daemon threads are joined at
# exit (their output must appear), daemon ones are left in Python, asleep and
# blocked in acquire.
THREADING_PROGRAM = r"""
import rthread
rthread.install()
import threading, time

held = threading.Lock()
held.acquire()
started = threading.Barrier(5)

def spin():
    started.wait()
    while True:
        sum(range(100))

def sleeper():
    started.wait()
    while True:
        time.sleep(0.001)

def blocked():
    started.wait()
    held.acquire()

def worker():
    started.wait()
    time.sleep(0.05)
    print("non-daemon thread finished", flush=True)

for fn in (spin, sleeper, blocked):
    threading.Thread(target=fn, daemon=True).start()
threading.Thread(target=worker, daemon=False).start()
started.wait()
print("exiting with daemon threads inside Python")
"""


def _run_once(program):
    proc = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


# CPython 3.10 itself crashes (SIGSEGV in take_gil, after Py_FinalizeEx freed
# the interpreter) when a daemon thread wakes at the very end of exit: measured
# here with the same program on the built-in _thread, 7 of 1200 runs; on
# rthread, 6 of 1200. That crash is tolerated on 3.10 only, and only as a rare
# event; an abort, a "Fatal Python error", any output on stderr, a hang or any
# other exit status always fails.
INTERPRETER_SEGV_BUDGET = 5 if sys.version_info[:2] == (3, 10) else 0
SIGSEGV = -11


def _run_many(program):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_run_once, [program] * RUNS))
    segv = [r for r in results if r[0] == SIGSEGV and not r[2]]
    failures = [r for r in results if (r[0] != 0 or r[2]) and r not in segv]
    assert not failures, f"{len(failures)}/{RUNS} runs failed; first: {failures[0]!r}"
    assert len(segv) <= INTERPRETER_SEGV_BUDGET, f"{len(segv)}/{RUNS} runs died of SIGSEGV"
    return [r for r in results if r not in segv]


def test_exit_with_daemon_threads_inside_python():
    results = _run_many(PROGRAM)
    assert all("exiting with daemon threads" in r[1] for r in results)


def test_exit_with_threading_on_rthread_joins_non_daemon_threads():
    results = _run_many(THREADING_PROGRAM)
    # The worker's line proves it was joined before exit; where it stands
    # against the main thread's line depends on scheduling (a main thread
    # delayed for more than the worker's 50 ms prints last).
    missing = [r for r in results if "non-daemon thread finished\n" not in r[1]]
    assert not missing, f"{len(missing)}/{len(results)} runs exited before the worker; first: {missing[0]!r}"


# Threads whose OS thread only begins while the interpreter finalizes: started
# by an atexit callback (still allowed then) and at the very end of the script.
# On 3.14+ such a thread must not enter Python (it would be parked forever, or
# on 3.14 even run during finalization); before, it is ended like any daemon
# thread. Either way the exit is clean.
LATE_START_PROGRAM = r"""
import atexit
import rthread as _thread

def spin():
    while True:
        sum(range(100))

def late():
    try:
        for _ in range(8):
            _thread.start_new_thread(spin, ())
            if hasattr(_thread, "start_joinable_thread"):
                _thread.start_joinable_thread(spin, daemon=True)
    except RuntimeError:  # 3.12 refuses new threads from atexit on
        pass

atexit.register(late)
for _ in range(8):
    _thread.start_new_thread(spin, ())
print("exiting while threads start")
"""


def test_exit_while_threads_start():
    results = _run_many(LATE_START_PROGRAM)
    assert all("exiting while threads start" in r[1] for r in results)


# What the module's functions do when called from a __del__ that runs while
# the runtime finalizes, on both modules (the outputs must be identical).
# Joining a still running thread there blocks forever before 3.14, so it is
# only tried from 3.14 on.
FINALIZING_PROGRAM = r"""
import os, sys
if sys.argv[1] == "rthread":
    import rthread
    M = rthread._rthread
else:
    import _thread as M

JOINABLE = hasattr(M, "start_joinable_thread")
ev = M.allocate_lock()
ev.acquire()
if JOINABLE:
    # The running thread must have entered Python before the program ends: a
    # thread that only starts once finalization began never runs, and its
    # handle reads done (both modules). Its function gets globals of its own,
    # not __main__'s, which it would keep alive (and with them `keep` below).
    import functools
    ns = {}
    exec("def run(started, ev):\n    started.release()\n    ev.acquire()\n", ns)
    started = M.allocate_lock()
    started.acquire()
    running = M.start_joinable_thread(functools.partial(ns["run"], started, ev), daemon=True)
    started.acquire()
    finished = M.start_joinable_thread(int, daemon=True)
    finished.join()

def attempt(label, call):
    try:
        text = repr(call())
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}"
    os.write(1, f"{label}: {text}\n".encode())

class AtExit:
    def __del__(self):
        attempt("start_new_thread", lambda: M.start_new_thread(int, ()))
        if not JOINABLE:
            return
        attempt("start_joinable_thread", lambda: M.start_joinable_thread(int))
        attempt("finished.join()", lambda: finished.join())
        attempt("finished.join(0.1)", lambda: finished.join(0.1))
        attempt("unstarted.join()", lambda: M._ThreadHandle().join())
        attempt("own.join()", lambda: M._make_thread_handle(M.get_ident()).join())
        attempt("running.is_done()", lambda: running.is_done())
        attempt("running.join('x')", lambda: running.join("x"))
        attempt("_shutdown()", lambda: M._shutdown())
        if sys.version_info >= (3, 14):
            attempt("running.join()", lambda: running.join())
            attempt("running.join(0)", lambda: running.join(0))
            attempt("running.join(0.01)", lambda: running.join(0.01))
            attempt("running.join(None)", lambda: running.join(None))
            attempt("other.join(0)", lambda: M._make_thread_handle(12345).join(0))

keep = AtExit()
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the built-in refuses nothing at shutdown before 3.12")
def test_calls_during_finalization_match_the_builtin():
    outputs = {}
    for mod in ("_thread", "rthread"):
        proc = subprocess.run(
            [sys.executable, "-c", FINALIZING_PROGRAM, mod],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0 and not proc.stderr, (mod, proc.returncode, proc.stderr)
        outputs[mod] = proc.stdout
    assert "start_new_thread: " in outputs["_thread"]
    assert outputs["rthread"] == outputs["_thread"]
