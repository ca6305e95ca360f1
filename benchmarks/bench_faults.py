"""Fault benchmark: real `qora-node` processes on loopback with one member silent, down, or flooding.

    python benchmarks/bench_faults.py                         # N=4: all up, silent, down (P=10K); flood vs all up (P=100K)
    python benchmarks/bench_faults.py --cases silent --rounds 40 --json

Cases, run one after the other in this one invocation so that each is compared with its own
all-up baseline on the same machine state:

* ``up``: every member honest (the baseline);
* ``silent``: member 0 runs but sends nothing (``--behaviour silent``);
* ``down``: member 0 is never started;
* ``flood``: member 0 also sends every peer many signed next-round updates (full size), votes
  and sync requests after each of its broadcasts (``--behaviour flood``).

Rate: rounds committed per second by each honest member between its 3rd and its last commit
(the first rounds include connection set-up and, with a member silent from the start, the one
round in which it is first missed); the table shows the median over honest members, and the
ratio to the all-up rate. Memory: every honest member's resident set size (``VmRSS``) is sampled
every 0.2 s; growth is its peak minus its size at its 3rd commit, the median over members.
Traffic: message bytes an honest member received per round in the window (median), which shows
how much of a flood reached it.

Targets (issue 12): with 1 of 4 silent, at least 50% of the all-up rate; under a flood from one
member, RSS grows by less than 100 MB at P = 100K and honest rounds continue.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, print_table
from qora_p2p.protocol.genesis import ModelSpec, Timing
from qora_p2p.testnet.cluster import LocalCluster

RUN_TIMEOUT_S = 600
LINGER_S = 3.0
SAMPLE_EVERY_S = 0.2
WARM_ROUNDS = 3  # commits before the measured window
RATE_TARGET = 0.5
RSS_GROWTH_TARGET_MB = 100.0


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def commit_lines(cluster: LocalCluster, index: int) -> list[tuple[float, int]]:
    """(time, cumulative message bytes received) at each of a member's commits."""
    return [(datetime.fromisoformat(line["timestamp"]).timestamp(), line["bytes_received"]) for line in cluster.events(index, "round_committed")]


def run(case: str, nodes: int, dimension: int, rounds: int) -> dict[str, Any]:
    faulty = 0
    honest = [index for index in range(nodes) if case == "up" or index != faulty]
    with (
        tempfile.TemporaryDirectory(prefix="qora-bench-faults-") as directory,
        LocalCluster.create(Path(directory), nodes, model=ModelSpec("synthetic", dimension, 1), timing=Timing(collect_timeout_ms=100)) as cluster,
    ):
        for index in range(nodes):
            if index == faulty and case == "down":
                continue
            args = ["--behaviour", case] if index == faulty and case in ("silent", "flood") else []
            # A faulty member has no round count to reach: it runs until the honest ones are done.
            cluster.start(index, rounds=None if index == faulty and case != "up" else rounds, linger_s=LINGER_S, args=args)
        samples: dict[int, list[tuple[float, int]]] = {index: [] for index in honest}
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and any(cluster.alive(index) for index in honest):
            for index in honest:
                process = cluster.processes.get(index)
                size = None if process is None else rss_bytes(process.pid)
                if size is not None:
                    samples[index].append((time.time(), size))
            time.sleep(SAMPLE_EVERY_S)
        cluster.close()
        lines = {index: commit_lines(cluster, index) for index in honest}
    rates, growth, received = [], [], []
    for index in honest:
        committed = lines[index]
        if len(committed) > WARM_ROUNDS:
            window = committed[WARM_ROUNDS - 1 :]
            (first, first_bytes), (last, last_bytes) = window[0], window[-1]
            rates.append((len(window) - 1) / max(last - first, 1e-9))
            received.append((last_bytes - first_bytes) / (len(window) - 1))
            after = [size for at, size in samples[index] if at >= first]
            if after:
                growth.append(max(after) - after[0])
    return {
        "case": case,
        "nodes": nodes,
        "dimension": dimension,
        "rounds": rounds,
        "rounds_committed": [len(lines[index]) for index in honest],
        "received_mb_per_round": statistics.median(received) / 2**20 if received else None,
        "rounds_per_s": statistics.median(rates) if rates else 0.0,
        "rss_growth_mb": statistics.median(growth) / 2**20 if growth else None,
        "rss_growth_mb_max": max(growth) / 2**20 if growth else None,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--nodes", type=int, default=4, help="network size (default 4)")
    arguments.add_argument("--cases", default="silent,down,flood", help="comma-separated among silent, down, flood (default all)")
    arguments.add_argument("--dim", type=int, default=10_000, help="update length P of the silent and down cases (default 10000)")
    arguments.add_argument("--flood-dim", type=int, default=100_000, help="update length P of the flood case (default 100000)")
    arguments.add_argument("--rounds", type=int, default=30, help="rounds each honest member commits (default 30)")
    arguments.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = arguments.parse_args(argv)
    cases = args.cases.split(",")
    unknown = set(cases) - {"silent", "down", "flood"}
    if unknown:
        arguments.error(f"unknown case(s) {', '.join(sorted(unknown))}")
    results = []
    baselines: dict[int, dict[str, Any]] = {}
    for case in cases:
        dimension = args.flood_dim if case == "flood" else args.dim
        if dimension not in baselines:
            if not args.json:
                print(f"running N={args.nodes} all up, P={dimension} ...", file=sys.stderr, flush=True)
            baselines[dimension] = run("up", args.nodes, dimension, args.rounds)
            results.append(baselines[dimension])
        if not args.json:
            print(f"running N={args.nodes} member 0 {case}, P={dimension} ...", file=sys.stderr, flush=True)
        result = run(case, args.nodes, dimension, args.rounds)
        base = baselines[dimension]["rounds_per_s"]
        result["rate_vs_all_up"] = result["rounds_per_s"] / base if base else None
        results.append(result)
    if args.json:
        emit_json({"benchmark": "faults", "machine": machine(), "targets": {"rate_vs_all_up": RATE_TARGET, "rss_growth_mb": RSS_GROWTH_TARGET_MB}, "runs": results})
        return 0

    def number(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [
        [
            result["case"],
            str(result["dimension"]),
            ",".join(map(str, result["rounds_committed"])),
            number(result["rounds_per_s"], ".2f"),
            number(result["received_mb_per_round"], ".2f"),
            number(result.get("rate_vs_all_up"), ".0%"),
            number(result["rss_growth_mb"], ".1f"),
            number(result["rss_growth_mb_max"], ".1f"),
        ]
        for result in results
    ]
    print_table(["case", "P", "rounds (honest)", "rounds/s", "MB in/round", "vs all up", "RSS growth MB (median)", "max"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
