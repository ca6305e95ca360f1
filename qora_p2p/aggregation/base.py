"""Types and the column pipeline shared by the rule implementations (internal)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation.exact import (
    DISTANCE_CHUNK_COLUMNS,
    DistanceAccumulator,
    block_inner_products,
    column_chunks,
)

T = TypeVar("T")

BLOCK_VALUES = 2**18  # values per column block: ~1 MiB of int32 stays in cache while worked on
BLOCK_COLUMNS_MIN = 512  # narrower blocks pay more in per-call overhead than they save
BLOCK_INPUT_SHARE = 4  # a block is at most 1/4 of the input, so buffers scale with small inputs
WORKERS_MAX = 4  # threads working on column blocks; more than the cores only adds contention
PARALLEL_VALUES_MIN = 2**22  # below ~4M values, handing blocks to threads costs more than it saves


@dataclass(frozen=True, slots=True)
class Batch:
    """One aggregation's inputs, in the caller's row order.

    Attributes:
        updates: (n, P) int32 matrix, one update per row.
        rank: (n,) int64; ``rank[i]`` is row ``i``'s position in the canonical (sorted-sender) order.
            Rules never depend on row order except to break exact ties, and then only through
            ``rank``, which makes every result invariant under permutation of the rows.
        weights: (n,) positive int64 with total <= 2**31 - 1, or None for unit weights.
    """

    updates: npt.NDArray[np.int32]
    rank: npt.NDArray[np.int64]
    weights: npt.NDArray[np.int64] | None

    @property
    def count(self) -> int:
        return int(self.updates.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.updates.shape[1])

    def total_weight(self, rows: npt.NDArray[np.intp]) -> int:
        return int(rows.size) if self.weights is None else int(self.weights[rows].sum())

    def by_rank(self, rows: npt.NDArray[np.intp] | list[int], keys: list[int]) -> list[int]:
        """``rows`` ordered by (key, canonical rank): the one tie-break every rule uses."""
        ranks = self.rank[np.asarray(rows, dtype=np.intp)].tolist()
        return [row for _, _, row in sorted(zip(keys, ranks, rows, strict=True))]


@dataclass(frozen=True, slots=True)
class RuleOutput:
    """What a rule computes.

    Attributes:
        vector: (P,) int32 aggregate.
        selected: row indices (ascending) whose values the rule used.
        sq_distances: exact ``|x_i - vector|**2`` per row of the rule's input, or None.
    """

    vector: npt.NDArray[np.int32]
    selected: npt.NDArray[np.intp]
    sq_distances: list[int] | None = None


def block_width(rows: int, columns: int) -> int:
    """Columns per block for ``rows`` inputs of ``columns`` values."""
    share = -(-columns // BLOCK_INPUT_SHARE)
    width = min(BLOCK_VALUES // max(rows, 1), share, DISTANCE_CHUNK_COLUMNS)
    return max(BLOCK_COLUMNS_MIN, width)


Bounds = tuple[int, int] | None
# A kernel maps an (n, C) block to its (C,) int32 result, plus the block's (min, max) when it learnt
# them for free (a full sort does), which spares the distance pass a scan.
Kernel = Callable[[npt.NDArray[np.int32]], tuple[npt.NDArray[np.int32], Bounds]]


def _worker_count() -> int:
    return max(1, min(WORKERS_MAX, os.cpu_count() or 1))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_worker_count(), thread_name_prefix="qora-aggregate")
        return _pool


def map_blocks(values: int, chunks: list[slice], work: Callable[[slice], T]) -> list[T]:
    """``[work(chunk) for chunk in chunks]``, on up to `WORKERS_MAX` threads when ``values`` (the
    number of matrix entries the work touches) is large enough to pay for them.

    ``work`` must only write disjoint slices of shared arrays; results come back in chunk order.
    numpy releases the GIL in sorting and arithmetic, so the threads run in parallel.
    """
    if values < PARALLEL_VALUES_MIN or _worker_count() == 1 or len(chunks) < 2:
        return [work(chunk) for chunk in chunks]
    return list(_executor().map(work, chunks))


def add_rows(partials: list[list[int]], count: int) -> list[int]:
    """Row-wise sum of per-block Python-integer partial sums (exact in any order)."""
    totals = [0] * count
    for partial in partials:
        for row, value in enumerate(partial):
            totals[row] += value
    return totals


def row_sq_distances(
    updates: npt.NDArray[np.int32], vector: npt.NDArray[np.int32] | npt.NDArray[np.int64]
) -> list[int]:
    """Exact ``|x_i - v|**2`` for every row, as Python integers (``|v| <= 2**31``)."""
    count, columns = updates.shape

    def work(chunk: slice) -> list[int]:
        distances = DistanceAccumulator(count)
        distances.add(updates[:, chunk], vector[chunk])
        return distances.totals

    chunks = list(column_chunks(columns, block_width(count, columns)))
    return add_rows(map_blocks(count * columns, chunks, work), count)


def inner_products(updates: npt.NDArray[np.int32], vector: npt.NDArray[np.int32]) -> list[int]:
    """Exact ``x_i . v`` for every row, as Python integers."""
    count, columns = updates.shape

    def work(chunk: slice) -> list[int]:
        return block_inner_products(updates[:, chunk], vector[chunk])

    chunks = list(column_chunks(columns, block_width(count, columns)))
    return add_rows(map_blocks(count * columns, chunks, work), count)


def reduce_columns(updates: npt.NDArray[np.int32], kernel: Kernel) -> tuple[npt.NDArray[np.int32], list[int]]:
    """Apply a coordinate-wise ``kernel`` block by block, with each row's exact squared distance to
    the result accumulated while the block is still in cache.

    Every block's result is exact and per-block distance sums are combined as Python integers, so
    the result does not depend on how many threads `map_blocks` uses.

    Args:
        updates: (n, P) int32.
        kernel: maps an (n, C) block to the (C,) int32 result of those columns (see `Kernel`).

    Returns:
        The (P,) int32 result and ``|x_i - result|**2`` per row.
    """
    count, columns = updates.shape
    vector = np.empty(columns, dtype=np.int32)

    def work(chunk: slice) -> list[int]:
        block = updates[:, chunk]
        result, bounds = kernel(block)
        vector[chunk] = result
        distances = DistanceAccumulator(count)
        distances.add(block, result, bounds)
        return distances.totals

    chunks = list(column_chunks(columns, block_width(count, columns)))
    return vector, add_rows(map_blocks(count * columns, chunks, work), count)
