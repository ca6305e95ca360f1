"""Sorting networks sort every input (0-1 principle, exhaustive) and agree with numpy's sort."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.aggregation import sorting
from qora_p2p.aggregation.sorting import OrderStatistics, network


def sort_columns(block: np.ndarray, ranks: frozenset[int] | None = None) -> np.ndarray:
    """Every rank of every column as an (r, C) array (ranks outside ``ranks`` may be garbage)."""
    statistics = OrderStatistics(block, ranks)
    return np.stack([statistics.value(rank) for rank in range(block.shape[0])])


def all_binary_columns(rows: int) -> np.ndarray:
    """Every 0/1 vector of length ``rows``, one per column."""
    codes = np.arange(2**rows, dtype=np.int64)
    return ((codes[None, :] >> np.arange(rows)[:, None]) & 1).astype(np.int32)


@pytest.mark.parametrize("rows", range(1, 17))
def test_network_sorts_every_binary_input(rows):
    """A comparator network sorts all inputs iff it sorts all 0/1 inputs (Knuth's 0-1 principle)."""
    block = all_binary_columns(rows)
    result = sort_columns(block)
    assert (result == np.sort(block, axis=0)).all()


@pytest.mark.parametrize("rows", [5, 8, 11, 16])
def test_pruned_network_still_decides_its_ranks(rows):
    """Pruned to some output ranks, the network gets exactly those ranks right on all 0/1 inputs."""
    block = all_binary_columns(rows)
    expected = np.sort(block, axis=0)
    for wanted in [{0}, {rows - 1}, {(rows - 1) // 2, rows // 2}, {0, 1, rows - 2, rows - 1}]:
        ranks = frozenset(rank for rank in wanted if 0 <= rank < rows)
        comparators = network(rows, ranks)
        assert len(comparators) <= len(network(rows))
        result = sort_columns(block, ranks)
        for rank in ranks:
            assert (result[rank] == expected[rank]).all()


@given(
    st.integers(1, 60).flatmap(
        lambda rows: st.lists(
            st.lists(st.integers(-(2**31), 2**31 - 1), min_size=rows, max_size=rows),
            min_size=1,
            max_size=8,
        )
    )
)
def test_both_paths_match_numpy_sort(columns):
    """Network path (few rows) and numpy path (many rows) both equal np.sort on arbitrary int32."""
    block = np.array(columns, dtype=np.int32).T.copy()
    assert (sort_columns(block) == np.sort(block, axis=0)).all()


def test_network_and_numpy_paths_agree_at_the_crossover(monkeypatch):
    """Forcing either path on the same block gives identical bytes."""
    rng = np.random.default_rng(7)
    block = rng.integers(-5, 5, size=(sorting.network_rows_max, 300), dtype=np.int32)
    by_network = sort_columns(block).tobytes()
    monkeypatch.setattr(sorting, "network_rows_max", 0)
    assert sort_columns(block).tobytes() == by_network


@given(st.integers(1, 40), st.data())
def test_rank_sums_match_sorted_slices(rows, data):
    """total(start, stop) is the exact int64 sum of those ranks on both paths."""
    columns = data.draw(st.integers(1, 6))
    block = np.array(
        data.draw(
            st.lists(
                st.integers(-(2**31), 2**31 - 1) | st.integers(-3, 3),
                min_size=rows * columns,
                max_size=rows * columns,
            )
        ),
        dtype=np.int32,
    ).reshape(rows, columns)
    start = data.draw(st.integers(0, rows - 1))
    stop = data.draw(st.integers(start + 1, rows))
    expected = np.sort(block.astype(np.int64), axis=0)[start:stop].sum(axis=0)
    assert OrderStatistics(block).total(start, stop).tolist() == expected.tolist()


def test_batcher_network_is_a_valid_comparator_list():
    """Comparators are (low, high) pairs inside range; sizes follow Batcher's formula at powers of two."""
    for rows in range(1, 33):
        for low, high in network(rows):
            assert 0 <= low < high < rows
    # Batcher's odd-even merge sort for 2**k inputs has (k*k - k + 4) * 2**(k-2) - 1 comparators.
    for k in range(1, 6):
        assert len(network(2**k)) == (k * k - k + 4) * 2 ** (k - 2) - 1
    assert list(itertools.islice(network(2), 2)) == [(0, 1)]
