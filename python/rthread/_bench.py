"""``python -m rthread bench``: rthread next to the interpreter's built-in ``_thread``.

Usage::

    python -m rthread bench                  full run (about a minute; longer on a busy machine)
    python -m rthread bench --quick          short run (well under a minute)
    python -m rthread bench --only handoff   only the cases whose name contains "handoff"
    python -m rthread bench --chart c.png    also draw the ratios (needs the ``bench`` extra)
    python -m rthread bench --nodiag DIR     also the rows against a build with the bookkeeping
                                             compiled out (scripts/nodiag.sh X.Y PYTHON makes
                                             one in target/nodiag/X.Y)
    python -m rthread bench --merge a.json b.json --chart c.png
                                             no run: table and chart of saved results, one
                                             column or bar per interpreter

Every row is one case, measured on the built-in ``_thread`` and on rthread, with the ratio
rthread / built-in of the medians (lower is better: below 1.0 rthread is ahead). Results go to a
JSON file, by default ``bench-results/bench-X.Y.json`` (``bench-X.Y-quick.json`` for ``--quick``).

How it measures:

- In-process cases (lock, RLock, ``_local``, handoff, contention, start+join, timed-acquire
  overshoot) run both modules in the same process, alternating built-in / rthread sample by
  sample, so drift in the machine's load hits both sides alike. Each module gets its own copy of
  the benchmark function (its own code object), so the interpreter's inline caches never see
  both types. The loop bodies are unrolled ten times so the ``for`` loop costs little next to the
  operation. The garbage collector is off while timing. The "spread" column is the interquartile
  range of the per-pair ratios: when it straddles 1.0 the run could not tell the two apart.
- Bookkeeping rows ("bookkeeping / compiled out"): rthread against a build of the same code with
  the who-holds-what bookkeeping compiled out (``--nodiag DIR``), whose extension is loaded as a
  second copy in the same process and measured alternately like the rows above; n/a without
  ``--nodiag``; the "diagnostic mode / compiled out" rows run rthread in diagnostic mode
  against the same build. In those rows, and in the other "A / B" rows (diagnostic mode, lock-order
  checking, profile), the "built-in" column is B and the "rthread" column A: the ratio is A's
  cost.
- Memory per lock and per RLock: one child process per module, which fills a preallocated list
  with a million objects and divides the growth of its resident set by the count.
- Standard-library workloads (queue, Event, Condition, ThreadPoolExecutor): activation is per
  process, so they run in child processes, alternately plain and with ``rthread.install()``
  called before ``threading`` is imported.

This file imports neither ``threading`` nor ``rthread`` at module level: the child processes load
it by path and must decide about ``rthread.install()`` before anything imports ``threading``.
"""

import functools
import gc
import itertools
import json
import math
import os
import sys
import time

# One sample of every case on each module is one "repeat". Sample times are in milliseconds.
QUICK = {"mode": "quick", "repeats": 11, "min_time_ms": 20.0}
FULL = {"mode": "full", "repeats": 25, "min_time_ms": 40.0}

#: Statements of an in-process case's loop body are repeated this many times per iteration.
UNROLL = 10

#: Longest any single wait inside the harness may take before it is reported as a hang.
HANG_SECONDS = 60.0

#: Timeout used by the timed-acquire accuracy case, in seconds.
OVERSHOOT_TIMEOUT = 0.01

#: How long importing threading on rthread and joining one thread may take before the
#: standard-library rows are reported as n/a.
PROBE_SECONDS = 10.0

#: Objects created by each memory child.
MEMORY_OBJECTS = 1_000_000

#: Reason given when a case needs something rthread does not have yet.
NOT_IN_BUILD = "n/a: not in this build"


# --------------------------------------------------------------------------------------------
# Small statistics helpers (no ``statistics`` import: keep the child processes' imports minimal)


def _percentile(values, q):
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _median(values):
    return _percentile(values, 50)


# --------------------------------------------------------------------------------------------
# The two modules


def _wait(lock, what):
    """Acquires ``lock`` with the harness's hang timeout; raises if it never comes."""
    if not lock.acquire(timeout=HANG_SECONDS):
        raise RuntimeError("%s did not happen within %d s (deadlock?)" % (what, HANG_SECONDS))


def _settle(mod, baseline):
    """Waits (briefly) until the threads a sample started have finished exiting."""
    count = getattr(mod, "_count", None)
    if count is None:
        return
    deadline = time.monotonic() + 1.0
    while count() > baseline and time.monotonic() < deadline:
        time.sleep(0.0001)


# --------------------------------------------------------------------------------------------
# In-process cases. Each case builds a ``run(n) -> elapsed ns`` function for one module.

# (name, label, unit, setup lines, body lines, teardown lines, needs)
_LOOP_CASES = [
    ("lock_acquire_release", "lock acquire()+release()", "ns/op",
     ["lock = mod.allocate_lock()"], ["lock.acquire()", "lock.release()"], [], None),
    ("lock_with", "lock: with lock: pass", "ns/op",
     ["lock = mod.allocate_lock()"], ["with lock:", "    pass"], [], None),
    ("lock_allocate", "allocate_lock() (with its creation site)", "ns/op",
     ["alloc = mod.allocate_lock"], ["alloc()"], [], None),
    ("rlock_allocate", "RLock() (with its creation site)", "ns/op",
     ["new = mod.RLock"], ["new()"], [], None),
    ("lock_try_held", "lock acquire(False) on a held lock", "ns/op",
     ["lock = mod.allocate_lock()", "lock.acquire()"], ["lock.acquire(False)"],
     ["lock.release()"], None),
    ("lock_acquire_timeout", "lock acquire(timeout=1.0)+release()", "ns/op",
     ["lock = mod.allocate_lock()"], ["lock.acquire(timeout=1.0)", "lock.release()"], [], None),
    ("lock_locked", "lock locked()", "ns/op",
     ["lock = mod.allocate_lock()"], ["lock.locked()"], [], None),
    ("lock_create", "create a lock (allocate_lock())", "ns/op",
     ["allocate_lock = mod.allocate_lock"], ["allocate_lock()"], [], None),
    ("rlock_acquire_release", "RLock acquire()+release()", "ns/op",
     ["rlock = mod.RLock()"], ["rlock.acquire()", "rlock.release()"], [], None),
    ("rlock_depth3", "RLock recursive, depth 3 (3 acquires+3 releases)", "ns/op",
     ["rlock = mod.RLock()"],
     ["rlock.acquire()", "rlock.acquire()", "rlock.acquire()",
      "rlock.release()", "rlock.release()", "rlock.release()"], [], None),
    ("local_get", "_local attribute get", "ns/op",
     ["loc = mod._local()", "loc.x = 1"], ["loc.x"], [], "_local"),
    ("local_set", "_local attribute set", "ns/op",
     ["loc = mod._local()"], ["loc.x = 1"], [], "_local"),
]

_LOOP_TEMPLATE = """\
def run(n):
    {setup}
    it = _repeat(None, n)
    t0 = _timer()
    for _ in it:
        {body}
    t1 = _timer()
    {teardown}
    return t1 - t0
"""


def _loop_maker(setup, body, teardown):
    """``make(mod)`` for a loop case: a fresh ``run(n)`` per module."""
    return lambda mod: _loop_runner(mod, setup, body, teardown)


def _loop_runner(mod, setup, body, teardown):
    """Compiles a fresh ``run(n)`` for ``mod``, the loop body unrolled ``UNROLL`` times."""
    source = _LOOP_TEMPLATE.format(
        setup="\n    ".join(setup) or "pass",
        body="\n        ".join(body * UNROLL),
        teardown="\n    ".join(teardown) or "pass",
    )
    namespace = {"mod": mod, "_timer": time.perf_counter_ns, "_repeat": itertools.repeat}
    exec(compile(source, "<rthread bench>", "exec"), namespace)
    return namespace["run"]


def _handoff_runner(mod):
    """Two threads passing control back and forth through two locks; ``n`` round trips."""

    def run(n):
        alloc = mod.allocate_lock
        ping, pong, ready, done = alloc(), alloc(), alloc(), alloc()
        for lock in (ping, pong, ready, done):
            lock.acquire()

        def partner():
            ready.release()
            for _ in range(n):
                ping.acquire()
                pong.release()
            done.release()

        baseline = mod._count() if hasattr(mod, "_count") else 0
        mod.start_new_thread(partner, ())
        _wait(ready, "handoff partner start")
        t0 = time.perf_counter_ns()
        for _ in range(n):
            ping.release()
            pong.acquire()
        t1 = time.perf_counter_ns()
        _wait(done, "handoff partner end")
        _settle(mod, baseline)
        return t1 - t0

    return run


def _contention_runner(mod, nthreads):
    """``nthreads`` threads incrementing one counter under one lock; ``n`` increments each."""

    def run(n):
        alloc = mod.allocate_lock
        lock, gate = alloc(), alloc()
        gate.acquire()
        counter = [0]
        ready = [alloc() for _ in range(nthreads)]
        done = [alloc() for _ in range(nthreads)]

        def worker(ready, done):
            ready.release()
            gate.acquire()
            gate.release()
            for _ in range(n):
                with lock:
                    counter[0] += 1
            done.release()

        baseline = mod._count() if hasattr(mod, "_count") else 0
        for r, d in zip(ready, done):
            r.acquire()
            d.acquire()
            mod.start_new_thread(worker, (r, d))
        for r in ready:
            _wait(r, "contention worker start")
        t0 = time.perf_counter_ns()
        gate.release()
        for d in done:
            _wait(d, "contention worker end")
        t1 = time.perf_counter_ns()
        if counter[0] != n * nthreads:
            raise AssertionError("lost increments: %d != %d" % (counter[0], n * nthreads))
        _settle(mod, baseline)
        return t1 - t0

    return run


def _start_join_runner(mod):
    """Starts a thread with ``start_new_thread`` and joins it through a lock, ``n`` times."""

    def body(lock):
        lock.release()

    def run(n):
        alloc = mod.allocate_lock
        start = mod.start_new_thread
        baseline = mod._count() if hasattr(mod, "_count") else 0
        t0 = time.perf_counter_ns()
        for _ in range(n):
            lock = alloc()
            lock.acquire()
            start(body, (lock,))
            lock.acquire()
        t1 = time.perf_counter_ns()
        _settle(mod, baseline)
        return t1 - t0

    return run


# (name, label, unit, make(mod) -> run(n), operations per unit of n, ns per reported unit)
_THREAD_CASES = [
    ("handoff", "handoff: 2 threads, 2 locks (per round trip)", "µs/round trip",
     _handoff_runner, 1, 1000.0),
    ("contention_2", "contention: 2 threads, counter under 1 lock", "ns/increment",
     lambda mod: _contention_runner(mod, 2), 2, 1.0),
    ("contention_4", "contention: 4 threads, counter under 1 lock", "ns/increment",
     lambda mod: _contention_runner(mod, 4), 4, 1.0),
    ("start_join", "start_new_thread + join via a lock", "µs/thread",
     _start_join_runner, 1, 1000.0),
]


def _calibrate(run, min_ns):
    """An ``n`` for which ``run(n)`` takes about ``min_ns`` on a quiet machine.

    Grows ``n`` until a run takes a sixteenth of the target, then scales from the fastest of
    three runs at that size, so that one run slowed down by other processes (a compile, a
    throttled CPU quota) does not leave every sample of the case far too short.
    """
    n = 1
    while run(n) < min_ns / 16:
        n *= 4
    fastest = min(run(n) for _ in range(3))
    return max(1, int(n * min_ns / max(fastest, 1)))


def _side_ok(samples):
    return {"status": "ok", "median": _median(samples), "min": min(samples), "samples": samples}


def _side_na(reason):
    return {"status": "n/a", "reason": reason if reason.startswith("n/a") else "n/a: " + reason}


def _side_error(exc):
    return {"status": "error", "reason": "%s: %s" % (type(exc).__name__, exc)}


def _alternate(runners, n, repeats, per, budget_s):
    """Runs ``runners`` (built-in first, then rthread if present) alternately ``repeats`` times.

    Returns one sample list per runner, each sample ``run(n) / per``. A runner that raises stops
    being run; its list is replaced by the exception. On a machine so busy that the samples take
    far longer than planned, stops after ``budget_s`` seconds once each side has 5 samples.
    """
    results = [[] for _ in runners]
    deadline = time.monotonic() + budget_s
    for repeat in range(repeats):
        if repeat >= 5 and time.monotonic() > deadline:
            break
        for k, run in enumerate(runners):
            if isinstance(results[k], BaseException):
                continue
            try:
                results[k].append(run(n) / per)
            except Exception as exc:  # reported in the row, the other module still runs
                results[k] = exc
    return results


def _compare(name, label, unit, make, mods, repeats, min_ns, per_n, scale, na_reason=None):
    """Measures one in-process case on both modules; returns its row in a list.

    ``make(mod)`` gives ``run(n) -> elapsed ns``; a sample is ``run(n) / (per_n * n * scale)``.
    """
    builtin, rthread = mods
    row = {"name": name, "label": label, "unit": unit, "where": "in-process"}
    runners = []
    try:
        runners.append(make(builtin))
        n = _calibrate(runners[0], min_ns)
    except Exception as exc:
        row["builtin"] = _side_error(exc)
        row["rthread"] = _side_na("built-in failed")
        return [row]
    if na_reason is None:
        try:
            run_r = make(rthread)
            run_r(n)  # warm-up (and first-use allocations) outside the samples
            runners.append(run_r)
        except Exception as exc:
            row["rthread"] = _side_error(exc)
    else:
        row["rthread"] = _side_na(na_reason)
    # Planned: 2 * repeats samples of min_ns each; allow four times that.
    budget_s = 4 * 2 * repeats * min_ns / 1e9
    results = _alternate(runners, n, repeats, per_n * n * scale, budget_s)
    for key, res in zip(("builtin", "rthread"), results):
        row[key] = _side_error(res) if isinstance(res, BaseException) else _side_ok(res)
    row["n"] = n
    return [row]


#: Bookkeeping rows: rthread in diagnostic mode (``rthread.debug.enable()``: acquire sites and
#: times recorded) against rthread in normal mode, in the same process. In these rows the
#: "built-in" column is rthread in normal mode and the "rthread" column rthread in diagnostic
#: mode, so the ratio is the diagnostic mode's cost.
_DIAG_CASES = [
    ("diag_lock_acquire_release", "diagnostic mode / normal: lock acquire()+release()",
     ["lock = mod.allocate_lock()"], ["lock.acquire()", "lock.release()"]),
    ("diag_lock_with", "diagnostic mode / normal: with lock: pass",
     ["lock = mod.allocate_lock()"], ["with lock:", "    pass"]),
]


#: Lock-order checking rows: rthread with ``rthread.debug.lockdep("record")`` against rthread
#: with it off, in the same process (same column convention as the diagnostic rows).
_LOCKDEP_CASES = [
    ("lockdep_lock_acquire_release", "lockdep on / off: lock acquire()+release()",
     ["lock = mod.allocate_lock()"], ["lock.acquire()", "lock.release()"]),
    ("lockdep_nested_with", "lockdep on / off: with a: with b: pass (an order, checked once)",
     ["a = mod.allocate_lock()", "b = mod.RLock()"], ["with a:", "    with b:", "        pass"]),
]


def _diagnostic_toggle(debug):
    """(was, on, off) for diagnostic mode."""
    return debug.enabled(), debug.enable, debug.disable


def _lockdep_toggle(debug):
    """(was, on, off) for lock-order checking (in "record" mode: no warnings)."""
    was = debug.lockdep_mode()
    return was != "off", lambda: debug.lockdep("record"), lambda: debug.lockdep("off")


def _diag_rows(rthread, name, label, setup, body, repeats, min_ns, toggle=_diagnostic_toggle,
               note="built-in column: rthread, normal mode; rthread column: diagnostic mode"):
    """One bookkeeping row: rthread normal vs rthread in diagnostic mode (or with another
    ``toggle``: lock-order checking), alternating."""
    row = {"name": name, "label": label, "unit": "ns/op", "where": "in-process", "note": note}
    try:
        import rthread.debug as debug

        was, turn_on, turn_off = toggle(debug)
    except Exception as exc:  # an rthread build without the debug module
        row["builtin"] = _side_na("n/a: no rthread.debug: %s" % exc)
        row["rthread"] = _side_na("n/a: not in this build")
        return [row]
    normal = _loop_runner(rthread, setup, body, [])
    diag_run = _loop_runner(rthread, setup, body, [])

    def diagnostic(n):
        turn_on()
        try:
            return diag_run(n)
        finally:
            turn_off()

    try:
        turn_off()
        n = _calibrate(normal, min_ns)
        diagnostic(n)
        budget_s = 4 * 2 * repeats * min_ns / 1e9
        results = _alternate([normal, diagnostic], n, repeats, UNROLL * n, budget_s)
    finally:
        (turn_on if was else turn_off)()
    for key, res in zip(("builtin", "rthread"), results):
        row[key] = _side_error(res) if isinstance(res, BaseException) else _side_ok(res)
    row["n"] = n
    return [row]


#: Bookkeeping rows: rthread against the same code built with the who-holds-what bookkeeping
#: (holders, creation sites, waits) compiled out, the binding's ``no-diag`` cargo feature
#: (``scripts/nodiag.sh VERSION PYTHON`` builds one into ``target/nodiag/VERSION``), named with
#: ``--nodiag DIR``. Both run in this process, alternating: the no-diag build's extension is
#: loaded as a second, separate copy (``load_nodiag``) whose locks alone the "built-in" side
#: uses. In these rows the "built-in" column is the no-diag build and the "rthread" column
#: rthread in normal mode, so the ratio is the bookkeeping's cost. Without ``--nodiag`` they are
#: n/a, with the reason saying how to get them.
_NODIAG_CASES = [
    ("bookkeeping_lock_acquire_release", "bookkeeping / compiled out: lock acquire()+release()",
     ["lock = mod.allocate_lock()"], ["lock.acquire()", "lock.release()"]),
    ("bookkeeping_lock_with", "bookkeeping / compiled out: with lock: pass",
     ["lock = mod.allocate_lock()"], ["with lock:", "    pass"]),
    ("bookkeeping_lock_allocate", "bookkeeping / compiled out: allocate_lock()",
     ["alloc = mod.allocate_lock"], ["alloc()"]),
    ("bookkeeping_rlock_acquire_release", "bookkeeping / compiled out: RLock acquire()+release()",
     ["rlock = mod.RLock()"], ["rlock.acquire()", "rlock.release()"]),
    ("bookkeeping_rlock_allocate", "bookkeeping / compiled out: RLock()",
     ["new = mod.RLock"], ["new()"]),
]

#: The same against rthread in diagnostic mode (the issue's 30 % budget): the "rthread" column
#: is rthread with ``rthread.debug.enable()`` on, the "built-in" column the no-diag build.
_NODIAG_DIAG_CASES = [
    ("bookkeeping_diag_lock_acquire_release",
     "diagnostic mode / compiled out: lock acquire()+release()",
     ["lock = mod.allocate_lock()"], ["lock.acquire()", "lock.release()"]),
    ("bookkeeping_diag_lock_with", "diagnostic mode / compiled out: with lock: pass",
     ["lock = mod.allocate_lock()"], ["with lock:", "    pass"]),
    ("bookkeeping_diag_rlock_acquire_release",
     "diagnostic mode / compiled out: RLock acquire()+release()",
     ["rlock = mod.RLock()"], ["rlock.acquire()", "rlock.release()"]),
]

#: Import name of the no-diag copy. CPython's extension loader derives the init function from
#: the last component (``PyInit__rthread``); the made-up package keeps the copy apart from
#: ``rthread._rthread`` (it is never put in ``sys.modules``).
NODIAG_MODULE = "_rthread_nodiag_baseline._rthread"

#: What ``scripts/nodiag.sh`` writes next to the build it installs.
NODIAG_STAMP = "NODIAG-BUILD.txt"

#: Copies loaded so far, by real path of their extension: ``(module, info)``.
_NODIAG_LOADED = {}


class NodiagError(Exception):
    """``--nodiag`` names no usable no-diag build of rthread for this interpreter."""


def _nodiag_hint():
    version = "%d.%d" % sys.version_info[:2]
    return ("build one with scripts/nodiag.sh %s PYTHON (in rthread's source tree), then pass "
            "--nodiag target/nodiag/%s" % (version, version))


def _nodiag_extension(path):
    """The ``_rthread`` extension of this interpreter in ``path`` (an install made with
    ``pip install --target``, its ``rthread`` package directory, or the file itself)."""
    import importlib.machinery

    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    this = "CPython %d.%d (extension suffix %s)" % (sys.version_info[:2] + (suffixes[0],))
    if os.path.isfile(path):
        base = os.path.basename(path)
        if base.startswith("_rthread.") and any(base == "_rthread" + s for s in suffixes):
            return path
        raise NodiagError("%s is not rthread's extension for %s" % (path, this))
    if not os.path.isdir(path):
        raise NodiagError("%s: no such directory; %s" % (path, _nodiag_hint()))
    others = []
    for where in (os.path.join(path, "rthread"), path):
        for suffix in suffixes:
            candidate = os.path.join(where, "_rthread" + suffix)
            if os.path.isfile(candidate):
                return candidate
        if os.path.isdir(where):
            others += [os.path.join(where, f) for f in sorted(os.listdir(where))
                       if f.startswith("_rthread.") and f.endswith((".so", ".pyd"))]
    if others:
        raise NodiagError("%s holds a build for another interpreter (%s), not for %s; %s"
                          % (path, ", ".join(os.path.basename(f) for f in others), this,
                             _nodiag_hint()))
    raise NodiagError("no rthread extension in %s or %s; %s"
                      % (path, os.path.join(path, "rthread"), _nodiag_hint()))


def _restore_modules(before):
    """Puts back the ``sys.modules`` entries a module initialization replaced or added under
    rthread's names; returns what it had put there."""
    replaced = {}
    for name, module in list(sys.modules.items()):
        if name in before:
            if before[name] is not module:
                replaced[name] = module
                sys.modules[name] = before[name]
        elif name == "rthread" or name.startswith(("rthread.", NODIAG_MODULE.split(".")[0])):
            replaced[name] = module
            del sys.modules[name]
    for name, module in before.items():
        if name not in sys.modules:
            sys.modules[name] = module
    return replaced


def _records_holders(module, debug):
    """Whether ``module``'s plain locks record their holder (a build with the bookkeeping
    compiled out records none): a lock held by this thread, asked through ``debug.lock_info``
    of the same copy."""
    lock = module.allocate_lock()
    with lock:
        info = debug.lock_info(lock)
    if not isinstance(info, tuple) or len(info) < 3:
        raise NodiagError("cannot tell whether the bookkeeping is compiled out: lock_info() "
                          "returned %r" % (info,))
    return info[2] is not None


def load_nodiag(path, require_compiled_out=True):
    """Loads the ``_rthread`` extension of the no-diag build in ``path`` as a second copy, next
    to the imported rthread; returns ``(module, info)``. Raises ``NodiagError`` when ``path``
    holds no such build for this interpreter.

    The copy is another shared library, with its own statics, types and registries; the bench
    uses only its ``allocate_lock`` and ``RLock``. Its initialization does what rthread's does
    on import, for the copy: it registers the main thread in its own registry, adds fork
    handlers (``pthread_atfork``, ``os.register_at_fork``) that touch only its own state, and
    puts its ``rthread._rthread_debug`` and ``rthread._rthread_profile`` in ``sys.modules``:
    those entries are put back to the real rthread's right after (the copy's are kept in
    ``info["modules"]``), so ``rthread.debug`` and ``rthread.profile`` keep working on the real
    rthread's locks. (The copy's ``_local`` would share the per-thread key of the real one's
    registry: it is never used.) The same library file as the imported rthread's is refused:
    the loader would hand back the same library, not a copy.

    ``require_compiled_out=False`` accepts a build that records holders (the tests load a second
    copy of the normal build to check the mechanism).
    """
    import importlib.util

    import rthread._rthread as real  # first: its sys.modules entries are the ones to keep

    so = os.path.realpath(_nodiag_extension(os.fspath(path)))
    real_file = getattr(real, "__file__", None)
    if real_file and os.path.exists(real_file) and os.path.samefile(so, real_file):
        raise NodiagError("%s is the imported rthread's own extension, not a no-diag build; %s"
                          % (so, _nodiag_hint()))
    if so not in _NODIAG_LOADED:
        before = dict(sys.modules)
        try:
            spec = importlib.util.spec_from_file_location(NODIAG_MODULE, so)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except Exception as exc:
            raise NodiagError("%s does not load: %s: %s" % (so, type(exc).__name__, exc))
        finally:
            replaced = _restore_modules(before)
        if type(module.allocate_lock()) is type(real.allocate_lock()):
            raise NodiagError("%s loaded as the imported rthread itself, not as a second copy"
                              % so)
        debug = replaced.get("rthread._rthread_debug")
        if debug is None or not hasattr(debug, "lock_info"):
            raise NodiagError("%s has no rthread._rthread_debug.lock_info: cannot tell whether "
                              "its bookkeeping is compiled out" % so)
        stamp = os.path.join(os.path.dirname(os.path.dirname(so)), NODIAG_STAMP)
        build = None
        if os.path.isfile(stamp):
            with open(stamp, encoding="utf-8") as f:
                build = f.read().strip()
        info = {"dir": os.path.abspath(os.fspath(path)), "extension": so,
                "records_holders": _records_holders(module, debug), "build": build,
                "modules": replaced}
        _NODIAG_LOADED[so] = (module, info)
    module, info = _NODIAG_LOADED[so]
    if require_compiled_out and info["records_holders"]:
        raise NodiagError("%s records lock holders: it is a normal build, not one with the "
                          "bookkeeping compiled out (cargo feature no-diag); %s"
                          % (so, _nodiag_hint()))
    return module, info


def _nodiag_rows(rthread, baseline, name, label, setup, body, repeats, min_ns, diag=False):
    """One bookkeeping row: the no-diag copy (``baseline``, from ``load_nodiag``, or None)
    against rthread in normal mode (``diag``: in diagnostic mode), alternating."""
    if baseline is None:
        row = {"name": name, "label": label, "unit": "ns/op", "where": "in-process"}
        version = "%d.%d" % sys.version_info[:2]
        row["builtin"] = _side_na("n/a: needs --nodiag DIR (scripts/nodiag.sh %s PYTHON builds "
                                  "one into target/nodiag/%s)" % (version, version))
        row["rthread"] = _side_na("n/a: no baseline")
        return [row]
    module, info = baseline
    # Normal (or diagnostic) mode, no lock-order checking while measuring (put back after).
    if diag:
        import rthread.debug  # noqa: F401 (for sys.modules below)
    debug = sys.modules.get("rthread.debug")
    state = None
    if debug is not None:
        state = (debug.enabled(), debug.lockdep_mode())
        if diag:
            debug.enable()
        else:
            debug.disable()
        if state[1] != "off":
            debug.lockdep("off")
    try:
        mode = "diagnostic" if debug is not None and debug.enabled() else "normal"
        rows = _compare(name, label, "ns/op", _loop_maker(setup, body, []), (module, rthread),
                        repeats, min_ns, UNROLL, 1.0)
    finally:
        if state is not None:
            if state[0] != debug.enabled():
                (debug.enable if state[0] else debug.disable)()
            if state[1] != "off":
                debug.lockdep(state[1])
    for row in rows:
        row["note"] = _NODIAG_DIAG_NOTE if diag else _NODIAG_NOTE
        row["mode"] = mode
    return rows


_NODIAG_DIAG_NOTE = ("built-in column: rthread with the bookkeeping compiled out (the --nodiag "
                     "build); rthread column: rthread, diagnostic mode")
_NODIAG_NOTE = ("built-in column: rthread with the bookkeeping compiled out (the --nodiag build); "
                "rthread column: rthread, normal mode")


#: Profile rows: rthread with the lock contention profile on (``rthread.profile.start()``,
#: default sampling rate) against the profile off, in the same process (loops, contention) or
#: in pairs of child processes on rthread (standard-library workloads). In these rows the
#: "built-in" column is rthread with the profile off and the "rthread" column with it on, so
#: the ratio is the profile's cost.
_PROFILE_CASES = [
    ("prof_lock_acquire_release", "profile on / off: lock acquire()+release()",
     ["lock = mod.allocate_lock()"], ["lock.acquire()", "lock.release()"]),
    ("prof_rlock_acquire_release", "profile on / off: RLock acquire()+release()",
     ["lock = mod.RLock()"], ["lock.acquire()", "lock.release()"]),
]
_PROFILE_THREAD_CASES = [
    ("prof_contention_4", "profile on / off: contention, 4 threads, 1 lock", "ns/increment",
     lambda mod: _contention_runner(mod, 4), 4, 1.0),
    ("prof_handoff", "profile on / off: handoff, 2 threads, 2 locks", "µs/round trip",
     _handoff_runner, 1, 1000.0),
]
_PROFILE_NOTE = "built-in column: rthread, profile off; rthread column: profile on"


def _profile_switch():
    """``(on, off, restore)`` for rthread.profile, or None when this build has none."""
    try:
        import rthread.profile as profile
    except Exception:
        return None
    was = profile.running()

    def on():
        profile.start()

    def off():
        profile.stop()

    def restore():
        profile.stop()
        profile.reset()
        if was:
            profile.start()

    return on, off, restore


def _profile_rows(rthread, name, label, unit, make, repeats, min_ns, per_n, scale):
    """One profile row: ``make(rthread)`` run with the profile off and on, alternating."""
    row = {"name": name, "label": label, "unit": unit, "where": "in-process",
           "note": _PROFILE_NOTE}
    switch = _profile_switch()
    if switch is None:
        row["builtin"] = _side_na("n/a: no rthread.profile in this build")
        row["rthread"] = _side_na("n/a: no rthread.profile in this build")
        return [row]
    on, off, restore = switch
    plain = make(rthread)
    profiled_run = make(rthread)

    def profiled(n):
        on()
        try:
            return profiled_run(n)
        finally:
            off()

    try:
        off()
        n = _calibrate(plain, min_ns)
        profiled(n)
        budget_s = 4 * 2 * repeats * min_ns / 1e9
        results = _alternate([plain, profiled], n, repeats, per_n * n * scale, budget_s)
    finally:
        restore()
    for key, res in zip(("builtin", "rthread"), results):
        row[key] = _side_error(res) if isinstance(res, BaseException) else _side_ok(res)
    row["n"] = n
    return [row]


def _profile_stdlib_rows(names, rounds, samples, scale, timeout, budget_s):
    """The standard-library workloads on rthread, profile off then on, in pairs of children."""
    collected = {"builtin": {n: [] for n in names}, "rthread": {n: [] for n in names}}
    failure = {"builtin": None, "rthread": None}
    deadline = time.monotonic() + budget_s
    for round_ in range(rounds):
        if round_ and time.monotonic() > deadline:
            break
        for which in ("builtin", "rthread"):
            if failure[which] is not None:
                continue
            task = "stdlib" if which == "builtin" else "stdlib_profile"
            out = _run_child([task, scale, samples, ",".join(names)], timeout, activate=True)
            if out.get("status") != "ok":
                failure[which] = out
                continue
            for name, values in out["results"].items():
                if isinstance(collected[which][name], list):
                    if isinstance(values, list):
                        collected[which][name].extend(values)
                    else:
                        collected[which][name] = {"status": "error", "reason": values}
    rows = []
    for name, label, unit, _func, _n in _STDLIB_CASES:
        if name not in names:
            continue
        row = {"name": "prof_" + name, "label": "profile on / off: " + label, "unit": unit,
               "where": "child processes (rthread active)", "note": _PROFILE_NOTE}
        for which in ("builtin", "rthread"):
            values = collected[which][name]
            if failure[which] is not None:
                row[which] = failure[which]
            elif isinstance(values, list):
                row[which] = _side_ok(values)
            else:
                row[which] = values
        rows.append(row)
    return rows


def _overshoot_rows(mods, count):
    """Overshoot of ``acquire(timeout=0.01)`` on a held lock, alternating modules per sample.

    Two rows, the median and the 90th percentile of the overshoots (in the row's "median"
    fields, with "statistic" saying which).
    """
    locks = []
    for mod in mods:
        lock = mod.allocate_lock()
        lock.acquire()
        locks.append(lock)
    samples = [[], []]
    clock = time.perf_counter
    for _ in range(count):
        for k, lock in enumerate(locks):
            if isinstance(samples[k], BaseException):
                continue
            try:
                t0 = clock()
                got = lock.acquire(timeout=OVERSHOOT_TIMEOUT)
                t1 = clock()
                if got:
                    raise AssertionError("acquire(timeout=...) took a held lock")
            except Exception as exc:
                samples[k] = exc
                continue
            samples[k].append((t1 - t0 - OVERSHOOT_TIMEOUT) * 1e6)
    rows = []
    for q, tag in ((50, "median"), (90, "p90")):
        row = {
            "name": "timed_overshoot_" + tag,
            "label": "acquire(timeout=0.01) on a held lock: overshoot, %s" % tag,
            "unit": "µs",
            "where": "in-process",
            "statistic": tag,
            "n": count,
        }
        for key, values in zip(("builtin", "rthread"), samples):
            if isinstance(values, BaseException):
                row[key] = _side_error(values)
            else:
                row[key] = {"status": "ok", "median": _percentile(values, q), "samples": values}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Child processes: memory, and the standard library on top of rthread

# The child's first statements: with "activate", rthread.install() runs before anything else
# is imported (even importlib.util imports functools, which binds _thread); what went wrong is
# handed to ``_child``, which reports it as an n/a reason.
_CHILD_BOOT = """\
import sys
activation = None
if sys.argv[1] == "activate":
    try:
        import rthread
        rthread.install()
    except Exception as exc:
        activation = exc
import importlib.util
spec = importlib.util.spec_from_file_location("_rthread_bench_child", sys.argv[2])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
sys.exit(mod._child(sys.argv[3:], sys.argv[1] == "activate", activation))
"""


def _run_child(args, timeout, activate=False):
    """Runs this file as a child process with ``args``; returns its JSON answer."""
    import subprocess

    cmd = [sys.executable, "-c", _CHILD_BOOT, "activate" if activate else "plain",
           os.path.abspath(__file__)] + [str(a) for a in args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": "child timed out after %d s (deadlock?)" % timeout}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": "child exited %d: %s" % (proc.returncode, tail)}
    return json.loads(lines[-1])


def _rss_bytes():
    """This process's resident set size, in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource  # peak RSS; the memory child only grows, so peak == current

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_memory(which, kind, count):
    """Bytes of resident memory per lock or RLock object, over ``count`` objects."""
    if which == "rthread":
        import rthread as mod
    else:
        mod = sys.modules["_frozen_importlib"]._thread  # the built-in, without importing rthread
    factory = mod.allocate_lock if kind == "lock" else mod.RLock
    gc.disable()
    objects = [None] * count  # the list itself is in the baseline
    objects[0] = factory()  # the type's first-use allocations are in the baseline too
    before = _rss_bytes()
    for i in range(count):
        objects[i] = factory()
    after = _rss_bytes()
    return {
        "status": "ok",
        "bytes_per_object": (after - before) / count,
        "getsizeof": sys.getsizeof(objects[0]),
    }


def _wl_queue(threading, n):
    """``queue.Queue(maxsize=64)``: one producer thread, the main thread consuming."""
    import queue

    q = queue.Queue(maxsize=64)

    def producer():
        put = q.put
        for i in range(n):
            put(i)
        put(None)

    t = threading.Thread(target=producer)
    t0 = time.perf_counter_ns()
    t.start()
    get = q.get
    while get() is not None:
        pass
    t1 = time.perf_counter_ns()
    t.join()
    return (t1 - t0) / n / 1000.0


def _wl_event(threading, n):
    """Two threads ping-ponging through two ``threading.Event`` s."""
    ping, pong = threading.Event(), threading.Event()

    def responder():
        for _ in range(n):
            ping.wait()
            ping.clear()
            pong.set()

    t = threading.Thread(target=responder)
    t.start()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    t1 = time.perf_counter_ns()
    t.join()
    return (t1 - t0) / n / 1000.0


def _wl_condition(threading, n):
    """Two threads taking turns under one ``threading.Condition`` (notify / wait)."""
    cond = threading.Condition()
    turn = [0]

    def responder():
        with cond:
            for _ in range(n):
                while turn[0] != 1:
                    cond.wait()
                turn[0] = 0
                cond.notify()

    t = threading.Thread(target=responder)
    t.start()
    t0 = time.perf_counter_ns()
    with cond:
        for _ in range(n):
            turn[0] = 1
            cond.notify()
            while turn[0] != 0:
                cond.wait()
    t1 = time.perf_counter_ns()
    t.join()
    return (t1 - t0) / n / 1000.0


def _wl_pool(threading, n):
    """``ThreadPoolExecutor(max_workers=4).map`` over ``n`` tiny tasks, pool start to shutdown."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter_ns()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(abs, range(n)):
            pass
    t1 = time.perf_counter_ns()
    return (t1 - t0) / n / 1000.0


# (name, label, unit, function, n at scale 1.0: roughly 50 ms on a 2-core machine)
_STDLIB_CASES = [
    ("stdlib_queue", "queue.Queue(64): producer -> consumer", "µs/item", _wl_queue, 10000),
    ("stdlib_event", "threading.Event ping-pong", "µs/round trip", _wl_event, 2000),
    ("stdlib_condition", "threading.Condition notify/wait", "µs/round trip", _wl_condition, 2000),
    ("stdlib_pool", "ThreadPoolExecutor(4).map, tiny tasks", "µs/task", _wl_pool, 3000),
]


def _activation_problem(failure):
    """None if rthread is the process's ``_thread`` under ``threading``, else an n/a reason."""
    if failure is not None:
        rthread = sys.modules.get("rthread")
        what = "%s: %s" % (type(failure).__name__, failure)
        if rthread is None:
            return "n/a: rthread fails to import: " + what
        if not hasattr(rthread, "install"):
            return "n/a: rthread.install() not in this build"
        return "n/a: rthread.install() failed: " + what
    try:
        import threading
    except Exception as exc:
        return "n/a: threading fails to import on rthread: %s: %s" % (type(exc).__name__, exc)
    import rthread

    if type(threading.Lock()) is not type(rthread.allocate_lock()):
        return "n/a: threading does not run on rthread after rthread.install()"
    return None


def _child_probe(activated, failure):
    """Imports ``threading`` (on rthread if activated) and starts and joins one thread."""
    if activated:
        reason = _activation_problem(failure)
        if reason is not None:
            return {"status": "n/a", "reason": reason}
    import threading

    t = threading.Thread(target=int)
    t.start()
    t.join()
    return {"status": "ok"}


def _child_stdlib(activated, failure, scale, samples, names, lockdep="off"):
    """Runs the standard-library workloads ``samples`` times each, plain or on rthread
    (with lock-order checking in ``lockdep`` mode)."""
    if activated:
        reason = _activation_problem(failure)
        if reason is not None:
            return {"status": "n/a", "reason": reason}
    if lockdep != "off":
        try:
            import rthread.debug

            rthread.debug.lockdep(lockdep)
        except Exception as exc:
            return {"status": "n/a", "reason": "n/a: no lock-order checking: %s" % exc}
    import threading

    cases = [c for c in _STDLIB_CASES if c[0] in names]
    sizes = {c[0]: max(10, int(c[4] * scale)) for c in cases}
    results = {c[0]: [] for c in cases}
    gc.disable()
    for round_ in range(samples + 1):  # round 0 is a warm-up
        for name, _label, _unit, func, _n in cases:
            if not isinstance(results[name], list):
                continue
            try:
                n = sizes[name] if round_ else max(10, sizes[name] // 10)
                value = func(threading, n)
            except Exception as exc:
                results[name] = "%s: %s" % (type(exc).__name__, exc)
                continue
            if round_:
                results[name].append(value)
    out = {"status": "ok", "results": results, "sizes": sizes}
    if lockdep != "off":
        import rthread.debug

        out["lockdep_reports"] = len(rthread.debug.lockdep_reports())
    return out


def _child(argv, activated, failure):
    """Entry point of the child processes (see ``_CHILD_BOOT``); prints one JSON line."""
    task = argv[0]
    if task == "memory":
        out = _child_memory(argv[1], argv[2], int(argv[3]))
    elif task == "probe":
        out = _child_probe(activated, failure)
    elif task == "stdlib":
        out = _child_stdlib(activated, failure, float(argv[1]), int(argv[2]), argv[3].split(","),
                            *argv[4:5])
    elif task == "stdlib_profile":
        import rthread.profile

        rthread.profile.start()
        out = _child_stdlib(activated, failure, float(argv[1]), int(argv[2]), argv[3].split(","))
    else:
        raise SystemExit("unknown child task %r" % task)
    print(json.dumps(out))
    return 0


def _memory_rows(kinds, rounds, count, timeout):
    """Bytes per object from RSS, one child per module and round, built-in first."""
    rows = []
    for kind in kinds:
        label = "memory per lock" if kind == "lock" else "memory per RLock"
        row = {
            "name": "memory_" + kind,
            "label": "%s (RSS growth / object count)" % label,
            "unit": "bytes",
            "where": "child processes",
            "n": count,
        }
        samples = {"builtin": [], "rthread": []}
        for _ in range(rounds):
            for which in ("builtin", "rthread"):
                if not isinstance(samples[which], list):
                    continue
                out = _run_child(["memory", which, kind, count], timeout)
                if out.get("status") != "ok":
                    samples[which] = out
                    continue
                samples[which].append(out["bytes_per_object"])
                row.setdefault("getsizeof", {})[which] = out["getsizeof"]
        for which, values in samples.items():
            row[which] = _side_ok(values) if isinstance(values, list) else values
        rows.append(row)
    return rows


def _stdlib_rows(names, rounds, samples, scale, timeout, budget_s, lockdep=False):
    """The standard-library workloads: ``rounds`` pairs of children, plain then on rthread
    (with ``lockdep``: on rthread with lock-order checking off, then on)."""
    collected = {"builtin": {n: [] for n in names}, "rthread": {n: [] for n in names}}
    failure = {"builtin": None, "rthread": None}
    deadline = time.monotonic() + budget_s
    reports = 0
    # A short first look, so that a threading that hangs on rthread costs seconds, not minutes.
    probe = _run_child(["probe"], PROBE_SECONDS, activate=True)
    if probe.get("status") != "ok":
        reason = probe.get("reason", "")
        if probe.get("status") == "error":
            reason = "threading on rthread: " + reason.replace(
                "child timed out", "importing threading and joining one thread timed out")
        failure["rthread"] = _side_na(reason)
        if lockdep:
            failure["builtin"] = failure["rthread"]
    for round_ in range(rounds):
        if round_ and time.monotonic() > deadline:
            break
        for which in ("builtin", "rthread"):
            if failure[which] is not None:
                continue
            args = ["stdlib", scale, samples, ",".join(names)]
            if lockdep:
                args.append("record" if which == "rthread" else "off")
            out = _run_child(args, timeout, activate=lockdep or which == "rthread")
            if out.get("status") != "ok":
                failure[which] = out
                continue
            reports += out.get("lockdep_reports", 0)
            for name, values in out["results"].items():
                if isinstance(collected[which][name], list):
                    if isinstance(values, list):
                        collected[which][name].extend(values)
                    else:
                        collected[which][name] = {"status": "error", "reason": values}
    rows = []
    for name, label, unit, _func, _n in _STDLIB_CASES:
        if name not in names:
            continue
        row = {"name": name, "label": label, "unit": unit, "where": "child processes"}
        if lockdep:
            row["name"] = "lockdep_" + name
            row["label"] = "lockdep on / off: " + label
            row["note"] = ("built-in column: rthread, lock-order checking off; rthread column: "
                           "on (record), %d report(s)" % reports)
        for which in ("builtin", "rthread"):
            values = collected[which][name]
            if failure[which] is not None:
                row[which] = failure[which]
            elif isinstance(values, list):
                row[which] = _side_ok(values)
            else:
                row[which] = values
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Ratios, table, JSON, chart


def _finish_row(row):
    """Adds ``ratio`` (rthread / built-in medians) and ``spread`` (IQR of per-pair ratios)."""
    b, r = row.get("builtin", {}), row.get("rthread", {})
    row["ratio"] = None
    row["spread"] = None
    if b.get("status") == "ok" and r.get("status") == "ok" and b["median"]:
        row["ratio"] = r["median"] / b["median"]
        pairs = [y / x for x, y in zip(b["samples"], r["samples"]) if x]
        if len(pairs) >= 4 and not row["name"].startswith("timed_overshoot"):
            row["spread"] = [_percentile(pairs, 25), _percentile(pairs, 75)]
    return row


def _fmt_value(side):
    if side.get("status") != "ok":
        return "n/a" if side.get("status") == "n/a" else "error"
    value = side["median"]
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return "%.0f" % value
    if abs(value) >= 10:
        return "%.1f" % value
    return "%.2f" % value


def _row_note(row):
    notes = []
    for key in ("builtin", "rthread"):
        side = row.get(key, {})
        if side.get("status") in ("n/a", "error"):
            reason = side.get("reason", "")
            if side["status"] == "error":
                reason = "error: " + reason
            elif not reason.startswith("n/a"):
                reason = "n/a: " + reason
            notes.append(("rthread " if key == "rthread" else "built-in ") + reason)
    return "; ".join(notes)


def format_table(result):
    """The result's rows as a plain-text table."""
    header = ("case", "unit", "built-in", "rthread", "ratio", "spread")
    lines = []
    body = []
    for row in result["cases"]:
        ratio = "%.2f" % row["ratio"] if row.get("ratio") is not None else "-"
        spread = "%.2f-%.2f" % tuple(row["spread"]) if row.get("spread") else ""
        body.append((row["label"], row["unit"], _fmt_value(row.get("builtin", {})),
                     _fmt_value(row.get("rthread", {})), ratio, spread, _row_note(row)))
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i])
              for i in range(len(header))]
    align = "<<>>>>"

    def fmt(cells):
        out = []
        for cell, width, a in zip(cells, widths, align):
            out.append(cell.ljust(width) if a == "<" else cell.rjust(width))
        return "  ".join(out).rstrip()

    py = result["python"]
    lines.append("rthread bench: CPython %s, %s, %s run (%d repeats), %.0f s"
                 % (py["version"], result["date"], result["settings"]["mode"],
                    result["settings"]["repeats"], result["duration_s"]))
    lines.append("ratio = rthread / built-in _thread, medians (lower is better; < 1.0: rthread "
                 "ahead); spread = IQR of per-pair ratios")
    lines.append(fmt(header))
    lines.append(fmt(["-" * w for w in widths]))
    for cells in body:
        line = fmt(cells[:6])
        if cells[6]:
            line += "   " + cells[6]
        lines.append(line)
    lines.extend(_notes([result]))
    nodiag = result.get("nodiag")
    if nodiag:
        build = (nodiag.get("build") or "").replace("\n", ", ")
        lines.append("no-diag build: %s%s"
                     % (nodiag["extension"], " (%s)" % build if build else ""))
    return "\n".join(lines)


def _notes(results):
    """What the two columns are in the "A / B" rows: a line per group of rows (the label's part
    before the first colon), after an empty line; nothing when no row has a note."""
    notes = []
    for res in results:
        for row in res["cases"]:
            if row.get("note"):
                entry = "* %s: %s" % (row["label"].split(": ", 1)[0], row["note"])
                if entry not in notes:
                    notes.append(entry)
    return [""] + notes if notes else []


def _run_title(res):
    """'CPython 3.11.7, 2025-01-02' (plus ', quick' for a quick run)."""
    return "CPython %s, %s%s" % (res["python"]["version"], res["date"][:10],
                                 "" if res["settings"]["mode"] == "full" else ", quick")


def _union_cases(results):
    """Case names (and labels) of all ``results``, in first-seen order."""
    names, labels = [], []
    for res in results:
        for row in res["cases"]:
            if row["name"] not in names:
                names.append(row["name"])
                labels.append("%s [%s]" % (row["label"], row["unit"]))
    return names, labels


def format_merged(results):
    """One ratio column per saved result, for comparing interpreters."""
    names, labels = _union_cases(results)
    cols = ["%s%s" % (res["python"]["version"],
                      "" if res["settings"]["mode"] == "full" else " (quick)")
            for res in results]
    by_name = [{row["name"]: row for row in res["cases"]} for res in results]
    width = max(len(x) for x in labels + ["case"])
    colw = [max(9, len(c)) for c in cols]
    lines = ["ratio = rthread / built-in _thread, medians (lower is better)",
             "  ".join(["case".ljust(width)] + [c.rjust(w) for c, w in zip(cols, colw)])]
    lines.append("  ".join(["-" * width] + ["-" * w for w in colw]))
    for name, label in zip(names, labels):
        cells = []
        for rows, w in zip(by_name, colw):
            row = rows.get(name)
            if row is None:
                cell = ""
            elif row.get("ratio") is None:
                cell = "n/a"
            else:
                cell = "%.2f" % row["ratio"]
            cells.append(cell.rjust(w))
        lines.append("  ".join([label.ljust(width)] + cells))
    lines.extend(_notes(results))
    lines.append("")
    for res in results:
        lines.append("%s: %s, %s run" % (res["python"]["version"], res["date"],
                                         res["settings"]["mode"]))
    return "\n".join(lines)


def _need_matplotlib():
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return "--chart needs matplotlib: pip install 'rthread[bench]' (or pip install matplotlib)"
    return None


def draw_chart(results, path):
    """A PNG of the ratios per case, one bar per result (interpreter), on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names, labels = _union_cases(results)
    by_name = [{row["name"]: row for row in res["cases"]} for res in results]
    k = len(results)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(10, 1.2 + len(labels) * (0.2 + 0.12 * k)))
    ratios = [row["ratio"] for rows in by_name for row in rows.values()
              if row.get("ratio") and row["ratio"] > 0]
    lo = min(ratios + [0.5]) / 1.35
    hi = max(ratios + [2.0]) * 1.35
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for j, (res, rows) in enumerate(zip(results, by_name)):
        color = colors[j % len(colors)]
        handles.append(Patch(color=color, label=_run_title(res)))
        for i, name in enumerate(names):
            y = i - 0.4 + height * (j + 0.5)
            row = rows.get(name)
            if row is None:
                continue
            ratio = row.get("ratio")
            if ratio is None or ratio <= 0:
                ax.text(1.0, y, " n/a", va="center", fontsize=7, color=color)
                continue
            # Bars grow from 1.0: to the left rthread is ahead, to the right behind.
            ax.barh(y, ratio - 1.0, left=1.0, height=height * 0.9, color=color)
            ax.text(ratio * (1.02 if ratio >= 1 else 0.98), y, "%.2f" % ratio, va="center",
                    ha="left" if ratio >= 1 else "right", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.5, 2, 4, 10) if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["%g" % t for t in ticks])
    ax.minorticks_off()
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("\u2190 rthread ahead     rthread / built-in _thread, ratio of medians "
                  "(log scale)     rthread behind \u2192", fontsize=9)
    ax.set_title("rthread vs the built-in _thread, per case (lower is better)")
    ax.grid(axis="x", linestyle=":", linewidth=0.5)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.6 / fig.get_figheight()),
              fontsize=8, frameon=False)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _write_json(result, path):
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The run


def _rthread_version():
    try:
        from importlib.metadata import version
    except ImportError:
        return None
    try:
        return version("rthread")
    except Exception:
        return None


def _selected(name, only):
    return not only or any(pattern in name for pattern in only)


def _progress(text):
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _plan(rthread, mods, settings, only, objects, nodiag=None):
    """The selected cases as ``(label, in_process, measure() -> rows)``, in running order.

    ``nodiag``: ``load_nodiag``'s answer, or None (the bookkeeping rows are then n/a)."""
    repeats = settings["repeats"]
    min_ns = settings["min_time_ms"] * 1e6
    plan = []
    for name, label, unit, setup, body, teardown, needs in _LOOP_CASES:
        if _selected(name, only):
            na = NOT_IN_BUILD if needs and not hasattr(rthread, needs) else None
            make = _loop_maker(setup, body, teardown)
            plan.append((label, True, functools.partial(
                _compare, name, label, unit, make, mods, repeats, min_ns, UNROLL, 1.0, na)))
    # Before the diagnostic-mode rows: they measure rthread as a program that never turned
    # diagnostic mode on runs it.
    for name, label, setup, body in _NODIAG_CASES:
        if _selected(name, only):
            plan.append((label, True, functools.partial(
                _nodiag_rows, rthread, nodiag, name, label, setup, body, repeats, min_ns)))
    for name, label, setup, body in _NODIAG_DIAG_CASES:
        if _selected(name, only):
            plan.append((label, True, functools.partial(
                _nodiag_rows, rthread, nodiag, name, label, setup, body, repeats, min_ns,
                True)))
    for name, label, setup, body in _DIAG_CASES:
        if _selected(name, only):
            plan.append((label, True, functools.partial(
                _diag_rows, rthread, name, label, setup, body, repeats, min_ns)))
    for name, label, setup, body in _LOCKDEP_CASES:
        if _selected(name, only):
            plan.append((label, True, functools.partial(
                _diag_rows, rthread, name, label, setup, body, repeats, min_ns, _lockdep_toggle,
                "built-in column: rthread, lock-order checking off; rthread column: on")))
    for name, label, unit, make, per, scale in _THREAD_CASES:
        if _selected(name, only):
            plan.append((label, True, functools.partial(
                _compare, name, label, unit, make, mods, repeats, 2 * min_ns, per, scale)))
    for name, label, setup, body in _PROFILE_CASES:
        if _selected(name, only):
            make = _loop_maker(setup, body, [])
            plan.append((label, True, functools.partial(
                _profile_rows, rthread, name, label, "ns/op", make, repeats, min_ns, UNROLL,
                1.0)))
    for name, label, unit, make, per, scale in _PROFILE_THREAD_CASES:
        if _selected(name, only):
            plan.append((label, True, functools.partial(
                _profile_rows, rthread, name, label, unit, make, repeats, 2 * min_ns, per,
                scale)))
    if _selected("timed_overshoot", only):
        plan.append(("acquire(timeout=0.01) overshoot", True,
                     functools.partial(_overshoot_rows, mods, max(5, 4 * repeats))))
    timeout = max(120.0, HANG_SECONDS * 2)
    kinds = [k for k in ("lock", "rlock") if _selected("memory_" + k, only)]
    if kinds:
        rounds = 3 if repeats >= 20 else 1
        plan.append(("memory per lock / RLock (child processes)", False,
                     functools.partial(_memory_rows, kinds, rounds, objects, timeout)))
    names = [c[0] for c in _STDLIB_CASES if _selected(c[0], only)]
    if names:
        # Child processes differ more from each other (thread placement on the CPUs, the
        # machine's load) than samples within one child: many short pairs of children.
        rounds = min(12, max(1, math.ceil(repeats / 2)))
        samples = 3 if repeats >= 3 else 1
        scale = min(2.0, max(0.02, settings["min_time_ms"] / 20.0))
        # Planned: per child, start-up plus 4 workloads x (samples + warm-up) x 50 ms x scale;
        # allow three times that before skipping the remaining rounds.
        budget_s = 3 * 2 * rounds * (0.3 + 4 * (samples + 1) * 0.05 * scale)
        plan.append(("standard library workloads (child processes)", False,
                     functools.partial(_stdlib_rows, names, rounds, samples, scale, timeout,
                                       budget_s)))
    prof_names = [c[0] for c in _STDLIB_CASES if _selected("prof_" + c[0], only)]
    if prof_names:
        rounds = min(12, max(1, math.ceil(repeats / 2)))
        samples = 3 if repeats >= 3 else 1
        scale = min(2.0, max(0.02, settings["min_time_ms"] / 20.0))
        budget_s = 3 * 2 * rounds * (0.3 + 4 * (samples + 1) * 0.05 * scale)
        plan.append(("profile on / off: standard library workloads (children)", False,
                     functools.partial(_profile_stdlib_rows, prof_names, rounds, samples, scale,
                                       timeout, budget_s)))
    names = [c[0] for c in _STDLIB_CASES if _selected("lockdep_" + c[0], only)]
    if names:
        rounds = min(12, max(1, math.ceil(repeats / 2)))
        samples = 3 if repeats >= 3 else 1
        scale = min(2.0, max(0.02, settings["min_time_ms"] / 20.0))
        budget_s = 3 * 2 * rounds * (0.3 + 4 * (samples + 1) * 0.05 * scale)
        plan.append(("lock-order checking on the standard library workloads (child processes)",
                     False, functools.partial(_stdlib_rows, names, rounds, samples, scale,
                                              timeout, budget_s, True)))
    return plan


def run(settings, only=(), objects=MEMORY_OBJECTS, nodiag=None):
    """Runs every selected case and returns the result (the JSON document, as a dict).

    ``nodiag``: ``load_nodiag``'s answer for the bookkeeping rows, or None."""
    import datetime
    import platform

    import rthread

    mods = (rthread._builtin_thread(), rthread)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []

    plan = _plan(rthread, mods, settings, only, objects, nodiag)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the child-process cases run with the collector on, as programs do
    try:
        for label, in_process, measure in plan:
            if not in_process and gc_was_enabled:
                gc.enable()
            sys.stderr.write("  %-58s " % label)
            sys.stderr.flush()
            t0 = time.monotonic()
            new = measure()
            seconds = time.monotonic() - t0
            sys.stderr.write("%5.1f s\n" % seconds)
            for row in new:
                row["seconds"] = seconds / len(new)
            rows.extend(new)
    finally:
        if gc_was_enabled:
            gc.enable()

    for row in rows:
        _finish_row(row)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "schema": 1,
        "tool": "python -m rthread bench",
        "date": date,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "build": " ".join(platform.python_build()),
            "compiler": platform.python_compiler(),
        },
        "rthread": {"version": _rthread_version(), "file": getattr(rthread, "__file__", None)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_at_end": list(load) if load else None},
        "settings": dict(settings, unroll=UNROLL, memory_objects=objects),
        "nodiag": None if nodiag is None else {
            k: v for k, v in nodiag[1].items() if k in ("dir", "extension", "build")},
        "duration_s": time.monotonic() - started,
        "cases": rows,
    }


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m rthread bench",
        description="Benchmarks rthread against the interpreter's built-in _thread.")
    parser.add_argument("--quick", action="store_true", help="short run, well under a minute")
    parser.add_argument("--repeats", type=int, help="samples per module per case")
    parser.add_argument("--min-time", type=float, metavar="MS",
                        help="target length of one sample, in milliseconds")
    parser.add_argument("--objects", type=int, default=MEMORY_OBJECTS,
                        help="objects per memory child (default: %(default)s)")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                        help="run only the cases whose name contains this (repeatable)")
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the results (default: bench-results/bench-X.Y.json)")
    parser.add_argument("--no-json", action="store_true", help="do not write a JSON file")
    parser.add_argument("--chart", metavar="PATH", help="draw a PNG of the ratios (needs "
                        "matplotlib: the 'bench' extra)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="no run: show and chart these saved results side by side")
    parser.add_argument("--nodiag", metavar="DIR",
                        help="a build of rthread with the who-holds-what bookkeeping compiled "
                        "out, for the 'bookkeeping / compiled out' rows (without it they are "
                        "n/a): scripts/nodiag.sh X.Y PYTHON in rthread's source tree builds one "
                        "for interpreter X.Y into target/nodiag/X.Y, which is the DIR to give. "
                        "Its extension is loaded next to rthread in this process; a DIR without "
                        "such a build for this interpreter is refused")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser.parse_args(argv)


def _case_names():
    return ([c[0] for c in _LOOP_CASES] + [c[0] for c in _NODIAG_CASES]
            + [c[0] for c in _NODIAG_DIAG_CASES] + [c[0] for c in _DIAG_CASES]
            + [c[0] for c in _LOCKDEP_CASES] + [c[0] for c in _THREAD_CASES]
            + [c[0] for c in _PROFILE_CASES] + [c[0] for c in _PROFILE_THREAD_CASES]
            + ["timed_overshoot_median", "timed_overshoot_p90", "memory_lock", "memory_rlock"]
            + [c[0] for c in _STDLIB_CASES]
            + ["prof_" + c[0] for c in _STDLIB_CASES]
            + ["lockdep_" + c[0] for c in _STDLIB_CASES])


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        print("\n".join(_case_names()))
        return 0
    if args.chart:
        missing = _need_matplotlib()
        if missing:
            print(missing, file=sys.stderr)
            return 2

    if args.merge:
        results = []
        for path in args.merge:
            with open(path, encoding="utf-8") as f:
                results.append(json.load(f))
        print(format_merged(results))
        if args.chart:
            draw_chart(results, args.chart)
            print("chart: %s" % args.chart)
        return 0

    settings = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        settings["repeats"] = max(1, args.repeats)
    if args.min_time is not None:
        settings["min_time_ms"] = max(0.01, args.min_time)
    nodiag = None
    if args.nodiag is not None:
        import rthread  # noqa: F401  (before the copy: its sys.modules entries are kept)

        try:
            nodiag = load_nodiag(args.nodiag)
        except NodiagError as exc:
            print("python -m rthread bench: --nodiag: %s" % exc, file=sys.stderr)
            return 2
    result = run(settings, only=args.only, objects=max(1, args.objects), nodiag=nodiag)
    print(format_table(result))
    if not args.no_json:
        version = "%d.%d" % sys.version_info[:2]
        default = "bench-results/bench-%s%s.json" % (version, "-quick" if args.quick else "")
        path = args.json or default
        _write_json(result, path)
        print("results: %s" % path)
    if args.chart:
        draw_chart([result], args.chart)
        print("chart: %s" % args.chart)
    errors = [row["name"] for row in result["cases"]
              if any(row.get(k, {}).get("status") == "error" for k in ("builtin", "rthread"))]
    if errors:
        print("errors in: %s" % ", ".join(errors), file=sys.stderr)
        return 1
    return 0
