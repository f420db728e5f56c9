"""rthread's pytest plugin (``rthread_pytest``, registered through the ``pytest11``
entry point): ``RTHREAD=1 pytest --rthread-watchdog=SECONDS``.

Each test runs pytest in a child interpreter on a generated test file, with its own
ini file (so this project's configuration plays no part), bounded in time.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

TIMEOUT = 60

PASSING_AROUND_A_DEADLOCK = """\
import threading


def test_first():
    assert True


def test_deadlock():
    first = threading.Lock()       # line 9
    second = threading.RLock()     # line 10
    both_hold = threading.Barrier(2)

    def other():
        with second:
            both_hold.wait()
            with first:
                pass

    t = threading.Thread(target=other, name="other-thread")
    t.start()
    with first:
        both_hold.wait()
        with second:
            pass
    t.join()


def test_last():
    assert True
"""

HANG = """\
import threading


def test_hangs():
    nobody_sets = threading.Event()
    nobody_sets.wait()


def test_condition_nobody_notifies():
    cond = threading.Condition()
    with cond:
        cond.wait()


def test_after():
    assert True
"""

INERT = """\
import sys


def test_nothing_of_rthread_was_imported(request):
    assert request.config.pluginmanager.hasplugin("rthread")
    assert "rthread_pytest" in sys.modules
    assert "rthread.debug" not in sys.modules
    rthread = sys.modules.get("rthread")
    assert (rthread is not None and rthread.active()) == EXPECT_ACTIVE
    import threading
    assert [t.name for t in threading.enumerate()] == ["MainThread"]
"""


def env_for(rthread):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RTHREAD") and not k.startswith("PYTEST_")}
    if rthread:
        env["RTHREAD"] = "1"
    env["COLUMNS"] = "1000"  # whole lines in the short test summary
    return env


def run_pytest(tmp_path, source, *options, rthread=True, ini="", timeout=TIMEOUT):
    (tmp_path / "test_generated.py").write_text(source, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + textwrap.dedent(ini), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:timeout",
         "-rf", *options, "test_generated.py"],
        cwd=str(tmp_path), env=env_for(rthread), capture_output=True, text=True,
        timeout=timeout,
    )


def summary(proc):
    return proc.stdout.strip().splitlines()[-1]


def section(proc, title):
    """The text of a report section ("---- Captured rthread call ----") of the output."""
    match = re.search(r"^-+ %s -+\n(.*?)(?=^[-=_]{5,}|\Z)" % re.escape(title), proc.stdout,
                      re.S | re.M)
    assert match, proc.stdout
    return match.group(1)


def test_a_deadlocking_test_fails_with_deadlock_error_and_the_report(tmp_path):
    proc = run_pytest(tmp_path, PASSING_AROUND_A_DEADLOCK, "--rthread-watchdog=2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"\b1 failed, 2 passed in ", summary(proc)), proc.stdout
    assert "FAILED test_generated.py::test_deadlock - rthread.debug.DeadlockError" in proc.stdout
    report = section(proc, "Captured rthread call")
    assert "other-thread" in report and "MainThread" in report, report
    assert "test_generated.py:9" in report and "test_generated.py:10" in report, report
    # The report, once, in its section (not also in the exception's message, nor on the
    # captured standard error).
    assert proc.stdout.count("Found 1 deadlock") == 1, proc.stdout
    assert "FAILED test_generated.py::test_deadlock - rthread.debug.DeadlockError: rthread " \
           "watchdog: deadlock detected (action: raise); the report is in the 'rthread' " \
           "section\n" in proc.stdout, proc.stdout
    assert "Captured stderr call" not in proc.stdout, proc.stdout


def test_a_hanging_test_fails_after_the_limit_and_the_run_goes_on(tmp_path):
    proc = run_pytest(tmp_path, HANG, "--rthread-watchdog=1", "--durations=0",
                      "--durations-min=0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"\b2 failed, 1 passed in ", summary(proc)), proc.stdout
    for name in ("test_hangs", "test_condition_nobody_notifies"):
        assert "FAILED test_generated.py::%s - Failed: rthread: the test's main thread " \
               "waited for more than 1s" % name in proc.stdout, proc.stdout
    # The failure points at the line that waited, and the report is attached.
    assert "nobody_sets.wait()" in proc.stdout and "cond.wait()" in proc.stdout
    assert proc.stdout.count("Captured rthread call") == 2, proc.stdout
    # Each hang is cut after about the limit (the watchdog's 1 s, plus a polling period).
    durations = dict(
        (m.group(2), float(m.group(1)))
        for m in re.finditer(r"^([\d.]+)s call +test_generated.py::(\w+)", proc.stdout, re.M))
    assert 1.0 <= durations["test_hangs"] < 10, proc.stdout


def test_the_ini_option(tmp_path):
    proc = run_pytest(tmp_path, PASSING_AROUND_A_DEADLOCK, ini="rthread_watchdog = 2\n")
    assert re.search(r"\b1 failed, 2 passed in ", summary(proc)), proc.stdout


def test_without_rthread_active_the_option_is_a_usage_error(tmp_path):
    proc = run_pytest(tmp_path, PASSING_AROUND_A_DEADLOCK, "--rthread-watchdog=2",
                      rthread=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "ERROR: --rthread-watchdog needs rthread as the process's _thread" in proc.stderr
    assert "RTHREAD=1 pytest --rthread-watchdog=SECONDS" in proc.stderr
    assert "passed" not in proc.stdout


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan"])
def test_a_bad_value_is_a_usage_error(tmp_path, value):
    proc = run_pytest(tmp_path, "EXPECT_ACTIVE = True\n" + INERT, "--rthread-watchdog=" + value)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "ERROR: --rthread-watchdog: expected a positive number of seconds, got %r" % value \
        in proc.stderr


@pytest.mark.parametrize("rthread", [False, True], ids=["plain", "RTHREAD=1"])
def test_the_plugin_is_inert_without_the_option(tmp_path, rthread):
    source = "EXPECT_ACTIVE = %r\n" % rthread + INERT
    if not rthread:
        # Loading the plugin does not even import rthread.
        source += textwrap.dedent("""\

            def test_no_rthread_module():
                assert sorted(m for m in sys.modules if m.startswith("rthread")) == [
                    "rthread_pytest"]
            """)
    proc = run_pytest(tmp_path, source, rthread=rthread)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b%d passed in " % (1 if rthread else 2), summary(proc)), proc.stdout


def test_the_option_is_in_the_help(tmp_path):
    proc = run_pytest(tmp_path, INERT, "--help", rthread=False)
    assert proc.returncode == 0
    assert "--rthread-watchdog=SECONDS" in proc.stdout and "rthread_watchdog" in proc.stdout


LEAVES_A_THREAD_BEHIND = """\
import threading


def test_waits_with_a_thread_for_ever():
    never = threading.Event()
    t = threading.Thread(target=never.wait, name="left-behind")  # not a daemon
    t.start()
    never.wait()


def test_after():
    assert True
"""


def test_threads_a_hung_test_leaves_blocked_do_not_keep_pytest_alive(tmp_path):
    proc = run_pytest(tmp_path, LEAVES_A_THREAD_BEHIND, "--rthread-watchdog=1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"\b1 failed, 1 passed in ", summary(proc)), proc.stdout
    assert "rthread: ending the process: non-daemon threads left blocked by the hung tests " \
           "test_generated.py::test_waits_with_a_thread_for_ever (call): left-behind" \
           in proc.stderr, proc.stderr
    report = section(proc, "Captured rthread call")
    assert "thread 'left-behind'" in report and "thread 'MainThread'" in report


UNINTERRUPTIBLE = """\
import signal, threading


def test_first():
    assert True


def test_main_thread_blocks_every_signal_then_hangs():
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    threading.Event().wait()


def test_never_reached():
    assert True
"""


def test_a_hang_that_cannot_be_interrupted_is_reported_and_ends_the_run(tmp_path):
    proc = run_pytest(tmp_path, UNINTERRUPTIBLE, "--rthread-watchdog=1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "rthread: test_generated.py::test_main_thread_blocks_every_signal_then_hangs (call) " \
           "FAILED: its main thread waited for more than 1s and could not be interrupted " \
           "within 2s; ending the test run." in output, output
    after = output.split("could not be interrupted", 1)[1]
    assert "rthread report, " in after and "test_main_thread_blocks_every_signal" in after
    assert "test_never_reached" not in output


DEADLOCK_AT_IMPORT = """\
import threading

first = threading.Lock()
second = threading.Lock()
both_hold = threading.Barrier(2)


def _other():
    with second:
        both_hold.wait()
        with first:
            pass


_t = threading.Thread(target=_other, name="import-time-thread")
_t.start()
with first:
    both_hold.wait()
    with second:
        pass


def test_never_collected():
    pass
"""


def test_a_deadlock_while_collecting_is_reported_on_the_terminal(tmp_path):
    proc = run_pytest(tmp_path, DEADLOCK_AT_IMPORT, "--rthread-watchdog=2")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # collection error
    assert "ERROR collecting test_generated.py" in proc.stdout, proc.stdout
    assert "DeadlockError" in proc.stdout
    # What the watchdog wrote outside any test phase reaches the terminal.
    assert "import-time-thread" in proc.stderr and "Found 1 deadlock" in proc.stderr, proc.stderr
