"""Two threads that take two locks in opposite orders: a deadlock for rthread's watchdog.

    RTHREAD=1 RTHREAD_WATCHDOG=2 RTHREAD_ON_HANG=exit python examples/deadlock.py
"""
import threading

accounts = threading.Lock()
audit_log = threading.Lock()

def transfer():
    with accounts:
        step.wait()
        with audit_log:
            pass

def report():
    with audit_log:
        step.wait()
        with accounts:
            pass

step = threading.Barrier(2)
workers = [threading.Thread(target=transfer, name="transfer"),
           threading.Thread(target=report, name="report")]
for t in workers:
    t.start()
for t in workers:
    t.join()
