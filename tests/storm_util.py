"""What the storm and leak tests share: the tier, running a program of
tests/torture in a fresh interpreter on rthread (RTHREAD=1) or on the
built-in, and reporting figures (stderr, shown by `pytest -s` or in the
PASSES section of `-rA`, and the test's user_properties)."""

import json
import os
import subprocess
import sys
from pathlib import Path

LONG = os.environ.get("RTHREAD_TORTURE") == "long"
TORTURE = Path(__file__).parent / "torture"
VERSION = "%d.%d" % sys.version_info[:2]


def tier(short, long):
    return long if LONG else short


def env_for(on_rthread):
    env = dict(os.environ)
    env.pop("RTHREAD", None)
    env.pop("PYTHONWARNINGS", None)
    if on_rthread:
        env["RTHREAD"] = "1"
    return env


def run(program, *args, on_rthread=True, timeout=120):
    return subprocess.run(
        [sys.executable, str(TORTURE / program), *map(str, args)],
        env=env_for(on_rthread),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_json(program, *args, on_rthread=True, timeout=120):
    """The JSON figures a program prints as its last stdout line; fails the
    test with its stderr if it printed none or exited non-zero."""
    try:
        proc = run(program, *args, on_rthread=on_rthread, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{program} {args} on {'rthread' if on_rthread else 'the built-in'} still ran after "
            f"{timeout} s; stdout: {exc.stdout!r:.1000} stderr: {exc.stderr!r:.2000}"
        ) from None
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{program} printed nothing (status {proc.returncode}): {proc.stderr[-3000:]}"
    figures = json.loads(lines[-1])
    figures["_status"] = proc.returncode
    figures["_stderr"] = proc.stderr[-3000:]
    assert figures["rthread"] is on_rthread, "the program did not run on the intended _thread"
    return figures


def report(record_property, name, figures):
    shown = {k: v for k, v in figures.items() if not k.startswith("_")}
    line = f"[torture {'long' if LONG else 'short'}] Python {VERSION} {name}: {json.dumps(shown)}"
    print(line, file=sys.stderr)
    record_property(name, json.dumps(shown))
