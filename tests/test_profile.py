"""rthread.profile (the lock contention profile) and rthread.debug.stats().

The contended programs run in child processes (rthread installed first, a bound on the
time), so that nothing else of the test process shows up in their profiles.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest

import rthread
import rthread.debug as dbg
import rthread.profile as prof

TIMEOUT = 120

#: One hot lock contended by four threads, one cold lock. The marker comments name the
#: lines the test looks for.
PROGRAM = """\
import threading, time

hot = threading.Lock()  # HOT
cold = threading.Lock()  # COLD

def critical():
    hot.acquire()  # WAIT
    try:
        time.sleep(0.0003)
    finally:
        hot.release()  # HOLD

start = threading.Barrier(4)

def worker():
    start.wait()
    for _ in range(60):
        critical()
        with cold:
            pass

threads = [threading.Thread(target=worker, name="worker-%d" % i) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def line_of(marker, program=PROGRAM):
    for number, line in enumerate(program.splitlines(), 1):
        if line.rstrip().endswith("# " + marker):
            return number
    raise AssertionError(marker)


def run(args, env=None, cwd=None):
    full = dict(os.environ)
    full.pop("RTHREAD", None)
    full.pop("RTHREAD_PROFILE", None)
    full.pop("RTHREAD_PROFILE_PID", None)
    full.update(env or {})
    return subprocess.run(args, env=full, cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)


def in_child_script(tmp_path, out_name, rate=1):
    """The program, profiled from inside (start/snapshot/write)."""
    script = tmp_path / "prog.py"
    body = ("import rthread; rthread.install()\nimport rthread.profile as prof\n"
            "prof.start(rate=%d)\n" % rate)
    tail = textwrap.dedent("""
        snap = prof.snapshot()
        prof.stop()
        import json, sys
        snap.write(sys.argv[1])
        snap.write(sys.argv[1] + ".speedscope.json")
        snap.write(sys.argv[1] + ".collapsed")
        sys.stdout.write(snap.table())
        """)
    script.write_text(body + PROGRAM + tail)
    return script, 3  # the prelude's lines shift the program's


def check_speedscope(doc):
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert isinstance(doc.get("version", ""), str)
    frames = doc["shared"]["frames"]
    assert isinstance(frames, list) and frames
    for f in frames:
        assert isinstance(f["name"], str)
        assert isinstance(f.get("file", ""), str)
        assert isinstance(f.get("line", 0), int)
    assert doc["profiles"]
    assert 0 <= doc.get("activeProfileIndex", 0) < len(doc["profiles"])
    total = 0
    for p in doc["profiles"]:
        assert p["type"] == "sampled"
        assert isinstance(p["name"], str)
        assert p["unit"] in ("none", "nanoseconds", "microseconds", "milliseconds",
                             "seconds", "bytes")
        assert len(p["samples"]) == len(p["weights"])
        for stack, weight in zip(p["samples"], p["weights"]):
            assert stack and all(isinstance(i, int) and 0 <= i < len(frames) for i in stack)
            assert isinstance(weight, (int, float)) and weight >= 0
        assert p["endValue"] >= p["startValue"]
        total += len(p["samples"])
    assert total > 0
    return frames


def wait_until_blocked(lock, limit=30.0):
    """Polls (bounded) until some thread is recorded as blocked on ``lock``."""
    import time

    end = time.monotonic() + limit
    while time.monotonic() < end:
        for t in dbg.snapshot().to_dict()["threads"]:
            w = t.get("waiting")
            if w and w["object"] == id(lock):
                return
        time.sleep(0.002)
    raise AssertionError("no thread blocked on the lock")


COLLAPSED_LINE = re.compile(r"^(waited|held)(;[^;]+)+ \d+$")


def test_hot_lock_tops_the_table(tmp_path):
    script, shift = in_child_script(tmp_path, "out.json")
    out = tmp_path / "out.json"
    r = run([sys.executable, str(script), str(out)])
    assert r.returncode == 0, r.stderr
    hot_line = line_of("HOT") + shift
    cold_line = line_of("COLD") + shift
    wait_line = line_of("WAIT") + shift
    hold_line = line_of("HOLD") + shift

    doc = json.loads(out.read_text())
    assert doc["schema"] == "rthread.profile/1"
    top = doc["sites"][0]
    assert top["site"] == "%s:%d" % (script, hot_line), doc["sites"]
    assert top["contended"] > 0 and top["wait_s"] > 0
    assert top["slept"] + top["spun"] + top["timeouts"] >= top["contended"] - top["timeouts"]
    assert sum(b["count"] for b in top["histogram"]) == top["contended"]
    assert top["max_wait_s"] <= top["wait_s"]
    assert top["charged_s"] > 0 and top["charges"] > 0
    # The cold lock, if it shows at all, comes after with less wait.
    for row in doc["sites"][1:]:
        assert row["wait_s"] <= top["wait_s"]
    assert all(row["site"] != "%s:%d" % (script, hot_line) for row in doc["sites"][1:])
    cold = [row for row in doc["sites"] if row["site"] == "%s:%d" % (script, cold_line)]
    assert not cold or cold[0]["wait_s"] < top["wait_s"]
    # Stacks: who waited, and who held the lock while others waited (the releaser).
    waited = top["waiting_stacks"][:3]
    held = top["holding_stacks"][:3]
    assert any(s["frames"][0]["line"] == wait_line and s["frames"][0]["function"] == "critical"
               for s in waited), waited
    assert any(s["frames"][0]["line"] == hold_line and s["frames"][0]["function"] == "critical"
               for s in held), held
    assert any(f["function"] == "worker" for f in held[0]["frames"])
    names = [t["name"] for t in doc["threads"]]
    assert len(names) >= 2 and set(names) <= {"worker-%d" % i for i in range(4)}, names
    assert sum(t["contended"] for t in doc["threads"]) == top["contended"] + sum(
        row["contended"] for row in doc["sites"][1:])

    # The table (stdout): the hot lock's creation line on the first row.
    table = r.stdout.splitlines()
    first = next(line for line in table if line.strip().startswith("1 "))
    assert "%s:%d" % (script, hot_line) in first, r.stdout

    frames = check_speedscope(json.loads(
        (tmp_path / "out.json.speedscope.json").read_text()))
    assert any(f["name"] == "critical" and f.get("line") == hold_line for f in frames)

    lines = (tmp_path / "out.json.collapsed").read_text().splitlines()
    assert lines
    for line in lines:
        assert COLLAPSED_LINE.match(line), line
    assert any(line.startswith("held;") and "critical (%s:%d)" % (script, hold_line) in line
               for line in lines)


def test_cli_profile_locks(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    out = tmp_path / "app.speedscope.json"
    r = run([sys.executable, "-m", "rthread", "--profile-locks", str(out), str(script)])
    assert r.returncode == 0, r.stderr
    check_speedscope(json.loads(out.read_text()))
    assert "rthread lock contention:" in r.stderr
    assert "%s:%d" % (script, line_of("HOT")) in r.stderr
    assert "written to %s" % out in r.stderr
    # A forked child that exits normally writes its own file.
    fork = tmp_path / "fork.py"
    fork.write_text("import os, sys\npid = os.fork()\nif pid == 0:\n    sys.exit(0)\n"
                    "os.waitpid(pid, 0)\n")
    out = tmp_path / "fork.json"
    r = run([sys.executable, "-m", "rthread", "--profile-locks", str(out), str(fork)])
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["schema"] == "rthread.profile/1"
    assert [p for p in os.listdir(tmp_path) if re.fullmatch(r"fork\.\d+\.json", p)]
    # A profile that cannot be written never makes the program fail.
    bad = tmp_path / "missing-dir" / "x.json"
    r = run([sys.executable, "-m", "rthread", "--profile-locks", str(bad), "-c", "print('ran')"])
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
    assert "could not write the lock profile" in r.stderr
    assert "(no contention recorded)" in r.stderr


def test_env_profile(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(PROGRAM + "import subprocess, sys\n"
                      "subprocess.run([sys.executable, '-c', 'import threading'], check=True)\n")
    out = tmp_path / "app.collapsed"
    r = run([sys.executable, str(script)],
            env={"RTHREAD": "1", "RTHREAD_PROFILE": str(out), "RTHREAD_PROFILE_RATE": "1"})
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines and all(COLLAPSED_LINE.match(line) for line in lines)
    assert "%s:%d" % (script, line_of("HOT")) in r.stderr
    # The child wrote its own file, not over the parent's.
    children = [p for p in os.listdir(tmp_path) if re.fullmatch(r"app\.\d+\.collapsed", p)]
    assert len(children) == 1, os.listdir(tmp_path)


def test_stats_move_only_under_contention():
    lock = rthread.allocate_lock()
    rlock = rthread.RLock()
    before = dbg.stats()
    for _ in range(2000):
        lock.acquire()
        lock.release()
        with rlock:
            with rlock:
                pass
    # A failed non-blocking acquire, and a zero timeout, are not waits.
    lock.acquire()
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0)
    lock.release()
    # A signal wait (a Condition's waiter lock) is not contention.
    cond = threading.Condition(rthread.allocate_lock()) if rthread.active() else None
    if cond is not None:
        with cond:
            cond.wait(0.01)
    assert dbg.stats() == before

    lock.acquire()
    done = []

    def waiter():
        lock.acquire()
        lock.release()
        done.append(True)

    t = rthread.start_new_thread(waiter, ())
    import time
    deadline = time.monotonic() + 30
    wait_until_blocked(lock)
    time.sleep(0.05)
    assert dbg.stats() == before  # counted when the wait ends
    lock.release()
    while not done and time.monotonic() < deadline:
        time.sleep(0.001)
    after = dbg.stats()
    assert done and t
    assert after.waits == before.waits + 1
    assert after.sleeps == before.sleeps + 1
    assert after.spins == before.spins
    assert after.timeouts == before.timeouts
    assert after.wait_seconds - before.wait_seconds >= 0.04


def test_stats_timeout_counts():
    import time

    lock = rthread.allocate_lock()
    state = []

    def holder():
        lock.acquire()
        state.append("held")
        while "stop" not in state:
            time.sleep(0.001)
        lock.release()
        state.append("released")

    rthread.start_new_thread(holder, ())
    deadline = time.monotonic() + 30
    while "held" not in state and time.monotonic() < deadline:
        time.sleep(0.001)
    before = dbg.stats()
    assert not lock.acquire(timeout=0.02)
    after = dbg.stats()
    state.append("stop")
    while "released" not in state and time.monotonic() < deadline:
        time.sleep(0.001)
    assert after.waits == before.waits + 1
    assert after.timeouts == before.timeouts + 1
    assert after.spins == before.spins
    assert after.wait_seconds - before.wait_seconds >= 0.015
    assert isinstance(after, dbg.ContentionStats)
    # The same wait on a lock the caller holds itself is a signal, not contention.
    lock.acquire()
    before = dbg.stats()
    assert not lock.acquire(timeout=0.01)
    assert dbg.stats() == before
    lock.release()


def test_api_errors_and_states():
    with pytest.raises(TypeError):
        prof.start(rate=1.5)
    with pytest.raises(TypeError):
        prof.start(rate=True)
    with pytest.raises(ValueError):
        prof.start(rate=-1)
    assert not prof.running()
    prof.start(rate=0)
    try:
        assert prof.running()
    finally:
        prof.stop()
    assert not prof.running()
    prof.reset()
    snap = prof.snapshot()
    assert snap.sites == [] and snap.to_dict()["schema"] == "rthread.profile/1"
    assert "no contention recorded" in snap.table()
    assert prof.format_for("a.speedscope.json") == "speedscope"
    assert prof.format_for("a.JSON") == "json"
    assert prof.format_for("a.folded") == "collapsed"
    assert prof.format_for("a.txt") == "collapsed"
    assert prof.format_for("a.out") == "text"
    assert prof._child_path("x/a.speedscope.json", 7) == "x/a.7.speedscope.json"
    assert prof._child_path("a", 7) == "a.7"


def test_label_and_rlock_in_process():
    """An RLock contended in this process, labelled: its row carries the label."""
    import time

    prof.reset()
    rl = rthread.RLock()
    dbg.label(rl, "the-rlock")
    prof.start(rate=1)
    try:
        rl.acquire()
        got = []
        rthread.start_new_thread(lambda: (rl.acquire(), got.append(1), rl.release()), ())
        deadline = time.monotonic() + 30
        wait_until_blocked(rl)
        time.sleep(0.05)
        rl.release()
        while not got and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        prof.stop()
    snap = prof.snapshot()
    rows = [r for r in snap.sites if r.label == "the-rlock"]
    assert rows and rows[0].contended == 1 and rows[0].slept == 1
    assert rows[0].charged_s > 0
    assert "'the-rlock'" in snap.table()
    prof.reset()
