"""``qora-sim``: run the protocol in the deterministic simulator.

    qora-sim --nodes 10 --byzantine 3 --rounds 20 --seed 7
    qora-sim --nodes 100 --byzantine 33 --rounds 20 --model-dim 1000 --faults chaos --json run.json
    qora-sim --nodes 10 --byzantine 3 --set reputation.opposing_penalty=0.05 --set aggregation.rule=median
    qora-sim --genesis genesis.toml          # peers.toml's tables, without network_id and members
    qora-sim --nodes 7 --byzantine 2 --adversary equivocating_precommits --faults chaos
    qora-sim --sweep 10000 --workers 2       # seeded configurations, N 4..31, every behaviour and fault

Every member runs the unmodified protocol core over simulated links; Byzantine members follow
--strategy ("mixed" cycles through all of them), or are driven by --adversary (attacks written
against the protocol with an omniscient view: see qora_p2p.sim.adversaries). After every commit the
checkers verify agreement, validity, state equality, certificates, stored bytes, that no honest
member is banned and that no honest member signs twice; once the faults are over, that every honest
member keeps committing; at the end, that every honest member committed every round and that every
stored chain verifies. The same --seed replays the same run, event for event (same trace hash).

Every genesis parameter but the model (synthetic updates of length --model-dim) can be set: by
--rule and --no-ledger, a fragment file (--genesis), then --set PATH=VALUE, later ones winning. The
genesis schema checks them as it checks peers.toml; the parameters are listed at the end.

--sweep SEEDS runs that many configurations drawn from consecutive seeds (from --seed on) instead of
one (qora_p2p.sim.sweep; the other run options do not apply), in --workers processes, and prints
every failure that is not a known protocol bug with the command that replays it.

Exit codes: 0 all checks passed; 1 a checker failed (the seed to replay is printed); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qora_p2p.errors import QoraError
from qora_p2p.protocol.genesis import default_rule_params, describe_settings, placeholder_members
from qora_p2p.schema import flatten, read_toml
from qora_p2p.sim import (
    ADVERSARIES,
    ALL_FAULT_PROFILES,
    STRATEGIES,
    RoundStats,
    SimConfig,
    SimResult,
    replay_command,
    run_simulation,
)
from qora_p2p.sim.sweep import Outcome, run_sweep

EXIT_FAILED = 1
EXIT_USAGE = 2
UPDATE_OVERHEAD_BYTES = 128  # msgpack framing, round, hashes, sender, signature around a payload
SWEEP_PROGRESS_EVERY = 500  # runs between two progress lines of a sweep


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="qora-sim",
        description=__doc__,
        epilog="genesis parameters (--genesis file, --set PATH=VALUE):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--nodes", type=int, default=10, help="members (default 10)")
    top.add_argument("--byzantine", type=int, default=3, help="Byzantine members, drawn from the seed (default 3)")
    top.add_argument("--rounds", type=int, default=10, help="FL rounds to commit (default 10)")
    top.add_argument("--seed", type=int, default=0, help="everything follows from it (default 0)")
    top.add_argument("--model-dim", type=int, default=1000, help="update length P of the synthetic updates (default 1000)")
    top.add_argument("--faults", choices=sorted(ALL_FAULT_PROFILES), default="none", help="fault profile (default none)")
    top.add_argument("--strategy", choices=["mixed", *STRATEGIES], default="mixed", help="Byzantine behaviour (default mixed)")
    top.add_argument("--adversary", choices=["mixed", *ADVERSARIES], default="", help="drive the Byzantine members by an adversary instead of --strategy")
    top.add_argument("--rule", default="centered_clipping", help="aggregation rule (default centered_clipping)")
    top.add_argument("--no-ledger", action="store_true", help="disable the reputation ledger")
    top.add_argument("--genesis", type=Path, metavar="FRAGMENT.toml", help="genesis parameters from a file: peers.toml's tables without network_id and members")
    top.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="a genesis parameter, e.g. reputation.opposing_penalty=0.05 (repeatable; wins over --genesis)")
    top.add_argument("--sweep", type=int, metavar="SEEDS", help="a sweep of SEEDS seeded configurations from --seed on, instead of one run")
    top.add_argument("--workers", type=int, default=2, help="processes of a sweep (default 2)")
    top.add_argument("--json", type=Path, metavar="OUT", help="write the summary as JSON")
    top.add_argument("--quiet", action="store_true", help="no per-round progress")
    return top


def summary(result: SimResult) -> dict[str, Any]:
    config = result.config
    genesis = config.build_genesis(placeholder_members(config.nodes))
    honest = [member for member in range(config.nodes) if member not in config.byzantine_members]
    rounds = max(1, min(result.committed[member] for member in honest)) if honest else 1
    update_bytes = 4 * config.dimension + UPDATE_OVERHEAD_BYTES
    received = [result.bytes_received[member] / rounds for member in honest]
    update_received = result.bytes_by_kind.get("Update", 0) / max(len(honest), 1) / rounds
    other_received = sum(value for kind, value in result.bytes_by_kind.items() if kind != "Update") / max(len(honest), 1) / rounds
    lower_bound = (config.nodes - 1) * update_bytes
    return {
        "config": {
            "nodes": config.nodes,
            "byzantine": config.byzantine,
            "byzantine_members": list(config.byzantine_members),
            "rounds": config.rounds,
            "seed": config.seed,
            "model_dim": config.dimension,
            "faults": config.faults,
            "strategy": config.strategy,
            "adversary": config.adversary,
            "rule": genesis.rule,
            "ledger": genesis.ledger is not None,
            "genesis_settings": list(config.genesis_settings),
            "genesis_hash": genesis.hash.hex(),  # the network's; members differ from the run's
        },
        "ok": result.ok,
        "violations": result.violations,
        "agreement": not any(v.startswith("agreement") for v in result.violations),
        "committed_min": min(result.committed[member] for member in honest) if honest else 0,
        "committed_max": max(result.committed[member] for member in honest) if honest else 0,
        "views_per_round": {str(r): sorted(set(stats.views)) for r, stats in sorted(result.rounds.items())},
        "round_hashes": {str(r): stats.hash for r, stats in sorted(result.rounds.items())},
        "bans": {str(r): banned for r, banned in sorted(result.bans.items()) if banned},
        "messages_per_node_per_round": {kind: count / config.nodes / rounds for kind, count in sorted(result.messages.items())},
        "bytes_received_per_honest_node_per_round": {
            "mean": sum(received) / max(len(received), 1),
            "max": max(received, default=0),
            "updates": update_received,
            "other": other_received,
            "lower_bound_updates": lower_bound,
            "updates_over_lower_bound": update_received / lower_bound if lower_bound else 0.0,
        },
        "penalties": result.penalties,
        "events": dict(result.events),
        "sim_seconds": result.sim_ms / 1000,
        "wall_seconds": result.wall_s,
        "trace_hash": result.trace_hash,
    }


def _progress(round_number: int, stats: RoundStats) -> None:
    views = sorted(set(stats.views))
    print(
        f"round {round_number:4d}  committed by {stats.committed_by} honest  hash {stats.hash}  "
        f"view {views[0] if len(views) == 1 else views}  at {stats.last_commit_ms / 1000:.2f}s sim",
        flush=True,
    )


def _listed(members: tuple[int, ...], most: int = 20) -> str:
    """``: [1, 5, 7]`` for a short list, nothing for a long one."""
    return f": {list(members)}" if 0 < len(members) <= most else ""


GENESIS_FRAGMENT_BYTES_MAX = 64 << 10  # a fragment holds parameters only, no member list


def _settings(args: argparse.Namespace) -> tuple[str, ...]:
    """--genesis (flattened to PATH=VALUE) then --set, in order."""
    fragment = read_toml(args.genesis, "genesis fragment", GENESIS_FRAGMENT_BYTES_MAX) if args.genesis else {}
    return (*flatten(fragment), *args.set)


def config_of(args: argparse.Namespace) -> SimConfig:
    """The run the options describe (what `replay_command` prints, read back)."""
    return SimConfig(
        nodes=args.nodes,
        byzantine=args.byzantine,
        rounds=args.rounds,
        seed=args.seed,
        dimension=args.model_dim,
        faults=args.faults,
        strategy=args.strategy,
        adversary=args.adversary,
        rule=args.rule,
        rule_params=tuple(default_rule_params(args.rule).items()),
        ledger=not args.no_ledger,
        genesis_settings=_settings(args),
    )


def _sweep(args: argparse.Namespace) -> int:
    if args.sweep < 1 or args.workers < 1:
        print("qora-sim: --sweep and --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    done = 0

    def progress(outcome: Outcome) -> None:
        nonlocal done
        done += 1
        if not outcome.ok and not outcome.known:
            print(f"FAILED seed {outcome.seed}: {outcome.violations[0]}\n  replay: {outcome.replay}", flush=True)
        elif done % SWEEP_PROGRESS_EVERY == 0 and not args.quiet:
            print(f"{done} of {args.sweep} runs", flush=True)

    print(f"sweeping seeds {args.seed}..{args.seed + args.sweep - 1} on {args.workers} worker(s)", flush=True)
    report = run_sweep(range(args.seed, args.seed + args.sweep), args.workers, on_outcome=progress)
    print("\n".join(report.lines()))
    if args.json:
        rows = [{"seed": o.seed, "ok": o.ok, "known": o.known, "violations": list(o.violations), "replay": o.replay, "sim_ms": o.sim_ms, "wall_s": o.wall_s} for o in report.outcomes]
        args.json.write_text(json.dumps({"summary": report.lines(0), "runs": rows}, indent=1) + "\n", encoding="utf-8")
    return EXIT_FAILED if report.failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.sweep is not None:
        return _sweep(args)
    try:
        config = config_of(args)
        if args.rounds < 1 or args.model_dim < 1:
            raise QoraError("--rounds and --model-dim must be at least 1")
        genesis = config.build_genesis(placeholder_members(config.nodes))  # bad settings exit 2 here
        print(
            f"simulating {config.nodes} members ({config.byzantine} Byzantine{_listed(config.byzantine_members)}, "
            f"{'adversary ' + config.adversary if config.adversary else 'strategy ' + config.strategy}), {config.rounds} rounds, P = {config.dimension}, faults {config.faults}, seed {config.seed}, "
            f"rule {genesis.rule}, ledger {'on' if genesis.ledger else 'off'}",
            flush=True,
        )
        result = run_simulation(config, None if args.quiet else _progress)
    except QoraError as error:
        print(f"qora-sim: {error}", file=sys.stderr)
        return EXIT_USAGE
    report = summary(result)
    traffic = report["bytes_received_per_honest_node_per_round"]
    messages = report["messages_per_node_per_round"]
    print()
    print(f"agreement:      {'ok' if report['agreement'] else 'BROKEN'}")
    print(f"rounds:         honest members committed {report['committed_min']}..{report['committed_max']} of {config.rounds}")
    print(f"views:          {sum(1 for views in report['views_per_round'].values() if views != [0])} round(s) needed a view change")
    print(f"bans:           {report['bans'] or 'none'}")
    print(f"messages/node/round: {', '.join(f'{kind} {count:.1f}' for kind, count in messages.items())}")
    print(
        f"bytes received/honest node/round: {traffic['mean'] / 1e3:.1f} kB (updates {traffic['updates'] / 1e3:.1f} kB = "
        f"{traffic['updates_over_lower_bound']:.2f}x the (n-1) x update lower bound; votes and control {traffic['other'] / 1e3:.1f} kB)"
    )
    print(f"time:           {report['sim_seconds']:.1f} s simulated, {report['wall_seconds']:.1f} s wall")
    print(f"trace hash:     {report['trace_hash']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not result.ok:
        print("\nCHECKER FAILURES:", file=sys.stderr)
        for violation in result.violations[:20]:
            print(f"  {violation}", file=sys.stderr)
        print(f"replay with: {replay_command(config)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
