"""Two threads take two locks in opposite orders, at different times: no deadlock in this
run, but one waiting to happen. rthread's lock-order checking reports it.

    RTHREAD=1 RTHREAD_LOCKDEP=warn python examples/lock_order.py
    python -m rthread --lockdep raise examples/lock_order.py
"""
import threading

accounts = threading.Lock()
audit_log = threading.Lock()


def transfer():
    with accounts:
        with audit_log:
            pass


def report():
    with audit_log:
        with accounts:
            pass


for work in (transfer, report):  # one after the other: this run cannot deadlock
    t = threading.Thread(target=work, name=work.__name__)
    t.start()
    t.join()
