"""Rounds per second under packet-level faults: a 7 | 3 partition, 10% loss, a 50 ms delay on one
member, each between fault-free phases of the same run.

    sudo python benchmarks/bench_packet_faults.py                    # N = 10, 30 rounds a phase, one run
    sudo python benchmarks/bench_packet_faults.py --seeds 1,2,3 --json
    python benchmarks/bench_packet_faults.py --net transport         # the same schedule, faults in each node

Each run is a scenario (`qora_p2p.testnet.scenario`) of N real node processes, each in its own
network namespace (``--net netns``: needs root, iproute2, nftables, ethtool), training logistic
regression on digits (Dirichlet alpha 0.5) under centered clipping. Its fault schedule is a row of
phases of ``--phase-rounds`` rounds each, starting at round 3 (rounds 1-2 hold start-up):

    baseline | partition 7 | 3 | healed | loss 10% | healed | delay 50 ms on member 3 | healed

Loss is on every frame crossing the bridge (p end to end); the delay is added to each direction of
member 3's link. A phase's rate is the rounds the network committed (the most advanced honest
member) between its first and last fault event, over the wall time between them: the time a fault
costs in view changes, retransmissions and catch-up is inside the phase it hurts. The partition
row also gives how many rounds the minority committed while cut off (it must be 0 or 1: the round
in flight when the partition came).

With ``--net transport`` the same schedule runs on loopback with faults in each node's transport;
a delay on one member is not possible there, so that phase is a delay on every member.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, print_table
from qora_p2p.testnet.report import write_report
from qora_p2p.testnet.scenario import parse_scenario, run_scenario

MAJORITY, MINORITY = list(range(7)), [7, 8, 9]
DELAYED = 3
START_ROUND = 3


def phases(net: str, nodes: int) -> list[tuple[str, dict[str, Any]]]:
    """(label, the fault that starts the phase), in order."""
    delay: dict[str, Any] = {"action": "delay", "delay_ms": 50, "nodes": [DELAYED]} if net == "netns" else {"action": "delay", "delay_ms": 50}
    return [
        ("baseline", {"action": "heal"}),
        ("partition 7 | 3", {"action": "partition", "groups": [[m for m in range(nodes) if m not in MINORITY], MINORITY]}),
        ("healed", {"action": "heal"}),
        ("loss 10%", {"action": "drop", "drop": 0.1}),
        ("healed", {"action": "heal"}),
        ("delay 50 ms, member 3" if net == "netns" else "delay 50 ms, every member", delay),
        ("healed", {"action": "heal"}),
    ]


def document(net: str, seed: int, phase_rounds: int, nodes: int = 10) -> dict[str, Any]:
    schedule = phases(net, nodes)
    faults = [{"at_round": START_ROUND + index * phase_rounds, **fault} for index, (_, fault) in enumerate(schedule)]
    end = START_ROUND + len(schedule) * phase_rounds
    faults.append({"at_round": end, "action": "heal"})  # marks the end of the last phase
    return {
        "name": f"bench-packet-faults-{net}-{seed}",
        "seed": seed,
        "rounds": end + 2,
        "network": {"nodes": nodes, "net": net},
        "genesis": {"model": {"kind": "logistic"}, "aggregation": {"rule": "centered_clipping"}, "timing": {"collect_timeout_ms": 200, "propose_timeout_ms": 2000}},
        "workload": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5, "data_seed": seed},
        "faults": faults,
    }


def run(net: str, seed: int, phase_rounds: int) -> dict[str, Any]:
    scenario = parse_scenario(document(net, seed, phase_rounds))
    with tempfile.TemporaryDirectory(prefix="qora-bench-packet-") as directory:
        result = run_scenario(scenario, Path(directory))
        summary = write_report(result)
    events = result.applied
    if len(events) < len(phases(net, scenario.nodes)) + 1:
        raise SystemExit(f"seed {seed}: the run ended after {len(events)} of its fault events ({result.failure or 'not finished'}); no phase table")
    rows = []
    for index, (label, _) in enumerate(phases(net, scenario.nodes)):
        start, end = events[index], events[index + 1]
        rounds, seconds = end["round"] - start["round"], end["seconds"] - start["seconds"]
        row: dict[str, Any] = {"phase": label, "rounds": rounds, "seconds": round(seconds, 2), "rounds_per_s": round(rounds / seconds, 2) if seconds > 0 else None}
        if label.startswith("partition"):
            held_start, held_end = start["held"], end["held"]
            row["minority_rounds"] = max(held_end[m] - held_start[m] for m in MINORITY)
            row["majority_rounds"] = min(held_end[m] - held_start[m] for m in MAJORITY)
        rows.append(row)
    return {
        "net": net,
        "seed": seed,
        "ok": summary["ok"],
        "agreement": summary["agreement"],
        "failure": summary["failure"],
        "method": summary["partition_method"],
        "phases": rows,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--net", choices=("netns", "transport"), default="netns", help="packet-level namespaces (default) or transport injection")
    arguments.add_argument("--seeds", default="7", help="comma-separated scenario seeds, one run each (default 7)")
    arguments.add_argument("--phase-rounds", type=int, default=30, help="rounds per phase (default 30)")
    arguments.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = arguments.parse_args(argv)
    if args.phase_rounds < 4:
        arguments.error("--phase-rounds must be at least 4")
    seeds = [int(item) for item in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        if not args.json:
            print(f"running {args.net}, seed {seed}, {args.phase_rounds} rounds a phase ...", file=sys.stderr, flush=True)
        runs.append(run(args.net, seed, args.phase_rounds))
    if args.json:
        emit_json({"benchmark": "packet_faults", "machine": machine(), "phase_rounds": args.phase_rounds, "runs": runs})
        return 0 if all(item["ok"] for item in runs) else 1
    baseline = statistics.median(item["phases"][0]["rounds_per_s"] for item in runs)
    table = []
    for index, first in enumerate(runs[0]["phases"]):
        rates = [item["phases"][index]["rounds_per_s"] for item in runs]
        median = statistics.median(rates)
        extra = ""
        if "minority_rounds" in first:
            extra = f"minority: {max(item['phases'][index]['minority_rounds'] for item in runs)} round(s) after the cut (at most the one in flight)"
        table.append([first["phase"], " ".join(f"{rate:.2f}" for rate in rates), f"{median:.2f}", f"{median / baseline:.2f}", extra])
    print_table(["phase", "rounds/s per seed", "median", "vs baseline", "note"], table)
    for item in runs:
        print(f"seed {item['seed']}: {'OK' if item['ok'] else 'FAILED: ' + str(item['failure'])}; agreement {'verified and identical' if item['agreement'] else 'BROKEN'}")
    print(f"method: {runs[0]['method']}")
    return 0 if all(item["ok"] for item in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
