"""Shared fixtures: the built-in ``_thread`` and rthread, side by side."""

import pytest

import rthread

BUILTIN = rthread._builtin_thread()
assert BUILTIN.__spec__.origin == "built-in"

assert BUILTIN is not rthread._rthread


@pytest.fixture
def builtin():
    return BUILTIN


@pytest.fixture(params=["builtin", "rthread"])
def either(request):
    """Runs a behaviour test once on each module; both must pass."""
    return BUILTIN if request.param == "builtin" else rthread
