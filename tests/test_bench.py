"""Smoke test of ``python -m rthread bench``: every case once, tiny, then the JSON's shape.

No timing assertions: this proves that each case runs on both modules and reports numbers (or,
for the rows that need pieces rthread may not have yet, an explicit "n/a: <reason>").
"""

import importlib.util
import json
import math
import subprocess
import sys

import pytest

# Rows whose rthread side may be "n/a" while the piece they need is missing: rthread._local, and
# rthread.install() with threading running on top of it.
MAY_BE_NA = {"local_get", "local_set", "stdlib_queue", "stdlib_event", "stdlib_condition",
             "stdlib_pool"}

# A tiny run: one sample per module per case, 1 ms samples, small memory children. Generous
# timeout only for a hang in a child (the harness then reports it instead of waiting forever).
TINY = ["--repeats", "1", "--min-time", "1", "--objects", "20000"]
SECONDS = 240


def bench(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "rthread", "bench", *args],
        capture_output=True, text=True, timeout=SECONDS, cwd=str(cwd),
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("bench")
    path = where / "bench.json"
    proc = bench(*TINY, "--json", str(path), cwd=where)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(path, encoding="utf-8") as f:
        return proc.stdout, json.load(f), where


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.timeout(SECONDS + 30)
def test_every_case_ran(tiny_run, tmp_path):
    _, result, _ = tiny_run
    listed = bench("--list", cwd=tmp_path).stdout.split()
    assert [row["name"] for row in result["cases"]] == listed


@pytest.mark.timeout(SECONDS + 30)
def test_every_case_has_numbers(tiny_run):
    _, result, _ = tiny_run
    for row in result["cases"]:
        name = row["name"]
        if name.startswith("bookkeeping_"):
            continue  # no --nodiag in this run: test_bookkeeping_rows_without_nodiag
        assert row["label"] and row["unit"], name
        builtin, rthread = row["builtin"], row["rthread"]
        assert builtin["status"] == "ok", (name, builtin)
        assert _is_number(builtin["median"]), name
        assert builtin["samples"] and all(_is_number(x) for x in builtin["samples"]), name
        if rthread["status"] == "ok":
            assert _is_number(rthread["median"]), name
            assert rthread["samples"] and all(_is_number(x) for x in rthread["samples"]), name
            assert _is_number(row["ratio"]), name
        else:
            assert name in MAY_BE_NA, (name, rthread)
            assert rthread["status"] == "n/a", (name, rthread)
            assert rthread["reason"].startswith("n/a: "), (name, rthread)
            assert row["ratio"] is None, name


@pytest.mark.timeout(SECONDS + 30)
def test_json_header(tiny_run):
    _, result, _ = tiny_run
    assert result["schema"] == 1
    assert result["python"]["version"].startswith("%d.%d." % sys.version_info[:2])
    assert result["date"]
    assert result["settings"]["repeats"] == 1
    assert _is_number(result["duration_s"])


@pytest.mark.timeout(SECONDS + 30)
def test_table(tiny_run):
    stdout, result, _ = tiny_run
    assert "ratio" in stdout
    for row in result["cases"]:
        assert row["label"] in stdout


@pytest.mark.timeout(SECONDS + 30)
def test_merge(tiny_run, tmp_path):
    _, _, where = tiny_run
    path = str(where / "bench.json")
    proc = bench("--merge", path, path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("%d.%d." % sys.version_info[:2]) >= 2


@pytest.mark.timeout(SECONDS + 30)
def test_chart(tiny_run, tmp_path):
    _, _, where = tiny_run
    png = tmp_path / "chart.png"
    proc = bench("--merge", str(where / "bench.json"), "--chart", str(png), cwd=tmp_path)
    if importlib.util.find_spec("matplotlib") is None:
        assert proc.returncode == 2
        assert "matplotlib" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# The bookkeeping rows: rthread against a build with the bookkeeping compiled out (--nodiag DIR),
# loaded as a second copy of the extension. No no-diag build is made here (no compiler in the
# test run): the mechanism is tested on a second copy of the installed, normal extension, which
# --nodiag itself refuses (it records holders).


def _bookkeeping_names(cwd):
    listed = bench("--list", cwd=cwd).stdout.split()
    names = [name for name in listed if name.startswith("bookkeeping_")]
    assert len(names) >= 3, listed
    return names


@pytest.mark.timeout(SECONDS + 30)
def test_bookkeeping_rows_without_nodiag(tiny_run, tmp_path):
    """Without --nodiag the rows are there, n/a on both sides, saying how to get them."""
    stdout, result, _ = tiny_run
    rows = {row["name"]: row for row in result["cases"]}
    version = "%d.%d" % sys.version_info[:2]
    for name in _bookkeeping_names(tmp_path):
        row = rows[name]
        assert row["builtin"]["status"] == "n/a", row
        assert row["rthread"]["status"] == "n/a", row
        assert row["ratio"] is None, row
        reason = row["builtin"]["reason"]
        assert reason.startswith("n/a: "), reason
        assert "--nodiag" in reason and "scripts/nodiag.sh %s" % version in reason, reason
        assert row["label"] in stdout
    assert result["nodiag"] is None


def _copy_extension(where):
    """The installed rthread's extension, copied (another file: the loader must map a second
    library, not hand back the loaded one) into ``where/rthread``."""
    import shutil

    import rthread._rthread

    target = where / "rthread"
    target.mkdir()
    shutil.copy2(rthread._rthread.__file__, str(target))
    return where


# Loads the copy in a fresh process (its fork handlers and registry stay out of the test
# process), runs the bookkeeping rows with it, then checks the real rthread.
_COPY_SCRIPT = r"""
import json, sys
import rthread
import rthread._bench as bench
watched = {k: v for k, v in sys.modules.items() if k == "rthread" or k.startswith("rthread.")}
modules_before = set(sys.modules)
copy, info = bench.load_nodiag(sys.argv[1], require_compiled_out=False)
again = bench.load_nodiag(sys.argv[1], require_compiled_out=False)
out = {
    "records_holders": info["records_holders"],
    "same_type": type(copy.allocate_lock()) is type(rthread.allocate_lock()),
    "same_rlock_type": type(copy.RLock()) is type(rthread.RLock()),
    "loaded_once": again[0] is copy,
    "copy_debug_differs": info["modules"]["rthread._rthread_debug"]
                          is not watched["rthread._rthread_debug"],
    "replaced": sorted(k for k, v in watched.items() if sys.modules.get(k) is not v),
    "added": sorted(set(sys.modules) - modules_before),
}
# The real rthread afterwards: rthread.debug, imported only now, must find the real module's
# records (the copy's lock_info does not know the real lock type).
import rthread.debug
lock = rthread.allocate_lock()
with lock:
    out["holder_ok"] = rthread.debug.describe(lock)["holder"] == rthread.get_ident()
# The rows measure rthread in normal mode, and put diagnostic mode back as they found it.
rthread.debug.enable()
settings = {"mode": "quick", "repeats": 3, "min_time_ms": 1.0}
result = bench.run(settings, only=["bookkeeping"], nodiag=(copy, info))
out["diag_mode_back"] = rthread.debug.enabled()
rthread.debug.disable()
bench._write_json(result, sys.argv[2])
with open(sys.argv[3], "w") as f:
    f.write(bench.format_table(result))
# Threads still run.
done = rthread.allocate_lock()
done.acquire()
rthread.start_new_thread(done.release, ())
out["thread_ok"] = done.acquire(timeout=30)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("nodiag")
    _copy_extension(where)
    path, table = where / "copy.json", where / "table.txt"
    proc = subprocess.run([sys.executable, "-c", _COPY_SCRIPT, str(where), str(path), str(table)],
                          capture_output=True, text=True, timeout=SECONDS, cwd=str(where))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    return json.loads(proc.stdout.strip().splitlines()[-1]), result, table.read_text(), where


@pytest.mark.timeout(SECONDS + 30)
def test_copy_loads_apart_from_rthread(copy_run):
    """The second copy has its own types; loading it leaves rthread's sys.modules entries."""
    out, _, _, _ = copy_run
    assert out["records_holders"] is True  # a normal build: what --nodiag refuses
    assert out["same_type"] is False
    assert out["same_rlock_type"] is False
    assert out["loaded_once"] is True
    assert out["copy_debug_differs"] is True
    assert out["replaced"] == []
    assert [name for name in out["added"] if "rthread" in name] == []
    assert out["holder_ok"] is True
    assert out["diag_mode_back"] is True
    assert out["thread_ok"] is True


@pytest.mark.timeout(SECONDS + 30)
def test_bookkeeping_rows_with_a_copy(copy_run, tmp_path):
    _, result, table, where = copy_run
    names = _bookkeeping_names(tmp_path)
    assert [row["name"] for row in result["cases"]] == names
    for row in result["cases"]:
        for side in ("builtin", "rthread"):
            assert row[side]["status"] == "ok", row
            assert _is_number(row[side]["median"]) and row[side]["median"] > 0, row
            assert len(row[side]["samples"]) == 3, row
        assert _is_number(row["ratio"]), row
        assert "compiled out" in row["note"], row
        # The diagnostic-mode rows measured rthread with diagnostic mode on, the others off.
        assert row["mode"] == ("diagnostic" if "_diag_" in row["name"] else "normal"), row
        assert row["label"] in table
    assert result["nodiag"]["extension"].startswith(str(where))
    assert "* bookkeeping / compiled out: built-in column: rthread with the bookkeeping" in table
    assert "no-diag build: %s" % result["nodiag"]["extension"] in table


@pytest.mark.timeout(SECONDS + 30)
def test_merge_bookkeeping_rows(copy_run, tiny_run, tmp_path):
    """Merged: numbers from the run with a baseline, n/a from the one without."""
    _, result, _, where = copy_run
    _, _, tiny_where = tiny_run
    proc = bench("--merge", str(where / "copy.json"), str(tiny_where / "bench.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for row in result["cases"]:
        lines = [line for line in proc.stdout.splitlines() if line.startswith(row["label"] + " [")]
        assert len(lines) == 1, proc.stdout
        cells = lines[0].split()[-2:]
        assert cells == ["%.2f" % row["ratio"], "n/a"], lines[0]
    assert "* bookkeeping / compiled out: built-in column: rthread with the bookkeeping" in (
        proc.stdout)


def _refused(tmp_path, directory, *words):
    proc = bench("--only", "bookkeeping", "--no-json", "--nodiag", str(directory), *TINY,
                 cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--nodiag" in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert "bookkeeping / compiled out" not in proc.stdout + proc.stderr  # refused before a run


@pytest.mark.timeout(SECONDS + 30)
def test_nodiag_refuses_a_normal_build(tmp_path):
    where = tmp_path / "normal"
    where.mkdir()
    _copy_extension(where)
    _refused(tmp_path, where, "records lock holders", "no-diag")


@pytest.mark.timeout(SECONDS + 30)
def test_nodiag_refuses_the_installed_rthread(tmp_path):
    import os

    import rthread._rthread

    _refused(tmp_path, os.path.dirname(rthread._rthread.__file__), "own extension")


@pytest.mark.timeout(SECONDS + 30)
def test_nodiag_refuses_another_interpreter(tmp_path):
    where = tmp_path / "other" / "rthread"
    where.mkdir(parents=True)
    (where / "_rthread.cpython-30-x86_64-linux-gnu.so").write_bytes(b"")
    _refused(tmp_path, where.parent, "another interpreter", "_rthread.cpython-30-")
    _refused(tmp_path, tmp_path / "missing", "no such directory")
