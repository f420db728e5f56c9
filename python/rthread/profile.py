"""Where time goes: a contention profile of rthread's locks and RLocks.

``start()`` turns it on, ``stop()`` off, ``reset()`` forgets what was gathered, and
``snapshot()`` returns a ``Profile``: ``.table()`` is a text table of the lock creation
sites sorted by total wait, ``.to_dict()`` a JSON-ready dict (schema
``"rthread.profile/1"``), and ``.write(path)`` writes JSON, speedscope or collapsed
stacks (flamegraph.pl, inferno) according to the file name::

    import rthread.profile
    rthread.profile.start()
    ...                                   # the program
    snap = rthread.profile.snapshot()
    print(snap.table())
    snap.write("locks.speedscope.json")   # open in https://www.speedscope.app

or for a whole run: ``python -m rthread --profile-locks FILE app.py``, or
``RTHREAD=1 RTHREAD_PROFILE=FILE python app.py`` (optionally ``RTHREAD_PROFILE_RATE=N``):
the profile runs from start-up, FILE is written at exit and the top of the table is
printed on stderr. Child processes (forked ones that exit normally, and with
``RTHREAD_PROFILE`` the ones that inherit the environment) write ``FILE`` with ``.PID``
before its extension.

File formats, from the name: ``*.speedscope.json`` speedscope; other ``*.json`` this
module's JSON; ``*.collapsed``, ``*.folded`` or ``*.txt`` collapsed stacks; anything
else the text table.

What is counted, only on the contended path (an acquire that does not get the lock at
once), never on an uncontended acquire or release:

- per lock, grouped by creation site (the first frame outside ``threading``/``queue``/
  ``concurrent.futures``) and ``rthread.debug.label()``: the contended acquisitions, split
  into those resolved while spinning and those that slept, timeouts, total and longest
  wait, a log2 histogram of the waits; the delay *charged to holders*: as in Go's mutex
  profile, a release that wakes a sleeping waiter is charged with the time every waiter
  spent waiting since the previous such release; and the hold time of holds that began
  with an acquire that slept;
- sampled stacks, taken with the GIL held, for one contended event in ``rate`` (default
  4): the stacks that waited, weighted by their wait, and the stacks that *held* the lock
  while others waited, weighted by the delay charged to them (the line to fix); a stack's
  count and time sum its sampled events only;
- per thread: contended acquisitions, wait, delay charged.

Uncontended acquisitions are not counted: that would cost a table update on every
acquire. Waits on a plain lock that is used as a signal (waited on by its own holder, or
released by another thread than its acquirer: ``Condition.wait``, ``Event.wait``) are not
contention and are left out, as are joins. ``rthread.debug.stats()`` gives always-on
process-wide totals.

``Profile.to_dict()`` schema ``"rthread.profile/1"``::

    {"schema": "rthread.profile/1",
     "running": bool, "rate": int, "duration_s": float,
     "sites": [{"site": "file:line" | None, "function": str | None, "label": str | None,
                "locks": int,                       # lock objects merged in this row
                "contended": int, "spun": int, "slept": int, "timeouts": int,
                "wait_s": float, "max_wait_s": float,
                "histogram": [{"le_s": float, "count": int}, ...],   # non-empty buckets
                "charged_s": float, "charges": int,
                "hold_count": int, "hold_s": float, "max_hold_s": float,
                "waiting_stacks": [{"count": int, "seconds": float, "frames": [FRAME, ...]}],
                "holding_stacks": [...same...]}],    # frames innermost first
     "threads": [{"ident": int, "name": str | None, "contended": int,
                  "wait_s": float, "charged_s": float}]}
    FRAME = {"file": str, "line": int, "function": str}
"""

import json as _json
import os as _os
import sys as _sys

from . import _rthread  # noqa: F401  (creates rthread._rthread_profile)

_native = _sys.modules["rthread._rthread_profile"]

__all__ = ["start", "stop", "reset", "running", "snapshot", "Profile", "DEFAULT_RATE",
           "SCHEMA"]

SCHEMA = "rthread.profile/1"
#: Default sampling rate: a stack for one contended event in this many.
DEFAULT_RATE = _native.DEFAULT_RATE


def start(rate=DEFAULT_RATE):
    """Turns the profile on; a stack is taken for one contended event in ``rate``
    (1: every one; 0: none). Data gathered before is kept (see ``reset()``)."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise TypeError("rate must be an int, not %s" % type(rate).__name__)
    if not 0 <= rate <= 0xFFFFFFFF:
        raise ValueError("rate must be between 0 and 2**32 - 1")
    _native.start(rate)


def stop():
    """Turns the profile off; what was gathered stays until ``reset()``."""
    _native.stop()


def reset():
    """Forgets everything gathered (the profile stays on or off)."""
    _native.reset()


def running():
    """Whether the profile is on."""
    return _native.running()


def snapshot():
    """A ``Profile`` of everything gathered so far (the profile may keep running)."""
    return Profile(_native.snapshot())


def _label_of(obj_id):
    debug = _sys.modules.get("rthread.debug")
    if debug is None:
        return None
    try:
        return debug._label_of(obj_id)
    except Exception:
        return None


def _where(site):
    return None if site is None else "%s:%d" % (site[0], site[1])


def _frame_dict(frame):
    if frame is None:
        return {"file": "?", "line": 0, "function": "?"}
    return {"file": frame[0], "line": frame[1], "function": frame[2]}


class Profile:
    """A copy of the contention profile, aggregated by lock creation site and label."""

    def __init__(self, raw):
        self.running = raw["running"]
        self.rate = raw["rate"]
        self.duration = raw["duration_ns"] / 1e9
        frames = raw["frames"]
        table = raw["stack_table"]
        rows = {}
        by_object = {}
        for lock in raw["locks"]:
            site = lock["site"]
            label = _label_of(lock["object"])
            key = (tuple(site) if site else None, label)
            row = rows.get(key)
            if row is None:
                row = rows[key] = _Row(site, label)
            row.add(lock)
            by_object[(lock["object"], site and tuple(site))] = row
        for obj, site, role, stack, count, ns in raw["stacks"]:
            row = by_object.get((obj, tuple(site) if site else None))
            if row is None:
                continue
            fr = [_frame_dict(frames.get(f)) for f in table[stack]]
            target = row.waiting if role == "waited" else row.holding
            target.append({"count": count, "seconds": ns / 1e9, "frames": fr})
        self.sites = sorted(rows.values(), key=lambda r: (-r.wait_s, -r.charged_s))
        for row in self.sites:
            row.finish()
        self.threads = sorted(
            ({"ident": ident, "name": name or None, "contended": contended,
              "wait_s": wait / 1e9, "charged_s": charged / 1e9}
             for ident, name, contended, wait, charged in raw["threads"]),
            key=lambda t: -t["wait_s"])

    def to_dict(self):
        """A JSON-ready dict (schema ``"rthread.profile/1"``, see the module docs)."""
        return {
            "schema": SCHEMA,
            "running": self.running,
            "rate": self.rate,
            "duration_s": self.duration,
            "sites": [row.to_dict() for row in self.sites],
            "threads": list(self.threads),
        }

    def table(self, limit=10, stacks=2):
        """The text table: the ``limit`` lock sites with the most total wait, each with its
        top ``stacks`` waiting and holding stacks, then the threads."""
        total = sum(r.wait_s for r in self.sites)
        count = sum(r.contended for r in self.sites)
        out = ["rthread lock contention: %s waited in %d contended acquisition(s) at %d site(s), "
               "over %.2fs profiled; stacks for %s" % (
                   _fmt_s(total), count, len(self.sites), self.duration,
                   "1 in %d events" % self.rate if self.rate else "no events (rate 0)")]
        if not self.sites:
            out.append("  (no contention recorded)")
            return "\n".join(out) + "\n"
        out.append("")
        out.append("  %-3s %9s %9s %7s %6s %6s %9s %9s  %s" % (
            "#", "wait", "max", "waits", "slept", "spun", "charged", "hold", "lock created at"))
        for i, r in enumerate(self.sites[:limit], 1):
            hold = r.hold_s / r.hold_count if r.hold_count else None
            where = _where(r.site) or "<unknown site>"
            if r.site and r.site[2]:
                where += " in %s" % r.site[2]
            if r.label:
                where += "  %r" % r.label
            out.append("  %-3d %9s %9s %7d %6d %6d %9s %9s  %s" % (
                i, _fmt_s(r.wait_s), _fmt_s(r.max_wait_s), r.contended, r.slept, r.spun,
                _fmt_s(r.charged_s), _fmt_s(hold), where))
            for title, items in (("waited", r.waiting), ("held", r.holding)):
                for s in items[:stacks]:
                    out.append("      %-7s %9s %6dx  %s" % (
                        title + ":", _fmt_s(s["seconds"]), s["count"],
                        _stack_text(s["frames"])))
        if len(self.sites) > limit:
            out.append("  ... %d more site(s)" % (len(self.sites) - limit))
        if self.threads:
            out.append("")
            out.append("  %-20s %9s %7s %9s" % ("thread", "wait", "waits", "charged"))
            for t in self.threads[:limit]:
                name = t["name"] or "%#x" % t["ident"]
                out.append("  %-20s %9s %7d %9s" % (
                    name[:20], _fmt_s(t["wait_s"]), t["contended"], _fmt_s(t["charged_s"])))
            if len(self.threads) > limit:
                out.append("  ... %d more thread(s)" % (len(self.threads) - limit))
        out.append("  (wait: total time in contended acquires; charged: waiting charged to the "
                   "releases that woke a waiter;\n   hold: mean hold after an acquire that slept; "
                   "stacks innermost first)")
        return "\n".join(out) + "\n"

    def __str__(self):
        return self.table()

    def __repr__(self):
        return "<rthread.profile.Profile: %d site(s), %s total wait>" % (
            len(self.sites), _fmt_s(sum(r.wait_s for r in self.sites)))

    # Writers ------------------------------------------------------------------------------

    def speedscope(self):
        """The profile as a speedscope document (a dict; ``json.dump`` it): two sampled
        profiles, "waited" (stacks weighted by their wait) and "held while others waited"
        (stacks weighted by the delay charged to them), in nanoseconds. Each stack ends in a
        frame naming the lock."""
        frames = []
        index = {}

        def frame_index(f):
            key = (f["function"], f["file"], f["line"])
            if key not in index:
                index[key] = len(frames)
                frames.append({"name": f["function"] or "?", "file": f["file"],
                               "line": f["line"]})
            return index[key]

        profiles = []
        for role, title in (("waiting", "waited for a lock"),
                            ("holding", "held a lock while others waited")):
            samples, weights = [], []
            for row in self.sites:
                lock_frame = {"function": "lock " + row.name(), "file": (row.site or ("?",))[0],
                              "line": row.site[1] if row.site else 0}
                for s in getattr(row, role):
                    # speedscope stacks go from the root to the leaf.
                    stack = [frame_index(f) for f in reversed(s["frames"])]
                    stack.append(frame_index(lock_frame))
                    samples.append(stack)
                    weights.append(max(0, int(round(s["seconds"] * 1e9))))
            profiles.append({"type": "sampled", "name": title, "unit": "nanoseconds",
                             "startValue": 0, "endValue": sum(weights),
                             "samples": samples, "weights": weights})
        return {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "version": "0.0.1",
            "shared": {"frames": frames},
            "profiles": profiles,
            "name": "rthread lock contention",
            "activeProfileIndex": 0,
            "exporter": "rthread.profile",
        }

    def collapsed(self):
        """Collapsed stacks (flamegraph.pl / inferno input), one line per stack:
        ``waited;outer;...;inner;lock SITE MICROSECONDS`` (root ``waited`` or ``held``)."""
        lines = []
        for row in self.sites:
            lock = _clean("lock " + row.name())
            for role, items in (("waited", row.waiting), ("held", row.holding)):
                for s in items:
                    us = int(round(s["seconds"] * 1e6))
                    if us <= 0:
                        continue
                    names = [_clean("%s (%s:%d)" % (f["function"], f["file"], f["line"]))
                             for f in reversed(s["frames"])]
                    lines.append("%s %d" % (";".join([role] + names + [lock]), us))
        return "\n".join(lines) + ("\n" if lines else "")

    def write(self, path, format=None):
        """Writes the profile to ``path``; ``format`` is ``"json"``, ``"speedscope"``,
        ``"collapsed"`` or ``"text"``, by default chosen from the name (see the module
        docs). Returns the format used."""
        fmt = format or format_for(path)
        if fmt == "json":
            text = _json.dumps(self.to_dict(), indent=1) + "\n"
        elif fmt == "speedscope":
            text = _json.dumps(self.speedscope()) + "\n"
        elif fmt == "collapsed":
            text = self.collapsed()
        elif fmt == "text":
            text = self.table(limit=50, stacks=5)
        else:
            raise ValueError("unknown profile format %r" % (fmt,))
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return fmt


def format_for(path):
    """The file format that ``Profile.write`` picks for ``path``."""
    name = _os.fspath(path).lower()
    if name.endswith(".speedscope.json") or name.endswith(".speedscope"):
        return "speedscope"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".collapsed", ".folded", ".txt")):
        return "collapsed"
    return "text"


def _clean(text):
    return text.replace(";", ":").replace("\n", " ")


def _stack_text(frames, depth=3):
    shown = ["%s (%s:%d)" % (f["function"], _os.path.basename(f["file"]), f["line"])
             for f in frames[:depth]]
    more = " < ..." if len(frames) > depth else ""
    return " < ".join(shown) + more


def _fmt_s(seconds):
    if seconds is None:
        return "-"
    if seconds >= 1:
        return "%.2fs" % seconds
    if seconds >= 1e-3:
        return "%.1fms" % (seconds * 1e3)
    if seconds >= 1e-6:
        return "%.1fus" % (seconds * 1e6)
    return "%dns" % round(seconds * 1e9)


class _Row:
    """One creation site (and label) of the table."""

    def __init__(self, site, label):
        self.site = tuple(site) if site else None
        self.label = label
        self.locks = 0
        self.contended = self.spun = self.slept = self.timeouts = 0
        self.wait_s = self.max_wait_s = 0.0
        self.histogram = None
        self.charged_s = 0.0
        self.charges = 0
        self.hold_count = 0
        self.hold_s = self.max_hold_s = 0.0
        self.waiting = []
        self.holding = []

    def add(self, lock):
        self.locks += 1
        for name in ("contended", "spun", "slept", "timeouts", "charges", "hold_count"):
            setattr(self, name, getattr(self, name) + lock[name])
        self.wait_s += lock["wait_ns"] / 1e9
        self.max_wait_s = max(self.max_wait_s, lock["max_wait_ns"] / 1e9)
        self.charged_s += lock["charged_ns"] / 1e9
        self.hold_s += lock["hold_ns"] / 1e9
        self.max_hold_s = max(self.max_hold_s, lock["max_hold_ns"] / 1e9)
        if self.histogram is None:
            self.histogram = list(lock["histogram"])
        else:
            self.histogram = [a + b for a, b in zip(self.histogram, lock["histogram"])]

    def finish(self):
        for items in (self.waiting, self.holding):
            merged = {}
            for s in items:
                key = tuple((f["file"], f["line"], f["function"]) for f in s["frames"])
                m = merged.get(key)
                if m is None:
                    merged[key] = dict(s)
                else:
                    m["count"] += s["count"]
                    m["seconds"] += s["seconds"]
            items[:] = sorted(merged.values(), key=lambda s: -s["seconds"])

    def name(self):
        text = _where(self.site) or "<unknown site>"
        if self.label:
            text += " %r" % self.label
        return text

    def to_dict(self):
        return {
            "site": _where(self.site),
            "function": self.site[2] if self.site else None,
            "label": self.label,
            "locks": self.locks,
            "contended": self.contended,
            "spun": self.spun,
            "slept": self.slept,
            "timeouts": self.timeouts,
            "wait_s": self.wait_s,
            "max_wait_s": self.max_wait_s,
            "histogram": [{"le_s": 2.0 ** (i + 1) / 1e9, "count": c}
                          for i, c in enumerate(self.histogram or []) if c],
            "charged_s": self.charged_s,
            "charges": self.charges,
            "hold_count": self.hold_count,
            "hold_s": self.hold_s,
            "max_hold_s": self.max_hold_s,
            "waiting_stacks": self.waiting,
            "holding_stacks": self.holding,
        }


# Whole-run profiles (python -m rthread --profile-locks, RTHREAD_PROFILE) -------------------

_run_target = None


def _write_at_exit():
    path = _run_target
    if path is None:
        return
    try:
        stop()
        snap = snapshot()
        if _sys.stderr is not None:
            _sys.stderr.write(snap.table(limit=5, stacks=1))
            _sys.stderr.flush()
        fmt = snap.write(path)
        if _sys.stderr is not None:
            _sys.stderr.write("rthread: lock contention profile (%s) written to %s\n"
                              % (fmt, path))
    except Exception as exc:  # a profile must never make a working program fail
        if _sys.stderr is not None:
            _sys.stderr.write("rthread: could not write the lock profile to %s: %s: %s\n"
                              % (path, type(exc).__name__, exc))


def profile_run(path, rate=DEFAULT_RATE):
    """Profiles the rest of the process: starts now, writes ``path`` at exit (``atexit``,
    after the non-daemon threads have been joined) and prints the top of the table on
    stderr."""
    global _run_target
    import atexit

    start(rate)
    if _run_target is None:
        atexit.register(_write_at_exit)
        if hasattr(_os, "register_at_fork"):
            # A forked child that exits normally writes its own file, not over the parent's.
            _os.register_at_fork(after_in_child=_after_fork_in_child)
    _run_target = _os.fspath(path)


def _after_fork_in_child():
    global _run_target
    if _run_target is not None:
        _run_target = _child_path(_run_target, _os.getpid())


def _child_path(path, pid):
    """``FILE`` for the process that set the profile up, ``FILE`` with ``.PID`` before
    its extension in its children."""
    lower = path.lower()
    for ext in (".speedscope.json", ".json", ".collapsed", ".folded", ".txt"):
        if lower.endswith(ext):
            return "%s.%d%s" % (path[:-len(ext)], pid, path[-len(ext):])
    return "%s.%d" % (path, pid)


def _from_environment(environ, stderr):
    """At start-up (RTHREAD=1, rthread active): ``RTHREAD_PROFILE=FILE`` and
    ``RTHREAD_PROFILE_RATE=N``. Never raises."""
    path = environ.get("RTHREAD_PROFILE")
    if not path:
        return
    try:
        rate = DEFAULT_RATE
        raw = environ.get("RTHREAD_PROFILE_RATE")
        if raw:
            try:
                rate = int(raw)
                if rate < 0:
                    raise ValueError
            except ValueError:
                if stderr is not None:
                    stderr.write("rthread: RTHREAD_PROFILE_RATE=%s ignored: not a "
                                 "non-negative integer\n" % raw)
                rate = DEFAULT_RATE
        owner = environ.get("RTHREAD_PROFILE_PID")
        pid = _os.getpid()
        if owner and owner != str(pid):
            path = _child_path(path, pid)
        else:
            _os.environ["RTHREAD_PROFILE_PID"] = str(pid)
        profile_run(path, rate)
    except Exception as exc:  # start-up must never fail because of rthread
        if stderr is not None:
            stderr.write("rthread: RTHREAD_PROFILE ignored: %s: %s\n" % (type(exc).__name__, exc))
