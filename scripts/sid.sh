#!/usr/bin/env bash
# CPython 3.14 and 3.15 from Debian sid, which need sid's C library: a sid chroot,
# made once with mmdebstrap and cached outside the work tree, runs the project's own
# commands against them.
#
#   scripts/sid.sh setup          make the chroot if it is missing or out of date
#   scripts/sid.sh run CMD ...    run CMD inside it, in this checkout (same path)
#
# Needs root (chroot, mounts) and mmdebstrap (installed with apt-get when missing).
# The chroot lives in $RTHREAD_SID_DIR (default /var/cache/rthread/sid). Each `run`
# gets a private mount namespace, so concurrent runs do not disturb one another and
# every mount (/proc, /dev, /dev/shm, the checkout) disappears when CMD ends.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${RTHREAD_SID_DIR:-/var/cache/rthread/sid}
mirror=${RTHREAD_SID_MIRROR:-http://deb.debian.org/debian}
# Bump (or change the list) to rebuild cached chroots.
packages="python3.14-dev,python3.14-venv,libpython3.14-testsuite,python3.15-dev,python3.15-venv,libpython3.15-testsuite,gcc,cargo,rustc,make,git,ca-certificates,procps"
stamp="v1 $packages"

die() { echo "scripts/sid.sh: $*" >&2; exit 1; }

setup() {
  [ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot, mounts)"
  if [ -f "$dir/.rthread-stamp" ] && [ "$(cat "$dir/.rthread-stamp")" = "$stamp" ]; then
    return 0
  fi
  if ! command -v mmdebstrap >/dev/null; then
    echo "== installing mmdebstrap" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
  fi
  echo "== making the Debian sid chroot for CPython 3.14/3.15 in $dir (about a minute)" >&2
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir.new"
  # The archive's Release file can be past its validity date: accept it anyway.
  mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$packages" sid "$dir.new" "$mirror" >&2
  echo "$stamp" > "$dir.new/.rthread-stamp"
  rm -rf "$dir"
  mv "$dir.new" "$dir"
}

run() {
  [ "$(id -u)" = 0 ] || die "needs root (chroot, mounts)"
  [ -f "$dir/.rthread-stamp" ] || die "no chroot in $dir: run 'scripts/sid.sh setup' first"
  [ $# -gt 0 ] || die "usage: scripts/sid.sh run CMD ..."
  # pip and cargo inside need name resolution and the host's CA bundle (which may
  # hold a local proxy's certificate authority), at the path both look in.
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
  fi
  mkdir -p "$dir$top"
  local cmd
  printf -v cmd '%q ' "$@"
  unshare --mount --propagation private -- bash -euc '
    dir=$1; top=$2; cmd=$3
    mount -t proc proc "$dir/proc"
    mount --rbind /dev "$dir/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$dir/dev/shm"
    mount --bind "$top" "$dir$top"
    exec chroot "$dir" /usr/bin/env -i \
      HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
      PIP_DISABLE_PIP_VERSION_CHECK=1 \
      LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
      RTHREAD_PYTHONS="${RTHREAD_PYTHONS:-}" CONFORMANCE_ARGS="${CONFORMANCE_ARGS:-}" \
      bash -euc "cd \"\$0\" && $cmd" "$top"
  ' rthread-sid "$dir" "$top" "$cmd"
}

case "${1:-}" in
  setup) setup ;;
  run) shift; run "$@" ;;
  *) die "usage: scripts/sid.sh setup | run CMD ..." ;;
esac
