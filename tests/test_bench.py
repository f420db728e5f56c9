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
