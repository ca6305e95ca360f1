"""``qora-keys``: create identities and networks.

    qora-keys generate node.key              # write a private key (mode 0600), print its public key
    qora-keys show node.key                  # print the public key of a key file
    qora-keys network --nodes 4 --out net/   # keys + peers.toml for a local network on free ports
    qora-keys network --addresses 10.0.0.1:7000,10.0.0.2:7000,... --out net/
    qora-keys network --nodes 4 --out net/ --set reputation.opposing_penalty=0.05 --set aggregation.rule=median
    qora-keys network --nodes 4 --out net/ --genesis genesis.toml   # a peers.toml without network_id, members
    qora-keys network --nodes 4 --out net/ --compose                # + net/compose.yml (README: "Running on several machines")

Every genesis parameter can be given: in a fragment file (--genesis, the tables of peers.toml), by
the model and rule options, and by --set PATH=VALUE, later ones winning in that order. All of them
are checked by the genesis schema before anything is written (`qora-keys network --help` lists
the parameters).

Exit codes: 0 success, 2 bad usage or configuration, 3 an existing file would be overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError, KeyFileError, KeyFormatError
from qora_p2p.identity import Identity, public_key_hex, read_key_file, write_key_file
from qora_p2p.node.compose import COMPOSE_PORT, IMAGE_DEFAULT, IMAGE_UID, compose_document
from qora_p2p.node.network import create_network, free_ports, with_model_defaults
from qora_p2p.protocol.genesis import RULE_DEFAULT, apply_settings, describe_settings
from qora_p2p.schema import read_toml

EXIT_USAGE = 2
EXIT_EXISTS = 3


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
    if args.compose:
        return [(f"node-{index:02d}", COMPOSE_PORT) for index in range(args.nodes)]
    if args.base_port:
        return [(args.host, args.base_port + index) for index in range(args.nodes)]
    return [(args.host, port) for port in free_ports(args.host, args.nodes)]


GENESIS_FRAGMENT_BYTES_MAX = 64 << 10  # a fragment holds parameters only, no member list


def _fragment(args: argparse.Namespace) -> dict[str, Any]:
    """The genesis fragment of the options: file, then model and rule options, then --set."""
    fragment = read_toml(args.genesis, "genesis fragment", GENESIS_FRAGMENT_BYTES_MAX) if args.genesis else {}
    options = []
    for name, path in (("model", "model.kind"), ("features", "model.features"), ("classes", "model.classes"), ("dimension", "model.dimension"), ("model_seed", "model.seed"), ("rule", "aggregation.rule")):
        if getattr(args, name) is not None:
            options.append(f"{path}={getattr(args, name)}")
    if args.hidden is not None:
        options.append(f"model.hidden=[{args.hidden}]")
    options += [f"aggregation.{item}" for item in args.param]
    if args.no_reputation:
        options.append("reputation.enabled=false")
    fragment = apply_settings(fragment, options, "option")
    return with_model_defaults(apply_settings(fragment, args.set))


def _network(args: argparse.Namespace) -> int:
    if args.compose and args.addresses:
        raise ConfigError("--compose addresses members by service name (node-00:7000, ...); give --nodes N, not --addresses")
    out = Path(args.out)
    compose = out / "compose.yml"
    if args.compose and compose.exists() and not args.force:
        raise ConfigError(f"{compose} exists; pass --force to replace the network")
    genesis, paths = create_network(out, _addresses(args), _fragment(args), network_id=args.network_id, origin="qora-keys network", overwrite=args.force)
    print(f"network {genesis.network_id}: {genesis.size} members, f = {genesis.faulty}, quorum = {genesis.quorum}")
    print(f"genesis hash {genesis.hash.hex()}")
    print(f"wrote {Path(args.out) / 'peers.toml'} and {len(paths)} key files under {Path(args.out) / 'keys'} (mode 0600)")
    for member, path in zip(genesis.members, paths, strict=True):
        print(f"  {member.name:12s} {member.address:22s} {public_key_hex(member.public_key)}  {path}")
    if args.compose:
        document = compose_document(genesis, [path.relative_to(out).as_posix() for path in paths], image=args.image)
        temporary = compose.with_suffix(".yml.tmp")
        temporary.write_text(document, encoding="utf-8")
        temporary.replace(compose)
        print(f"wrote {compose}: one service per member on an internal network, image {args.image}")
        print(f"next: chown {IMAGE_UID}:{IMAGE_UID} {out / 'keys'}/*.key && (cd {out} && docker compose up -d)")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qora-keys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a new private key file and print its public key")
    generate.add_argument("path", help="key file to create (mode 0600)")
    generate.add_argument("--force", action="store_true", help="replace an existing file")
    show = commands.add_parser("show", help="print the public key of a key file")
    show.add_argument("path")
    network = commands.add_parser(
        "network",
        help="create key files and a peers.toml genesis",
        description="Create key files and a peers.toml genesis. Genesis parameters (--genesis file, --set PATH=VALUE):\n\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    network.add_argument("--out", required=True, help="directory for peers.toml and keys/")
    network.add_argument("--nodes", type=int, help="number of members of a local network")
    network.add_argument("--host", default="127.0.0.1", help="host of a local network (default 127.0.0.1)")
    network.add_argument("--base-port", type=int, default=0, help="first port; 0 picks free ports (default)")
    network.add_argument("--addresses", help="comma-separated host:port of every member (instead of --nodes)")
    network.add_argument("--network-id", default="qora-local")
    network.add_argument("--genesis", type=Path, metavar="FRAGMENT.toml", help="genesis parameters: peers.toml's tables without network_id and members")
    network.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="a genesis parameter, e.g. reputation.opposing_penalty=0.05 (repeatable; wins over every other option)")
    network.add_argument("--model", help="model.kind: logistic (default), mlp or synthetic")
    network.add_argument("--features", type=int, help="model.features (default: the digits dataset's 64)")
    network.add_argument("--classes", type=int, help="model.classes (default: the digits dataset's 10)")
    network.add_argument("--hidden", help="model.hidden: mlp hidden widths, comma-separated (default 32)")
    network.add_argument("--dimension", type=int, help="model.dimension of a synthetic model (default 1000)")
    network.add_argument("--model-seed", type=int, help="model.seed: seed of the initial model (default 0)")
    network.add_argument("--rule", help=f"aggregation.rule (default {RULE_DEFAULT}, with its default parameters)")
    network.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a rule parameter, same as --set aggregation.KEY=VALUE (repeatable)")
    network.add_argument("--no-reputation", action="store_true", help="disable the reputation ledger (reputation.enabled=false)")
    network.add_argument("--compose", action="store_true", help="members node-00..: on port 7000 of a compose network, and OUT/compose.yml (needs --nodes)")
    network.add_argument("--image", default=IMAGE_DEFAULT, help=f"the image compose.yml runs (default {IMAGE_DEFAULT}; docker/build.sh makes it)")
    network.add_argument("--force", action="store_true", help="replace an existing network")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
