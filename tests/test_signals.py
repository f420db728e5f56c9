"""A blocked acquire in the main thread wakes up for signals: a handler that
raises ends the acquire at once; one that does not lets it continue towards
the original deadline."""

import os
import signal
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
