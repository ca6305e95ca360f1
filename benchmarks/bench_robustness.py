"""Robustness benchmark: every rule against every attack on digits, in one run.

    python3 benchmarks/bench_robustness.py                      # the full matrix (~18 min, 2 cores, scaled from ~10 min with 12 attacks)
    python3 benchmarks/bench_robustness.py --quick              # 1 seed, 0.3 only, Dirichlet only
    python3 benchmarks/bench_robustness.py --json > out.json
    python3 benchmarks/bench_robustness.py --plot heatmap.png   # needs matplotlib

N = 10 members, 30 rounds, logistic regression, local SGD (2 epochs, lr 0.1, momentum 0.9).
Every federation runs the protocol's own round transition (``compute_round``) on the genesis of
its members (`qora_p2p.learning.federation`): exact fixed-point aggregation with the members' key
order for ties, the int64 model, the ledger; adaptive attackers see the reputation weights.
For each partition (IID, Dirichlet alpha=0.5) and Byzantine fraction (0.1, 0.2, 0.3): every rule
faces every attack with 3 seeds; the score is the final test accuracy of the global model (mean
and worst seed). Rules are told the true number of attackers ``b`` (``f = trim = b``; Bulyan,
which needs n >= 4f+3, gets f = 1). The row ``default`` is the configuration qora-p2p ships:
reputation-weighted centered clipping (radius = one median distance, centred on the previous
aggregate) with the reputation ledger (bans capped at the network's f = 3). The attack-free
fedavg reference is computed in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, print_table
from qora_p2p.learning import FederationConfig, TrainingConfig, run_federation
from qora_p2p.protocol.ledger import LedgerParams

ATTACKS = (
    "sign_flip",
    "scaling",
    "gaussian",
    "zero",
    "random",
    "label_flip",
    "backdoor",
    "alie",
    "ipm",
    "mimic",
    "adaptive_alie",
    "adaptive_ipm",
    "optimal_alie",
    "optimal_ipm",
    "min_max",
    "min_sum",
    "fang",
    "norm_sign_flip",
    "stale",
    "copy",
    "reputation_farming",
)
TARGET_ATTACKS = ("sign_flip", "scaling", "gaussian", "label_flip", "alie", "ipm", "adaptive_alie", "adaptive_ipm")
RULES = (
    "fedavg",
    "trimmed_mean",
    "median",
    "krum",
    "multi_krum",
    "bulyan",
    "centered_clipping",
    "nnm+trimmed_mean",
    "nnm+centered_clipping",
    "default",
)
TRAINING = TrainingConfig(epochs=2, learning_rate=0.1, momentum=0.9)
MEMBERS = 10
ROUNDS = 30


def configuration(rule: str, byzantine: int, attack: str, partition: str, seed: int) -> FederationConfig:
    f = max(byzantine, 1)
    clipping: dict[str, Any] = {"tau_scale": 1.0, "center": "previous"}
    table: dict[str, dict[str, Any]] = {
        "fedavg": {},
        "trimmed_mean": {"trim": f},
        "median": {},
        "krum": {"f": f},
        "multi_krum": {"f": f},
        "bulyan": {"f": 1},
        "centered_clipping": clipping,
        "nnm+trimmed_mean": {"f": f, "trim": f},
        "nnm+centered_clipping": dict(clipping, f=f),
        "default": clipping,
    }
    params = table[rule]
    return FederationConfig(
        rule="centered_clipping" if rule == "default" else rule,
        rule_params=params,
        members=MEMBERS,
        byzantine=byzantine,
        attack=attack,
        partition=partition,
        alpha=0.5,
        rounds=ROUNDS,
        training=TRAINING,
        ledger=LedgerParams() if rule == "default" else None,
        seed=seed,
    )


def run_one(task: tuple[str, int, str, str, int]) -> dict[str, Any]:
    rule, byzantine, attack, partition, seed = task
    result = run_federation(configuration(rule, byzantine, attack, partition, seed))
    last = result.records[-1]
    return {
        "rule": rule,
        "byzantine": byzantine,
        "attack": attack,
        "partition": partition,
        "seed": seed,
        "accuracy": last.accuracy,
        "attack_success": last.attack_success,
        "banned": list(last.banned),
        "attackers": list(result.byzantine),
    }


def tasks(partitions: list[str], fractions: list[float], seeds: int) -> list[tuple[str, int, str, str, int]]:
    work = [("fedavg", 0, "none", partition, seed) for partition in partitions for seed in range(seeds)]
    work += [(rule, 0, "none", partition, seed) for rule in RULES if rule != "fedavg" for partition in partitions for seed in range(seeds)]
    for partition in partitions:
        for fraction in fractions:
            byzantine = round(fraction * MEMBERS)
            for rule in RULES:
                for attack in ATTACKS:
                    work += [(rule, byzantine, attack, partition, seed) for seed in range(seeds)]
    return work


def summarise(runs: list[dict[str, Any]], partitions: list[str], fractions: list[float]) -> dict[str, Any]:
    def cell(rule: str, byzantine: int, attack: str, partition: str) -> dict[str, float]:
        values = [r["accuracy"] for r in runs if (r["rule"], r["byzantine"], r["attack"], r["partition"]) == (rule, byzantine, attack, partition)]
        return {"mean": float(np.mean(values)), "worst": float(np.min(values))}

    summary: dict[str, Any] = {}
    for partition in partitions:
        reference = cell("fedavg", 0, "none", partition)
        blocks = {}
        for fraction in fractions:
            byzantine = round(fraction * MEMBERS)
            rows = {}
            for rule in RULES:
                cells = {attack: cell(rule, byzantine, attack, partition) for attack in ATTACKS}
                target = min(cells[attack]["mean"] for attack in TARGET_ATTACKS)
                rows[rule] = {
                    "attack_free": cell(rule, 0, "none", partition)["mean"],
                    "attacks": cells,
                    "worst_mean_over_attacks": min(c["mean"] for c in cells.values()),
                    "worst_seed_over_attacks": min(c["worst"] for c in cells.values()),
                    "worst_mean_over_target_attacks": target,
                    "gap_to_reference_target": reference["mean"] - target,
                }
            blocks[str(fraction)] = rows
        summary[partition] = {"reference_fedavg_attack_free": reference, "fractions": blocks}
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    short = {attack: attack.replace("adaptive_", "a_")[:9] for attack in ATTACKS}
    for partition, block in summary.items():
        reference = block["reference_fedavg_attack_free"]
        print(f"\n## {partition}: attack-free fedavg reference {reference['mean']:.3f} (worst seed {reference['worst']:.3f})")
        for fraction, rows in block["fractions"].items():
            print(f"\nByzantine fraction {fraction}: mean final accuracy over seeds; worst = min over attacks (mean / worst seed)")
            headers = ["rule", "clean", *(short[a] for a in ATTACKS), "worst", "worst seed", "target gap"]
            table = []
            for rule, row in rows.items():
                table.append(
                    [
                        rule,
                        f"{row['attack_free']:.3f}",
                        *(f"{row['attacks'][a]['mean']:.3f}" for a in ATTACKS),
                        f"{row['worst_mean_over_attacks']:.3f}",
                        f"{row['worst_seed_over_attacks']:.3f}",
                        f"{100 * row['gap_to_reference_target']:+.1f}pp",
                    ]
                )
            print_table(headers, table)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (optional)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    blocks = [(partition, fraction, rows) for partition, block in summary.items() for fraction, rows in block["fractions"].items()]
    figure, axes = plt.subplots(len(blocks), 1, figsize=(12, 4.2 * len(blocks)), squeeze=False)
    for axis, (partition, fraction, rows) in zip(axes[:, 0], blocks, strict=True):
        grid = np.array([[rows[rule]["attacks"][attack]["mean"] for attack in ATTACKS] for rule in rows])
        image = axis.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        axis.set_xticks(range(len(ATTACKS)), ATTACKS, rotation=35, ha="right")
        axis.set_yticks(range(len(rows)), list(rows))
        axis.set_title(f"final test accuracy, digits, {partition}, Byzantine fraction {fraction}")
        for (i, j), value in np.ndenumerate(grid):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
        figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, Dirichlet only, fraction 0.3")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--plot", type=Path, help="write a PNG heatmap (needs matplotlib)")
    args = parser.parse_args(argv)
    partitions = ["dirichlet"] if args.quick else ["iid", "dirichlet"]
    fractions = [0.3] if args.quick else [0.1, 0.2, 0.3]
    seeds = 1 if args.quick else args.seeds
    if seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be at least 1")
    work = tasks(partitions, fractions, seeds)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = []
        for done, run in enumerate(pool.map(run_one, work, chunksize=4), start=1):
            runs.append(run)
            if done % 100 == 0 or done == len(work):
                print(f"  {done}/{len(work)} runs, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    summary = summarise(runs, partitions, fractions)
    document = {
        "benchmark": "robustness",
        "machine": machine(),
        "members": MEMBERS,
        "rounds": ROUNDS,
        "seeds": seeds,
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "runs": runs,
    }
    if args.plot:
        plot(summary, args.plot)
    if args.json:
        emit_json(document)
    else:
        print(f"machine: {machine()}; {len(work)} runs in {document['seconds']:.0f} s")
        print_summary(summary)
        backdoor = [r for r in runs if r["attack"] == "backdoor"]
        if backdoor:
            print("\nbackdoor attack success rate (mean over seeds, fraction 0.3, Dirichlet):")
            for rule in RULES:
                values = [r["attack_success"] for r in backdoor if r["rule"] == rule and r["byzantine"] == 3 and r["partition"] == "dirichlet"]
                if values:
                    print(f"  {rule:22s} {np.mean(values):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
