"""``python -m rthread``: command-line entry point.

    python -m rthread bench [options]     side-by-side benchmarks vs the built-in
"""

import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from . import _bench

        return _bench.main(argv[1:])
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
