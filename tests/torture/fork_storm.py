"""Fork storm: fork again and again while 8 threads churn locks, RLocks, `_local`
and thread starts; every child must use every inherited lock, its `_local`
and a new thread, and exit 0 within a bound.

Usage: python fork_storm.py FORKS [CHILD_DEADLINE_S]
Run it with threading on rthread (RTHREAD=1) or, for comparison, on the
built-in (RTHREAD unset). Prints one JSON line of figures on stdout; exits 1
if any child failed (its own reason goes to stderr, prefixed "child").
"""

import json
import os
import random
import signal
import sys
import time
import warnings

# 3.12+ warns at every fork of a multi-threaded process; this program does
# exactly that on purpose.
warnings.filterwarnings("ignore", category=DeprecationWarning)

import threading  # noqa: E402
import _thread  # noqa: E402

FORKS = int(sys.argv[1])
DEADLINE = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
CHURNERS = 8
NLOCKS = 6

# What each churner is doing, in a slot of its own (one store under the GIL,
# so the child, which inherits this memory as it was at the fork, reads a
# consistent picture): None, or (kind, index, "held" | "moving"), "moving"
# while an acquire or release is in flight (the fork may fall between the C
# call and the Python line that records it, so the lock may be either way).
locks = [_thread.allocate_lock() for _ in range(NLOCKS)]
rlocks = [_thread.RLock() for _ in range(NLOCKS)]
slots = [None] * CHURNERS
local = threading.local()
raw_local = _thread._local()
local.owner = "main"
raw_local.owner = "main"
main_rlock = _thread.RLock()  # held twice by the forking thread at every fork
stop = threading.Event()
started_threads = [0] * CHURNERS
churn_errors = []


def churn(me):
    rng = random.Random(me)
    local.owner = f"churner{me}"
    raw_local.owner = f"churner{me}"
    try:
        while not stop.is_set():
            op = rng.randrange(5)
            i = rng.randrange(NLOCKS)
            if op == 0:
                slots[me] = ("lock", i, "moving")
                if locks[i].acquire(timeout=0.002):
                    slots[me] = ("lock", i, "held")
                    time.sleep(rng.random() * 0.0005)
                    slots[me] = ("lock", i, "moving")
                    locks[i].release()
                slots[me] = None
            elif op == 1:
                slots[me] = ("rlock", i, "moving")
                if rlocks[i].acquire(timeout=0.002):
                    slots[me] = ("rlock", i, "held")
                    rlocks[i].acquire()
                    time.sleep(rng.random() * 0.0005)
                    rlocks[i].release()
                    slots[me] = ("rlock", i, "moving")
                    rlocks[i].release()
                slots[me] = None
            elif op == 2:
                scratch = threading.local()
                scratch.value = [me] * 10
                local.value = scratch.value
                raw_local.value = scratch.value
                del scratch
            elif op == 3:
                t = threading.Thread(target=lambda: local.__dict__.setdefault("x", 1))
                t.start()
                t.join()
                started_threads[me] += 1
            else:
                _thread.start_new_thread(lambda: None, ())
                started_threads[me] += 1
    except BaseException as exc:  # reported, fails the run
        churn_errors.append(repr(exc))


def expected(kind, i):
    """"held", "free" or "either" for lock i of kind, from the inherited slots."""
    seen = [s[2] for s in slots if s is not None and s[0] == kind and s[1] == i]
    if "held" in seen:
        return "held"
    return "either" if seen else "free"


def fail(why):
    os.write(2, f"child {os.getpid()}: {why}\n".encode())
    os._exit(1)


def child():
    """Runs in the child: every inherited lock, both locals, a new thread."""
    signal.alarm(int(DEADLINE) + 1)  # the default action kills a stuck child
    start = time.monotonic()
    reinit = 0
    for i, lock in enumerate(locks):
        state = expected("lock", i)
        got = lock.acquire(blocking=False)
        if state == "free" and not got:
            fail(f"lock {i} recorded free is locked")
        if state == "held" and got:
            fail(f"lock {i} recorded held is free")
        if not got:
            # Held by a thread that does not exist here: reinit, as os.register_at_fork users do.
            lock._at_fork_reinit()
            reinit += 1
            if lock.locked() or not lock.acquire(blocking=False):
                fail(f"lock {i} not free after _at_fork_reinit")
        lock.release()
        if lock.locked() or not lock.acquire(timeout=1):
            fail(f"lock {i} unusable after release")
        lock.release()
    for i, rlock in enumerate(rlocks):
        if rlock._is_owned():
            fail(f"rlock {i} owned by the child's only thread")
        state = expected("rlock", i)
        got = rlock.acquire(blocking=False)
        if state == "free" and not got:
            fail(f"rlock {i} recorded free is held")
        if state == "held" and got:
            fail(f"rlock {i} recorded held is free")
        if not got:
            rlock._at_fork_reinit()
            reinit += 1
            if not rlock.acquire(blocking=False):
                fail(f"rlock {i} not free after _at_fork_reinit")
        rlock.acquire()
        if not rlock._is_owned():
            fail(f"rlock {i} not owned after acquire")
        rlock.release()
        rlock.release()
        if rlock._is_owned():
            fail(f"rlock {i} still owned after releases")
    if not main_rlock._is_owned():
        fail("the forking thread's RLock is not owned in the child")
    main_rlock.release()
    main_rlock.release()
    if main_rlock._is_owned() or not main_rlock.acquire(blocking=False):
        fail("the forking thread's RLock is unusable")
    main_rlock.release()
    if local.owner != "main" or raw_local.owner != "main":
        fail(f"_local lost the forking thread's value: {local.owner!r} {raw_local.owner!r}")
    local.child = raw_local.child = os.getpid()
    fresh = threading.local()
    fresh.x = 1
    box = []

    def in_thread():
        box.append((getattr(local, "owner", None), getattr(raw_local, "owner", None), fresh.__dict__.get("x")))
        local.owner = raw_local.owner = "child thread"

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(DEADLINE)
    if t.is_alive() or box != [(None, None, None)]:
        fail(f"thread in the child: alive={t.is_alive()} saw={box}")
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(done.release, ())
    if not done.acquire(timeout=DEADLINE):
        fail("raw thread in the child did not run")
    if local.owner != "main":
        fail("a thread's _local write leaked into the main thread")
    cond = threading.Condition()
    with cond:
        cond.wait(0.001)
    if time.monotonic() - start > DEADLINE:
        fail(f"child took {time.monotonic() - start:.3f} s")
    os.write(3, bytes([reinit]))  # figure for the parent
    os._exit(0)


def main():
    threads = [threading.Thread(target=churn, args=(s,), daemon=True) for s in range(CHURNERS)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    durations = []
    reinits = 0
    failed = 0
    main_rlock.acquire()
    main_rlock.acquire()
    for _ in range(FORKS):
        time.sleep(random.random() * 0.002)  # let the churners move
        r, w = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                os.dup2(w, 3)
                child()
            except BaseException as exc:
                fail(f"exception {exc!r}")
        os.close(w)
        # Wait without blocking forever: a stuck child is killed at the deadline.
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() - t0 > DEADLINE + 2:
                if os.environ.get("FORK_STORM_GDB"):  # where is it stuck?
                    os.system(f"gdb -p {pid} -batch -ex 'thread apply all bt 30' >&2 2>/dev/null")
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
                break
            time.sleep(0.0005)
        durations.append(time.monotonic() - t0)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        if status != 0:
            failed += 1
            os.write(2, f"parent: child {pid} status {status}\n".encode())
        elif len(data) == 1:
            reinits += data[0]
    main_rlock.release()
    main_rlock.release()
    stop.set()
    for t in threads:
        t.join(10)
    durations.sort()
    print(json.dumps({
        "rthread": sys.modules["_thread"].__name__ != "_thread",
        "forks": FORKS,
        "failed": failed,
        "child_median_ms": round(durations[len(durations) // 2] * 1000, 2),
        "child_max_ms": round(durations[-1] * 1000, 2),
        "locks_reinit_in_children": reinits,
        "threads_started_in_parent": sum(started_threads),
        "churn_errors": churn_errors,
    }))
    return 1 if failed or churn_errors or any(t.is_alive() for t in threads) else 0


if __name__ == "__main__":
    sys.exit(main())
