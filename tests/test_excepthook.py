"""Differential tests: ``_excepthook`` and ``_ExceptHookArgs`` behave like the
built-in's, byte for byte (after masking addresses and thread idents).

Every case runs once per module with ``sys.stderr`` and ``sys.__stderr__``
replaced by fresh buffers (3.13 prints part of the report to ``sys.__stderr__``
when ``sys.stderr`` is None), and compares the call's outcome and everything
written to every stream. The exceptions are raised afresh for each module from
the same source lines, so their tracebacks are the same text.
"""

import copy
import io
import sys
import threading

import pytest

import rthread
from conftest import BUILTIN
from parity import VERSION, assert_same, normalize, outcome

MODULES = {"builtin": BUILTIN, "rthread": rthread}
_MISSING = object()


# --- what the hook is given ---------------------------------------------------


class FakeThread:
    """Stands in for ``threading.Thread``: the hook reads ``name`` and, when
    ``sys.stderr`` is None, ``_stderr``."""

    def __init__(self, name=_MISSING, stderr=_MISSING):
        if name is not _MISSING:
            self.name = name
        if stderr is not _MISSING:
            self._stderr = stderr


class NameRaises:
    """A thread whose ``name`` raises ``exc``."""

    def __init__(self, exc):
        self.exc = exc

    @property
    def name(self):
        raise self.exc


class Recorder:
    """A stream that logs every call, so the sequence of writes and flushes can
    be compared; optionally raises on the Nth write or on flush."""

    def __init__(self, fail_write_at=None, fail_flush=False):
        self.log = []
        self.fail_write_at = fail_write_at
        self.fail_flush = fail_flush

    def write(self, text):
        self.log.append(("write", text))
        if len(self.log) == self.fail_write_at:
            raise OSError("write failed")
        return len(text)

    def flush(self):
        self.log.append(("flush",))
        if self.fail_flush:
            raise OSError("flush failed")

    def getvalue(self):
        return repr(self.log)


class NoFlush:
    def __init__(self):
        self.text = []

    def write(self, text):
        self.text.append(text)

    def getvalue(self):
        return "".join(self.text)


class MyError(Exception):
    pass


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class ExitSub(SystemExit):
    pass


def raised(make):
    """``make()`` raised and caught here: an exception with a traceback."""
    try:
        raise make()
    except BaseException as exc:  # noqa: B902 - any exception is a test input
        return exc


def raised_from(make, make_cause):
    try:
        try:
            raise make_cause()
        except BaseException as cause:  # noqa: B902
            raise make() from cause
    except BaseException as exc:  # noqa: B902
        return exc


def raised_during(make, make_context):
    try:
        try:
            raise make_context()
        except BaseException:  # noqa: B902
            raise make()
    except BaseException as exc:  # noqa: B902
        return exc


def raised_from_none(make, make_context):
    try:
        try:
            raise make_context()
        except BaseException:  # noqa: B902
            raise make() from None
    except BaseException as exc:  # noqa: B902
        return exc


def recurse(depth):
    if depth == 0:
        raise ValueError("bottom")
    recurse(depth - 1)


def deep():
    try:
        recurse(40)
    except ValueError as exc:
        return exc


def syntax_error():
    try:
        compile("x = (1,\n  2 +* 3)\n", "<case>", "exec")
    except SyntaxError as exc:
        return exc


def exc_args(value, thread=None, exc_type=None, tb=_MISSING):
    """The 4 fields for an exception instance (its own type and traceback
    unless given)."""
    return (
        type(value) if exc_type is None else exc_type,
        value,
        getattr(value, "__traceback__", None) if tb is _MISSING else tb,
        thread,
    )


# --- running one case ----------------------------------------------------------


class Streams:
    """Buffers a case writes to; they are compared between the two modules."""

    def __init__(self):
        self.all = []

    def new(self, kind=io.StringIO, *args, **kwargs):
        stream = kind(*args, **kwargs)
        self.all.append(stream)
        return stream


def run_case(mod, make, stderr="buffer"):
    """Calls ``mod._excepthook(make(mod, streams))`` with sys.stderr set per
    ``stderr`` ("buffer", "none", "missing", or a factory taking the
    ``Streams``); returns what happened and what every stream received."""
    streams = Streams()
    err = streams.new()
    dunder = streams.new()
    args = make(mod, streams)
    if callable(stderr):
        err = stderr(streams)
    saved = sys.stderr, sys.__stderr__
    sys.__stderr__ = dunder
    if stderr == "none":
        sys.stderr = None
    elif stderr == "missing":
        del sys.stderr
    else:
        sys.stderr = err
    try:
        result = outcome(lambda m: m._excepthook(args), mod)
    finally:
        sys.stderr, sys.__stderr__ = saved
    return result, [normalize(stream.getvalue()) for stream in streams.all]


def assert_same_hook(make, stderr="buffer"):
    expected = run_case(BUILTIN, make, stderr)
    actual = run_case(rthread, make, stderr)
    assert actual == expected, f"built-in: {expected!r}\nrthread:  {actual!r}"
    return actual


def hook_args(fields):
    """A case: ``fields(streams)`` built into each module's own _ExceptHookArgs."""
    return lambda mod, streams: mod._ExceptHookArgs(fields(streams))


# --- the argument check ---------------------------------------------------------


WRONG_ARGS = {
    "none": lambda mod, s: None,
    "int": lambda mod, s: 1,
    "empty tuple": lambda mod, s: (),
    "3-tuple": lambda mod, s: (ValueError, ValueError("x"), None),
    "4-tuple": lambda mod, s: (ValueError, ValueError("x"), None, None),
    "list": lambda mod, s: [ValueError, ValueError("x"), None, None],
    "other structseq": lambda mod, s: sys.version_info,
    "other module's args": lambda mod, s: (
        BUILTIN if mod is rthread else rthread
    )._ExceptHookArgs((ValueError, ValueError("x"), None, None)),
}


@pytest.mark.parametrize("make", WRONG_ARGS.values(), ids=WRONG_ARGS.keys())
def test_wrong_argument_type(make):
    result, streams = assert_same_hook(make)
    assert result[:2] == ("raise", "TypeError")
    assert streams == ["", ""]


@pytest.mark.parametrize(
    "call",
    [
        lambda mod: mod._excepthook(),
        lambda mod: mod._excepthook(1, 2),
        lambda mod: mod._excepthook(args=1),
    ],
    ids=["no args", "two args", "keyword"],
)
def test_arity(call):
    assert assert_same(call)[:2] == ("raise", "TypeError")


def test_subclass_of_args_type():
    """Struct sequence types are final; if that ever changes, a subclass
    instance must still be refused (the check is on the exact type)."""
    for mod in MODULES.values():
        try:

            class Sub(mod._ExceptHookArgs):
                pass

        except TypeError:
            continue
        instance = Sub((ValueError, ValueError("x"), None, None))
        with pytest.raises(TypeError):
            mod._excepthook(instance)
    assert_same(lambda mod: type("Sub", (mod._ExceptHookArgs,), {}))


# --- what gets printed ------------------------------------------------------------


THREADS = {
    "none": lambda s: None,
    "named": lambda s: FakeThread("worker-1"),
    "real thread": lambda s: threading.Thread(name="real", target=print),
    "int name": lambda s: FakeThread(42),
    "non-ascii name": lambda s: FakeThread("fil-\u00e9t\u00e9-\u2603"),
    "no name": lambda s: FakeThread(),
    "name raises AttributeError": lambda s: NameRaises(AttributeError("nope")),
    "name raises RuntimeError": lambda s: NameRaises(RuntimeError("name broke")),
}


@pytest.mark.parametrize("thread", THREADS.values(), ids=THREADS.keys())
def test_header(thread):
    result, streams = assert_same_hook(
        hook_args(lambda s: exc_args(raised(lambda: ValueError("boom")), thread(s)))
    )
    assert streams[0].startswith("Exception in thread ")


EXCEPTIONS = {
    "value error": lambda: exc_args(raised(lambda: ValueError("boom"))),
    "never raised": lambda: exc_args(ValueError("no traceback")),
    "traceback given separately": lambda: _detached_traceback(),
    "traceback differs from value's": lambda: exc_args(
        raised(lambda: ValueError("own")), tb=raised(lambda: KeyError("other")).__traceback__
    ),
    "traceback not a traceback": lambda: exc_args(raised(lambda: ValueError("x")), tb=42),
    "type differs from value": lambda: exc_args(raised(lambda: ValueError("x")), exc_type=KeyError),
    "value none": lambda: (ValueError, None, None, None),
    "value int": lambda: (ValueError, 5, None, None),
    "value string": lambda: (ValueError, "just text", None, None),
    "all none": lambda: (None, None, None, None),
    "custom class": lambda: exc_args(raised(lambda: MyError("mine"))),
    "str raises": lambda: exc_args(raised(lambda: BadStr())),
    "empty message": lambda: exc_args(raised(lambda: RuntimeError())),
    "multi-line message": lambda: exc_args(raised(lambda: ValueError("one\ntwo\n  three"))),
    "non-ascii message": lambda: exc_args(raised(lambda: ValueError("caf\u00e9 \u2603 \U0001f600"))),
    "key error": lambda: exc_args(raised(lambda: KeyError("k"))),
    "keyboard interrupt": lambda: exc_args(raised(KeyboardInterrupt)),
    "explicit cause": lambda: exc_args(
        raised_from(lambda: ValueError("outer"), lambda: KeyError("inner"))
    ),
    "implicit context": lambda: exc_args(
        raised_during(lambda: ValueError("outer"), lambda: TypeError("inner"))
    ),
    "context suppressed": lambda: exc_args(
        raised_from_none(lambda: ValueError("outer"), lambda: TypeError("inner"))
    ),
    "context cycle": lambda: _cycle(),
    "repeated frames": lambda: exc_args(deep()),
    "syntax error": lambda: exc_args(syntax_error()),
    "system exit subclass": lambda: exc_args(raised(lambda: ExitSub(3))),
    "system exit value, other type": lambda: exc_args(raised(lambda: SystemExit(2)), exc_type=ValueError),
}
if VERSION >= (3, 11):
    EXCEPTIONS["notes"] = lambda: exc_args(_with_notes())
    EXCEPTIONS["exception group"] = lambda: exc_args(_group())


def _detached_traceback():
    exc = raised(lambda: ValueError("detached"))
    tb = exc.__traceback__
    exc.__traceback__ = None
    return exc_args(exc, tb=tb)


def _cycle():
    a = raised(lambda: ValueError("a"))
    b = raised(lambda: KeyError("b"))
    a.__context__ = b
    b.__context__ = a
    return exc_args(a)


def _with_notes():
    exc = raised(lambda: ValueError("noted"))
    exc.add_note("first note")
    exc.add_note("second\nnote")
    return exc


def _group():
    def make():
        return ExceptionGroup(  # noqa: F821 - 3.11+
            "several", [raised(lambda: ValueError("one")), raised(lambda: KeyError("two"))]
        )

    return raised(make)


@pytest.mark.parametrize("fields", EXCEPTIONS.values(), ids=EXCEPTIONS.keys())
def test_report(fields):
    result, streams = assert_same_hook(hook_args(lambda s: fields()))
    assert result == ("ok", "None")


@pytest.mark.parametrize("fields", EXCEPTIONS.values(), ids=EXCEPTIONS.keys())
def test_report_call_sequence(fields):
    """The same writes and flushes, in the same order and pieces."""
    assert_same_hook(hook_args(lambda s: fields()), stderr=lambda s: s.new(Recorder))


@pytest.mark.parametrize("thread", [None, FakeThread("t")], ids=["no thread", "thread"])
@pytest.mark.parametrize("exc_type", [SystemExit, ValueError], ids=["SystemExit", "ValueError"])
def test_system_exit_ignored(thread, exc_type):
    result, streams = assert_same_hook(
        hook_args(lambda s: (SystemExit, raised(lambda: exc_type(1)), None, thread))
    )
    assert result == ("ok", "None")
    assert streams == ["", ""]


# --- where it gets printed ---------------------------------------------------------


STDERR_NONE = {
    "no thread": lambda s: (None,),
    "thread _stderr buffer": lambda s: (FakeThread("t", s.new()),),
    "thread _stderr None": lambda s: (FakeThread("t", None),),
    "thread without _stderr": lambda s: (FakeThread("t"),),
    "real thread": lambda s: (threading.Thread(name="real", target=print),),
    "thread _stderr recorder": lambda s: (FakeThread("t", s.new(Recorder)),),
    "thread _stderr without flush": lambda s: (FakeThread("t", s.new(NoFlush)),),
}


@pytest.mark.parametrize("stderr", ["none", "missing"])
@pytest.mark.parametrize("thread", STDERR_NONE.values(), ids=STDERR_NONE.keys())
@pytest.mark.parametrize(
    "value",
    [
        lambda: raised(lambda: ValueError("boom")),
        lambda: raised_from(lambda: ValueError("outer"), lambda: KeyError("inner")),
        lambda: None,
        lambda: 5,
    ],
    ids=["exception", "chained", "value None", "value int"],
)
def test_without_sys_stderr(stderr, thread, value):
    def fields(s):
        exc = value()
        return exc_args(exc, exc_type=ValueError) if exc is not None else (ValueError, None, None, None)

    assert_same_hook(lambda mod, s: mod._ExceptHookArgs(fields(s)[:3] + thread(s)), stderr=stderr)


STREAMS = {
    "write fails at once": lambda s: s.new(Recorder, fail_write_at=1),
    "write fails on name": lambda s: s.new(Recorder, fail_write_at=2),
    "write fails in the traceback": lambda s: s.new(Recorder, fail_write_at=5),
    "flush fails": lambda s: s.new(Recorder, fail_flush=True),
    "no flush": lambda s: s.new(NoFlush),
    "not a file": lambda s: 42,
}


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
@pytest.mark.parametrize(
    "value",
    [lambda: raised(lambda: ValueError("boom")), lambda: 5],
    ids=["exception", "value int"],
)
def test_stream_errors(stream, value):
    assert_same_hook(hook_args(lambda s: exc_args(value(), FakeThread("t"), exc_type=ValueError)), stderr=stream)


def test_stderr_replaced_while_writing():
    """A stream whose write() swaps sys.stderr: the report still goes where
    the built-in sends it."""

    class Swapper(io.StringIO):
        def __init__(self, other):
            super().__init__()
            self.other = other

        def write(self, text):
            sys.stderr = self.other
            return super().write(text)

    assert_same_hook(
        hook_args(lambda s: exc_args(raised(lambda: ValueError("x")), FakeThread("t"))),
        stderr=lambda s: s.new(Swapper, s.new()),
    )


def test_returns_none_and_attaches_traceback():
    """The hook returns None; whether it gives a traceback-less value the
    traceback it was passed depends on the version (3.12+ does)."""
    attached = []
    for mod in MODULES.values():
        exc = raised(lambda: ValueError("x"))
        tb = exc.__traceback__
        exc.__traceback__ = None
        saved = sys.stderr
        sys.stderr = io.StringIO()
        try:
            assert mod._excepthook(mod._ExceptHookArgs((ValueError, exc, tb, None))) is None
        finally:
            sys.stderr = saved
        attached.append(exc.__traceback__ is tb)
    assert attached[0] == attached[1]


def test_fallback_restores_state():
    """When the report has to take the interpreter's C display on the
    thread's stream (3.13: sys.stderr missing), sys.stderr and the traceback
    module are left as they were."""
    import traceback

    printer = traceback._print_exception_bltin if VERSION >= (3, 13) else None
    for stderr in ("none", "missing"):
        for value in (lambda: raised(lambda: ValueError("x")), lambda: 5):
            assert_same_hook(
                hook_args(lambda s: exc_args(value(), FakeThread("t", s.new()), exc_type=ValueError)),
                stderr=stderr,
            )
            if printer is not None:
                assert traceback._print_exception_bltin is printer
    assert sys.stderr is not None


# --- the _ExceptHookArgs type -----------------------------------------------------


FIELDS = ("exc_type", "exc_value", "exc_traceback", "thread")


@pytest.mark.parametrize(
    "case",
    [
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4)),
        lambda mod: mod._ExceptHookArgs([1, 2, 3, 4]),
        lambda mod: mod._ExceptHookArgs(iter("abcd")),
        lambda mod: mod._ExceptHookArgs(sequence=(1, 2, 3, 4)),
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4), {}),
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4), {"thread": 5}),
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4), None),
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4), 5),
        lambda mod: mod._ExceptHookArgs(),
        lambda mod: mod._ExceptHookArgs(()),
        lambda mod: mod._ExceptHookArgs((1, 2, 3)),
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4, 5)),
        lambda mod: mod._ExceptHookArgs(None),
        lambda mod: mod._ExceptHookArgs(1),
        lambda mod: mod._ExceptHookArgs("abcd"),
        lambda mod: mod._ExceptHookArgs((1, 2, 3, 4), {}, 1),
        lambda mod: mod._ExceptHookArgs(x=1),
        lambda mod: mod._ExceptHookArgs((ValueError, ValueError("v"), None, None)),
    ],
)
def test_constructor(case):
    assert_same(case)


@pytest.mark.parametrize(
    "probe",
    [
        lambda a: repr(a),
        lambda a: str(a),
        lambda a: len(a),
        lambda a: tuple(a),
        lambda a: [getattr(a, name) for name in FIELDS],
        lambda a: a[1:3],
        lambda a: a[-1],
        lambda a: a[4],
        lambda a: a == (1, "two", None, 4.0),
        lambda a: hash(a) == hash((1, "two", None, 4.0)),
        lambda a: isinstance(a, tuple),
        lambda a: copy.copy(a) == a,
        lambda a: tuple(a.__reduce__()[1][0]),
        lambda a: a.__reduce__()[1][1],
        lambda a: setattr(a, "thread", 1),
        lambda a: a.count(None),
        lambda a: a + (5,),
    ],
)
def test_instance(probe):
    assert_same(lambda mod: probe(mod._ExceptHookArgs((1, "two", None, 4.0))))


@pytest.mark.parametrize(
    "attr",
    [
        "__name__",
        "__qualname__",
        "__module__",
        "__flags__",
        "__base__",
        "__mro__",
        "n_fields",
        "n_sequence_fields",
        "n_unnamed_fields",
    ]
    + (["__match_args__"] if VERSION >= (3, 10) else []),
)
def test_type_attribute(attr):
    assert_same(lambda mod: getattr(mod._ExceptHookArgs, attr))


def test_type_surface():
    assert_same(lambda mod: sorted(set(dir(mod._ExceptHookArgs))))
    assert_same(lambda mod: sorted(set(vars(mod._ExceptHookArgs)) - {"__doc__"}))
    assert_same(lambda mod: repr(mod._ExceptHookArgs))
    assert_same(lambda mod: [type(getattr(mod._ExceptHookArgs, name)).__name__ for name in FIELDS])


def test_type_setattr():
    """3.9 and 3.10 made a static type (attributes cannot be set); later
    versions a heap type."""

    def case(mod):
        mod._ExceptHookArgs.extra = 1
        del mod._ExceptHookArgs.extra

    assert_same(case)


def test_documented():
    """Docs are rthread's own words, but every piece has one."""
    args = rthread._ExceptHookArgs
    assert args.__doc__
    assert rthread._excepthook.__doc__
    for name in FIELDS:
        assert getattr(args, name).__doc__


def test_function_surface():
    assert_same(lambda mod: mod._excepthook.__name__)
    assert_same(lambda mod: mod._excepthook.__qualname__)
    assert_same(lambda mod: type(mod._excepthook).__name__)
    assert_same(lambda mod: getattr(mod._excepthook, "__text_signature__", None))
