"""Shared fixtures: the built-in ``_thread`` and rthread, side by side."""

import signal

import pytest

import rthread

# A shell without job control starts a background command (`make test &`, nohup) with SIGINT
# ignored, and then Python installs no KeyboardInterrupt handler: the tests of Ctrl-C and
# interrupt_main() would test the inherited disposition, not the module. Give the run the
# handler an interactive start has (child processes get SIGINT's default back at exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
