"""The run directory of a scenario: summary JSON, per-round CSV, node logs and PNG plots.

Everything is derived from what the nodes wrote: their ``round_committed`` log lines (accuracy,
reputations, bans, phase times) and their SQLite chains (read through ``inspect``, which verifies
every certificate). **Agreement** means: every honest member's chain verifies, and any two honest
chains agree on every round both hold.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from typing import Any

from qora_p2p.errors import QoraError
from qora_p2p.node.inspect import inspect_chain
from qora_p2p.protocol.genesis import load_genesis
from qora_p2p.testnet.cluster import read_log
from qora_p2p.testnet.scenario import ScenarioRun

__all__ = ["write_report"]


def _chains(run: ScenarioRun, names: list[str]) -> dict[int, dict[str, Any]]:
    chains = {}
    for member in range(run.scenario.nodes):
        try:
            chains[member] = inspect_chain(run.directory / "network" / "data" / names[member])
        except QoraError:
            continue  # never started, or started too late to write anything
    return chains


def _agreement(run: ScenarioRun, chains: dict[int, dict[str, Any]]) -> tuple[bool, list[str]]:
    problems = []
    by_round: dict[int, dict[str, list[int]]] = {}
    for member in run.honest:
        chain = chains.get(member)
        if chain is None:
            continue
        if not chain["verified"]:
            problems += [f"member {member}: {problem}" for problem in chain["problems"]]
        for item in chain["rounds"]:
            by_round.setdefault(item["round"], {}).setdefault(item["hash"], []).append(member)
    for round_number, variants in sorted(by_round.items()):
        if len(variants) > 1:
            problems.append(f"round {round_number}: honest members disagree: {variants}")
    return not problems, problems


def write_report(run: ScenarioRun) -> dict[str, Any]:
    """Write summary.json, rounds.csv and the plots into the run directory; return the summary."""
    scenario = run.scenario
    network = run.directory / "network"
    names = [member.name for member in load_genesis(network / "peers.toml").members]
    logs = {member: [line for line in read_log(network / "logs" / f"{names[member]}.log") if line.get("event") == "round_committed"] for member in range(scenario.nodes)}
    chains = _chains(run, names)
    agreement, problems = _agreement(run, chains)
    reference = {line["round"]: line for line in logs[run.reference]}
    # A backdoor attacker scores its own trigger on the committed model (the same on every member).
    success = {line["round"]: line["attack_success"] for member in run.roles if run.roles[member] != "honest" for line in logs[member] if line.get("attack_success") is not None}
    rounds = []
    for round_number in range(1, scenario.rounds + 1):
        honest_lines = [line for member in run.honest for line in logs[member] if line["round"] == round_number]
        line = reference.get(round_number) or (honest_lines[0] if honest_lines else None)
        if line is None:
            continue
        rounds.append(
            {
                "round": round_number,
                "hash": line["hash"],
                "accuracy": line.get("accuracy"),
                "inputs": line.get("inputs"),
                "view": line.get("view"),
                "banned": line.get("banned", []),
                "latency_ms_p50": statistics.median(item["total_ms"] for item in honest_lines) if honest_lines else None,
                "commit_ms_p50": statistics.median(item["agree_ms"] for item in honest_lines) if honest_lines else None,
                "honest_committed": len(honest_lines),
                "reputation": line.get("reputation"),
                "attack_success": success.get(round_number),
            }
        )
    byzantine = {member: role for member, role in run.roles.items() if role != "honest"}
    final_ledger = chains.get(run.reference, {}).get("ledger") or []
    detections = {}
    for member in byzantine:
        first = next((item["round"] for item in rounds if member in item["banned"]), None)
        entry = final_ledger[member] if member < len(final_ledger) else {}
        detections[names[member]] = {
            "member": member,
            "profile": byzantine[member],
            "first_banned_round": first,
            "final_reputation": entry.get("reputation"),
            "banned_for_good": entry.get("proven"),
        }
    false_bans = sorted({names[m] for item in rounds for m in item["banned"] if m not in byzantine})
    latencies = [item["latency_ms_p50"] for item in rounds if item["latency_ms_p50"] is not None]
    accuracies = [item["accuracy"] for item in rounds if item["accuracy"] is not None]
    committed = {names[m]: (chains[m]["last_round"] if m in chains else 0) for m in range(scenario.nodes)}
    summary = {
        "scenario": scenario.name,
        "description": scenario.description,
        "source": str(scenario.source) if scenario.source else None,
        "seed": scenario.seed,
        "nodes": scenario.nodes,
        "rounds": scenario.rounds,
        "rule": scenario.rule,
        "model": {"kind": scenario.model.kind, "dimension": scenario.model.dimension},
        "roles": {names[m]: role for m, role in sorted(run.roles.items())},
        "ok": run.finished and agreement,
        "finished": run.finished,
        "failure": run.failure,
        "agreement": agreement,
        "agreement_problems": problems,
        "committed": committed,
        "final_accuracy": accuracies[-1] if accuracies else None,
        "best_accuracy": max(accuracies) if accuracies else None,
        "final_attack_success": next((item["attack_success"] for item in reversed(rounds) if item["attack_success"] is not None), None),
        "detections": detections,
        "false_bans": false_bans,
        "latency_ms_p50": statistics.median(latencies) if latencies else None,
        "latency_ms_p95": sorted(latencies)[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "faults": run.applied,
        "partition_method": run.method,
        "seconds": round(run.seconds, 1),
    }
    (run.directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with (run.directory / "rounds.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "hash", "accuracy", "attack_success", "inputs", "view", "banned", "latency_ms_p50", "commit_ms_p50", "honest_committed"])
        for item in rounds:
            writer.writerow([item["round"], item["hash"], item["accuracy"], item["attack_success"], item["inputs"], item["view"], " ".join(names[m] for m in item["banned"]), item["latency_ms_p50"], item["commit_ms_p50"], item["honest_committed"]])
    _plots(run, rounds, names)
    return summary


def _plots(run: ScenarioRun, rounds: list[dict[str, Any]], names: list[str]) -> None:
    import matplotlib  # noqa: PLC0415 (only the report needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    numbers = [item["round"] for item in rounds]
    fault_rounds = [(event["round"], event["fault"].split(": ", 1)[1]) for event in run.applied]

    def mark_faults(axis: Any) -> None:
        for round_number, label in fault_rounds:
            axis.axvline(round_number, color="grey", linestyle=":", linewidth=1)
            axis.annotate(label, (round_number, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7, va="top", color="grey")

    title = f"{run.scenario.name}: {run.scenario.nodes} nodes, {len(run.roles) - len(run.honest)} Byzantine, {run.scenario.rule}"
    if any(item["accuracy"] is not None for item in rounds):
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.plot(numbers, [item["accuracy"] for item in rounds], marker="o", markersize=3, label="honest members' model (identical)")
        if any(item["attack_success"] is not None for item in rounds):
            series = [math.nan if item["attack_success"] is None else item["attack_success"] for item in rounds]
            axis.plot(numbers, series, marker="x", markersize=3, color="tab:red", label="backdoor attack success")
        axis.set(xlabel="round", ylabel="test accuracy", title=title, ylim=(0, 1))
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
        mark_faults(axis)
        figure.tight_layout()
        figure.savefig(run.directory / "accuracy.png", dpi=120)
        plt.close(figure)
    if any(item["reputation"] for item in rounds):
        figure, axis = plt.subplots(figsize=(7, 4))
        for member, name in enumerate(names):
            series = [item["reputation"][member] if item["reputation"] else math.nan for item in rounds]  # a gap
            role = run.roles[member]
            honest = role == "honest"
            axis.plot(numbers, series, linestyle="-" if honest else "--", linewidth=1 if honest else 2, color="tab:blue" if honest else None, alpha=0.5 if honest else 1.0, label=None if honest else f"{name} ({role})")
        axis.plot([], [], color="tab:blue", alpha=0.5, label="honest members")
        axis.set(xlabel="round", ylabel="reputation (agreed ledger)", title=title, ylim=(-0.02, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
        mark_faults(axis)
        figure.tight_layout()
        figure.savefig(run.directory / "reputation.png", dpi=120)
        plt.close(figure)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(numbers, [item["latency_ms_p50"] for item in rounds], marker="o", markersize=3, label="round (incl. training), p50 over honest")
    axis.plot(numbers, [item["commit_ms_p50"] for item in rounds], marker="o", markersize=3, label="update sent -> commit, p50 over honest")
    axis.set(xlabel="round", ylabel="milliseconds", title=title)
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    mark_faults(axis)
    figure.tight_layout()
    figure.savefig(run.directory / "latency.png", dpi=120)
    plt.close(figure)
