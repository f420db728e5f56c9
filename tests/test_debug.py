"""rthread.debug: who holds what, cycles, the watchdog.

Every deadlock runs in a child process (rthread installed first) with a timeout,
so a failure cannot hang pytest. Children print their findings as JSON on the
last line of stdout; the watchdog's reports go to stderr.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import rthread
import rthread.debug as dbg

PRELUDE = """\
import rthread; rthread.install()
import json, os, sys, threading, time
import rthread.debug as dbg
"""

#: Polls for a condition in the child, bounded.
HELPERS = """\
def poll(cond, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    print("TIMEOUT in poll", file=sys.stderr)
    os._exit(3)

def certain_cycle():
    s = dbg.snapshot()
    return s if any(c["certainty"] == "certain" for c in s.cycles) else None

def done(**kw):
    sys.stdout.write(json.dumps(kw) + "\\n")
    sys.stdout.flush()
    os._exit(0)
"""


def run(tmp_path, body, timeout=60, expect_rc=0):
    """Runs PRELUDE + HELPERS + body as a script; returns (result, stderr, lines), where
    lines maps each ``# @name`` marker to its line number in the script."""
    src = PRELUDE + HELPERS + textwrap.dedent(body)
    path = tmp_path / "scenario.py"
    path.write_text(src)
    lines = {}
    for i, line in enumerate(src.splitlines(), 1):
        if "# @" in line:
            lines[line.split("# @", 1)[1].strip()] = i
    p = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == expect_rc, (p.returncode, p.stdout, p.stderr)
    out = p.stdout.strip().splitlines()
    result = json.loads(out[-1]) if out and out[-1].startswith("{") else None
    return result, p.stderr, {k: "%s:%d" % (path, v) for k, v in lines.items()}


# ---------------------------------------------------------------------------
# The API, in process


def test_api_surface():
    for name in ("snapshot", "format_report", "label", "describe", "enable", "disable",
                 "enabled", "watchdog", "register", "unregister", "DeadlockError", "Snapshot"):
        assert hasattr(dbg, name), name
    assert issubclass(dbg.DeadlockError, RuntimeError)
    e = dbg.DeadlockError("the report")
    assert e.report == "the report"


def test_native_helpers_not_in_thread_module():
    names = set(dir(rthread._rthread))
    assert not any("debug" in n for n in names), names
    assert "rthread._rthread_debug" in sys.modules


def test_snapshot_to_dict_is_json_and_versioned():
    s = dbg.snapshot()
    d = s.to_dict()
    assert d["schema"] == "rthread.debug/1"
    for key in ("threads", "cycles", "taken_at", "diagnostic"):
        assert key in d
    json.dumps(d)
    assert isinstance(s.threads, list) and isinstance(s.cycles, list)
    assert dbg.format_report(s) == s.text()
    assert "Threads (" in dbg.format_report()


def test_enable_disable():
    before = dbg.enabled()
    try:
        dbg.enable()
        assert dbg.enabled()
        dbg.disable()
        assert not dbg.enabled()
    finally:
        (dbg.enable if before else dbg.disable)()


def test_label_and_describe():
    lock = rthread.allocate_lock()
    line = sys._getframe().f_lineno - 1
    dbg.label(lock, "the lock")
    d = dbg.describe(lock)
    assert d["kind"] == "lock"
    assert d["label"] == "the lock"
    assert d["created_at"] == "%s:%d" % (__file__, line)
    assert d["holder"] is None and d["waiters"] == []
    lock.acquire()
    try:
        assert dbg.describe(lock)["holder"] == rthread.get_ident()
    finally:
        lock.release()
    r = rthread.RLock()
    with r:
        d = dbg.describe(r)
        assert d["kind"] == "RLock" and d["holder"] == rthread.get_ident()
    assert dbg.describe(r)["holder"] is None
    with pytest.raises(TypeError):
        dbg.describe(object())
    with pytest.raises(TypeError):
        dbg.label(object(), "x")


def _site_line(obj):
    return int(dbg.describe(obj)["created_at"].rsplit(":", 1)[1])


def _marked_lines():
    """``# @site-name`` markers of this file -> line numbers."""
    with open(__file__) as f:
        return {
            line.split("# @", 1)[1].strip(): i
            for i, line in enumerate(f, 1)
            if "# @site-" in line
        }


def test_creation_sites_in_every_kind_of_frame():
    """The cached fast read of the current frame (3.13+) and the frame-object walk agree:
    each lock is named by its own line, whether its frame is new on each call, a generator,
    a comprehension, ``eval`` or module-level code. (Frames of threading skipped on the way
    are covered by the child-process scenarios below, where threading runs on rthread.)"""
    import threading

    at = _marked_lines()

    def make():
        return rthread.allocate_lock()  # @site-make

    def gen():
        while True:
            yield rthread.RLock()  # @site-gen

    class Holder:
        def __init__(self):
            self.cond = threading.Condition(rthread.RLock())  # @site-cond

    g = gen()
    for _ in range(3):  # the second and third rounds hit the caches
        assert _site_line(make()) == at["site-make"]
        assert _site_line(next(g)) == at["site-gen"]
        h = Holder()
        assert _site_line(h.cond._lock) == at["site-cond"]
        locks = [rthread.allocate_lock() for _ in range(2)]  # @site-comprehension
        assert [_site_line(x) for x in locks] == [at["site-comprehension"]] * 2
        assert _site_line(eval("rthread.allocate_lock()")) == 1
    ns = {"rthread": rthread}
    exec(compile("x = 1\nlock = rthread.allocate_lock()\n", __file__, "exec"), ns)
    assert _site_line(ns["lock"]) == 2


def _acquire_sites():
    """The acquire sites of the calling thread's held locks, by lock id."""
    me = [t for t in dbg.snapshot().to_dict()["threads"] if t["ident"] == rthread.get_ident()]
    return {h["object"]: int(h["acquired_at"].rsplit(":", 1)[1]) for h in me[0]["holds"]}


def test_acquire_sites_are_told_apart_in_every_kind_of_frame():
    """Diagnostic mode's acquire sites come from the caches keyed by the calling instruction
    after the first round: two call sites of one function, a `with`, a generator and a
    comprehension each keep their own line, round after round."""
    at = _marked_lines()
    a, b, c, d = (rthread.allocate_lock() for _ in range(4))
    r = rthread.RLock()

    def two_sites():
        a.acquire()  # @site-acq-a
        b.acquire()  # @site-acq-b

    def gen():
        while True:
            c.acquire()  # @site-acq-gen
            yield

    g = gen()
    was = dbg.enabled()
    dbg.enable()
    try:
        for _ in range(3):
            two_sites()
            next(g)
            with d:  # @site-acq-with
                [r.acquire() for _ in range(1)]  # @site-acq-comprehension
                sites = _acquire_sites()
                r.release()
            for lock in (a, b, c):
                lock.release()
            assert sites == {
                id(a): at["site-acq-a"], id(b): at["site-acq-b"], id(c): at["site-acq-gen"],
                id(d): at["site-acq-with"], id(r): at["site-acq-comprehension"],
            }
    finally:
        if not was:
            dbg.disable()


def test_many_sites_in_one_loop_keep_their_own_lines():
    """Hundreds of acquire and creation sites in one loop, more than the site caches hold
    without sharing entries: every pass still records each site's own line."""
    count = 300
    lines = ["def run(record):", "    for _ in range(3):"]
    for i in range(count):
        lines.append("        lock = alloc()")  # creation site: line 3 + 2 * i
        lines.append("        with lock: record(lock)")  # acquire site: line 4 + 2 * i
    filename = "<many-sites>"
    ns = {"alloc": rthread.allocate_lock}
    exec(compile("\n".join(lines) + "\n", filename, "exec"), ns)
    seen = []

    def record(lock):
        info = dbg.describe(lock)
        seen.append((info["created_at"], info["acquired_at"]))

    was = dbg.enabled()
    dbg.enable()
    try:
        ns["run"](record)
    finally:
        if not was:
            dbg.disable()
    expected = [("%s:%d" % (filename, 3 + 2 * i), "%s:%d" % (filename, 4 + 2 * i))
                for i in range(count)] * 3
    assert seen == expected


def test_fast_frame_read_is_on():
    # The layout check at import passed on every default build (3.9/3.10: frame objects'
    # fields; 3.11/3.12: the current instruction through the thread state; 3.13+: the
    # interpreter frames): the site tests above ran on the direct reads.
    import sysconfig

    native = sys.modules["rthread._rthread_debug"]
    expected = not sysconfig.get_config_var("Py_GIL_DISABLED")
    assert native.fast_frames() is expected


def test_held_lock_age_and_acquire_site_in_diagnostic_mode(tmp_path):
    # Held-lock ages come from a 10 ms ticker, never later than the acquire: never short, and
    # long by a few ticks at most (bounded generously: a loaded machine delays the ticker).
    result, _, lines = run(tmp_path, """
        dbg.enable()
        lock = threading.Lock()
        rows = []
        for hold in (0.05, 0.4):
            lock.acquire()  # @acq
            time.sleep(hold)
            me = [t for t in dbg.snapshot().to_dict()["threads"] if t["main"]][0]
            (h,) = [h for h in me["holds"] if h["object"] == id(lock)]
            lock.release()
            rows.append([hold, h["seconds"], h["acquired_at"]])
        done(rows=rows)
    """)
    for hold, seconds, acquired_at in result["rows"]:
        assert acquired_at == lines["acq"]
        assert hold <= seconds < hold + 1.0, (hold, seconds)


def test_watchdog_arguments():
    with pytest.raises(ValueError):
        dbg.watchdog(1, action="explode")
    with pytest.raises(ValueError):
        dbg.watchdog(0)
    dbg.watchdog(None)


# ---------------------------------------------------------------------------
# Deadlocks, in child processes


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_two_threads_opposite_order(tmp_path, kind):
    result, _, lines = run(tmp_path, f"""
        dbg.enable()
        a = threading.{kind}()  # @a
        b = threading.{kind}()  # @b
        go = threading.Barrier(2)
        def one():
            with a:  # @one_a
                go.wait()
                with b:
                    pass
        def two():
            with b:  # @two_b
                go.wait()
                with a:
                    pass
        threading.Thread(target=one, name="alpha", daemon=True).start()
        threading.Thread(target=two, name="beta", daemon=True).start()
        s = poll(certain_cycle)
        done(text=s.text(), d=s.to_dict())
    """)
    text, d = result["text"], result["d"]
    assert "Found 1 deadlock(s)" in text, text
    assert "'alpha'" in text and "'beta'" in text
    for site in ("a", "b", "one_a", "two_b"):
        assert lines[site] in text, (site, text)
    (cycle,) = [c for c in d["cycles"] if c["certainty"] == "certain"]
    names = {t["ident"]: t["name"] for t in d["threads"]}
    assert sorted(names[i] for i in cycle["threads"]) == ["alpha", "beta"]
    kinds = {e["kind"] for e in cycle["edges"]}
    assert kinds == {"lock" if kind == "Lock" else "RLock"}
    assert text.index("Found 1 deadlock") < text.index("Threads (")


def test_three_thread_cycle(tmp_path):
    result, _, lines = run(tmp_path, """
        dbg.enable()
        locks = [threading.Lock() for _ in range(3)]  # @locks
        go = threading.Barrier(3)
        def worker(i):
            with locks[i]:  # @outer
                go.wait()
                with locks[(i + 1) % 3]:
                    pass
        for i in range(3):
            threading.Thread(target=worker, args=(i,), name="w%d" % i, daemon=True).start()
        s = poll(certain_cycle)
        done(text=s.text(), d=s.to_dict())
    """)
    (cycle,) = [c for c in result["d"]["cycles"] if c["certainty"] == "certain"]
    assert len(cycle["threads"]) == 3
    text = result["text"]
    assert "3 threads" in text and lines["locks"] in text and lines["outer"] in text
    for n in ("'w0'", "'w1'", "'w2'"):
        assert n in text


def test_join_cycle_and_raise_frees_main(tmp_path):
    result, err, lines = run(tmp_path, """
        dbg.watchdog(0.3, action="raise")
        held = threading.Lock()  # @held
        held.acquire()  # @acq
        def worker():
            with held:  # @worker
                pass
        t = threading.Thread(target=worker, name="joined")
        t.start()
        try:
            t.join()  # @join
            outcome = "joined without error"
        except dbg.DeadlockError as e:
            outcome = "DeadlockError"
            report = e.report
        held.release()
        t.join(10)
        done(outcome=outcome, report=report, alive=t.is_alive())
    """)
    assert result["outcome"] == "DeadlockError"
    assert not result["alive"]
    report = result["report"]
    assert "Found 1 deadlock(s)" in report, report
    assert "the end of thread 'joined'" in report, report
    assert lines["held"] in report and lines["acq"] in report, report
    assert "rthread watchdog: deadlock" in err


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_raise_frees_main_each_time(tmp_path, kind):
    result, err, _ = run(tmp_path, f"""
        dbg.watchdog(0.2, action="raise")
        freed = 0
        for round in range(3):
            a = threading.{kind}()
            b = threading.{kind}()
            ready = threading.Event()
            def other():
                with b:
                    ready.set()
                    with a:
                        pass
            with a:
                t = threading.Thread(target=other, name="other%d" % round)
                t.start()
                ready.wait()
                try:
                    with b:
                        pass
                except dbg.DeadlockError as e:
                    assert "Found 1 deadlock(s)" in e.report, e.report
                    freed += 1
            t.join(10)
            assert not t.is_alive()
            # The cancelled waiter did not take the lock.
            assert not (b.locked() if hasattr(b, "locked") else b._is_owned())
        done(freed=freed)
    """)
    assert result["freed"] == 3
    assert err.count("rthread watchdog:") == 3, err  # one report per episode


#: A third thread that waits for the certain cycle, lets its waiters sleep well past any
#: spin, then sets a "raise" watchdog: the deadlock formed before the watchdog existed.
LATE_WATCHDOG = """\
def late_watchdog():
    poll(certain_cycle)
    time.sleep(0.5)
    dbg.watchdog(0.2, action="raise")
threading.Thread(target=late_watchdog, name="setter", daemon=True).start()
"""


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_raise_reaches_main_asleep_before_the_watchdog(tmp_path, kind):
    result, err, _ = run(tmp_path, LATE_WATCHDOG + f"""
a = threading.{kind}()
b = threading.{kind}()
ready = threading.Event()
def other():
    with b:
        ready.set()
        with a:
            pass
with a:
    t = threading.Thread(target=other, name="other")
    t.start()
    ready.wait()
    start = time.monotonic()
    try:
        with b:
            outcome = "took b"
    except dbg.DeadlockError as e:
        outcome = "DeadlockError"
        report = e.report
    # Still ours: the other thread is still waiting for it.
    a_locked = a.locked() if hasattr(a, "locked") else a._is_owned()
t.join(10)
# The cancelled waiter took nothing: b is free, a too once the other thread is done.
free = [l.acquire(blocking=False) for l in (a, b)]
done(outcome=outcome, report=report, waited=time.monotonic() - start, alive=t.is_alive(),
     a_locked=a_locked, free=free)
""")
    assert result["outcome"] == "DeadlockError", result
    assert "Found 1 deadlock(s)" in result["report"], result["report"]
    assert result["a_locked"] and not result["alive"]
    assert result["free"] == [True, True]
    # Bounded: the setter's 0.5 s, two snapshots of the watchdog, the report.
    assert result["waited"] < 30, result
    # The first report may come as a long wait, before the cycle is confirmed.
    assert "rthread watchdog:" in err and "Found 1 deadlock(s)" in err, err


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_raise_reaches_two_workers_asleep_before_the_watchdog(tmp_path, kind):
    # Neither waiter is the main thread, which sets the watchdog itself once they sleep:
    # one of the two gets DeadlockError, the other then takes both locks.
    result, err, _ = run(tmp_path, f"""
a = threading.{kind}()
b = threading.{kind}()
both = threading.Barrier(2)
outcomes = {{}}
def worker(first, second, name):
    with first:
        both.wait()
        try:
            with second:
                outcomes[name] = "took both"
        except dbg.DeadlockError:
            outcomes[name] = "DeadlockError"
ts = [threading.Thread(target=worker, args=(a, b, "ab"), name="ab"),
      threading.Thread(target=worker, args=(b, a, "ba"), name="ba")]
for t in ts:
    t.start()
poll(certain_cycle)
time.sleep(0.5)
dbg.watchdog(0.2, action="raise")
# Not join(): the main thread waiting on the cycle would be the one chosen to raise.
poll(lambda: not any(t.is_alive() for t in ts))
free = [l.acquire(blocking=False) for l in (a, b)]
done(outcomes=outcomes, alive=[t.is_alive() for t in ts], free=free)
""")
    assert sorted(result["outcomes"].values()) == ["DeadlockError", "took both"], result
    assert result["alive"] == [False, False]
    assert result["free"] == [True, True]
    # The first report may come as a long wait, before the cycle is confirmed.
    assert "rthread watchdog:" in err and "Found 1 deadlock(s)" in err, err


def test_raise_reaches_a_join_asleep_before_the_watchdog(tmp_path):
    result, err, _ = run(tmp_path, LATE_WATCHDOG + """
held = threading.Lock()
held.acquire()
def worker():
    with held:
        pass
t = threading.Thread(target=worker, name="joined")
t.start()
try:
    t.join()
    outcome = "joined without error"
except dbg.DeadlockError as e:
    outcome = "DeadlockError"
    report = e.report
held.release()
t.join(10)
done(outcome=outcome, report=report, alive=t.is_alive())
""")
    assert result["outcome"] == "DeadlockError", result
    assert not result["alive"]
    assert "the end of thread 'joined'" in result["report"], result["report"]


def test_condition_wait_never_notified_is_a_hang(tmp_path):
    _, err, lines = run(tmp_path, """
        dbg.watchdog(0.3)
        cond = threading.Condition()  # @cond
        def waiter():
            with cond:
                cond.wait()  # @wait
        threading.Thread(target=waiter, name="sleeper", daemon=True).start()
        time.sleep(1.5)
        done()
    """)
    assert "rthread watchdog: a wait longer than the limit" in err, err
    assert err.count("rthread watchdog") == 1, err  # once per episode
    assert "No deadlock found" in err
    assert "'sleeper'" in err and lines["wait"] in err, err
    assert "used as a signal" in err


def test_queue_get_on_empty_queue(tmp_path):
    _, err, lines = run(tmp_path, """
        import queue
        dbg.watchdog(0.3)
        q = queue.Queue()
        threading.Thread(target=lambda: q.get(), name="consumer", daemon=True).start()  # @get
        time.sleep(1.5)
        done()
    """)
    assert "rthread watchdog" in err and "No deadlock found" in err, err
    assert "'consumer'" in err and lines["get"] in err, err


def test_event_never_set(tmp_path):
    _, err, lines = run(tmp_path, """
        dbg.watchdog(0.3)
        ev = threading.Event()
        threading.Thread(target=lambda: ev.wait(), name="eventual", daemon=True).start()  # @wait
        time.sleep(1.5)
        done()
    """)
    assert "rthread watchdog" in err and "No deadlock found" in err, err
    assert "'eventual'" in err and lines["wait"] in err, err


def test_watchdog_exit(tmp_path):
    _, err, _ = run(tmp_path, """
        dbg.watchdog(0.3, action="exit")
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()  # hangs forever: the watchdog ends the process
        print("not reached")
    """, expect_rc=1)
    assert "rthread watchdog" in err and "MainThread" in err, err


def test_watchdog_stop_and_file(tmp_path):
    out = tmp_path / "report.txt"
    result, err, _ = run(tmp_path, f"""
        f = open({str(out)!r}, "w")
        dbg.watchdog(0.2, file=f)
        dbg.watchdog(None)
        lock = threading.Lock(); lock.acquire()
        lock.acquire(timeout=1.0)
        quiet = "rthread watchdog" not in open({str(out)!r}).read()
        dbg.watchdog(0.2, file=f)
        lock.acquire(timeout=1.0)
        done(quiet=quiet, text=open({str(out)!r}).read())
    """)
    assert result["quiet"]
    assert "rthread watchdog" in result["text"] and "with a timeout" in result["text"]
    assert "rthread watchdog" not in err


def test_report_without_gil(tmp_path):
    _, err, _ = run(tmp_path, """
        import ctypes
        dbg.watchdog(0.2)
        lock = threading.Lock(); lock.acquire()
        threading.Thread(target=lock.acquire, name="blocked", daemon=True).start()
        time.sleep(0.05)
        # Holds the GIL for 3.5 s in C: the watchdog cannot render Python stacks.
        ctypes.PyDLL(None).usleep(3500000)
        done()
    """)
    assert "rthread watchdog" in err, err
    assert "GIL could not be taken" in err, err


def test_register_signal(tmp_path):
    out = tmp_path / "report.txt"
    result, _, lines = run(tmp_path, f"""
        import signal
        f = open({str(out)!r}, "w")
        dbg.register(signal.SIGUSR1, file=f)
        lock = threading.Lock()  # @lock
        lock.acquire()
        t = threading.Thread(target=lambda: lock.acquire(timeout=5), name="waiting", daemon=True)
        t.start()
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)
        f.flush()
        again = dbg.unregister(signal.SIGUSR1)
        done(text=open({str(out)!r}).read(), again=again)
    """)
    assert result["again"] is True
    assert "'waiting'" in result["text"] and lines["lock"] in result["text"]


def test_report_while_threads_churn(tmp_path):
    result, _, _ = run(tmp_path, """
        dbg.enable()
        shared = [threading.Lock() for _ in range(4)] + [threading.RLock() for _ in range(4)]
        stop = False
        counts = [0] * 64
        def churn(i):
            mine = threading.Lock()
            while not stop:
                with shared[i % 8]:
                    with mine:
                        pass
                counts[i] += 1
        ts = [threading.Thread(target=churn, args=(i,), daemon=True) for i in range(64)]
        for t in ts:
            t.start()
        reports = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            s = dbg.snapshot()
            s.text(); json.dumps(s.to_dict())
            reports += 1
        before = list(counts)
        time.sleep(0.3)
        stop = True
        for t in ts:
            t.join(10)
        done(reports=reports, alive=sum(t.is_alive() for t in ts),
             progressed=sum(c > b for c, b in zip(counts, before)))
    """, timeout=90)
    assert result["reports"] > 0
    assert result["alive"] == 0
    assert result["progressed"] == 64
