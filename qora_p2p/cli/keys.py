"""``qora-keys``: create identities and networks.

    qora-keys generate node.key              # write a private key (mode 0600), print its public key
    qora-keys show node.key                  # print the public key of a key file
    qora-keys network --nodes 4 --out net/   # keys + peers.toml for a local network on free ports
    qora-keys network --addresses 10.0.0.1:7000,10.0.0.2:7000,... --out net/

Exit codes: 0 success, 2 bad usage or configuration, 3 an existing file would be overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qora_p2p.errors import ConfigError, KeyFileError, KeyFormatError
from qora_p2p.node.network import create_network, free_ports
from qora_p2p.protocol.genesis import ModelSpec
from qora_p2p.identity import Identity, public_key_hex, read_key_file, write_key_file
from qora_p2p.protocol.ledger import LedgerParams

EXIT_USAGE = 2
EXIT_EXISTS = 3


def _parse_param(text: str) -> tuple[str, int | float | str]:
    key, separator, raw = text.partition("=")
    if not separator or not key:
        raise ConfigError(f"--param must look like key=value, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            continue
    return key, raw


def _addresses(args: argparse.Namespace) -> list[tuple[str, int]]:
    if args.addresses:
        result = []
        for item in args.addresses.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"--addresses: {item!r} is not host:port")
            result.append((host.strip("[]"), int(port)))
        return result
    if args.nodes is None or args.nodes < 1:
        raise ConfigError("give --nodes N (a local network) or --addresses host:port,...")
    if args.base_port:
        return [(args.host, args.base_port + index) for index in range(args.nodes)]
    return [(args.host, port) for port in free_ports(args.host, args.nodes)]


def _model(args: argparse.Namespace) -> ModelSpec:
    if args.model == "synthetic":
        return ModelSpec("synthetic", args.dimension, args.model_seed)
    hidden = tuple(int(width) for width in args.hidden.split(",")) if args.model == "mlp" else ()
    widths = (args.features, *hidden, args.classes)
    dimension = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return ModelSpec(args.model, dimension, args.model_seed, args.features, args.classes, hidden)


def _network(args: argparse.Namespace) -> int:
    params = dict(_parse_param(item) for item in args.param)
    genesis, paths = create_network(
        Path(args.out),
        _addresses(args),
        network_id=args.network_id,
        model=_model(args),
        rule=args.rule,
        rule_params=params,
        ledger=None if args.no_reputation else LedgerParams(),
        overwrite=args.force,
    )
    print(f"network {genesis.network_id}: {genesis.size} members, f = {genesis.faulty}, quorum = {genesis.quorum}")
    print(f"genesis hash {genesis.hash.hex()}")
    print(f"wrote {Path(args.out) / 'peers.toml'} and {len(paths)} key files under {Path(args.out) / 'keys'} (mode 0600)")
    for member, path in zip(genesis.members, paths, strict=True):
        print(f"  {member.name:12s} {member.address:22s} {public_key_hex(member.public_key)}  {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qora-keys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a new private key file and print its public key")
    generate.add_argument("path", help="key file to create (mode 0600)")
    generate.add_argument("--force", action="store_true", help="replace an existing file")
    show = commands.add_parser("show", help="print the public key of a key file")
    show.add_argument("path")
    network = commands.add_parser("network", help="create key files and a peers.toml genesis")
    network.add_argument("--out", required=True, help="directory for peers.toml and keys/")
    network.add_argument("--nodes", type=int, help="number of members of a local network")
    network.add_argument("--host", default="127.0.0.1", help="host of a local network (default 127.0.0.1)")
    network.add_argument("--base-port", type=int, default=0, help="first port; 0 picks free ports (default)")
    network.add_argument("--addresses", help="comma-separated host:port of every member (instead of --nodes)")
    network.add_argument("--network-id", default="qora-local")
    network.add_argument("--model", choices=("logistic", "mlp", "synthetic"), default="logistic")
    network.add_argument("--features", type=int, default=64, help="input features (digits: 64)")
    network.add_argument("--classes", type=int, default=10)
    network.add_argument("--hidden", default="32", help="mlp hidden widths, comma-separated")
    network.add_argument("--dimension", type=int, default=1000, help="update length of a synthetic model")
    network.add_argument("--model-seed", type=int, default=0, help="seed of the initial model")
    network.add_argument("--rule", default="centered_clipping", help="aggregation rule (default: centered_clipping)")
    network.add_argument(
        "--param", action="append", default=None, help="rule parameter key=value (repeatable; default: tau_scale=1.0 center=previous)"
    )
    network.add_argument("--no-reputation", action="store_true", help="disable the reputation ledger")
    network.add_argument("--force", action="store_true", help="replace an existing network")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "network" and args.param is None:
        args.param = ["tau_scale=1.0", "center=previous"] if args.rule.endswith("centered_clipping") else []
    try:
        if args.command == "generate":
            identity = Identity.generate()
            write_key_file(args.path, identity, overwrite=args.force)
            print(public_key_hex(identity.public_key))
            return 0
        if args.command == "show":
            print(public_key_hex(read_key_file(args.path).public_key))
            return 0
        return _network(args)
    except KeyFileError as error:
        print(f"qora-keys: {error}", file=sys.stderr)
        return EXIT_EXISTS if "exists" in str(error) else EXIT_USAGE
    except (ConfigError, KeyFormatError) as error:
        print(f"qora-keys: {error}", file=sys.stderr)
        return EXIT_EXISTS if "exists" in str(error) else EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
