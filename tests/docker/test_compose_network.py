"""The image and compose file on a real Docker engine: four containers commit identical chains
through a killed-and-restarted member and a member cut off the network and reconnected.

Runs with ``pytest -m docker`` once the image exists (``docker/ci.sh`` starts an engine, builds
the image with ``docker/build.sh`` and runs this); it fails, never skips, when the engine, the
image or docker-compose is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from qora_p2p.cli.keys import main as qora_keys
from qora_p2p.node.compose import IMAGE_UID, compose_document
from qora_p2p.protocol.genesis import load_genesis

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("QORA_IMAGE", "qora-p2p:latest")
ROUNDS = 60
DEADLINE_S = 240


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)  # noqa: S603 (docker's own CLI)


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if _run("docker", "compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor the docker compose plugin is installed (apt-get install -y docker-compose)")


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)  # polling a condition with a deadline, not waiting out a race


def _last_round(container: str) -> int:
    logs = _run("docker", "logs", container, check=False)
    rounds = [0]
    for line in (logs.stdout + logs.stderr).splitlines():
        if '"round_committed"' in line:
            rounds.append(json.loads(line)["round"])
    return max(rounds)


def test_a_compose_network_survives_a_kill_and_a_disconnect(tmp_path: Path) -> None:
    if _run("docker", "info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers (DOCKER_HOST); docker/ci.sh starts one")
    if _run("docker", "image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is missing; docker/build.sh makes it")
    compose = _compose_command()
    out = tmp_path / "net"
    assert qora_keys(["network", "--nodes", "4", "--out", str(out), "--compose", "--image", IMAGE]) == 0
    genesis = load_genesis(out / "peers.toml")
    keys = [f"keys/{member.name}.key" for member in genesis.members]
    (out / "compose.yml").write_text(compose_document(genesis, keys, image=IMAGE, extra_args=["--rounds", str(ROUNDS), "--linger", "20"]))
    for key in keys:
        os.chown(out / key, IMAGE_UID, IMAGE_UID)  # the image's user; needs root, as docker does
    project = f"qora{uuid.uuid4().hex[:8]}"
    command = [*compose, "-p", project, "-f", str(out / "compose.yml")]
    try:
        _run(*command, "up", "-d")
        containers = {member.name: _run(*command, "ps", "-q", member.name).stdout.strip() for member in genesis.members}
        first, killed, cut = containers["node-00"], containers["node-01"], containers["node-02"]

        _wait("round 5", lambda: _last_round(first) >= 5)
        _run("docker", "kill", killed)
        at_kill = _last_round(first)
        _wait("3 rounds without node-01", lambda: _last_round(first) >= at_kill + 3)
        _run("docker", "start", killed)

        network = next(iter(json.loads(_run("docker", "inspect", cut).stdout)[0]["NetworkSettings"]["Networks"]))
        _wait("node-01 back", lambda: _last_round(first) >= at_kill + 8)
        _run("docker", "network", "disconnect", network, cut)
        at_cut = _last_round(first)
        _wait("3 rounds without node-02", lambda: _last_round(first) >= at_cut + 3)
        _run("docker", "network", "connect", "--alias", "node-02", network, cut)

        def all_exited() -> bool:
            states = [json.loads(_run("docker", "inspect", container).stdout)[0]["State"] for container in containers.values()]
            return all(state["Status"] == "exited" for state in states)

        _wait(f"every member to finish {ROUNDS} rounds", all_exited)
        for name, container in containers.items():
            state = json.loads(_run("docker", "inspect", container).stdout)[0]["State"]
            assert state["ExitCode"] == 0, (name, _run("docker", "logs", "--tail", "20", container, check=False).stderr)

        chains = {}
        for name in containers:
            result = _run("docker", "run", "--rm", "--network", "none", "-v", f"{project}_{name}-data:/data", IMAGE, "inspect", "--data-dir", "/data", "--json")
            chains[name] = json.loads(result.stdout)
        for name, chain in chains.items():
            assert chain["verified"], (name, chain["problems"])
            assert chain["last_round"] >= ROUNDS, (name, chain["last_round"])
        hashes = [{item["round"]: item["hash"] for item in chain["rounds"]} for chain in chains.values()]
        for number in range(1, ROUNDS + 1):
            seen = {chain[number] for chain in hashes if number in chain}
            assert len(seen) == 1, (number, seen)
        assert all(len(chain) >= ROUNDS // 2 for chain in hashes)  # catch-up may skip rounds, not most of them
    finally:
        _run(*command, "down", "-v", "--remove-orphans", check=False)
