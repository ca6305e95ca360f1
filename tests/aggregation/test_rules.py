"""Every rule equals the big-int reference and is invariant under permutation of its inputs."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.aggregation import aggregate, base, rule_names, sorting
from tests.aggregation import reference
from tests.aggregation.strategies import cases


def run(case, matrix=None, senders=None, weights=None):
    return aggregate(
        case.rule,
        case.matrix if matrix is None else matrix,
        senders=case.senders if senders is None else senders,
        weights=case.weights if weights is None else weights,
        **case.params,
    )


@pytest.mark.parametrize("rule", rule_names())
@given(data=st.data())
def test_matches_big_integer_reference(rule, data):
    """Vector, selection and deviation equal a plain Python big-int implementation of the definition."""
    case = data.draw(cases(rule))
    result = run(case)
    expected, selected = reference.run(rule, case.rows, case.rank, case.weights, case.params)
    assert result.vector.dtype == np.int32
    assert result.vector.tolist() == expected
    assert list(result.selected) == selected
    assert result.deviation.tolist() == reference.deviation(case.rows, expected)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "bulyan", "nnm+median"])
@given(data=st.data())
def test_matches_reference_with_more_rows_than_the_sorting_network(rule, data):
    """Past `network_rows_max` rows the numpy sort path is taken; it equals the reference too."""
    case = data.draw(cases(rule, count_min=sorting.network_rows_max + 1))
    result = run(case)
    expected, selected = reference.run(rule, case.rows, case.rank, case.weights, case.params)
    assert result.vector.tolist() == expected
    assert list(result.selected) == selected


@pytest.mark.parametrize("rule", rule_names())
@given(data=st.data())
def test_permutation_invariance(rule, data):
    """Reordering (updates, senders, weights) together leaves the output bytes unchanged."""
    case = data.draw(cases(rule))
    order = data.draw(st.permutations(range(len(case.rows))))
    first = run(case)
    shuffled = run(
        case,
        matrix=case.matrix[list(order)],
        senders=[case.senders[i] for i in order],
        weights=None if case.weights is None else [case.weights[i] for i in order],
    )
    assert shuffled.vector.tobytes() == first.vector.tobytes()
    assert shuffled.deviation.tolist() == [first.deviation[i] for i in order]
    assert sorted(order[k] for k in shuffled.selected) == list(first.selected)


@pytest.mark.parametrize("rule", ["krum", "multi_krum", "bulyan", "nnm+median"])
def test_ties_are_broken_by_sender_order_not_row_order(rule):
    """With identical candidates, the sender that sorts first wins, wherever its row is."""
    rows = np.array([[5, 5]] * 3 + [[0, 0]] * 4, dtype=np.int32)
    senders = [b"g", b"f", b"e", b"d", b"c", b"b", b"a"]
    result = aggregate(rule, rows, senders=senders, f=1)
    reversed_result = aggregate(rule, rows[::-1].copy(), senders=senders[::-1], f=1)
    assert result.vector.tobytes() == reversed_result.vector.tobytes()
    chosen = sorted(senders[i] for i in result.selected)
    assert chosen == sorted(senders[::-1][i] for i in reversed_result.selected)
    if rule == "krum":
        assert chosen == [b"a"]  # the four [0, 0] rows tie; sender b"a" sorts first


@pytest.mark.parametrize("rule", rule_names())
def test_threads_do_not_change_a_single_byte(rule, monkeypatch):
    """Column blocks on worker threads give exactly the single-threaded result."""
    rng = np.random.default_rng(11)
    matrix = rng.integers(-(2**20), 2**20, size=(15, 5000), dtype=np.int32)
    matrix[3] = 2**31 - 1  # one row that needs the wide paths
    params: dict[str, Any] = {"f": 3} if rule.removeprefix("nnm+") in ("krum", "multi_krum", "bulyan") else {}
    if rule.endswith("bulyan"):
        params["f"] = 2
    if rule.endswith("trimmed_mean"):
        params.update(trim=3)
    if rule.startswith("nnm+"):
        params.setdefault("f", 3)
    if rule.endswith("centered_clipping"):
        params.update(tau=2**22, iterations=3, clamp=3)
    monkeypatch.setattr(base, "PARALLEL_VALUES_MIN", 2**62)
    alone = aggregate(rule, matrix, **params)
    monkeypatch.setattr(base, "PARALLEL_VALUES_MIN", 0)
    monkeypatch.setattr(base, "BLOCK_VALUES", 15 * 600)  # many blocks
    threaded = aggregate(rule, matrix, **params)
    assert threaded.vector.tobytes() == alone.vector.tobytes()
    assert threaded.deviation.tolist() == alone.deviation.tolist()
    assert threaded.selected == alone.selected
