"""pytest plugin of rthread: deadlock and hang reports for a test suite.

Registered through the ``pytest11`` entry point (name ``rthread``; ``-p no:rthread``
turns it off) and inert unless asked::

    RTHREAD=1 pytest --rthread-watchdog=SECONDS      (or rthread_watchdog = SECONDS in the ini)

Importing this module imports nothing of rthread and starts nothing: it is a
top-level module, not ``rthread.pytest_plugin``, because importing anything in the
``rthread`` package loads the native ``rthread._rthread``. rthread is only looked
at, in ``sys.modules``, when the option is given.

With the option, ``rthread.debug.watchdog(SECONDS, action="raise")`` runs for the
whole session, and for each test phase (setup, call, teardown):

- a deadlock (a certain wait-for cycle through locks, RLocks and joins) is broken
  by the watchdog: the main thread, when it is in the cycle or waits on it, gets
  ``rthread.debug.DeadlockError`` out of its blocked ``acquire()`` or ``join()``; the
  test fails with it and the report is attached as the ``rthread`` report section;
  the run goes on with the next test;
- a hang without a cycle (the main thread waiting on a lock, join, Condition,
  Event, Queue... for more than SECONDS): a helper thread sees it, takes the
  report and interrupts the main thread with a signal whose handler fails the test
  (``pytest.fail``, which ``except Exception`` does not catch) where it waited;
  the report is attached the same way;
- a hang where the main thread cannot be interrupted (it does not come back from
  the signal within a grace period): the report and the failure are written to
  the terminal and the process ends with status 1, rather than hang forever. If
  not even the helper can run (a thread holds the GIL for good), the watchdog
  still writes its native report, without Python stacks, to the terminal.

Whatever the watchdog prints during a phase (a hang in a background thread, for
instance) is attached to that phase's ``rthread`` section rather than printed.

``--rthread-lockdep`` (or ``rthread_lockdep = true`` in the ini) checks the order in
which locks are taken (``rthread.debug.lockdep``): a test phase during which some
thread takes two locks in the opposite order of one seen before in the session (an
ABBA deadlock waiting to happen, even if this run did not deadlock) fails, with the
lock-order report as its message and in the ``rthread lockdep`` section. The program
itself is not disturbed (the check only records, unless ``RTHREAD_LOCKDEP=raise`` asked
for more). Reports made outside any test phase are printed at the end of the run.
"""

import os
import sys

import pytest

SECTION = "rthread"
OPTION = "--rthread-watchdog"
INI = "rthread_watchdog"
LOCKDEP_OPTION = "--rthread-lockdep"
LOCKDEP_INI = "rthread_lockdep"
LOCKDEP_SECTION = "rthread lockdep"
RESEND = 0.2

_HOW_TO_ACTIVATE = (
    "%s needs rthread as the process's _thread, and this pytest runs on the built-in "
    "_thread. Activate rthread when the interpreter starts: RTHREAD=1 pytest %s=SECONDS "
    "... (or: python -m rthread -m pytest %s=SECONDS ...)" % (OPTION, OPTION, OPTION)
)


def pytest_addoption(parser):
    group = parser.getgroup("rthread", "rthread deadlock and hang reports")
    group.addoption(
        OPTION, action="store", dest="rthread_watchdog", default=None, metavar="SECONDS",
        help="fail a test that deadlocks (at once, with rthread.debug.DeadlockError) or "
             "whose main thread waits longer than SECONDS, with rthread's report of who "
             "holds and waits for what; needs RTHREAD=1.")
    parser.addini(INI, "default of %s (SECONDS)" % OPTION, default="")
    group.addoption(
        LOCKDEP_OPTION, action="store_true", dest="rthread_lockdep", default=False,
        help="fail a test during which locks are taken in the opposite order of an order "
             "seen before (a possible ABBA deadlock), with rthread's lock-order report; "
             "needs RTHREAD=1.")
    parser.addini(LOCKDEP_INI, "default of %s (true/false)" % LOCKDEP_OPTION, type="bool",
                  default=False)


def _parse_seconds(text, where):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value == value or value == float("inf") or value <= 0:
        raise pytest.UsageError("%s: expected a positive number of seconds, got %r"
                                % (where, text))
    return value


def _requested(config):
    """The watchdog's SECONDS asked for (option, then ini), or None."""
    text = config.getoption("rthread_watchdog")
    if text is not None:
        return _parse_seconds(text, OPTION)
    text = (config.getini(INI) or "").strip()
    if text:
        return _parse_seconds(text, "%s (ini)" % INI)
    return None


def _active_rthread():
    """The rthread package when it is the process's _thread, else None (without
    importing it)."""
    rthread = sys.modules.get("rthread")
    active = getattr(rthread, "active", None)
    try:
        return rthread if active is not None and active() else None
    except Exception:
        return None


def pytest_configure(config):
    if config.getoption("rthread_lockdep") or config.getini(LOCKDEP_INI):
        _configure_lockdep(config)
    seconds = _requested(config)
    if seconds is None:
        return
    rthread = _active_rthread()
    if rthread is None:
        raise pytest.UsageError(_HOW_TO_ACTIVATE)
    try:
        from rthread import debug
    except ImportError as exc:
        raise pytest.UsageError("%s: this build of rthread has no rthread.debug (%s)"
                                % (OPTION, exc))
    config.pluginmanager.register(_Watchdog(config, seconds, debug), "rthread-watchdog")


class _Sink:
    """The watchdog's file: what it writes during a test phase goes to that phase's
    report section. ``fileno()`` is the terminal's standard error (as it was before
    pytest's capture), for the report the watchdog writes natively when it cannot
    have the GIL."""

    def __init__(self, fd, lock):
        self._fd = fd
        self._lock = lock
        self._parts = []

    def write(self, text):
        with self._lock:
            self._parts.append(text)
        return len(text)

    def flush(self):
        pass

    def fileno(self):
        return self._fd

    def take(self):
        with self._lock:
            text, self._parts = "".join(self._parts), []
        return text

    def to_terminal(self):
        """Writes out what came outside any test phase (collection, between tests)."""
        text = self.take()
        if text:
            try:
                os.write(self._fd, text.encode("utf-8", "replace"))
            except OSError:
                pass


class _Watchdog:
    def __init__(self, config, seconds, debug):
        import signal
        import threading

        self.config = config
        self.seconds = seconds
        self.debug = debug
        self.grace = max(2.0, min(seconds, 10.0))
        self.main_ident = threading.main_thread().ident
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.phase = None  # (item, when, started) while a phase runs
        self.interrupt = None  # (phase, message, report) sent to the main thread
        self.interrupted = []  # nodeids of phases interrupted for a hang
        self.closing = False
        self.exitstatus = 1
        # pytest's capture is suspended between phases, so fd 2 is the terminal here.
        self.terminal_fd = os.dup(2)
        self.sink = _Sink(self.terminal_fd, threading.Lock())
        self.signum = _interrupt_signal(signal)
        self.previous_handler = signal.signal(self.signum, self._on_signal)
        debug.watchdog(seconds, action="raise", file=self.sink)
        self.helper = threading.Thread(target=self._watch, name="rthread-pytest-watch",
                                       daemon=True)
        self.helper.start()

    # -- phases -----------------------------------------------------------------------

    def _run_phase(self, item, when):
        import time

        self.sink.to_terminal()  # not this phase's
        with self.lock:
            self.phase = (item, when, time.monotonic())
            self.interrupt = None
            self.wakeup.notify_all()

    def _end_phase(self):
        with self.lock:
            self.phase = None
            self.wakeup.notify_all()

    def _hookwrapper(when):
        @pytest.hookimpl(hookwrapper=True)
        def wrapper(self, item):
            self._run_phase(item, when)
            try:
                yield
            finally:
                self._end_phase()

        wrapper.__name__ = "pytest_runtest_" + when
        return wrapper

    pytest_runtest_setup = _hookwrapper("setup")
    pytest_runtest_call = _hookwrapper("call")
    pytest_runtest_teardown = _hookwrapper("teardown")
    del _hookwrapper

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        # Returns nothing: runs before pytest's own implementation builds the report
        # from the item's sections.
        parts = []
        error = call.excinfo.value if call.excinfo is not None else None
        if isinstance(error, self.debug.DeadlockError):
            report = getattr(error, "report", None) or str(error)
            parts.append(report)
            # The report goes to the section, once: the failure itself shows its
            # first line (the exception keeps the whole of it in .report).
            if error.args == (report,):
                first = report.strip().splitlines()[0] if report.strip() else "deadlock"
                error.args = ("%s; the report is in the '%s' section" % (first, SECTION),)
        with self.lock:
            written = self.sink.take()
            sent = self.interrupt
            self.interrupt = None
        if sent is not None and sent[0][:2] == (item, call.when):
            parts.append(sent[2])
        if written and not any(written.strip() in part for part in parts):
            parts.append(written)
        if parts:
            item.add_report_section(call.when, SECTION, "\n".join(p.rstrip("\n") for p in parts))

    # -- the helper thread --------------------------------------------------------------

    def _main_wait_seconds(self):
        """How long the main thread has been in its current wait (lock, RLock, join,
        and what is made of them: Condition, Event, Queue...), or None."""
        for thread in self.debug.snapshot().threads:
            if thread.get("ident") == self.main_ident:
                waiting = thread.get("waiting")
                return None if not waiting else waiting.get("seconds")
        return None

    def _watch(self):
        import time

        poll = min(self.seconds / 4.0, 0.25)
        with self.lock:
            while not self.closing:
                # Short timed waits: this thread never looks like a hang to the watchdog.
                self.wakeup.wait(poll)
                phase = self.phase
                if phase is None or self.interrupt is not None or self.closing:
                    continue
                if time.monotonic() - phase[2] < self.seconds:
                    continue
                self.lock.release()
                try:
                    waited = self._main_wait_seconds()
                    report = None
                    if waited is not None and waited >= self.seconds:
                        report = self.debug.format_report()
                finally:
                    self.lock.acquire()
                if report is None or self.phase is not phase:
                    continue
                message = ("rthread: the test's main thread waited for more than %gs "
                           "(--rthread-watchdog) without a deadlock cycle; report in the "
                           "'%s' section" % (self.seconds, SECTION))
                self.interrupt = (phase, message, report)
                self.interrupted.append("%s (%s)" % (phase[0].nodeid, phase[1]))
                if not self._interrupt_main(phase):
                    self._give_up(phase, report)

    def _interrupt_main(self, phase):
        """Signals the main thread until the phase ends (True) or the grace period is
        over (False). Called with the lock held.

        Sent again every RESEND seconds: a signal that lands while the waiting thread
        is between two of its sleeps (a waiter taking the GIL back, for instance) is
        only acted on at its next interruption."""
        import signal
        import time

        end = time.monotonic() + self.grace
        while True:
            signal.pthread_kill(self.main_ident, self.signum)
            left = end - time.monotonic()
            if self.wakeup.wait_for(lambda: self.phase is not phase or self.closing,
                                    max(0.0, min(RESEND, left))):
                return True
            if time.monotonic() >= end:
                return False

    def _on_signal(self, signum, frame):
        sent = self.interrupt
        if sent is None or self.phase is not sent[0]:
            return  # late: that phase is over
        pytest.fail(sent[1], pytrace=True)

    def _give_up(self, phase, report):
        """The main thread did not come back from the interruption: say so and end."""
        item, when, _ = phase
        capture = self.config.pluginmanager.getplugin("capturemanager")
        try:
            if capture is not None:
                capture.suspend_global_capture(in_=True)
        except Exception:
            pass
        text = ("\n%s\nrthread: %s (%s) FAILED: its main thread waited for more than %gs and "
                "could not be interrupted within %gs; ending the test run.\n%s\n"
                % ("=" * 78, item.nodeid, when, self.seconds, self.grace, report))
        try:
            os.write(self.terminal_fd, text.encode("utf-8", "replace"))
        finally:
            os._exit(1)

    # -- end of the session -------------------------------------------------------------

    def pytest_sessionfinish(self, session, exitstatus):
        self.exitstatus = int(exitstatus)

    def _exit_if_stuck(self):
        """At interpreter exit, before non-daemon threads are joined: threads that a
        hung test left blocked would keep the process alive for ever."""
        import threading

        stuck = [t.name for t in threading.enumerate()
                 if not t.daemon and t is not threading.main_thread() and t.is_alive()]
        if not stuck:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(2, ("rthread: ending the process: non-daemon threads left blocked by the "
                     "hung tests %s: %s\n" % (", ".join(self.interrupted), ", ".join(stuck))
                     ).encode("utf-8", "replace"))
        os._exit(getattr(self, "exitstatus", 1))

    def pytest_unconfigure(self, config):
        import signal

        with self.lock:
            self.closing = True
            self.wakeup.notify_all()
        try:
            self.debug.watchdog(None)
            self.sink.to_terminal()
        finally:
            signal.signal(self.signum, self.previous_handler)
            self.helper.join(5)
            try:
                os.close(self.terminal_fd)
            except OSError:
                pass
            if self.interrupted:
                import threading

                register = getattr(threading, "_register_atexit", None)
                if register is not None:
                    register(self._exit_if_stuck)


def _interrupt_signal(signal):
    """The signal that interrupts the main thread: a real-time one that nothing else
    uses when there are (Linux), else SIGALRM."""
    high = getattr(signal, "SIGRTMAX", None)
    return int(high) - 3 if high is not None else int(signal.SIGALRM)


# ----------------------------------------------------------------------------------------
# --rthread-lockdep


def _configure_lockdep(config):
    if _active_rthread() is None:
        raise pytest.UsageError(
            "%s needs rthread as the process's _thread, and this pytest runs on the built-in "
            "_thread. Activate rthread when the interpreter starts: RTHREAD=1 pytest %s ... "
            "(or: python -m rthread -m pytest %s ...)"
            % (LOCKDEP_OPTION, LOCKDEP_OPTION, LOCKDEP_OPTION))
    try:
        from rthread import debug
    except ImportError as exc:
        raise pytest.UsageError("%s: this build of rthread has no rthread.debug (%s)"
                                % (LOCKDEP_OPTION, exc))
    config.pluginmanager.register(_Lockdep(debug), "rthread-lockdep")


class _Lockdep:
    """Collects the lock-order reports made during each test phase and fails the phase."""

    def __init__(self, debug):
        self.debug = debug
        self.pending = []  # reports since the last phase ended (list.append is atomic)
        self.outside = []  # reports made outside any phase
        self.previous = debug.lockdep_mode()
        if self.previous == "off":
            debug.lockdep("record")
        debug._lockdep_listeners.append(self.pending.append)

    def _take(self):
        taken = []
        while True:  # one pop at a time: a report may come from another thread meanwhile
            try:
                taken.append(self.pending.pop(0))
            except IndexError:
                return taken

    def _hookwrapper(when):
        @pytest.hookimpl(hookwrapper=True)
        def wrapper(self, item):
            self.outside.extend(self._take())  # not this phase's
            yield

        wrapper.__name__ = "pytest_runtest_" + when
        return wrapper

    pytest_runtest_setup = _hookwrapper("setup")
    pytest_runtest_call = _hookwrapper("call")
    pytest_runtest_teardown = _hookwrapper("teardown")
    del _hookwrapper

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        reports = self._take()
        if not reports:
            return
        report = outcome.get_result()
        text = "\n".join(r.message for r in reports)
        report.sections.append(("%s (%s)" % (LOCKDEP_SECTION, call.when), text))
        if report.passed:
            report.outcome = "failed"
            report.longrepr = ("rthread: %d lock-order inversion(s) during %s "
                               "(--rthread-lockdep):\n%s" % (len(reports), call.when, text))

    def pytest_terminal_summary(self, terminalreporter):
        self.outside.extend(self._take())
        if self.outside:
            terminalreporter.section(LOCKDEP_SECTION + ": outside any test")
            for r in self.outside:
                terminalreporter.write(r.message)

    def pytest_sessionfinish(self, session, exitstatus):
        self.outside.extend(self._take())
        if self.outside and exitstatus == 0:
            session.exitstatus = 1

    def pytest_unconfigure(self, config):
        try:
            self.debug._lockdep_listeners.remove(self.pending.append)
        except ValueError:
            pass
        if self.previous == "off":
            self.debug.lockdep("off")
