"""OS-visible thread names: set_name / _get_name / _NAME_MAXLEN (CPython 3.14's
API, offered by rthread on every version)."""

import rthread
from test_threads import gettid, run_in_thread


def _comm():
    """What the kernel (and so top -H, ps -L, gdb) shows for this thread."""
    with open(f"/proc/self/task/{gettid()}/comm", encoding="utf-8", errors="replace") as f:
        return f.read().rstrip("\n")


def test_maxlen_is_linux_limit():
    assert rthread._NAME_MAXLEN == 15


def test_set_name_is_what_the_os_shows():
    def work():
        rthread.set_name("worker-1")
        return _comm(), rthread._get_name()

    assert run_in_thread(rthread, work) == ("worker-1", "worker-1")


def test_long_names_are_cut_to_maxlen_bytes():
    def work():
        rthread.set_name("a-very-long-thread-name")
        return _comm()

    assert run_in_thread(rthread, work) == "a-very-long-thr"


def test_cut_never_splits_a_utf8_character():
    def work():
        rthread.set_name("é" * 10)  # 20 bytes in UTF-8
        return rthread._get_name()

    assert run_in_thread(rthread, work) == "é" * 7  # 14 bytes, not 15


def test_keyword_and_errors():
    def work():
        rthread.set_name(name="kw")
        out = [rthread._get_name()]
        for bad in (1, None, b"bytes"):
            try:
                rthread.set_name(bad)
            except TypeError:
                out.append("TypeError")
        try:
            rthread.set_name("a\0b")
        except ValueError:
            out.append("ValueError")
        out.append(rthread._get_name())
        return out

    assert run_in_thread(rthread, work) == ["kw", "TypeError", "TypeError", "TypeError", "ValueError", "kw"]


def test_names_are_per_thread():
    main_before = rthread._get_name()
    run_in_thread(rthread, rthread.set_name, "other")
    assert rthread._get_name() == main_before
