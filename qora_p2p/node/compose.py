"""A Docker Compose file for a network made by ``qora-keys network --compose``.

One service per member, named after the member and addressed by that name on a private network,
so that ``peers.toml`` reads ``node-00:7000``, ``node-01:7000``, ... Each service mounts
``peers.toml`` and **its own key file only** (read-only), keeps its state in a named volume, and
runs the image's ``qora-node`` (`docker/Dockerfile`). The network is ``internal``: containers
reach each other and nothing else, and no port is published on the host.

The image runs as uid 10001, and ``qora-node`` refuses a key file that group or others can read,
so each key file must be owned by 10001 with mode 0600 before ``docker compose up``
(``qora-keys`` prints the command).

The file is written as YAML by hand (a fixed shape; every string is quoted with JSON's rules,
which YAML reads the same), so the project needs no YAML library.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from qora_p2p.protocol.genesis import Genesis

__all__ = ["COMPOSE_PORT", "IMAGE_DEFAULT", "IMAGE_UID", "compose_document"]

IMAGE_DEFAULT = "qora-p2p:latest"
IMAGE_UID = 10001  # docker/Dockerfile's user
COMPOSE_PORT = 7000
NETWORK = "qora"


def _q(text: str) -> str:
    return json.dumps(text)


def compose_document(genesis: Genesis, key_files: Sequence[str], *, image: str = IMAGE_DEFAULT, extra_args: Sequence[str] = ()) -> str:
    """The compose file of ``genesis``'s members.

    Args:
        key_files: each member's key file, relative to the compose file's directory, in member order.
        extra_args: more ``qora-node`` arguments for every member (e.g. ``--rounds 20``).

    Raises:
        ValueError: a member whose address is not its own name on `COMPOSE_PORT` (the compose
            network addresses services by name), or key files that do not match the members.
    """
    if len(key_files) != genesis.size:
        raise ValueError(f"{len(key_files)} key files for {genesis.size} members")
    # A member that stops after --rounds exits 0 and must stay stopped; one that runs until
    # stopped comes back after a crash or a reboot of the host.
    restart = "on-failure" if "--rounds" in extra_args else "unless-stopped"
    lines = [
        f"# {genesis.network_id}: {genesis.size} members (f = {genesis.faulty}), made by qora-keys network --compose.",
        f"# Before `docker compose up`: chown {IMAGE_UID}:{IMAGE_UID} keys/*.key (the image's user; mode stays 0600).",
        'version: "3.8"',
        "services:",
    ]
    for member, key_file in zip(genesis.members, key_files, strict=True):
        if (member.host, member.port) != (member.name, COMPOSE_PORT):
            raise ValueError(f"member {member.name} is at {member.address}; a compose network needs {member.name}:{COMPOSE_PORT}")
        command = ["--peers", "/etc/qora/peers.toml", "--key", "/etc/qora/node.key", "--data-dir", "/data", "--listen", f"0.0.0.0:{COMPOSE_PORT}", "--log-format", "json", *extra_args]
        lines += [
            f"  {member.name}:",
            f"    image: {_q(image)}",
            f"    hostname: {_q(member.name)}",
            f"    command: [{', '.join(_q(item) for item in command)}]",
            "    volumes:",
            f"      - {_q('./peers.toml:/etc/qora/peers.toml:ro')}",
            f"      - {_q(f'./{key_file}:/etc/qora/node.key:ro')}",
            f"      - {_q(f'{member.name}-data:/data')}",
            f"    networks: [{NETWORK}]",
            f"    restart: {_q(restart)}",
            '    stop_grace_period: "10s"',
        ]
    lines += ["networks:", f"  {NETWORK}:", "    internal: true", "volumes:"]
    lines += [f"  {member.name}-data: {{}}" for member in genesis.members]
    return "\n".join(lines) + "\n"
