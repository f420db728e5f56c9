"""Differential tests: lock and RLock objects behave like the built-in's."""

import copy
import decimal
import gc
import fractions
import pickle
import subprocess
import sys
import textwrap
import weakref

import pytest

from parity import VERSION, assert_same, outcome
import rthread
from conftest import BUILTIN


class FloatOnly:
    def __float__(self):
        return 0.01


class IndexOnly:
    def __index__(self):
        return 0


class BadBool:
    def __bool__(self):
        raise ZeroDivisionError("bool failed")


class FloatSub(float):
    pass


class IntSub(int):
    pass


# (args, kwargs) for acquire(). Run on a FREE lock, so valid ones return at once;
# every timeout-looking value is here, valid or not.
ACQUIRE_ARGS = [
    ((), {}),
    ((True,), {}),
    ((False,), {}),
    ((0,), {}),
    ((1,), {}),
    ((2,), {}),
    ((-1,), {}),
    ((1.5,), {}),
    (("x",), {}),
    ((None,), {}),
    (([],), {}),
    ((2**64,), {}),
    ((-(2**64),), {}),
    ((BadBool(),), {}),
    ((IndexOnly(),), {}),
    ((False, 1), {}),
    ((False, -1), {}),
    ((False, -1.0), {}),
    ((False, 0), {}),
    ((), {"blocking": False, "timeout": 0}),
    ((), {"blocking": False, "timeout": -1}),
    ((), {"blocking": True}),
    ((), {"timeout": 0}),
    ((), {"timeout": -1}),
    ((), {"timeout": -1.0}),
    ((), {"timeout": -2}),
    ((), {"timeout": -0.5}),
    ((), {"timeout": -1e-10}),
    ((), {"timeout": -1.0000000001}),
    ((), {"timeout": -0.9999999999}),
    ((), {"timeout": 1e-10}),
    ((), {"timeout": 0.5}),
    ((), {"timeout": float("nan")}),
    ((), {"timeout": float("inf")}),
    ((), {"timeout": float("-inf")}),
    ((), {"timeout": 1e300}),
    ((), {"timeout": -1e300}),
    ((), {"timeout": 2**63}),
    ((), {"timeout": 2**62}),
    ((), {"timeout": 2**33}),
    ((), {"timeout": 9223372036.0}),
    ((), {"timeout": 9223372036.8}),
    ((), {"timeout": 9223372036.85}),
    ((), {"timeout": 9223372036.854775}),
    ((), {"timeout": 9223372036.86}),
    ((), {"timeout": 9223372037}),
    ((), {"timeout": 10**10}),
    ((), {"timeout": "1"}),
    ((), {"timeout": None}),
    ((), {"timeout": True}),
    ((), {"timeout": decimal.Decimal("0.5")}),
    ((), {"timeout": fractions.Fraction(1, 2)}),
    ((), {"timeout": FloatOnly()}),
    ((), {"timeout": IndexOnly()}),
    ((), {"timeout": FloatSub(0.5)}),
    ((), {"timeout": IntSub(1)}),
    ((True, 1, 2), {}),
    ((), {"foo": 1}),
    ((True,), {"blocking": True}),
    ((True,), {"timeout": 1, "foo": 2}),
]


def _ids(items):
    return [f"{a!r}-{k!r}"[:80] for a, k in items]


def _fresh(mod, kind):
    return mod.allocate_lock() if kind == "lock" else mod.RLock()


# RLock has no acquire_lock alias (the "dir" cases check that on both).
METHODS = [("lock", "acquire"), ("lock", "__enter__"), ("lock", "acquire_lock"), ("RLock", "acquire"), ("RLock", "__enter__")]


@pytest.mark.parametrize("kind,method", METHODS, ids=[f"{k}.{m}" for k, m in METHODS])
@pytest.mark.parametrize("args,kwargs", ACQUIRE_ARGS, ids=_ids(ACQUIRE_ARGS))
def test_acquire_arguments_on_free_lock(kind, method, args, kwargs):
    def case(mod):
        lock = _fresh(mod, kind)
        result = getattr(lock, method)(*args, **kwargs)
        return result, repr(lock).split(" owner=")[0]

    assert_same(case)


# On a HELD lock only the non-blocking and short-timeout calls are safe to run.
HELD_ARGS = [
    ((False,), {}),
    ((0,), {}),
    ((), {"blocking": False}),
    ((), {"timeout": 0}),
    ((), {"timeout": 0.01}),
    ((), {"timeout": 1e-10}),
    ((True, 0.01), {}),
    ((False, -1), {}),
    ((False, 0.5), {}),
    ((), {"timeout": -3}),
    # NaN must raise, not wait: 3.14's threading.Condition.wait hands a NaN
    # timeout straight to acquire(True, nan) and relies on the ValueError.
    ((True, float("nan")), {}),
    ((), {"timeout": float("nan")}),
]


@pytest.mark.parametrize("args,kwargs", HELD_ARGS, ids=_ids(HELD_ARGS))
def test_acquire_arguments_on_held_lock(args, kwargs):
    def case(mod):
        lock = mod.allocate_lock()
        lock.acquire()
        return lock.acquire(*args, **kwargs), lock.locked()

    assert_same(case)


@pytest.mark.parametrize("args,kwargs", HELD_ARGS, ids=_ids(HELD_ARGS))
def test_rlock_acquire_arguments_held_by_other_thread(args, kwargs):
    def case(mod):
        rlock = mod.RLock()
        held, release = mod.allocate_lock(), mod.allocate_lock()
        held.acquire()
        release.acquire()

        def owner():
            rlock.acquire()
            held.release()
            release.acquire()
            rlock.release()
            held.release()

        mod.start_new_thread(owner, ())
        held.acquire()  # the other thread owns the RLock now
        try:
            return rlock.acquire(*args, **kwargs), rlock._is_owned()
        finally:
            release.release()
            held.acquire()  # wait for it to let go

    assert_same(case)


def _lock_cases():
    def held(mod):
        lock = mod.allocate_lock()
        lock.acquire()
        return lock

    cases = {
        "repr-unlocked": lambda m: repr(m.allocate_lock()),
        "repr-locked": lambda m: repr(held(m)),
        "release-unlocked": lambda m: m.allocate_lock().release(),
        "release-unlocked-then-state": lambda m: (l := m.allocate_lock(), outcome(lambda _: l.release(), m), repr(l))[1:],
        "release-twice": lambda m: (held(m).release(), None) and None,
        "release-arg": lambda m: held(m).release(1),
        "release_lock-unlocked": lambda m: m.allocate_lock().release_lock(),
        "locked": lambda m: (m.allocate_lock().locked(), held(m).locked()),
        "locked-arg": lambda m: m.allocate_lock().locked(1),
        "locked_lock": lambda m: held(m).locked_lock(),
        "enter-exit": lambda m: ((l := m.allocate_lock()).__enter__(), l.locked(), l.__exit__(None, None, None), l.locked()),
        "exit-noargs": lambda m: held(m).__exit__(),
        "exit-1arg": lambda m: ((l := held(m)).__exit__(None), l.locked()),
        "exit-2args": lambda m: ((l := held(m)).__exit__(None, None), l.locked()),
        "exit-3args": lambda m: ((l := held(m)).__exit__(KeyError, KeyError(), None), l.locked()),
        "exit-4args": lambda m: held(m).__exit__(1, 2, 3, 4),
        "exit-kwargs": lambda m: held(m).__exit__(a=1),
        "exit-3args-and-kwargs": lambda m: held(m).__exit__(None, None, None, a=1),
        "exit-noargs-unlocked": lambda m: m.allocate_lock().__exit__(),
        "exit-noargs-state": lambda m: (l := held(m), outcome(lambda _: l.__exit__(), m), l.locked())[1:],
        "enter-noargs-held-nonblocking-check": lambda m: ((l := m.allocate_lock()).__enter__(), l.acquire(False)),
        "enter-arg-leaves-unlocked": lambda m: (l := m.allocate_lock(), outcome(lambda _: l.__enter__(False), m), l.locked())[1:],
        "enter-kwarg-leaves-unlocked": lambda m: (l := m.allocate_lock(), outcome(lambda _: l.__enter__(blocking=False), m), l.locked())[1:],
        "acquire_lock-arg-errors": lambda m: [
            outcome(lambda _: m.allocate_lock().acquire_lock(*a, **k), m)
            for a, k in (((1, 2, 3), {}), ((), {"x": 1}), ((True,), {"blocking": True}), ((), {"timeout": "x"}))
        ],
        "exit-unlocked": lambda m: m.allocate_lock().__exit__(None, None, None),
        "with": lambda m: _with_lock(m.allocate_lock()),
        "with-raises": lambda m: _with_raises(m.allocate_lock()),
        "fork-reinit-held": lambda m: ((l := held(m))._at_fork_reinit(), l.locked()),
        "fork-reinit-arg": lambda m: held(m)._at_fork_reinit(1),
        "type-name": lambda m: (type(m.allocate_lock()).__name__, type(m.allocate_lock()).__qualname__),
        "type-module": lambda m: type(m.allocate_lock()).__module__,
        "type-is-LockType": lambda m: type(m.allocate_lock()) is m.LockType,
        "LockType()": lambda m: repr(m.LockType()),
        "LockType(1)": lambda m: m.LockType(1),
        "LockType(x=1)": lambda m: m.LockType(x=1),
        "LockType(1, x=1)": lambda m: m.LockType(1, x=1),
        "LockType(1, 2)": lambda m: m.LockType(1, 2),
        "LockType(*(), **{})": lambda m: repr(m.LockType(*(), **{})),
        "subclass": lambda m: type("X", (m.LockType,), {}),
        "weakref": lambda m: (l := m.allocate_lock(), weakref.ref(l)() is l)[1],
        "weakref-callback": lambda m: _weakref_callback(m.allocate_lock()),
        "dict": lambda m: m.allocate_lock().__dict__,
        "setattr": lambda m: setattr(m.allocate_lock(), "x", 1),
        "copy": lambda m: copy.copy(m.allocate_lock()),
        "deepcopy": lambda m: copy.deepcopy(m.allocate_lock()),
        "hash-eq": lambda m: ((l := m.allocate_lock()) == l, l != l, hash(l) == hash(l)),
        "lt": lambda m: m.allocate_lock() < m.allocate_lock(),
        "dir": lambda m: [n for n in dir(m.allocate_lock()) if not n.startswith("__")],
        "methods-types": lambda m: sorted({type(getattr(m.allocate_lock(), n)).__name__ for n in dir(m.allocate_lock())}),
        "doc-present": lambda m: [n for n in ("acquire", "release", "locked") if getattr(m.LockType, n).__doc__],
        "set-type-attr": lambda m: setattr(m.LockType, "x", 1),
        # Which docs exist (the text is rthread's own): on the type, in its
        # dict, on an instance.
        "type-docs": lambda m: [
            [t.__doc__ is None, vars(t)["__doc__"] is None]
            for t in (m.LockType, m.RLock)
        ] + [m.allocate_lock().__doc__ is None, m.RLock().__doc__ is None],
        # Not MANAGED_WEAKREF (bit 3) either: the built-in's lock types keep
        # their weak reference list in a pre-header from 3.14 on (two words
        # in front of the object); rthread keeps one word in the object, as
        # the built-in did up to 3.13. Weak references behave the same (the
        # "weakref" cases); only __weakrefoffset__ / __basicsize__ differ.
        # DISALLOW_INSTANTIATION, IMMUTABLETYPE, HEAPTYPE, BASETYPE: static
        # types on 3.9, immutable heap types after, as the built-in's. Not
        # HAVE_GC: from 3.10 the built-in's locks are tracked by the cycle
        # collector so that an instance can visit its heap type; rthread's
        # own instances reference nothing but their type, which lives as long
        # as the process, so they are not tracked and save a 16-byte GC
        # header each. Subclass instances are tracked through the subclass
        # (test_rlock_subclass_cycle_is_collected).
        "type-flags": lambda m: [
            [bool(t.__flags__ & 1 << bit) for bit in (7, 8, 9, 10)]
            for t in (m.LockType, m.RLock)
        ],
    }
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        cases[f"pickle-{proto}"] = lambda m, p=proto: pickle.dumps(m.allocate_lock(), p)
    return cases


def _weakref_callback(obj):
    called = []
    ref = weakref.ref(obj, lambda r: called.append(r() is None))
    del obj
    gc.collect()
    return called, ref()


def _with_lock(lock):
    with lock:
        inside = lock.locked()
    return inside, lock.locked()


def _with_raises(lock):
    try:
        with lock:
            raise KeyError("x")
    except KeyError:
        pass
    return lock.locked()


LOCK_CASES = _lock_cases()


@pytest.mark.parametrize("name", sorted(LOCK_CASES))
def test_lock_case(name):
    assert_same(LOCK_CASES[name])


def _rlock_cases():
    def held(mod, times=1):
        r = mod.RLock()
        for _ in range(times):
            r.acquire()
        return r

    def in_other_thread(mod, fn):
        done = mod.allocate_lock()
        done.acquire()
        box = []

        def run():
            box.append(outcome(lambda _: fn(), mod))
            done.release()

        mod.start_new_thread(run, ())
        done.acquire()
        return box[0]

    cases = {
        "repr-unlocked": lambda m: repr(m.RLock()),
        "repr-held-once": lambda m: repr(held(m)),
        "repr-held-twice": lambda m: repr(held(m, 2)),
        "release-unacquired": lambda m: m.RLock().release(),
        "release-arg": lambda m: held(m).release(1),
        "release-by-other-thread": lambda m: (r := held(m), in_other_thread(m, r.release), r._is_owned())[1:],
        "acquire-reentrant": lambda m: ((r := m.RLock()).acquire(), r.acquire(), r.acquire(False), repr(r).split("count=")[1][:2]),
        "release-levels": lambda m: ((r := held(m, 3)).release(), r.release(), r._is_owned(), r.release(), r._is_owned()),
        "is_owned": lambda m: (m.RLock()._is_owned(), held(m)._is_owned()),
        "is_owned-other-thread": lambda m: (r := held(m), in_other_thread(m, r._is_owned))[1],
        "is_owned-arg": lambda m: m.RLock()._is_owned(1),
        "release_save-unowned": lambda m: m.RLock()._release_save(),
        "release_save": lambda m: ((r := held(m, 3))._release_save()[0], r._is_owned(), repr(r)),
        "release_save-other-thread": lambda m: (r := held(m, 2), in_other_thread(m, r._release_save)[0], repr(r))[1:],
        "release_save-other-thread-full": lambda m: (r := held(m), in_other_thread(m, r._release_save), repr(r), r._is_owned())[1:],
        # RLock.locked() (3.14+; an AttributeError on both before).
        "locked-states": lambda m: (
            (r := m.RLock()).locked(),
            (r.acquire(), r.locked())[1],
            (r.acquire(), r.locked())[1],
            (r.release(), r.locked())[1],
            (r.release(), r.locked())[1],
        ),
        "locked-held-by-other-thread": lambda m: (r := held(m), in_other_thread(m, r.locked), r.locked())[1:],
        "locked-released-by-other-thread": lambda m: _locked_across_threads(m),
        "locked-after-release_save": lambda m: ((r := held(m, 2))._release_save(), r.locked())[1],
        "locked-after-fork-reinit": lambda m: ((r := held(m))._at_fork_reinit(), r.locked())[1],
        "locked-arg": lambda m: m.RLock().locked(1),
        "locked-kwarg": lambda m: m.RLock().locked(x=1),
        "locked-subclass": lambda m: ((s := type("Sub", (m.RLock,), {})()).locked(), s.acquire(), s.locked()),
        "enter-noargs": lambda m: ((r := m.RLock()).__enter__(), r.__enter__(), repr(r).split(" at")[0].split("count=")[1]),
        "enter-args": lambda m: m.RLock().__enter__(False),
        "enter-two-args": lambda m: m.RLock().__enter__(True, 1),
        "enter-kwargs": lambda m: m.RLock().__enter__(blocking=False),
        "enter-arg-leaves-unowned": lambda m: (r := m.RLock(), outcome(lambda _: r.__enter__(True), m), r._is_owned())[1:],
        "exit-noargs": lambda m: ((r := held(m)).__exit__(), r._is_owned()),
        "exit-1arg": lambda m: ((r := held(m)).__exit__(None), r._is_owned()),
        "exit-3args": lambda m: ((r := held(m)).__exit__(None, None, None), r._is_owned()),
        "exit-4args": lambda m: ((r := held(m)).__exit__(1, 2, 3, 4), r._is_owned()),
        "exit-kwargs": lambda m: held(m).__exit__(a=1),
        "exit-noargs-unowned": lambda m: m.RLock().__exit__(),
        "acquire_restore": lambda m: ((r := m.RLock())._acquire_restore((5, 7)), repr(r)),
        "acquire_restore-roundtrip": lambda m: ((r := held(m, 2))._acquire_restore(r._release_save()), r._is_owned(), repr(r).split(" at")[0].split("count=")[1]),
        "acquire_restore-noargs": lambda m: m.RLock()._acquire_restore(),
        "acquire_restore-None": lambda m: m.RLock()._acquire_restore(None),
        "acquire_restore-short": lambda m: m.RLock()._acquire_restore((1,)),
        "acquire_restore-long": lambda m: m.RLock()._acquire_restore((1, 2, 3)),
        "acquire_restore-str": lambda m: m.RLock()._acquire_restore(("a", "b")),
        "acquire_restore-negative": lambda m: ((r := m.RLock())._acquire_restore((-1, -2)), repr(r)),
        "acquire_restore-float": lambda m: m.RLock()._acquire_restore((1.0, 2)),
        "acquire_restore-two-args": lambda m: m.RLock()._acquire_restore(1, 2),
        "acquire_restore-kwargs": lambda m: m.RLock()._acquire_restore(state=(1, 2)),
        "acquire_restore-empty": lambda m: m.RLock()._acquire_restore(()),
        "acquire_restore-str-arg": lambda m: m.RLock()._acquire_restore("ab"),
        "acquire_restore-list": lambda m: ((r := m.RLock())._acquire_restore([1, 2]), repr(r)),
        "acquire_restore-owner-str": lambda m: m.RLock()._acquire_restore((1, "b")),
        "acquire_restore-owner-float": lambda m: m.RLock()._acquire_restore((1, 1.5)),
        "acquire_restore-index": lambda m: ((r := m.RLock())._acquire_restore((IndexOnly(), IndexOnly())), repr(r)),
        "acquire_restore-bool": lambda m: ((r := m.RLock())._acquire_restore((True, False)), repr(r)),
        "acquire_restore-count-2**63": lambda m: ((r := m.RLock())._acquire_restore((2**63, 1)), repr(r)),
        "acquire_restore-count--2**63": lambda m: ((r := m.RLock())._acquire_restore((-(2**63), 1)), repr(r)),
        "acquire_restore-count--2**63-1": lambda m: ((r := m.RLock())._acquire_restore((-(2**63) - 1, 1)), repr(r)),
        "acquire_restore-owner-negative": lambda m: ((r := m.RLock())._acquire_restore((1, -1)), repr(r)),
        # A count of 0 leaves the inner lock taken with no level held.
        "acquire_restore-count0": lambda m: (
            (r := m.RLock())._acquire_restore((0, 0)),
            repr(r),
            r._is_owned(),
            getattr(r, "locked", lambda: "no locked()")(),
            r._recursion_count() if VERSION >= (3, 11) else None,
            outcome(lambda _: r.release(), m),
            outcome(lambda _: r._release_save(), m),
            repr(r),
        ),
        # Restored with another thread's ident: is the caller the owner now?
        "acquire_restore-foreign-owner": lambda m: (
            (r := m.RLock())._acquire_restore((5, 7)),
            r._is_owned(),
            outcome(lambda _: r.release(), m),
            outcome(lambda _: r._release_save(), m),
            repr(r),
        ),
        "with": lambda m: _with_lock_r(m.RLock()),
        "exit-unowned": lambda m: m.RLock().__exit__(None, None, None),
        "fork-reinit": lambda m: ((r := held(m, 2))._at_fork_reinit(), repr(r), r._is_owned()),
        "RLock(1)": lambda m: repr(m.RLock(1)),
        "RLock(x=1)": lambda m: repr(m.RLock(x=1)),
        "RLock(1, x=1)": lambda m: repr(m.RLock(1, x=1)),
        "RLock(None, None)": lambda m: repr(m.RLock(None, None)),
        "RLock(*(), **{})": lambda m: repr(m.RLock(*(), **{})),
        # A subclass that keeps the inherited __init__ ...
        "subclass(1)": lambda m: repr(type("Sub", (m.RLock,), {})(1)),
        "subclass(x=1)": lambda m: repr(type("Sub", (m.RLock,), {})(x=1)),
        # ... and one that takes its own arguments.
        "subclass-init(1)": lambda m: _subclass_with_init(m, 1),
        "subclass-init(x=1)": lambda m: _subclass_with_init(m, x=1),
        "subclass": lambda m: repr(type("Sub", (m.RLock,), {})()),
        "subclass-attrs": lambda m: ((s := type("Sub", (m.RLock,), {})()).__setattr__("x", 1), s.x, s.__dict__),
        "subclass-acquire": lambda m: ((s := type("Sub", (m.RLock,), {})()).acquire(), s._is_owned(), s.release()),
        "weakref": lambda m: (r := m.RLock(), weakref.ref(r)() is r)[1],
        "weakref-callback": lambda m: _weakref_callback(m.RLock()),
        "weakref-subclass-callback": lambda m: _weakref_callback(type("Sub", (m.RLock,), {})()),
        "dict": lambda m: m.RLock().__dict__,
        "setattr": lambda m: setattr(m.RLock(), "x", 1),
        "type-name": lambda m: (m.RLock.__name__, m.RLock.__qualname__, m.RLock.__module__),
        "dir": lambda m: [n for n in dir(m.RLock()) if not n.startswith("__")],
        "copy": lambda m: copy.copy(m.RLock()),
        "set-type-attr": lambda m: setattr(m.RLock, "x", 1),
    }
    if VERSION >= (3, 11):
        cases["recursion_count"] = lambda m: (m.RLock()._recursion_count(), held(m, 3)._recursion_count())
        cases["recursion_count-other-thread"] = lambda m: (r := held(m, 2), in_other_thread(m, r._recursion_count))[1]
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        cases[f"pickle-{proto}"] = lambda m, p=proto: pickle.dumps(m.RLock(), p)
    if VERSION < (3, 10):
        del cases["set-type-attr"]  # see the lock cases
    return cases


def _subclass_with_init(mod, *args, **kwargs):
    class Sub(mod.RLock):
        def __init__(self, *args, **kwargs):
            self.args = args, kwargs

    sub = Sub(*args, **kwargs)
    return sub.args, repr(sub)


def _locked_across_threads(mod):
    """locked() seen by the main thread while a second thread takes the
    RLock, holds it, and lets go."""
    rlock = mod.RLock()
    taken, go_on = mod.allocate_lock(), mod.allocate_lock()
    taken.acquire()
    go_on.acquire()
    done = mod.allocate_lock()
    done.acquire()

    def worker():
        rlock.acquire()
        rlock.acquire()
        taken.release()
        go_on.acquire()
        rlock.release()
        rlock.release()
        done.release()

    before = rlock.locked()
    mod.start_new_thread(worker, ())
    taken.acquire()
    during = rlock.locked(), rlock._is_owned(), rlock.acquire(False)
    go_on.release()
    done.acquire()
    return before, during, rlock.locked(), rlock.acquire(False), rlock.locked()


def _with_lock_r(rlock):
    with rlock:
        with rlock:
            inside = rlock._is_owned()
    return inside, rlock._is_owned()


RLOCK_CASES = _rlock_cases()


@pytest.mark.parametrize("name", sorted(RLOCK_CASES))
def test_rlock_case(name):
    assert_same(RLOCK_CASES[name])


def test_failed_release_leaves_lock_usable():
    lock = rthread.allocate_lock()
    with pytest.raises(RuntimeError):
        lock.release()
    assert not lock.locked()
    assert lock.acquire(False)
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_builtin_fixture_is_the_interpreter_module():
    assert BUILTIN.__spec__.origin == "built-in"


def test_rlock_subclass_cycle_is_collected(either):
    """A class that refers to one of its own instances forms a cycle through
    the instance's reference to its type; the collector must free it."""

    def make():
        class Sub(either.RLock):
            pass

        Sub.instance = Sub()
        Sub.instance.acquire()
        return weakref.ref(Sub), weakref.ref(Sub.instance)

    cls, obj = make()
    gc.collect()
    assert cls() is None and obj() is None


# Run in a child process: a daemon thread holds the lock while the
# interpreter finalizes, and an object collected during finalization tries to
# take it. The blocking forms are only tried where the timed one did not
# simply wait (a module that lets them wait would hang there).
_FINALIZATION_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    import rthread

    mod = rthread if sys.argv[2] == "rthread" else rthread._builtin_thread()
    new = mod.RLock if sys.argv[1] == "RLock" else mod.allocate_lock
    lock, free = new(), new()
    started = threading.Event()

    def hold():
        lock.acquire()
        started.set()
        while True:
            time.sleep(1)

    def outcome(call):
        try:
            return ("ok", call())
        except BaseException as exc:
            return ("raise", type(exc).__name__, str(exc))

    def at_exit():
        # Before finalization proper: an ordinary timed wait.
        print("atexit", outcome(lambda: lock.acquire(timeout=0.05)), flush=True)

    atexit.register(at_exit)

    class Cycle:
        def __init__(self):
            self.self_ref = self
            threading.Thread(target=hold, daemon=True).start()
            started.wait()

        def __del__(self):
            report = [
                sys.is_finalizing(),
                outcome(lambda: lock.acquire(False)),
                outcome(lambda: lock.acquire(timeout=0)),
            ]
            timed = outcome(lambda: lock.acquire(timeout=0.05))
            report.append(timed)
            if timed[0] == "raise":
                report += [
                    outcome(lock.acquire),
                    outcome(lambda: lock.acquire(True, -1)),
                    outcome(lock.__enter__),
                ]
            # A free lock is still taken; taking it again waits (lock) or
            # re-enters (RLock).
            report += [outcome(free.acquire), outcome(lambda: free.acquire(timeout=0.05))]
            print("del", report, flush=True)

    Cycle()
    """
)


@pytest.mark.parametrize("kind", ["lock", "RLock"])
def test_acquire_during_finalization(kind):
    def run(which):
        proc = subprocess.run(
            [sys.executable, "-c", _FINALIZATION_SCRIPT, kind, which],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.returncode, proc.stdout

    expected = run("builtin")
    assert "atexit" in expected[1]
    assert run("rthread") == expected
