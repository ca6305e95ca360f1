"""The public API: its result, its validation, and its errors."""

import numpy as np
import pytest

from qora_p2p.aggregation import (
    INPUTS_MAX,
    RULES,
    AggregationResult,
    aggregate,
    rule_names,
    validate,
)
from qora_p2p.errors import AggregationError, QoraError

MATRIX = np.arange(40, dtype=np.int32).reshape(10, 4)


def test_result_shape_and_immutability():
    """A result carries an int32 vector, one deviation per input, the selection; arrays are read-only."""
    result = aggregate("krum", MATRIX, f=2)
    assert isinstance(result, AggregationResult)
    assert result.vector.shape == (4,) and result.vector.dtype == np.int32
    assert result.deviation.shape == (10,) and result.deviation.dtype == np.int64
    assert len(result.selected) == 1
    with pytest.raises(ValueError):
        result.vector[0] = 1
    with pytest.raises(ValueError):
        result.deviation[0] = 1


def test_rule_names_cover_every_base_rule_and_its_mixing():
    """Every rule in the table is reachable alone and as nnm+rule."""
    names = rule_names()
    assert set(RULES) <= set(names)
    assert {f"nnm+{name}" for name in RULES} <= set(names)


def test_trim_fraction_uses_the_decimal_value():
    """trim_fraction=0.3 with n=10 trims exactly 3 per side (floor(3/10 * 10)), not 2."""
    by_fraction = aggregate("trimmed_mean", MATRIX, trim_fraction=0.3)
    assert by_fraction.vector.tobytes() == aggregate("trimmed_mean", MATRIX, trim=3).vector.tobytes()


@pytest.mark.parametrize(
    ("rule", "params", "message"),
    [
        ("krum", {"f": 4}, r"krum needs n >= 2f\+3 \(f=4\) = 11 inputs, got n = 10"),
        ("multi_krum", {"f": 4}, r"multi_krum needs n >= 2f\+3"),
        ("bulyan", {"f": 2}, r"bulyan needs n >= 4f\+3 \(f=2\) = 11"),
        ("trimmed_mean", {"trim": 5}, r"trimmed_mean needs n >= 2\*trim\+1"),
        ("nnm+median", {"f": 5}, r"nnm needs n >= 2f\+1"),
        ("krum", {}, r"missing parameter 'f'"),
        ("nnm+median", {}, r"missing parameter 'f'"),
        ("median", {"f": 1}, r"takes no parameter 'f'"),
        ("centered_clipping", {}, r"exactly one of 'tau'"),
        ("centered_clipping", {"tau": 5, "tau_scale": 65536}, r"exactly one of 'tau'"),
        ("centered_clipping", {"tau_scale": 0}, r"'tau_scale' must be in 1\.\."),
        ("centered_clipping", {"tau": 0}, r"'tau' must be in 1\.\."),
        ("centered_clipping", {"tau": 5, "iterations": 0}, r"'iterations' must be in"),
        ("centered_clipping", {"tau": 5, "clamp": -1}, r"'clamp' must be in 0\.\."),
        ("centered_clipping", {"tau": 5, "clamp": 1.5}, r"'clamp' must be an integer"),
        ("centered_clipping", {"tau": 5, "center": np.zeros(3, np.int32)}, r"'center' must have shape"),
        ("centered_clipping", {"tau": 5, "center": np.zeros(4)}, r"'center' must be an int32"),
        ("trimmed_mean", {}, r"exactly one of 'trim' or 'trim_fraction'"),
        ("trimmed_mean", {"trim": 1, "trim_fraction": 0.1}, r"exactly one"),
        ("trimmed_mean", {"trim_fraction": 0.5}, r"must be in \[0, 1/2\)"),
        ("trimmed_mean", {"trim_fraction": "abc"}, r"not a number"),
        ("krum", {"f": 1.0}, r"'f' must be an integer"),
        ("krum", {"f": True}, r"'f' must be an integer"),
        ("multi_krum", {"f": 1, "m": 11}, r"'m' must be in 1\.\.10"),
        ("geomed", {}, r"unknown rule 'geomed'"),
        ("nnm+nnm+median", {"f": 1}, r"unknown rule"),
    ],
)
def test_bad_rules_and_parameters_are_named(rule, params, message):
    """A failed precondition or bad parameter raises AggregationError saying which and why."""
    with pytest.raises(AggregationError, match=message):
        aggregate(rule, MATRIX, **params)


def test_krum_without_f_is_an_error():
    """Krum never runs with a guessed f."""
    with pytest.raises(AggregationError, match="missing parameter 'f'"):
        aggregate("krum", MATRIX)


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([[1, 2], [3, 4]], "numpy array"),
        (np.zeros((2, 2), dtype=np.float32), "int32 fixed-point"),
        (np.zeros((2, 2), dtype=np.int64), "int32 fixed-point"),
        (np.zeros(4, dtype=np.int32), "2-D"),
        (np.zeros((0, 3), dtype=np.int32), "number of updates"),
        (np.zeros((2, 0), dtype=np.int32), "update length"),
        (np.zeros((INPUTS_MAX + 1, 1), dtype=np.int32), "number of updates"),
    ],
)
def test_malformed_updates_are_rejected(updates, message):
    """Anything but a non-empty 2-D int32 array within the limits is refused."""
    with pytest.raises(AggregationError, match=message):
        aggregate("median", updates)


@pytest.mark.parametrize(
    ("senders", "message"),
    [
        ([b"a"] * 10, "distinct"),
        ([b"a", b"b"], "sequence of 10"),
        ([str(i) for i in range(10)], "bytes"),
        (b"0123456789", "sequence of 10"),
    ],
)
def test_bad_senders_are_rejected(senders, message):
    """Senders must be n distinct byte strings."""
    with pytest.raises(AggregationError, match=message):
        aggregate("median", MATRIX, senders=senders)


@pytest.mark.parametrize(
    ("rule", "weights", "message"),
    [
        ("median", [1] * 10, "does not take weights"),
        ("fedavg", [1] * 9, "hold 10 values"),
        ("fedavg", [0] + [1] * 9, "positive"),
        ("fedavg", [1.5] * 10, "integers"),
        ("fedavg", [2**28] * 10, "total weight"),
    ],
)
def test_bad_weights_are_rejected(rule, weights, message):
    """Weights are n positive integers with a bounded total, for rules that take weights."""
    with pytest.raises(AggregationError, match=message):
        aggregate(rule, MATRIX, weights=weights)


def test_weights_change_the_weighted_mean():
    """fedavg with weights is the rounded weighted mean."""
    rows = np.array([[0], [10]], dtype=np.int32)
    assert aggregate("fedavg", rows, weights=[3, 1]).vector.tolist() == [2]  # 10/4 = 2.5 -> 2
    assert aggregate("fedavg", rows, weights=[1, 3]).vector.tolist() == [8]  # 30/4 = 7.5 -> 8


def test_validate_checks_without_data():
    """validate() applies the same checks as aggregate() to a count alone."""
    validate("krum", 9, f=3)
    with pytest.raises(AggregationError, match="2f\\+3"):
        validate("krum", 8, f=3)


def test_errors_share_the_project_base_class():
    """Callers can catch every deliberate error as QoraError (and as ValueError)."""
    with pytest.raises(QoraError):
        aggregate("median", np.zeros((1, 1), np.float64))
    assert issubclass(AggregationError, ValueError)
