#!/usr/bin/env bash
# Builds rthread with the who-holds-what bookkeeping compiled out (the binding's
# `no-diag` cargo feature) for one interpreter and installs it, with pip --target,
# into target/nodiag/VERSION: the baseline of the bench's "bookkeeping / compiled
# out" rows. Usage: scripts/nodiag.sh VERSION PYTHON
#
#   scripts/nodiag.sh 3.11 ~/.pyenv/versions/3.11.7/bin/python3.11
#   .venv/3.11/bin/python -m rthread bench --only bookkeeping --nodiag target/nodiag/3.11
#   scripts/sid.sh run scripts/nodiag.sh 3.14 /usr/bin/python3.14
#
# The bench loads that directory's extension as a second copy next to the installed
# rthread; never put the directory on a program's sys.path (the build is not for use).
# The interpreter's venv, .venv/VERSION, must exist with maturin in it; when it does
# not, scripts/install.sh makes it (and installs the normal build there: the bench
# compares against it). The build has its own cargo target dir, so switching between
# the two builds does not rebuild each time.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: scripts/nodiag.sh VERSION PYTHON" >&2; exit 2; }
version=$1
python=$2
top=$(cd "$(dirname "$0")/.." && pwd)
venv=$top/.venv/$version
if [ ! -x "$venv/bin/maturin" ] || [ ! -x "$venv/bin/python" ]; then
  "$top/scripts/install.sh" "$version" "$python"
fi
wheels=$top/target/nodiag-wheels/$version
dest=$top/target/nodiag/$version
rm -rf "$wheels"
CARGO_TARGET_DIR=$top/target/nodiag-build/$version \
  "$venv/bin/maturin" build --quiet --release --features no-diag \
  --interpreter "$venv/bin/python" \
  --manifest-path "$top/crates/rthread-py/Cargo.toml" --out "$wheels" >&2
# Installed next to the final place and swapped in, so a failed install leaves the
# previous build (or nothing), never half of one.
rm -rf "$dest.new"
"$venv/bin/python" -m pip install --quiet --no-deps --no-compile --target "$dest.new" \
  "$wheels"/rthread-*.whl
# What was built: the bench copies this into its results.
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null ||
  echo "unknown (no git repository visible here)")
if [ -n "$(git -C "$top" status --porcelain -- crates 2>/dev/null)" ]; then
  commit="$commit+uncommitted changes in crates/"
fi
# The sources themselves, which also identifies a build made where git cannot see the
# repository (the sid chroot mounts only the work tree).
sources=$(cd "$top" && find Cargo.toml Cargo.lock crates -type f \( -name '*.rs' -o -name '*.toml' \
  -o -name Cargo.lock \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
printf '%s\n' "rthread no-diag build (cargo feature no-diag)" "commit: $commit" \
  "sources: $sources (sha256 of Cargo.toml, Cargo.lock, crates/**/*.rs and *.toml)" \
  "python: $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')" \
  "built: $(date -u '+%Y-%m-%d %H:%M UTC')" > "$dest.new/NODIAG-BUILD.txt"
rm -rf "$dest"
mv "$dest.new" "$dest"
echo "no-diag build for $version: $dest" >&2
