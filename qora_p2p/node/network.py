"""A new network's files: one key file per member and the ``peers.toml`` genesis.

`create_network` validates the whole genesis before it writes anything; `free_ports` finds ports
for a local network (the one place outside the transport that opens sockets).
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError
from qora_p2p.fixedpoint import FRAC_BITS_DEFAULT
from qora_p2p.identity import Identity, write_key_file
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec, Timing, dump_genesis, parse_genesis
from qora_p2p.protocol.ledger import LedgerParams

__all__ = ["create_network", "free_ports"]


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports the OS reports free on ``host`` right now (a later bind may race)."""

    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(handle)
            handle.bind((host, 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def create_network(
    directory: Path,
    addresses: Sequence[tuple[str, int]],
    *,
    network_id: str,
    model: ModelSpec,
    rule: str,
    rule_params: Mapping[str, Any],
    frac_bits: int = FRAC_BITS_DEFAULT,
    ledger: LedgerParams | None = LedgerParams(),
    timing: Timing = Timing(),
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> tuple[Genesis, list[Path]]:
    """Create one key file per member under ``directory/keys`` and ``directory/peers.toml``.

    Returns:
        The genesis and the key file paths, in member order.

    Raises:
        ConfigError: an invalid setting (checked before anything is written).
        KeyFileError: a key file exists and ``overwrite`` is False.
    """

    names = list(names) if names is not None else [f"node-{index:02d}" for index in range(len(addresses))]
    identities = [Identity.generate() for _ in addresses]
    members = tuple(
        Member(name, identity.public_key, host, port) for name, identity, (host, port) in zip(names, identities, addresses, strict=True)
    )
    genesis = Genesis(network_id, members, model, rule, dict(rule_params), frac_bits, ledger, timing)
    genesis = parse_genesis(tomllib.loads(dump_genesis(genesis)), "new network")  # full validation
    peers = directory / "peers.toml"
    if peers.exists() and not overwrite:
        raise ConfigError(f"{peers} exists; pass overwrite to replace the network")
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    paths = []
    for member, identity in zip(members, identities, strict=True):
        path = keys / f"{member.name}.key"
        write_key_file(path, identity, overwrite=overwrite)
        paths.append(path)
    temporary = peers.with_suffix(".toml.tmp")
    temporary.write_text(dump_genesis(genesis), encoding="utf-8")
    temporary.replace(peers)
    return genesis, paths
