"""Centered clipping (Karimireddy, He, Jaggi, ICML 2021, "Learning from History for Byzantine
Robust Optimization").

Theory of operation
-------------------
Starting from a centre ``v`` (the previous aggregate, or zero), each iteration moves ``v`` by the
(weighted) mean of the inputs' differences ``d_i = x_i - v``, each clipped to radius ``tau``::

    v <- v + mean_i( d_i * min(1, tau / |d_i|) )

Exact integer form, one rounding rule per step:

* ``|d_i|**2`` is computed exactly (`exact.row_sq_distances`); an input is clipped iff
  ``|d_i|**2 > tau**2``, a comparison of integers.
* A clipped difference is ``div_round(d_i * tau, r_i)`` per coordinate with
  ``r_i = isqrt_ceil(|d_i|**2)``, so its norm never exceeds ``tau`` before rounding.
  ``|d| <= 2**32 - 1`` and ``tau <= 2**31 - 1`` keep the product below 2**63.
* The step is ``div_round(sum(w_i c_i), sum(w_i))``; ``sum(w_i) <= 2**31 - 1`` keeps the sum below
  2**63. Every ``v + c_i`` lies between ``v`` and ``x_i``, so ``v`` stays in the int32 range.

An attacker moves the result by at most ``w_b * tau / sum(w)`` per iteration; the paper proves
convergence (with worker momentum) for a Byzantine fraction up to about 0.1 and reports robustness
well beyond it with ``tau`` near the honest updates' norm.

Coordinate clamp (``clamp = k``, off by default): after the last iteration, every coordinate of
the result is clamped into ``[v_(k), v_(n-1-k)]``, the ``k``-th smallest and largest input values
of that coordinate (exact order statistics, `qora_p2p.aggregation.sorting`; ``k`` is capped at
``(n - 1) // 2`` so that the interval is never empty). It is a defence against backdoors: a
trigger lives in coordinates where honest updates are near zero and only the attackers push, and
a mean of clipped differences lets ``k`` colluders move such a coordinate by up to ``k * tau / n``
every round, which adds up; with the clamp the coordinate stays between honest values. It has a
price: a coordinate that at most ``k`` honest members push (a class only they hold) is clamped
too, and attacks that simulate the rule learn to live inside the interval (README, "Robustness").
The deviations returned are distances to the clamped result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation.base import (
    Batch,
    RuleOutput,
    add_rows,
    block_width,
    map_blocks,
    row_sq_distances,
)
from qora_p2p.aggregation.exact import DistanceAccumulator, column_chunks
from qora_p2p.aggregation.sorting import OrderStatistics
from qora_p2p.fixedpoint import VALUE_MAX, div_round, isqrt_ceil

__all__ = ["Radius", "centered_clipping"]


SCALE_ONE = 1 << 16  # tau_scale is a Q16 multiplier: 65536 means one median distance


@dataclass(frozen=True, slots=True)
class Radius:
    """The clipping radius: a fixed ``tau``, or ``scale`` (Q16) times the median distance of the
    inputs to the current centre, recomputed every iteration (scale-free: the same setting works
    for any model and learning rate)."""

    tau: int | None = None
    scale: int | None = None

    def for_distances(self, squared: list[int]) -> int:
        if self.tau is not None:
            return self.tau
        assert self.scale is not None
        distances = sorted(math.isqrt(value) for value in squared)
        median = distances[(len(distances) - 1) // 2]
        # Clamped to the int32 range so that d * tau stays below 2**63 (see the module notes).
        return max(1, min(VALUE_MAX, (self.scale * median) >> 16))


def centered_clipping(
    batch: Batch,
    radius: Radius,
    iterations: int,
    center: npt.NDArray[np.int32] | None,
    clamp: int = 0,
) -> RuleOutput:
    """Centered clipping for ``iterations`` steps.

    Each step is one pass over the input: the clipped step of a column block is final as soon as
    the block is done, so the same pass accumulates the squared distances to the new centre, which
    the next step (or the deviation signal) needs.

    Args:
        radius: the clipping radius rule (fixed-point units).
        iterations: number of clipping steps from the centre.
        center: (P,) int32 starting point; zero when None.
        clamp: ``k`` of the coordinate clamp (module notes); 0 turns it off.
    """
    count, dimension = batch.count, batch.dimension
    weights = np.ones(count, dtype=np.int64) if batch.weights is None else batch.weights
    total_weight = int(weights.sum())
    current = np.zeros(dimension, dtype=np.int64) if center is None else center.astype(np.int64)
    norms_squared = row_sq_distances(batch.updates, current)
    chunks = list(column_chunks(dimension, block_width(count, dimension)))
    for _ in range(iterations):
        tau = radius.for_distances(norms_squared)
        tau_squared = tau * tau
        clipped = np.array([value > tau_squared for value in norms_squared], dtype=bool)
        radii = np.array(
            [isqrt_ceil(value) for value, clip in zip(norms_squared, clipped, strict=True) if clip],
            dtype=np.int64,
        )[:, None]

        def step(
            chunk: slice,
            tau: int = tau,
            clipped: npt.NDArray[np.bool_] = clipped,
            radii: npt.NDArray[np.int64] = radii,
        ) -> list[int]:
            block = batch.updates[:, chunk]
            difference = block.astype(np.int64)
            difference -= current[chunk]
            if radii.size:
                difference[clipped] = div_round(difference[clipped] * tau, radii)
            total = difference.sum(axis=0) if batch.weights is None else weights @ difference
            current[chunk] += div_round(total, total_weight)
            following = DistanceAccumulator(count)
            following.add(block, current[chunk])
            return following.totals

        norms_squared = add_rows(map_blocks(count * dimension, chunks, step), count)
    rank = min(clamp, (count - 1) // 2)
    if rank:

        def clamped(chunk: slice) -> list[int]:
            block = batch.updates[:, chunk]
            ordered = OrderStatistics(block, frozenset((rank, count - 1 - rank)))
            np.clip(current[chunk], ordered.value(rank), ordered.value(count - 1 - rank), out=current[chunk])
            distances = DistanceAccumulator(count)
            distances.add(block, current[chunk])
            return distances.totals

        norms_squared = add_rows(map_blocks(count * dimension, chunks, clamped), count)
    return RuleOutput(current.astype(np.int32), np.arange(count), norms_squared)
