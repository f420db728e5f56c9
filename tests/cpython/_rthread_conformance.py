"""Activation and audit hook of the rthread conformance venvs.

scripts/conformance.py copies this file into the site-packages of its own
virtualenvs (.venv/conf-3.X) and adds ``00_rthread_conformance.pth`` next to
it, whose only line is ``import _rthread_conformance``. Python runs ``.pth``
lines at start-up in every process made from that venv's interpreter, even
under ``-I`` and with an empty environment (only ``-S`` skips them), so every
process CPython's test suites start, children of children included, runs
this before anything can import ``threading``.

Nothing here depends on the environment: the mode is a marker file in the
venv (present: baseline run on the built-in ``_thread``; absent: rthread is
installed), and every process appends JSON lines to a log in the venv:

* ``"event": "start"`` right after activation (pid, argv, mode, whether
  ``sys.modules['_thread'] is rthread._rthread``, or the error that stopped
  the activation);
* ``"event": "exit"`` from an atexit hook, which runs after
  ``threading._shutdown()``: the same, plus, if ``threading`` was imported,
  whether each ``_thread`` function and type it bound is rthread's.

Processes that end with ``os._exit()`` or a signal only leave their start
line; forked children (same interpreter state, no new start) only leave an
exit line if they exit normally.

This file is not part of the rthread package and is never installed by its
wheel: it exists only in the conformance venvs.
"""

import os
import sys

# Filled in by scripts/conformance.py when it copies the file.
STATE_DIR = "@STATE_DIR@"
LOG = os.path.join(STATE_DIR, "processes.jsonl")
BASELINE_MARKER = os.path.join(STATE_DIR, "baseline")

_mode = "builtin" if os.path.exists(BASELINE_MARKER) else "rthread"
_error = None
_native = None


def _is_subinterpreter():
    try:
        try:
            import _interpreters as interpreters  # 3.13
        except ImportError:
            import _xxsubinterpreters as interpreters  # 3.9 - 3.12
        return interpreters.get_current() != interpreters.get_main()
    except Exception:
        return None


def _write(record):
    import json

    record.update(
        pid=os.getpid(),
        ppid=os.getppid(),
        mode=_mode,
        argv=[a[:300] for a in getattr(sys, "argv", [])][:20],
        orig_argv=[a[:300] for a in getattr(sys, "orig_argv", [])][:20],
    )
    line = json.dumps(record, sort_keys=True)
    if len(line) > 3500:  # one write(2) of less than a page: never interleaved
        record["argv"] = record["orig_argv"] = ["<truncated>"]
        line = json.dumps(record, sort_keys=True)
    try:
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


def _thread_state():
    current = sys.modules.get("_thread")
    state = {
        "thread_is_rthread": _native is not None and current is _native,
        "thread_module": repr(current)[:200],
    }
    threading = sys.modules.get("threading")
    state["threading_imported"] = threading is not None
    if threading is None:
        return state
    checks = {}
    if _native is not None:
        expected = {
            "_allocate_lock": (_native.allocate_lock,),
            "Lock": (_native.allocate_lock, getattr(_native, "LockType", None)),
            "get_ident": (_native.get_ident,),
            "_start_new_thread": (_native.start_new_thread,),
            "_start_joinable_thread": (getattr(_native, "start_joinable_thread", None),),
            "_set_sentinel": (getattr(_native, "_set_sentinel", None),),
            "_CRLock": (_native.RLock,),
            "_LockType": (_native.LockType,),
            "ThreadError": (_native.error,),
            "local": (_native._local,),
        }
        for name, allowed in expected.items():
            if name in threading.__dict__:
                checks[name] = any(threading.__dict__[name] is a for a in allowed if a is not None)
    state["threading_checks"] = checks
    # The three the conformance brief names must be there and be rthread's.
    state["threading_on_rthread"] = bool(checks) and all(
        checks.get(n, False) for n in ("_allocate_lock", "Lock", "get_ident")
    )
    state["threading_file"] = getattr(threading, "__file__", None)
    return state


def _at_exit():
    record = {"event": "exit", "subinterpreter": _is_subinterpreter()}
    try:
        record.update(_thread_state())
    except Exception as exc:  # never disturb the exit of the process
        record["check_error"] = repr(exc)
    _write(record)


def _activate():
    global _error, _native
    if _mode == "rthread":
        try:
            import rthread
            from rthread import _rthread

            rthread.install()
            _native = _rthread
        except BaseException as exc:  # keep the process running; the log says why
            _error = "%s: %s" % (type(exc).__name__, exc)
    record = {"event": "start", "error": _error}
    if _error is not None:
        record["subinterpreter"] = _is_subinterpreter()
    record.update(_thread_state())
    _write(record)
    import atexit

    atexit.register(_at_exit)


_activate()
