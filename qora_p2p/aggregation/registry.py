"""The table of aggregation rules: names, parameters, preconditions, tolerance, cost.

A rule name is either a base rule (``krum``) or ``nnm+<base>`` (nearest-neighbour mixing, then the
base rule). `plan` validates a name and its parameters against an input count and dimension and
returns a callable; it raises `AggregationError` naming the parameter and the problem, and never
weakens a rule silently (a Krum with too few inputs is an error, not a fallback).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation.base import Batch, Bounds, Kernel, RuleOutput
from qora_p2p.aggregation.clipping import Radius, centered_clipping
from qora_p2p.aggregation.coordinate import mean_kernel, median_kernel, run_kernel, trimmed_kernel
from qora_p2p.aggregation.distance import (
    bulyan,
    krum,
    mix_block,
    mix_nearest,
    multi_krum,
    nearest_membership,
)
from qora_p2p.errors import AggregationError
from qora_p2p.fixedpoint import VALUE_MAX

__all__ = ["MIXING_PREFIX", "RULES", "Plan", "Rule", "plan", "rule_names"]

INPUTS_MAX = 1024  # documented maximum n; overflow bounds and tests are proven up to here
DIMENSION_MAX = 2**26  # documented maximum P; int64 accumulators are proven up to here (exact.py)
ITERATIONS_MAX = 64  # centered clipping converges in a few steps; more only burns time
TAU_SCALE_MAX = 64 << 16  # a radius of 64 median distances no longer clips anything that matters
MIXING_PREFIX = "nnm+"

Runner = Callable[[Batch], RuleOutput]


@dataclass(frozen=True, slots=True)
class Built:
    """A rule bound to its validated parameters.

    Attributes:
        run: computes the rule on a batch.
        kernel: for coordinate-wise rules, the per-column-block form (given the batch), which lets
            nearest-neighbour mixing run in the same single pass; None for the others.
    """

    run: Runner
    kernel: Callable[[Batch], Kernel] | None = None


def _coordinate(kernel_for: Callable[[Batch], Kernel]) -> Built:
    return Built(lambda batch: run_kernel(batch, kernel_for(batch)), kernel_for)


@dataclass(frozen=True, slots=True)
class Rule:
    """One base aggregation rule as documented in the README table."""

    name: str
    summary: str
    parameters: tuple[str, ...]
    weighted: bool
    tolerance: str
    cost: str
    build: Callable[[int, int, dict[str, Any]], Built]


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated rule ready to run on inputs of the validated shape."""

    name: str
    weighted: bool
    run: Runner


def _integer(params: Mapping[str, Any], name: str, low: int, high: int) -> int:
    if name not in params:
        raise AggregationError(f"missing parameter {name!r} (an integer in {low}..{high})")
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AggregationError(f"parameter {name!r} must be an integer, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise AggregationError(f"parameter {name!r} must be in {low}..{high}, got {int(value)}")
    return int(value)


def _need(rule: str, count: int, minimum: int, formula: str) -> None:
    if count < minimum:
        raise AggregationError(f"{rule} needs n >= {formula} = {minimum} inputs, got n = {count}")


def _build_fedavg(count: int, dimension: int, params: dict[str, Any]) -> Built:
    return _coordinate(lambda batch: mean_kernel(np.arange(batch.count), batch.weights, batch.count))


def _trim_count(count: int, params: dict[str, Any]) -> int:
    given = [name for name in ("trim", "trim_fraction") if name in params]
    if len(given) != 1:
        raise AggregationError("trimmed_mean takes exactly one of 'trim' or 'trim_fraction'")
    if given[0] == "trim":
        return _integer(params, "trim", 0, INPUTS_MAX)
    raw = params["trim_fraction"]
    if isinstance(raw, bool) or not isinstance(raw, float | int | str | Fraction):
        raise AggregationError("parameter 'trim_fraction' must be a number in [0, 1/2)")
    try:
        # str() of a float is its shortest round-trip decimal, so 0.3 means 3/10, not 0.29999...
        fraction = Fraction(str(raw)) if not isinstance(raw, Fraction) else raw
    except (ValueError, ZeroDivisionError) as error:
        raise AggregationError(f"parameter 'trim_fraction' is not a number: {raw!r}") from error
    if not 0 <= fraction < Fraction(1, 2):
        raise AggregationError(f"parameter 'trim_fraction' must be in [0, 1/2), got {raw!r}")
    return math.floor(fraction * count)


def _build_trimmed_mean(count: int, dimension: int, params: dict[str, Any]) -> Built:
    trim = _trim_count(count, params)
    _need("trimmed_mean", count, 2 * trim + 1, f"2*trim+1 (trim={trim})")
    return _coordinate(lambda batch: trimmed_kernel(batch.count, trim))


def _build_median(count: int, dimension: int, params: dict[str, Any]) -> Built:
    return _coordinate(lambda batch: median_kernel(batch.count))


def _build_krum(count: int, dimension: int, params: dict[str, Any]) -> Built:
    f = _integer(params, "f", 0, INPUTS_MAX)
    _need("krum", count, 2 * f + 3, f"2f+3 (f={f})")
    return Built(lambda batch: krum(batch, f))


def _build_multi_krum(count: int, dimension: int, params: dict[str, Any]) -> Built:
    f = _integer(params, "f", 0, INPUTS_MAX)
    _need("multi_krum", count, 2 * f + 3, f"2f+3 (f={f})")
    m = _integer(params, "m", 1, count) if "m" in params else count - f
    return Built(lambda batch: multi_krum(batch, f, m))


def _build_bulyan(count: int, dimension: int, params: dict[str, Any]) -> Built:
    f = _integer(params, "f", 0, INPUTS_MAX)
    _need("bulyan", count, 4 * f + 3, f"4f+3 (f={f})")
    return Built(lambda batch: bulyan(batch, f))


def _build_centered_clipping(count: int, dimension: int, params: dict[str, Any]) -> Built:
    given = [name for name in ("tau", "tau_scale") if name in params]
    if len(given) != 1:
        raise AggregationError(
            "centered_clipping takes exactly one of 'tau' (fixed-point radius) or 'tau_scale' "
            "(Q16 multiple of the median distance)"
        )
    if given[0] == "tau":
        radius = Radius(tau=_integer(params, "tau", 1, VALUE_MAX))
    else:
        radius = Radius(scale=_integer(params, "tau_scale", 1, TAU_SCALE_MAX))
    iterations = _integer(params, "iterations", 1, ITERATIONS_MAX) if "iterations" in params else 1
    clamp = _integer(params, "clamp", 0, INPUTS_MAX) if "clamp" in params else 0
    center = params.get("center")
    if center is not None:
        if not isinstance(center, np.ndarray) or center.dtype != np.int32:
            raise AggregationError("parameter 'center' must be an int32 numpy array")
        if center.shape != (dimension,):
            raise AggregationError(
                f"parameter 'center' must have shape ({dimension},), got {center.shape}"
            )
    return Built(lambda batch: centered_clipping(batch, radius, iterations, center, clamp))


RULES: Mapping[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule(
            "fedavg",
            "weighted mean (baseline, not robust)",
            (),
            True,
            "none: one input moves the result arbitrarily",
            "O(nP)",
            _build_fedavg,
        ),
        Rule(
            "trimmed_mean",
            "per coordinate, drop `trim` lowest and highest, average the rest",
            ("trim", "trim_fraction"),
            False,
            "trim Byzantine inputs: the result stays in the honest coordinate range",
            "O(nP log n)",
            _build_trimmed_mean,
        ),
        Rule(
            "median",
            "per coordinate median; even n: rounded mean of the two middle values",
            (),
            False,
            "fewer than n/2 Byzantine inputs: the result stays in the honest coordinate range",
            "O(nP log n)",
            _build_median,
        ),
        Rule(
            "krum",
            "the input closest to its n-f-2 nearest neighbours",
            ("f",),
            False,
            "f Byzantine inputs with n >= 2f+3",
            "O(n^2 P)",
            _build_krum,
        ),
        Rule(
            "multi_krum",
            "mean of the m best-scored Krum inputs (m = n-f by default)",
            ("f", "m"),
            True,
            "f Byzantine inputs with n >= 2f+3",
            "O(n^2 P)",
            _build_multi_krum,
        ),
        Rule(
            "bulyan",
            "repeated Krum selects n-2f, then per coordinate the mean of n-4f values nearest the median",
            ("f",),
            False,
            "f Byzantine inputs with n >= 4f+3",
            "O(n^2 P + n^3)",
            _build_bulyan,
        ),
        Rule(
            "centered_clipping",
            "move from a centre by the mean of differences clipped to radius tau (or tau_scale medians)",
            ("tau", "tau_scale", "iterations", "center", "clamp"),
            True,
            "each Byzantine input moves the result by <= tau*w/sum(w) per iteration",
            "O(nP) per iteration",
            _build_centered_clipping,
        ),
    )
}


def rule_names() -> tuple[str, ...]:
    """Every accepted rule name, base rules first, then their ``nnm+`` compositions."""
    return tuple(RULES) + tuple(MIXING_PREFIX + name for name in RULES)


def plan(name: str, count: int, dimension: int, params: Mapping[str, Any], weighted: bool) -> Plan:
    """Validate a rule name and its parameters for ``count`` inputs of ``dimension`` values.

    Raises:
        AggregationError: unknown rule or parameter, a bad value, a failed precondition, or weights
            given to a rule that does not take them.
    """
    if not isinstance(name, str):
        raise AggregationError(f"rule must be a string, got {type(name).__name__}")
    mixing = name.startswith(MIXING_PREFIX)
    base_name = name.removeprefix(MIXING_PREFIX)
    if base_name not in RULES:
        raise AggregationError(f"unknown rule {name!r}; known: {', '.join(rule_names())}")
    base = RULES[base_name]
    accepted = set(base.parameters) | ({"f"} if mixing else set())
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise AggregationError(
            f"rule {name!r} takes no parameter {unknown[0]!r}; accepted: {sorted(accepted) or 'none'}"
        )
    if weighted and not base.weighted:
        raise AggregationError(f"rule {name!r} does not take weights")
    own = {key: value for key, value in params.items() if key in base.parameters}
    built = base.build(count, dimension, own)
    if not mixing:
        return Plan(name, base.weighted, built.run)
    f = _integer(params, "f", 0, INPUTS_MAX)
    _need("nnm", count, 2 * f + 1, f"2f+1 (f={f})")
    return Plan(name, base.weighted, _mixed(built, f))


def _mixed(built: Built, f: int) -> Runner:
    """NNM before a rule: fused into the rule's single pass when it is coordinate-wise."""
    kernel_for = built.kernel
    if kernel_for is None:

        def materialised(batch: Batch) -> RuleOutput:
            inner = built.run(Batch(mix_nearest(batch, f), batch.rank, batch.weights))
            # The inner distances are to mixed rows; deviation is measured on the real inputs.
            return RuleOutput(inner.vector, inner.selected)

        return materialised

    def fused(batch: Batch) -> RuleOutput:
        membership = nearest_membership(batch, f)
        inner = kernel_for(batch)

        def kernel(block: npt.NDArray[np.int32]) -> tuple[npt.NDArray[np.int32], Bounds]:
            return inner(mix_block(membership, block))[0], None

        return run_kernel(batch, kernel)

    return fused
