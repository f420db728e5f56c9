"""Leak check: runs one workload a first time (warm-up: allocator pools,
thread stack caches and interned names are primed), measures RSS, runs it
again, measures again. Prints JSON: RSS before/after (from /proc/self/statm),
the delta, and `_count()` at the end.

Usage: python leaks.py WORKLOAD N
  threads N   N thread starts (half threading.Thread + join, half
              _thread.start_new_thread), in waves of 50 live threads
  locks N     N locks and N RLocks: made, acquired, released (RLocks twice
              recursively), dropped in batches of 10 000
  local N     `_local` churn across N threads: each sets and replaces
              values in shared locals and makes locals of its own, 100 live
              threads at a time
Runs on whatever `_thread` is active (RTHREAD=1 for rthread).
"""

import gc
import json
import os
import sys
import threading
import time
import weakref
import _thread

WORKLOAD = sys.argv[1]
N = int(sys.argv[2])
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def wait_count_zero(timeout=30.0):
    end = time.monotonic() + timeout
    while _thread._count() and time.monotonic() < end:
        time.sleep(0.001)
    return _thread._count()


def threads(n):
    wave = 50
    done = 0
    while done < n:
        k = min(wave, n - done)
        half = k // 2
        started = [threading.Thread(target=int) for _ in range(half)]
        for t in started:
            t.start()
        finished = _thread.allocate_lock()
        left = [k - half]
        counter_lock = _thread.allocate_lock()
        finished.acquire()

        def raw():
            with counter_lock:
                left[0] -= 1
                if left[0] == 0:
                    finished.release()

        for _ in range(k - half):
            _thread.start_new_thread(raw, ())
        for t in started:
            t.join()
        finished.acquire()
        done += k
    wait_count_zero()


def locks(n):
    batch = 10_000
    for start in range(0, n, batch):
        ls = [_thread.allocate_lock() for _ in range(min(batch, n - start))]
        for lock in ls:
            lock.acquire()
            lock.release()
        rs = [_thread.RLock() for _ in range(min(batch, n - start))]
        for r in rs:
            r.acquire()
            r.acquire()
            r.release()
            r.release()
        del ls, rs


class Value:
    pass


shared = [threading.local() for _ in range(10)]
raw_shared = [_thread._local() for _ in range(10)]
# Weak references to the values the `_local`s held, in slots fixed per
# thread number: the second round replaces the first's, so this list itself
# does not grow between the two RSS readings.
PER_THREAD = 30
refs = [None] * (PER_THREAD * N if WORKLOAD == "local" else 0)


def local_worker(k):
    slot = k * PER_THREAD
    for loc in shared + raw_shared:
        v = Value()
        refs[slot] = weakref.ref(v)
        slot += 1
        loc.value = v
        loc.value = Value()  # replaces the first
        loc.n = k
    own = [threading.local() for _ in range(5)] + [_thread._local() for _ in range(5)]
    for loc in own:
        loc.value = Value()
        refs[slot] = weakref.ref(loc.value)
        slot += 1
    del own


def local(n):
    wave = 100
    for start in range(0, n, wave):
        ts = [threading.Thread(target=local_worker, args=(k,)) for k in range(start, min(n, start + wave))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    wait_count_zero()


WORKLOADS = {"threads": threads, "locks": locks, "local": local}


def main():
    work = WORKLOADS[WORKLOAD]
    work(N)  # warm-up
    before = rss()
    t0 = time.monotonic()
    work(N)
    seconds = time.monotonic() - t0
    count = wait_count_zero()
    gc.collect()
    alive = sum(1 for r in refs if r is None or r() is not None)
    after = rss()
    print(json.dumps({
        "rthread": sys.modules["_thread"].__name__ != "_thread",
        "workload": WORKLOAD,
        "n": N,
        "seconds": round(seconds, 2),
        "rss_before_kb": before // 1024,
        "rss_after_kb": after // 1024,
        "rss_delta_kb": (after - before) // 1024,
        "count": count,
        "local_values_alive": alive,
    }))


if __name__ == "__main__":
    main()
