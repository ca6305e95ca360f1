"""Exact integer kernels over (n, P) int32 matrices: column chunks, Gram matrices, squared
distances.

Theory of operation
-------------------
Inputs are int32 with ``|x| <= 2**31``, so a difference needs 33 bits, a square 64 and a sum of
squares over a million coordinates 84: more than int64. Three tools keep every result exact:

1. **Chunking.** Work proceeds over column chunks sized so that no per-chunk sum can overflow; chunk
   results are combined in int64 when a bound proves it safe, in Python integers otherwise. Chunks
   also bound the extra memory to a few chunk-sized buffers, whatever ``P`` is.
2. **16-bit limbs.** A value splits as ``x = hi * 2**16 + lo`` with ``lo`` in [0, 2**16). Every product
   of two limbs is below 2**32 in magnitude, so a dot product of up to 2**20 limb pairs stays below
   2**52.
3. **float64 matrix products where exact.** float64 represents every integer below 2**53 exactly, so a
   BLAS product whose every term and partial sum is such an integer is exact whatever order (or fused
   multiply-add) the BLAS uses. Gram matrices use this for speed; each call site states the bound it
   relies on.

Nothing here depends on row order except through explicit indices, so callers own tie-breaking.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DistanceAccumulator",
    "block_inner_products",
    "column_chunks",
    "gram",
    "pairwise_sq_distances",
]

LIMB_BITS = 16
LIMB = 1 << LIMB_BITS
FLOAT_EXACT_MAX = 2**53  # every integer of smaller magnitude is exact in float64
GRAM_CHUNK_COLUMNS_MAX = 2**20  # limb products < 2**32, so 2**20 of them sum below 2**52
DIRECT_SQUARE_MAX = 2**24  # |difference| below this: square < 2**48, 2**15 squares sum below 2**63
DISTANCE_CHUNK_COLUMNS = 2**15  # with the bound above, an int64 row sum of squares cannot overflow
WORK_BYTES = 4 * 2**20  # one float64 working block: small enough to stay in cache across BLAS calls
P_ACCUMULATE_MAX = 2**26  # int64 accumulators below are proven for P up to this (see gram)

assert DISTANCE_CHUNK_COLUMNS * (DIRECT_SQUARE_MAX - 1) ** 2 < 2**63
assert DISTANCE_CHUNK_COLUMNS * (2**17) ** 2 < 2**63  # limb path: |hi| <= 2**17 for |d| < 2**33
assert GRAM_CHUNK_COLUMNS_MAX * 2**32 <= FLOAT_EXACT_MAX // 2
assert P_ACCUMULATE_MAX * 2**32 * 2 < 2**63


def column_chunks(columns: int, width: int) -> Iterator[slice]:
    """Consecutive column slices of at most ``width`` columns covering ``range(columns)``."""
    for start in range(0, columns, width):
        yield slice(start, min(start + width, columns))


def _chunk_width(rows: int, columns: int, cap: int) -> int:
    """Columns per float64 working block of ``rows`` rows: at most WORK_BYTES, and at most an eighth
    of the input's columns so the buffer stays well below the input's own size."""
    return max(1024, min(cap, WORK_BYTES // (8 * max(rows, 1)), -(-columns // 8)))


def gram(updates: npt.NDArray[np.int32]) -> npt.NDArray[np.int64] | npt.NDArray[np.object_]:
    """The exact Gram matrix ``G[i, j] = x_i . x_j``.

    Rows whose values in a chunk all lie in (-2**16, 2**16) enter as one limb; other rows as two
    (``hi``, ``lo``). One float64 ``Z @ Z.T`` per chunk over the stacked limbs is exact because every
    limb product is below 2**32 and a chunk has at most 2**20 columns. Three int64 accumulators
    (lo.lo, hi.lo, hi.hi) stay below 2**58 for P <= 2**26.

    Returns:
        (n, n) int64 when no value needed two limbs (then ``|G| <= P * 2**32``), otherwise an object
        array of Python integers.
    """
    count, columns = updates.shape
    if columns > P_ACCUMULATE_MAX:
        raise ValueError(f"gram supports P <= {P_ACCUMULATE_MAX}, got {columns}")
    low_low = np.zeros((count, count), dtype=np.int64)
    high_low = np.zeros((count, count), dtype=np.int64)
    high_high = np.zeros((count, count), dtype=np.int64)
    width = _chunk_width(2 * count, columns, GRAM_CHUNK_COLUMNS_MAX)
    two_limbs = False
    for chunk in column_chunks(columns, width):
        block = updates[:, chunk]
        big = np.flatnonzero((block.max(axis=1) >= LIMB) | (block.min(axis=1) <= -LIMB))
        if big.size == 0:
            limbs = block.astype(np.float64)
            low_low += (limbs @ limbs.T).astype(np.int64)
            continue
        two_limbs = True
        limbs = np.empty((count + big.size, block.shape[1]), dtype=np.float64)
        limbs[:count] = block
        wide = block[big].astype(np.int64)
        limbs[big] = wide & (LIMB - 1)
        limbs[count:] = wide >> LIMB_BITS
        product = (limbs @ limbs.T).astype(np.int64)
        low_low += product[:count, :count]
        high_low[big] += product[count:, :count]
        high_high[np.ix_(big, big)] += product[count:, count:]
    if not two_limbs:
        return low_low
    cross = high_low + high_low.T
    exact: npt.NDArray[np.object_] = low_low.astype(object) + cross.astype(object) * LIMB + high_high.astype(object) * LIMB**2
    return exact


def pairwise_sq_distances(
    gram_matrix: npt.NDArray[np.int64] | npt.NDArray[np.object_],
) -> npt.NDArray[np.int64] | npt.NDArray[np.object_]:
    """``D[i, j] = |x_i - x_j|**2 = G[i, i] + G[j, j] - 2 G[i, j]``, exact.

    With an int64 Gram matrix (``|G| <= P * 2**32 <= 2**58``) every term fits int64.
    """
    diagonal: npt.NDArray[Any] = np.diagonal(gram_matrix).copy()  # int64 or object, as the matrix
    distances: npt.NDArray[np.int64] | npt.NDArray[np.object_] = diagonal[:, None] + diagonal[None, :] - 2 * gram_matrix
    return distances


class DistanceAccumulator:
    """Exact ``|x_i - v|**2`` per row, accumulated one column chunk at a time.

    Each chunk takes the cheapest exact path its values allow, from a bound on ``|x - v|`` read off
    the chunk's minimum and maximum:

    * below 2**16: the int32 difference is exact and its square below 2**32, so a float64 sum of up
      to 2**20 squares is exact (below 2**52);
    * below 2**24: int64 squares (below 2**48) summed over at most 2**15 columns (below 2**63);
    * otherwise: ``d = hi * 2**16 + lo`` and ``d**2 = hi**2 * 2**32 + hi*lo * 2**17 + lo**2`` with
      ``|hi| <= 2**17``, each limb sum below 2**49.

    Per-chunk sums are added as Python integers, so no total can overflow.
    """

    def __init__(self, rows: int) -> None:
        self.totals = [0] * rows

    def add(
        self,
        block: npt.NDArray[np.int32],
        target: npt.NDArray[np.int32] | npt.NDArray[np.int64],
        bounds: tuple[int, int] | None = None,
    ) -> None:
        """Add ``sum_k (block[i, k] - target[k])**2`` to row ``i``'s total; at most 2**15 columns.

        Args:
            bounds: the block's (minimum, maximum) if the caller already knows them.
        """
        assert block.shape[1] <= DISTANCE_CHUNK_COLUMNS
        if block.shape[1] == 0:
            return
        low, high = (int(block.min()), int(block.max())) if bounds is None else bounds
        high = max(high - int(target.min()), int(target.max()) - low)
        if high < LIMB:
            difference = np.subtract(block, target, dtype=np.int32).astype(np.float64)
            self._add([np.einsum("ij,ij->i", difference, difference)], [1])
            return
        wide = np.subtract(block, target, dtype=np.int64)
        if high < DIRECT_SQUARE_MAX:
            self._add([np.einsum("ij,ij->i", wide, wide)], [1])
            return
        upper = wide >> LIMB_BITS
        wide &= LIMB - 1
        sums = [
            np.einsum("ij,ij->i", upper, upper),
            np.einsum("ij,ij->i", upper, wide),
            np.einsum("ij,ij->i", wide, wide),
        ]
        self._add(sums, [LIMB**2, 2 * LIMB, 1])

    def _add(self, sums: list[npt.NDArray[np.generic]], scales: list[int]) -> None:
        for values, scale in zip(sums, scales, strict=True):
            for row, value in enumerate(values.tolist()):
                self.totals[row] += scale * int(value)


def block_inner_products(
    block: npt.NDArray[np.int32], vector: npt.NDArray[np.int32]
) -> list[int]:
    """Exact ``x_i . v`` for each row of an (n, C) block with at most 2**15 columns.

    With every value below 2**16 in magnitude, a float64 product is exact (terms below 2**32, sums
    below 2**47). Otherwise ``v = hi * 2**16 + lo``: ``x . lo`` and ``x . hi`` have terms below 2**47
    and sums below 2**62, exact in int64.
    """
    assert block.shape[1] <= DISTANCE_CHUNK_COLUMNS
    if block.shape[1] == 0:
        return [0] * block.shape[0]
    small = max(int(block.max()), -int(block.min()), int(vector.max()), -int(vector.min())) < LIMB
    if small:
        products = block.astype(np.float64) @ vector.astype(np.float64)
        return [int(value) for value in products.tolist()]
    wide = block.astype(np.int64)
    target = vector.astype(np.int64)
    low = wide @ (target & (LIMB - 1))
    high = wide @ (target >> LIMB_BITS)
    return [int(upper) * LIMB + int(lower) for upper, lower in zip(high.tolist(), low.tolist(), strict=True)]
