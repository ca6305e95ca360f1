"""With up to the tolerated number of arbitrary attacker inputs, each rule keeps its documented
guarantee: median and trimmed mean stay inside the honest coordinate range; Krum, Multi-Krum and
Bulyan's selection pick honest inputs when the honest cluster is well separated."""

import math

import numpy as np
import numpy.typing as npt
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.aggregation import aggregate
from qora_p2p.fixedpoint import VALUE_MAX

ANY_VALUE = st.integers(-VALUE_MAX, VALUE_MAX)


@st.composite
def honest_and_attackers(draw, attackers_for_count):
    count = draw(st.integers(3, 15))
    attackers = attackers_for_count(count)
    dimension = draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(ANY_VALUE, min_size=dimension, max_size=dimension), min_size=count, max_size=count))
    bad = draw(st.sets(st.integers(0, count - 1), min_size=attackers, max_size=attackers))
    return np.array(rows, dtype=np.int32), sorted(bad)


def assert_inside_honest_range(matrix, bad, vector):
    honest = np.delete(matrix, bad, axis=0)
    assert (honest.min(axis=0) <= vector).all()
    assert (vector <= honest.max(axis=0)).all()


@given(honest_and_attackers(lambda count: (count - 1) // 2))
def test_median_stays_in_the_honest_range(case):
    """Fewer than half the inputs arbitrary: every coordinate is within the honest min..max."""
    matrix, bad = case
    assert_inside_honest_range(matrix, bad, aggregate("median", matrix).vector)


@given(honest_and_attackers(lambda count: (count - 1) // 2), st.data())
def test_trimmed_mean_stays_in_the_honest_range(case, data):
    """At most `trim` arbitrary inputs: every coordinate is within the honest min..max."""
    matrix, bad = case
    trim = data.draw(st.integers(len(bad), (matrix.shape[0] - 1) // 2))
    assert_inside_honest_range(matrix, bad, aggregate("trimmed_mean", matrix, trim=trim).vector)


@st.composite
def separated_clusters(draw, minimum_for_f):
    """Honest inputs within radius r of a centre; f attackers (possibly colluding on one point)
    farther than the separation that Krum's proof needs."""
    f = draw(st.integers(0, 3))
    count = draw(st.integers(minimum_for_f(f), minimum_for_f(f) + 4))
    dimension = draw(st.integers(1, 5))
    radius = draw(st.integers(0, 1000))
    centre = np.array(draw(st.lists(st.integers(-(2**20), 2**20), min_size=dimension, max_size=dimension)))
    honest = centre + np.array(
        draw(st.lists(st.lists(st.integers(-radius, radius), min_size=dimension, max_size=dimension), min_size=count - f, max_size=count - f))
    ).reshape(count - f, dimension)
    # Honest diameter <= 2 r sqrt(P); an attacker at distance > (1 + 2 sqrt(n)) * diameter from every
    # honest input scores above every honest one (scores: honest <= (n-f-2) diam^2, attacker >=
    # (n-2f-1) gap^2 with n-2f-1 >= 1).
    diameter = 2 * radius * math.isqrt(dimension) + 2 * radius + 1
    gap = (2 + 2 * math.isqrt(count)) * diameter + 1
    colluding = draw(st.booleans())
    offsets: list[npt.NDArray[np.int64]] = []
    for _ in range(f):
        if colluding and offsets:
            offsets.append(offsets[0])
            continue
        axis = draw(st.integers(0, dimension - 1))
        sign = draw(st.sampled_from([-1, 1]))
        offset = np.array(draw(st.lists(st.integers(-gap, gap), min_size=dimension, max_size=dimension)))
        offset[axis] = sign * draw(st.integers(2 * gap, 4 * gap))
        offsets.append(offset)
    attackers = centre + np.array(offsets, dtype=np.int64).reshape(f, dimension)
    rows = np.concatenate([honest, attackers]).astype(np.int32)
    order = draw(st.permutations(range(count)))
    rows = rows[list(order)]
    honest_rows = {position for position, source in enumerate(order) if source < count - f}
    return rows, honest_rows, f


@given(separated_clusters(lambda f: 2 * f + 3))
def test_krum_picks_an_honest_input(case):
    """Krum's output is one of the honest inputs, bit for bit."""
    rows, honest, f = case
    result = aggregate("krum", rows, f=f)
    assert set(result.selected) <= honest
    assert result.vector.tobytes() == rows[result.selected[0]].tobytes()


@given(separated_clusters(lambda f: 2 * f + 3))
def test_multi_krum_selects_only_honest_inputs(case):
    """With the default m = n - f, Multi-Krum averages exactly the honest inputs."""
    rows, honest, f = case
    assert set(aggregate("multi_krum", rows, f=f).selected) == honest


@given(separated_clusters(lambda f: 4 * f + 3))
def test_bulyan_output_stays_in_the_honest_range(case):
    """Bulyan's closest-to-median step keeps every coordinate inside the honest range."""
    rows, honest, f = case
    result = aggregate("bulyan", rows, f=f)
    bad = sorted(set(range(rows.shape[0])) - honest)
    assert_inside_honest_range(rows, bad, result.vector)


@given(
    honest_and_attackers(lambda count: (count - 1) // 2),
    st.data(),
)
def test_clamped_centered_clipping_stays_in_the_honest_range(case, data):
    """With ``clamp = k`` and at most ``k`` arbitrary inputs, every coordinate of centered
    clipping's result is within the honest min..max, whatever the radius and centre."""
    matrix, bad = case
    count, dimension = matrix.shape
    clamp = data.draw(st.integers(len(bad), count), label="clamp")
    center = np.array(data.draw(st.lists(ANY_VALUE, min_size=dimension, max_size=dimension)), dtype=np.int32)
    vector = aggregate("centered_clipping", matrix, tau=VALUE_MAX, center=center, clamp=clamp).vector
    assert_inside_honest_range(matrix, bad, vector)


def test_clamp_stops_colluders_pushing_a_coordinate_honest_members_leave_alone():
    """The backdoor pattern: honest members send 0 in a trigger coordinate and three colluders push
    it. Clipping alone lets them move it; ``clamp = 3`` keeps it at an honest value, and leaves
    coordinates on which the honest members agree alone."""
    rng = np.random.default_rng(5)
    matrix = rng.integers(900, 1100, size=(10, 4), dtype=np.int32)
    matrix[:, 3] = 0
    matrix[:3, 3] = 5000
    center = np.array([1000, 1000, 1000, 0], dtype=np.int32)  # the previous aggregate
    unclamped = aggregate("centered_clipping", matrix, tau_scale=1 << 16, center=center).vector
    clamped = aggregate("centered_clipping", matrix, tau_scale=1 << 16, center=center, clamp=3).vector
    assert unclamped[3] > 0  # every round, by up to 3 * tau / n
    assert clamped[3] == 0
    assert clamped[:3].tolist() == unclamped[:3].tolist()
