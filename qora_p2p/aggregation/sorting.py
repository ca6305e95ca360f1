"""Sorting the small axis of an (r, C) block: every column sorted, exactly, fast.

Theory of operation
-------------------
Coordinate-wise rules (median, trimmed mean, Bulyan) need order statistics across the ``r`` inputs
for every one of ``C`` coordinates, where ``r`` is small (tens) and ``C`` large. Sorting is exact, so
any algorithm gives the same bytes; only speed differs:

* For few rows, a sorting network runs as ``r``-row vector operations: each comparator is one
  ``np.minimum`` and one ``np.maximum`` across all ``C`` columns. Batcher's odd-even merge sort network
  for the next power of two, with comparators into the (conceptual) +infinity padding dropped, sorts
  any ``r``. When only some output ranks matter, comparators that cannot reach them are pruned.
* For more rows, numpy's vectorised sort of each contiguous row of the transposed block wins.

`network_rows_max` is where the two cross on this project's reference machine (see
``benchmarks/bench_aggregation.py``); both paths are tested against each other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["OrderStatistics", "network", "network_rows_max"]

network_rows_max = 24  # above this many rows numpy's per-row sort beats the network (measured)
INT32_LIMIT = 2**31


@functools.cache
def _batcher(rows: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(low, high)`` of Batcher's odd-even merge sort network for ``rows`` inputs."""
    size = 1
    while size < rows:
        size *= 2
    comparators = []
    span = 1
    while span < size:
        step = span
        while step >= 1:
            for start in range(step % span, size - step, 2 * step):
                for offset in range(min(step, size - start - step)):
                    low, high = offset + start, offset + start + step
                    # Same merge block; the padding is +infinity, so a comparator into it is a no-op.
                    if low // (2 * span) == high // (2 * span) and high < rows:
                        comparators.append((low, high))
            step //= 2
        span *= 2
    return tuple(comparators)


@functools.cache
def network(rows: int, ranks: frozenset[int] | None = None) -> tuple[tuple[int, int], ...]:
    """The sorting network for ``rows`` inputs, pruned to the comparators that decide ``ranks``.

    Args:
        rows: number of inputs (>= 1).
        ranks: output positions whose values are needed (all positions when None).

    Returns:
        Comparators ``(low, high)`` in execution order; after them, every position in ``ranks`` holds
        the value of that rank.
    """
    comparators = _batcher(rows)
    if ranks is None:
        return comparators
    needed = set(ranks)
    kept = []
    for low, high in reversed(comparators):
        if low in needed or high in needed:
            kept.append((low, high))
            needed.update((low, high))
    return tuple(reversed(kept))


def _run_network(
    block: npt.NDArray[np.int32], comparators: Iterable[tuple[int, int]]
) -> list[npt.NDArray[np.int32]]:
    rows = [block[index].copy() for index in range(block.shape[0])]
    spare = np.empty(block.shape[1], dtype=block.dtype)
    for low, high in comparators:
        np.minimum(rows[low], rows[high], out=spare)
        np.maximum(rows[low], rows[high], out=rows[high])
        rows[low], spare = spare, rows[low]
    return rows


class OrderStatistics:
    """The order statistics of every column of an (r, C) int32 block.

    Args:
        block: int32 values, one input per row.
        ranks: the ranks the caller will read (all when None); the network path computes only
            those, the numpy path sorts everything.
    """

    def __init__(self, block: npt.NDArray[np.int32], ranks: frozenset[int] | None = None) -> None:
        self.count = block.shape[0]
        self._rows: list[npt.NDArray[np.int32]] | None = None
        self._table: npt.NDArray[np.int32] | None = None
        self._bounds: tuple[int, int] | None = None
        if self.count <= network_rows_max:
            self._rows = _run_network(block, network(self.count, ranks))
        else:
            # Sorting contiguous rows of the transposed block is what numpy does fastest; the
            # result stays in that (C, r) layout so that no second transpose is paid.
            self._table = np.ascontiguousarray(block.T)
            self._table.sort(axis=1)

    def value(self, rank: int) -> npt.NDArray[np.int32]:
        """The ``rank``-th smallest value of every column, shape (C,)."""
        if self._rows is not None:
            return self._rows[rank]
        assert self._table is not None
        return self._table[:, rank]

    def bounds(self) -> tuple[int, int] | None:
        """(minimum, maximum) of the whole block when known without another pass, else None."""
        if self._table is None:
            return None
        if self._bounds is None:
            self._bounds = int(self._table[:, 0].min()), int(self._table[:, -1].max())
        return self._bounds

    def total(self, start: int, stop: int) -> npt.NDArray[np.int64]:
        """Exact int64 sum of ranks ``start .. stop - 1`` of every column."""
        if self._table is not None:
            ranks = self._table[:, start:stop]
            low, high = self.bounds() or (0, 0)
            if (stop - start) * max(high, -low) < INT32_LIMIT:
                # No partial sum can leave int32, and int32 row sums run about 3x faster.
                narrow: npt.NDArray[np.int64] = np.einsum("ij->i", ranks).astype(np.int64)
                return narrow
            wide: npt.NDArray[np.int64] = ranks.sum(axis=1, dtype=np.int64)
            return wide
        assert self._rows is not None
        result = self._rows[start].astype(np.int64)
        for rank in range(start + 1, stop):
            result += self._rows[rank]
        return result
