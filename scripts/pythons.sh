#!/usr/bin/env bash
# Lists the CPython interpreters rthread supports that this machine has, one
# "VERSION PATH" line each (3.9 .. 3.15): pyenv's newest patch release first,
# else pythonX.Y on PATH. Set RTHREAD_PYTHONS="3.11 3.13" to restrict the set.
set -u
wanted=${RTHREAD_PYTHONS:-"3.9 3.10 3.11 3.12 3.13 3.14 3.15"}
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
for v in $wanted; do
  found=""
  for p in $(ls -d "$root"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V -r); do
    if [ -x "$p" ]; then found=$p; break; fi
  done
  if [ -z "$found" ]; then
    found=$(command -v "python$v" 2>/dev/null || true)
  fi
  if [ -n "$found" ] && "$found" -c 'import sys; assert sys.implementation.name == "cpython"' 2>/dev/null; then
    echo "$v $found"
  fi
done
