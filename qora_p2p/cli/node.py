"""``qora-node``: run one member of a qora-p2p network, or inspect a node's committed chain.

    qora-node --peers net/peers.toml --key net/keys/node-00.key
    qora-node --peers net/peers.toml --key net/keys/node-03.key --rounds 20 --profile nodes/alie.toml
    qora-node inspect --data-dir qora-data/node-00 [--json]

A node listens on its address in peers.toml (or --listen), dials the members after it in the
list, trains on its shard of --dataset each round, and commits the rounds the network agrees on.
Its durable state (committed records with certificates, the model, the ledger, the last-signed
guard) lives in SQLite under --data-dir; after a crash or SIGKILL, start it again with the same
arguments and it resumes and catches up from its peers.

Logs: one JSON object per line when stderr is not a terminal (or --log-format json), readable
lines on a terminal; one ``round_committed`` line per round with its hash, inputs, view,
milliseconds per phase, bans and test accuracy.

``inspect`` checks the database for damage, prints the committed chain (round, hash, inputs,
certificate signers, evidence, model and ledger digests), verifies every certificate against the
genesis and every link of the chain, and summarises the ledger.

Every stored row carries a checksum. A damaged database (a row that does not match its checksum,
a file SQLite cannot read) is refused with exit code 5 and a message naming the damage; to
recover, move node.sqlite3 (with any -wal and -shm files) out of --data-dir and start the node
again with the member's key: it recovers the chain from its peers. A node whose database has never
recorded a signature (that one, or a new member's) cannot know what it signed before: it signs
nothing until it is past the round its peers were in when it started (in a new network, where
every peer is in round 1, it begins at once).

SIGUSR1 logs a ``status`` line: round, view, step, updates held, values being validated, timers.

Exit codes:
  0  finished (--rounds reached) or stopped by SIGINT/SIGTERM; inspect: chain verified
  2  bad usage or configuration (the message names the flag, file or field)
  3  the data directory cannot be used (another network or member, another schema, in use)
  4  inspect: the chain does not verify
  5  the database is damaged (node and inspect; the message says how to recover)
  6  the disk is full: the write was rolled back and nothing unrecorded was sent; free space and
     start the node again with the same arguments
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, TextIO, cast

import structlog
import trio

from qora_p2p.errors import (
    ConfigError,
    DiskFull,
    KeyFileError,
    KeyFormatError,
    QoraError,
    StoreDamaged,
    StoreError,
)
from qora_p2p.identity import public_key_hex, read_key_file
from qora_p2p.learning.training import TrainingConfig
from qora_p2p.node.allocator import tune_allocator
from qora_p2p.node.driver import Node, NodeSettings
from qora_p2p.node.inspect import inspect_chain
from qora_p2p.node.store import Store
from qora_p2p.node.workload import build_workload
from qora_p2p.protocol.genesis import load_genesis
from qora_p2p.testnet.plugins import member_hooks
from qora_p2p.testnet.profile import Profile, load_profile, with_overrides

# Every local SGD setting has a flag of the same name (``--batch-size`` for batch_size).
TRAINING_FLAGS = tuple(TrainingConfig.__dataclass_fields__)

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_UNVERIFIED = 4
EXIT_DAMAGED = 5
EXIT_DISK_FULL = 6


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (it may be replaced after logging is set up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(log_format: str, level: str = "info") -> None:
    """structlog to stderr: JSON lines, or a console renderer on a terminal."""
    renderer: Any
    if log_format == "json" or (log_format == "auto" and not sys.stderr.isatty()):
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # PrintLogger only writes and flushes, which is all _Stderr forwards.
        logger_factory=structlog.PrintLoggerFactory(cast("TextIO", _Stderr())),
        cache_logger_on_first_use=False,
    )


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _members(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of member indices")
    return tuple(int(part) for part in parts)


def run_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qora-node", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--peers", type=Path, required=True, help="the network's genesis (peers.toml)")
    top.add_argument("--key", type=Path, required=True, help="this member's private key file (mode 0600)")
    top.add_argument("--data-dir", type=Path, help="durable state directory (default: qora-data/<member name>)")
    top.add_argument("--listen", type=_address, help="HOST:PORT to listen on (default: our address in peers.toml)")
    top.add_argument("--rounds", type=int, help="stop after committing this many rounds (default: run until stopped)")
    top.add_argument("--linger", type=float, default=5.0, help="seconds to keep serving peers after the last round (default 5)")
    top.add_argument("--log-format", choices=("auto", "json", "console"), default="auto", help="default: json unless stderr is a terminal")
    top.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    top.add_argument(
        "--system-allocator",
        action="store_true",
        help="keep glibc's malloc thresholds (by default they are raised: about 10%% less CPU per round; see qora_p2p.node.allocator)",
    )
    work = top.add_argument_group("local workload (overrides the profile)")
    work.add_argument("--profile", type=Path, help="node profile TOML (see nodes/); default: honest")
    work.add_argument("--dataset", help="digits, breast_cancer or a .npz path (default digits)")
    work.add_argument("--partition", choices=("iid", "dirichlet", "shards"), help="how members split the data (default dirichlet)")
    work.add_argument("--alpha", type=float, help="Dirichlet concentration (default 0.5)")
    work.add_argument("--data-seed", type=int, help="seed of the split and of local training (default 0)")
    work.add_argument("--steps", type=int, help="local minibatch steps per round, whatever the shard size (default 10)")
    work.add_argument("--epochs", type=int, help="passes over the local shard per round instead of --steps (default 0: use --steps)")
    work.add_argument("--learning-rate", type=float, help="local SGD step (default 0.1)")
    work.add_argument("--batch-size", type=int, help="local minibatch (default 32)")
    work.add_argument("--momentum", type=float, help="local heavy-ball momentum (default 0.9)")
    work.add_argument("--weight-decay", type=float, help="local L2 weight decay (default 0)")
    work.add_argument("--update-momentum", type=float, help="worker momentum of the sent update (default 0)")
    test = top.add_argument_group("test networks only")
    test.add_argument("--attack", help="a learning attack (see nodes/ and qora_p2p.learning.attacks)")
    test.add_argument("--colluder-members", type=_members, help="the attack's coalition, member indices (e.g. 1,4,7): their updates are not honest")
    test.add_argument("--behaviour", help="a protocol misbehaviour (see qora_p2p.protocol.behaviour)")
    test.add_argument("--fault-file", type=Path, help="JSON link faults, re-read when it changes (scenario runner)")
    return top


def inspect_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qora-node inspect", description="Print and verify a node's committed chain.")
    top.add_argument("--data-dir", type=Path, required=True, help="the node's data directory")
    top.add_argument("--json", action="store_true", help="print JSON")
    return top


# ------------------------------------------------------------------------------------- run


def _profile(args: argparse.Namespace) -> Profile:
    profile = load_profile(args.profile) if args.profile else Profile()
    profile = with_overrides(
        profile,
        dataset=args.dataset,
        partition=args.partition,
        alpha=args.alpha,
        data_seed=args.data_seed,
        attack=args.attack,
        colluder_members=args.colluder_members,
        training={name: getattr(args, name) for name in TRAINING_FLAGS},
    )
    if args.behaviour:
        from dataclasses import replace  # noqa: PLC0415

        from qora_p2p.protocol.behaviour import PROTOCOL_BEHAVIOURS  # noqa: PLC0415

        if args.behaviour not in (*PROTOCOL_BEHAVIOURS, "none"):
            raise ConfigError(f"--behaviour {args.behaviour!r} is unknown; known: none, {', '.join(PROTOCOL_BEHAVIOURS)}")
        profile = replace(profile, behaviour=None if args.behaviour == "none" else args.behaviour)
    return profile


def _run(args: argparse.Namespace) -> int:
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    if not 0 <= args.linger <= 3600:
        raise ConfigError("--linger must be in 0..3600 seconds")
    configure_logging(args.log_format, args.log_level)
    if not args.system_allocator:
        tune_allocator()
    genesis = load_genesis(args.peers)
    identity = read_key_file(args.key)
    member = genesis.member_index(identity.public_key)
    if member is None:
        raise ConfigError(f"--key {args.key}: public key {public_key_hex(identity.public_key)} is not a member of {args.peers}")
    profile = _profile(args)
    workload = build_workload(genesis, member, profile.workload)
    settings = NodeSettings(
        data_dir=args.data_dir or Path("qora-data") / genesis.members[member].name,
        listen=args.listen,
        rounds=args.rounds,
        linger_s=args.linger,
    )
    hooks = member_hooks(
        genesis,
        identity,
        workload,
        behaviour=profile.behaviour,
        behaviour_seed=profile.workload.data_seed * 1024 + member,
        fault_file=args.fault_file,
    )
    Store(settings.data_dir, genesis, identity.public_key).close()  # refuse a foreign data directory before starting
    node = Node(genesis, identity, workload, settings, hooks=hooks)
    try:
        trio.run(_serve_until_signal, node)
    except BaseExceptionGroup as group:
        # A nursery wraps what a task raised; a configuration or store error stays what it is.
        known = group.subgroup(lambda error: _exit_code(error) is not None)
        if known is not None and known.exceptions:
            raise _first(known) from group
        raise
    return EXIT_OK


def _exit_code(error: BaseException) -> int | None:
    """The exit code of an operating error (the message names it); None for a bug."""
    if isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        return EXIT_DISK_FULL  # ENOSPC outside the store too (a log file on the same full disk)
    if isinstance(error, StoreDamaged):
        return EXIT_DAMAGED
    if isinstance(error, StoreError):
        return EXIT_STORE
    if isinstance(error, ConfigError | KeyFileError | KeyFormatError):
        return EXIT_USAGE
    return None


def _first(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _serve_until_signal(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        node.log_status()
                        continue
                    node.log.info("stopping", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await node.run()
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------------- inspect


def _print_chain(report: dict[str, Any]) -> None:
    print(f"network {report['network_id']} ({report['genesis_hash'][:16]}), member {report['member']}, {report['last_round']} rounds committed")
    print(f"{'round':>5}  {'hash':16}  {'view':>4}  {'inputs':>6}  {'signers':>7}  {'evidence':>8}  {'model':16}  {'ledger':16}")
    for item in report["rounds"]:
        print(
            f"{item['round']:>5}  {item['hash'][:16]}  {item['view']:>4}  {item['inputs']:>6}  {item['signers']:>7}  "
            f"{item['evidence']:>8}  {item['model_digest'][:16]}  {item['ledger_digest'][:16]}"
        )
    if report["ledger"] is not None:
        print("ledger:")
        for entry in report["ledger"]:
            status = "banned for good" if entry["proven"] else (f"banned until round {entry['banned_until']}" if entry["banned_until"] > report["last_round"] else "")
            print(f"  {entry['member']:16s} reputation {entry['reputation']:.3f}  {status}")
    print(f"checkpoints at rounds {report['checkpoints'] or 'none'}")
    for first, last in report["skipped"]:
        print(f"rounds {first}-{last} are not stored here: this member caught up past them from a certified snapshot")
    if report["verified"]:
        print("chain verified: every certificate and link checks against the genesis")
    else:
        print("CHAIN DOES NOT VERIFY:")
        for problem in report["problems"]:
            print(f"  {problem}")


def _inspect(argv: list[str]) -> int:
    args = inspect_parser().parse_args(argv)
    report = inspect_chain(args.data_dir)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_chain(report)
    return EXIT_OK if report["verified"] else EXIT_UNVERIFIED


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["inspect"]:
            return _inspect(argv[1:])
        return _run(run_parser().parse_args(argv[1:] if argv[:1] == ["run"] else argv))
    except (QoraError, OSError) as error:
        code = _exit_code(error)
        if code is None:
            raise
        text = str(error) if isinstance(error, QoraError) else f"no space left on the disk ({error}); free space and start the node again"
        print(f"qora-node: {text}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
