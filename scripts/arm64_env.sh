#!/usr/bin/env bash
# Sets up what `evaluate --arm64` runs: Debian's qemu-user-static, an arm64 Debian Python 3.11
# unpacked (never installed) into DIR/root, and arm64 wheels (requirements/arm64.txt) in DIR/site.
# Idempotent: each step is skipped when its result is there. Fails in one line naming what is missing.
#   scripts/arm64_env.sh [DIR]        (default .arm64; needs root, or sudo -n, for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.arm64}
ROOT=$DIR/root
SITE=$DIR/site
REQ=requirements/arm64.txt
HOST_PY=${HOST_PY:-.venv/bin/python}
# The arm64 packages python3.11 needs at run time, and the C++ runtime the wheels link against:
# `apt-cache depends --recurse` of python3.11-minimal, libpython3.11-stdlib, libstdc++6 and libgomp1
# on arm64, less dpkg/tar/install-info (installers, never run here).
DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 gcc-12-base libstdc++6
 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libzstd1 libsqlite3-0 libuuid1 libcrypt1
 libdb5.3 libncursesw6 libtinfo6 libreadline8 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3
 libkrb5support0 libcom-err2 libkeyutils1 libselinux1 libpcre2-8-0 libacl1 libmd0"

die() { echo "error: arm64 environment: $*" >&2; exit 2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
apt_quiet() { DEBIAN_FRONTEND=noninteractive $SUDO "$@" >"$DIR/apt.log" 2>&1; }
mkdir -p "$DIR"
[ -x "$HOST_PY" ] || die "no $HOST_PY (the project's venv: run \`make install\` first)"

if ! command -v qemu-aarch64-static >/dev/null; then
  command -v apt-get >/dev/null || die "qemu-aarch64-static is missing and there is no apt-get to install qemu-user-static"
  apt_quiet apt-get update -q || die "apt-get update failed (root or sudo -n needed; see $DIR/apt.log)"
  apt_quiet apt-get install -y -q qemu-user-static || die "could not install qemu-user-static (see $DIR/apt.log)"
fi

if [ ! -x "$ROOT/usr/bin/python3.11" ] || [ ! -f "$ROOT/.debs-complete" ]; then
  command -v apt-get >/dev/null || die "no apt-get to download the arm64 Python (Debian's python3.11:arm64)"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64 || die "dpkg --add-architecture arm64 failed (root or sudo -n needed)"
  fi
  if ! apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1; then
    # A source that has no arm64 index (a vendor's amd64-only repository) must not stop Debian's.
    apt_quiet apt-get update -q || true
    apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1 \
      || die "apt has no python3.11-minimal:arm64 after apt-get update (see $DIR/apt.log)"
  fi
  # The per-CPU roots (arm64.py's cpu_root) point into ROOT: rebuilt with it.
  rm -rf "$DIR/debs" "$ROOT" "$DIR/cpus"; mkdir -p "$DIR/debs" "$ROOT"
  # apt-get download runs as the user _apt where it can; a folder it can write avoids its warning.
  chmod 777 "$DIR/debs"
  (cd "$DIR/debs" && apt-get download -q $(printf '%s:arm64 ' $DEBS) >../apt.log 2>&1) \
    || die "apt-get download of the arm64 Python's packages failed (see $DIR/apt.log)"
  for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
  # Debian ships the loader's path as an absolute link, which -L resolves inside ROOT anyway.
  [ -x "$ROOT/usr/bin/python3.11" ] || die "python3.11 missing from the unpacked arm64 packages"
  touch "$ROOT/.debs-complete"
  rm -rf "$DIR/debs"
fi

if [ ! -f "$SITE/.complete" ] || ! cmp -s "$REQ" "$SITE/.complete"; then
  rm -rf "$SITE"; mkdir -p "$SITE"
  # pip of the host, told the target's platform: only arm64 wheels, never an sdist to compile.
  "$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --target "$SITE" \
      --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
      --platform manylinux_2_36_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
      --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 -r "$REQ" >"$DIR/pip.log" 2>&1 \
    || die "pip could not fetch the arm64 wheels of $REQ (see $DIR/pip.log)"
  cp "$REQ" "$SITE/.complete"
fi

# The proof that it runs: both runtimes import in the arm64 Python on each default emulated CPU.
SKINSCAN_ARM64_DIR="$(cd "$DIR" && pwd)" "$HOST_PY" -c "import sys; from skinscan_edge.evaluation.arm64 import main; sys.exit(main())"
