"""Exact kernels equal Python big-integer arithmetic on every path (one limb, two limbs, int64 and
wide accumulation; float64, int64 and limb distance sums)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.aggregation import exact
from qora_p2p.aggregation.base import inner_products, row_sq_distances
from qora_p2p.aggregation.distance import _NeighbourTable
from tests.aggregation import reference
from tests.aggregation.strategies import VALUES, matrices


@given(matrices(1, extra=6, dimension_max=9))
def test_gram_and_distances_are_exact(rows):
    """G[i, j] and D[i, j] equal the big-int dot products and squared distances."""
    matrix = np.array(rows, dtype=np.int32)
    gram = exact.gram(matrix)
    distances = exact.pairwise_sq_distances(gram)
    for i, left in enumerate(rows):
        for j, right in enumerate(rows):
            assert int(gram[i, j]) == sum(a * b for a, b in zip(left, right, strict=True))
            assert int(distances[i, j]) == reference.sq_distance(left, right)


def test_gram_chunks_and_limbs_combine_exactly(monkeypatch):
    """Across many small chunks, rows that need two limbs in some chunks only still combine exactly."""
    monkeypatch.setattr(exact, "WORK_BYTES", 8)  # forces the 1024-column minimum chunk
    rng = np.random.default_rng(3)
    matrix = rng.integers(-(2**15), 2**15, size=(4, 5000), dtype=np.int32)
    matrix[1, 4500] = 2**31 - 1  # row 1 needs two limbs in its last chunk only
    matrix[2, 10] = -(2**31) + 1
    gram = exact.gram(matrix)
    rows = matrix.astype(object)
    assert gram.dtype == object
    assert (gram == rows @ rows.T).all()


@given(
    matrices(1, extra=5, dimension_max=9).flatmap(
        lambda rows: st.tuples(
            st.just(rows), st.lists(VALUES, min_size=len(rows[0]), max_size=len(rows[0]))
        )
    )
)
def test_row_distances_are_exact(data):
    """|x_i - v|**2 is exact on the direct and the limb path."""
    rows, vector = data
    result = row_sq_distances(np.array(rows, dtype=np.int32), np.array(vector, dtype=np.int64))
    assert result == [reference.sq_distance(row, vector) for row in rows]


def test_row_distances_at_the_extremes_over_many_chunks():
    """Differences of 2**32 - 2 across several chunks sum exactly (far beyond int64)."""
    columns = 3 * exact.DISTANCE_CHUNK_COLUMNS + 5
    matrix = np.full((2, columns), 2**31 - 1, dtype=np.int32)
    matrix[1] = -(2**31 - 1)
    vector = np.full(columns, -(2**31 - 1), dtype=np.int64)
    assert row_sq_distances(matrix, vector) == [columns * (2**32 - 2) ** 2, 0]


def test_neighbour_scores_switch_to_python_integers_before_int64_overflows():
    """Scores that would pass 2**63 are summed as Python integers, exactly."""
    count = 6
    distances = np.full((count, count), 2**61, dtype=np.int64)
    np.fill_diagonal(distances, 0)
    table = _NeighbourTable(distances)
    assert table.wide
    scores = table.scores(np.ones(count, dtype=bool), list(range(count)), count - 1)
    assert scores == [(count - 1) * 2**61] * count


@given(
    matrices(1, extra=5, dimension_max=9).flatmap(
        lambda rows: st.tuples(
            st.just(rows), st.lists(VALUES, min_size=len(rows[0]), max_size=len(rows[0]))
        )
    )
)
def test_inner_products_are_exact(data):
    """x_i . v equals the big-int dot product on the float64 and the int64-limb paths."""
    rows, vector = data
    result = inner_products(np.array(rows, dtype=np.int32), np.array(vector, dtype=np.int32))
    assert result == [sum(a * b for a, b in zip(row, vector, strict=True)) for row in rows]
