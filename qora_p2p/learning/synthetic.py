"""Synthetic updates: model deltas with the shape of training, without data or training time.

The simulator's members and the node's synthetic workload (protocol benchmarks) both send these,
so a protocol run costs no training and every honest update of a round is close to the others.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["synthetic_update"]


def synthetic_update(seed: int, round_number: int, member: int, dimension: int) -> npt.NDArray[np.float64]:
    """A persistent descent direction, a per-round drift and per-member noise: like successive
    gradient steps, consecutive honest updates point the same way (the ledger relies on it)."""
    base = np.random.default_rng([seed, 10**6]).normal(0.0, 0.01, dimension)
    drift = np.random.default_rng([seed, round_number, 10**6]).normal(0.0, 0.003, dimension)
    noise = np.random.default_rng([seed, round_number, member]).normal(0.0, 0.005, dimension)
    return base + drift + noise
