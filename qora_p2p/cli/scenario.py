"""``qora-scenario``: run N real nodes with Byzantine peers and faults, and write a report.

    qora-scenario run scenarios/quickstart.toml                 # the main job: 10 nodes, 3 attackers
    qora-scenario run scenarios/crash-restart.toml --out runs/crash
    qora-scenario matrix scenarios/no-attack.toml --rules median,centered_clipping --attacks sign_flip,alie --fractions 0.1,0.3
    qora-scenario list

``run`` creates keys and a genesis, starts one ``qora-node`` process per member on loopback,
applies the fault schedule, prints a line per round (honest accuracy, whether honest hashes agree,
bans), stops every process (Ctrl-C too), and writes a run directory: summary.json, rounds.csv,
accuracy.png, reputation.png, latency.png, and every node's log under network/logs.

``matrix`` runs the scenario once per (rule, attack, fraction of attackers) and writes a table
(matrix.csv, matrix.md) and one heatmap of final accuracy per fraction.

``--net netns`` runs every member in a network namespace of its own, with faults on packets
(nftables, tc, a userspace delay link); it needs root, iproute2, nftables and ethtool, and says
which is missing. The namespaces are deleted however the run ends (Ctrl-C and SIGTERM included).

Exit codes: 0 all runs finished with honest agreement; 1 a run broke agreement, stalled or did not
finish; 2 bad usage or an invalid scenario (the message names the field); 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from qora_p2p.errors import ConfigError, QoraError
from qora_p2p.protocol.genesis import apply_settings
from qora_p2p.testnet.links import NETS
from qora_p2p.testnet.scenario import (
    Scenario,
    ScenarioRun,
    load_scenario,
    resolve_profile,
    run_scenario,
    with_genesis,
    with_net,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qora-scenario", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one scenario and write its report")
    run.add_argument("scenario", type=Path, help="scenario TOML file (see scenarios/)")
    run.add_argument("--out", type=Path, help="run directory (default runs/<name>-<time>)")
    run.add_argument("--rounds", type=int, help="override the scenario's rounds")
    run.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    run.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a genesis parameter of the scenario (repeatable; see qora-keys network --help)")
    run.add_argument("--net", choices=NETS, help="how link faults are made: transport (default; in each node) or netns (a network namespace per member, faults on packets; needs root, iproute2, nftables, ethtool)")
    matrix = commands.add_parser("matrix", help="rules x attacks x fractions: a comparison table and heatmaps")
    matrix.add_argument("scenario", type=Path, help="base scenario (its byzantine list is replaced)")
    matrix.add_argument("--rules", required=True, help="comma-separated aggregation rules")
    matrix.add_argument("--attacks", required=True, help="comma-separated node profiles (nodes/<name>.toml)")
    matrix.add_argument("--fractions", default="0.1,0.3", help="comma-separated attacker fractions (default 0.1,0.3)")
    matrix.add_argument("--rounds", type=int, help="override the scenario's rounds")
    matrix.add_argument("--out", type=Path, help="output directory (default runs/matrix-<time>)")
    matrix.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a genesis parameter of the base scenario (repeatable)")
    matrix.add_argument("--net", choices=NETS, help="as for run")
    commands.add_parser("list", help="list the shipped scenarios and node profiles")
    return top


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_round(round_number: int, status: dict[str, Any]) -> None:
    accuracy = "-" if status["accuracy"] is None else f"{status['accuracy']:.3f}"
    agree = "agree" if status["agree"] else "DISAGREE"
    banned = ",".join(str(member) for member in status["banned"]) or "-"
    view = "" if not status["view"] else f"  view {status['view']}"
    print(f"round {round_number:3d}  accuracy {accuracy}  hashes {agree} ({status['holders']} honest)  banned {banned}  {status['ms']:.0f} ms{view}", flush=True)


def _print_fault(event: dict[str, Any]) -> None:
    print(f"  fault {event['fault']} (applied at {event['seconds']:.1f} s)", flush=True)


def _run_one(scenario: Scenario, out: Path, quiet: bool = False) -> tuple[ScenarioRun, dict[str, Any]]:
    from qora_p2p.testnet.report import write_report  # noqa: PLC0415 (matplotlib)

    if not quiet:
        roles = ", ".join(f"{scenario.byzantine_count} Byzantine ({', '.join(f'{count} {profile}' for profile, count in scenario.byzantine)})" for _ in [0]) if scenario.byzantine else "no Byzantine members"
        print(f"scenario {scenario.name}: {scenario.nodes} nodes, {roles}, {scenario.rounds} rounds, rule {scenario.rule}; run directory {out}", flush=True)
    run = run_scenario(scenario, out, on_round=None if quiet else _print_round, on_fault=None if quiet else _print_fault)
    summary = write_report(run)
    return run, summary


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print()
    print(f"result:      {'OK' if summary['ok'] else 'FAILED: ' + (summary['failure'] or 'agreement broken')}")
    print(f"agreement:   {'every honest chain verifies and all agree' if summary['agreement'] else 'BROKEN: ' + '; '.join(summary['agreement_problems'][:3])}")
    print(f"committed:   {summary['committed']}")
    if summary["final_accuracy"] is not None:
        print(f"accuracy:    final {summary['final_accuracy']:.3f} (best {summary['best_accuracy']:.3f})")
    if summary.get("final_attack_success") is not None:
        print(f"backdoor:    attack success {summary['final_attack_success']:.3f} (the share of triggered test samples sent to the target)")
    for name, item in summary["detections"].items():
        verdict = f"banned from round {item['first_banned_round']}" if item["first_banned_round"] else "never banned"
        if item["banned_for_good"]:
            verdict += ", for good (evidence)"
        print(f"attacker:    {name} ({item['profile']}): {verdict}, final reputation {item['final_reputation']}")
    if summary["false_bans"]:
        print(f"false bans:  {summary['false_bans']}")
    if summary["latency_ms_p50"] is not None:
        print(f"latency:     round p50 {summary['latency_ms_p50']:.0f} ms, p95 {summary['latency_ms_p95']:.0f} ms")
    if summary["faults"]:
        print(f"partitions:  {summary['partition_method']}")
    print(f"time:        {summary['seconds']:.0f} s")
    print(f"report:      {out}/summary.json, rounds.csv, accuracy.png, reputation.png, latency.png, network/logs/")


def _run(args: argparse.Namespace) -> int:
    scenario = with_genesis(load_scenario(args.scenario), apply_settings({}, args.set))
    if args.net is not None:
        scenario = with_net(scenario, args.net)
    if args.rounds is not None:
        if args.rounds < 1:
            raise ConfigError("--rounds must be at least 1")
        scenario = replace(scenario, rounds=args.rounds)
    out = args.out or _default_out(scenario.name)
    run, summary = _run_one(scenario, out)
    _print_summary(summary, out)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if run.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def _matrix(args: argparse.Namespace) -> int:
    base = with_genesis(load_scenario(args.scenario), apply_settings({}, args.set))
    if args.net is not None:
        base = with_net(base, args.net)
    rules = [item.strip() for item in args.rules.split(",") if item.strip()]
    attacks = [item.strip() for item in args.attacks.split(",") if item.strip()]
    try:
        fractions = [float(item) for item in args.fractions.split(",")]
    except ValueError as error:
        raise ConfigError(f"--fractions: {error}") from error
    if not rules or not attacks or not all(0 <= f < 1 / 3 + 1e-9 for f in fractions):
        raise ConfigError("--rules and --attacks need at least one name; fractions must be in [0, 1/3]")
    profiles = {attack: resolve_profile(attack, base.source) for attack in attacks}
    out = args.out or _default_out("matrix")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    failed = False
    for fraction in fractions:
        count = int(fraction * base.nodes)
        for rule in rules:
            for attack in attacks:
                # the rule replaces the base's whole aggregation table, so it runs with its own defaults
                ruled = with_genesis(replace(base, fragment={**base.fragment, "aggregation": {}}), {"aggregation": {"rule": rule}})
                scenario = replace(ruled, byzantine=((attack, count),) if count else (), faults=(), rounds=args.rounds or base.rounds, profiles={attack: profiles[attack]})
                name = f"{rule}-{attack}-{fraction:g}"
                print(f"matrix: {name} ...", flush=True)
                run, summary = _run_one(scenario, out / name, quiet=True)
                if run.interrupted:
                    return EXIT_INTERRUPTED
                failed |= not summary["ok"]
                results.append({"rule": rule, "attack": attack, "fraction": fraction, "attackers": count, "final_accuracy": summary["final_accuracy"], "ok": summary["ok"], "banned": sum(1 for item in summary["detections"].values() if item["first_banned_round"]), "false_bans": len(summary["false_bans"])})
                print(f"        final accuracy {summary['final_accuracy']}, agreement {summary['agreement']}, attackers banned {results[-1]['banned']}/{count}", flush=True)
    with (out / "matrix.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    lines = ["| fraction | rule | " + " | ".join(attacks) + " |", "|---|---|" + "---|" * len(attacks)]
    for fraction in fractions:
        for rule in rules:
            cells = [next(f"{r['final_accuracy']:.3f}" if r["final_accuracy"] is not None else "-" for r in results if r["rule"] == rule and r["attack"] == attack and r["fraction"] == fraction) for attack in attacks]
            lines.append(f"| {fraction:g} | {rule} | " + " | ".join(cells) + " |")
    (out / "matrix.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    _heatmaps(out, results, rules, attacks, fractions)
    print(f"\nwrote {out}/matrix.csv, matrix.md and heatmap-*.png")
    return EXIT_FAILED if failed else EXIT_OK


def _heatmaps(out: Path, results: list[dict[str, Any]], rules: list[str], attacks: list[str], fractions: list[float]) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    for fraction in fractions:
        grid = [[next((r["final_accuracy"] or 0.0) for r in results if r["rule"] == rule and r["attack"] == attack and r["fraction"] == fraction) for attack in attacks] for rule in rules]
        figure, axis = plt.subplots(figsize=(1.2 * len(attacks) + 3, 0.6 * len(rules) + 2))
        image = axis.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        axis.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
        axis.set_yticks(range(len(rules)), rules)
        for row, values in enumerate(grid):
            for column, value in enumerate(values):
                axis.text(column, row, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
        axis.set_title(f"final honest accuracy, {fraction:g} of members attacking")
        figure.colorbar(image, ax=axis)
        figure.tight_layout()
        figure.savefig(out / f"heatmap-{fraction:g}.png", dpi=120)
        plt.close(figure)


def _list() -> int:
    for folder in ("scenarios", "nodes"):
        print(f"{folder}/:")
        for path in sorted(Path(folder).glob("*.toml")):
            first = path.read_text(encoding="utf-8").splitlines()
            description = next((line.split("=", 1)[1].strip().strip('"') for line in first if line.startswith("description")), "")
            print(f"  {path.stem:22s} {description}")
    return EXIT_OK


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a run the way Ctrl-C does: nodes stopped, namespaces deleted


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "matrix":
            return _matrix(args)
        return _list()
    except ConfigError as error:
        print(f"qora-scenario: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qora-scenario: interrupted; every node was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except QoraError as error:
        print(f"qora-scenario: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
