"""Who holds what: deadlock and hang reports for rthread's locks and threads.

``snapshot()`` lists every thread (threading name, ident, native id, daemon flag),
what it holds and waits for and for how long, its Python stack, and every
wait-for cycle through locks, RLocks and joins. ``watchdog()`` watches from a
native thread (no GIL needed) and reports, exits, or breaks a deadlock by
raising ``DeadlockError`` in one of its waiters. ``register()`` prints the
report on a signal.

Works whether or not rthread is installed as ``_thread``; it covers rthread's
locks and threads only (the built-in's locks record nothing).

The watchdog reports a *certain* cycle as soon as two of its snapshots (taken every
``seconds / 4``, between 5 and 100 ms) agree on it and every wait in it is at least
``min(seconds, 0.2)`` old, and any other wait once it is ``seconds`` old; one report per
episode. ``action="raise"`` reaches the waits that began after it was set (they sleep
in 20 ms slices while it is on, to notice the cancellation). When the GIL cannot be had
within 2 s to render Python names and stacks, the native report is written to the
file's descriptor instead, and says so.

``Snapshot.to_dict()`` schema ``"rthread.debug/1"``::

    {"schema": "rthread.debug/1",
     "taken_at": float,          # time.time() of the snapshot
     "diagnostic": bool,         # acquire sites and times recorded
     "python_stacks": bool,      # stacks were rendered
     "cycles": [{"certainty": "certain" | "suspected",
                 "threads": [ident, ...],      # each waits for the next
                 "edges": [{"from": ident, "to": ident, "kind": "lock" | "RLock" | "join",
                            "object": int, "lock_kind": "mutex" | "signal" | "reentrant" | None,
                            "created_at": "file:line" | None, "acquired_at": "file:line" | None,
                            "label": str | None}]}],
     "threads": [{"ident": int, "native_id": int | None, "name": str | None,
                  "daemon": bool | None, "main": bool,
                  "waiting": None | {"kind": "lock" | "RLock" | "join" | "other",
                                     "object": int, "lock_kind": ..., "signal": bool,
                                     "created_at": "file:line" | None, "function": str | None,
                                     "label": str | None, "seconds": float, "timed": bool,
                                     "holder": ident | None, "joins": ident | None},
                  "holds": [{"object": int, "kind": str | None, "created_at": ...,
                             "acquired_at": "file:line" | None, "seconds": float | None,
                             "label": str | None}],
                  "stack": [str, ...] | None}]}
"""

import os as _os
import sys as _sys
import time as _time
import weakref as _weakref

from . import _rthread  # noqa: F401  (creates rthread._rthread_debug)

_native = _sys.modules["rthread._rthread_debug"]

__all__ = [
    "DeadlockError",
    "Snapshot",
    "snapshot",
    "format_report",
    "label",
    "describe",
    "enable",
    "disable",
    "enabled",
    "watchdog",
    "register",
    "unregister",
    "stats",
    "ContentionStats",
    "LockOrderWarning",
    "LockOrderError",
    "LockOrderReport",
    "lockdep",
    "lockdep_mode",
    "lockdep_reports",
]

SCHEMA = "rthread.debug/1"


class DeadlockError(RuntimeError):
    """Raised out of a blocked ``acquire()`` or ``join()`` that the watchdog
    (``action="raise"``) abandoned to break a deadlock. The lock was not taken.
    ``.report`` is the report text."""

    def __init__(self, report=""):
        super().__init__(report)
        self.report = report


class LockOrderWarning(Warning):
    """Issued (through ``warnings``) by an acquire that closes a cycle in the lock-order
    graph: two code paths take the same locks in opposite orders, so two threads can
    deadlock. ``-W error`` (or a ``warnings`` filter) makes it an exception raised from
    that acquire, before it blocks. ``.report`` is the ``LockOrderReport``."""

    def __init__(self, message="", report=None):
        super().__init__(message)
        self.report = report


class LockOrderError(RuntimeError):
    """Raised (``lockdep("raise")``) out of an acquire that closes a cycle in the
    lock-order graph, before it blocks; the lock was not taken. ``.report`` is the
    ``LockOrderReport``."""

    def __init__(self, message="", report=None):
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------
# Labels

_labels = {}  # id(lock) -> (weakref, name)


def _forget(ref, _labels=_labels):
    for key, (r, _name) in list(_labels.items()):
        if r is ref:
            _labels.pop(key, None)


def label(lock, name):
    """Names a lock or RLock in reports."""
    if _native.lock_info(lock) is None:
        raise TypeError("label() needs an rthread lock or RLock, not %s" % type(lock).__name__)
    _labels[id(lock)] = (_weakref.ref(lock, _forget), str(name))


def _label_of(obj_id):
    entry = _labels.get(obj_id)
    if entry is None:
        return None
    ref, name = entry
    return name if ref() is not None else None


# ---------------------------------------------------------------------------
# Diagnostic mode


def enable():
    """Diagnostic mode: record where and when each held lock was acquired."""
    _native.set_enabled(True)


def disable():
    """Leaves diagnostic mode (a watchdog keeps running)."""
    _native.set_enabled(False)


def enabled():
    """Whether diagnostic mode is on."""
    return _native.is_enabled()


# ---------------------------------------------------------------------------
# Snapshots


def _site(site):
    return None if site is None else "%s:%d" % (site[0], site[1])


def _age(now_ns, since_ns):
    return max(0.0, (now_ns - since_ns) / 1e9)


def _fmt_age(seconds):
    if seconds is None:
        return "?"
    if seconds >= 1:
        return "%.3fs" % seconds
    return "%dms" % int(seconds * 1000)


def _python_threads():
    """ident -> (name, daemon) from threading, without taking any lock."""
    threading = _sys.modules.get("threading")
    out = {}
    if threading is None:
        return out
    for source in ("_active", "_limbo"):
        table = getattr(threading, source, None)
        if not table:
            continue
        for t in list(dict(table).values()):
            ident = getattr(t, "_ident", None)
            if ident is None:
                continue
            out[ident] = (getattr(t, "_name", None), getattr(t, "_daemonic", None), t)
    return out


def _tstate_locks(pythreads):
    """id(lock) -> ident of the thread whose end it signals (3.9 - 3.12 joins)."""
    out = {}
    for ident, (_name, _daemon, t) in pythreads.items():
        lock = getattr(t, "_tstate_lock", None)
        if lock is not None:
            out[id(lock)] = ident
    return out


class Snapshot:
    """Every thread at one moment: see the module docstring for the fields."""

    def __init__(self, taken_at, diagnostic, threads, cycles, python_stacks=True):
        self.taken_at = taken_at
        self.diagnostic = diagnostic
        self.threads = threads
        self.cycles = cycles
        self.python_stacks = python_stacks

    def to_dict(self):
        return {
            "schema": SCHEMA,
            "taken_at": self.taken_at,
            "diagnostic": self.diagnostic,
            "python_stacks": self.python_stacks,
            "cycles": self.cycles,
            "threads": self.threads,
        }

    def _thread(self, ident):
        for t in self.threads:
            if t["ident"] == ident:
                return t
        return None

    def _name(self, ident):
        t = self._thread(ident)
        if t is None:
            return "thread %#x" % ident if ident else "unknown thread"
        if t["name"] is not None:
            return "thread %r (ident %#x)" % (t["name"], ident)
        return "thread %#x" % ident

    def _object_text(self, w):
        kind = w["kind"]
        if kind == "join" or w.get("joins"):
            return "the end of %s" % self._name(w.get("joins") or w["object"])
        text = "%s %#x" % (kind, w["object"])
        if w.get("label"):
            text += " %r" % w["label"]
        if w.get("lock_kind") == "signal":
            text += " (used as a signal)"
        if w.get("created_at"):
            text += " created at %s" % w["created_at"]
            if w.get("function"):
                text += " in %s" % w["function"]
        return text

    def text(self):
        """The report, for people: cycles first, then every thread."""
        lines = []
        stamp = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(self.taken_at))
        lines.append(
            "rthread report, %s (diagnostic mode %s)"
            % (stamp, "on" if self.diagnostic else "off: no acquire sites")
        )
        certain = [c for c in self.cycles if c["certainty"] == "certain"]
        suspected = [c for c in self.cycles if c["certainty"] != "certain"]
        lines.append("")
        if certain:
            lines.append("Found %d deadlock(s):" % len(certain))
        else:
            lines.append("No deadlock found.")
        for i, c in enumerate(certain + suspected):
            lines.append("")
            lines.append(
                "%s %d (%s, %d threads):"
                % ("Deadlock" if c["certainty"] == "certain" else "Suspected cycle (through a signal)",
                   i + 1, c["certainty"], len(c["threads"]))
            )
            for e in c["edges"]:
                w = self._thread(e["from"])
                wait = (w or {}).get("waiting") or e
                lines.append("  %s" % self._name(e["from"]))
                lines.append("    waits for %s, for %s" % (self._object_text(wait),
                                                         _fmt_age(wait.get("seconds"))))
                if e["kind"] != "join" and not wait.get("joins"):
                    held = "    which is held by %s" % self._name(e["to"])
                    if e.get("acquired_at"):
                        held += ", acquired at %s" % e["acquired_at"]
                    lines.append(held)
        lines.append("")
        lines.append("Threads (%d):" % len(self.threads))
        for t in self.threads:
            lines.append("")
            head = "%s, native id %s, daemon=%s%s" % (
                self._name(t["ident"]),
                t["native_id"],
                t["daemon"],
                ", main thread" if t["main"] else "",
            )
            lines.append(head)
            for h in t["holds"]:
                text = "  holds %s %#x" % (h["kind"] or "lock", h["object"])
                if h.get("label"):
                    text += " %r" % h["label"]
                if h.get("created_at"):
                    text += " created at %s" % h["created_at"]
                if h.get("acquired_at"):
                    text += ", acquired at %s" % h["acquired_at"]
                if h.get("seconds") is not None:
                    text += ", %s ago" % _fmt_age(h["seconds"])
                lines.append(text)
            w = t["waiting"]
            if w is not None:
                text = "  waits for %s, for %s%s" % (
                    self._object_text(w),
                    _fmt_age(w["seconds"]),
                    " (with a timeout)" if w["timed"] else "",
                )
                lines.append(text)
                if w["holder"] is not None and w["kind"] != "join" and not w.get("joins"):
                    if w.get("lock_kind") == "signal":
                        lines.append("    last acquired by %s; another thread is expected to "
                                     "release it" % self._name(w["holder"]))
                    else:
                        lines.append("    held by %s" % self._name(w["holder"]))
            if t["stack"] is not None:
                lines.append("  Stack (most recent call last):")
                for entry in t["stack"]:
                    for sub in entry.rstrip("\n").split("\n"):
                        lines.append("  " + sub)
            elif not self.python_stacks:
                lines.append("  (Python stack unavailable)")
        return "\n".join(lines) + "\n"

    def __repr__(self):
        return "<rthread.debug.Snapshot: %d threads, %d cycles>" % (len(self.threads), len(self.cycles))


def _build(stacks=True, exclude=None):
    taken_ns, raw_threads, raw_cycles = _native.snapshot()
    now_wall = _time.time()
    now_ns = _time.monotonic_ns()
    # The native snapshot's clock is the monotonic clock; correct to the moment it was taken.
    taken_at = now_wall - max(0.0, (now_ns - taken_ns) / 1e9)
    pythreads = _python_threads()
    tstate = _tstate_locks(pythreads)
    frames = _sys._current_frames() if stacks else {}
    main_ident = _rthread._get_main_thread_ident() if hasattr(_rthread, "_get_main_thread_ident") else None
    if main_ident is None:
        threading = _sys.modules.get("threading")
        if threading is not None:
            main_ident = threading.main_thread().ident
    created = {}  # object -> (created_at, function, kind, lock_kind)
    for rt in raw_threads:
        w = rt["wait"]
        if w is not None and w["kind"] in ("lock", "rlock"):
            site = w["site"]
            created[w["object"]] = (_site(site), site[2] if site else None,
                                    "RLock" if w["kind"] == "rlock" else "lock", w["lock_kind"])
    threads = []
    by_ident = {}
    raw_threads = [rt for rt in raw_threads if rt["ident"] != exclude]
    for rt in raw_threads:
        ident = rt["ident"]
        name, daemon, _t = pythreads.get(ident, (None, None, None))
        w = rt["wait"]
        waiting = None
        if w is not None:
            kind = {"lock": "lock", "rlock": "RLock", "join": "join"}.get(w["kind"], "other")
            joins = w["object"] if kind == "join" else tstate.get(w["object"]) if kind == "lock" else None
            site = w["site"]
            waiting = {
                "kind": kind,
                "object": w["object"],
                "lock_kind": w["lock_kind"],
                "signal": w["lock_kind"] == "signal",
                "created_at": _site(site),
                "function": site[2] if site else None,
                "label": _label_of(w["object"]),
                "seconds": _age(taken_ns, w["since_ns"]),
                "timed": w["timed"],
                "holder": w["holder"],
                "joins": joins,
            }
        holds = []
        for h in rt["held"]:
            c = created.get(h["object"], (None, None, None, None))
            holds.append({
                "object": h["object"],
                "kind": c[2],
                "created_at": c[0],
                "acquired_at": _site(h["site"]),
                "seconds": _age(taken_ns, h["since_ns"]),
                "label": _label_of(h["object"]),
            })
        t = {
            "ident": ident,
            "native_id": rt["native_id"],
            "name": name,
            "daemon": daemon,
            "main": ident == main_ident,
            "waiting": waiting,
            "holds": holds,
            "stack": None,
        }
        threads.append(t)
        by_ident[ident] = t
    # Threads rthread has no record of (started before it, or by the built-in).
    for ident in sorted(set(frames) | set(pythreads)):
        if ident in by_ident or ident == exclude:
            continue
        name, daemon, _t = pythreads.get(ident, (None, None, None))
        t = {"ident": ident, "native_id": getattr(_t, "native_id", None), "name": name,
             "daemon": daemon, "main": ident == main_ident, "waiting": None, "holds": [],
             "stack": None}
        threads.append(t)
        by_ident[ident] = t
    # What a waiter says about a holder is what the holder holds.
    for t in threads:
        w = t["waiting"]
        if w is None or w["holder"] is None or w["kind"] == "join" or w["joins"]:
            continue
        if w["lock_kind"] == "signal":
            continue
        holder = by_ident.get(w["holder"])
        if holder is None:
            continue
        for h in holder["holds"]:
            if h["object"] == w["object"]:
                break
        else:
            holder["holds"].append({
                "object": w["object"], "kind": w["kind"], "created_at": w["created_at"],
                "acquired_at": None, "seconds": None, "label": w["label"],
            })
    if stacks:
        import traceback

        for t in threads:
            f = frames.get(t["ident"])
            if f is not None:
                t["stack"] = traceback.format_stack(f)
    del frames
    cycles = []
    for c in raw_cycles:
        # A thread waiting on a signal it took itself (a Condition's waiter lock) waits for
        # whoever notifies, not for itself: no cycle.
        if len(c["edges"]) == 1 and c["edges"][0]["lock_kind"] == "signal":
            continue
        edges = []
        for e in c["edges"]:
            kind = {"lock": "lock", "rlock": "RLock", "join": "join"}.get(e["kind"], "other")
            cr = created.get(e["object"], (None, None, None, None))
            holder = by_ident.get(e["to"])
            acquired_at = None
            if holder is not None:
                for h in holder["holds"]:
                    if h["object"] == e["object"]:
                        acquired_at = h["acquired_at"]
            edges.append({
                "from": e["from"], "to": e["to"], "kind": kind, "object": e["object"],
                "lock_kind": e["lock_kind"], "created_at": cr[0], "acquired_at": acquired_at,
                "label": _label_of(e["object"]), "certainty": e["certainty"],
            })
        cycles.append({
            "certainty": c["certainty"],
            "threads": [e["from"] for e in edges],
            "edges": edges,
        })
    cycles.sort(key=lambda c: c["certainty"] != "certain")
    return Snapshot(taken_at, _native.is_enabled(), threads, cycles, python_stacks=stacks)


def snapshot():
    """Every thread now: holds, waits, stacks and wait-for cycles."""
    return _build()


def format_report(snapshot=None):
    """``snapshot().text()`` (of the given snapshot, or of a new one)."""
    return (snapshot if snapshot is not None else _build()).text()


def describe(lock):
    """A lock's or RLock's record: kind, holder, creation site, acquire site (diagnostic
    mode), waiters, label."""
    info = _native.lock_info(lock)
    if info is None:
        raise TypeError("describe() needs an rthread lock or RLock, not %s" % type(lock).__name__)
    kind, obj, holder, signal, site = info
    snap = _build(stacks=False)
    waiters = [t["ident"] for t in snap.threads
               if t["waiting"] is not None and t["waiting"]["object"] == obj
               and t["waiting"]["kind"] in ("lock", "RLock")]
    acquired_at = None
    if holder is not None:
        h = snap._thread(holder)
        for entry in (h or {}).get("holds", ()):
            if entry["object"] == obj:
                acquired_at = entry["acquired_at"]
    pythreads = _python_threads()
    return {
        "kind": kind,
        "object": obj,
        "locked": lock.locked() if hasattr(lock, "locked") else None,
        "holder": holder,
        "holder_name": pythreads.get(holder, (None,))[0] if holder is not None else None,
        "signal": signal,
        "created_at": _site(site),
        "function": site[2] if site else None,
        "acquired_at": acquired_at,
        "waiters": waiters,
        "label": _label_of(obj),
    }


# ---------------------------------------------------------------------------
# Watchdog

_watch = {"file": None, "action": None}


def _write(file, text):
    if file is None:
        file = _sys.stderr
    try:
        if file is None:
            raise OSError
        file.write(text)
        file.flush()
    except Exception:
        try:
            _os.write(2, text.encode("utf-8", "replace"))
        except OSError:
            pass


def _watchdog_fire(reason, action):
    """Called by the native watchdog (from its helper thread, GIL held): renders the
    report, writes it, and returns it."""
    head = "rthread watchdog: %s detected (action: %s)\n" % (
        "deadlock" if reason == "deadlock" else "a wait longer than the limit", action)
    text = head + _build(exclude=_rthread.get_ident()).text()
    _write(_watch["file"], text)
    return text


def watchdog(seconds, action="report", file=None):
    """Watches every wait from a native thread: reports (once per episode) any wait longer
    than ``seconds`` and any certain deadlock; ``action="exit"`` then ends the process with
    status 1; ``action="raise"`` breaks a certain deadlock: one waiter (the main thread if
    it is in it or waits on it) gets ``DeadlockError`` from its ``acquire()``/``join()``.
    Turns diagnostic mode on. ``watchdog(None)`` stops it; a new call replaces the settings.
    ``file`` defaults to ``sys.stderr``."""
    if seconds is None:
        _native.watchdog(None, "report", 2)
        _watch["file"] = None
        return None
    if action not in ("report", "exit", "raise"):
        raise ValueError("action must be 'report', 'exit' or 'raise', not %r" % (action,))
    seconds = float(seconds)
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("seconds must be a positive number")
    fd = 2
    target = file if file is not None else _sys.stderr
    try:
        fd = target.fileno()
    except Exception:
        fd = 2
    _watch["file"] = file
    _watch["action"] = action
    enable()
    _native.watchdog(seconds, action, fd)
    return None


def _stop_at_exit():
    _native.watchdog(None, "report", 2)


# ---------------------------------------------------------------------------
# Report on a signal

_signals = {}  # signum -> (previous handler, file)


def register(signum, file=None):
    """Prints the report to ``file`` (default ``sys.stderr``) when the process gets
    ``signum``, like ``faulthandler.register``. Main thread only (a Python signal handler)."""
    import signal

    signum = int(signum)

    def handler(sig, frame):
        entry = _signals.get(sig)
        _write(entry[1] if entry else None, format_report())

    previous = signal.signal(signum, handler)
    if signum in _signals:
        previous = _signals[signum][0]
    _signals[signum] = (previous, file)


def unregister(signum):
    """Undoes ``register(signum)``; returns whether it was registered."""
    import signal

    signum = int(signum)
    entry = _signals.pop(signum, None)
    if entry is None:
        return False
    previous = entry[0]
    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    return True


import collections as _collections  # noqa: E402

ContentionStats = _collections.namedtuple(
    "ContentionStats", ["waits", "spins", "sleeps", "timeouts", "wait_seconds"])
ContentionStats.__doc__ = """Process-wide lock contention totals since start-up (``stats()``).

waits: contended acquires of a lock or RLock (the first try failed and the caller waited);
spins: those that got the lock without sleeping; sleeps: those that slept in the OS at
least once; timeouts: those that ended without the lock; wait_seconds: their total time."""


def stats():
    """Always-on process-wide contention totals (a ``ContentionStats``), counted on the
    contended path only, like Go's ``/sync/mutex/wait/total:seconds``: a cheap "is there
    contention at all" check. Waits on a lock used as a signal (``Condition.wait``,
    ``Event.wait``) and joins are not counted. ``rthread.profile`` tells where."""
    waits, spins, sleeps, timeouts, wait_ns = _sys.modules["rthread._rthread_profile"].stats()
    return ContentionStats(waits, spins, sleeps, timeouts, wait_ns / 1e9)


# ---------------------------------------------------------------------------
# Lock-order checking (lockdep)

_LOCKDEP_MODES = ("off", "record", "warn", "raise")
_lockdep_reports = []
_lockdep_listeners = []  # callables(report), called for every new report (pytest plugin)


class LockOrderReport:
    """One lock-order inversion: ``message`` (the text), ``action`` taken ("record",
    "warn" or "raise"), ``timed`` (the acquire had a timeout), ``thread`` and
    ``thread_name`` of the acquire, ``new`` and ``path``: the new order and the orders
    already seen that lead back (dicts with ``from``/``to`` classes, sites and stacks)."""

    def __init__(self, info, action):
        self.info = info
        self.action = action
        self.new = info["new"]
        self.path = info["path"]
        self.timed = info["timed"]
        self.thread = self.new["thread"]
        self.thread_name = self.new["thread_name"]
        self.message = _format_lockdep(info, action)

    def __str__(self):
        return self.message

    def __repr__(self):
        return "<LockOrderReport %s>" % self.message.splitlines()[0]


def _short_site(site):
    return "?" if site is None else "%s:%d" % (site[0], site[1])


def _long_site(site):
    if site is None:
        return "an unknown place"
    return "%s:%d in %s" % (site[0], site[1], site[2]) if site[2] else _short_site(site)


def _table_site(cls, lock_id):
    """A short name for the scenario table: the label, or the file's base name and line."""
    label = _label_of(lock_id)
    if label:
        return repr(label)
    site = cls["site"]
    return "?" if site is None else "%s:%d" % (_os.path.basename(site[0]) or site[0], site[1])


def _lock_name(cls, lock_id):
    """``lock 'label' (created at f.py:3 in g)`` or ``lock created at ...``."""
    label = _label_of(lock_id)
    where = "created at %s" % _long_site(cls["site"])
    if cls.get("inner") is not None:
        where += " (by %s)" % _long_site(cls["inner"])
    return "lock %r (%s)" % (label, where) if label else "lock %s" % where


def _thread_desc(edge):
    name = edge.get("thread_name")
    if name:
        return "thread %r" % name
    return "thread %#x" % edge["thread"]


def _stack_lines(stack, indent):
    import linecache

    out = [indent + "Stack (most recent call last):"]
    for file, line, func in reversed(stack or ()):
        out.append('%s  File "%s", line %d, in %s' % (indent, file, line, func))
        text = linecache.getline(file, line).strip()
        if text:
            out.append(indent + "    " + text)
    if not stack:
        out.append(indent + "  (no Python frames)")
    return out


def _format_lockdep(info, action):
    new, path = info["new"], info["path"]
    held = new["from"]
    wanted = new["to"]
    lines = []
    bar = "=" * 72
    lines.append("rthread lockdep: possible deadlock: lock order inversion (%s)" % {
        "raise": "raised LockOrderError", "warn": "warning", "record": "recorded"}[action])
    lines.append(bar)
    lines.append("%s is about to acquire" % _thread_desc(new))
    lines.append("    %s" % _lock_name(wanted, new["to_lock"]))
    lines.append("    at %s" % _long_site(new["to_acquired_at"]))
    lines.append("while it holds")
    lines.append("    %s" % _lock_name(held, new["from_lock"]))
    if new["from_acquired_at"] is not None:
        lines.append("    acquired at %s" % _long_site(new["from_acquired_at"]))
    lines.append("")
    lines.append("but the opposite order was seen before:")
    for edge in path:
        lines.append("  %s acquired" % _thread_desc(edge))
        lines.append("    %s" % _lock_name(edge["to"], edge["to_lock"]))
        lines.append("    at %s" % _long_site(edge["to_acquired_at"]))
        lines.append("  while it held")
        lines.append("    %s" % _lock_name(edge["from"], edge["from_lock"]))
        if edge["from_acquired_at"] is not None:
            lines.append("    acquired at %s" % _long_site(edge["from_acquired_at"]))
    lines.append("")
    if len(path) == 1:
        a = _table_site(held, new["from_lock"])
        b = _table_site(wanted, new["to_lock"])
        left = _thread_desc(path[0])
        right = _thread_desc(new)
        if left == right:
            left, right = "thread 1", "thread 2"
        width = max(30, len(left) + 4, len("acquire " + b) + 4)
        lines.append("Two threads can deadlock this way:")
        lines.append("")
        lines.append("    %-*s%s" % (width, left, right))
        lines.append("    %-*s%s" % (width, "-" * len(left), "-" * len(right)))
        lines.append("    %s" % ("acquire " + b))
        lines.append("    %-*s%s" % (width, "", "acquire " + a))
        lines.append("    %s" % ("acquire " + a + "   <- waits"))
        lines.append("    %-*s%s" % (width, "", "acquire " + b + "   <- waits"))
        lines.append("")
        lines.append("    *** DEADLOCK ***")
    else:
        lines.append("%d threads can deadlock this way, each holding one lock of the cycle"
                     % (len(path) + 1))
        chain = [_short_site(wanted["site"])] + [_short_site(e["to"]["site"]) for e in path]
        lines.append("    " + " -> ".join(chain))
    lines.append("")
    lines.append("The new order (%s, now):" % _thread_desc(new))
    lines.extend(_stack_lines(new["stack"], "  "))
    for i, edge in enumerate(path, 1):
        lines.append("")
        lines.append("The earlier order%s (first seen in %s):" % (
            " #%d" % i if len(path) > 1 else "", _thread_desc(edge)))
        lines.extend(_stack_lines(edge["stack"], "  "))
    if info.get("timed") and action == "warn":
        lines.append("")
        lines.append("(a timed acquire: it warns rather than raises, it cannot wait for ever)")
    elif info.get("restore") and action == "warn":
        lines.append("")
        lines.append("(Condition.wait taking its lock back: it warns rather than raises)")
    lines.append(bar)
    return "\n".join(lines) + "\n"


def _lockdep_report(info, action):
    """Called by the native check, in the acquiring thread, before the acquire blocks."""
    report = LockOrderReport(info, action)
    _lockdep_reports.append(report)
    for listener in list(_lockdep_listeners):
        try:
            listener(report)
        except Exception:
            pass
    if action == "raise":
        raise LockOrderError(report.message, report)
    if action == "warn":
        import warnings

        warnings.warn(LockOrderWarning(report.message, report), stacklevel=2)


def _lockdep_thread_name():
    threading = _sys.modules.get("threading")
    active = getattr(threading, "_active", None)
    if active is None:
        return None
    thread = active.get(_rthread.get_ident())
    return None if thread is None else thread.name


def lockdep(mode="warn"):
    """Lock-order checking. ``mode``: ``"warn"`` (a ``LockOrderWarning`` through
    ``warnings`` from the acquire that closes an order cycle), ``"raise"``
    (``LockOrderError`` from that acquire, before it blocks; a timed acquire, or a
    ``Condition.wait`` taking its lock back, still only warns), ``"record"`` (kept in
    ``lockdep_reports()`` only) or ``"off"`` (``None`` and ``False`` too). Each order cycle is
    reported once. Returns the previous mode."""
    if mode is None or mode is False:
        mode = "off"
    if mode not in _LOCKDEP_MODES:
        raise ValueError("mode must be one of %s, not %r" % (", ".join(_LOCKDEP_MODES), mode))
    return _native.lockdep_set(mode)


def lockdep_mode():
    """The current lock-order checking mode ("off", "record", "warn" or "raise")."""
    return _native.lockdep_mode()


def lockdep_reports():
    """Every lock-order inversion reported so far in this process (``LockOrderReport``)."""
    return list(_lockdep_reports)


_native.lockdep_configure(_lockdep_report, _lockdep_thread_name)


_native.configure(DeadlockError, _watchdog_fire)

import atexit as _atexit  # noqa: E402

_atexit.register(_stop_at_exit)
