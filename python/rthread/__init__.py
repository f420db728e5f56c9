"""rthread: CPython's low-level threading module ``_thread``, in Rust.

``import rthread as _thread`` gives the same API as the built-in ``_thread`` of
the running interpreter (same results, exceptions, messages and reprs), on
faster primitives implemented in Rust. ``rthread.install()`` makes it the
process's ``_thread``, so that ``threading`` and the rest of the standard
library run on it.

PYTEST_DONT_REWRITE: pytest marks the packages of a distribution that has a pytest
plugin (``rthread_pytest``) for assertion rewriting, and would warn that this one
was imported before pytest (by RTHREAD=1 or -m rthread); there is nothing to rewrite.
"""

import sys as _sys

_BuiltinFunction = type(len)

from . import _rthread

# Re-export every name of the native module (public and underscore ones alike:
# ``threading`` needs the private ones), so the package is the drop-in.
globals().update(
    {name: getattr(_rthread, name) for name in dir(_rthread) if not name.startswith("__")}
)

__all__ = sorted(name for name in dir(_rthread) if not name.startswith("_"))

# Modules that hold on to the built-in whatever happens, and need not be moved:
# the import system keeps its own reference (it only uses it for its module
# locks), and builtins holds RuntimeError, which is `_thread.error` too.
_IGNORED_USERS = frozenset({"_thread", "builtins", "_frozen_importlib", "importlib._bootstrap", __name__})

# Standard-library modules that the interpreter itself can import before any
# activation point runs, and that only look up what they bound when called, so
# install() points those names at rthread's equivalents instead of refusing:
# - functools (RLock) and reprlib (get_ident): runpy imports them before
#   ``-m rthread`` runs on 3.9 - 3.11, and ``re`` does (all versions) at start-up
#   when a -W / PYTHONWARNINGS filter has a message or module pattern;
# - _py_warnings (3.14+): with any warning option (-W, PYTHONWARNINGS, -X dev)
#   ``warnings`` is imported before site. It binds the module itself, only to
#   make the RLock ``_py_warnings._lock``, which stays unused while the C
#   ``_warnings`` is present (``warnings._lock`` is then a wrapper around the C
#   lock); should it ever be used, a built-in RLock is still correct under
#   rthread's threads, which are ordinary OS threads.
_REBINDABLE = frozenset({"functools", "reprlib", "_py_warnings"})


def _builtin_thread():
    """The interpreter's own ``_thread``, even when rthread replaced it: the
    import system keeps the reference it took at start-up."""
    return _sys.modules["_frozen_importlib"]._thread


def active():
    """Whether rthread is the running ``_thread`` (``sys.modules['_thread']``)."""
    return _sys.modules.get("_thread") is _rthread


def _bindable(builtin):
    """``{id(object): name}`` for what a module can bind of ``builtin``: its
    builtin functions and types.

    A plain constant is no binding (3.14's ``_NAME_MAXLEN`` is the cached small
    int 15, the very object ``_signal.SIGTERM`` and ``errno.ENOTBLK`` hold), nor
    are ``error`` (``RuntimeError``) and the dunders every builtin module shares
    (``__loader__``)."""
    found = {}
    for name in dir(builtin):
        if name.startswith("__") or name == "error":
            continue
        value = getattr(builtin, name)
        if isinstance(value, (type, _BuiltinFunction)):
            found[id(value)] = name
    return found


def _builtin_users(builtin):
    """Names of imported modules that already bound the built-in ``_thread`` (the
    module object) or one of its functions or types."""
    shared = _bindable(builtin)
    users = []
    for name, module in list(_sys.modules.items()):
        if name in _IGNORED_USERS or name.startswith(__name__ + "."):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        if any(value is builtin or id(value) in shared for value in list(namespace.values())):
            users.append(name)
    return sorted(users)


def _rebinds(builtin, users):
    """``(late, rebinds)`` for the modules ``users`` that bound ``builtin``: the
    ones that cannot be moved to rthread, and for the others the
    ``(namespace, name, replacement)`` assignments that move them."""
    native = _rthread
    by_identity = _bindable(builtin)
    late, rebinds = [], []
    for module_name in users:
        module = _sys.modules.get(module_name)
        if module_name not in _REBINDABLE or module is None:
            late.append(module_name)
            continue
        moves = []
        for key, value in list(vars(module).items()):
            if value is builtin:
                moves.append((vars(module), key, native))
            elif id(value) in by_identity:
                name = by_identity[id(value)]
                if not hasattr(native, name):
                    break
                moves.append((vars(module), key, getattr(native, name)))
        else:
            rebinds.extend(moves)
            continue
        late.append(module_name)
    return late, rebinds


def _late_users(builtin):
    """Modules that bound ``builtin`` and that install() cannot move to rthread."""
    return _rebinds(builtin, _builtin_users(builtin))[0]


def install():
    """Make rthread the process's ``_thread``.

    Must run before ``threading`` (or any other module that binds ``_thread``)
    is imported, because such modules keep references to the built-in. Raises
    RuntimeError, changing nothing, if one already did. (The few standard-library
    modules that the interpreter may import first, listed in ``_REBINDABLE``,
    are pointed at rthread's equivalents instead.) Idempotent; prints nothing.
    """
    current = _sys.modules.get("_thread")
    if current is _rthread:
        return
    if current is not None:
        late, rebinds = _rebinds(current, _builtin_users(current))
        if late:
            raise RuntimeError(
                "rthread.install() came too late: %s already imported the built-in _thread "
                "and would keep using it. Activate rthread before anything imports threading: "
                "call rthread.install() first thing in the program, run it as "
                "'python -m rthread script.py', or set RTHREAD=1 in the environment."
                % ", ".join(repr(u) for u in late)
            )
        # Everything was checked before anything changes.
        for namespace, key, value in rebinds:
            namespace[key] = value
    _sys.modules["_thread"] = _rthread
