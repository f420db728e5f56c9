"""OS-visible thread names: set_name / _get_name / _NAME_MAXLEN (CPython 3.14's
API, offered by rthread on every version with 3.14's rules).

On 3.14+ every case is compared with the built-in; before 3.14 the built-in has
no set_name, so the same cases check the rules directly.
"""

import subprocess
import sys
import textwrap

import pytest

import rthread
from conftest import BUILTIN
from parity import VERSION, outcome
from test_threads import gettid, run_in_thread

HAS_BUILTIN = hasattr(BUILTIN, "set_name")


def _comm():
    """What the kernel (and so top -H, ps -L, gdb) shows for this thread."""
    with open(f"/proc/self/task/{gettid()}/comm", encoding="utf-8", errors="replace") as f:
        return f.read().rstrip("\n")


class Str(str):
    pass


# name given to set_name -> what _get_name() reads back (3.14's rules, UTF-8
# filesystem encoding): encoded with "replace", cut to 15 bytes even inside a
# character, a NUL ends the name, read back with surrogateescape.
NAMES = {
    "short": ("worker-1", "worker-1"),
    "long": ("a-very-long-thread-name", "a-very-long-thr"),
    "two-byte-split": ("é" * 10, "é" * 7 + "\udcc3"),
    "four-byte-split": ("😀" * 5, "😀" * 3 + "\udcf0\udc9f\udc98"),
    "lone-surrogate": ("\udc80", "?"),
    "embedded-nul": ("a\0b", "a"),
    "nul-first": ("\0abc", ""),
    "empty": ("", ""),
    "str-subclass": (Str("sub"), "sub"),
    "exactly-15": ("x" * 15, "x" * 15),
}


def _set_and_get(mod, name):
    def work():
        mod.set_name(name)
        return mod._get_name(), _comm()

    return run_in_thread(mod, work)


@pytest.mark.parametrize("case", sorted(NAMES))
def test_name_round_trip(case):
    name, expected = NAMES[case]
    got, comm = _set_and_get(rthread, name)
    if HAS_BUILTIN:
        assert (got, comm) == _set_and_get(BUILTIN, name)
    assert sys.getfilesystemencoding() == "utf-8"
    assert got == expected
    # _comm() decodes with "replace": the kernel holds the same bytes.
    assert comm == expected.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def test_maxlen_is_linux_limit():
    assert rthread._NAME_MAXLEN == 15
    if HAS_BUILTIN:
        assert rthread._NAME_MAXLEN == BUILTIN._NAME_MAXLEN


CALLS = {
    "set_name(1)": lambda m: m.set_name(1),
    "set_name(None)": lambda m: m.set_name(None),
    "set_name(b'x')": lambda m: m.set_name(b"x"),
    "set_name()": lambda m: m.set_name(),
    "set_name(name=1)": lambda m: m.set_name(name=1),
    "set_name('a', 'b')": lambda m: m.set_name("a", "b"),
    "set_name(foo='a')": lambda m: m.set_name(foo="a"),
    "set_name('a', name='b')": lambda m: m.set_name("a", name="b"),
    "set_name(name=kw)": lambda m: (m.set_name(name="kw"), m._get_name()),
    "_get_name(1)": lambda m: m._get_name(1),
    "_get_name(x=1)": lambda m: m._get_name(x=1),
}

# What 3.14 raises; before 3.14 rthread must say the same.
EXPECTED = {
    "set_name(1)": ("raise", "TypeError", "set_name() argument 'name' must be str, not int"),
    "set_name(None)": ("raise", "TypeError", "set_name() argument 'name' must be str, not None"),
    "set_name(b'x')": ("raise", "TypeError", "set_name() argument 'name' must be str, not bytes"),
    "set_name()": ("raise", "TypeError", "set_name() missing required argument 'name' (pos 1)"),
    "set_name(name=1)": ("raise", "TypeError", "set_name() argument 'name' must be str, not int"),
    "set_name(name=kw)": ("ok", "(None, 'kw')"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_call(name):
    actual = run_in_thread(rthread, outcome, CALLS[name], rthread)
    if HAS_BUILTIN:
        assert actual == run_in_thread(BUILTIN, outcome, CALLS[name], BUILTIN)
    if name in EXPECTED:
        assert actual == EXPECTED[name]
    else:
        assert actual[:2] == ("raise", "TypeError")


def test_function_surface():
    for fname in ("set_name", "_get_name"):
        fn = getattr(rthread, fname)
        sig = {"set_name": "($module, /, name)", "_get_name": "($module, /)"}[fname]
        if VERSION >= (3, 13):
            assert fn.__text_signature__ == sig
        if HAS_BUILTIN:
            builtin = getattr(BUILTIN, fname)
            assert fn.__text_signature__ == builtin.__text_signature__
            assert fn.__qualname__ == builtin.__qualname__
            assert fn.__module__ == builtin.__module__


def test_names_are_per_thread():
    main_before = rthread._get_name()
    run_in_thread(rthread, rthread.set_name, "other")
    assert rthread._get_name() == main_before


# 3.9-3.13's threading never names OS threads; rthread names the OS thread of a
# threading.Thread itself (3.14+: threading does it through set_name).
THREADING_NAMES = textwrap.dedent(
    """
    import rthread
    rthread.install()
    import _thread, threading
    assert _thread is rthread._rthread or _thread.start_new_thread is rthread.start_new_thread
    from test_threads import gettid

    def comm():
        with open(f"/proc/self/task/{gettid()}/comm", "rb") as f:
            return f.read().rstrip(b"\\n")

    out = {}
    def record(key):
        out[key] = comm()
    for key, name in [("plain", "worker-alpha"), ("long", "worker-with-a-long-name-123"),
                      ("utf8", "é" * 10), ("nul", "a\\0b")]:
        t = threading.Thread(target=record, args=(key,), name=name)
        t.start(); t.join()
    t = threading.Thread(target=record, args=("daemon",), name="daemon-beta", daemon=True)
    t.start(); t.join()
    # A thread started directly keeps the inherited name.
    box = []
    lock = _thread.allocate_lock(); lock.acquire()
    def direct():
        box.append(comm()); lock.release()
    _thread.start_new_thread(direct, ())
    lock.acquire()
    print(repr((out, box[0], comm())))
    """
)


def test_threading_threads_get_os_names():
    proc = subprocess.run(
        [sys.executable, "-c", THREADING_NAMES],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=__import__("os").path.dirname(__file__),
    )
    assert proc.returncode == 0, proc.stderr
    out, direct, main = eval(proc.stdout)
    assert out == {
        "plain": b"worker-alpha",
        "long": b"worker-with-a-l",
        "utf8": ("é" * 7).encode() + b"\xc3",
        "nul": b"a",
        "daemon": b"daemon-beta",
    }
    assert direct == main
