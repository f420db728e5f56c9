"""Signal storm: SIGALRM at 1 kHz (setitimer) while worker threads and the
main thread do timed waits that must time out: lock.acquire(timeout),
Thread.join(timeout), Condition.wait(timeout), Queue.get(timeout). Measures
how late each wait returns (never early), checks that a handler raising a
custom exception every Nth signal in the main thread has each exception
raised exactly once and caught by the main loop, then measures Ctrl-C
latency (SIGINT to self while the main thread blocks in lock.acquire() and
in Thread.join()).

Usage: python signal_storm.py SECONDS CTRL_C_ROUNDS
Run with threading on rthread (RTHREAD=1) or on the built-in (unset).
Prints one JSON line of figures on stdout.
"""

import json
import os
import queue
import random
import signal
import sys
import threading
import time

# Started in the background by a shell without job control, Python inherits SIGINT ignored and
# installs no KeyboardInterrupt handler: every Ctrl-C below would be "missed". Measure the
# interpreter, not how it was started.
signal.signal(signal.SIGINT, signal.default_int_handler)

SECONDS = float(sys.argv[1])
CTRL_C_ROUNDS = int(sys.argv[2])
WORKERS = 4
RAISE_EVERY = 37  # signals between two raising handler calls
TIMEOUTS = (0.001, 0.002, 0.005, 0.01, 0.02)
CTRL_C_GIVE_UP = 10.0  # a wait that outlasts this missed its Ctrl-C

now = time.monotonic


class Tick(Exception):
    """Raised by the signal handler; carries its sequence number."""


signals = [0]
armed = [False]
raised = []
mangled = [0]  # Ticks that reached the main loop as the context of a RuntimeError


def handler(signum, frame):
    signals[0] += 1
    if armed[0] and signals[0] % RAISE_EVERY == 0:
        armed[0] = False  # at most one in flight: re-armed by the main loop
        raised.append(len(raised))
        raise Tick(raised[-1])


never = threading.Event()
held = threading.Lock()
held.acquire()  # never released: acquires on it time out


def new_sleeper():
    """A thread that runs until the end: joins on it time out."""
    t = threading.Thread(target=never.wait, daemon=True)
    t.start()
    return t


# Shared by the workers, which no exception interrupts. The main thread joins
# a sleeper of its own, replaced after each exception thrown into a join:
# before 3.13, threading's join() treats an exception that interrupts it
# while the thread still runs as if the thread had ended (it releases the
# thread's tstate lock and marks it stopped), built-in _thread or not.
sleepers = {"workers": new_sleeper(), "main": new_sleeper()}


def timed_ops():
    """(name, callable taking a timeout) for each kind of wait, each of which
    must time out. The Condition and Queue are made fresh for every wait, so
    an exception thrown into one leaves nothing behind."""

    def acquire(t):
        return held.acquire(timeout=t)

    def join(t):
        sleeper = sleepers["main" if threading.current_thread() is threading.main_thread() else "workers"]
        sleeper.join(t)
        return sleeper.is_alive() is False

    def cond_wait(t):
        cond = threading.Condition()
        with cond:
            return cond.wait(t)

    def queue_get(t):
        try:
            queue.Queue().get(timeout=t)
        except queue.Empty:
            return False
        return True

    return [("acquire", acquire), ("join", join), ("condition", cond_wait), ("queue", queue_get)]


OPS = timed_ops()


def record(stats, name, timeout, elapsed, result):
    if result:
        stats["wrong_result"].append(name)
    over = elapsed - timeout
    if over < 0:
        stats["early"].append((name, timeout, elapsed))
    stats["over"].append(over)


def new_stats():
    return {"over": [], "early": [], "wrong_result": []}


def worker(seed, stats, stop):
    rng = random.Random(seed)
    while not stop.is_set():
        name, op = rng.choice(OPS)
        timeout = rng.choice(TIMEOUTS)
        t0 = now()
        result = op(timeout)
        record(stats, name, timeout, now() - t0, result)


def storm():
    worker_stats = [new_stats() for _ in range(WORKERS)]
    main_stats = new_stats()
    caught = []
    stop = threading.Event()
    rng = random.Random(0)
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    threads = [threading.Thread(target=worker, args=(s, worker_stats[s], stop)) for s in range(WORKERS)]
    for t in threads:
        t.start()
    try:
        main_loop(main_stats, caught, rng)
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        stop.set()
    for t in threads:
        t.join(10)
    hung = sum(t.is_alive() for t in threads)
    return worker_stats, main_stats, caught, hung


def main_loop(main_stats, caught, rng):
    end = now() + SECONDS
    while now() < end:
        name, op = rng.choice(OPS)
        timeout = rng.choice(TIMEOUTS)
        t0 = now()
        try:
            armed[0] = True
            result = op(timeout)
            armed[0] = False
            record(main_stats, name, timeout, now() - t0, result)
        except Tick as exc:
            caught.append(exc.args[0])
            if name == "join":
                sleepers["main"] = new_sleeper()
        except RuntimeError as exc:
            # A Tick thrown into threading's pure-Python Condition code (in
            # _acquire_restore, before it re-took the lock) makes the `with`
            # around it release an unlocked lock: the RuntimeError carries the
            # Tick as its context. CPython's own behaviour, built-in or not;
            # the Tick was delivered, once, and is counted from there.
            tick = exc.__context__
            if not isinstance(tick, Tick):
                raise
            caught.append(tick.args[0])
            mangled[0] += 1


def ctrl_c(rounds):
    """Seconds from os.kill(SIGINT) to the KeyboardInterrupt in the main
    thread, blocked in lock.acquire() (even rounds) or Thread.join() (odd),
    and how many interrupts were missed."""
    lat = {"acquire": [], "join": []}
    missed = 0
    for n in range(rounds):
        sent = []
        go = threading.Event()

        def fire():
            go.wait()
            time.sleep(0.01 + random.random() * 0.02)
            sent.append(now())
            os.kill(os.getpid(), signal.SIGINT)

        killer = threading.Thread(target=fire, daemon=True)
        kind = "acquire" if n % 2 == 0 else "join"
        killer.start()
        try:
            go.set()  # from here on, the interrupt lands inside this try
            # Neither wait can end before its long timeout: one that does
            # missed the interrupt (without the timeout, it would hang).
            if kind == "acquire":
                held.acquire(timeout=CTRL_C_GIVE_UP)
            else:
                sleepers["main"].join(CTRL_C_GIVE_UP)
            missed += 1
        except KeyboardInterrupt:
            lat[kind].append(now() - sent[0])
            if kind == "join":
                sleepers["main"] = new_sleeper()
        killer.join()
    return lat, missed


def summary(values):
    values = sorted(values)
    if not values:
        return {}
    pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)  # noqa: E731
    return {"n": len(values), "median_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(values[-1] * 1000, 3)}


def histogram(overs):
    edges = (0.001, 0.002, 0.005, 0.010, 0.050, 1.0)
    out = {}
    for e in edges:
        out[f"<={e * 1000:g}ms"] = sum(1 for o in overs if o <= e)
    out[">1000ms"] = sum(1 for o in overs if o > 1.0)
    return out


def main():
    worker_stats, main_stats, caught, hung = storm()
    lat, missed = ctrl_c(CTRL_C_ROUNDS)
    never.set()
    overs = [o for s in worker_stats for o in s["over"]]
    report = {
        "rthread": sys.modules["_thread"].__name__ != "_thread",
        "seconds": SECONDS,
        "signals": signals[0],
        "waits_workers": len(overs),
        "waits_main": len(main_stats["over"]),
        "overshoot_workers": summary(overs),
        "overshoot_main": summary(main_stats["over"]),
        "histogram_workers": histogram(overs),
        "histogram_main": histogram(main_stats["over"]),
        "late_over_10ms": sum(1 for o in overs + main_stats["over"] if o > 0.010),
        "early": [e for s in worker_stats + [main_stats] for e in s["early"]][:20],
        "early_count": sum(len(s["early"]) for s in worker_stats + [main_stats]),
        "wrong_result": sum(len(s["wrong_result"]) for s in worker_stats + [main_stats]),
        "raised": len(raised),
        "caught": len(caught),
        "caught_in_order_once": caught == list(range(len(raised))),
        "caught_as_runtimeerror_context": mangled[0],
        "hung_workers": hung,
        "ctrl_c_acquire": summary(lat["acquire"]),
        "ctrl_c_join": summary(lat["join"]),
        "ctrl_c_missed": missed,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
