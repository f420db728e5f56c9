"""Activation at interpreter start-up: imported by the ``00-rthread.pth`` file that the
wheel puts in site-packages, only when the environment has ``RTHREAD=1``.

``site`` runs .pth files in sorted name order, before ``sitecustomize`` and before
the program, so rthread is normally installed before anything imports ``threading``.
If something did get there first (a .pth file that sorts earlier, for example),
activation is skipped with a one-line warning and the interpreter goes on with the
built-in ``_thread``: start-up must never fail because of rthread.
"""

import sys


def _activate():
    try:
        import rthread

        rthread.install()
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


_activate()
