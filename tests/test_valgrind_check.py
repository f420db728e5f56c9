"""scripts/valgrind_check.py: which memcheck errors it blames on rthread, on small XML reports
shaped like valgrind's (--xml=yes, protocol 4)."""

import importlib.util
import pathlib

import pytest

_path = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "valgrind_check.py"
_spec = importlib.util.spec_from_file_location("valgrind_check", _path)
vc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vc)

RTHREAD_SO = "/x/site-packages/rthread/_rthread.cpython-311-x86_64-linux-gnu.so"
LIBPYTHON = "/x/lib/libpython3.11.so.1.0"
PRELOAD = "/usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so"


def frame(fn, obj):
    return f"<frame><ip>0x1</ip><obj>{obj}</obj><fn>{fn}</fn></frame>"


def stack(*frames):
    return "<stack>" + "".join(frame(fn, obj) for fn, obj in frames) + "</stack>"


def error(kind, *stacks, leaked=None):
    body = f"<kind>{kind}</kind>"
    if leaked is None:
        body += "<what>w</what>"
    else:
        body += (
            f"<xwhat><text>{leaked} bytes lost</text><leakedbytes>{leaked}</leakedbytes>"
            "<leakedblocks>1</leakedblocks></xwhat>"
        )
    for i, s in enumerate(stacks):
        if i:
            body += "<auxwhat>Block was alloc'd at</auxwhat>"
        body += s
    return f"<error><unique>0x1</unique><tid>1</tid>{body}</error>"


def report(tmp_path, *errors):
    p = tmp_path / "memcheck.xml"
    p.write_text(
        '<?xml version="1.0"?><valgrindoutput><protocolversion>4</protocolversion>'
        + "".join(errors)
        + "</valgrindoutput>"
    )
    return str(p)


# An allocation made by rthread's own code through the C API: rthread's.
OURS = stack(
    ("malloc", PRELOAD),
    ("PyType_FromModuleAndSpec", LIBPYTHON),
    ("_rthread::local::register", RTHREAD_SO),
    ("_PyEval_EvalFrameDefault", LIBPYTHON),
)
# Python code run by a thread that rthread started: rthread is only at the base.
THEIRS = stack(
    ("malloc", PRELOAD),
    ("_PyLong_New", LIBPYTHON),
    ("_PyEval_EvalFrameDefault", LIBPYTHON),
    ("PyObject_Call", LIBPYTHON),
    ("_rthread::thread::bootstrap", RTHREAD_SO),
)
# A stack that never reaches rthread.
CPYTHON = stack(("malloc", PRELOAD), ("PyThread_allocate_lock", LIBPYTHON))


def run(tmp_path, capsys, *errors):
    ok, stats = vc.check(report(tmp_path, *errors), "t", show=5)
    return ok, stats, capsys.readouterr().out


def test_definite_leak_by_rthread_fails(tmp_path, capsys):
    ok, stats, out = run(tmp_path, capsys, error("Leak_DefinitelyLost", OURS, leaked=48))
    assert not ok
    assert stats["Leak_DefinitelyLost.bytes.rthread"] == 48
    assert "FAIL" in out and "_rthread::local::register" in out


@pytest.mark.parametrize("where", [THEIRS, CPYTHON], ids=["python-code-in-our-thread", "cpython"])
def test_leaks_not_by_rthread_pass(tmp_path, capsys, where):
    ok, stats, out = run(tmp_path, capsys, error("Leak_DefinitelyLost", where, leaked=96))
    assert ok
    assert stats["Leak_DefinitelyLost.bytes"] == 96
    assert stats["Leak_DefinitelyLost.bytes.rthread"] == 0
    assert "-> ok" in out


def test_possibly_lost_by_rthread_is_reported_not_fatal(tmp_path, capsys):
    ok, stats, out = run(tmp_path, capsys, error("Leak_PossiblyLost", OURS, leaked=700))
    assert ok
    assert stats["Leak_PossiblyLost.bytes.rthread"] == 700
    assert "possibly lost 700 B (rthread 700 B" in out


def test_invalid_read_in_rthread_fails(tmp_path, capsys):
    where = stack(
        ("rthread_core::lock::RawLock::release", RTHREAD_SO),
        ("_PyEval_EvalFrameDefault", LIBPYTHON),
    )
    ok, stats, _ = run(tmp_path, capsys, error("InvalidRead", where), error("UninitValue", THEIRS))
    assert not ok
    assert stats["errors"] == 2 and stats["errors.rthread"] == 1


def test_invalid_read_of_a_block_rthread_freed_fails(tmp_path, capsys):
    # The read is in CPython, but the block was freed by rthread's code: the aux stack blames it.
    freed = stack(("free", PRELOAD), ("_rthread::local::drop_slot", RTHREAD_SO))
    ok, _, _ = run(tmp_path, capsys, error("InvalidRead", CPYTHON, freed))
    assert not ok


def test_cpython_errors_alone_pass(tmp_path, capsys):
    ok, stats, out = run(tmp_path, capsys, error("UninitValue", THEIRS), error("UninitCondition", CPYTHON))
    assert ok
    assert stats["errors"] == 2 and stats["errors.rthread"] == 0
    assert "UninitCondition 1, UninitValue 1" in out


def test_main_exit_status(tmp_path, monkeypatch, capsys):
    bad = report(tmp_path, error("InvalidWrite", OURS))
    monkeypatch.setattr("sys.argv", ["valgrind_check.py", bad])
    assert vc.main() == 1
    monkeypatch.setattr("sys.argv", ["valgrind_check.py", str(tmp_path / "missing.xml")])
    assert vc.main() == 1
    assert "cannot read" in capsys.readouterr().out


def test_definite_leak_at_import_is_counted_apart(tmp_path, capsys):
    # A string made by a C API call in the module's init (interned, kept for the process).
    init = stack(
        ("malloc", PRELOAD),
        ("PyUnicode_New", LIBPYTHON),
        ("pyo3::types::module::PyModuleMethods::add_function", RTHREAD_SO),
        ("_rthread::_rthread::_PYO3_DEF::__pyo3_module_exec", RTHREAD_SO),
        ("PyModule_ExecDef", LIBPYTHON),
    )
    ok, stats, out = run(tmp_path, capsys, error("Leak_DefinitelyLost", init, leaked=50))
    assert ok
    assert stats["Leak_DefinitelyLost.bytes.import"] == 50
    assert stats["Leak_DefinitelyLost.bytes.rthread"] == 0
    assert "(rthread 0 B, at import 50 B)" in out
