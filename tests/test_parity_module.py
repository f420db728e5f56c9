"""Differential tests: the module surface, functions and their errors match the
built-in ``_thread`` of the running interpreter."""

import inspect
import signal
import sys
import types

import pytest

import rthread
from conftest import BUILTIN
from parity import VERSION, assert_same, normalize

NATIVE = rthread._rthread


def _names(mod):
    return {n for n in dir(mod) if not (n.startswith("__") and n.endswith("__"))}


def test_every_name_of_the_builtin_exists():
    assert sorted(_names(BUILTIN) - _names(NATIVE)) == []


# CPython 3.14's thread-name API, which rthread offers on every version.
EXTENSIONS = {"set_name", "_get_name", "_NAME_MAXLEN"}


def test_no_name_the_builtin_lacks():
    assert sorted(_names(NATIVE) - _names(BUILTIN) - EXTENSIONS) == []


def test_package_reexports_the_native_module():
    for name in _names(NATIVE):
        assert getattr(rthread, name) is getattr(NATIVE, name), name


def _describe(obj):
    """What a differential test compares about one module attribute."""
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError) as exc:
        signature = type(exc).__name__
    return (
        type(obj).__name__,
        normalize(repr(obj)).replace("rthread._rthread", "_thread"),
        getattr(obj, "__qualname__", None),
        getattr(obj, "__text_signature__", None),
        signature,
        callable(obj),
        isinstance(obj, types.BuiltinFunctionType),
    )


@pytest.mark.parametrize("name", sorted(_names(BUILTIN)))
def test_attribute_matches(name):
    expected = _describe(getattr(BUILTIN, name))
    actual = _describe(getattr(NATIVE, name))
    assert actual == expected


def test_aliases_are_distinct_function_objects():
    for a, b in [("allocate", "allocate_lock"), ("start_new", "start_new_thread"), ("exit_thread", "exit")]:
        assert (getattr(NATIVE, a) is getattr(NATIVE, b)) == (getattr(BUILTIN, a) is getattr(BUILTIN, b))
        assert (getattr(NATIVE, a) == getattr(NATIVE, b)) == (getattr(BUILTIN, a) == getattr(BUILTIN, b))


def test_functions_do_not_bind_as_methods():
    # threading's tests store module functions as class attributes.
    class Holder:
        get_ident = NATIVE.get_ident
        allocate_lock = NATIVE.allocate_lock

    assert Holder().get_ident() == NATIVE.get_ident()
    assert isinstance(Holder().allocate_lock(), NATIVE.LockType)


def test_constants():
    assert_same(lambda m: (m.TIMEOUT_MAX, type(m.TIMEOUT_MAX)))
    assert_same(lambda m: m.error is RuntimeError)
    if VERSION >= (3, 13):
        assert NATIVE.lock is NATIVE.LockType


class _Index:
    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class _Float:
    def __float__(self):
        return 0.01


def _done_handle(m):
    handle = m._make_thread_handle(5)
    handle._set_done()
    return handle


# Timeouts _ThreadHandle.join converts like Lock.acquire (the accepted types and
# messages changed in 3.14 and 3.15).
JOIN_TIMEOUTS = {
    "Decimal": lambda: __import__("decimal").Decimal(1),
    "Fraction": lambda: __import__("fractions").Fraction(1, 2),
    "float-obj": _Float,
    "index-obj": lambda: _Index(0),
    "1e100": lambda: 1e100,
    "TIMEOUT_MAX+1": lambda: NATIVE.TIMEOUT_MAX + 1,
    "2**63": lambda: 2**63,
    "9223372037": lambda: 9223372037,
    "nan": lambda: float("nan"),
    "-1": lambda: -1,
    "-2.5": lambda: -2.5,
    "1.5": lambda: 1.5,
    "True": lambda: True,
    "bytes": lambda: b"1",
}


def _bad(fn):
    return lambda m: fn(m)


CALLS = {
    "get_ident(1)": lambda m: m.get_ident(1),
    "get_ident(x=1)": lambda m: m.get_ident(x=1),
    "get_native_id(1)": lambda m: m.get_native_id(1),
    "allocate_lock(1)": lambda m: m.allocate_lock(1),
    "allocate(x=1)": lambda m: m.allocate(x=1),
    "exit()": lambda m: m.exit(),
    "exit(1)": lambda m: m.exit(1),
    "exit_thread()": lambda m: m.exit_thread(),
    "_count(1)": lambda m: m._count(1),
    "_count-type": lambda m: type(m._count()),
    "stack_size()": lambda m: m.stack_size(),
    "stack_size(0)": lambda m: m.stack_size(0),
    "stack_size(1)": lambda m: m.stack_size(1),
    "stack_size(32767)": lambda m: m.stack_size(32767),
    "stack_size(-1)": lambda m: m.stack_size(-1),
    "stack_size(2**63)": lambda m: m.stack_size(2**63),
    "stack_size(2**64)": lambda m: m.stack_size(2**64),
    "stack_size(-2**64)": lambda m: m.stack_size(-(2**64)),
    "stack_size(1.5)": lambda m: m.stack_size(1.5),
    "stack_size('1')": lambda m: m.stack_size("1"),
    "stack_size(None)": lambda m: m.stack_size(None),
    "stack_size(size=1)": lambda m: m.stack_size(size=1),
    "stack_size(1, 2)": lambda m: m.stack_size(1, 2),
    "stack_size-sequence": lambda m: (m.stack_size(), m.stack_size(32768), m.stack_size(32769), m.stack_size(65536), m.stack_size(0), m.stack_size()),
    "stack_size(True)": lambda m: (m.stack_size(True), m.stack_size(0)),
    "stack_size(-2**63)": lambda m: m.stack_size(-(2**63)),
    "stack_size(32768)": lambda m: (m.stack_size(32768), m.stack_size(0)),
    "stack_size(53247)": lambda m: (m.stack_size(53247), m.stack_size(0)),
    "stack_size(53248)": lambda m: (m.stack_size(53248), m.stack_size(0)),
    "stack_size(index)": lambda m: (m.stack_size(_Index(65536)), m.stack_size(0)),
    "start_new_thread()": lambda m: m.start_new_thread(),
    "start_new_thread(f)": lambda m: m.start_new_thread(print),
    "start_new_thread(1, ())": lambda m: m.start_new_thread(1, ()),
    "start_new_thread(f, [])": lambda m: m.start_new_thread(print, []),
    "start_new_thread(f, (), None)": lambda m: m.start_new_thread(print, (), None),
    "start_new_thread(f, (), [])": lambda m: m.start_new_thread(print, (), []),
    "start_new_thread(f, (), {}, 1)": lambda m: m.start_new_thread(print, (), {}, 1),
    "start_new_thread(kw)": lambda m: m.start_new_thread(function=print, args=()),
    "start_new(1, ())": lambda m: m.start_new(1, ()),
    "start_new_thread(None, ())": lambda m: m.start_new_thread(None, ()),
    "interrupt_main(1, 2)": lambda m: m.interrupt_main(1, 2),
    "interrupt_main(signum=2)": lambda m: m.interrupt_main(signum=2),
    "interrupt_main(99999)": lambda m: m.interrupt_main(99999),
    "interrupt_main(-1)": lambda m: m.interrupt_main(-1),
    "interrupt_main(0)": lambda m: m.interrupt_main(0),
    "interrupt_main('x')": lambda m: m.interrupt_main("x"),
    "interrupt_main(None)": lambda m: m.interrupt_main(None),
    "interrupt_main(2**31)": lambda m: m.interrupt_main(2**31),
    "interrupt_main(NSIG)": lambda m: m.interrupt_main(signal.NSIG),
}
if VERSION >= (3, 12):
    CALLS.update({
        "daemon_threads_allowed()": lambda m: m.daemon_threads_allowed(),
        "daemon_threads_allowed(1)": lambda m: m.daemon_threads_allowed(1),
        "_is_main_interpreter()": lambda m: m._is_main_interpreter(),
    })
if VERSION < (3, 13):
    CALLS.update({
        "_set_sentinel()": lambda m: (repr(l := m._set_sentinel()), l.locked(), type(l) is m.LockType),
        "_set_sentinel(1)": lambda m: m._set_sentinel(1),
    })
else:
    CALLS.update({
        "_get_main_thread_ident()": lambda m: m._get_main_thread_ident() == m.get_ident(),
        "_get_main_thread_ident(1)": lambda m: m._get_main_thread_ident(1),
        "_make_thread_handle('x')": lambda m: m._make_thread_handle("x"),
        "_make_thread_handle(-1)": lambda m: m._make_thread_handle(-1),
        "_make_thread_handle(2**64)": lambda m: m._make_thread_handle(2**64),
        "_make_thread_handle(True)": lambda m: repr(m._make_thread_handle(True)),
        "_make_thread_handle(5)": lambda m: (repr(h := m._make_thread_handle(5)), h.ident, h.is_done(), h.join(0.01), h._set_done(), h.is_done(), h.join()),
        "_make_thread_handle(me).join": lambda m: m._make_thread_handle(m.get_ident()).join(0.01),
        "_make_thread_handle()": lambda m: m._make_thread_handle(),
        "_ThreadHandle()": lambda m: (repr(h := m._ThreadHandle()), h.ident, h.is_done()),
        "_ThreadHandle(1, x=2)": lambda m: repr(m._ThreadHandle(1, x=2)),
        "_ThreadHandle.join-not-started": lambda m: m._ThreadHandle().join(),
        "_ThreadHandle._set_done-not-started": lambda m: m._ThreadHandle()._set_done(),
        "_ThreadHandle.join(1, 2)": lambda m: m._ThreadHandle().join(1, 2),
        "_ThreadHandle.join(timeout=1)": lambda m: m._ThreadHandle().join(timeout=1),
        "_ThreadHandle.join('x')": lambda m: m._ThreadHandle().join("x"),
        "_ThreadHandle.is_done(1)": lambda m: m._ThreadHandle().is_done(1),
        "_ThreadHandle-dir": lambda m: [n for n in dir(m._ThreadHandle()) if not n.startswith("__")],
        "_ThreadHandle-subclass": lambda m: type("X", (m._ThreadHandle,), {}),
        "_ThreadHandle-weakref": lambda m: __import__("weakref").ref(m._ThreadHandle()),
        "_ThreadHandle-set-ident": lambda m: setattr(m._ThreadHandle(), "ident", 3),
        **{
            f"_ThreadHandle.join({key})": (lambda make: lambda m: _done_handle(m).join(make()))(make)
            for key, make in JOIN_TIMEOUTS.items()
        },
        "_ThreadHandle.join-running(0)": lambda m: m._make_thread_handle(5).join(0),
        "_ThreadHandle.join-unstarted(Decimal)": lambda m: m._ThreadHandle().join(__import__("decimal").Decimal(1)),
        "start_joinable_thread()": lambda m: m.start_joinable_thread(),
        "start_joinable_thread(1)": lambda m: m.start_joinable_thread(1),
        "start_joinable_thread(f, handle=1)": lambda m: m.start_joinable_thread(print, handle=1),
        "start_joinable_thread(f, 1, 2, 3)": lambda m: m.start_joinable_thread(print, 1, 2, 3),
        "start_joinable_thread(f, x=1)": lambda m: m.start_joinable_thread(print, x=1),
        "start_joinable_thread-join": lambda m: ((h := m.start_joinable_thread(lambda: None)).join(), h.is_done(), h.join(0.1), h.join(-5), h.join(None)),
        "start_joinable_thread-reuse": lambda m: m.start_joinable_thread(lambda: None, handle=(h := m.start_joinable_thread(lambda: None), h.join())[0]),
        "start_joinable_thread-given-handle": lambda m: ((h := m._ThreadHandle()), m.start_joinable_thread(lambda: None, handle=h) is h, h.join(), h.is_done())[1:],
        "start_joinable_thread-handle-None": lambda m: (h := m.start_joinable_thread(lambda: None, handle=None), h.join(), h.is_done())[2],
        "start_joinable_thread-daemon-str": lambda m: (h := m.start_joinable_thread(lambda: None, daemon=""), h.join())[1],
    })


@pytest.mark.parametrize("name", sorted(CALLS))
def test_call(name):
    try:
        assert_same(CALLS[name])
    finally:
        BUILTIN.stack_size(0)
        NATIVE.stack_size(0)


def test_interrupt_main_runs_the_handler():
    for mod in (BUILTIN, NATIVE):
        seen = []
        old = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
        try:
            mod.interrupt_main()
            for _ in range(1000):  # the handler runs at the next check
                if seen:
                    break
        finally:
            signal.signal(signal.SIGINT, old)
        assert seen == [signal.SIGINT], mod


@pytest.mark.skipif(VERSION < (3, 10), reason="interrupt_main takes no signal number before 3.10")
def test_interrupt_main_with_a_signal_number():
    for mod in (BUILTIN, NATIVE):
        seen = []
        old = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
        try:
            mod.interrupt_main(signal.SIGUSR1)
            for _ in range(1000):
                if seen:
                    break
        finally:
            signal.signal(signal.SIGUSR1, old)
        assert seen == [signal.SIGUSR1], mod


def test_interrupt_main_default_handler_raises_keyboard_interrupt():
    for mod in (BUILTIN, NATIVE):
        with pytest.raises(KeyboardInterrupt):
            mod.interrupt_main()
            for _ in range(1000):
                pass


def _method_signatures(mod):
    out = {}
    for cls in ("LockType", "RLock"):
        for name in dir(getattr(mod, cls)):
            if name.startswith("__") and name not in ("__enter__", "__exit__"):
                continue
            method = getattr(getattr(mod, cls), name)
            out[cls, name] = getattr(method, "__text_signature__", None)
    return out


def test_method_text_signatures_match():
    # inspect.signature() of the methods (3.13 has them; before, none).
    assert _method_signatures(NATIVE) == _method_signatures(BUILTIN)
