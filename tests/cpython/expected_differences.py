"""Principled differences between the built-in ``_thread`` and rthread under
CPython's own test suites, read by ``scripts/conformance.py``.

The conformance run compares, per interpreter and per test id, the outcome
of ``test_thread``, ``test_threading``, ``test_threading_local``,
``test_threadsignals`` and ``test_audit`` on the built-in (baseline) and on
rthread. Every difference must be listed here, with the reason it cannot (or
must not) be removed; any other difference fails the run, and so does an
entry whose outcome changed. Entries that no longer occur are reported so
they can be deleted. Nothing is skipped: a listed test still runs on both.

TEST_DIFFERENCES entries:
    versions  interpreter versions ("3.9" ... "3.15") it applies to
    test      a test id as regrtest reports it (test.test_x.Class.test_y),
              or "test_x (file)" for the outcome of the whole test file
    builtin   outcome on the built-in: passed, failed, error, skipped, ...
    rthread   outcome on rthread
    reason    why; a link to the issue that tracks it if it is a bug

PROCESS_EXCEPTIONS entries allow processes that did not run on rthread:
    kind      "subinterpreter": an interpreter created inside a process
              (``_testcapi.run_in_subinterp``, ``_interpreters``...) whose
              rthread import failed with rthread's own ImportError, so that
              interpreter uses the built-in ``_thread``
    versions, reason as above
"""

ALL_VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")

TEST_DIFFERENCES = [
    # None: on every interpreter the same tests pass and the same are skipped.
]

PROCESS_EXCEPTIONS = [
    {
        "kind": "subinterpreter",
        "versions": ALL_VERSIONS,
        "reason": (
            "rthread is a PyO3 extension whose types, hooks and thread registry are "
            "process-wide statics bound to the main interpreter; it refuses to load in "
            "a subinterpreter (ImportError) so that subinterpreters started by "
            "test_threading, test_audit and test_threading_local run on their own "
            "built-in _thread. The tests that use subinterpreters still run and must "
            "give the built-in's outcome; only the subinterpreter itself is off rthread."
        ),
    },
]
