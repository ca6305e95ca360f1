"""Exact, deterministic robust aggregation of fixed-point updates.

Theory of operation
-------------------
``aggregate(rule, updates, senders=..., weights=..., **params)`` takes an (n, P) int32 matrix (one
encoded update per row, see `qora_p2p.fixedpoint`) and returns the aggregate as int32. Every step is
exact integer arithmetic with one documented rounding rule per division and square root, so:

* the result's bytes are the same on every machine (no float rounding, no BLAS-order effects:
  float64 products are used only where every term is an integer below 2**53);
* the result is invariant under any permutation of (updates, senders): rows enter in the canonical
  order of their senders (sorted bytes; row order when no senders are given) and that order only
  breaks exact ties.

Each result also carries a per-input deviation, ``floor(|x_i - result|)`` in fixed-point units, the
signal the reputation ledger scales by the round's spread. See `registry.RULES` (and the README
table) for every rule's parameters, tolerance and cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation.base import Batch, inner_products, row_sq_distances
from qora_p2p.aggregation.registry import (
    DIMENSION_MAX,
    INPUTS_MAX,
    MIXING_PREFIX,
    RULES,
    Plan,
    plan,
    rule_names,
)
from qora_p2p.errors import AggregationError, FixedPointError
from qora_p2p.fixedpoint import to_fixed

__all__ = [
    "DIMENSION_MAX",
    "INPUTS_MAX",
    "RULES",
    "WEIGHT_TOTAL_MAX",
    "AggregationResult",
    "aggregate",
    "inner_products",
    "rule_names",
    "to_fixed_params",
    "validate",
]

WEIGHT_TOTAL_MAX = 2**31 - 1  # keeps sum(w * x) below 2**62 and clipped sums below 2**63


@dataclass(frozen=True, slots=True)
class AggregationResult:
    """The outcome of one aggregation.

    Attributes:
        vector: (P,) int32 aggregate (read-only).
        deviation: (n,) int64, ``floor(|x_i - vector|)`` per input in the caller's row order
            (read-only).
        selected: indices (ascending, caller's order) of the inputs the rule used; every index for
            rules that use all inputs.
        rule: the rule name as given.
    """

    vector: npt.NDArray[np.int32]
    deviation: npt.NDArray[np.int64]
    selected: tuple[int, ...]
    rule: str


def to_fixed_params(rule: str, params: Mapping[str, Any], frac_bits: int) -> dict[str, Any]:
    """Rule parameters as configuration files write them, converted for `aggregate`.

    Configuration speaks model units; `aggregate` speaks integers. For centered clipping a float
    ``tau`` (a radius in model units) becomes ``to_fixed(tau, frac_bits)`` and a float ``tau_scale``
    (a multiple of the median distance) becomes Q16; ints are taken as already converted.
    """
    converted = dict(params)
    if rule.removeprefix(MIXING_PREFIX) != "centered_clipping":
        return converted
    try:
        if isinstance(converted.get("tau"), float):
            converted["tau"] = to_fixed(converted["tau"], frac_bits)
        if isinstance(converted.get("tau_scale"), float):
            converted["tau_scale"] = to_fixed(converted["tau_scale"], 16)
    except FixedPointError as error:
        raise AggregationError(f"centered_clipping radius: {error}") from error
    return converted


def validate(
    rule: str, count: int, dimension: int = 1, *, weighted: bool = False, **params: Any
) -> None:
    """Check a rule and its parameters for ``count`` inputs without any data.

    Raises:
        AggregationError: as `aggregate` would for inputs of that shape.
    """
    _check_shape(count, dimension)
    plan(rule, count, dimension, params, weighted)


def aggregate(
    rule: str,
    updates: npt.NDArray[np.int32],
    *,
    senders: Sequence[bytes] | None = None,
    weights: Sequence[int] | npt.NDArray[np.integer] | None = None,
    **params: Any,
) -> AggregationResult:
    """Aggregate fixed-point updates with a robust rule, exactly and deterministically.

    Args:
        rule: one of `rule_names()`, e.g. ``"median"``, ``"krum"``, ``"nnm+trimmed_mean"``.
        updates: (n, P) int32 array, one update per row.
        senders: n distinct byte strings (e.g. public keys) naming each row's author; their sorted
            order is the canonical order used to break ties. Row order when None.
        weights: n positive integers (total <= 2**31 - 1), for rules that take weights.
        **params: the rule's parameters (see the README table), e.g. ``f=3`` or ``trim=2``.

    Returns:
        `AggregationResult` with ``vector``, ``deviation`` and ``selected``.

    Raises:
        AggregationError: malformed input, unknown rule or parameter, or a failed precondition.
    """
    matrix = _check_updates(updates)
    count, dimension = matrix.shape
    prepared: Plan = plan(rule, count, dimension, params, weights is not None)
    batch = Batch(matrix, _canonical_rank(senders, count), _check_weights(weights, count))
    output = prepared.run(batch)
    squared = output.sq_distances
    if squared is None:
        squared = row_sq_distances(matrix, output.vector)
    deviation = np.array([math.isqrt(value) for value in squared], dtype=np.int64)
    vector = output.vector
    vector.flags.writeable = False
    deviation.flags.writeable = False
    return AggregationResult(vector, deviation, tuple(int(i) for i in output.selected), rule)


def _check_shape(count: int, dimension: int) -> None:
    if not 1 <= count <= INPUTS_MAX:
        raise AggregationError(f"number of updates must be in 1..{INPUTS_MAX}, got {count}")
    if not 1 <= dimension <= DIMENSION_MAX:
        raise AggregationError(f"update length must be in 1..{DIMENSION_MAX}, got {dimension}")


def _check_updates(updates: Any) -> npt.NDArray[np.int32]:
    if not isinstance(updates, np.ndarray):
        raise AggregationError(f"updates must be a numpy array, got {type(updates).__name__}")
    if updates.ndim != 2:
        raise AggregationError(f"updates must be 2-D (n, P), got {updates.ndim}-D")
    if updates.dtype != np.int32:
        raise AggregationError(
            f"updates must be int32 fixed-point (see qora_p2p.fixedpoint.encode), got {updates.dtype}"
        )
    _check_shape(*updates.shape)
    return updates


def _canonical_rank(senders: Sequence[bytes] | None, count: int) -> npt.NDArray[np.int64]:
    if senders is None:
        return np.arange(count, dtype=np.int64)
    if isinstance(senders, bytes | str) or len(senders) != count:
        raise AggregationError(f"senders must be a sequence of {count} byte strings")
    if not all(isinstance(sender, bytes) for sender in senders):
        raise AggregationError("every sender must be a bytes object")
    if len(set(senders)) != count:
        raise AggregationError("senders must be distinct")
    rank = np.empty(count, dtype=np.int64)
    rank[sorted(range(count), key=senders.__getitem__)] = np.arange(count)
    return rank


def _check_weights(
    weights: Sequence[int] | npt.NDArray[np.integer] | None, count: int
) -> npt.NDArray[np.int64] | None:
    if weights is None:
        return None
    values = list(weights)
    if len(values) != count:
        raise AggregationError(f"weights must hold {count} values, got {len(values)}")
    if any(isinstance(value, bool) or not isinstance(value, int | np.integer) for value in values):
        raise AggregationError("weights must be integers")
    if min(int(value) for value in values) < 1:
        raise AggregationError("weights must be positive (leave zero-weight inputs out)")
    if sum(int(value) for value in values) > WEIGHT_TOTAL_MAX:
        raise AggregationError(f"total weight must be at most {WEIGHT_TOTAL_MAX}")
    return np.array([int(value) for value in values], dtype=np.int64)
