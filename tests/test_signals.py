"""A blocked acquire in the main thread wakes up for signals: a handler that
raises ends the acquire at once; one that does not lets it continue towards
the original deadline."""

import os
import signal
import subprocess
import sys
import time

import pytest

import rthread
from conftest import BUILTIN


def _send_later(mod, signum, delay):
    """Sends signum to this process after delay seconds, from a thread."""

    def fire():
        time.sleep(delay)
        os.kill(os.getpid(), signum)

    mod.start_new_thread(fire, ())


def _held(kind):
    if kind == "lock":
        lock = rthread.allocate_lock()
        lock.acquire()
        return lock
    rlock = rthread.RLock()
    box = rthread.allocate_lock()
    box.acquire()
    done = rthread.allocate_lock()
    done.acquire()

    def owner():
        rlock.acquire()
        box.release()
        done.acquire()  # keep it until the test ends the process or releases

    rthread.start_new_thread(owner, ())
    box.acquire()
    return rlock


@pytest.mark.parametrize("kind", ["lock", "RLock"])
def test_sigint_interrupts_acquire_without_timeout(kind):
    lock = _held(kind)
    _send_later(rthread, signal.SIGINT, 0.2)  # default handler: KeyboardInterrupt
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    # Woken by the signal itself, not by any timeout (there is none).
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("kind", ["lock", "RLock"])
def test_alarm_handler_raising_interrupts_timed_acquire(kind):
    lock = _held(kind)

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            lock.acquire(timeout=5)
        assert time.monotonic() - start < 3.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("mod", [BUILTIN, rthread], ids=["builtin", "rthread"])
def test_handler_that_does_not_raise_lets_acquire_continue(mod):
    lock = mod.allocate_lock()
    lock.acquire()
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        _send_later(mod, signal.SIGUSR1, 0.1)

        def release_later():
            time.sleep(0.4)
            lock.release()

        mod.start_new_thread(release_later, ())
        assert lock.acquire(timeout=10) is True
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [signal.SIGUSR1]


@pytest.mark.parametrize("mod", [BUILTIN, rthread], ids=["builtin", "rthread"])
def test_signals_do_not_extend_the_deadline(mod):
    lock = mod.allocate_lock()
    lock.acquire()
    seen = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)  # 50 signals a second
        start = time.monotonic()
        assert lock.acquire(timeout=0.5) is False
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(seen) >= 5  # the handler really ran during the wait
    # Each wake-up resumes towards the original deadline: a fresh 0.5 s wait
    # after every signal would never end while signals keep coming.
    assert 0.45 <= elapsed < 2.0


SIGNAL_TO_ANOTHER_THREAD = r"""
import os, signal, sys, threading, time
kind = sys.argv[1]
class Raised(Exception):
    pass
def handler(signum, frame):
    raise Raised
stop = threading.Event()
if kind == "join":
    target = threading.Thread(target=stop.wait, args=(30,), daemon=True)
    target.start()
else:
    target = getattr(threading, kind)()
    ready = threading.Event()
    def owner():
        target.acquire()
        ready.set()
        stop.wait(30)
    threading.Thread(target=owner, daemon=True).start()
    ready.wait()
def fire():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGUSR1)
signal.signal(signal.SIGUSR1, handler)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
killer = threading.Thread(target=fire)
killer.start()
start = time.monotonic()
try:
    if kind == "join":
        target.join(30)
    else:
        target.acquire(timeout=30)
    sys.exit("the wait ended without the handler's exception")
except Raised:
    print(time.monotonic() - start)
"""


@pytest.mark.parametrize("kind", ["Lock", "RLock", "join"])
def test_signal_that_interrupts_no_wait_still_runs_its_handler(kind):
    # The C handler of a signal that lands while the main thread is between
    # two system calls of its wait (it spins, or goes back to sleep) runs at
    # once and interrupts nothing. Here, the same by construction: the main
    # thread blocks SIGUSR1, so the kernel hands it to another thread, and the
    # main thread's sleep is never interrupted. The wait must still run the
    # Python handler and raise soon, not when its 30 s are over (the built-in
    # waits the 30 s: rthread does better on purpose). threading runs on
    # rthread in the child.
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_TO_ANOTHER_THREAD, kind],
        env={**os.environ, "RTHREAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    elapsed = float(proc.stdout)
    # The signal came at 0.3 s; a wait that only ran the handler at its end
    # would take 30 s.
    assert 0.25 <= elapsed < 10.0, elapsed


def test_main_thread_wait_is_one_wait_to_snapshots():
    # The main thread leaves its sleep every few milliseconds to run signal
    # handlers; snapshots (and the watchdog, which needs the same wait in two
    # scans) must still see one wait, as old as the acquire call.
    import threading

    import rthread.debug as dbg

    lock = rthread.allocate_lock()
    lock.acquire()
    me = rthread.get_ident()
    seen = []

    def look():
        time.sleep(0.6)
        t = [t for t in dbg.snapshot().to_dict()["threads"] if t["ident"] == me]
        seen.append(t[0]["waiting"] if t else None)
        lock.release()

    looker = threading.Thread(target=look)
    looker.start()
    assert lock.acquire(timeout=30) is True
    looker.join()
    waiting = seen[0]
    assert waiting is not None and waiting["kind"] == "lock", seen
    assert waiting["seconds"] >= 0.5, waiting
