"""Threads started by rthread: identity, arguments, exceptions, _count, stack size."""

import ctypes
import gc
import os
import resource
import sys
import threading
import time
import weakref

import pytest

import rthread
from conftest import BUILTIN
from parity import VERSION, normalize

LIBC = ctypes.CDLL(None, use_errno=True)
SYS_GETTID = 186  # x86-64


def gettid():
    return LIBC.syscall(SYS_GETTID)


def run_in_thread(mod, fn, *args, **kwargs):
    """Runs fn in a thread started by ``mod.start_new_thread``; returns its
    result (or re-raises its exception) once it finished."""
    done = mod.allocate_lock()
    done.acquire()
    box = {}

    def target(*a, **k):
        try:
            box["result"] = fn(*a, **k)
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc
        finally:
            done.release()

    mod.start_new_thread(target, args, kwargs)
    assert done.acquire(timeout=30), "thread did not finish"
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_ident_matches_threading_in_every_thread():
    def idents():
        return rthread.get_ident(), threading.get_ident(), BUILTIN.get_ident(), rthread.start_new_thread

    main = idents()
    assert main[0] == main[1] == main[2]
    seen = {main[0]}
    for _ in range(5):
        mine, theirs, builtin, _ = run_in_thread(rthread, idents)
        assert mine == theirs == builtin
        seen.add(mine)
    # In a thread started by the built-in too.
    mine, theirs, builtin, _ = run_in_thread(BUILTIN, idents)
    assert mine == theirs == builtin


def test_start_new_thread_returns_the_threads_ident():
    box = []
    done = rthread.allocate_lock()
    done.acquire()

    def target():
        box.append(rthread.get_ident())
        done.release()

    ident = rthread.start_new_thread(target, ())
    done.acquire()
    assert box == [ident]


def test_native_id_is_the_kernel_tid():
    assert rthread.get_native_id() == gettid() == os.getpid()
    tid, native = run_in_thread(rthread, lambda: (gettid(), rthread.get_native_id()))
    assert tid == native != os.getpid()
    assert run_in_thread(rthread, lambda: threading.get_native_id() == rthread.get_native_id())


def test_arguments_and_keyword_arguments():
    class T(tuple):
        pass

    class D(dict):
        pass

    assert run_in_thread(rthread, lambda *a, **k: (a, k), 1, 2, x=3) == ((1, 2), {"x": 3})
    box = []
    done = rthread.allocate_lock()
    done.acquire()
    rthread.start_new_thread(lambda *a, **k: (box.append((a, k)), done.release()), T((1,)), D(y=2))
    done.acquire()
    assert box == [((1,), {"y": 2})]


def _hook_reports(mod, target, args=()):
    """Starts target in a thread of mod; returns what sys.unraisablehook saw."""
    seen = []
    done = mod.allocate_lock()
    done.acquire()

    def hook(unraisable):
        seen.append((
            unraisable.exc_type.__name__,
            str(unraisable.exc_value),
            normalize(unraisable.err_msg or ""),
            "the function" if unraisable.object is target else normalize(repr(unraisable.object)),
        ))

    def wrapper(*a):
        try:
            target(*a)
        finally:
            done.release()

    old = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        # wrapper re-raises target's exception after releasing `done`; the
        # hook runs right after, so wait for the thread count to settle.
        before = mod._count()
        mod.start_new_thread(wrapper, args)
        done.acquire()
        deadline = time.monotonic() + 10
        while mod._count() > before and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.01)
    finally:
        sys.unraisablehook = old
    return [(t, v, m.replace(normalize(repr(wrapper)), "<wrapper>"), o.replace(normalize(repr(wrapper)), "<wrapper>")) for t, v, m, o in seen]


def _raise_value_error():
    raise ValueError("boom")


@pytest.mark.parametrize("exc", ["ValueError", "KeyboardInterrupt", "SystemExit", "exit", "SystemExit-subclass"])
def test_exception_in_thread_is_reported_like_the_builtin(exc):
    class Quit(SystemExit):
        pass

    def target():
        if exc == "exit":
            rthread.exit()
        if exc == "SystemExit-subclass":
            raise Quit(3)
        raise getattr(__builtins__, exc, None) or {"ValueError": ValueError, "KeyboardInterrupt": KeyboardInterrupt, "SystemExit": SystemExit}[exc]("boom")

    assert _hook_reports(rthread, target) == _hook_reports(BUILTIN, target)


def test_valueerror_report_fields():
    reports = _hook_reports(rthread, _raise_value_error)
    assert len(reports) == 1
    exc_type, value, err_msg, obj = reports[0]
    assert (exc_type, value) == ("ValueError", "boom")
    assert err_msg.startswith("Exception ignored in thread started by")


def test_count_tracks_running_threads():
    start = rthread._count()
    release = rthread.allocate_lock()
    release.acquire()
    started = rthread.allocate_lock()
    started.acquire()

    def target():
        started.release()
        release.acquire()

    rthread.start_new_thread(target, ())
    started.acquire()
    assert rthread._count() == start + 1
    release.release()
    deadline = time.monotonic() + 10
    while rthread._count() != start and time.monotonic() < deadline:
        time.sleep(0.001)
    assert rthread._count() == start


def _count_seen_when_callable_dies(mod):
    """Returns (count seen by a weakref callback on the thread's callable,
    count seen by this thread once that callback ran, count before)."""
    in_callback = []
    done = mod.allocate_lock()
    done.acquire()

    class Target:
        def __call__(self):
            done.release()

    target = Target()
    base = mod._count()
    ref = weakref.ref(target, lambda _: in_callback.append(mod._count()))
    mod.start_new_thread(target, ())
    del target
    done.acquire()
    deadline = time.monotonic() + 10
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.001)
    gc.collect()
    return in_callback, mod._count(), base


@pytest.mark.parametrize("mod", [BUILTIN, rthread], ids=["builtin", "rthread"])
def test_count_is_back_once_the_callable_is_released(mod):
    # What CPython's test__count relies on: once the callable is gone, the
    # thread no longer counts.
    in_callback, after, base = _count_seen_when_callable_dies(mod)
    assert len(in_callback) == 1
    assert after == base


def test_count_is_decremented_before_the_callable_is_released():
    # rthread's stronger order: even the callable's own finalizers see it.
    in_callback, _, base = _count_seen_when_callable_dies(rthread)
    assert in_callback == [base]


def _thread_stack_size():
    """Size of the calling thread's stack, from pthread_getattr_np."""
    attr = ctypes.create_string_buffer(128)
    size = ctypes.c_size_t()
    assert LIBC.pthread_getattr_np(ctypes.c_ulong(LIBC.pthread_self()), attr) == 0
    try:
        assert LIBC.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0
    finally:
        LIBC.pthread_attr_destroy(attr)
    return size.value


LIBC.pthread_self.restype = ctypes.c_ulong


def test_default_stack_is_the_platform_default_not_rusts():
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_STACK is unlimited here, so glibc's default is arch-specific")
    assert rthread.stack_size() == 0
    ours = run_in_thread(rthread, _thread_stack_size)
    builtin = run_in_thread(BUILTIN, _thread_stack_size)
    assert ours == builtin
    assert ours >= soft and ours > 2 * 1024 * 1024


def test_stack_size_applies_to_new_threads():
    size = 1 << 20  # 1 MiB, far from the 8 MiB default
    old = rthread.stack_size(size)
    try:
        got = run_in_thread(rthread, _thread_stack_size)
    finally:
        rthread.stack_size(old)
    # glibc may reuse a cached stack of up to 4x the requested size.
    assert size <= got <= 4 * size


def test_stack_size_too_large_to_allocate_fails_cleanly():
    old = rthread.stack_size(1 << 46)  # 64 TiB: accepted, but no thread gets it
    try:
        with pytest.raises(RuntimeError, match="can't start new thread"):
            rthread.start_new_thread(lambda: None, ())
    finally:
        rthread.stack_size(old)
    assert run_in_thread(rthread, lambda: 42) == 42


def test_many_threads():
    lock = rthread.allocate_lock()
    total = [0]
    done = rthread.allocate_lock()
    done.acquire()
    n = 64
    remaining = [n]

    def work():
        for _ in range(200):
            with lock:
                total[0] += 1
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.release()

    for _ in range(n):
        rthread.start_new_thread(work, ())
    assert done.acquire(timeout=60)
    assert total[0] == n * 200


@pytest.mark.skipif(VERSION < (3, 12), reason="_thread raises no audit event before 3.12")
def test_audit_events_match():
    events = []
    recording = [False]

    def hook(event, args):
        if recording[0] and event.startswith("_thread."):
            events.append((event, tuple(normalize(repr(a)) for a in args)))

    sys.addaudithook(hook)

    def collect(mod):
        events.clear()
        recording[0] = True
        try:
            done = mod.allocate_lock()
            done.acquire()
            mod.start_new_thread(done.release, ())
            done.acquire()
            mod.start_new_thread(done.release, (), {})
            done.acquire()
            if VERSION >= (3, 13):
                mod.start_joinable_thread(lambda: None, daemon=False).join()
        finally:
            recording[0] = False
        return [(e, tuple(a.replace("rthread._rthread", "_thread") for a in args)) for e, args in events]

    builtin = collect(BUILTIN)
    assert builtin  # the built-in does raise them on this version
    assert collect(rthread) == builtin
