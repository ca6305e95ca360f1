"""Simulator benchmark: wall time, messages and bytes per round of the protocol at scale.

    python benchmarks/bench_sim.py                 # N=10/3 x 20 and N=100/33 x 20 (about 20 s)
    python benchmarks/bench_sim.py --large         # adds N=300/99 x 3 and N=1000/333 x 5 (many minutes)
    python benchmarks/bench_sim.py --json

Every configuration runs the unmodified protocol core of every member in the deterministic
simulator (`qora_p2p.sim`), one after another in this process, with Byzantine members following the
"mixed" strategy (equivocation, invalid proposals, conflicting and withheld votes, junk, replay,
poisoned updates) and synthetic updates of P int32 values. Wall time is the simulator's own clock
around the run (setup excluded); simulated time is the virtual clock at the last commit.

Traffic is measured at the receivers: bytes of every message an honest member received, per committed
round. The reference for update dissemination is the lower bound (n - 1) x (one signed update): every
member must obtain every other member's update at least once. Votes, proposals, records and
evidence are reported on their own.

Targets the project reports against: N=100 with 33 Byzantine, 20 rounds, P=1000 in <= 60 s wall;
N=1000 for 5 rounds completes; update bytes received per honest member per round <= 1.25 x the
lower bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, print_table
from qora_p2p.cli.sim import summary
from qora_p2p.sim import SimConfig, run_simulation

WALL_TARGET_S = 60.0  # N=100, 33 Byzantine, 20 rounds, P=1000
UPDATE_BYTES_RATIO_TARGET = 1.25  # update bytes received over the (n-1) x update lower bound

# (nodes, byzantine, rounds, model_dim)
STANDARD = [(10, 3, 20, 1000), (100, 33, 20, 1000)]
LARGE = [(300, 99, 3, 100), (1000, 333, 5, 100)]


def run(nodes: int, byzantine: int, rounds: int, dimension: int, seed: int) -> dict[str, Any]:
    config = SimConfig(
        nodes=nodes,
        byzantine=byzantine,
        rounds=rounds,
        seed=seed,
        dimension=dimension,
        rule="centered_clipping",
        rule_params=(("tau_scale", 1.0), ("center", "previous")),
    )
    return summary(run_simulation(config))


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--large", action="store_true", help="also run N=300 and N=1000 (many minutes)")
    arguments.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    arguments.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = arguments.parse_args(argv)

    configurations = STANDARD + (LARGE if args.large else [])
    reports = []
    for nodes, byzantine, rounds, dimension in configurations:
        if not args.json:
            print(f"running N={nodes} ({byzantine} Byzantine), {rounds} rounds, P={dimension} ...", file=sys.stderr, flush=True)
        reports.append(run(nodes, byzantine, rounds, dimension, args.seed))

    rows = []
    for report in reports:
        config = report["config"]
        traffic = report["bytes_received_per_honest_node_per_round"]
        messages = report["messages_per_node_per_round"]
        votes = messages.get("Prevote", 0) + messages.get("Precommit", 0)
        rows.append(
            [
                config["nodes"],
                config["byzantine"],
                config["rounds"],
                config["model_dim"],
                "yes" if report["ok"] else "NO",
                f"{report['committed_min']}/{config['rounds']}",
                f"{report['wall_seconds']:.1f}",
                f"{report['sim_seconds']:.1f}",
                f"{sum(messages.values()):.0f}",
                f"{messages.get('Update', 0):.0f}",
                f"{votes:.0f}",
                f"{traffic['mean'] / 1e3:.0f}",
                f"{traffic['updates_over_lower_bound']:.2f}",
                f"{traffic['other'] / 1e3:.0f}",
            ]
        )
    if args.json:
        emit_json(
            {
                "benchmark": "sim",
                "machine": machine(),
                "targets": {"wall_seconds_n100": WALL_TARGET_S, "update_bytes_over_lower_bound": UPDATE_BYTES_RATIO_TARGET},
                "runs": reports,
            }
        )
    else:
        print_table(
            ["N", "byz", "rounds", "P", "checks ok", "committed", "wall s", "sim s", "msgs/node/rnd", "updates", "votes", "kB/node/rnd", "upd/LB", "other kB"],
            rows,
        )
        print(
            f"\ntargets: N=100/33/20/P=1000 <= {WALL_TARGET_S:.0f} s wall; updates received <= {UPDATE_BYTES_RATIO_TARGET}x "
            "the (n-1) x update lower bound (upd/LB)"
        )
    return 0 if all(report["ok"] for report in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
