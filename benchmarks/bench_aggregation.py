"""Aggregation benchmark: qora-p2p's exact fixed-point rules against a plain numpy float32 baseline,
and against qora-fl when it is installed, on the same data in the same run.

    python benchmarks/bench_aggregation.py                 # n in {10, 50} x P in {100K, 1M}
    python benchmarks/bench_aggregation.py --sizes 10x100000 --repeat 9 --json

Data: n updates of P values, each an honest-looking update (a shared direction plus N(0, 0.01)
noise per coordinate) encoded in Q16.16; the float baselines get the decoded float32 values.
Every time is the median of ``--repeat`` calls after one warm-up; peak extra memory is measured in
a separate call with tracemalloc (numpy allocations; BLAS work buffers are not visible to it).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit_json, machine, median_seconds, peak_extra_bytes, print_table
from qora_p2p.aggregation import aggregate
from qora_p2p.fixedpoint import decode, encode, to_fixed

FRAC_BITS = 16


def make_updates(count: int, dimension: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = rng.normal(0.0, 0.01, size=dimension)
    updates = direction + rng.normal(0.0, 0.01, size=(count, dimension))
    fixed = encode(updates, FRAC_BITS).values
    return fixed, decode(fixed, FRAC_BITS).astype(np.float32)


def rule_cases(count: int, dimension: int) -> list[tuple[str, dict[str, Any]]]:
    f = count // 5
    tau = to_fixed(0.01 * np.sqrt(2 * dimension), FRAC_BITS)  # about an honest update's distance
    return [
        ("fedavg", {}),
        ("trimmed_mean", {"trim": f}),
        ("median", {}),
        ("krum", {"f": f}),
        ("multi_krum", {"f": f}),
        ("bulyan", {"f": min(f, (count - 3) // 4)}),
        ("centered_clipping", {"tau": tau, "iterations": 1}),
        ("nnm+trimmed_mean", {"f": f, "trim": f}),
    ]


def float_baselines(values: np.ndarray, f: int) -> dict[str, Callable[[], object]]:
    """Plain numpy on float32: what a float implementation of the same rule costs."""
    count = values.shape[0]

    def trimmed() -> np.ndarray:
        return np.sort(values, axis=0)[f : count - f].mean(axis=0)

    def median() -> np.ndarray:
        ordered = np.sort(values, axis=0)
        return (ordered[(count - 1) // 2] + ordered[count // 2]) / 2

    def krum() -> np.ndarray:
        wide = values.astype(np.float64)
        gram = wide @ wide.T
        squared = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram
        np.fill_diagonal(squared, np.inf)
        scores = np.sort(squared, axis=1)[:, : count - f - 2].sum(axis=1)
        return values[int(np.argmin(scores))]

    return {
        "fedavg": lambda: values.mean(axis=0),
        "trimmed_mean": trimmed,
        "median": median,
        "krum": krum,
    }


def qora_fl_calls(values: np.ndarray, f: int) -> dict[str, Callable[[], object]]:
    """qora-fl's Rust aggregators on the same float32 data, when the package is installed."""
    try:
        import qora  # noqa: PLC0415  (optional, never a dependency)
    except ImportError:
        return {}
    rows = [row[None, :] for row in values]
    fraction = f / values.shape[0]
    aggregators = {
        "trimmed_mean": qora.ByzantineAggregator("trimmed_mean", fraction),
        "median": qora.ByzantineAggregator("median", fraction),
        "krum": qora.ByzantineAggregator(f"krum:{f}", fraction),
    }
    return {name: functools.partial(aggregator.aggregate, rows) for name, aggregator in aggregators.items()}


def run_size(count: int, dimension: int, repeat: int, seed: int) -> list[dict[str, Any]]:
    fixed, values = make_updates(count, dimension, seed)
    f = count // 5
    baselines = float_baselines(values, f)
    others = qora_fl_calls(values, f)
    results = []
    for rule, params in rule_cases(count, dimension):

        def ours(rule: str = rule, params: dict[str, Any] = params) -> object:
            return aggregate(rule, fixed, **params)

        row: dict[str, Any] = {
            "n": count,
            "P": dimension,
            "rule": rule,
            "params": {key: value for key, value in params.items()},
            "ms": 1e3 * median_seconds(ours, repeat),
            "peak_extra_bytes": peak_extra_bytes(ours),
            "input_bytes": fixed.nbytes,
        }
        if rule in baselines:
            row["numpy_f32_ms"] = 1e3 * median_seconds(baselines[rule], repeat)
        if rule in others:
            row["qora_fl_ms"] = 1e3 * median_seconds(others[rule], repeat)
        results.append(row)
        print(f"  {count}x{dimension} {rule}: {row['ms']:.1f} ms", file=sys.stderr)
    return results


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        count, _, dimension = item.partition("x")
        sizes.append((int(count), int(dimension)))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10x100000,10x1000000,50x100000,50x1000000", help="comma-separated NxP list")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per measurement (median reported; >= 1)")
    parser.add_argument("--seed", type=int, default=1, help="data seed")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError:
        parser.error(f"--sizes must look like 10x100000,50x1000000, got {args.sizes!r}")
    results = []
    for count, dimension in sizes:
        results.extend(run_size(count, dimension, args.repeat, args.seed))
    if args.json:
        emit_json({"benchmark": "aggregation", "machine": machine(), "repeat": args.repeat, "results": results})
        return 0
    print(f"machine: {machine()}")
    print(f"median of {args.repeat} runs after a warm-up; memory = peak extra / input matrix size\n")
    rows = []
    for row in results:
        float_ms = row.get("numpy_f32_ms")
        other_ms = row.get("qora_fl_ms")
        rows.append(
            [
                row["n"],
                row["P"],
                row["rule"],
                f"{row['ms']:.2f}",
                f"{row['peak_extra_bytes'] / row['input_bytes']:.2f}x",
                "-" if float_ms is None else f"{float_ms:.2f}",
                "-" if float_ms is None else f"{row['ms'] / float_ms:.2f}",
                "-" if other_ms is None else f"{other_ms:.2f}",
                "-" if other_ms is None else f"{other_ms / row['ms']:.1f}x",
            ]
        )
    print_table(
        ["n", "P", "rule", "qora-p2p ms", "memory", "numpy-f32 ms", "ratio", "qora-fl ms", "speedup"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
