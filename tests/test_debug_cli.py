"""The hang-report entry points: ``python -m rthread --watchdog SECONDS --on-hang ACTION
--report-signal SIGNAL PROGRAM`` and, with ``RTHREAD=1``, the environment variables
``RTHREAD_WATCHDOG``, ``RTHREAD_ON_HANG`` and ``RTHREAD_REPORT_SIGNAL``.

Every test runs child interpreters on real deadlocks and hangs, reads their output
while they run and kills them once the report showed; each is bounded in time.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

# Bound for one child interpreter: start-up, a 1 s watchdog and its report.
TIMEOUT = 30

# Two threads take two locks in opposite orders; a Barrier makes sure each holds its
# first lock before it asks for the second. The main thread joins them.
DEADLOCK = """\
import sys, threading
first = threading.Lock()           # line 2: the lock worker-A takes first
second = threading.RLock()         # line 3: the lock worker-B takes first
both_hold = threading.Barrier(2)

def work(mine, other):
    with mine:
        both_hold.wait()
        with other:
            pass

a = threading.Thread(target=work, args=(first, second), name="worker-A", daemon=True)
b = threading.Thread(target=work, args=(second, first), name="worker-B", daemon=True)
a.start(); b.start()
print("started", flush=True)
a.join(); b.join()
print("joined", flush=True)
"""

# The main thread is in the cycle: with --on-hang raise it gets DeadlockError.
MAIN_IN_CYCLE = """\
import sys, threading
import rthread.debug
first = threading.Lock()
second = threading.Lock()
both_hold = threading.Barrier(2)

def work():
    with second:
        both_hold.wait()
        with first:
            pass

t = threading.Thread(target=work, name="worker-B")
t.start()
with first:
    both_hold.wait()
    try:
        with second:
            pass
    except rthread.debug.DeadlockError as exc:
        assert isinstance(exc, RuntimeError)
        print("caught DeadlockError", flush=True)
        print("report has worker-B:", "worker-B" in exc.report, flush=True)
t.join()
print("worker-B done", flush=True)
"""

# A thread holds a lock while the main thread reads standard input: nothing hangs,
# the report signal shows who holds what, and the program goes on.
ON_SIGNAL = """\
import sys, threading
held = threading.Lock()            # line 2
done = threading.Event()

def hold():
    with held:                     # line 6
        done.wait()

t = threading.Thread(target=hold, name="holder", daemon=True)
t.start()
print("ready", flush=True)
line = sys.stdin.readline()
done.set()
t.join()
print("continued after", line.strip(), flush=True)
"""


def plain_env(**extra):
    """The environment without rthread's variables (whatever the test run has), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTHREAD")}
    env.update(extra)
    return env


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class Child:
    """A child interpreter whose output is read while it runs."""

    def __init__(self, args, cwd=None, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=None if cwd is None else str(cwd),
            env=plain_env() if env is None else env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        )
        self._out, self._err = [], []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into):
        for line in iter(stream.readline, ""):
            into.append(line)

    @property
    def stdout(self):
        return "".join(self._out)

    @property
    def stderr(self):
        return "".join(self._err)

    def wait_for(self, predicate, timeout=TIMEOUT):
        """Whether ``predicate(self)`` came to hold within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            if self.proc.poll() is not None:
                for reader in self._readers:
                    reader.join(5)
                return bool(predicate(self))
            time.sleep(0.05)
        return False

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def finish(self, timeout=TIMEOUT):
        """The exit status; None if the child had to be killed after ``timeout``."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
        self.kill()
        return status

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def launch(how, tmp_path, program, watchdog=None, on_hang=None, report_signal=None):
    """Runs ``program`` (source) with the options given, either as ``-m rthread``
    options ("cli") or as RTHREAD=1 environment variables ("env")."""
    script = write(tmp_path / "prog.py", program)
    if how == "cli":
        options = []
        if watchdog is not None:
            options += ["--watchdog", str(watchdog)]
        if on_hang is not None:
            options += ["--on-hang", on_hang]
        if report_signal is not None:
            options += ["--report-signal", report_signal]
        return Child(["-m", "rthread", *options, script.name], cwd=tmp_path)
    extra = {"RTHREAD": "1"}
    if watchdog is not None:
        extra["RTHREAD_WATCHDOG"] = str(watchdog)
    if on_hang is not None:
        extra["RTHREAD_ON_HANG"] = on_hang
    if report_signal is not None:
        extra["RTHREAD_REPORT_SIGNAL"] = report_signal
    return Child([script.name], cwd=tmp_path, env=plain_env(**extra))


def reports_in(text):
    """How many reports ``text`` holds."""
    return sum(1 for line in text.splitlines() if line.startswith(REPORT_HEADER))


# The first line of every report (rthread.debug's format), after the watchdog's own
# line saying why it reports.
REPORT_HEADER = "rthread report, "


def has_report(child):
    return reports_in(child.stderr) >= 1 and "worker-B" in child.stderr


HOW = pytest.mark.parametrize("how", ["cli", "env"])


# --------------------------------------------------------------------------------------------
# --watchdog / RTHREAD_WATCHDOG


@HOW
def test_watchdog_reports_a_deadlock_once(tmp_path, how):
    with launch(how, tmp_path, DEADLOCK, watchdog=1, on_hang="report") as child:
        assert child.wait_for(has_report), (child.stdout, child.stderr)
        # Several watchdog periods later, still one report for this one episode.
        time.sleep(2.5)
        assert child.proc.poll() is None, "the report action must not end the program"
        report = child.stderr
    assert child.stdout == "started\n"
    assert reports_in(report) == 1, report
    assert "worker-A" in report and "worker-B" in report
    assert "cycle" in report.lower() or "deadlock" in report.lower(), report
    # The creation sites of both locks, in the user's file.
    assert "prog.py:2" in report and "prog.py:3" in report, report


@HOW
def test_watchdog_report_is_the_default_action(tmp_path, how):
    with launch(how, tmp_path, DEADLOCK, watchdog=1) as child:
        assert child.wait_for(has_report), (child.stdout, child.stderr)
        assert child.proc.poll() is None


@HOW
def test_watchdog_exit_ends_the_process(tmp_path, how):
    with launch(how, tmp_path, DEADLOCK, watchdog=1, on_hang="exit") as child:
        status = child.finish()
    assert status not in (None, 0), (status, child.stderr)
    assert "worker-A" in child.stderr and "worker-B" in child.stderr
    assert reports_in(child.stderr) == 1, child.stderr
    assert "joined" not in child.stdout


@HOW
def test_watchdog_raise_frees_the_main_thread(tmp_path, how):
    with launch(how, tmp_path, MAIN_IN_CYCLE, watchdog=1, on_hang="raise") as child:
        status = child.finish()
    assert status == 0, child.stderr
    assert child.stdout == (
        "caught DeadlockError\nreport has worker-B: True\nworker-B done\n"), child.stderr


def test_watchdog_raise_uncaught_is_a_plain_traceback(tmp_path):
    program = MAIN_IN_CYCLE.replace("except rthread.debug.DeadlockError", "except KeyError")
    with launch("cli", tmp_path, program, watchdog=1, on_hang="raise") as child:
        status = child.finish()
    assert status == 1, child.stderr
    lines = child.stderr.splitlines()
    tb = lines.index("Traceback (most recent call last):")
    error = next(i for i, line in enumerate(lines)
                 if i > tb and line.startswith("rthread.debug.DeadlockError: "))
    # The traceback starts at the program's own frame (no runpy, no rthread launcher),
    # and the exception's message is the report.
    assert 'prog.py", line' in lines[tb + 1], child.stderr
    assert not any("runpy" in line or "rthread/_run.py" in line for line in lines[tb:error])
    assert "worker-B" in "\n".join(lines[error:])


# --------------------------------------------------------------------------------------------
# --report-signal / RTHREAD_REPORT_SIGNAL


@HOW
@pytest.mark.parametrize("name", ["SIGUSR1", "usr2", str(int(signal.SIGUSR1))])
def test_report_signal_prints_and_the_program_goes_on(tmp_path, how, name):
    with launch(how, tmp_path, ON_SIGNAL, report_signal=name) as child:
        assert child.wait_for(lambda c: c.stdout == "ready\n"), child.stderr
        assert child.stderr == ""
        child.proc.send_signal(int(_signal_number(name)))
        # Diagnostic mode is on (asked for at start): where the lock was acquired.
        assert child.wait_for(lambda c: "holder" in c.stderr and "prog.py:6" in c.stderr), \
            child.stderr
        # Once more: a report each time the signal comes.
        before = reports_in(child.stderr)
        child.proc.send_signal(int(_signal_number(name)))
        assert child.wait_for(lambda c: reports_in(c.stderr) > before), child.stderr
        child.send("go\n")
        status = child.finish()
    assert status == 0, child.stderr
    assert child.stdout == "ready\ncontinued after go\n"


def _signal_number(name):
    if name.isdigit():
        return int(name)
    name = name.upper()
    return getattr(signal, name if name.startswith("SIG") else "SIG" + name)


def test_report_signal_and_watchdog_together(tmp_path):
    with launch("cli", tmp_path, ON_SIGNAL, watchdog=30, on_hang="exit",
                report_signal="SIGUSR1") as child:
        assert child.wait_for(lambda c: c.stdout == "ready\n"), child.stderr
        child.proc.send_signal(signal.SIGUSR1)
        assert child.wait_for(lambda c: "holder" in c.stderr), child.stderr
        child.send("go\n")
        assert child.finish() == 0, child.stderr


# --------------------------------------------------------------------------------------------
# Bad values


def run(args, env=None, cwd=None):
    return subprocess.run([sys.executable, *args], env=plain_env() if env is None else env,
                          cwd=None if cwd is None else str(cwd), capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("options, message", [
    (["--watchdog", "soon"], "--watchdog: expected a positive number of seconds, got 'soon'"),
    (["--watchdog", "0"], "--watchdog: expected a positive number of seconds, got '0'"),
    (["--watchdog=-1"], "--watchdog: expected a positive number of seconds, got '-1'"),
    (["--watchdog", "nan"], "--watchdog: expected a positive number of seconds"),
    (["--watchdog", "inf"], "--watchdog: expected a positive number of seconds"),
    (["--watchdog", "1", "--on-hang", "panic"],
     "--on-hang: expected one of report, exit, raise, got 'panic'"),
    (["--on-hang", "exit"], "--on-hang needs --watchdog SECONDS"),
    (["--report-signal", "SIGNOPE"], "--report-signal: expected a signal name"),
    (["--report-signal", "SIGKILL"], "--report-signal: SIGKILL cannot be used"),
    (["--report-signal", "9999"], "--report-signal: no signal number 9999"),
    (["--watch", "1"], "unknown option --watch"),
])
def test_bad_options_are_usage_errors(options, message):
    proc = run(["-m", "rthread", *options, "-c", "print('ran')"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("usage: python [python options] -m rthread [options]")
    assert lines[1].startswith("rthread: error: " + message), proc.stderr
    assert len(lines) == 2


def test_options_without_a_program_or_a_value():
    proc = run(["-m", "rthread", "--watchdog", "1"])
    assert proc.returncode == 2 and "a program is expected after the options" in proc.stderr
    proc = run(["-m", "rthread", "--watchdog"])
    assert proc.returncode == 2 and "argument expected for the --watchdog option" in proc.stderr


def test_options_keep_the_program_as_plain_python_runs_it(tmp_path):
    write(tmp_path / "args.py", """\
        import sys
        print(__name__, sys.argv)
        sys.exit(3)
        """)
    plain = run(["args.py", "--watchdog", "x", "-c"], cwd=tmp_path)
    ours = run(["-m", "rthread", "--watchdog", "5", "--on-hang", "raise", "--report-signal",
                "SIGUSR1", "args.py", "--watchdog", "x", "-c"], cwd=tmp_path)
    assert (ours.returncode, ours.stdout, ours.stderr) == (3, plain.stdout, plain.stderr)
    assert plain.stdout == "__main__ ['args.py', '--watchdog', 'x', '-c']\n"
    module = run(["-m", "rthread", "--watchdog=5", "-m", "json.tool", "--help"])
    assert module.returncode == 0 and module.stdout == run(["-m", "json.tool", "--help"]).stdout


def test_bad_environment_values_are_one_line_each_and_ignored(tmp_path):
    env = plain_env(RTHREAD="1", RTHREAD_WATCHDOG="soon", RTHREAD_ON_HANG="panic",
                    RTHREAD_REPORT_SIGNAL="SIGKILL")
    proc = run(["-c", "import rthread; print('ran', rthread.active())"], env=env)
    assert proc.returncode == 0
    assert proc.stdout == "ran True\n"
    assert proc.stderr.splitlines() == [
        "rthread: RTHREAD_WATCHDOG=soon ignored: expected a positive number of seconds, "
        "got 'soon'",
        "rthread: RTHREAD_ON_HANG=panic ignored: expected one of report, exit, raise, "
        "got 'panic'",
        "rthread: RTHREAD_REPORT_SIGNAL=SIGKILL ignored: SIGKILL cannot be used for reports "
        "(choose SIGUSR1, SIGUSR2, ...)",
    ]


def test_on_hang_without_watchdog_in_the_environment():
    env = plain_env(RTHREAD="1", RTHREAD_ON_HANG="exit")
    proc = run(["-c", "print('ran')"], env=env)
    assert proc.returncode == 0 and proc.stdout == "ran\n"
    assert proc.stderr == ("rthread: RTHREAD_ON_HANG=exit ignored: it needs "
                           "RTHREAD_WATCHDOG=SECONDS\n")


def test_a_bad_value_leaves_the_good_ones_in_force(tmp_path):
    env = plain_env(RTHREAD="1", RTHREAD_WATCHDOG="1", RTHREAD_ON_HANG="exit",
                    RTHREAD_REPORT_SIGNAL="SIGNOPE")
    with Child([str(write(tmp_path / "prog.py", DEADLOCK))], env=env) as child:
        status = child.finish()
    assert status not in (None, 0)
    assert child.stderr.splitlines()[0].startswith("rthread: RTHREAD_REPORT_SIGNAL=SIGNOPE ignored")
    assert "worker-B" in child.stderr


# --------------------------------------------------------------------------------------------
# Cost and reach of the environment variables


@pytest.mark.parametrize("rthread_value", [None, "0"])
def test_without_rthread_1_the_variables_do_nothing(rthread_value):
    extra = {} if rthread_value is None else {"RTHREAD": rthread_value}
    env = plain_env(RTHREAD_WATCHDOG="1", RTHREAD_ON_HANG="exit",
                    RTHREAD_REPORT_SIGNAL="SIGUSR1", **extra)
    code = "import sys; print(sorted(m for m in sys.modules if 'rthread' in m))"
    proc = run(["-c", code], env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[]\n", "")


def test_unset_variables_leave_rthread_debug_alone():
    code = "import sys; print('rthread.debug' in sys.modules, sys.modules['rthread'].active())"
    proc = run(["-c", code], env=plain_env(RTHREAD="1"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "False True\n", "")
    proc = run(["-c", code], env=plain_env(RTHREAD="1", RTHREAD_WATCHDOG="",
                                           RTHREAD_REPORT_SIGNAL=""))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "False True\n", "")


def test_variables_apply_in_child_processes(tmp_path):
    write(tmp_path / "prog.py", DEADLOCK)
    parent = textwrap.dedent("""\
        import subprocess, sys
        import rthread.debug
        print("parent", rthread.debug.enabled(), flush=True)
        child = subprocess.run([sys.executable, "prog.py"], timeout=%d)
        print("child status", child.returncode, flush=True)
        """ % TIMEOUT)
    env = plain_env(RTHREAD="1", RTHREAD_WATCHDOG="1", RTHREAD_ON_HANG="exit")
    with Child(["-c", parent], cwd=tmp_path, env=env) as child:
        status = child.finish()
    assert status == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "parent True"
    assert lines[-1] != "child status 0" and lines[-1].startswith("child status ")
    assert "worker-A" in child.stderr and "worker-B" in child.stderr


def test_readme_example_deadlock_is_reported_and_exits():
    """examples/deadlock.py, as the README runs it: the report names the cycle, both
    threads and the lines that made and took the locks, and the process exits 1."""
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "deadlock.py")
    env = plain_env(RTHREAD="1", RTHREAD_WATCHDOG="2", RTHREAD_ON_HANG="exit")
    proc = subprocess.run([sys.executable, example], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    report = proc.stderr
    assert "Deadlock 1 (certain, 2 threads)" in report, report
    for needle in ("thread 'transfer'", "thread 'report'", "deadlock.py:7", "deadlock.py:8",
                   "acquired at " + example + ":11", "acquired at " + example + ":17"):
        assert needle in report, (needle, report)
