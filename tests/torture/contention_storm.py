"""Contention storm: 64 threads do random acquire / try-acquire / timed
acquire on a few locks for a set time, and release either themselves or by
handing the lock to a releaser thread (release by another thread). Checks
that a guarded holder slot never sees two holders, that a timed acquire
never fails early, that every release made while threads wait is followed
by a grant (watchdog: no lock stays free with waiters for longer than a
bound), and prints the longest wait.

Usage: python contention_storm.py SECONDS [THREADS] [LOCKS]
Runs on whatever `_thread` is active (RTHREAD=1 for rthread).
"""

import json
import random
import sys
import threading
import time
import _thread

SECONDS = float(sys.argv[1])
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 64
NLOCKS = int(sys.argv[3]) if len(sys.argv) > 3 else 4
RELEASERS = 4
STALL_BOUND = 2.0  # a free lock with waiters for this long is a lost grant

now = time.monotonic
locks = [_thread.allocate_lock() for _ in range(NLOCKS)]
holder = [None] * NLOCKS  # who holds lock i, as the holders see it
waiting = [0] * THREADS  # per thread: 1 + index of the lock it blocks on, or 0
handoff = []  # (lock index) to be released by a releaser thread
handoff_ready = threading.Semaphore(0)
stop = threading.Event()
violations = []
early = []
stats = {"acquired": 0, "tries_failed": 0, "timed_out": 0, "handoffs": 0, "self_releases": 0}
longest_wait = [0.0]
wait_sum = [0.0, 0]


def worker(me):
    rng = random.Random(me)
    while not stop.is_set():
        i = rng.randrange(NLOCKS)
        lock = locks[i]
        op = rng.random()
        t0 = now()
        if op < 0.4:
            waiting[me] = i + 1
            got = lock.acquire()
            waiting[me] = 0
        elif op < 0.6:
            got = lock.acquire(False)
            if not got:
                stats["tries_failed"] += 1
        else:
            timeout = rng.choice((0.0001, 0.001, 0.005, 0.02))
            waiting[me] = i + 1
            got = lock.acquire(timeout=timeout)
            waiting[me] = 0
            if not got:
                stats["timed_out"] += 1
                if now() - t0 < timeout:
                    early.append((timeout, now() - t0))
        waited = now() - t0
        if not got:
            continue
        if waited > longest_wait[0]:
            longest_wait[0] = waited
        wait_sum[0] += waited
        wait_sum[1] += 1
        stats["acquired"] += 1
        if holder[i] is not None:
            violations.append(f"lock {i}: thread {me} acquired it while {holder[i]} held it")
        holder[i] = me
        for _ in range(rng.randrange(20)):  # a little work, with switches possible
            pass
        if holder[i] != me:
            violations.append(f"lock {i}: thread {me} holds it but the slot says {holder[i]}")
        holder[i] = None
        if rng.random() < 0.3:
            stats["handoffs"] += 1
            handoff.append(i)
            handoff_ready.release()
        else:
            stats["self_releases"] += 1
            lock.release()


def releaser():
    while True:
        handoff_ready.acquire()
        if not handoff:
            return  # stop marker: a release with nothing handed off
        locks[handoff.pop(0)].release()


def watchdog(stalls):
    """Samples the locks: one that is free while threads wait for it must be
    taken soon (a release with waiters grants someone)."""
    free_since = [None] * NLOCKS
    worst = 0.0
    while not stop.is_set():
        t = now()
        for i in range(NLOCKS):
            waiters = sum(1 for w in waiting if w == i + 1)
            if waiters and not locks[i].locked():
                if free_since[i] is None:
                    free_since[i] = t
                elif t - free_since[i] > STALL_BOUND:
                    stalls.append(f"lock {i} free with {waiters} waiters for {t - free_since[i]:.3f} s")
                    free_since[i] = t
                worst = max(worst, t - free_since[i])
            else:
                free_since[i] = None
        time.sleep(0.001)
    stalls.append(worst)


def main():
    stalls = []
    releasers = [threading.Thread(target=releaser) for _ in range(RELEASERS)]
    workers = [threading.Thread(target=worker, args=(me,)) for me in range(THREADS)]
    dog = threading.Thread(target=watchdog, args=(stalls,))
    for t in releasers + workers + [dog]:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in workers:
        t.join(30)
    hung = sum(t.is_alive() for t in workers)
    for _ in releasers:
        handoff_ready.release()
    for t in releasers + [dog]:
        t.join(30)
    worst_free = stalls.pop()
    # Every lock must be free at the end, and usable.
    still_locked = [i for i, lock in enumerate(locks) if lock.locked()]
    print(json.dumps({
        "rthread": sys.modules["_thread"].__name__ != "_thread",
        "seconds": SECONDS,
        "threads": THREADS,
        "locks": NLOCKS,
        **stats,
        "two_holders": len(violations),
        "violations": violations[:5],
        "early_timeouts": len(early),
        "stalls": stalls[:5],
        "longest_free_with_waiters_ms": round(worst_free * 1000, 2),
        "longest_wait_ms": round(longest_wait[0] * 1000, 2),
        "mean_wait_ms": round(wait_sum[0] / max(1, wait_sum[1]) * 1000, 3),
        "hung_workers": hung,
        "still_locked": still_locked,
    }))


if __name__ == "__main__":
    main()
