"""Distance-based rules: Krum, Multi-Krum, Bulyan, and nearest-neighbour mixing (NNM).

Theory of operation
-------------------
All four rank inputs by exact squared Euclidean distances, ``D = pairwise_sq_distances(gram(X))``
(see `exact`), so a ranking never depends on float rounding. Where two candidates compare equal,
the lower canonical rank wins; nothing depends on row order otherwise.

* **Krum** (Blanchard et al., NeurIPS 2017): score(i) = sum of the ``n - f - 2`` smallest ``D[i, j]``,
  ``j != i``; the output is the input with the lowest (score, rank). Requires ``n >= 2f + 3``.
* **Multi-Krum** (same paper): the ``m`` inputs of lowest (score, rank), scored once, averaged
  (weighted when weights are given).
* **Bulyan** (El Mhamdi, Guerraoui, Rouault, ICML 2018): select ``theta = n - 2f`` inputs by
  repeated Krum on the remaining set ``R`` (each pass scores with
  ``min(|R| - 1, max(|R| - f - 2, 1))`` nearest others, since the paper's ``|R| - f - 2`` reaches zero
  in the last passes); then per coordinate average the ``beta = theta - 2f`` selected values closest
  to their median. Those values form a window of ``beta`` consecutive sorted values; among windows of
  equal total distance to the median, the one whose start is nearest the centred window wins, then
  the lower start. Requires ``n >= 4f + 3``.
* **NNM** (Allouah et al., AISTATS 2023, "Fixing by Mixing"): replace each input by the average of
  its ``n - f`` nearest inputs (by (distance, rank), itself included), rounded to int32, before
  any other rule. Requires ``n >= 2f + 1``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation.base import Batch, Bounds, Kernel, RuleOutput, block_width, reduce_columns
from qora_p2p.aggregation.coordinate import mean_kernel
from qora_p2p.aggregation.exact import column_chunks, gram, pairwise_sq_distances
from qora_p2p.aggregation.sorting import OrderStatistics
from qora_p2p.fixedpoint import div_round

__all__ = [
    "bulyan",
    "closest_to_median_kernel",
    "krum",
    "mix_block",
    "mix_nearest",
    "multi_krum",
    "nearest_membership",
]

INT64_LIMIT = 2**63


class _NeighbourTable:
    """Each row's distances to the other rows, sorted, for Krum scores over shrinking sets."""

    def __init__(self, distances: npt.NDArray[np.int64] | npt.NDArray[np.object_]) -> None:
        count = distances.shape[0]
        others = ~np.eye(count, dtype=bool)
        values = distances[others].reshape(count, count - 1)
        index = np.broadcast_to(np.arange(count), (count, count))[others].reshape(count, count - 1)
        # Sum of the k smallest does not depend on how equal distances are ordered.
        order = np.argsort(values, axis=1, kind="stable")
        self.values = np.take_along_axis(values, order, axis=1)
        self.index = np.take_along_axis(index, order, axis=1)
        largest = int(self.values.max()) if self.values.size else 0
        # Scores sum up to count - 1 distances; past int64, sum Python integers.
        self.wide = values.dtype == object or largest * max(count - 1, 1) >= INT64_LIMIT

    def scores(self, alive: npt.NDArray[np.bool_], rows: list[int], neighbours: int) -> list[int]:
        """Sum of the ``neighbours`` smallest distances from each row to other alive rows."""
        usable = alive[self.index[rows]]
        taken = usable & (np.cumsum(usable, axis=1) <= neighbours)
        picked = np.where(taken, self.values[rows], 0)
        if self.wide:
            picked = picked.astype(object)
        return [int(score) for score in picked.sum(axis=1)]


def _distances(batch: Batch) -> npt.NDArray[np.int64] | npt.NDArray[np.object_]:
    return pairwise_sq_distances(gram(batch.updates))


def krum(batch: Batch, f: int) -> RuleOutput:
    """The input whose ``n - f - 2`` nearest neighbours are closest (lowest score, then rank)."""
    distances = _distances(batch)
    rows = list(range(batch.count))
    scores = _NeighbourTable(distances).scores(np.ones(batch.count, bool), rows, batch.count - f - 2)
    winner = batch.by_rank(rows, scores)[0]
    return RuleOutput(
        batch.updates[winner].copy(),
        np.array([winner], dtype=np.intp),
        [int(value) for value in distances[:, winner]],
    )


def multi_krum(batch: Batch, f: int, m: int) -> RuleOutput:
    """Average of the ``m`` inputs with the lowest Krum scores (weighted when weights are given)."""
    rows = list(range(batch.count))
    table = _NeighbourTable(_distances(batch))
    scores = table.scores(np.ones(batch.count, bool), rows, batch.count - f - 2)
    chosen = np.array(sorted(batch.by_rank(rows, scores)[:m]), dtype=np.intp)
    kernel = mean_kernel(chosen, batch.weights, batch.count)
    vector, distances = reduce_columns(batch.updates, kernel)
    return RuleOutput(vector, chosen, distances)


def _bulyan_select(batch: Batch, f: int, theta: int) -> npt.NDArray[np.intp]:
    table = _NeighbourTable(_distances(batch))
    alive = np.ones(batch.count, dtype=bool)
    remaining = list(range(batch.count))
    chosen: list[int] = []
    while len(chosen) < theta:
        size = len(remaining)
        neighbours = min(size - 1, max(size - f - 2, 1))
        pick = batch.by_rank(remaining, table.scores(alive, remaining, neighbours))[0]
        chosen.append(pick)
        remaining.remove(pick)
        alive[pick] = False
    return np.array(sorted(chosen), dtype=np.intp)


def _window_penalty(f: int) -> list[int]:
    """Tie order of window starts 0..2f: the centred start f first, then f-1, f+1, f-2, ..."""
    return [2 * abs(start - f) - (start < f) for start in range(2 * f + 1)]


def closest_to_median_kernel(rows: npt.NDArray[np.intp], f: int) -> Kernel:
    """Kernel: per column, the rounded mean of the ``beta = |rows| - 2f`` values of ``rows`` closest
    to their median (a window of consecutive order statistics; see the module notes for ties).

    Windows start at 0..2f. Moving the start from k to k+1 adds rank k+beta and drops rank k, which
    changes the window's total distance to the median by ``|2 s[k+beta] - 2m| - |2 s[k] - 2m|``, so
    only the 2f ranks at each end need distances. Costs are tracked relative to start 0 (each below
    ``2f * 2**34``), so keys ``cost * windows + penalty`` stay below 2**52.
    """
    theta = rows.size
    beta = theta - 2 * f
    windows = 2 * f + 1
    penalty = _window_penalty(f)
    lower, upper = (theta - 1) // 2, theta // 2

    def kernel(block: npt.NDArray[np.int32]) -> tuple[npt.NDArray[np.int32], Bounds]:
        ordered = OrderStatistics(block[rows])
        total = ordered.total(0, beta)
        if f:
            twice_median = ordered.value(lower).astype(np.int64) + ordered.value(upper)
            # Rows 0..2f-1: the ranks that leave as the start moves; rows 2f..4f-1: those that enter.
            ends = np.array([ordered.value(rank) for rank in (*range(2 * f), *range(beta, theta))], dtype=np.int64)
            distance = np.abs(2 * ends - twice_median)
            cost = np.zeros_like(twice_median)
            shifted = total.copy()
            best_key = np.full_like(twice_median, penalty[0])
            key = np.empty_like(twice_median)
            better = np.empty(twice_median.shape, dtype=bool)
            for start in range(1, windows):
                cost += distance[2 * f + start - 1]
                cost -= distance[start - 1]
                shifted += ends[2 * f + start - 1]
                shifted -= ends[start - 1]
                np.multiply(cost, windows, out=key)
                key += penalty[start]
                np.less(key, best_key, out=better)
                np.copyto(best_key, key, where=better)
                np.copyto(total, shifted, where=better)
        # The bounds of the selected rows are not the whole block's, so none are reported.
        return div_round(total, beta, magnitude_max=beta * 2**31).astype(np.int32), None

    return kernel


def bulyan(batch: Batch, f: int) -> RuleOutput:
    """Repeated-Krum selection of ``n - 2f`` inputs, then the coordinate-wise closest-to-median mean."""
    chosen = _bulyan_select(batch, f, batch.count - 2 * f)
    vector, distances = reduce_columns(batch.updates, closest_to_median_kernel(chosen, f))
    return RuleOutput(vector, chosen, distances)


def nearest_membership(batch: Batch, f: int) -> npt.NDArray[np.float64]:
    """NNM's mixing matrix: ``M[i, j] = 1`` when row j is among row i's ``n - f`` nearest rows.

    Neighbours are ordered by (distance, rank). A row is at distance zero from itself; a duplicate of
    lower rank may take its place, which changes nothing since their values are equal.
    """
    count = batch.count
    _, codes = np.unique(_distances(batch), return_inverse=True)
    key = codes.reshape(count, count).astype(np.int64) * count + batch.rank[None, :]
    nearest = np.argsort(key, axis=1)[:, : count - f]
    membership = np.zeros((count, count), dtype=np.float64)
    np.put_along_axis(membership, nearest, 1.0, axis=1)
    return membership


def mix_block(membership: npt.NDArray[np.float64], block: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Rows of ``block`` replaced by ``div_round(sum of their neighbours' rows, n - f)``.

    The 0/1 float64 product is exact (a sum of at most ``n`` int32 values is below 2**52); dividing
    and rounding in float64 is `div_round`'s exact float path.
    """
    sums = membership @ block.astype(np.float64)
    np.divide(sums, membership[0].sum(), out=sums)
    return np.rint(sums, out=sums).astype(np.int32)


def mix_nearest(batch: Batch, f: int) -> npt.NDArray[np.int32]:
    """NNM on the whole matrix: every row replaced by the rounded mean of its ``n - f`` nearest."""
    membership = nearest_membership(batch, f)
    mixed = np.empty_like(batch.updates)
    for chunk in column_chunks(batch.dimension, block_width(batch.count, batch.dimension)):
        mixed[:, chunk] = mix_block(membership, batch.updates[:, chunk])
    return mixed
