"""The hang-report options shared by ``python -m rthread``, the ``RTHREAD_*``
environment variables and the pytest plugin: parsing (strict, one clear message
per bad value) and setting them up through :mod:`rthread.debug`.

=========================  ==========================  ==================================
``python -m rthread``      environment (``RTHREAD=1``)  what it does
=========================  ==========================  ==================================
``--watchdog SECONDS``     ``RTHREAD_WATCHDOG``         report any wait longer than
                                                        SECONDS, or a deadlock cycle
``--on-hang ACTION``       ``RTHREAD_ON_HANG``          ``report`` (default), ``exit``
                                                        or ``raise``
``--report-signal SIG``    ``RTHREAD_REPORT_SIGNAL``    print the report on signal SIG
                                                        (a name, ``SIGUSR1``, or number)
``--lockdep MODE``         ``RTHREAD_LOCKDEP``          lock-order checking: ``warn``
                                                        (LockOrderWarning) or ``raise``
                                                        (LockOrderError from the acquire)
=========================  ==========================  ==================================

Imported before rthread is active (by ``-m rthread`` and at interpreter start-up):
at module level it imports nothing; ``signal`` and ``rthread.debug`` are imported
only when an option is actually used.
"""

ACTIONS = ("report", "exit", "raise")

ENV_WATCHDOG = "RTHREAD_WATCHDOG"
ENV_ON_HANG = "RTHREAD_ON_HANG"
ENV_REPORT_SIGNAL = "RTHREAD_REPORT_SIGNAL"
ENV_LOCKDEP = "RTHREAD_LOCKDEP"
ENV_NAMES = (ENV_WATCHDOG, ENV_ON_HANG, ENV_REPORT_SIGNAL, ENV_LOCKDEP)
LOCKDEP_MODES = ("warn", "raise")


def parse_seconds(text):
    """A positive, finite number of seconds (``"2"``, ``"0.5"``); ValueError otherwise."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = None
    # (value == value) is False for nan; inf is refused as well: "never" is no limit.
    if value is None or not value == value or value == float("inf") or value <= 0:
        raise ValueError("expected a positive number of seconds, got %r" % (text,))
    return value


def parse_lockdep(text):
    """``warn`` or ``raise`` (any case, surrounding blanks ignored); ValueError otherwise."""
    word = str(text).strip().lower()
    if word not in LOCKDEP_MODES:
        raise ValueError("expected one of %s, got %r" % (", ".join(LOCKDEP_MODES), text))
    return word


def parse_action(text):
    if text not in ACTIONS:
        raise ValueError("expected one of %s, got %r" % (", ".join(ACTIONS), text))
    return text


# Signals a report handler cannot take: uncatchable, or the process's own fatal
# ones, whose handlers must end the process (what faulthandler is for).
_REFUSED = ("SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")


def parse_signal(text):
    """A signal number from a name (``SIGUSR1``, ``USR1``, any case) or a number."""
    import signal

    word = str(text).strip()
    if word.isdigit():
        number = int(word)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = None
            valid = getattr(signal, "valid_signals", None)
            if valid is None or number not in valid():
                raise ValueError("no signal number %s on this system" % word)
    else:
        name = word.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        member = getattr(signal.Signals, name, None) if not name.startswith("SIG_") else None
        if member is None:
            raise ValueError("expected a signal name such as SIGUSR1, or a number, got %r"
                             % (text,))
        number = int(member)
    if name in _REFUSED:
        raise ValueError("%s cannot be used for reports (choose SIGUSR1, SIGUSR2, ...)" % name)
    return number


def signal_name(number):
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def apply(watchdog=None, action=None, report_signal=None, lockdep=None):
    """Sets the options up through rthread.debug (rthread must be active).

    Raises whatever rthread.debug raises (ImportError when this build of rthread
    has no rthread.debug, ValueError / OSError for a signal it cannot take)."""
    if watchdog is None and report_signal is None and lockdep is None:
        return
    from rthread import debug

    if lockdep is not None:
        debug.lockdep(lockdep)

    if report_signal is not None:
        # Asked for at start: diagnostic mode, so that reports tell where each held
        # lock was acquired (the watchdog turns it on as well).
        debug.enable()
        debug.register(report_signal)
    if watchdog is not None:
        debug.watchdog(watchdog, action=action or "report")


def from_environment(environ):
    """Reads ``RTHREAD_WATCHDOG``, ``RTHREAD_ON_HANG``, ``RTHREAD_REPORT_SIGNAL`` and
    ``RTHREAD_LOCKDEP``.

    Returns ``(options, problems)``: the keyword arguments of apply() for the valid
    values, and one message per invalid (hence ignored) one. An empty value is as
    if unset."""
    options, problems = {}, []
    raw = {name: environ.get(name) or None for name in ENV_NAMES}
    if raw[ENV_WATCHDOG] is not None:
        try:
            options["watchdog"] = parse_seconds(raw[ENV_WATCHDOG])
        except ValueError as exc:
            problems.append("%s=%s ignored: %s" % (ENV_WATCHDOG, raw[ENV_WATCHDOG], exc))
    if raw[ENV_ON_HANG] is not None:
        try:
            action = parse_action(raw[ENV_ON_HANG].strip().lower())
        except ValueError as exc:
            problems.append("%s=%s ignored: %s" % (ENV_ON_HANG, raw[ENV_ON_HANG], exc))
        else:
            if raw[ENV_WATCHDOG] is None:
                problems.append("%s=%s ignored: it needs %s=SECONDS"
                                % (ENV_ON_HANG, raw[ENV_ON_HANG], ENV_WATCHDOG))
            elif "watchdog" in options:
                options["action"] = action
    if raw[ENV_REPORT_SIGNAL] is not None:
        try:
            options["report_signal"] = parse_signal(raw[ENV_REPORT_SIGNAL])
        except ValueError as exc:
            problems.append("%s=%s ignored: %s"
                            % (ENV_REPORT_SIGNAL, raw[ENV_REPORT_SIGNAL], exc))
    if raw[ENV_LOCKDEP] is not None:
        try:
            options["lockdep"] = parse_lockdep(raw[ENV_LOCKDEP])
        except ValueError as exc:
            problems.append("%s=%s ignored: %s" % (ENV_LOCKDEP, raw[ENV_LOCKDEP], exc))
    return options, problems


def apply_environment(environ, stderr):
    """At interpreter start-up (RTHREAD=1, rthread active): sets the environment's
    options up. Never raises: each problem is one line on ``stderr``."""
    options, problems = from_environment(environ)
    if options:
        try:
            apply(**options)
        except Exception as exc:  # start-up must never fail because of rthread
            problems.append("%s ignored: %s" % (
                ", ".join(name for name in ENV_NAMES if environ.get(name)),
                _reason(exc)))
    if problems and stderr is not None:
        for problem in problems:
            print("rthread: " + problem, file=stderr)


def _reason(exc):
    if isinstance(exc, ImportError):
        return "this build of rthread has no rthread.debug (%s)" % (exc,)
    return "%s: %s" % (type(exc).__name__, exc)


def describe_failure(exc):
    """One line saying why apply() failed."""
    return _reason(exc)
