"""Helpers for differential tests: run the same case on the built-in ``_thread``
and on rthread, in the same interpreter, and compare what happened."""

import re
import sys

import rthread

from conftest import BUILTIN

VERSION = sys.version_info[:2]
_ADDR = re.compile(r"0x[0-9a-fA-F]+")
_IDENT = re.compile(r"\b\d{9,}\b")


def normalize(text):
    """Masks what legitimately differs between two objects: addresses and
    thread idents (long integers)."""
    return _IDENT.sub("<N>", _ADDR.sub("0x?", text))


def outcome(case, mod):
    """What ``case(mod)`` did: ``("ok", repr)`` or ``("raise", type, message)``."""
    try:
        result = case(mod)
    except BaseException as exc:  # noqa: B902 - SystemExit etc. are results too
        return ("raise", type(exc).__name__, normalize(str(exc)))
    return ("ok", normalize(repr(result)))


def assert_same(case):
    """The case behaves identically on both modules; returns that outcome."""
    expected = outcome(case, BUILTIN)
    actual = outcome(case, rthread)
    assert actual == expected, f"built-in: {expected!r}\nrthread:  {actual!r}"
    return actual
