"""Shared fixtures: the built-in ``_thread`` and rthread, side by side."""

import sys

import pytest

import rthread


def _builtin_thread():
    """The interpreter's own ``_thread`` even when rthread is active."""
    mod = sys.modules.get("_thread")
    if mod is not None and getattr(mod, "__spec__", None) is not None and mod.__spec__.origin == "built-in":
        return mod
    import _imp
    import importlib.machinery

    spec = importlib.machinery.ModuleSpec("_thread", None, origin="built-in")
    return _imp.create_builtin(spec)


BUILTIN = _builtin_thread()
assert BUILTIN is not rthread._rthread


@pytest.fixture
def builtin():
    return BUILTIN


@pytest.fixture(params=["builtin", "rthread"])
def either(request):
    """Runs a behaviour test once on each module; both must pass."""
    return BUILTIN if request.param == "builtin" else rthread
