"""A cache whose lock is held during a slow lookup: rthread's lock profile shows where.

    python -m rthread --profile-locks contention.speedscope.json examples/contention.py
    RTHREAD=1 RTHREAD_PROFILE=contention.json python examples/contention.py
"""
import threading
import time

cache_lock = threading.Lock()
stats_lock = threading.Lock()
cache = {}
lookups = 0


def slow_lookup(key):
    time.sleep(0.0002)  # a database or network call, say
    return key * 2


def get(key):
    global lookups
    with cache_lock:
        value = cache.get(key)
        if value is None:
            value = cache[key] = slow_lookup(key)  # the slow call runs under the lock
    with stats_lock:
        lookups += 1
    return value


def worker(n):
    for i in range(300):
        get((i * 7 + n) % 400)


threads = [threading.Thread(target=worker, args=(n,), name="worker-%d" % n) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
