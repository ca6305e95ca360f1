#!/usr/bin/env bash
# Make a local Debian bookworm base image (python3, venv, pip) where no image registry is reachable:
#   docker/make-base.sh [IMAGE]          # default qora-base:bookworm; needs root, debootstrap, docker
# Uses the Debian mirror apt uses (MIRROR overrides it). Takes about a minute.
set -euo pipefail
image=${1:-qora-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
for tool in debootstrap docker tar; do
    command -v "$tool" >/dev/null || { echo "make-base: $tool is missing (apt-get install -y debootstrap docker.io)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "make-base: debootstrap needs root" >&2; exit 2; }
root=$(mktemp -d /tmp/qora-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { echo "make-base: debootstrap failed; its log: $root.log" >&2; exit 1; }
rm -f "$root.log"
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "made $image"
