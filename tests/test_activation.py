"""The three ways to make rthread the process's ``_thread``: ``rthread.install()``,
``python -m rthread PROGRAM`` and ``RTHREAD=1`` (the ``00-rthread.pth`` file).

Every test runs fresh interpreters: activation is per process and has to happen
before ``threading`` is imported, which pytest itself has long done. Where plain
``python`` is the reference (argv, sys.path[0], ``__main__``, exit status, messages,
tracebacks), the same program runs both ways and the results must be equal.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import rthread

PTH_NAME = "00-rthread.pth"
TIMEOUT = 60

# Prints, as JSON, what a program can see of how it was started. "active" is read
# without importing rthread, so that a plain run stays plain.
PROBE = textwrap.dedent(
    """\
    import json, sys
    _main = sys.modules["__main__"]
    _spec = globals().get("__spec__")
    print(json.dumps({
        "name": __name__,
        "argv": sys.argv,
        "path0": sys.path[0] if sys.path else None,
        "file": globals().get("__file__"),
        "spec": None if _spec is None else _spec.name,
        "package": globals().get("__package__"),
        "loader": type(globals().get("__loader__")).__name__,
        "builtins": type(__builtins__).__name__,
        "names": sorted(globals()),
        "main_is_me": getattr(_main, "__dict__", None) is globals(),
        "active": sys.modules.get("_thread") is getattr(sys.modules.get("rthread"), "_rthread", 0),
    }))
    """
)


def plain_env(**extra):
    """The environment without RTHREAD (whatever the test run itself has), plus extra."""
    env = {k: v for k, v in os.environ.items() if k != "RTHREAD"}
    env.update(extra)
    return env


def run(args, cwd=None, env=None, input=None, executable=None):
    return subprocess.run(
        [executable or sys.executable, *args], cwd=None if cwd is None else str(cwd),
        env=plain_env() if env is None else env, input=input,
        capture_output=True, text=True, timeout=TIMEOUT,
    )


def run_both(args, cwd, input=None):
    """(plain python ARGS, python -m rthread ARGS)."""
    return run(args, cwd=cwd, input=input), run(["-m", "rthread", *args], cwd=cwd, input=input)


def probe_output(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def assert_same_probe(plain, ours):
    plain, ours = probe_output(plain), probe_output(ours)
    assert plain.pop("active") is False
    assert ours.pop("active") is True
    assert ours == plain


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def site_packages():
    return sysconfig.get_paths()["purelib"]


# --------------------------------------------------------------------------------------------
# rthread.install()

THREADING_BINDINGS = textwrap.dedent(
    """\
    import sys, rthread
    rthread.install()
    import threading, _thread
    native = rthread._rthread
    assert rthread.active()
    assert _thread is native and sys.modules["_thread"] is native
    if sys.version_info >= (3, 13):
        assert threading._start_joinable_thread is native.start_joinable_thread
        assert threading.Lock is native.LockType
    else:
        assert threading._start_new_thread is native.start_new_thread
        assert threading.Lock is native.allocate_lock
    assert type(threading.Lock()) is native.LockType
    assert type(threading.RLock()) is native.RLock
    assert threading.get_ident is native.get_ident
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    print("ok")
    """
)


def test_install_then_threading_runs_on_rthread():
    proc = run(["-c", THREADING_BINDINGS])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"


def test_install_after_threading_raises_and_changes_nothing():
    code = textwrap.dedent(
        """\
        import sys, functools, reprlib, warnings, threading, rthread
        before = sys.modules["_thread"]
        movable = [(m, k, v) for m in (functools, reprlib, sys.modules.get("_py_warnings"))
                   if m is not None for k, v in vars(m).items()]
        try:
            rthread.install()
        except RuntimeError as exc:
            print(exc)
        else:
            raise AssertionError("install() did not raise")
        assert sys.modules["_thread"] is before
        assert not rthread.active()
        # Not even the modules install() moves when nothing else is in the way.
        assert all(vars(m)[k] is v for m, k, v in movable)
        """
    )
    proc = run(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert "'threading'" in proc.stdout
    assert "functools" not in proc.stdout and "warnings" not in proc.stdout


def test_install_is_idempotent():
    code = "import sys, rthread; rthread.install(); rthread.install(); import threading; " \
           "rthread.install(); print(rthread.active(), sys.modules['_thread'] is rthread._rthread)"
    proc = run(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True True\n"


def test_active_is_false_by_default():
    proc = run(["-c", "import rthread; print(rthread.active())"])
    assert proc.stdout == "False\n", proc.stderr


# --------------------------------------------------------------------------------------------
# python -m rthread script.py


def test_script_sees_what_plain_python_shows(tmp_path):
    write(tmp_path / "sub" / "probe.py", PROBE)
    assert_same_probe(*run_both(["sub/probe.py", "a", "-b", "--c"], cwd=tmp_path))


def test_script_through_a_symlink(tmp_path):
    write(tmp_path / "real" / "probe.py", PROBE)
    (tmp_path / "links").mkdir()
    os.symlink(tmp_path / "real" / "probe.py", tmp_path / "links" / "probe.py")
    assert_same_probe(*run_both(["links/probe.py"], cwd=tmp_path))


def test_script_under_isolated_mode(tmp_path):
    write(tmp_path / "probe.py", PROBE)
    plain = run(["-I", "probe.py", "x"], cwd=tmp_path)
    ours = run(["-I", "-m", "rthread", "probe.py", "x"], cwd=tmp_path)
    assert_same_probe(plain, ours)


def test_directory_and_zip_with_main(tmp_path):
    write(tmp_path / "app" / "__main__.py", PROBE)
    assert_same_probe(*run_both(["app", "x"], cwd=tmp_path))
    shutil.make_archive(str(tmp_path / "app"), "zip", str(tmp_path / "app"))
    assert_same_probe(*run_both(["app.zip", "y"], cwd=tmp_path))


def test_script_is_main_and_threading_runs_on_rthread(tmp_path):
    write(tmp_path / "s.py", """\
        import sys, threading, rthread
        import __main__
        assert __main__.__dict__ is globals()
        assert rthread.active()
        assert threading.get_ident is rthread.get_ident
        if __name__ == "__main__":
            print("main")
        """)
    proc = run(["-m", "rthread", "s.py"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "main\n", "")


@pytest.mark.parametrize("body, status", [
    ("pass", 0),
    ("import sys; sys.exit(3)", 3),
    ("raise SystemExit(0)", 0),
    ("import sys; sys.exit('bye: a message')", 1),
    ("import sys; sys.exit(None)", 0),
    ("import os, sys; sys.stdout.flush(); os._exit(7)", 7),
])
def test_exit_status(tmp_path, body, status):
    write(tmp_path / "s.py", "print('out')\n" + body + "\n")
    plain, ours = run_both(["s.py"], cwd=tmp_path)
    assert plain.returncode == status
    assert (ours.returncode, ours.stdout, ours.stderr) == (status, plain.stdout, plain.stderr)


UNCAUGHT = """\
    import sys

    def inner():
        raise ValueError("boom")

    def outer():
        try:
            inner()
        except ValueError as exc:
            raise KeyError("wrapped") from exc

    if __name__ == "__main__":
        outer()
    """


def test_uncaught_exception_prints_plain_traceback(tmp_path):
    write(tmp_path / "s.py", UNCAUGHT)
    plain, ours = run_both(["s.py"], cwd=tmp_path)
    assert plain.returncode == 1
    assert (ours.returncode, ours.stderr) == (1, plain.stderr)
    assert "runpy" not in ours.stderr and "rthread" not in ours.stderr
    assert ours.stderr.startswith('Traceback (most recent call last):\n  File "%s"'
                                  % os.path.join(str(tmp_path), "s.py"))


def test_uncaught_exception_goes_through_the_programs_excepthook(tmp_path):
    write(tmp_path / "s.py", """\
        import sys, traceback
        def hook(t, v, tb):
            print("hook:", t.__name__, [f.name for f in traceback.extract_tb(tb)], file=sys.stderr)
        sys.excepthook = hook
        def f():
            raise OSError("x")
        f()
        """)
    plain, ours = run_both(["s.py"], cwd=tmp_path)
    assert plain.stderr == "hook: OSError ['<module>', 'f']\n"
    assert (ours.returncode, ours.stderr) == (1, plain.stderr)


def test_keyboard_interrupt_ends_like_plain_python(tmp_path):
    write(tmp_path / "s.py", "print('started', flush=True)\nraise KeyboardInterrupt\n")
    plain, ours = run_both(["s.py"], cwd=tmp_path)
    assert plain.returncode == -2  # killed by SIGINT: a shell shows 130
    assert (ours.returncode, ours.stdout, ours.stderr) == (-2, plain.stdout, plain.stderr)


def test_syntax_error_and_missing_script(tmp_path):
    write(tmp_path / "bad.py", "def (:\n")
    plain, ours = run_both(["bad.py"], cwd=tmp_path)
    assert plain.returncode == 1
    assert (ours.returncode, ours.stderr) == (1, plain.stderr)
    plain, ours = run_both(["missing.py"], cwd=tmp_path)
    assert plain.returncode == 2
    assert (ours.returncode, ours.stderr) == (2, plain.stderr)
    (tmp_path / "nomain").mkdir()
    plain, ours = run_both(["nomain"], cwd=tmp_path)
    assert plain.returncode == 1
    assert (ours.returncode, ours.stderr) == (1, plain.stderr)


PICKLER = """\
    import pickle, sys, threading, time

    class Point:
        def __init__(self, x):
            self.x = x

    def roundtrip(label):
        p = pickle.loads(pickle.dumps(Point(2)))
        assert type(p) is Point and p.x == 2
        print(label, "ok", flush=True)

    def late():
        time.sleep(0.2)  # the module code has returned by now
        roundtrip("thread")

    if __name__ == "__main__":
        roundtrip("main")
        threading.Thread(target=late).start()
    """


def test_main_module_objects_pickle_also_after_main_returns(tmp_path):
    write(tmp_path / "s.py", PICKLER)
    plain, ours = run_both(["s.py"], cwd=tmp_path)
    assert plain.stdout == "main ok\nthread ok\n", plain.stderr
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, plain.stdout, "")


def test_main_module_stays_for_atexit(tmp_path):
    write(tmp_path / "s.py", """\
        import atexit, sys
        TOKEN = "mine"
        atexit.register(lambda: print(sys.modules["__main__"].TOKEN, sys.argv))
        """)
    plain, ours = run_both(["s.py", "x"], cwd=tmp_path)
    assert plain.stdout == "mine ['s.py', 'x']\n", plain.stderr
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, plain.stdout, "")


def test_double_dash_and_script_named_like_an_option(tmp_path):
    write(tmp_path / "-dash.py", PROBE)
    plain = run(["--", "-dash.py", "q"], cwd=tmp_path)
    ours = run(["-m", "rthread", "--", "-dash.py", "q"], cwd=tmp_path)
    assert_same_probe(plain, ours)


# --------------------------------------------------------------------------------------------
# python -m rthread -m module / -c command / - (stdin)


def test_module_package_main(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "__main__.py", PROBE)
    write(tmp_path / "pkg" / "tool.py", PROBE)
    assert_same_probe(*run_both(["-m", "pkg", "a", "b"], cwd=tmp_path))
    assert_same_probe(*run_both(["-m", "pkg.tool", "c"], cwd=tmp_path))
    assert_same_probe(*run_both(["-mpkg.tool", "d"], cwd=tmp_path))


def test_module_threading_runs_on_rthread(tmp_path):
    write(tmp_path / "mod.py", """\
        import threading, rthread
        assert rthread.active() and threading.get_ident is rthread.get_ident
        print(__name__, __spec__.name)
        """)
    proc = run(["-m", "rthread", "-m", "mod"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "__main__ mod\n", "")


def test_stdlib_module_json_tool(tmp_path):
    data = '{"b": [1, 2], "a": null}'
    plain, ours = run_both(["-m", "json.tool", "--sort-keys"], cwd=tmp_path, input=data)
    assert plain.returncode == 0 and '"a": null' in plain.stdout
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, plain.stdout, plain.stderr)


def test_module_errors_match_plain_python(tmp_path):
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "raising.py", UNCAUGHT)
    for args in (["-m", "no_such_module_here"], ["-m", "pkg"], ["-m", "pkg.missing"]):
        plain, ours = run_both(args, cwd=tmp_path)
        assert plain.returncode == 1
        assert (ours.returncode, ours.stderr) == (1, plain.stderr), args
    plain, ours = run_both(["-m", "raising"], cwd=tmp_path)
    assert plain.returncode == 1
    assert ours.returncode == 1
    assert "rthread" not in ours.stderr and "runpy" not in ours.stderr
    # plain python -m shows runpy's frames first; the rest is the same.
    assert ours.stderr == without_runpy_frames(plain.stderr)


def without_runpy_frames(text):
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith('  File "'):
            skipping = "runpy" in line
        elif not line.startswith("    "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "".join(kept)


def test_command_sees_what_plain_python_shows(tmp_path):
    assert_same_probe(*run_both(["-c", PROBE, "x", "-y"], cwd=tmp_path))
    proc = run(["-m", "rthread", "-c", "import sys; sys.exit(5)"])
    assert proc.returncode == 5


def test_command_and_stdin_errors(tmp_path):
    plain, ours = run_both(["-c", "1/0"], cwd=tmp_path)
    assert plain.returncode == 1
    assert (ours.returncode, ours.stderr) == (1, plain.stderr)
    # (Not an unexpected-EOF error: 3.9's parser places those differently when it reads
    # a file than when it compiles a string.)
    for program in ("x = 1\ny = )\n", "x = 1\n1/0\n"):
        plain, ours = run_both(["-"], cwd=tmp_path, input=program)
        assert plain.returncode == 1
        assert (ours.returncode, ours.stderr) == (1, plain.stderr)


def test_program_from_stdin(tmp_path):
    assert_same_probe(*run_both(["-", "arg"], cwd=tmp_path, input=PROBE))


# --------------------------------------------------------------------------------------------
# python -m rthread: usage, bench, start-up imports


def test_no_arguments_prints_usage():
    proc = run(["-m", "rthread"])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: ")


def test_help():
    proc = run(["-m", "rthread", "--help"])
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: ") and "RTHREAD=1" in proc.stdout
    bad = run(["-m", "rthread", "--bogus"])
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def test_bench_dispatch_still_works():
    proc = run(["-m", "rthread", "bench", "--list"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_startup_users_of_the_builtin_are_moved_to_rthread():
    # 3.9 - 3.11: runpy imports functools and reprlib before -m rthread runs.
    code = textwrap.dedent(
        """\
        import functools, reprlib, threading, rthread
        native = rthread._rthread
        assert functools.RLock is native.RLock, functools.RLock
        assert reprlib.get_ident is native.get_ident
        print(rthread.active())
        """
    )
    proc = run(["-m", "rthread", "-c", code])
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True\n", "")


def test_nothing_binds_the_builtin_before_install():
    # -X importtime lists every import in order: threading must not come before rthread.
    proc = run(["-X", "importtime", "-m", "rthread", "-c", "import threading"])
    assert proc.returncode == 0, proc.stderr
    order = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line]
    assert "rthread._rthread" in order and "threading" in order
    assert order.index("threading") > order.index("rthread._rthread")


def test_explicit_activation_refuses_when_threading_came_first():
    # As if a .pth file or sitecustomize had imported threading at start-up: -m rthread
    # must say so and stop, not run the program on the built-in.
    code = "import sys, threading; from rthread.__main__ import main; " \
           "sys.exit(main(['-c', 'print(1)']))"
    proc = run(["-c", code])
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "'threading'" in proc.stderr and "RTHREAD=1" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# --------------------------------------------------------------------------------------------
# RTHREAD=1 and the .pth file

CHILD_REPORT = "import sys, rthread, threading; " \
               "print(rthread.active(), threading.get_ident is rthread.get_ident)"


def test_pth_file_is_installed_and_sorts_first():
    path = os.path.join(site_packages(), PTH_NAME)
    assert os.path.isfile(path), "the wheel did not install %s" % PTH_NAME
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("import os;")
    # Sorted first among the usual names, so it runs before .pth files that import things.
    usual = ["distutils-precedence.pth", "_virtualenv.pth", "__editable__.x.pth",
             "a1_coverage.pth", "easy-install.pth", "x-nspkg.pth", "0_x.pth", "00_x.pth"]
    assert sorted(usual + [PTH_NAME])[0] == PTH_NAME


@pytest.mark.parametrize("value", [None, "", "0", "2", "yes", " 1"])
def test_without_rthread_1_nothing_is_imported(value):
    env = plain_env() if value is None else plain_env(RTHREAD=value)
    proc = run(["-c", "import sys; print('rthread' in sys.modules, "
                      "[m for m in sys.modules if m.startswith('rthread')])"], env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "False []\n", "")


def test_rthread_1_activates_at_startup():
    env = plain_env(RTHREAD="1")
    proc = run(["-c", THREADING_BINDINGS], env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")
    # Before the program runs: nothing needs to call install().
    proc = run(["-c", "import sys; print(sys.modules['_thread'] is sys.modules['rthread._rthread'])"],
               env=env)
    assert proc.stdout == "True\n", proc.stderr
    proc = run(["-c", "import sys, rthread; print(rthread.active())"], env=env)
    assert proc.stdout == "True\n", proc.stderr


@pytest.mark.parametrize("flags", [["-I"], ["-E"], ["-s"], ["-I", "-X", "faulthandler"]])
def test_rthread_1_reaches_isolated_children(flags):
    proc = run([*flags, "-c", CHILD_REPORT], env=plain_env(RTHREAD="1"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True True\n", "")


def test_rthread_1_reaches_subprocess_children():
    parent = textwrap.dedent(
        """\
        import subprocess, sys, rthread
        assert rthread.active()
        for flags in ([], ["-I"]):
            out = subprocess.run([sys.executable, *flags, "-c", %r],
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip(), out.stderr.strip())
        """ % CHILD_REPORT
    )
    proc = run(["-c", parent], env=plain_env(RTHREAD="1"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True True \nTrue True \n", "")


def test_rthread_1_reaches_multiprocessing_spawn_children(tmp_path):
    write(tmp_path / "mp.py", """\
        import multiprocessing, sys

        def report(queue):
            import rthread, threading
            queue.put((rthread.active(), threading.get_ident is rthread.get_ident))

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=report, args=(queue,))
            child.start()
            print(*queue.get(timeout=30))
            child.join(30)
            print(child.exitcode)
        """)
    proc = run(["mp.py"], cwd=tmp_path, env=plain_env(RTHREAD="1"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True True\n0\n", "")
    # python -m rthread alone activates this process only: the spawn child is plain.
    proc = run(["-m", "rthread", "mp.py"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "False False\n0\n", "")


def test_rthread_1_with_m_rthread(tmp_path):
    write(tmp_path / "probe.py", PROBE)
    ours = run(["-m", "rthread", "probe.py"], cwd=tmp_path, env=plain_env(RTHREAD="1"))
    assert probe_output(ours)["active"] is True
    assert ours.stderr == ""


def _addsitedir_run(tmp_path, extra_pth_name):
    """A -S interpreter that processes a temporary site directory holding a copy of the
    installed 00-rthread.pth and another .pth file that imports threading."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(os.path.join(site_packages(), PTH_NAME), str(site_dir / PTH_NAME))
    write(site_dir / extra_pth_name, "import threading\n")
    code = textwrap.dedent(
        """\
        import sys, site
        sys.path.append(%r)  # rthread itself, without processing that directory's .pth files
        site.addsitedir(%r)
        import rthread, threading
        print(rthread.active(), threading.get_ident is rthread.get_ident)
        """ % (site_packages(), str(site_dir))
    )
    return run(["-S", "-c", code], env=plain_env(RTHREAD="1"))


def test_pth_runs_before_later_pth_files(tmp_path):
    proc = _addsitedir_run(tmp_path, "distutils-precedence.pth")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "True True\n", "")


def test_too_late_at_startup_warns_in_one_line_and_goes_on(tmp_path):
    proc = _addsitedir_run(tmp_path, "0-first.pth")  # sorts before 00-rthread.pth
    assert proc.returncode == 0
    assert proc.stdout == "False False\n"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rthread: RTHREAD=1 ignored") and "'threading'" in lines[0]


def test_startup_module_warns_when_imported_late():
    proc = run(["-c", "import threading, rthread._startup, rthread; print(rthread.active())"])
    assert proc.returncode == 0
    assert proc.stdout == "False\n"
    assert proc.stderr.count("\n") == 1 and "RTHREAD=1 ignored" in proc.stderr


def test_active_reports_the_running_thread_module():
    # In this (pytest) process threading came first: rthread is importable but not active.
    assert rthread.active() is (sys.modules["_thread"] is rthread._rthread)



# --------------------------------------------------------------------------------------------
# Warning options: -W, -X dev and PYTHONWARNINGS import `warnings` before site runs (and,
# with a message or module pattern, `re` -> functools, reprlib); on 3.14+ `warnings`
# brings `_py_warnings`, which binds the built-in module. All three ways must still
# activate rthread, quietly, and the options must work as under plain python.

WARNINGS_PROGRAM = """\
    import sys
    if sys.argv[1:] == ["install"]:
        import rthread
        rthread.install()
    import json, threading, warnings

    def warn_in_thread(out):
        try:
            warnings.warn("from a thread", UserWarning)
            out.append("returned")
        except UserWarning:
            out.append("raised")

    out = []
    t = threading.Thread(target=warn_in_thread, args=(out,))
    t.start()
    t.join()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("caught", UserWarning)
    rthread = sys.modules.get("rthread")
    native = getattr(rthread, "_rthread", None)
    active = native is not None and sys.modules["_thread"] is native
    print(json.dumps({
        "warnoptions": sys.warnoptions,
        "dev_mode": sys.flags.dev_mode,
        "thread": out,
        "caught": [str(w.message) for w in caught],
        "active": active,
        "threading_on_rthread": threading.get_ident is getattr(native, "get_ident", None),
        # Modules still bound to the built-in (none may be, once rthread is active).
        "left_on_builtin": rthread._builtin_users(rthread._builtin_thread()) if active else [],
    }))
    """

WARNING_OPTIONS = {
    "-W error": (["-W", "error"], {}),
    "-X dev": (["-X", "dev"], {}),
    "PYTHONWARNINGS=error::DeprecationWarning": ([], {"PYTHONWARNINGS": "error::DeprecationWarning"}),
    # A message pattern makes warnings import re, hence functools and reprlib.
    "-W ignore:pattern": (["-W", "ignore:no such message:UserWarning"], {}),
    "PYTHONWARNINGS=ignore:pattern": ([], {"PYTHONWARNINGS": "ignore:no such message"}),
}


@pytest.mark.parametrize("how", ["RTHREAD=1", "-m rthread", "install()"])
@pytest.mark.parametrize("options", list(WARNING_OPTIONS))
def test_warning_options_do_not_stop_activation(tmp_path, options, how):
    flags, extra = WARNING_OPTIONS[options]
    write(tmp_path / "s.py", WARNINGS_PROGRAM)
    plain = run([*flags, "s.py"], cwd=tmp_path, env=plain_env(**extra))
    if how == "RTHREAD=1":
        ours = run([*flags, "s.py"], cwd=tmp_path, env=plain_env(RTHREAD="1", **extra))
    elif how == "-m rthread":
        ours = run([*flags, "-m", "rthread", "s.py"], cwd=tmp_path, env=plain_env(**extra))
    else:
        ours = run([*flags, "s.py", "install"], cwd=tmp_path, env=plain_env(**extra))
    expected, got = probe_output(plain), probe_output(ours)
    assert expected["warnoptions"] and not expected["active"]
    assert (got.pop("active"), got.pop("threading_on_rthread"), got.pop("left_on_builtin")) \
        == (True, True, [])
    for key in ("active", "threading_on_rthread", "left_on_builtin"):
        del expected[key]
    assert got == expected
    # Same warnings shown (or none), and nothing from rthread.
    assert ours.stderr == plain.stderr


# --------------------------------------------------------------------------------------------
# Subinterpreters (3.14+): site processes .pth files again in each one, so with RTHREAD=1
# rthread's .pth line runs there too. rthread loads only in the main interpreter; every
# subinterpreter must quietly keep its own built-in _thread.

SUBINTERPRETERS = """\
    import sys, rthread
    from concurrent import interpreters
    from concurrent.futures import InterpreterPoolExecutor

    REPORT = ("(sys.modules['_thread'].__spec__.origin, _thread._is_main_interpreter(),"
              " 'rthread' in sys.modules)")
    print("main", rthread.active(), flush=True)
    with InterpreterPoolExecutor(max_workers=2) as pool:
        job = pool.submit(exec, "import sys, _thread; print(*" + REPORT + ", flush=True)")
        assert job.result(timeout=30) is None
        assert pool.submit(pow, 6, 2).result(timeout=30) == 36
    interp = interpreters.create()
    try:
        interp.exec(
            "import sys, threading, _thread\\n"
            "t = threading.Thread(target=lambda: None)\\n"
            "t.start()\\n"
            "t.join()\\n"
            "print(*" + REPORT + ", flush=True)\\n"
        )
    finally:
        interp.close()
    """


@pytest.mark.skipif(sys.version_info < (3, 14), reason="concurrent.interpreters is new in 3.14")
def test_rthread_1_leaves_subinterpreters_on_the_builtin_quietly(tmp_path):
    write(tmp_path / "s.py", SUBINTERPRETERS)
    proc = run(["s.py"], cwd=tmp_path, env=plain_env(RTHREAD="1"))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "main True\nbuilt-in False False\nbuilt-in False False\n"


# --------------------------------------------------------------------------------------------
# The .pth file processed twice at start-up (a venv whose lib64 is a symlink to lib makes
# site see the same site-packages under two names).


def test_pth_file_processed_twice_is_quiet(tmp_path):
    site_dir = tmp_path / "lib" / "site-packages"
    site_dir.mkdir(parents=True)
    shutil.copy(os.path.join(site_packages(), PTH_NAME), str(site_dir / PTH_NAME))
    # Sorts after 00-rthread.pth: records, each time the directory is processed,
    # whether rthread is active by then.
    write(site_dir / "zz-record.pth",
          "import sys; sys.__dict__.setdefault('_rthread_test_runs', [])"
          ".append(sys.modules['_thread'] is getattr(sys.modules.get('rthread'), '_rthread', 0))\n")
    os.symlink("lib", str(tmp_path / "lib64"))
    code = textwrap.dedent(
        """\
        import sys, site
        sys.path.append(%r)  # rthread itself, without processing that directory's .pth files
        site.addsitedir(%r)
        site.addsitedir(%r)
        import rthread, rthread._startup, threading
        rthread._startup._activate()  # what a second run would do if it were not cached
        rthread.install()
        print(sys._rthread_test_runs, rthread.active(), threading.get_ident is rthread.get_ident)
        """ % (site_packages(), str(site_dir), str(tmp_path / "lib64" / "site-packages"))
    )
    proc = run(["-S", "-c", code], env=plain_env(RTHREAD="1"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[True, True] True True\n", "")
