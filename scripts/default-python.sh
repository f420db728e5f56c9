#!/usr/bin/env bash
# Prints "VERSION PATH" of the interpreter `make demo` and `make bench` use:
# DEMO_VERSION (default: python3's version) if found, else the newest found.
set -euo pipefail
here=$(dirname "$0")
want=${DEMO_VERSION:-$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)}
found=$("$here/pythons.sh")
line=$(awk -v v="$want" '$1==v' <<< "$found" | head -n1)
[ -n "$line" ] || line=$(tail -n1 <<< "$found")
[ -n "$line" ] || { echo "no CPython 3.9-3.15 found (pyenv or pythonX.Y on PATH)" >&2; exit 1; }
echo "$line"
