"""Reads valgrind memcheck XML files and decides which errors are rthread's.

Usage: python scripts/valgrind_check.py [--label NAME] FILE.xml ...

An error is *attributed to rthread* when one of its stacks (where it happened, and for an
invalid access also where the block was allocated or freed) has a frame of the rthread
extension (the `_rthread.*.so` object, which has rthread-core linked in, or a function named
`_rthread::…`/`rthread_core::…`) *before* the first Python evaluation frame, reading from the
innermost frame outwards. So rthread is blamed for what its own code or the C API calls it makes
did, and not for what happened in Python code that it merely called (every frame of a thread
that rthread started has rthread's thread entry at its base, and module import runs rthread's
module init below a great deal of CPython).

Fails (exit 1) on any memcheck error other than a leak that is attributed to rthread (invalid
read/write/free, uninitialised value, bad syscall parameter, overlap ...) and on any
definitely-lost block attributed to rthread, except one allocated while the module was being
imported (a `__pyo3_module_exec`/`PyInit_` frame on its stack): that happens once per process
and cannot grow, and CPython 3.12+ leaks such blocks itself at exit (the attribute-name strings
the module's init makes, interned and immortal, are never freed); those are counted apart.
Possibly-lost blocks are reported, never fatal: heap types and interned objects that live
until exit show up as possibly lost (CPython keeps interior pointers to them). Prints a
one-line summary per file and the stacks of what it blames.
"""

from __future__ import annotations

import argparse
import collections
import sys
import xml.etree.ElementTree as ET

EVAL_FRAMES = {
    "_PyEval_EvalFrameDefault",
    "_PyEval_EvalFrame",
    "_PyEval_Vector",
    "PyEval_EvalCode",
    "PyEval_EvalCodeEx",
    "PyEval_EvalFrameEx",
    "_PyEval_EvalCodeWithName",
}


def is_rthread(frame) -> bool:
    obj = (frame.findtext("obj") or "").rsplit("/", 1)[-1]
    fn = frame.findtext("fn") or ""
    return (
        obj.startswith("_rthread.")
        or fn.startswith("_rthread::")
        or fn.startswith("rthread_core::")
        or fn.startswith("<rthread_core::")
        or fn.startswith("<_rthread::")
    )


def blamed_stack(stack) -> bool:
    """True if an rthread frame comes before any Python evaluation frame."""
    for frame in stack.iter("frame"):
        if is_rthread(frame):
            return True
        if (frame.findtext("fn") or "") in EVAL_FRAMES:
            return False
    return False


def at_import(stack) -> bool:
    """True if the block was allocated while the extension module was being initialised."""
    return any(
        "__pyo3_module_exec" in fn or fn.startswith("PyInit_")
        for fn in (f.findtext("fn") or "" for f in stack.iter("frame"))
    )


def describe(frame) -> str:
    fn = frame.findtext("fn") or frame.findtext("ip") or "?"
    where = frame.findtext("file")
    if where:
        where = f"{where}:{frame.findtext('line')}"
    else:
        where = (frame.findtext("obj") or "?").rsplit("/", 1)[-1]
    return f"{fn} ({where})"


def what(error) -> str:
    xwhat = error.find("xwhat")
    if xwhat is not None:
        return xwhat.findtext("text") or ""
    return error.findtext("what") or ""


def check(path: str, label: str, show: int) -> tuple[bool, dict]:
    root = ET.parse(path).getroot()
    stats = collections.Counter()
    blamed = []
    for error in root.iter("error"):
        kind = error.findtext("kind") or "?"
        stacks = list(error.findall("stack"))
        ours = any(blamed_stack(s) for s in stacks)
        if kind.startswith("Leak_"):
            nbytes = int(error.findtext("xwhat/leakedbytes") or 0)
            stats[f"{kind}.bytes"] += nbytes
            stats[f"{kind}.blocks"] += int(error.findtext("xwhat/leakedblocks") or 0)
            if ours and kind == "Leak_DefinitelyLost" and at_import(stacks[0]):
                stats[f"{kind}.bytes.import"] += nbytes
            elif ours:
                stats[f"{kind}.bytes.rthread"] += nbytes
                if kind == "Leak_DefinitelyLost":
                    blamed.append(error)
        else:
            stats["errors"] += 1
            stats[f"errors.{kind}"] += 1
            if ours:
                stats["errors.rthread"] += 1
                blamed.append(error)
    # Valgrind writes the client's exit status nowhere in the XML; a fatal signal shows as an
    # error-less run whose status line says so, which the caller checks separately.
    ok = not blamed
    kinds = ", ".join(
        f"{k[len('errors.'):]} {n}"
        for k, n in sorted(stats.items())
        if k.startswith("errors.") and k != "errors.rthread"
    )
    print(
        f"valgrind {label}: errors {stats['errors']} (rthread {stats['errors.rthread']})"
        f"{' [' + kinds + ']' if kinds else ''}; definitely lost "
        f"{stats['Leak_DefinitelyLost.bytes']} B (rthread "
        f"{stats['Leak_DefinitelyLost.bytes.rthread']} B, at import "
        f"{stats['Leak_DefinitelyLost.bytes.import']} B); possibly lost "
        f"{stats['Leak_PossiblyLost.bytes']} B (rthread "
        f"{stats['Leak_PossiblyLost.bytes.rthread']} B, not a failure)"
        f" -> {'ok' if ok else 'FAIL'}"
    )
    for error in blamed[:show]:
        print(f"  {error.findtext('kind')}: {what(error)}")
        for i, stack in enumerate(error.findall("stack")):
            if i:
                aux = error.findall("auxwhat")
                print(f"    -- {aux[i - 1].text if len(aux) >= i else 'aux'}")
            for frame in list(stack.iter("frame"))[:16]:
                mark = "*" if is_rthread(frame) else " "
                print(f"   {mark} {describe(frame)}")
    if len(blamed) > show:
        print(f"  ... and {len(blamed) - show} more")
    return ok, stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--label", default=None, help="name printed instead of the file name")
    ap.add_argument("--show", type=int, default=10, help="blamed errors to print in full")
    args = ap.parse_args()
    all_ok = True
    for path in args.files:
        try:
            ok, _ = check(path, args.label or path, args.show)
        except (ET.ParseError, OSError) as e:
            print(f"valgrind {args.label or path}: cannot read {path}: {e} -> FAIL")
            ok = False
        all_ok = all_ok and ok
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
