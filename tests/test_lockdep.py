"""Lock-order checking: ``rthread.debug.lockdep(mode)``, ``RTHREAD_LOCKDEP``,
``python -m rthread --lockdep`` and ``pytest --rthread-lockdep``.

The rules are checked in this process on rthread's own lock and RLock objects (threads
from ``threading``; the checking is per OS thread). Each test makes its locks through
``make()``, which compiles their creation lines under a file name of its own, so every
test has classes (creation sites) no other test has: the order graph is process-wide
and each cycle is reported once per process. The standard-library workloads, the
command line, the environment and the pytest plugin run in child interpreters with
rthread active, bounded in time.
"""

import itertools
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import rthread
import rthread.debug as dbg

TIMEOUT = 60
_files = itertools.count()


def make(*kinds):
    """New locks (``"lock"``) and RLocks (``"rlock"``), each created on its own line of a
    file name no other call uses. Returns ``(locks, filename)``; lock ``i`` was created
    at line ``i + 1``."""
    filename = "<lockdep-test-%d>" % next(_files)
    source = "\n".join("out.append(%s())" % ("alloc" if k == "lock" else "RLock")
                       for k in kinds)
    out = []
    exec(compile(source, filename, "exec"),
         {"out": out, "alloc": rthread.allocate_lock, "RLock": rthread.RLock})
    return out, filename


def in_thread(fn, name="worker"):
    """Runs ``fn`` in a new thread, to the end; re-raises what it raised."""
    box = []

    def run():
        try:
            fn()
        except BaseException as exc:  # handed to the main thread
            box.append(exc)

    t = threading.Thread(target=run, name=name)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive()
    if box:
        raise box[0]


@pytest.fixture
def mode(request):
    """Sets the lockdep mode for the test (``warn`` unless parametrized) and turns it off
    after."""
    previous = dbg.lockdep(getattr(request, "param", "warn"))
    try:
        yield dbg.lockdep_mode()
    finally:
        dbg.lockdep(previous)


def edges_between(filename):
    """The recorded orders between classes made in ``filename``, as (line, line)."""
    return sorted((f["site"][1], t["site"][1]) for f, t in dbg._native.lockdep_edges()
                  if f["site"] and t["site"] and f["site"][0] == filename
                  and t["site"][0] == filename)


def take_a_then_b(a, b):
    def order():
        with a:
            with b:
                pass
    return order


def test_api_modes():
    assert dbg.lockdep_mode() == "off"
    assert dbg.lockdep("record") == "off"
    try:
        assert dbg.lockdep("raise") == "record"
        assert dbg.lockdep_mode() == "raise"
        with pytest.raises(ValueError):
            dbg.lockdep("loud")
        assert dbg.lockdep_mode() == "raise"
    finally:
        assert dbg.lockdep(None) == "raise"
    assert dbg.lockdep_mode() == "off"
    assert issubclass(dbg.LockOrderWarning, Warning)
    assert issubclass(dbg.LockOrderError, RuntimeError)


def test_abba_at_different_times_warns_with_both_orders(mode):
    (a, b), filename = make("lock", "lock")
    in_thread(take_a_then_b(a, b), name="first-order")
    assert edges_between(filename) == [(1, 2)]
    with pytest.warns(dbg.LockOrderWarning) as caught:
        with b:
            with a:  # the reverse order: reported before this acquire, which then proceeds
                assert a.locked()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert caught[0].filename == __file__
    report = caught[0].message.report
    assert report is dbg.lockdep_reports()[-1]
    assert report.action == "warn" and not report.timed
    assert message.startswith("rthread lockdep: possible deadlock: lock order inversion")
    # Both orders, with both creation sites, the acquire sites and the first stacks.
    assert message.count("created at %s:1" % filename) >= 2, message
    assert message.count("created at %s:2" % filename) >= 2, message
    assert "thread 'first-order' acquired" in message, message
    assert "thread 'MainThread' is about to acquire" in message, message
    assert "in take_a_then_b.<locals>.order" in message or "in order" in message, message
    assert "The earlier order (first seen in thread 'first-order')" in message
    assert "*** DEADLOCK ***" in message
    assert "test_lockdep.py" in message  # stacks name this file's frames
    # The closing order was not added; nothing is left held.
    assert edges_between(filename) == [(1, 2)]
    assert not a.locked() and not b.locked()
    assert dbg._native.lockdep_held() == []
    # Reported once.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with b:
            with a:
                pass


@pytest.mark.parametrize("mode", ["raise"], indirect=True)
def test_abba_raises_before_blocking_and_leaves_the_locks_consistent(mode):
    (a, b), filename = make("lock", "rlock")
    in_thread(take_a_then_b(a, b))
    with b:
        with pytest.raises(dbg.LockOrderError) as info:
            a.acquire()
        # Not taken; b still held by this thread only.
        assert not a.locked()
        assert [c["site"] for c in dbg._native.lockdep_held()] == [
            (filename, 2, "<module>")]
        assert a.acquire(False)  # usable
        a.release()
    assert not b._is_owned()
    assert dbg._native.lockdep_held() == []
    assert info.value.report.action == "raise"
    assert "%s:1" % filename in str(info.value) and "%s:2" % filename in str(info.value)
    assert "(raised LockOrderError)" in str(info.value).splitlines()[0]


@pytest.mark.parametrize("mode", ["raise"], indirect=True)
def test_a_timed_acquire_only_warns_even_under_raise(mode):
    (a, b), filename = make("lock", "lock")
    in_thread(take_a_then_b(a, b))
    with b:
        with pytest.warns(dbg.LockOrderWarning) as caught:
            assert a.acquire(timeout=5)
        a.release()
    assert caught[0].message.report.timed
    assert "a timed acquire" in str(caught[0].message)


def test_warning_as_error_is_raised_from_the_acquire(mode):
    (a, b), filename = make("lock", "lock")
    in_thread(take_a_then_b(a, b))
    with warnings.catch_warnings():
        warnings.simplefilter("error", dbg.LockOrderWarning)
        with b:
            with pytest.raises(dbg.LockOrderWarning):
                a.acquire()
            assert not a.locked()


@pytest.mark.parametrize("mode", ["raise"], indirect=True)
def test_a_non_blocking_acquire_adds_no_order(mode):
    (a, b), filename = make("lock", "lock")

    def try_b_under_a():
        with a:
            assert b.acquire(False)
            b.release()
            assert b.acquire(blocking=False)
            b.release()

    in_thread(try_b_under_a)
    assert edges_between(filename) == []
    with b:
        with a:  # no cycle: a -> b was never a blocking order
            pass
    assert edges_between(filename) == [(2, 1)]
    # But a lock taken without blocking is held: later orders from it count.
    (c, d), filename = make("lock", "lock")
    in_thread(lambda: (c.acquire(False), d.acquire(), d.release(), c.release()))
    assert edges_between(filename) == [(1, 2)]


@pytest.mark.parametrize("mode", ["raise"], indirect=True)
def test_rlock_reentry_adds_nothing(mode):
    (r, a), filename = make("rlock", "lock")
    with r:
        with a:
            with r:  # re-entry while holding a: not an order a -> r
                pass
    assert edges_between(filename) == [(1, 2)]
    assert dbg._native.lockdep_held() == []


@pytest.mark.parametrize("mode", ["raise"], indirect=True)
def test_a_lock_released_by_another_thread_is_a_signal(mode):
    (sig, a), filename = make("lock", "lock")
    # Orders through it are recorded while it looks like a mutex ...
    in_thread(take_a_then_b(a, sig))
    assert edges_between(filename) == [(2, 1)]
    # ... until another thread releases it: then it leaves the ordering.
    sig.acquire()
    in_thread(sig.release)
    with sig:
        with a:  # would close a -> sig -> a
            pass
    assert edges_between(filename) == [(2, 1)]
    assert dbg._native.lockdep_held() == []


@pytest.mark.parametrize("mode", ["raise"], indirect=True)
def test_a_lock_retaken_by_its_holder_is_a_signal(mode):
    # A threading.Condition waiter: acquired, then acquired again by the same thread
    # (here without blocking, as Condition.wait(0) does) until another thread releases it.
    (a, waiter), filename = make("lock", "lock")
    with a:
        waiter.acquire()
    assert edges_between(filename) == [(1, 2)]
    assert not waiter.acquire(False)
    with a:  # held waiter, then a: no order, no report
        pass
    waiter.release()
    assert edges_between(filename) == [(1, 2)]


def test_off_records_nothing():
    assert dbg.lockdep_mode() == "off"
    (a, b), filename = make("lock", "lock")
    in_thread(take_a_then_b(a, b))
    with b:
        with a:
            pass
    assert edges_between(filename) == []


# --------------------------------------------------------------------------------------------
# Child interpreters


def env_with(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RTHREAD") and not k.startswith("PYTEST_")}
    env.update(extra)
    return env


def run(args, env=None, cwd=None):
    return subprocess.run([sys.executable, *args], env=env or env_with(), cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT)


ABBA = """\
import threading
import rthread.debug

accounts = threading.Lock()
audit_log = threading.Lock()


def transfer():
    with accounts:
        with audit_log:
            pass


def report():
    with audit_log:
        with accounts:
            pass


for worker in (transfer, report):
    t = threading.Thread(target=worker, name=worker.__name__)
    t.start()
    t.join()
print("done", rthread.debug.lockdep_mode(), len(rthread.debug.lockdep_reports()))
"""

STDLIB = """\
import logging, queue, sys, threading
from concurrent.futures import ThreadPoolExecutor
import rthread, rthread.debug as dbg
assert rthread.active()

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(threadName)s %(message)s")
log = logging.getLogger("workload")
q = queue.Queue(8)

def produce():
    for i in range(300):
        q.put(i)
    q.put(None)

t = threading.Thread(target=produce); t.start()
while q.get() is not None:
    pass
t.join()

cond = threading.Condition()
done = threading.Event()
items = []

def consume():
    with cond:
        while not items:
            cond.wait(0.5)
        cond.wait(0.01)   # a timed-out wait, too
    done.set()

t = threading.Thread(target=consume); t.start()
with cond:
    items.append(1)
    cond.notify()
done.wait(); t.join()

shared = threading.Lock()
def task(i):
    with shared:
        if i % 100 == 0:
            log.info("task %d", i)
    return i

for _ in range(2):
    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(task, range(300))) == sum(range(300))
        pool.submit(log.info, "from the pool").result()

sem = threading.BoundedSemaphore(2)
with sem:
    sem.acquire(timeout=0)
barrier = threading.Barrier(2)
t = threading.Thread(target=barrier.wait); t.start(); barrier.wait(); t.join()
timer = threading.Timer(0.01, log.info, ("timer",)); timer.start(); timer.join()
rl = threading.RLock()
c2 = threading.Condition(rl)
with rl:
    c2.wait(0.01)
print("reports", len(dbg.lockdep_reports()), "mode", dbg.lockdep_mode(),
      "edges", len(dbg._native.lockdep_edges()))
"""


def test_env_warn_reports_the_abba_with_both_sites(tmp_path):
    (tmp_path / "abba.py").write_text(ABBA)
    proc = run(["abba.py"], env=env_with(RTHREAD="1", RTHREAD_LOCKDEP="warn"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done warn 1"
    err = proc.stderr
    assert "abba.py:16: LockOrderWarning: rthread lockdep: possible deadlock" in err, err
    assert "abba.py:4 in <module>" in err and "abba.py:5 in <module>" in err, err
    assert "thread 'transfer' acquired" in err and "thread 'report' is about to acquire" \
        in err, err


def test_cli_raise_raises_from_the_acquire(tmp_path):
    (tmp_path / "abba.py").write_text(ABBA)
    proc = run(["-m", "rthread", "--lockdep", "raise", "abba.py"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the exception ends thread 'report' only
    assert proc.stdout.strip() == "done raise 1"
    assert "Exception in thread report" in proc.stderr, proc.stderr
    assert "rthread.debug.LockOrderError: rthread lockdep: possible deadlock" in proc.stderr


def test_minus_w_error_turns_the_warning_into_an_exception(tmp_path):
    source = ABBA.replace("for worker in (transfer, report):",
                          "for worker in (transfer,):") + textwrap.dedent("""\
        try:
            report()
        except rthread.debug.LockOrderWarning as exc:
            print("raised", type(exc).__name__, accounts.locked(), audit_log.locked())
        """)
    (tmp_path / "abba.py").write_text(source)
    proc = run(["-W", "error", "-m", "rthread", "--lockdep=warn", "abba.py"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "raised LockOrderWarning False False", proc.stdout


def test_bad_values_are_refused(tmp_path):
    (tmp_path / "abba.py").write_text(ABBA)
    proc = run(["-m", "rthread", "--lockdep", "loud", "abba.py"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "--lockdep: expected one of warn, raise, got 'loud'" in proc.stderr
    proc = run(["abba.py"], env=env_with(RTHREAD="1", RTHREAD_LOCKDEP="loud"), cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.strip() == "done off 0"
    assert "rthread: RTHREAD_LOCKDEP=loud ignored: expected one of warn, raise" in proc.stderr


def test_standard_library_workload_makes_no_report_under_raise(tmp_path):
    (tmp_path / "work.py").write_text(STDLIB)
    proc = run(["-W", "error", "work.py"], env=env_with(RTHREAD="1", RTHREAD_LOCKDEP="raise"),
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[:4] == ["reports", "0", "mode", "raise"], proc.stdout
    assert int(last[5]) > 0  # orders were recorded: the check did run
    assert "lockdep" not in proc.stderr, proc.stderr


PLUGIN_TESTS = """\
import threading


def test_before():
    assert True


def test_abba_at_different_times():
    first = threading.Lock()       # line 9
    second = threading.Lock()      # line 10

    def one():
        with first:
            with second:
                pass

    t = threading.Thread(target=one, name="one")
    t.start()
    t.join()
    with second:
        with first:
            pass


def test_after():
    assert True
"""


def run_pytest(tmp_path, *options, rthread=True):
    (tmp_path / "test_generated.py").write_text(PLUGIN_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = env_with(COLUMNS="1000", **({"RTHREAD": "1"} if rthread else {}))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:timeout", "-rf",
         *options, "test_generated.py"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_pytest_plugin_fails_the_test_that_made_the_inversion(tmp_path):
    proc = run_pytest(tmp_path, "--rthread-lockdep")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in proc.stdout.strip().splitlines()[-1], proc.stdout
    assert "FAILED test_generated.py::test_abba_at_different_times" in proc.stdout
    assert "lock-order inversion(s) during call" in proc.stdout
    assert "created at %s:9" % (tmp_path / "test_generated.py") in proc.stdout, proc.stdout
    assert "created at %s:10" % (tmp_path / "test_generated.py") in proc.stdout
    # Without the option the same run passes.
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pytest_plugin_needs_rthread_active(tmp_path):
    proc = run_pytest(tmp_path, "--rthread-lockdep", rthread=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "--rthread-lockdep needs rthread as the process's _thread" in proc.stderr
