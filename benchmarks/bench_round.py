"""Round benchmark: real `qora-node` processes on loopback, commit latency by phase, traffic, CPU.

    python benchmarks/bench_round.py                       # N in {4, 10}, P in {10K, 100K}, both workloads
    python benchmarks/bench_round.py --nodes 4 --dims 100000 --workloads synthetic --rounds 20 --json
    python benchmarks/bench_round.py --nodes 10 --dims 100000 --workloads synthetic --flower-python flwr-venv/bin/python

Each configuration writes a fresh network (keys, peers.toml on free ports) and starts N node
processes with ``--rounds R``; every node logs one ``round_committed`` line per round with its
phase times, its cumulative message bytes sent and received, and its cumulative CPU seconds. Round 1
is left out (it includes connection setup and imports warming up). Samples are (node, round) pairs.

Phases, per node and round (milliseconds):

* ``commit``: own update sent -> round committed (the target's "commit latency", training excluded);
* ``round``: previous commit -> this commit (includes local training);
* ``train``: local training (synthetic: drawing the update; digits: SGD on the member's shard);
* ``compute``: aggregation and value validation in worker threads, summed over the round.

Traffic: message bytes a node received per round (after decryption, before framing) against the
lower bound (n - 1) x one signed update (4 P bytes + its header). CPU: process CPU seconds per
node per round (all threads). Workloads: ``synthetic`` (the simulator's updates, P exactly) and
``digits`` (an MLP on the digits data whose hidden width gives P close to the target).

Timing: the genesis default except ``collect_timeout_ms = 100`` (how long the proposer waits for
stragglers once it holds n - f updates), the value a LAN deployment would use.

All N processes share this machine's cores, so CPU contention is part of what is measured.

Where a node's CPU goes (N = 10, P = 100K, synthetic; member 3 of a running benchmark sampled for
12 s with ``perf record -F 999 -g``, every thread, kernel included). By shared object:

    CPython interpreter (trio, transport, channel, codec, core: Python code itself)  39.0%
    numpy (aggregation, synthetic updates, payload checks)                            14.0%
    kernel (sockets, scheduling, file writes)                                         12.5%
    libc (memcpy and malloc)                                                            6.9%
    OpenSSL (SHA-256 of updates and models)                                             6.5%
    ChaCha20-Poly1305 (the channel, cryptography's Rust bindings)                       4.5%
    numpy's random generator (drawing the synthetic update: the workload)               6.0%
    BLAKE2b (the store's row checksums)                                                 4.2%
    Ed25519 (libsodium) 3.3%, SQLite 1.6%, msgpack 0.4%

and by thread: the Trio thread 59.6%, the round computation 16.7% (compute_round: centered
clipping, about 8.7 ms per round alone in-process), store commits 9.7%, training 7.6%, store
signatures 4.1%. The interpreter's share is spread over trio's scheduling, the reader and writer
tasks, the codec and the core, with no function above a few percent: what is left is Python's
cost per message (about 55 received and 26 sent per round), not per-round arithmetic.

Changes measured against this profile's predecessors (py-spy --gil and perf, same configuration):

* the store wrote ~440 pages per fsync with 4 KiB pages (strace): 28 with 64 KiB pages;
* the kernel's share was 24.5%, a third of it page faults and page clearing for buffers glibc
  had just unmapped or trimmed; qora-node now raises glibc's thresholds (`qora_p2p.node.allocator`);
* message decode was 24.5% of GIL time before large messages were checked field by field;
* update payloads are checked in place and stacked with one copy, signed bodies packed once.

CPU per node and round went from 0.064-0.065 s to 0.047-0.048 s (0.025 s is the target: not met).

The trusted-server baseline: with an interpreter that has ``flwr`` (this one, or
``--flower-python PATH``, e.g. a virtual environment with ``pip install flwr``), each synthetic
configuration is also run with Flower's legacy gRPC server and N client processes
(``benchmarks/flower_round.py``: FedAvg, then FedMedian; same P and rounds, updates drawn the same
way), and a second table gives qora-p2p's round p50 over Flower FedMedian's. Flower's round is one
server and N clients with no signatures, encryption, agreement or durable state.
Targets the project reports against: N=10, P=100K: p50 commit <= 300 ms; N=4, P=100K: <= 100 ms;
bytes received per node per round <= 1.25 x the lower bound.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, print_table
from qora_p2p.protocol.genesis import ModelSpec, Timing
from qora_p2p.testnet.cluster import LocalCluster

UPDATE_HEADER_BYTES = 180  # msgpack framing, round, hashes, sender, signature around the payload
TARGETS_MS = {(10, 100_000): 300.0, (4, 100_000): 100.0}
BYTES_RATIO_TARGET = 1.25
RUN_TIMEOUT_S = 600
LINGER_S = 5.0  # members that finish keep serving stragglers' catch-up this long
DIGITS_FEATURES, DIGITS_CLASSES = 64, 10


def model_for(workload: str, dimension: int) -> ModelSpec:
    if workload == "synthetic":
        return ModelSpec("synthetic", dimension, 1)
    hidden = max(1, round((dimension - DIGITS_CLASSES) / (DIGITS_FEATURES + 1 + DIGITS_CLASSES)))
    size = DIGITS_FEATURES * hidden + hidden + hidden * DIGITS_CLASSES + DIGITS_CLASSES
    return ModelSpec("mlp", size, 1, DIGITS_FEATURES, DIGITS_CLASSES, (hidden,))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def run(nodes: int, workload: str, dimension: int, rounds: int) -> dict[str, Any]:
    model = model_for(workload, dimension)
    with (
        tempfile.TemporaryDirectory(prefix="qora-bench-") as directory,
        LocalCluster.create(Path(directory), nodes, model=model, timing=Timing(collect_timeout_ms=100)) as cluster,
    ):
        for index in range(nodes):
            cluster.start(index, rounds=rounds, linger_s=LINGER_S, args=["--epochs", "1"] if workload == "digits" else [])
        deadline = time.monotonic() + RUN_TIMEOUT_S
        codes = [cluster.wait_exit(index, max(1.0, deadline - time.monotonic())) for index in range(nodes)]
        cluster.close()  # a member still running at the deadline is stopped and shows as unfinished
        lines = [cluster.events(index, "round_committed") for index in range(nodes)]
    samples: dict[str, list[float]] = {"commit": [], "round": [], "train": [], "compute": [], "received": [], "sent": [], "cpu": []}
    views = 0
    for node_lines in lines:
        for previous, line in itertools.pairwise(node_lines):
            samples["commit"].append(line["agree_ms"])
            samples["round"].append(line["total_ms"])
            samples["train"].append(line["train_ms"])
            samples["compute"].append(line["compute_ms"])
            samples["received"].append(line["bytes_received"] - previous["bytes_received"])
            samples["sent"].append(line["bytes_sent"] - previous["bytes_sent"])
            samples["cpu"].append(line["cpu_s"] - previous["cpu_s"])
            views += line["view"] > 0
    lower_bound = (nodes - 1) * (4 * model.dimension + UPDATE_HEADER_BYTES)
    accuracy = [line["accuracy"] for line in lines[0] if line.get("accuracy") is not None]
    return {
        "nodes": nodes,
        "workload": workload,
        "dimension": model.dimension,
        "rounds": rounds,
        "exit_codes": codes,
        "rounds_committed": [len(node_lines) for node_lines in lines],
        "samples": len(samples["commit"]),
        "view_changes": views,
        **{f"{phase}_ms_p50": statistics.median(samples[phase]) if samples[phase] else None for phase in ("commit", "round", "train", "compute")},
        **{f"{phase}_ms_p95": percentile(samples[phase], 0.95) for phase in ("commit", "round")},
        "received_bytes_per_round": statistics.median(samples["received"]) if samples["received"] else None,
        "sent_bytes_per_round": statistics.median(samples["sent"]) if samples["sent"] else None,
        "lower_bound_bytes": lower_bound,
        "received_over_lower_bound": statistics.median(samples["received"]) / lower_bound if samples["received"] else None,
        "cpu_s_per_round": statistics.median(samples["cpu"]) if samples["cpu"] else None,
        "final_accuracy": accuracy[-1] if accuracy else None,
        "target_commit_ms_p50": TARGETS_MS.get((nodes, dimension)),
    }


def flower_interpreter(choice: str | None) -> str | None:
    """The interpreter to run Flower with: ``choice``, or this one when it can import flwr."""
    if choice == "none":
        return None
    if choice is not None:
        return choice
    try:
        import flwr  # noqa: F401, PLC0415
    except ImportError:
        return None
    return sys.executable


def run_flower(python: str, clients: int, dimension: int, rounds: int, strategy: str) -> dict[str, Any]:
    """One Flower run (benchmarks/flower_round.py) with the same N, P and rounds."""
    script = Path(__file__).resolve().parent / "flower_round.py"
    completed = subprocess.run(  # noqa: S603 (the interpreter the user named, our script)
        [python, str(script), "--clients", str(clients), "--dim", str(dimension), "--rounds", str(rounds), "--strategy", strategy],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode or not lines:
        raise SystemExit(f"Flower run failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--nodes", default="4,10", help="comma-separated network sizes (default 4,10)")
    arguments.add_argument("--dims", default="10000,100000", help="comma-separated update lengths P (default 10000,100000)")
    arguments.add_argument("--workloads", default="synthetic,digits", help="synthetic and/or digits (default both)")
    arguments.add_argument("--rounds", type=int, default=12, help="rounds per configuration (default 12; round 1 is not counted)")
    arguments.add_argument("--json", action="store_true", help="print JSON instead of a table")
    arguments.add_argument(
        "--flower-python",
        default=None,
        help="an interpreter with flwr, for the trusted-server baseline on the same N, P and rounds (default: this one if it has flwr; 'none' to skip)",
    )
    args = arguments.parse_args(argv)
    flower = flower_interpreter(args.flower_python)
    if flower is None and not args.json:
        print("Flower baseline skipped: no interpreter with flwr (pip install 'qora-p2p[bench]', or --flower-python PATH)", file=sys.stderr)
    results = []
    baselines: list[dict[str, Any]] = []
    for workload in args.workloads.split(","):
        for nodes in (int(item) for item in args.nodes.split(",")):
            for dimension in (int(item) for item in args.dims.split(",")):
                if not args.json:
                    print(f"running N={nodes} {workload} P={dimension} for {args.rounds} rounds ...", file=sys.stderr, flush=True)
                results.append(run(nodes, workload, dimension, args.rounds))
                if flower is not None and workload == "synthetic":
                    for strategy in ("fedavg", "fedmedian"):
                        if not args.json:
                            print(f"running Flower {strategy}, {nodes} clients, P={dimension} ...", file=sys.stderr, flush=True)
                        baselines.append(run_flower(flower, nodes, dimension, args.rounds, strategy))
    if args.json:
        emit_json({"benchmark": "round", "machine": machine(), "targets_ms": {f"N={n},P={p}": t for (n, p), t in TARGETS_MS.items()}, "runs": results, "flower": baselines})
        return 0

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = [
        [
            result["nodes"],
            result["workload"],
            result["dimension"],
            f"{min(result['rounds_committed'])}/{result['rounds']}",
            ms(result["commit_ms_p50"]),
            ms(result["commit_ms_p95"]),
            ms(result["round_ms_p50"]),
            ms(result["train_ms_p50"]),
            ms(result["compute_ms_p50"]),
            result["view_changes"],
            f"{(result['received_bytes_per_round'] or 0) / 1e6:.2f}",
            f"{result['received_over_lower_bound'] or 0:.2f}",
            f"{result['cpu_s_per_round'] or 0:.3f}",
            ms(result["target_commit_ms_p50"]),
        ]
        for result in results
    ]
    print_table(
        ["N", "workload", "P", "rounds", "commit p50", "commit p95", "round p50", "train p50", "compute p50", "view chg", "MB recv/rnd", "recv/LB", "CPU s/rnd", "target"],
        rows,
    )
    print(f"\nms unless noted; samples are (node, round) pairs from round 2 on; recv/LB target <= {BYTES_RATIO_TARGET}")
    if baselines:
        rows = []
        for result in results:
            if result["workload"] != "synthetic":
                continue
            found = {item["strategy"]: item for item in baselines if (item["clients"], item["dimension"]) == (result["nodes"], result["dimension"])}
            median = found.get("fedmedian", {}).get("round_ms_p50")
            rows.append(
                [
                    result["nodes"],
                    result["dimension"],
                    ms(result["round_ms_p50"]),
                    ms(found.get("fedavg", {}).get("round_ms_p50")),
                    ms(median),
                    "-" if not median or result["round_ms_p50"] is None else f"{result['round_ms_p50'] / median:.1f}x",
                ]
            )
        print()
        print_table(["N", "P", "qora round p50", "Flower FedAvg p50", "Flower FedMedian p50", "qora / FedMedian"], rows)
        print(f"\nFlower: {baselines[0]['framework']}, one trusted server, plain gRPC, no signatures or agreement (benchmarks/flower_round.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
