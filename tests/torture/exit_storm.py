"""Exit storm program: run once, it starts daemon threads in every state and
exits while they are in them: running Python, blocked in acquire (lock and
RLock, timed and not), in join, starting threads (some begin as exit
begins), in `_local` teardown (threads ending with `_local` values whose
__del__ runs Python), and holding the GIL in a long C call. The exit must be
clean: status 0, nothing on stderr, no hang.

Usage: python exit_storm.py SEED    (threading on rthread: RTHREAD=1)
SEED varies how long the main thread lets them run (0 - 3 ms) and whether
it exits through the end of the script or sys.exit.
"""

import sys
import threading
import time
import _thread

seed = int(sys.argv[1])
held = threading.Lock()
held.acquire()  # never released
rheld = threading.RLock()
rheld.acquire()  # owned by the main thread until the end
forever = threading.Event()
local = threading.local()
raw_local = _thread._local()
ready = threading.Semaphore(0)
STATES = []


def state(fn):
    STATES.append(fn)
    return fn


@state
def running_python():
    ready.release()
    n = 0
    while True:
        n += 1


@state
def in_acquire():
    ready.release()
    held.acquire()


@state
def in_timed_acquire():
    ready.release()
    while True:
        held.acquire(timeout=0.0005)


@state
def in_rlock_acquire():
    ready.release()
    rheld.acquire()


@state
def in_join():
    t = threading.Thread(target=forever.wait, daemon=True)
    t.start()
    ready.release()
    t.join()


@state
def in_timed_join():
    t = threading.Thread(target=forever.wait, daemon=True)
    t.start()
    ready.release()
    while True:
        t.join(0.0005)


@state
def in_condition_wait():
    cond = threading.Condition()
    ready.release()
    with cond:
        cond.wait()


# 3.15 refuses lock waits once the interpreter finalizes (the built-in as
# well): a teardown that runs then gets this, and says nothing.
REFUSED = getattr(__builtins__, "PythonFinalizationError", ())


class Noisy:
    """A `_local` value whose teardown runs Python and touches locks."""

    def __del__(self):
        with threading.Lock():
            sum(range(200))
        try:
            held.acquire(timeout=0.0001)
        except REFUSED:
            pass


def teardown_once():
    local.value = Noisy()
    raw_local.value = Noisy()
    scratch = threading.local()
    scratch.value = Noisy()


@state
def in_local_teardown():
    # Threads that end, and whose `_local` values die with them, again and again.
    ready.release()
    while True:
        t = threading.Thread(target=teardown_once, daemon=True)
        t.start()
        t.join()
        _thread.start_new_thread(teardown_once, ())


@state
def starting_threads():
    ready.release()
    while True:
        threading.Thread(target=sum, args=(range(100),), daemon=True).start()
        _thread.start_new_thread(sum, (range(100),))
        if hasattr(_thread, "start_joinable_thread"):
            _thread.start_joinable_thread(lambda: None, daemon=True)


@state
def in_c_call():
    # sum() over a range is one C call that keeps the GIL throughout (a few
    # ms each here): at exit the main thread waits for it.
    ready.release()
    while True:
        sum(range(500_000))


for fn in STATES:
    threading.Thread(target=fn, daemon=True).start()
for _ in STATES:
    ready.acquire()
time.sleep((seed % 7) * 0.0005)
# Starting as exit begins.
for _ in range(4):
    threading.Thread(target=local.__dict__.get, args=("x",), daemon=True).start()
    _thread.start_new_thread(teardown_once, ())
print(f"exiting with {threading.active_count()} threads", flush=True)
if seed % 2:
    sys.exit(0)
