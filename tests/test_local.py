"""``_local`` (``threading.local``): differential tests against the built-in,
and behaviour tests (isolation, ``__init__`` per thread, lifetime, cycles)
that run on both modules, so each test is checked against the built-in too."""

import copy
import gc
import pickle
import time
import weakref

import pytest

from parity import assert_same, outcome
import rthread
from conftest import BUILTIN

TIMEOUT = 30


def in_thread(mod, fn, start=None):
    """``fn()``'s outcome when run in a new thread (started with
    ``mod.start_new_thread`` unless ``start`` is given), waited for with a lock."""
    done = mod.allocate_lock()
    done.acquire()
    box = []

    def body():
        try:
            box.append(outcome(lambda _: fn(), mod))
        finally:
            done.release()

    (start or mod.start_new_thread)(body, ())
    assert done.acquire(timeout=TIMEOUT)
    return box[0]


class StrSub(str):
    pass


class EqAll:
    """A dict key that hashes like "x" and compares equal to everything."""

    def __hash__(self):
        return hash("x")

    def __eq__(self, other):
        return True


def _subclass(mod, body=None, name="Sub"):
    return type(name, (mod._local,), dict(body or {}))


def _counting(mod):
    """A subclass whose __init__ records its arguments, per thread."""
    calls = []

    class Counting(mod._local):
        def __init__(self, *args, **kwargs):
            calls.append((args, kwargs))
            self.args = args

    return Counting, calls


def _init_fails_in_other_threads(mod):
    creator = mod.get_ident()
    tries = []

    class Fails(mod._local):
        def __init__(self, value):
            tries.append(value)
            if mod.get_ident() != creator and len(tries) < 3:
                raise ValueError(f"init #{len(tries)}")
            self.value = value

    local = Fails(7)
    first = in_thread(mod, lambda: local.value)
    retry = in_thread(mod, lambda: (outcome(lambda _: local.value, mod), local.value, len(tries)))
    return first, retry, tries


def _slots(mod):
    class Slotted(mod._local):
        __slots__ = ("shared",)

    local = Slotted()
    local.shared = 1
    local_attr = outcome(lambda _: setattr(local, "private", 2), mod)
    seen = in_thread(mod, lambda: (local.shared, hasattr(local, "private"), local.__dict__))
    return local_attr, seen, local.__dict__


def _descriptors(mod):
    class Desc(mod._local):
        kind = "class attr"

        @property
        def prop(self):
            return ("prop", self.__dict__.get("x"))

        @prop.setter
        def prop(self, value):
            self.__dict__["x"] = value * 2

        @classmethod
        def cm(cls):
            return cls.__name__

        def method(self):
            return "method"

    d = Desc()
    d.prop = 5
    d.__dict__["prop"] = "shadow?"  # data descriptors win over the dict
    d.__dict__["method"] = "instance wins"  # non-data: the dict wins
    return (d.prop, d.x, d.cm(), d.method, d.kind, in_thread(mod, lambda: (d.prop, d.kind, d.__dict__)))


def _getattr_hooks(mod):
    class Hooks(mod._local):
        def __getattr__(self, name):
            return ("fallback", name)

    class Override(mod._local):
        def __getattribute__(self, name):
            if name == "magic":
                return 42
            return super().__getattribute__(name)

        def __setattr__(self, name, value):
            super().__setattr__(name, ("wrapped", value))

        def __delattr__(self, name):
            super().__delattr__(name.upper())

    h = Hooks()
    h.real = 1
    o = Override()
    o.a = 1
    o.A = 2
    del o.a
    return (h.real, h.missing, in_thread(mod, lambda: h.real), o.magic, o.__dict__, outcome(lambda _: o.zz, mod))


def _class_assignment(mod):
    A = _subclass(mod, name="A")
    B = _subclass(mod, name="B")
    a = A()
    a.x = 1
    a.__class__ = B
    result = [type(a).__name__, a.x]
    # To the base type: refused (an immutable heap type from 3.10, a static
    # type on 3.9, as the built-in's).
    result.append(outcome(lambda _: setattr(a, "__class__", mod._local), mod))
    return result


def _init_per_thread(mod):
    Counting, calls = _counting(mod)
    local = Counting(1, k=2)
    in_thread(mod, lambda: None)  # a thread that never uses it: no call
    seen = in_thread(mod, lambda: local.args)
    # Created in a thread, then used from a thread that thread started.
    nested = in_thread(mod, lambda: (inner := Counting(3), in_thread(mod, lambda: inner.args))[1])
    return seen, nested, calls


def _dict_in_new_thread(mod):
    Counting, calls = _counting(mod)
    local = Counting(1)

    def other():
        results = [outcome(lambda _: setattr(local, "__dict__", {}), mod)]
        results.append(outcome(lambda _: delattr(local, "__dict__"), mod))
        results.append(local.__dict__)
        return results

    return in_thread(mod, other), calls


def _cases():
    def attrs(mod):
        local = mod._local()
        local.x = 1
        local.y = [2]
        del local.x
        return local.__dict__, outcome(lambda _: local.x, mod), local.y

    cases = {
        "repr": lambda m: repr(m._local()),
        "repr-subclass": lambda m: repr(_subclass(m)()),
        "args": lambda m: m._local(1),
        "kwargs": lambda m: m._local(x=1),
        "empty-args": lambda m: type(m._local(*(), **{})).__name__,
        "new-args": lambda m: m._local.__new__(m._local, 1),
        "new-not-subtype": lambda m: m._local.__new__(int),
        "init-explicit-args": lambda m: m._local.__init__(m._local(), 1),
        "subclass-no-init-args": lambda m: _subclass(m)(1),
        "subclass-no-init-kwargs": lambda m: _subclass(m)(a=1),
        "subclass-init-args": lambda m: _counting(m)[0](1, a=2).args,
        "attrs": attrs,
        "get-missing": lambda m: m._local().missing,
        "del-missing": lambda m: delattr(m._local(), "missing"),
        "get-missing-subclass": lambda m: _subclass(m)().missing,
        "del-missing-subclass": lambda m: delattr(_subclass(m)(), "missing"),
        "dict": lambda m: ((l := m._local()).__setattr__("a", 1), l.__dict__, vars(l), l.__dict__ is l.__dict__),
        "set-dict": lambda m: setattr(m._local(), "__dict__", {}),
        "del-dict": lambda m: delattr(m._local(), "__dict__"),
        "set-dict-subclass": lambda m: setattr(_subclass(m)(), "__dict__", {}),
        "del-dict-subclass": lambda m: delattr(_subclass(m)(), "__dict__"),
        "set-dict-strsub": lambda m: setattr(m._local(), StrSub("__dict__"), {}),
        "get-dict-strsub": lambda m: getattr(m._local(), StrSub("__dict__")),
        "strsub-names": lambda m: ((l := m._local()).__setattr__(StrSub("x"), 1), l.x, getattr(l, StrSub("x")), l.__dict__),
        "eqall-key": lambda m: ((l := m._local()).__dict__.__setitem__(EqAll(), 1), l.x),
        "nonstr-setattr": lambda m: setattr(m._local(), 1, 2),
        "nonstr-getattr": lambda m: getattr(m._local(), 1),
        "slot-wrapper-nonstr-get": lambda m: m._local.__getattribute__(m._local(), 1),
        "slot-wrapper-nonstr-set": lambda m: m._local.__setattr__(m._local(), 1, 2),
        "slot-wrapper-get": lambda m: ((l := m._local()).__setattr__("q", 3), m._local.__getattribute__(l, "q")),
        "object-setattr": lambda m: object.__setattr__(m._local(), "q", 1),
        "object-getattribute-dict": lambda m: object.__getattribute__(m._local(), "__dict__"),
        "class-shadowed-base": lambda m: ((l := m._local()).__dict__.__setitem__("__class__", 5), l.__class__),
        "class-shadowed-subclass": lambda m: ((l := _subclass(m)()).__dict__.__setitem__("__class__", 5), type(l.__class__).__name__),
        "doc-shadowed": lambda m: ((l := m._local()).__setattr__("__doc__", "mine"), l.__doc__),
        "set-class-attr": lambda m: setattr(m._local(), "__class__", int),
        "class-assignment": _class_assignment,
        "weakref": lambda m: (l := m._local(), weakref.ref(l)() is l)[1],
        "weakref-subclass": lambda m: (l := _subclass(m)(), weakref.ref(l)() is l)[1],
        "gc-tracked": lambda m: gc.is_tracked(m._local()),
        "hash-eq": lambda m: ((l := m._local()) == l, l == m._local(), hash(l) == hash(l)),
        "dir": lambda m: [n for n in dir(m._local()) if n not in IGNORED_DIR],
        "dir-with-attrs": lambda m: ((l := m._local()).__setattr__("zz", 1), [n for n in dir(l) if n not in IGNORED_DIR])[1],
        "type-names": lambda m: (m._local.__name__, m._local.__qualname__, m._local.__module__),
        "type-docs": lambda m: [m._local.__doc__ is None, vars(m._local)["__doc__"] is None, m._local().__doc__ is None],
        # DISALLOW_INSTANTIATION, IMMUTABLETYPE, HEAPTYPE, BASETYPE, HAVE_GC.
        "type-flags": lambda m: [bool(m._local.__flags__ & 1 << bit) for bit in (7, 8, 9, 10, 14)],
        "type-offsets": lambda m: (m._local.__dictoffset__, m._local.__weakrefoffset__ > 0),
        "subclass-offsets": lambda m: (_subclass(m).__dictoffset__ != 0, sorted(_subclass(m).__dict__)),
        "slots-dict": lambda m: type(_subclass(m, {"__slots__": ("__dict__",)})()).__name__,
        "slots-weakref": lambda m: _subclass(m, {"__slots__": ("__weakref__",)}),
        "copy": lambda m: copy.copy(m._local()),
        "deepcopy": lambda m: copy.deepcopy(m._local()),
        "copy-subclass": lambda m: copy.copy(_subclass(m)()),
        "reduce": lambda m: m._local().__reduce_ex__(2),
        "slots": _slots,
        "descriptors": _descriptors,
        "getattr-hooks": _getattr_hooks,
        "other-thread-empty": lambda m: ((l := m._local()).__setattr__("x", 1), in_thread(m, lambda: (l.__dict__, outcome(lambda _: l.x, m))), l.x)[1:],
        "other-thread-sets": lambda m: ((l := m._local()).__setattr__("x", 1), in_thread(m, lambda: setattr(l, "x", 2) or l.x), l.x)[1:],
        "subclass-init-per-thread": _init_per_thread,
        "init-touch-in-thread": lambda m: (C := _counting(m), l := C[0]("a"), in_thread(m, lambda: (l.args, l.__dict__, l.args)), C[1])[2:],
        "init-fails-in-thread": _init_fails_in_other_threads,
        "dict-ops-in-new-thread": _dict_in_new_thread,
        "subclass-new-without-init": lambda m: (C := _counting(m), l := m._local.__new__(C[0], 5), l.__dict__, in_thread(m, lambda: l.args), C[1])[2:],
    }
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        cases[f"pickle-{proto}"] = lambda m, p=proto: pickle.dumps(m._local(), p)
    # Not compared: __basicsize__ and __sizeof__, which legitimately differ.
    return cases


IGNORED_DIR = set(dir(object()))
CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_local_case(name):
    assert_same(CASES[name])


def test_type_dict_keys():
    keys = lambda m: sorted(vars(m._local))
    assert keys(rthread) == keys(BUILTIN)


# --- behaviour, on both modules -------------------------------------------


def _wait_freed():
    """A weakref-able object and a lock that is released when it dies."""

    class Payload:
        pass

    freed = rthread.allocate_lock()
    freed.acquire()
    obj = Payload()
    ref = weakref.ref(obj, lambda _: freed.release())
    return obj, ref, freed


def test_isolation_between_threads(either):
    local = either._local()
    local.value = "main"
    n = 20
    results = {}
    guard = either.allocate_lock()
    all_written, all_read = either.allocate_lock(), either.allocate_lock()
    all_written.acquire()
    all_read.acquire()
    count = [0, 0]

    def worker(i):
        local.value = i
        local.items = [i]
        with guard:
            count[0] += 1
            if count[0] == n:
                all_written.release()
        all_written.acquire()  # everyone has written: read back
        all_written.release()
        results[i] = (local.value, local.items, sorted(local.__dict__))
        with guard:
            count[1] += 1
            if count[1] == n:
                all_read.release()

    for i in range(n):
        either.start_new_thread(worker, (i,))
    assert all_read.acquire(timeout=TIMEOUT)
    assert results == {i: (i, [i], ["items", "value"]) for i in range(n)}
    assert local.value == "main"
    assert not hasattr(local, "items")


def test_ping_pong_keeps_each_threads_view(either):
    """Two threads alternating on one local (every switch changes the thread
    that last used it) each always see their own value."""
    local = either._local()
    local.x = "main"
    go_main, go_thread = either.allocate_lock(), either.allocate_lock()
    go_main.acquire()
    go_thread.acquire()
    seen = []

    def other():
        local.x = "other"
        for _ in range(200):
            go_main.release()
            go_thread.acquire()
            seen.append(local.x)
            local.x = "other"
        go_main.release()

    either.start_new_thread(other, ())
    for _ in range(200):
        assert go_main.acquire(timeout=TIMEOUT)
        assert local.x == "main"
        local.x = "main"
        go_thread.release()
    assert go_main.acquire(timeout=TIMEOUT)
    assert seen == ["other"] * 200


def test_subclass_init_runs_once_per_thread_with_original_args(either):
    Counting, calls = _counting(either)
    marker = object()
    local = Counting(1, marker, key=marker)
    assert calls == [((1, marker), {"key": marker})]
    for _ in range(3):
        out = in_thread(either, lambda: [local.args for _ in range(3)])
        assert out[0] == "ok"
    assert len(calls) == 4
    assert all(c == ((1, marker), {"key": marker}) for c in calls)
    local.args  # the creating thread: no new call
    assert len(calls) == 4


def test_thread_dict_freed_when_thread_ends(either):
    local = either._local()
    holder = {}

    def body():
        obj, holder["ref"], holder["freed"] = _wait_freed()
        local.obj = obj

    assert in_thread(either, body)[0] == "ok"
    assert holder["freed"].acquire(timeout=TIMEOUT), "thread's dict outlived the thread"
    assert holder["ref"]() is None
    assert not hasattr(local, "obj")


def test_thread_dict_freed_for_threads_started_elsewhere():
    """rthread's local in threads rthread did not start: the built-in
    ``_thread``, and (if available) a thread created from C."""
    for start in [BUILTIN.start_new_thread] + _c_thread_starters():
        local = rthread._local()
        holder = {}

        def body():
            obj, holder["ref"], holder["freed"] = _wait_freed()
            local.obj = obj
            holder["seen"] = list(local.__dict__)

        assert in_thread(rthread, body, start=start)[0] == "ok"
        assert holder["freed"].acquire(timeout=TIMEOUT)
        assert list(holder["seen"]) == ["obj"]
        assert local.__dict__ == {}


def _c_thread_starters():
    try:
        import _testcapi
    except ImportError:
        return []

    def start(fn, args):
        # Runs fn in a C thread (PyGILState_Ensure / Release) and waits for
        # that thread to exit, so its thread state is gone when this returns.
        _testcapi.call_in_temporary_c_thread(lambda: fn(*args))

    return [start]


def test_main_thread_dict_freed_with_the_local(either):
    local = either._local()
    obj, ref, freed = _wait_freed()
    local.obj = obj
    del obj
    assert ref() is not None
    del local
    assert freed.acquire(False), "dropping the local kept the main thread's dict"


def test_dropping_local_frees_every_threads_dict(either):
    """Threads still running: dropping the local frees their dicts at once."""
    local = either._local()
    n = 5
    refs, freed_locks = [], []
    ready, finish = either.allocate_lock(), either.allocate_lock()
    ready.acquire()
    finish.acquire()
    count = [0]
    guard = either.allocate_lock()
    done = either.allocate_lock()
    done.acquire()

    def worker():
        obj, ref, freed = _wait_freed()
        local.obj = obj
        del obj
        with guard:
            refs.append(ref)
            freed_locks.append(freed)
            count[0] += 1
            if count[0] == n:
                ready.release()
        finish.acquire()
        finish.release()
        with guard:
            count[0] -= 1
            if count[0] == 0:
                done.release()

    for _ in range(n):
        either.start_new_thread(worker, ())
    assert ready.acquire(timeout=TIMEOUT)
    assert all(r() is not None for r in refs)
    del local
    assert all(f.acquire(False) for f in freed_locks)
    finish.release()
    assert done.acquire(timeout=TIMEOUT)


def test_reused_thread_states_do_not_see_old_data(either):
    """Threads started one after another (their thread states and dicts are
    likely to reuse the same addresses) each start with an empty dict."""
    local = either._local()
    for i in range(100):
        out = in_thread(either, lambda: (sorted(local.__dict__), setattr(local, "x", i)))
        assert out == ("ok", "([], None)"), (i, out)


def test_cycle_through_local_is_collected(either):
    gc.collect()
    local = either._local()
    local.me = local
    ref = weakref.ref(local)
    del local
    gc.collect()
    assert ref() is None


def test_cycle_through_subclass_args_is_collected(either):
    class WithArgs(either._local):
        def __init__(self, box):
            self.seen = True

    class Box:
        pass

    box = Box()
    box.local = WithArgs(box)
    ref = weakref.ref(box)
    del box
    gc.collect()
    assert ref() is None


def test_cycle_through_other_threads_dict_is_collected(either):
    """local -> (another, still running thread's) dict -> value -> local."""
    local = either._local()
    ref = weakref.ref(local)
    entered, finish = either.allocate_lock(), either.allocate_lock()
    entered.acquire()
    finish.acquire()
    done = either.allocate_lock()
    done.acquire()

    def worker():
        local.me = local
        entered.release()
        finish.acquire()
        done.release()

    either.start_new_thread(worker, ())
    assert entered.acquire(timeout=TIMEOUT)
    del local
    gc.collect()
    assert ref() is None
    finish.release()
    assert done.acquire(timeout=TIMEOUT)


def test_thread_data_cycle_freed_after_thread_end(either):
    """The thread's dict holds the local itself: the thread's end frees the
    dict (and its cycle) by refcounting; the local survives, empty."""
    local = either._local()
    holder = {}

    def body():
        obj, holder["ref"], holder["freed"] = _wait_freed()
        obj.local = local
        local.obj = obj

    in_thread(either, body)
    assert holder["freed"].acquire(timeout=TIMEOUT)
    assert local.__dict__ == {}


def test_no_leak_creating_many_locals(either):
    """Locals touched by a long-lived thread and then dropped leave nothing
    behind that keeps objects alive."""
    refs = []

    class Payload:
        pass

    for _ in range(2000):
        local = either._local()
        p = Payload()
        local.p = p
        refs.append(weakref.ref(p))
        del p
    del local
    assert all(r() is None for r in refs)


def test_many_threads(either):
    local = either._local()
    n = 100
    done = either.allocate_lock()
    done.acquire()
    guard = either.allocate_lock()
    errors = []
    finished = [0]
    refs = []

    class Payload:
        pass

    def worker(i):
        try:
            p = Payload()
            with guard:
                refs.append(weakref.ref(p))
            for j in range(200):
                local.v = (i, j)
                local.p = p
                if local.v != (i, j):
                    errors.append((i, j, local.v))
        except BaseException as exc:  # noqa: B902
            errors.append(exc)
        finally:
            with guard:
                finished[0] += 1
                if finished[0] == n:
                    done.release()

    for i in range(n):
        either.start_new_thread(worker, (i,))
    assert done.acquire(timeout=TIMEOUT)
    assert errors == []
    for _ in range(TIMEOUT * 100):  # the last threads may still be exiting
        if all(r() is None for r in refs):
            break
        time.sleep(0.01)
    assert all(r() is None for r in refs)
    assert not hasattr(local, "v")


def test_gc_clear_then_reuse(either):
    """A local cleared by the collector (while a thread still references it
    through a cycle's survivor) stays usable, like test_derived_cycle_dealloc."""

    class Local(either._local):
        pass

    cycle = [Local()]
    cycle.append(cycle)
    cycle[0].foo = "bar"
    del cycle
    gc.collect()
    fresh = [Local() for _ in range(10)]
    assert not any(hasattr(f, "foo") for f in fresh)


def test_repr_matches_object_repr(either):
    local = either._local()
    assert repr(local) == object.__repr__(local)
    Sub = _subclass(either)
    s = Sub()
    assert repr(s) == f"<{__name__}.Sub object at {hex(id(s))}>"


def test_thread_end_with_reentrant_finalizers(either):
    """While a dead thread's dicts are released, finalizers use and drop other
    locals (one of them with a dict in that same dying thread)."""
    holder = {"a": either._local(), "b": either._local(), "c": either._local()}
    log = []

    class Finalizer:
        def __del__(self):
            c = holder["c"]
            c.seen = "finalizer"  # a local used from the dying thread
            log.append(sorted(c.__dict__))
            holder.pop("b", None)  # drops a local linked to the dying thread

    def body():
        holder["a"].f = Finalizer()
        holder["b"].g = Finalizer()
        holder["c"].h = 1

    assert in_thread(either, body)[0] == "ok"
    for _ in range(TIMEOUT * 100):
        if len(log) == 2:
            break
        time.sleep(0.01)
    assert len(log) == 2
    assert "b" not in holder
    assert holder["a"].__dict__ == {} and holder["c"].__dict__ == {}


def test_thread_end_reentry_leaves_no_thread_state_dict_behind():
    """rthread only. As a thread started here ends, a finalizer in a local's
    dict uses a local again and stores a probe in the thread-state dict. On
    3.9 - 3.13, CPython's PyThreadState_Clear makes a new thread-state dict if
    one is asked for while it clears the old one, and never frees it (the
    built-in's threads leak it too); rthread releases its locals' dicts
    before the thread state is cleared, so the probe goes with the thread."""
    ctypes = pytest.importorskip("ctypes")
    raw_get_tdict = ctypes.pythonapi.PyThreadState_GetDict
    raw_get_tdict.argtypes = []
    raw_get_tdict.restype = ctypes.c_void_p  # a borrowed reference

    def get_tdict():
        return ctypes.cast(raw_get_tdict(), ctypes.py_object).value

    a, c = rthread._local(), rthread._local()
    probes = []

    class Probe:
        pass

    class Finalizer:
        def __del__(self):
            c.seen = True  # a new dict for c in the ending thread
            probe = Probe()
            get_tdict()["rthread test probe"] = probe
            probes.append(weakref.ref(probe))

    for _ in range(3):
        assert in_thread(rthread, lambda: setattr(a, "f", Finalizer()))[0] == "ok"
    deadline = time.monotonic() + 10  # a probe left behind is never freed
    while time.monotonic() < deadline:
        gc.collect()
        if len(probes) == 3 and all(p() is None for p in probes):
            break
        time.sleep(0.01)
    assert len(probes) == 3
    assert [p() is None for p in probes] == [True] * 3
    assert not hasattr(c, "seen")  # and this thread's dict of c is untouched


def test_local_dropped_while_its_dicts_are_released(either):
    """A value in one thread's dict drops the last reference to another local
    as the first local goes away; nothing is left behind."""
    refs = []

    class Payload:
        pass

    class DropOther:
        def __init__(self, other):
            self.other = other

    for _ in range(50):
        inner = either._local()
        p = Payload()
        inner.p = p
        refs.append(weakref.ref(p))
        outer = either._local()
        outer.d = DropOther(inner)
        del inner, p
        in_thread(either, lambda: setattr(outer, "t", DropOther(outer)))
        del outer
    gc.collect()
    assert all(r() is None for r in refs)


def test_init_failure_in_creating_thread(either):
    class Fails(either._local):
        def __init__(self, *args):
            raise KeyError("nope")

    with pytest.raises(KeyError):
        Fails(1)


def test_init_sees_its_own_thread_dict(either):
    class SelfUse(either._local):
        def __init__(self, start):
            self.n = start
            self.n += 1
            self.snapshot = dict(self.__dict__)

    local = SelfUse(10)
    out = in_thread(either, lambda: (local.n, local.snapshot))
    assert out == ("ok", "(11, {'n': 11})")
    assert local.n == 11
