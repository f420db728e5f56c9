"""The plain lock's holder record across thread switches, thread ends and mode changes.

The lock fast paths remember the last thread that ran them (keyed by its thread pointer, which
the C library gives to the next thread once one ends); these check that the holder a report
shows is always the thread that really holds the lock.
"""
import subprocess
import sys
import time

import pytest

import rthread
import rthread.debug as debug


def run_in_thread(fn):
    done = rthread.allocate_lock()
    done.acquire()
    out = []

    def body():
        try:
            out.append(fn())
        finally:
            done.release()

    rthread.start_new_thread(body, ())
    done.acquire()
    return out[0] if out else None


def test_holder_is_the_running_thread_after_threads_end():
    # Each thread takes a lock and ends holding it; the next one (likely on the same thread
    # pointer and stack) must be recorded as itself, not as the one that ended.
    kept = []
    for _ in range(30):
        lock = rthread.allocate_lock()
        kept.append(lock)

        def take(lock=lock):
            lock.acquire()
            info = debug.describe(lock)
            return info["holder"] == rthread.get_ident(), info["signal"]

        assert run_in_thread(take) == (True, False)
    # `run_in_thread` returns once the thread's function has; the last thread may still be
    # ending. Once it has, a lock held by a thread that ended has no live holder to name.
    deadline = time.monotonic() + 10
    while (any(debug.describe(lock)["holder"] is not None for lock in kept)
           and time.monotonic() < deadline):
        time.sleep(0.001)
    for lock in kept:
        assert debug.describe(lock)["holder"] is None


def test_a_new_thread_is_not_taken_for_an_ended_one():
    # The ended thread's lock operation is the last one before the next thread's: no lock
    # operation in between (the main thread waits with sleeps), so nothing else refreshes
    # what the fast path remembers.
    results = []
    for _ in range(20):
        lock, other = rthread.allocate_lock(), rthread.allocate_lock()
        ended = []

        def first():
            with lock:
                pass
            ended.append(1)

        def second():
            other.acquire()
            results.append(debug.describe(other)["holder"] == rthread.get_ident())
            other.release()
            ended.append(2)

        for n, fn in enumerate((first, second), 1):
            rthread.start_new_thread(fn, ())
            deadline = time.monotonic() + 10
            while (len(ended) < n or rthread._count()) and time.monotonic() < deadline:
                time.sleep(0.001)
            assert len(ended) == n
            time.sleep(0.002)  # past the thread's own exit, after its count dropped
    assert results == [True] * 20


def test_holder_survives_another_thread_running_between():
    a = rthread.allocate_lock()
    a.acquire()

    def other():
        b = rthread.allocate_lock()
        with b:
            return debug.describe(b)["holder"] == rthread.get_ident()

    assert run_in_thread(other) is True
    info = debug.describe(a)
    assert info["holder"] == rthread.get_ident()
    a.release()
    info = debug.describe(a)
    assert (info["holder"], info["signal"]) == (None, False)


def test_release_by_another_thread_marks_a_signal():
    a = rthread.allocate_lock()
    a.acquire()
    assert debug.describe(a)["signal"] is False
    run_in_thread(a.release)
    info = debug.describe(a)
    assert (info["holder"], info["signal"], a.locked()) == (None, True, False)
    # Still a signal, and still recording holders afterwards.
    a.acquire()
    info = debug.describe(a)
    assert (info["holder"], info["signal"]) == (rthread.get_ident(), True)
    a.release()


def test_turning_diagnostic_mode_on_takes_effect_at_once():
    lock = rthread.allocate_lock()
    for _ in range(100):  # the same thread, over and over: the fast path's case
        lock.acquire()
        lock.release()
    was = debug.enabled()
    debug.enable()
    try:
        lock.acquire()
        line = debug.describe(lock)["acquired_at"]
        lock.release()
    finally:
        if not was:
            debug.disable()
    assert line is not None and line.startswith(__file__ + ":"), line


FORK_CHILD = """
import os, sys, time
import rthread, rthread.debug as debug

if sys.argv[1] == "diag":
    debug.enable()
go, parked = rthread.allocate_lock(), rthread.allocate_lock()
go.acquire()
parked.acquire()

def park():
    go.release()
    parked.acquire()  # the last lock operation before the fork is this thread's

rthread.start_new_thread(park, ())
deadline = time.monotonic() + 10
while not debug.describe(parked)["waiters"] and time.monotonic() < deadline:
    time.sleep(0.001)
pid = os.fork()
if pid == 0:
    # Only the forking thread is left; the C library gives the parked thread's stack (and
    # thread pointer) to the next thread started here.
    results = []
    lock = rthread.allocate_lock()

    def child():
        lock.acquire()
        me = [t for t in debug.snapshot().to_dict()["threads"] if t["ident"] == rthread.get_ident()]
        held = [h["object"] for t in me for h in t["holds"]]
        results.append((debug.describe(lock)["holder"] == rthread.get_ident(),
                        id(lock) in held if sys.argv[1] == "diag" else True))
        lock.release()

    rthread.start_new_thread(child, ())
    deadline = time.monotonic() + 10
    while not results and time.monotonic() < deadline:
        time.sleep(0.001)
    os._exit(0 if results == [(True, True)] else 1)
_, status = os.waitpid(pid, 0)
parked.release()
sys.exit(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8)
"""


@pytest.mark.parametrize("mode", ["normal", "diag"])
def test_a_thread_started_after_fork_is_not_taken_for_a_parent_thread(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(FORK_CHILD)
    for _ in range(3):
        p = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)


def my_held():
    """The ids of the locks the snapshot lists as held by the calling thread."""
    me = rthread.get_ident()
    return sorted(h["object"] for t in debug.snapshot().to_dict()["threads"]
                  if t["ident"] == me for h in t["holds"])


def test_diagnostic_mode_lists_held_locks_across_switches_and_hook_changes():
    # Diagnostic mode alone keeps its own thread cache for the uncontended acquire and
    # release; it must list each lock under the thread that holds it, follow thread switches,
    # and step aside as soon as lock-order checking needs to see every acquire.
    was = debug.enabled()
    debug.enable()
    try:
        # (Each on its own line: lock-order checking knows a lock by its creation site.)
        a = rthread.allocate_lock()
        b = rthread.allocate_lock()
        c = rthread.allocate_lock()
        r = rthread.RLock()
        for _ in range(50):  # one thread, over and over: the cache's case
            with a:
                pass
            with r:
                pass
        a.acquire()
        r.acquire()
        assert my_held() == sorted([id(a), id(r)])

        def other():
            with b:
                return my_held(), debug.describe(b)["holder"] == rthread.get_ident()

        out = []
        done = rthread.allocate_lock()
        done.acquire()

        def body():
            out.append(other())
            done.release()

        rthread.start_new_thread(body, ())
        done.acquire()  # (a signal: listed while this thread holds it)
        done.release()
        assert out == [([id(b)], True)]
        b.acquire()  # back on this thread: its own list, not the other thread's
        assert my_held() == sorted([id(a), id(b), id(r)])
        b.release()
        r.release()
        a.release()
        assert my_held() == []
        assert debug.describe(a)["holder"] is None

        # Lock-order checking turned on while the cache holds this thread: the next
        # acquires must reach it (an inverted order raises before taking the lock).
        previous = debug.lockdep("raise")
        try:
            with a:
                with c:
                    pass
            with c:
                with pytest.raises(debug.LockOrderError):
                    a.acquire()
                assert not a.locked()
                assert my_held() == [id(c)]
        finally:
            debug.lockdep(previous)
        with a:  # and the cache is back once it is off
            assert my_held() == [id(a)]
        assert my_held() == []
    finally:
        if not was:
            debug.disable()
