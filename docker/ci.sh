#!/usr/bin/env bash
# The Docker part of CI, from nothing: install the engine and tools from Debian's packages, start a
# private dockerd (no bridge, no iptables: the compose network is internal), make the local base and
# the image, run `pytest -m docker`, and stop the engine and remove its state on any exit.
#   docker/ci.sh            # as root
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "docker/ci.sh: needs root (apt-get, dockerd, debootstrap)" >&2; exit 2; }
started=$(date +%s)
missing=()
for tool in dockerd docker-compose debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "docker/ci.sh: installing docker.io docker-compose debootstrap (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose debootstrap >/dev/null
fi
state=$(mktemp -d /tmp/qora-dockerd.XXXXXX)
cleanup() {
    if [ -f "$state/docker.pid" ]; then
        kill "$(cat "$state/docker.pid")" 2>/dev/null || true
        for _ in $(seq 50); do [ -f "$state/docker.pid" ] || break; sleep 0.2; done
    fi
    rm -rf "$state"
}
trap cleanup EXIT
dockerd --data-root "$state/root" --exec-root "$state/exec" --pidfile "$state/docker.pid" -H "unix://$state/docker.sock" \
    --storage-driver=overlay2 --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false --bridge=none \
    >"$state/dockerd.log" 2>&1 &
export DOCKER_HOST="unix://$state/docker.sock"
for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
docker info >/dev/null 2>&1 || { echo "docker/ci.sh: dockerd did not start:" >&2; tail -20 "$state/dockerd.log" >&2; exit 1; }
docker/build.sh qora-p2p:latest
docker image ls qora-p2p:latest --format 'image {{.Repository}}:{{.Tag}}: {{.Size}}'
python3 -m pytest -m docker tests/docker
echo "docker/ci.sh: $(( $(date +%s) - started )) s"
