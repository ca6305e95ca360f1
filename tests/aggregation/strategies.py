"""Hypothesis strategies for aggregation inputs: small matrices rich in ties, duplicates, extreme
values and limb boundaries, with rule parameters at and above each rule's minimum."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from qora_p2p.aggregation import RULES
from qora_p2p.fixedpoint import VALUE_MAX

BOUNDARIES = [
    VALUE_MAX,
    -VALUE_MAX,
    VALUE_MAX - 1,
    -VALUE_MAX + 1,
    2**16,
    -(2**16),
    2**16 - 1,
    -(2**16) + 1,
    2**24,
    -(2**24),
    2**31 - 2**16,
]
VALUES = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(BOUNDARIES),
    st.integers(-VALUE_MAX, VALUE_MAX),
)


@st.composite
def matrices(draw, count_min: int, extra: int = 4, dimension_max: int = 5) -> list[list[int]]:
    """``count_min .. count_min + extra`` rows of equal length; some rows repeat earlier ones."""
    count = draw(st.integers(count_min, count_min + extra))
    dimension = draw(st.integers(1, dimension_max))
    rows: list[list[int]] = []
    for _ in range(count):
        if rows and draw(st.integers(0, 4)) == 0:
            rows.append(list(draw(st.sampled_from(rows))))
        else:
            rows.append(draw(st.lists(VALUES, min_size=dimension, max_size=dimension)))
    return rows


@dataclass
class Case:
    rule: str
    rows: list[list[int]]
    senders: list[bytes]
    weights: list[int] | None = None
    params: dict = field(default_factory=dict)

    @property
    def matrix(self) -> np.ndarray:
        return np.array(self.rows, dtype=np.int32)

    @property
    def rank(self) -> list[int]:
        order = sorted(range(len(self.senders)), key=self.senders.__getitem__)
        rank = [0] * len(order)
        for position, row in enumerate(order):
            rank[row] = position
        return rank


@st.composite
def cases(draw, rule: str, extra: int = 4, count_min: int = 1) -> Case:
    """A valid input for ``rule``: parameters, then rows (at least the rule's minimum count and at
    least ``count_min``)."""
    base = rule.removeprefix("nnm+")
    params: dict = {}
    minimum = 1
    f = draw(st.integers(0, 2 if base == "bulyan" else 3))
    if base in ("krum", "multi_krum"):
        params["f"] = f
        minimum = 2 * f + 3
    elif base == "bulyan":
        params["f"] = f
        minimum = 4 * f + 3
    elif base == "trimmed_mean":
        trim = draw(st.integers(0, 3))
        params["trim"] = trim
        minimum = 2 * trim + 1
    elif base == "centered_clipping":
        if draw(st.booleans()):
            params["tau"] = draw(st.one_of(st.sampled_from([1, 3, 2**16, VALUE_MAX]), st.integers(1, VALUE_MAX)))
        else:
            params["tau_scale"] = draw(st.one_of(st.sampled_from([1, 2**16, 64 << 16]), st.integers(1, 64 << 16)))
        params["iterations"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            params["clamp"] = draw(st.integers(0, 6))
    if rule.startswith("nnm+"):
        params["f"] = f
        minimum = max(minimum, 2 * f + 1)
    rows = draw(matrices(max(minimum, count_min), extra=extra))
    count, dimension = len(rows), len(rows[0])
    if base == "multi_krum" and draw(st.booleans()):
        params["m"] = draw(st.integers(1, count))
    if base == "centered_clipping" and draw(st.booleans()):
        params["center"] = np.array(draw(st.lists(VALUES, min_size=dimension, max_size=dimension)), dtype=np.int32)
    weights = None
    if RULES[base].weighted and draw(st.booleans()):
        weight = st.one_of(st.integers(1, 5), st.integers(1, (2**31 - 1) // count))
        weights = draw(st.lists(weight, min_size=count, max_size=count))
    senders = draw(st.lists(st.binary(min_size=1, max_size=3), min_size=count, max_size=count, unique=True))
    return Case(rule, rows, senders, weights, params)
