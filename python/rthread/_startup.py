"""Activation at interpreter start-up: imported by the ``00-rthread.pth`` file that the
wheel puts in site-packages, only when the environment has ``RTHREAD=1``.

``site`` runs .pth files in sorted name order, before ``sitecustomize`` and before
the program, so rthread is normally installed before anything imports ``threading``.
If something did get there first (a .pth file that sorts earlier, for example),
activation is skipped with a one-line warning and the interpreter goes on with the
built-in ``_thread``: start-up must never fail because of rthread.

Once rthread is active, the hang-report variables ``RTHREAD_WATCHDOG=SECONDS``,
``RTHREAD_ON_HANG=report|exit|raise``, ``RTHREAD_REPORT_SIGNAL=SIGUSR1`` and the
lock-order check ``RTHREAD_LOCKDEP=warn|raise`` (see ``rthread._debug_options``) are set up,
the same as ``python -m rthread``'s options, and so is the lock contention profile,
``RTHREAD_PROFILE=FILE`` (``rthread.profile``).
Like RTHREAD=1 itself they reach every child interpreter that inherits the
environment. An invalid value is one line on stderr and is ignored. When none is
set, this costs five dictionary look-ups.
"""

import os
import sys


def _activate():
    """Installs rthread; whether it is active."""
    try:
        import rthread

        rthread.install()
        return True
    except Exception as exc:  # never let interpreter start-up fail
        reason = str(exc)
        if isinstance(exc, RuntimeError):
            builtin = sys.modules.get("_thread")
            finder = getattr(sys.modules.get("rthread"), "_late_users", None)
            try:
                users = finder(builtin) if finder is not None and builtin is not None else []
            except Exception:
                users = []
            if users:
                reason = "%s imported the built-in _thread before rthread's .pth file ran" % (
                    ", ".join(repr(name) for name in users))
        if sys.stderr is not None:
            print("rthread: RTHREAD=1 ignored, running on the built-in _thread: " + reason,
                  file=sys.stderr)
        return False


def _hang_options(environ):
    if not (environ.get("RTHREAD_WATCHDOG") or environ.get("RTHREAD_ON_HANG")
            or environ.get("RTHREAD_REPORT_SIGNAL") or environ.get("RTHREAD_LOCKDEP")):
        return
    try:
        from rthread import _debug_options

        _debug_options.apply_environment(environ, sys.stderr)
    except Exception as exc:  # never let interpreter start-up fail
        if sys.stderr is not None:
            print("rthread: RTHREAD_* hang-report settings ignored: %r" % (exc,),
                  file=sys.stderr)


def _profile_option(environ):
    if not environ.get("RTHREAD_PROFILE"):
        return
    try:
        from rthread import profile

        profile._from_environment(environ, sys.stderr)
    except Exception as exc:  # never let interpreter start-up fail
        if sys.stderr is not None:
            print("rthread: RTHREAD_PROFILE ignored: %r" % (exc,), file=sys.stderr)


if _activate():
    _hang_options(os.environ)
    _profile_option(os.environ)
