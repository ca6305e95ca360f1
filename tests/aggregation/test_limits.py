"""No overflow at the documented maxima: n = INPUTS_MAX with extreme values equals the big-int
reference; P in the millions with extreme values equals closed-form results."""

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from qora_p2p.aggregation import DIMENSION_MAX, INPUTS_MAX, aggregate
from qora_p2p.aggregation.distance import closest_to_median_kernel
from qora_p2p.fixedpoint import VALUE_MAX
from tests.aggregation import reference


@pytest.fixture(scope="module")
def widest():
    """INPUTS_MAX rows of 2 values drawn from the extremes and the limb boundaries."""
    rng = np.random.default_rng(2026)
    choices = np.array([VALUE_MAX, -VALUE_MAX, VALUE_MAX - 1, 2**16, -(2**16) + 1, 0], dtype=np.int64)
    matrix = choices[rng.integers(0, choices.size, size=(INPUTS_MAX, 2))].astype(np.int32)
    rows = matrix.tolist()
    return matrix, rows, list(range(INPUTS_MAX))


@pytest.mark.parametrize(
    ("rule", "params"),
    [
        ("fedavg", {}),
        ("median", {}),
        ("trimmed_mean", {"trim": (INPUTS_MAX - 1) // 2}),
        ("krum", {"f": (INPUTS_MAX - 3) // 2}),
        ("multi_krum", {"f": (INPUTS_MAX - 3) // 2}),
        ("centered_clipping", {"tau": VALUE_MAX, "iterations": 2}),
        ("nnm+median", {"f": (INPUTS_MAX - 1) // 2}),
    ],
)
def test_maximum_count_matches_reference(widest, rule, params):
    """At n = INPUTS_MAX with values at +-(2**31 - 1), results equal the big-int reference."""
    matrix, rows, rank = widest
    result = aggregate(rule, matrix, **params)
    expected, selected = reference.run(rule, rows, rank, None, params)
    assert result.vector.tolist() == expected
    assert list(result.selected) == selected
    assert result.deviation.tolist() == reference.deviation(rows, expected)


def test_bulyan_median_window_at_maximum_count(widest):
    """Bulyan's closest-to-median averaging over 1024 extreme rows equals the reference
    (its selection shares Krum's exact scoring, tested above at the same size)."""
    matrix, rows, _ = widest
    f = (INPUTS_MAX - 3) // 4
    every = np.arange(INPUTS_MAX)
    kernel = closest_to_median_kernel(every, f)
    assert kernel(matrix)[0].tolist() == reference.closest_to_median(rows, f)


def expected_for_constant_rows(dimension: int) -> dict[str, int]:
    """Closed forms for rows (+MAX, -MAX, +MAX) repeated over ``dimension`` coordinates."""
    third = round(Fraction(VALUE_MAX, 3))
    radius = math.isqrt(dimension * VALUE_MAX**2 - 1) + 1  # ceil(sqrt(P) * MAX)
    clipped = round(Fraction(VALUE_MAX * VALUE_MAX, radius))
    return {
        "fedavg": third,
        "median": VALUE_MAX,
        "trimmed_mean": VALUE_MAX,
        "krum": VALUE_MAX,
        "multi_krum": third,
        "bulyan": third,
        "centered_clipping": round(Fraction(clipped, 3)),
        "nnm+median": VALUE_MAX,
    }


PARAMS: dict[str, dict[str, Any]] = {
    "trimmed_mean": {"trim": 1},
    "krum": {"f": 0},
    "multi_krum": {"f": 0},
    "bulyan": {"f": 0},
    "centered_clipping": {"tau": VALUE_MAX},
    "nnm+median": {"f": 1},
}


def check_constant_rows(dimension: int) -> None:
    matrix = np.full((3, dimension), VALUE_MAX, dtype=np.int32)
    matrix[1] = -VALUE_MAX
    for rule, value in expected_for_constant_rows(dimension).items():
        result = aggregate(rule, matrix, **PARAMS.get(rule, {}))
        assert (result.vector == value).all(), rule
        expected_deviation = [math.isqrt(dimension * (int(row[0]) - value) ** 2) for row in matrix]
        assert result.deviation.tolist() == expected_deviation, rule


def test_millions_of_extreme_values_do_not_overflow():
    """P = 2**21 values at +-(2**31 - 1): every rule equals its closed form."""
    check_constant_rows(2**21)


@pytest.mark.slow
def test_documented_maximum_dimension():
    """P = DIMENSION_MAX (2**24) at the extremes: still exact (768 MiB of input)."""
    check_constant_rows(DIMENSION_MAX)
