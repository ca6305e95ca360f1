"""Averaging and coordinate-wise rules: fedavg, trimmed mean, median.

Every division rounds to nearest, ties to even (`qora_p2p.fixedpoint.div_round`). Sums are exact
int64: ``n * 2**31`` and ``total_weight * 2**31`` are far below 2**63, and a sum of at most
``INPUTS_MAX`` int32 values stays below 2**52, where `div_round` takes its float64 path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation.base import Batch, Bounds, Kernel, RuleOutput, reduce_columns
from qora_p2p.aggregation.sorting import OrderStatistics, network, network_rows_max
from qora_p2p.fixedpoint import div_round

__all__ = ["mean_kernel", "median_kernel", "run_kernel", "trimmed_kernel"]

SUM_MAGNITUDE_MAX = 1024 * 2**31  # |sum| of at most INPUTS_MAX int32 values: below 2**52
FLOAT_EXACT_MAX = 2**53


def mean_kernel(rows: npt.NDArray[np.intp], weights: npt.NDArray[np.int64] | None, count: int) -> Kernel:
    """Kernel for the (weighted) mean of ``rows`` of a block of ``count`` rows."""
    every = rows.size == count
    total_weight = int(rows.size) if weights is None else int(weights[rows].sum())
    coefficients = None if weights is None else weights[rows].astype(np.float64)
    # With total weight W, |sum(w x)| <= W * 2**31: exact in float64 while below 2**53.
    float_exact = total_weight * 2**31 < FLOAT_EXACT_MAX
    magnitude = total_weight * 2**31

    def kernel(block: npt.NDArray[np.int32]) -> tuple[npt.NDArray[np.int32], Bounds]:
        part = block if every else block[rows]
        if coefficients is None:
            total = part.sum(axis=0, dtype=np.int64)
        elif float_exact:
            total = (coefficients @ part.astype(np.float64)).astype(np.int64)
        else:
            assert weights is not None  # coefficients exist only with weights
            total = np.zeros(block.shape[1], dtype=np.int64)
            for weight, row in zip(weights[rows].tolist(), part, strict=True):
                total += weight * row.astype(np.int64)
        return div_round(total, total_weight, magnitude_max=magnitude).astype(np.int32), None

    return kernel


def _trim_plan(count: int, trim: int) -> tuple[frozenset[int], bool]:
    """Which order statistics to compute for a trimmed sum, and whether they are the extremes.

    The middle sum equals the total minus the ``trim`` smallest and largest values; on the network
    path we compute whichever set needs fewer comparators (both give the same exact sum).
    """
    middle = frozenset(range(trim, count - trim))
    extremes = frozenset(range(trim)) | frozenset(range(count - trim, count))
    if count <= network_rows_max and len(network(count, extremes)) < len(network(count, middle)):
        return extremes, True
    return middle, False


def trimmed_kernel(count: int, trim: int) -> Kernel:
    """Kernel: per column, drop the ``trim`` smallest and largest of ``count`` values, average the rest."""
    if trim == 0:
        return mean_kernel(np.arange(count), None, count)
    kept = count - 2 * trim
    ranks, from_extremes = _trim_plan(count, trim)

    def kernel(block: npt.NDArray[np.int32]) -> tuple[npt.NDArray[np.int32], Bounds]:
        ordered = OrderStatistics(block, ranks)
        if from_extremes:
            total = block.sum(axis=0, dtype=np.int64)
            total -= ordered.total(0, trim)
            total -= ordered.total(count - trim, count)
        else:
            total = ordered.total(trim, count - trim)
        result = div_round(total, kept, magnitude_max=SUM_MAGNITUDE_MAX).astype(np.int32)
        return result, ordered.bounds()

    return kernel


def median_kernel(count: int) -> Kernel:
    """Kernel: per column median; with even ``count``, ``div_round(lower + upper, 2)``."""
    lower, upper = (count - 1) // 2, count // 2
    ranks = frozenset((lower, upper))

    def kernel(block: npt.NDArray[np.int32]) -> tuple[npt.NDArray[np.int32], Bounds]:
        ordered = OrderStatistics(block, ranks)
        if lower == upper:
            return ordered.value(lower), ordered.bounds()
        pair = ordered.value(lower).astype(np.int64) + ordered.value(upper)
        return div_round(pair, 2, magnitude_max=2**32).astype(np.int32), ordered.bounds()

    return kernel


def run_kernel(batch: Batch, kernel: Kernel) -> RuleOutput:
    """A coordinate-wise rule over all of ``batch``: every input contributes."""
    vector, distances = reduce_columns(batch.updates, kernel)
    return RuleOutput(vector, np.arange(batch.count), distances)
