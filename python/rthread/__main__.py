"""``python -m rthread``: command-line entry point.

    python -m rthread script.py [args]    run a program as python would, on rthread
    python -m rthread -m module [args]    run a module as python -m would, on rthread
    python -m rthread -c command [args]   run a command as python -c would, on rthread
    python -m rthread bench [options]     side-by-side benchmarks vs the built-in

``python -m rthread --help`` tells more. Nothing here may import ``threading`` (or
any other module that binds ``_thread``) before rthread is installed.
"""

import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from . import _bench

        return _bench.main(argv[1:])
    from . import _run

    return _run.main(argv)


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
