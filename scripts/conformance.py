#!/usr/bin/env python3
"""Conformance run: CPython's own thread test suites, on the built-in _thread
and on rthread, per interpreter, compared test by test.

    python3 scripts/conformance.py [--versions 3.9,3.13] [--fresh-baseline]

For every interpreter scripts/pythons.sh finds (3.9 - 3.15):

1. rthread's wheel, target/wheels/3.X/*.whl, is (re)built with
   scripts/install.sh when it is missing or older than the sources.
2. A dedicated venv, .venv/conf-3.X, made from that interpreter, gets the
   wheel and tests/cpython/_rthread_conformance.py with a .pth file that
   imports it: every process started from that venv's python, including the
   `-I` children with an empty environment that the tests start, activates
   rthread before anything imports threading, and logs (pid, argv, which
   _thread is in use, which functions threading bound) to
   .venv/conf-3.X/rthread-conformance/processes.jsonl. A marker file in the
   same directory, `baseline`, turns the activation off for baseline runs.
3. `python -m test -j2 --junit-xml ...` runs test_thread, test_threading,
   test_threading_local, test_threadsignals, test_audit, and the library on
   top of them (test_queue, test_logging, test_sched) from the
   interpreter's installed `test` package, once on the built-in (cached in
   target/conformance/ while the interpreter and its test package do not
   change) and once on rthread.
4. Per test id the outcomes must be equal (passed / failed / error /
   skipped with the same reason / ...), and so must each file's regrtest
   status. A difference is re-run (rthread up to --retries times, then the
   built-in once) to tell flakiness from a real difference: one that goes
   away is reported as FLAKY (and fails the run with --strict); one that
   stays must be listed in tests/cpython/expected_differences.py with its
   reason, or the run fails.
5. Every process of the rthread runs must have started on rthread, and
   every one that imported threading must have bound rthread's functions;
   the only exceptions are those expected_differences.py lists
   (subinterpreters, which keep the built-in _thread).

Exit status 0 when everything conforms, 1 otherwise. Reports and the
regrtest output of every run are kept in target/conformance/.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = (
    "test_thread", "test_threading", "test_threading_local", "test_threadsignals", "test_audit",
    # The standard library on top of threading's locks and conditions.
    "test_queue", "test_logging", "test_sched",
)
HERE = ROOT / "tests" / "cpython"
ACTIVATOR = HERE / "_rthread_conformance.py"
EXPECTATIONS = HERE / "expected_differences.py"
OUT = ROOT / "target" / "conformance"
PTH_NAME = "00_rthread_conformance.pth"
# Bump when the way results are recorded changes: cached baselines are redone.
CACHE_FORMAT = 1
# Per test file limit (regrtest dumps the tracebacks and kills the worker).
REGRTEST_TIMEOUT = 300
RUN_TIMEOUT = 1500
SOURCES = ("crates", "python", "Cargo.toml", "Cargo.lock", "pyproject.toml")
# rthread's own refusal, and CPython's for an isolated subinterpreter (3.12+).
SUBINTERP_ERRORS = (
    "rthread can only be loaded in the main interpreter",
    "does not support loading in subinterpreters",
)


def say(*args):
    print(*args, flush=True)


def interpreters(wanted):
    out = subprocess.run(
        [str(ROOT / "scripts" / "pythons.sh")], stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    found = [line.split(None, 1) for line in out.splitlines() if line.strip()]
    if wanted:
        found = [(v, p) for v, p in found if v in wanted]
        missing = set(wanted) - {v for v, _ in found}
        if missing:
            raise SystemExit("interpreter(s) not found: %s" % ", ".join(sorted(missing)))
    if not found:
        raise SystemExit("no CPython 3.9-3.15 found (pyenv or pythonX.Y on PATH)")
    return found


def clean_env():
    """The runs' environment: no RTHREAD* (the wheel's own switch must not
    interfere with the baseline) and no PYTHON* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RTHREAD", "PYTHON"))}


# --------------------------------------------------------------------------
# Setup: wheel, venv, activation


def newest_source_mtime():
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        paths = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        for p in paths:
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".so"):
                newest = max(newest, p.stat().st_mtime)
    return newest


def ensure_wheel(version, python, build):
    wheels = sorted((ROOT / "target" / "wheels" / version).glob("rthread-*.whl"))
    stale = not wheels or (build == "auto" and wheels[-1].stat().st_mtime < newest_source_mtime())
    if build == "always" or (build == "auto" and stale):
        say("   building the wheel (scripts/install.sh %s)" % version)
        subprocess.run(
            [str(ROOT / "scripts" / "install.sh"), version, python],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wheels = sorted((ROOT / "target" / "wheels" / version).glob("rthread-*.whl"))
    if len(wheels) != 1:
        raise SystemExit("expected one wheel in target/wheels/%s, found %d" % (version, len(wheels)))
    return wheels[0]


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Venv:
    """.venv/conf-3.X: the interpreter's venv with rthread and the activator."""

    def __init__(self, version, python):
        self.version = version
        self.base_python = python
        self.path = ROOT / ".venv" / ("conf-" + version)
        self.python = self.path / "bin" / "python"
        self.state = self.path / "rthread-conformance"
        self.log = self.state / "processes.jsonl"
        self.marker = self.state / "baseline"

    def _valid(self):
        cfg = self.path / "pyvenv.cfg"
        if not (self.python.exists() and cfg.exists()):
            return False
        home = Path(os.path.realpath(self.base_python)).parent
        lines = dict(
            (k.strip(), v.strip()) for k, _, v in (l.partition("=") for l in cfg.read_text().splitlines())
        )
        if Path(os.path.realpath(lines.get("home", ""))) != home:
            return False
        try:
            subprocess.run([str(self.python), "-S", "-c", "pass"], check=True, timeout=60)
        except (subprocess.SubprocessError, OSError):
            return False
        return True

    def setup(self, wheel):
        if not self._valid():
            say("   creating %s" % self.path.relative_to(ROOT))
            shutil.rmtree(self.path, ignore_errors=True)
            subprocess.run(
                [self.base_python, "-m", "venv", str(self.path)],
                check=True,
                env=clean_env(),
                stdout=subprocess.DEVNULL,
            )
        self.state.mkdir(exist_ok=True)
        # Anything run in the venv during setup (pip) stays on the built-in.
        self.marker.touch()
        site = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        ).stdout.strip()
        stamp = self.state / "wheel.sha256"
        digest = sha256_file(wheel)
        if not stamp.exists() or stamp.read_text().strip() != digest:
            say("   installing %s" % wheel.name)
            subprocess.run(
                [str(self.python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                 "--force-reinstall", "--disable-pip-version-check", str(wheel)],
                check=True,
                env=clean_env(),
            )
            stamp.write_text(digest + "\n")
        text = ACTIVATOR.read_text().replace("@STATE_DIR@", str(self.state))
        Path(site, "_rthread_conformance.py").write_text(text)
        Path(site, PTH_NAME).write_text("import _rthread_conformance\n")
        info = subprocess.run(
            [str(self.python), "-c",
             "import json, os, sys, test, threading, _rthread_conformance, rthread\n"
             "print(json.dumps({'version': sys.version, 'testdir': os.path.dirname(test.__file__),"
             " 'rthread': os.path.dirname(rthread.__file__)}))"],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
            cwd=str(OUT),
        ).stdout
        self.info = json.loads(info)

    def set_mode(self, mode):
        if mode == "builtin":
            self.marker.touch()
        else:
            self.marker.unlink(missing_ok=True)

    def read_log(self):
        records = []
        if self.log.exists():
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    records.append({"event": "garbled", "line": line[:200]})
        return records


def baseline_key(venv):
    """What the built-in's results depend on: the interpreter, its test
    package and stdlib threading, the activator, and how the tests are run."""
    h = hashlib.sha256()
    h.update(repr((CACHE_FORMAT, REGRTEST_TIMEOUT, TESTS, venv.info["version"])).encode())
    testdir = Path(venv.info["testdir"])
    files = [testdir / (t + ".py") for t in TESTS] + [testdir / "audit-tests.py", testdir.parent / "threading.py"]
    for sub in ("support", "libregrtest"):
        files += sorted((testdir / sub).rglob("*.py"))
    files.append(ACTIVATOR)
    for f in files:
        if f.exists():
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------
# Running regrtest and reading its results

FILE_LINE = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\]\s+(test_\w+)\s+(.*)$")


def file_status(text):
    text = text.split(" -- ")[0].strip()
    if text.startswith("passed"):
        return "passed"
    if "env changed" in text:
        return "env changed"
    if text.startswith("skipped"):
        return "skipped"
    if text.startswith("ran no tests") or text.startswith("run no tests"):
        return "no tests"
    if text.startswith("failed (uncaught exception)"):
        return "crashed"
    if text.startswith("failed"):
        return "failed"
    return "crashed"  # crashed, worker non-zero exit code, timed out, interrupted...


def normalize(text):
    text = re.sub(r"0x[0-9a-fA-F]+", "0x...", text or "")
    return " ".join(text.split())[:300]


def parse_junit(path):
    """{test id: (outcome, detail)} and the unnamed results (a subtest
    failure leaves its testcase element without a name)."""
    results, unnamed = {}, 0
    if not path.exists():
        return results, unnamed
    try:
        root = ET.parse(str(path)).getroot()
    except ET.ParseError:
        return results, -1
    for case in root.iter("testcase"):
        name = case.get("name")
        if not name:
            unnamed += 1
            continue
        tags = {child.tag: child for child in case}
        if "skipped" in tags:
            outcome, detail = "skipped", normalize(tags["skipped"].text)
        elif "error" in tags:
            outcome, detail = "error", normalize(tags["error"].get("message"))
        elif "failure" in tags:
            outcome, detail = "failed", normalize(tags["failure"].get("message"))
        elif "output" in tags:
            outcome, detail = "expected failure", ""
        elif "outcome" in tags:
            outcome, detail = "unexpected success", ""
        else:
            outcome, detail = "passed", ""
        # The rare id seen twice (a test class run by two modules) keeps the worst.
        if name not in results or results[name][0] == "passed":
            results[name] = (outcome, detail)
    return results, unnamed


def run_tests(venv, mode, label, tests=TESTS, match=None):
    """One regrtest run. Returns a dict: cases {id: [outcome, detail]},
    files {name: status}, processes (the venv's log), seconds, returncode."""
    rundir = OUT / venv.version
    rundir.mkdir(parents=True, exist_ok=True)
    work = rundir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    xml = rundir / (label + ".xml")
    xml.unlink(missing_ok=True)
    venv.set_mode(mode)
    venv.log.unlink(missing_ok=True)
    cmd = [str(venv.python), "-m", "test", "-j2", "--timeout", str(REGRTEST_TIMEOUT), "--junit-xml", str(xml)]
    if match:
        matchfile = rundir / (label + ".match")
        matchfile.write_text("".join(m + "\n" for m in sorted(match)))
        cmd += ["--matchfile", str(matchfile)]
    cmd += list(tests)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=str(work), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=RUN_TIMEOUT,
        )
        output, returncode = proc.stdout.decode("utf-8", "replace"), proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode("utf-8", "replace") + "\n[conformance] run timed out\n"
        returncode = "timeout"
    seconds = time.monotonic() - start
    venv.set_mode("builtin")
    (rundir / (label + ".log")).write_text("$ %s\n%s" % (" ".join(cmd), output))
    files = {}
    for line in output.splitlines():
        m = FILE_LINE.search(line)
        if m and m.group(1) in tests:
            files[m.group(1)] = file_status(m.group(2))
    for t in tests:
        files.setdefault(t, "missing")
    cases, unnamed = parse_junit(xml)
    if unnamed:
        # Attributed to the files that failed without a named failing test.
        for t in tests:
            named_bad = any(
                k.startswith("test.%s." % t) and v[0] in ("failed", "error") for k, v in cases.items()
            )
            if files[t] in ("failed", "crashed") and not named_bad:
                cases["%s (unnamed results)" % t] = ("failed", "%d testcase(s) without a name, e.g. subtests" % unnamed)
    processes = venv.read_log()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "label": label,
        "mode": mode,
        "cases": {k: list(v) for k, v in cases.items()},
        "files": files,
        "processes": processes,
        "seconds": round(seconds, 1),
        "returncode": returncode,
        "log": str((rundir / (label + ".log")).relative_to(ROOT)),
    }


def outcome(run, test_id):
    """Outcome of a test id (or of a whole file, 'test_x (file)') in a run."""
    if test_id.endswith(" (file)"):
        return [run["files"].get(test_id[: -len(" (file)")], "missing"), ""]
    return run["cases"].get(test_id, ["not run", ""])


def file_of(test_id):
    if test_id.endswith(" (file)") or test_id.endswith(" (unnamed results)"):
        return test_id.split(" ")[0]
    return test_id.split(".")[1]


def same(a, b):
    """Same outcome: the same status, and for a skip the same reason (the
    text of a failure may differ: times, addresses, pids)."""
    return a[0] == b[0] and (a[0] != "skipped" or a[1] == b[1])


def differences(base, rt, ids=None):
    if ids is None:
        ids = set(base["cases"]) | set(rt["cases"]) | {t + " (file)" for t in TESTS}
    return sorted(i for i in ids if not same(outcome(base, i), outcome(rt, i)))


def counts(run):
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for o, _ in run["cases"].values():
        if o in ("passed", "expected failure"):
            c["passed"] += 1
        elif o == "skipped":
            c["skipped"] += 1
        else:
            c["failed"] += 1
    c["files"] = ",".join(sorted("%s:%s" % (t, s) for t, s in run["files"].items() if s != "passed")) or "all passed"
    return c


# --------------------------------------------------------------------------
# Processes: proof that rthread was in use


def check_processes(version, runs, exceptions):
    """Problems (list of str) and a summary line for the rthread runs' logs."""
    allow_subinterp = any(
        e["kind"] == "subinterpreter" and version in e["versions"] for e in exceptions
    )
    problems = []
    started = exited = threading_users = subinterps = forked = 0
    for run in runs:
        starts = {r.get("pid") for r in run["processes"] if r.get("event") == "start"}
        # An exit without a start: a forked child (same interpreter state,
        # inherited atexit hook) that exited normally. Checked like the rest.
        forked += len({r.get("pid") for r in run["processes"] if r.get("event") == "exit"} - starts)
        if not run["processes"]:
            problems.append("%s: no process log at all: the activation did not run" % run["label"])
        for rec in run["processes"]:
            ev = rec.get("event")
            where = "%s pid %s %s" % (run["label"], rec.get("pid"), " ".join(rec.get("orig_argv") or rec.get("argv") or [])[:160])
            if ev == "garbled":
                problems.append("%s: unreadable log line %r" % (run["label"], rec.get("line")))
                continue
            if rec.get("mode") != "rthread":
                problems.append("%s: ran in %s mode" % (where, rec.get("mode")))
                continue
            sub = rec.get("subinterpreter") is True
            if ev == "start":
                started += 1
                if rec.get("error"):
                    if sub and allow_subinterp and any(e in rec["error"] for e in SUBINTERP_ERRORS):
                        subinterps += 1
                    else:
                        problems.append("%s: activation failed: %s" % (where, rec["error"]))
                elif not rec.get("thread_is_rthread"):
                    problems.append("%s: _thread is not rthread after activation" % where)
            elif ev == "exit":
                exited += 1
                if sub and allow_subinterp:
                    continue
                if rec.get("check_error"):
                    problems.append("%s: exit check failed: %s" % (where, rec["check_error"]))
                if rec.get("threading_imported"):
                    threading_users += 1
                    if not rec.get("threading_on_rthread"):
                        bad = sorted(k for k, v in (rec.get("threading_checks") or {}).items() if not v)
                        problems.append(
                            "%s: threading is not on rthread (%s; _thread is %s)"
                            % (where, ", ".join(bad) or "no rthread functions bound", rec.get("thread_module"))
                        )
                elif not rec.get("thread_is_rthread"):
                    problems.append("%s: _thread at exit is %s" % (where, rec.get("thread_module")))
    summary = (
        "%d interpreters started on rthread, %d exits checked (%d of forked children), "
        "%d imported threading and all bound rthread's"
        % (started - subinterps, exited, forked, threading_users)
        if not problems
        else "%d process problem(s)" % len(problems)
    )
    if subinterps:
        summary += "; %d subinterpreter(s) on the built-in (expected: see expected_differences.py)" % subinterps
    return problems, summary


def check_baseline_processes(run):
    bad = [r for r in run["processes"] if r.get("mode") != "builtin" or r.get("thread_is_rthread")]
    if bad:
        return ["%s: %d process(es) were not on the built-in in the baseline run" % (run["label"], len(bad))]
    if not run["processes"]:
        return ["%s: no process log: the conformance .pth did not run" % run["label"]]
    return []


# --------------------------------------------------------------------------
# Expectations


def load_expectations():
    namespace = {}
    exec(compile(EXPECTATIONS.read_text(), str(EXPECTATIONS), "exec"), namespace)
    tests = namespace.get("TEST_DIFFERENCES", [])
    for entry in tests:
        missing = {"versions", "test", "builtin", "rthread", "reason"} - set(entry)
        if missing or not entry["reason"].strip():
            raise SystemExit("%s: entry %r lacks %s" % (EXPECTATIONS, entry.get("test"), sorted(missing) or "a reason"))
    return tests, namespace.get("PROCESS_EXCEPTIONS", [])


# --------------------------------------------------------------------------


def conform(version, python, args, expected_tests, process_exceptions):
    t0 = time.monotonic()
    say("== Python %s (%s)" % (version, python))
    OUT.mkdir(parents=True, exist_ok=True)
    wheel = ensure_wheel(version, python, args.build)
    venv = Venv(version, python)
    venv.setup(wheel)
    report = {"version": version, "python": python, "testdir": venv.info["testdir"], "wheel": wheel.name}
    problems = []

    key = baseline_key(venv)
    cache = OUT / ("baseline-%s.json" % version)
    base = None
    if cache.exists() and not args.fresh_baseline:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            base = cached["run"]
            say("   built-in: cached baseline (%s)" % cache.relative_to(ROOT))
    if base is None:
        base = run_tests(venv, "builtin", "builtin")
        say("   built-in: %.0f s" % base["seconds"])
        baseline_problems = check_baseline_processes(base)
        if baseline_problems:
            problems += baseline_problems
        else:
            cache.write_text(json.dumps({"key": key, "run": base}))
    rt = run_tests(venv, "rthread", "rthread")
    say("   rthread:  %.0f s" % rt["seconds"])
    rthread_runs = [rt]

    diffs = differences(base, rt)
    flaky = []
    # Re-run what differs, to tell flakiness from a real difference.
    for attempt in range(1, args.retries + 1):
        if not diffs:
            break
        rerun = rerun_scope(diffs)
        say("   re-running on rthread (%d): %s" % (attempt, ", ".join(diffs)[:300]))
        runs = [run_tests(venv, "rthread", "rthread-rerun%d-%s" % (attempt, t), (t,), m) for t, m in rerun.items()]
        rthread_runs += runs
        still = []
        for d in diffs:
            again = [r for r in runs if file_of(d) in r["files"]]
            if any(same(outcome(r, d), outcome(base, d)) for r in again):
                flaky.append({"test": d, "first": outcome(rt, d), "then": outcome(base, d), "side": "rthread"})
            else:
                still.append(d)
        diffs = still
    if diffs:
        rerun = rerun_scope(diffs)
        say("   re-running on the built-in: %s" % ", ".join(diffs)[:300])
        runs = [run_tests(venv, "builtin", "builtin-rerun-%s" % t, (t,), m) for t, m in rerun.items()]
        problems += [p for r in runs for p in check_baseline_processes(r)]
        still = []
        for d in diffs:
            again = [r for r in runs if file_of(d) in r["files"]]
            if any(same(outcome(r, d), outcome(rt, d)) for r in again):
                flaky.append({"test": d, "first": outcome(base, d), "then": outcome(rt, d), "side": "built-in"})
            else:
                still.append(d)
        diffs = still
        if any(f["side"] == "built-in" for f in flaky):
            cache.unlink(missing_ok=True)  # recorded a flaky outcome: redo it next time

    expected, unexpected = [], []
    for d in diffs:
        b, r = outcome(base, d), outcome(rt, d)
        entry = next(
            (e for e in expected_tests if e["test"] == d and version in e["versions"]), None
        )
        if entry and entry["builtin"] == b[0] and entry["rthread"] == r[0]:
            expected.append({"test": d, "builtin": b, "rthread": r, "reason": entry["reason"]})
        else:
            unexpected.append({"test": d, "builtin": b, "rthread": r})
    unused = [
        e["test"] for e in expected_tests
        if version in e["versions"] and e["test"] not in {x["test"] for x in expected}
    ]

    proc_problems, proc_summary = check_processes(version, rthread_runs, process_exceptions)
    problems += proc_problems
    report.update(
        builtin=counts(base), rthread=counts(rt), expected=expected, unexpected=unexpected, flaky=flaky,
        unused_expectations=unused, process_problems=problems, processes=proc_summary,
        seconds=round(time.monotonic() - t0, 1),
    )
    (OUT / ("report-%s.json" % version)).write_text(json.dumps(report, indent=1))
    for f in flaky:
        say("   FLAKY on the %s: %s was %s, then %s on a re-run" % (f["side"], f["test"], fmt(f["first"]), fmt(f["then"])))
    for e in expected:
        say("   expected difference: %s: built-in %s, rthread %s (%s)" % (e["test"], e["builtin"][0], e["rthread"][0], e["reason"][:100]))
    not_run = {}
    for u in unexpected:
        if u["rthread"][0] == "not run":  # a crashed or timed-out file: one line per file
            not_run.setdefault(file_of(u["test"]), []).append(u["test"])
        else:
            say("   UNEXPECTED: %s: built-in %s, rthread %s" % (u["test"], fmt(u["builtin"]), fmt(u["rthread"])))
    for t, ids in sorted(not_run.items()):
        say("   UNEXPECTED: %d test(s) of %s did not run on rthread, e.g. %s" % (len(ids), t, ids[0]))
    for u in unused:
        say("   note: expected difference %s did not occur: delete it from %s if it is fixed" % (u, EXPECTATIONS.name))
    for p in problems[:20]:
        say("   PROCESS: %s" % p)
    if len(problems) > 20:
        say("   ... %d more process problems, see %s" % (len(problems) - 20, OUT.relative_to(ROOT)))
    say("   processes: %s" % proc_summary)
    say("   logs: %s, %s" % (base.get("log"), rt["log"]))
    return report


def fmt(o):
    return o[0] + (" (%s)" % o[1][:160] if o[1] else "")


def rerun_scope(diffs):
    """{test file: match ids or None (whole file)}."""
    scope = {}
    for d in diffs:
        t = file_of(d)
        if d.endswith(" (file)") or d.endswith(" (unnamed results)"):
            scope[t] = None
        elif scope.get(t, ()) is not None:
            scope.setdefault(t, set()).add(d)
    return scope


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", help="comma-separated, e.g. 3.9,3.13 (default: all found)")
    parser.add_argument("--fresh-baseline", action="store_true", help="ignore cached built-in results")
    parser.add_argument("--retries", type=int, default=2, help="rthread re-runs of a differing test (default 2)")
    parser.add_argument(
        "--strict", action="store_true",
        help="also fail when a difference went away on a re-run (flaky); by default it is only reported",
    )
    parser.add_argument(
        "--build", choices=("auto", "always", "never"), default="auto",
        help="build the wheel with scripts/install.sh: when missing or older than the sources (auto)",
    )
    args = parser.parse_args()
    wanted = [v.strip() for v in args.versions.split(",")] if args.versions else None
    expected_tests, process_exceptions = load_expectations()
    start = time.monotonic()
    reports = [conform(v, p, args, expected_tests, process_exceptions) for v, p in interpreters(wanted)]
    total = time.monotonic() - start

    say("")
    say("== conformance: CPython's %s" % ", ".join(TESTS))
    say("%-7s %-9s %7s %7s %7s  %s" % ("python", "_thread", "passed", "failed", "skipped", "files not passed"))
    ok = True
    for r in reports:
        for side in ("builtin", "rthread"):
            c = r[side]
            say("%-7s %-9s %7d %7d %7d  %s" % (r["version"], "built-in" if side == "builtin" else side,
                                               c["passed"], c["failed"], c["skipped"], c["files"]))
        failed = r["unexpected"] or r["process_problems"] or (args.strict and r["flaky"])
        verdict = "FAILED" if failed else "OK"
        ok = ok and verdict == "OK"
        say("%-7s %s: %d expected difference(s), %d unexpected, %d flaky re-run(s), %d process problem(s), %.0f s"
            % (r["version"], verdict, len(r["expected"]), len(r["unexpected"]), len(r["flaky"]),
               len(r["process_problems"]), r["seconds"]))
    (OUT / "summary.json").write_text(json.dumps({"ok": ok, "seconds": round(total, 1), "reports": reports}, indent=1))
    say("total %.0f s: %s" % (total, "conformance OK" if ok else "conformance FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
