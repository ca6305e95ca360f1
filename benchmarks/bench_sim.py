"""Simulator benchmark: wall time, messages and bytes per round of the protocol at scale.

    python benchmarks/bench_sim.py                          # N=10/3 and N=100/33, 20 rounds, mixed
    python benchmarks/bench_sim.py --strategies mixed,silent,flood
    python benchmarks/bench_sim.py --against e68daf4        # the same runs on that commit's code too
    python benchmarks/bench_sim.py --large                  # adds N=300/99 x 3 and N=1000/333 x 5 (hours)
    python benchmarks/bench_sim.py --sizes 1000 --strategies adversary:silent_member   # about 4 minutes
    python benchmarks/bench_sim.py --json

Every configuration runs the unmodified protocol core of every member in the deterministic
simulator (`qora_p2p.sim`), one after another in this process, with Byzantine members following
each of ``--strategies`` ("mixed", the default, cycles through equivocation, invalid proposals,
conflicting and withheld votes, junk, replay, floods and poisoned updates; "silent" members send
nothing; "flood" members all flood), or driven by an adversary (``adversary:silent_member``: members
that are not there at all, with no core, that nothing is sent to) and synthetic updates of P int32
values. Wall time is the
simulator's own clock around the run (setup excluded); simulated time is the virtual clock at the
last commit.

``--against REF`` is the baseline side by side: the code of git commit REF (``git archive``, into a
temporary directory) runs every configuration too, in a child process, in the same run and right
after this code's run of it, and the table adds its wall time, the speed-up, and whether both runs
had the same trace hash (the same events in the same order: the change did not alter behaviour).
This machine's wall times vary by 10-30 % from run to run (shared cores), so compare several runs.

Traffic is measured at the receivers: bytes of every message an honest member received, per committed
round. The reference for update dissemination is the lower bound (n - 1) x (one signed update): every
member must obtain every other member's update at least once. Votes, proposals, records and
evidence are reported on their own.

Targets the project reports against: N=100 with 33 Byzantine, 20 rounds, P=1000 in <= 10 s wall;
N=1000 for 5 rounds in <= 5 minutes; update bytes received per honest member per round <= 1.25 x
the lower bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, print_table
from qora_p2p.cli.sim import summary
from qora_p2p.sim import ADVERSARIES, SimConfig, run_simulation
from qora_p2p.sim import STRATEGIES as SINGLE_STRATEGIES

WALL_TARGET_S = 10.0  # N=100, 33 Byzantine, 20 rounds, P=1000
UPDATE_BYTES_RATIO_TARGET = 1.25  # update bytes received over the (n-1) x update lower bound
BASELINE_TIMEOUT_S = 4 * 3600
STRATEGIES = ("mixed", *SINGLE_STRATEGIES)
ADVERSARY_PREFIX = "adversary:"  # --strategies entry naming an adversary of qora_p2p.sim instead

# (nodes, byzantine, rounds, model_dim)
STANDARD = [(10, 3, 20, 1000), (100, 33, 20, 1000)]
LARGE = [(300, 99, 3, 100), (1000, 333, 5, 100)]
RULE = "centered_clipping"
RULE_PARAMS = (("tau_scale", 1.0), ("center", "previous"))

# Run by the baseline's interpreter with the baseline's code first on sys.path: it prints the
# wall time and trace hash of one configuration (the SimConfig fields every version accepts).
BASELINE_SCRIPT = """
import json, sys
from qora_p2p.sim import SimConfig, run_simulation
fields = json.loads(sys.argv[1])
fields["rule_params"] = tuple(tuple(item) for item in fields["rule_params"])
result = run_simulation(SimConfig(**fields))
print(json.dumps({"wall_seconds": result.wall_s, "trace_hash": result.trace_hash, "ok": result.ok}))
"""


def config_fields(nodes: int, byzantine: int, rounds: int, dimension: int, seed: int, strategy: str) -> dict[str, Any]:
    """SimConfig fields; ``strategy`` is a strategy's name or ``adversary:NAME``."""
    fields: dict[str, Any] = {
        "nodes": nodes,
        "byzantine": byzantine,
        "rounds": rounds,
        "seed": seed,
        "dimension": dimension,
        "strategy": strategy,
        "rule": RULE,
        "rule_params": RULE_PARAMS,
    }
    if strategy.startswith(ADVERSARY_PREFIX):
        fields["strategy"], fields["adversary"] = "mixed", strategy.removeprefix(ADVERSARY_PREFIX)
    return fields


def run(fields: dict[str, Any]) -> dict[str, Any]:
    return summary(run_simulation(SimConfig(**fields)))


def checkout(ref: str, directory: Path) -> None:
    """The project's files at ``ref`` in ``directory`` (exits 2 with git's message if it cannot)."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", ref], capture_output=True, check=False)  # noqa: S603
    if archive.returncode != 0:
        raise SystemExit(f"bench_sim: --against {ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)  # noqa: S603


def run_baseline(directory: Path, fields: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603 (this interpreter, our own script)
        [sys.executable, "-c", BASELINE_SCRIPT, json.dumps(fields)],
        capture_output=True,
        text=True,
        timeout=BASELINE_TIMEOUT_S,
        check=False,
        cwd=directory,
        env={"PYTHONPATH": str(directory), "PATH": "/usr/bin:/bin"},
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else f"exit {completed.returncode}"}
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def table_row(report: dict[str, Any], against: str | None) -> list[object]:
    config = report["config"]
    traffic = report["bytes_received_per_honest_node_per_round"]
    messages = report["messages_per_node_per_round"]
    votes = messages.get("Prevote", 0) + messages.get("Precommit", 0)
    row: list[object] = [
        config["nodes"],
        config["byzantine"],
        ADVERSARY_PREFIX + config["adversary"] if config.get("adversary") else config["strategy"],
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
    if against:
        baseline = report["baseline"]
        if "error" in baseline:
            return [*row, "failed", "-", "-"]
        speedup = baseline["wall_seconds"] / report["wall_seconds"]
        row += [f"{baseline['wall_seconds']:.1f}", f"{speedup:.2f}x", "yes" if baseline["trace_hash"] == report["trace_hash"] else "no"]
    return row


def chosen(arguments: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[int, int, int, int, str]]:
    """(nodes, byzantine, rounds, model_dim, strategy) of every run the options ask for."""
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    known = [*STRATEGIES, *(ADVERSARY_PREFIX + name for name in ADVERSARIES)]
    unknown = [name for name in strategies if name not in known]
    if unknown or not strategies:
        arguments.error(f"--strategies: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    shapes = STANDARD + LARGE if args.large or args.sizes else STANDARD
    if args.sizes:
        try:
            sizes = {int(size) for size in args.sizes.split(",")}
        except ValueError:
            arguments.error(f"--sizes: {args.sizes!r} is not a comma-separated list of N")
        shapes = [shape for shape in shapes if shape[0] in sizes]
        if not shapes:
            arguments.error(f"--sizes: none of {args.sizes} is a configured N ({', '.join(str(shape[0]) for shape in STANDARD + LARGE)})")

    configurations = [(*shape, strategy) for strategy in strategies for shape in shapes]
    return configurations


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--large", action="store_true", help="also run N=300 and N=1000 (very long)")
    arguments.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    arguments.add_argument(
        "--strategies",
        default="mixed",
        help=f"comma-separated Byzantine strategies (default mixed; any of {', '.join(STRATEGIES)}), or adversary:NAME (one of {', '.join(ADVERSARIES)})",
    )
    arguments.add_argument("--sizes", metavar="N,...", help="only the configurations of these N (of 10, 100, 300, 1000)")
    arguments.add_argument("--against", metavar="REF", help="also run every configuration on the code of git commit REF")
    arguments.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = arguments.parse_args(argv)
    configurations = chosen(arguments, args)
    with tempfile.TemporaryDirectory(prefix="qora-bench-sim-") as baseline_directory:
        if args.against:
            checkout(args.against, Path(baseline_directory))
        reports = []
        for nodes, byzantine, rounds, dimension, strategy in configurations:
            if not args.json:
                print(f"running N={nodes} ({byzantine} Byzantine, {strategy}), {rounds} rounds, P={dimension} ...", file=sys.stderr, flush=True)
            fields = config_fields(nodes, byzantine, rounds, dimension, args.seed, strategy)
            report = run(fields)
            if args.against:
                report["baseline"] = {"ref": args.against, **run_baseline(Path(baseline_directory), fields)}
            reports.append(report)

    rows = [table_row(report, args.against) for report in reports]
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
        headers = ["N", "byz", "strategy", "rounds", "P", "checks ok", "committed", "wall s", "sim s", "msgs/node/rnd", "updates", "votes", "kB/node/rnd", "upd/LB", "other kB"]
        if args.against:
            headers += [f"{args.against} wall s", "speed-up", "same trace"]
        print_table(headers, rows)
        print(
            f"\ntargets: N=100/33/20/P=1000 <= {WALL_TARGET_S:.0f} s wall; updates received <= {UPDATE_BYTES_RATIO_TARGET}x "
            "the (n-1) x update lower bound (upd/LB)"
        )
        for report in reports:
            if "error" in report.get("baseline", {}):
                print(f"baseline run failed: {report['baseline']['error']}", file=sys.stderr)
    return 0 if all(report["ok"] for report in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
