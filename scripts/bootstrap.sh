#!/bin/sh
# bootstrap.sh - install the Debian packages slmc builds against, when any is missing.
# Run by `make check` and `make demo`; does nothing when everything is present.
# Usage: scripts/bootstrap.sh [extra-package ...]
set -e
PKGS="make gcc pkg-config zlib1g-dev libzstd-dev libhdf5-dev check libsubunit-dev libjansson-dev libpcre2-dev libyaml-dev libopenmpi-dev openmpi-bin $*"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "bootstrap: installing$missing" >&2
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "bootstrap: missing packages:$missing (run as root or install them)" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
${SUDO:-} apt-get update -qq >&2
${SUDO:-} apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends $missing >&2
