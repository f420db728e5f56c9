"""A short tour of rthread used as ``_thread``: threads, locks, a timed acquire."""

import sys
import time

import rthread as _thread

print(f"rthread on Python {sys.version.split()[0]}")

# Threads and a lock: four workers add to a shared counter under one lock.
counter = 0
counter_lock = _thread.allocate_lock()
finished = _thread.allocate_lock()
remaining = 4
N = 20_000


def worker(name):
    global counter, remaining
    for _ in range(N):
        with counter_lock:
            counter += 1
    with counter_lock:
        print(f"  worker {name} done on thread {_thread.get_ident()} (native id {_thread.get_native_id()})")
        remaining -= 1
        if remaining == 0:
            finished.release()


finished.acquire()
start = time.perf_counter()
for i in range(4):
    _thread.start_new_thread(worker, (i,))
finished.acquire()  # released by the last worker
print(f"4 threads x {N} locked increments -> counter = {counter} in {time.perf_counter() - start:.3f}s")
assert counter == 4 * N

# A timed acquire on a held lock gives up after the timeout.
held = _thread.allocate_lock()
held.acquire()
t0 = time.monotonic()
got = held.acquire(timeout=0.1)
print(f"acquire(timeout=0.1) on a held lock -> {got} after {time.monotonic() - t0:.3f}s")

# Another thread may release a lock; the waiter wakes up.
def releaser():
    time.sleep(0.05)
    held.release()


_thread.start_new_thread(releaser, ())
t0 = time.monotonic()
got = held.acquire(timeout=5)
print(f"acquire(timeout=5) released by another thread -> {got} after {time.monotonic() - t0:.3f}s")

# The reentrant lock.
rlock = _thread.RLock()
with rlock, rlock:
    print(f"RLock held twice: {rlock!r}")
print(f"lock repr: {held!r}; TIMEOUT_MAX = {_thread.TIMEOUT_MAX}")
