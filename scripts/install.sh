#!/usr/bin/env bash
# Builds rthread for one interpreter and installs it into that interpreter's
# own virtualenv, .venv/<version>, creating the venv (with the test and build
# tools) on first use. Usage: scripts/install.sh VERSION PYTHON
# Each interpreter gets its own cargo target dir, so switching between them
# does not rebuild PyO3 every time.
set -euo pipefail
version=$1
python=$2
top=$(cd "$(dirname "$0")/.." && pwd)
venv=$top/.venv/$version
if [ ! -x "$venv/bin/maturin" ] || [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  rm -f "$venv/.requirements-dev.sha256"
fi
# Re-sync the tools whenever requirements-dev.txt changes (a venv made before a
# new test dependency was added still gets it): the stamp holds the file's hash.
want=$(sha256sum "$top/requirements-dev.txt" | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements-dev.sha256" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet -r "$top/requirements-dev.txt"
  echo "$want" > "$venv/.requirements-dev.sha256"
fi
wheels=$top/target/wheels/$version
rm -rf "$wheels"
CARGO_TARGET_DIR=$top/target/py$version \
  "$venv/bin/maturin" build --quiet --release --interpreter "$venv/bin/python" \
  --manifest-path "$top/crates/rthread-py/Cargo.toml" --out "$wheels" >&2
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$wheels"/rthread-*.whl
