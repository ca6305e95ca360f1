#!/usr/bin/env bash
# Build the qora-p2p image without any network in the build:
#   docker/build.sh [TAG]        # default qora-p2p:latest
# 1. the wheels of the project and its dependencies, made on this host with `pip wheel`
#    (docker/wheelhouse; the host's Python must be the base image's minor version, 3.11 for bookworm);
# 2. the local base (docker/make-base.sh) unless BASE names an image that exists;
# 3. `docker build --network none` from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-qora-p2p:latest}
base=${BASE:-qora-base:bookworm}
command -v docker >/dev/null || { echo "build: docker is missing (apt-get install -y docker.io)" >&2; exit 2; }
host_python=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$base" = qora-base:bookworm ] && [ "$host_python" != 3.11 ]; then
    echo "build: the wheelhouse is made by this host's Python $host_python; bookworm's is 3.11" >&2; exit 2
fi
rm -f docker/wheelhouse/*.whl
python3 -m pip wheel --quiet --wheel-dir docker/wheelhouse .
if ! docker image inspect "$base" >/dev/null 2>&1; then
    docker/make-base.sh "$base"
fi
docker build --network none --build-arg BASE="$base" -f docker/Dockerfile -t "$tag" .
echo "built $tag from $base"
