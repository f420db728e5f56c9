"""Daemon threads still inside Python when the interpreter exits must not
crash or hang the exit (until 3.14, CPython ends them with pthread_exit, a
forced unwind through rthread's frames)."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

RUNS = 50

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


def _run_once(_):
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_exit_with_daemon_threads_inside_python():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_run_once, range(RUNS)))
    failures = [r for r in results if r[0] != 0 or "Fatal" in r[2] or r[2]]
    assert not failures, f"{len(failures)}/{RUNS} runs failed; first: {failures[0]!r}"
    assert all("exiting with daemon threads" in r[1] for r in results)
