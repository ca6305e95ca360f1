#!/usr/bin/env bash
# Make a local Debian bookworm base image (python3, venv, pip) where no image registry is reachable:
#   docker/make-base.sh [IMAGE]              # default qora-base:bookworm; needs root, debootstrap, docker
#   docker/make-base.sh --rootfs-only DIR    # only the root file system, into DIR (no docker needed)
#   ROOTFS=DIR docker/make-base.sh [IMAGE]   # import a DIR made by --rootfs-only
# Uses the Debian mirror apt uses (MIRROR overrides it). debootstrap takes one to three minutes, so
# CI makes the root file system in the background while its other tests run.
set -euo pipefail
mirror=${MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "make-base: debootstrap needs root" >&2; exit 2; }

debootstrap_into() {
    command -v debootstrap >/dev/null || { echo "make-base: debootstrap is missing (apt-get install -y debootstrap)" >&2; exit 2; }
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$1" "$mirror" >"$1.log" 2>&1 \
        || { echo "make-base: debootstrap failed; its log: $1.log" >&2; exit 1; }
    rm -f "$1.log"
}

if [ "${1:-}" = --rootfs-only ]; then
    [ -n "${2:-}" ] || { echo "make-base: --rootfs-only needs a directory" >&2; exit 2; }
    mkdir -p "$2"
    debootstrap_into "$2"
    touch "$2.done"
    echo "made the root file system in $2"
    exit 0
fi
image=${1:-qora-base:bookworm}
for tool in docker tar; do
    command -v "$tool" >/dev/null || { echo "make-base: $tool is missing (apt-get install -y docker.io)" >&2; exit 2; }
done
if [ -n "${ROOTFS:-}" ]; then
    [ -f "$ROOTFS.done" ] || { echo "make-base: $ROOTFS is not a finished --rootfs-only directory" >&2; exit 2; }
    root=$ROOTFS
else
    root=$(mktemp -d /tmp/qora-base.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap_into "$root"
fi
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "made $image"
