"""A new network's files: one key file per member and the ``peers.toml`` genesis.

`create_network` reads a genesis fragment (every parameter but ``network_id`` and ``members``)
through the genesis schema with the new members before it writes anything; `free_ports` finds
ports for a local network (the one place outside the transport that opens sockets).
`with_model_defaults` is the tools' convenience for the model table: a bundled dataset's shape.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError
from qora_p2p.identity import Identity, write_key_file
from qora_p2p.protocol.genesis import Genesis, Member, dump_genesis, genesis_from_fragment
from qora_p2p.schema import merge

__all__ = ["DATASET_SHAPES", "create_network", "free_ports", "with_model_defaults"]

# (features, classes) of the bundled datasets (qora_p2p.learning.data), so a genesis for them
# needs no shape; the node's workload refuses a dataset whose shape differs from the genesis.
DATASET_SHAPES = {"digits": (64, 10), "breast_cancer": (30, 2)}
DATASET_DEFAULT = "digits"
MODEL_KIND_DEFAULT = "logistic"  # the model the tools create when a fragment names none
HIDDEN_DEFAULT = (32,)  # an mlp's hidden widths when a fragment names none
SYNTHETIC_DIMENSION_DEFAULT = 1000  # P of synthetic updates when a fragment names none


def with_model_defaults(fragment: Mapping[str, Any], dataset: str = DATASET_DEFAULT) -> dict[str, Any]:
    """``fragment`` with the model table's absent keys filled: kind logistic, the shape of the
    bundled ``dataset`` (a dataset file needs ``features`` and ``classes`` given), an mlp's
    hidden widths, a synthetic dimension. Values the fragment gives are kept as they are."""
    model = fragment.get("model", {})
    if not isinstance(model, dict):
        return dict(fragment)  # the schema names the mistake
    kind = model.get("kind", MODEL_KIND_DEFAULT)
    defaults: dict[str, Any] = {"kind": kind}
    if kind == "synthetic":
        defaults["dimension"] = SYNTHETIC_DIMENSION_DEFAULT
    elif dataset in DATASET_SHAPES:
        defaults["features"], defaults["classes"] = DATASET_SHAPES[dataset]
    if kind == "mlp":
        defaults["hidden"] = list(HIDDEN_DEFAULT)
    return {**fragment, "model": merge(defaults, model)}


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
    fragment: Mapping[str, Any],
    *,
    network_id: str,
    names: Sequence[str] | None = None,
    origin: str = "genesis",
    path: str = "",
    overwrite: bool = False,
) -> tuple[Genesis, list[Path]]:
    """Create one key file per member under ``directory/keys`` and ``directory/peers.toml``.

    Args:
        fragment: the genesis parameters, as in peers.toml without ``network_id`` and ``members``.
        origin, path: where the fragment came from, for error messages.

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
    genesis = genesis_from_fragment(fragment, network_id, members, origin, path)
    peers = directory / "peers.toml"
    if peers.exists() and not overwrite:
        raise ConfigError(f"{peers} exists; pass overwrite to replace the network")
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    paths = []
    for member, identity in zip(members, identities, strict=True):
        path_of_key = keys / f"{member.name}.key"
        write_key_file(path_of_key, identity, overwrite=overwrite)
        paths.append(path_of_key)
    temporary = peers.with_suffix(".toml.tmp")
    temporary.write_text(dump_genesis(genesis), encoding="utf-8")
    temporary.replace(peers)
    return genesis, paths
