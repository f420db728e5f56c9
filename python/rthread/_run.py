"""``python -m rthread PROGRAM``: run a program as plain ``python`` would, on rthread.

rthread is made the process's ``_thread`` first, then the program runs through the
public ``runpy`` API (``run_path`` for a script, directory or zip file, ``run_module``
for ``-m``), with what plain ``python`` does and ``runpy`` does not redone around it:

- ``sys.argv`` and ``sys.path[0]`` are the ones ``python PROGRAM`` would have set;
- the program's module stays ``sys.modules['__main__']`` after its code returns, for
  the non-daemon threads, ``atexit`` handlers and an interactive ``-i`` prompt that
  still use it (``runpy`` would put the ``__main__`` of ``-m rthread`` back);
- its namespace holds the same names as under plain ``python`` (``__loader__``,
  ``__builtins__`` as a module, ``__annotations__``, ``__package__``);
- the exit status is the interpreter's own (an uncaught exception propagates out
  unchanged, so SystemExit codes, exit status 1 and death by SIGINT after an
  uncaught KeyboardInterrupt all come from the interpreter), and the traceback
  printed starts at the program's first frame, without ``runpy`` and rthread frames;
- a missing script or module is reported with plain ``python``'s message and status.

This module is imported before rthread is active: at module level it may only
import modules that are already loaded and bind nothing of ``_thread``.
"""

import os
import sys

USAGE = """\
usage: python [python options] -m rthread [options] PROGRAM [args ...]

Runs PROGRAM as plain python would, with rthread as the process's _thread:

  python -m rthread script.py [args]    a script (or a directory or zip file with __main__.py)
  python -m rthread -m module [args]    a module, as python -m module
  python -m rthread -c command [args]   a command string, as python -c command
  python -m rthread - [args]            a program read from (non-interactive) standard input
  python -m rthread bench [options]     benchmarks against the built-in _thread (bench --help)

Only this process runs on rthread. To put its child processes (subprocess with
sys.executable, multiprocessing spawn, -I children) on rthread too, set RTHREAD=1 in the
environment instead: the 00-rthread.pth file installed with rthread then activates rthread
in every interpreter that starts with it (python -S skips .pth files). A script named
"bench" runs as ./bench.

Options (before PROGRAM):
  -h, --help              show this help and exit
  --watchdog SECONDS      report any thread that waits longer than SECONDS for a lock,
                          a join, a Condition, Event or Queue, and any deadlock cycle:
                          who holds what, who waits for what, with every thread's stack
  --on-hang ACTION        what the watchdog does then: report (default: print the report
                          on stderr, once per hang), exit (print it, then end the process
                          with a non-zero status), raise (print it and break a deadlock cycle:
                          one waiter, the main thread when it is in the cycle or waits on
                          it, gets rthread.debug.DeadlockError out of acquire() or join())
  --report-signal SIGNAL  print the report when the process gets SIGNAL (a name such as
                          SIGUSR1, or a number), as often as it comes
  --profile-locks FILE    profile lock contention for the whole run: write FILE at exit
                          (FILE.speedscope.json: speedscope; FILE.json: JSON; FILE.collapsed,
                          .folded or .txt: collapsed stacks; else the text table) and print
                          the top of the table on stderr (see rthread.profile)
  --lockdep MODE          check the order in which locks are taken: the first acquire that
                          takes two locks (by creation line) in the opposite order of one
                          seen before, which two threads can turn into a deadlock, warns
                          (warn: rthread.debug.LockOrderWarning, through warnings) or raises
                          (raise: rthread.debug.LockOrderError) before it blocks
  --                      end of options: the next argument is the script, even if it
                          starts with -

With RTHREAD=1, the environment variables RTHREAD_WATCHDOG=SECONDS, RTHREAD_ON_HANG=ACTION,
RTHREAD_REPORT_SIGNAL=SIGNAL and RTHREAD_LOCKDEP=MODE do the same, in every interpreter that
starts with them (this process and its children); so does RTHREAD_PROFILE=FILE (children
write FILE with .PID before its extension).
"""

class _UsageError(Exception):
    pass


# Options taking a value: option -> (parser, key of the options dict).
def _option_parsers():
    from ._debug_options import parse_action, parse_lockdep, parse_seconds, parse_signal

    return {
        "--watchdog": (parse_seconds, "watchdog"),
        "--on-hang": (parse_action, "action"),
        "--report-signal": (parse_signal, "report_signal"),
        "--profile-locks": (_parse_path, "profile_locks"),
        "--lockdep": (parse_lockdep, "lockdep"),
    }


def _parse_path(value):
    if not value:
        raise ValueError("a file name is needed")
    return value


def _parse_options(argv):
    """``(options, rest)``: the options that come before the program, parsed strictly."""
    options = {}
    parsers = None
    index = 0
    while index < len(argv):
        word = argv[index]
        if not word.startswith("--") or word == "--":
            break
        name, equals, value = word.partition("=")
        if parsers is None:
            parsers = _option_parsers()
        if name not in parsers:
            if name in ("--help",) and not equals:
                break
            raise _UsageError("unknown option %s (python's own options go before -m rthread)"
                              % name)
        if not equals:
            if index + 1 >= len(argv):
                raise _UsageError("argument expected for the %s option" % name)
            index += 1
            value = argv[index]
        parser, key = parsers[name]
        try:
            options[key] = parser(value)
        except ValueError as exc:
            raise _UsageError("%s: %s" % (name, exc))
        index += 1
    if "action" in options and "watchdog" not in options:
        raise _UsageError("--on-hang needs --watchdog SECONDS")
    return options, argv[index:]


def _parse(argv):
    """``(kind, target, args, options)``: kind is "help", "script", "module", "command"
    or "stdin"; options are the keyword arguments of _debug_options.apply()."""
    options, argv = _parse_options(argv)
    if not argv:
        raise _UsageError("a program is expected after the options" if options else None)
    first = argv[0]
    if first in ("-h", "--help"):
        return "help", None, [], {}
    if first == "--":
        if len(argv) < 2:
            raise _UsageError("-- must be followed by a script")
        return "script", argv[1], argv[2:], options
    if first == "-":
        return "stdin", "-", argv[1:], options
    if first.startswith("-m") or first.startswith("-c"):
        kind = "module" if first[1] == "m" else "command"
        if len(first) > 2:
            return kind, first[2:], argv[1:], options
        if len(argv) < 2:
            raise _UsageError("argument expected for the %s option" % first)
        return kind, argv[1], argv[2:], options
    if first.startswith("-"):
        raise _UsageError("unknown option %s (python's own options go before -m rthread)" % first)
    if first == "bench" and options:
        raise _UsageError("the options above are for programs, not bench "
                          "(a script named bench runs as ./bench)")
    return "script", first, argv[1:], options


def _activate():
    """Makes rthread the process's ``_thread``; a message saying why not, or None.

    install() itself moves the standard-library modules the interpreter imports
    before this runs (3.9 - 3.11: runpy -> importlib.util -> contextlib ->
    functools, reprlib) to rthread; anything else that got there first makes
    activation fail, changing nothing."""
    import rthread

    if rthread.active():
        return None
    try:
        rthread.install()
    except RuntimeError as exc:
        builtin = sys.modules.get("_thread")
        finder = getattr(rthread, "_late_users", None)
        late = finder(builtin) if finder is not None and builtin is not None else []
        if not late:
            return "cannot run on rthread: %s" % exc
        return (
            "cannot run on rthread: %s imported the built-in _thread during interpreter "
            "start-up, before -m rthread ran (a .pth file, sitecustomize or usercustomize?). "
            "Set RTHREAD=1 instead: rthread's own .pth file activates it before those run."
            % ", ".join(repr(name) for name in late)
        )
    return None


def _is_noise(namespace, own):
    """Whether a frame running in ``namespace`` is runpy's or this launcher's."""
    if any(namespace is ns for ns in own):
        return True
    if namespace.get("__name__") in ("runpy", "rthread.__main__", __name__):
        return True
    spec = namespace.get("__spec__")
    return getattr(spec, "name", None) == "rthread.__main__"


def _strip(tb, own):
    while tb is not None and _is_noise(tb.tb_frame.f_globals, own):
        tb = tb.tb_next
    return tb


def _report_without_noise(exc, own):
    """Lets the interpreter report ``exc`` as usual (message, exit status 1, SIGINT
    exit for KeyboardInterrupt, ``sys.last_*``), but shows whatever
    ``sys.excepthook`` is in place the traceback from the program's first frame."""
    previous = sys.excepthook

    def excepthook(exc_type, value, tb):
        if sys.excepthook is excepthook:
            sys.excepthook = previous
        if value is exc:
            tb = _strip(tb, own)
            value.__traceback__ = tb
            if getattr(sys, "last_value", None) is value:
                sys.last_traceback = tb
        return previous(exc_type, value, tb)

    sys.excepthook = excepthook


class _Start:
    """Profile function that sees the program's module code start: it then turns
    itself off, keeps the program's module (``runpy``'s temporary ``__main__``)
    and makes its namespace and ``sys.argv[0]`` what plain python would have."""

    def __init__(self, fix):
        self.fix = fix
        self.module = None
        self.argv0 = None

    def __call__(self, frame, event, arg):
        if event != "call" or frame.f_code.co_name != "<module>":
            return
        module = sys.modules.get("__main__")
        if getattr(module, "__dict__", None) is not frame.f_globals:
            return
        sys.setprofile(None)
        self.module = module
        self.fix(frame.f_globals)
        self.argv0 = sys.argv[0] if sys.argv else None


def _script_loader(path):
    """The loader plain python gives a script's ``__main__``."""
    from importlib.machinery import SourceFileLoader, SourcelessFileLoader
    from importlib.util import MAGIC_NUMBER

    try:
        with open(path, "rb") as f:
            compiled = path.endswith(".pyc") or f.read(len(MAGIC_NUMBER)) == MAGIC_NUMBER
    except OSError:
        compiled = path.endswith(".pyc")
    return (SourcelessFileLoader if compiled else SourceFileLoader)("__main__", path)


def _run_code(kind, target, args, own):
    """Runs ``-c`` code or a program read from stdin in a fresh ``__main__``."""
    import builtins
    from importlib.machinery import BuiltinImporter

    if kind == "stdin":
        if sys.stdin is None or sys.stdin.isatty():
            print("rthread: no interactive mode: pipe a program into -m rthread -, or use -c",
                  file=sys.stderr)
            return 2
        source, filename = sys.stdin.buffer.read(), "<stdin>"
    else:
        source, filename = target, "<string>"
    module = type(sys)("__main__")
    namespace = module.__dict__
    namespace.update(__loader__=BuiltinImporter, __builtins__=builtins)
    if "__annotations__" in own[0]:
        namespace["__annotations__"] = {}
    if kind == "stdin":
        namespace["__file__"] = "<stdin>"
        if sys.version_info < (3, 15):
            namespace["__cached__"] = None  # 3.15's python - no longer sets it
    sys.argv[:] = ["-c" if kind == "command" else "-", *args]
    sys.modules["__main__"] = module
    try:
        code = compile(source, filename, "exec")
        if kind == "command" and sys.version_info >= (3, 13):
            _remember_command(code, source, filename)
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as exc:
        _report_without_noise(exc, own)
        raise
    return 0


def _remember_command(code, source, filename):
    """Puts the source of a ``-c`` command in linecache as python -c does (3.13+),
    so that tracebacks show its lines: 3.13 keys the entry by file name, 3.14+
    by code object (``linecache._register_code``, what the interpreter calls)."""
    import linecache

    register = getattr(linecache, "_register_code", None)
    if sys.version_info >= (3, 14) and register is not None:
        register(code, source, filename)
    else:
        lines = [line + "\n" for line in source.splitlines()]
        linecache.cache[filename] = (len(source), None, lines, filename)


def _run_runpy(kind, target, args, own):
    """Runs a script, directory, zip file or ``-m`` module through runpy."""
    import builtins
    import runpy

    own.append(vars(runpy))
    main_namespace = own[0]
    annotations = "__annotations__" in main_namespace
    plain_file = False
    path_entry = None

    if kind == "script":
        path = target if os.path.isabs(target) else os.path.join(os.getcwd(), target)
        from pkgutil import get_importer

        plain_file = get_importer(path) is None
        if _cwd_was_inserted():
            if plain_file:
                sys.path[0] = os.path.dirname(os.path.realpath(path))
            else:
                # run_path puts the directory or zip file in front of sys.path
                # while the program runs (and takes it out afterwards).
                del sys.path[0]
                path_entry = path
        sys.argv[:] = [target, *args]

        def run():
            runpy.run_path(path, run_name="__main__")
    else:
        sys.argv[:] = ["-m", *args]

        def run():
            runpy.run_module(target, run_name="__main__", alter_sys=True)

    def fix(namespace):
        namespace["__builtins__"] = builtins
        if annotations:
            namespace.setdefault("__annotations__", {})
        if plain_file:
            if namespace.get("__loader__") is None and namespace.get("__spec__") is None:
                namespace["__loader__"] = _script_loader(namespace.get("__file__", path))
            namespace["__package__"] = None
        if kind == "script" and sys.argv:
            sys.argv[0] = target

    start = _Start(fix)
    hooked = sys.getprofile() is None
    if hooked:
        sys.setprofile(start)
    try:
        run()
    except SystemExit:
        raise
    except BaseException as exc:
        message = None if start.module is not None else _not_started(kind, target, exc, own)
        if message is not None:
            text, status = message
            print(text, file=sys.stderr)
            return status
        _report_without_noise(exc, own)
        raise
    finally:
        if hooked and sys.getprofile() is start:
            sys.setprofile(None)
        if start.module is not None:
            # runpy put back the __main__ of -m rthread: the program's module
            # stays __main__ for the threads and atexit handlers still running.
            sys.modules["__main__"] = start.module
            if sys.argv and start.argv0 is not None:
                sys.argv[0] = start.argv0
            if path_entry is not None and path_entry not in sys.path:
                sys.path.insert(0, path_entry)
    return 0


def _cwd_was_inserted():
    """Whether python put the working directory in front of sys.path for -m rthread."""
    if sys.flags.isolated or getattr(sys.flags, "safe_path", False):
        return False
    return bool(sys.path) and sys.path[0] == os.getcwd()


def _not_started(kind, target, exc, own):
    """Plain python's message and status when the program cannot start at all."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_by_runpy = tb is not None and any(tb.tb_frame.f_globals is ns for ns in own)
    if not raised_by_runpy:
        return None
    program = getattr(sys, "orig_argv", None) or [sys.executable]
    if kind == "script" and isinstance(exc, OSError) and exc.errno is not None:
        path = target if os.path.isabs(target) else os.path.join(os.getcwd(), target)
        return "%s: can't open file %r: [Errno %d] %s" % (
            program[0], path, exc.errno, exc.strerror), 2
    if type(exc) is ImportError:
        return "%s: %s" % (sys.executable, exc), 1
    return None


def _describe_options(options):
    words = []
    if "watchdog" in options:
        words.append("--watchdog")
    if "report_signal" in options:
        words.append("--report-signal")
    if "lockdep" in options:
        words.append("--lockdep")
    return " and ".join(words)


def main(argv):
    try:
        kind, target, args, options = _parse(argv)
    except _UsageError as exc:
        if not exc.args[0]:
            print(USAGE, end="", file=sys.stderr)
        else:
            # As argparse does: the usage line, the error, status 2.
            print(USAGE.splitlines()[0], file=sys.stderr)
            print("rthread: error: %s (python -m rthread --help tells more)" % exc.args[0],
                  file=sys.stderr)
        return 2
    if kind == "help":
        print(USAGE, end="")
        return 0
    problem = _activate()
    if problem is not None:
        print("rthread: " + problem, file=sys.stderr)
        return 1
    profile_locks = options.pop("profile_locks", None)
    if profile_locks is not None:
        try:
            from . import profile

            profile.profile_run(profile_locks)
        except Exception as exc:
            print("rthread: cannot set up --profile-locks: %s: %s" % (type(exc).__name__, exc),
                  file=sys.stderr)
            return 1
    if options:
        from . import _debug_options

        try:
            _debug_options.apply(**options)
        except Exception as exc:
            print("rthread: cannot set up %s: %s" % (
                _describe_options(options), _debug_options.describe_failure(exc)),
                file=sys.stderr)
            return 1
    main_module = sys.modules.get("__main__")
    # Namespaces whose frames are left out of tracebacks: the interpreter's
    # __main__ (running -m rthread's __main__.py) and this module; runpy's is
    # added when it is used.
    own = [vars(main_module) if main_module is not None else {}, globals()]
    if kind in ("command", "stdin"):
        if _cwd_was_inserted():
            sys.path[0] = ""
        return _run_code(kind, target, args, own)
    return _run_runpy(kind, target, args, own)
