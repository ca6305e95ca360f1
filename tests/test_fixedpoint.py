"""Fixed-point encoding: exact rounding, symmetric saturation, typed errors."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p import fixedpoint
from qora_p2p.errors import FixedPointError
from qora_p2p.fixedpoint import (
    VALUE_MAX,
    decode,
    div_round,
    div_round_int,
    encode,
    from_bytes,
    isqrt_ceil,
    to_bytes,
    to_fixed,
)

FRAC_BITS = st.integers(fixedpoint.FRAC_BITS_MIN, fixedpoint.FRAC_BITS_MAX)


def reference_encode(value: float, frac_bits: int) -> tuple[int, bool]:
    """Exact rational rounding (Python's round is half-to-even on Fractions), then saturation."""
    rounded = round(Fraction(value) * 2**frac_bits)
    return max(-VALUE_MAX, min(VALUE_MAX, rounded)), abs(rounded) > VALUE_MAX


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20), FRAC_BITS)
def test_encode_matches_exact_rational_rounding(values, frac_bits):
    """Every finite float encodes to the exactly rounded, saturated value, and saturation is counted."""
    encoded = encode(np.array(values, dtype=np.float64), frac_bits)
    expected = [reference_encode(value, frac_bits) for value in values]
    assert encoded.values.dtype == np.int32
    assert encoded.values.tolist() == [value for value, _ in expected]
    assert encoded.saturated == sum(saturated for _, saturated in expected)


def test_ties_round_to_even():
    """Half-way cases go to the even neighbour, in both signs."""
    ulp = 2.0**-16
    values = [0.5 * ulp, 1.5 * ulp, 2.5 * ulp, -0.5 * ulp, -1.5 * ulp, -2.5 * ulp]
    assert encode(values, 16).values.tolist() == [0, 2, 2, 0, -2, -2]


def test_saturation_is_symmetric_and_counted():
    """Out-of-range values clip to +-(2**31 - 1), never to -2**31."""
    encoded = encode([1e300, -1e300, 40000.0, -40000.0, 1.0], 16)
    assert encoded.values.tolist() == [VALUE_MAX, -VALUE_MAX, VALUE_MAX, -VALUE_MAX, 65536]
    assert encoded.saturated == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(bad):
    """NaN and infinity are errors that say how many and where."""
    with pytest.raises(FixedPointError, match=r"non-finite.*index 2"):
        encode([0.0, 1.0, bad], 16)


@pytest.mark.parametrize("frac_bits", [7, 25, 16.0, True])
def test_frac_bits_out_of_range_is_rejected(frac_bits):
    """Only integer fractional-bit counts in 8..24 are accepted."""
    with pytest.raises(FixedPointError, match="frac_bits"):
        encode([1.0], frac_bits)


def test_non_real_dtype_is_rejected():
    """Complex and string input cannot be encoded."""
    with pytest.raises(FixedPointError, match="dtype"):
        encode(np.array([1 + 2j]), 16)


@given(st.lists(st.integers(-VALUE_MAX, VALUE_MAX), max_size=20), FRAC_BITS)
def test_decode_then_encode_is_identity(values, frac_bits):
    """Decoding is exact, so re-encoding gives back the same integers."""
    array = np.array(values, dtype=np.int32)
    assert encode(decode(array, frac_bits), frac_bits).values.tolist() == values


def test_to_fixed_rejects_unrepresentable_parameter():
    """A parameter that would saturate is an error, not a silently clipped value."""
    assert to_fixed(1.5, 16) == 98304
    with pytest.raises(FixedPointError, match="does not fit"):
        to_fixed(1e6, 16)


@given(st.lists(st.integers(-VALUE_MAX, VALUE_MAX), max_size=50))
def test_wire_bytes_round_trip(values):
    """Vectors serialise to little-endian int32 and parse back unchanged."""
    array = np.array(values, dtype=np.int32)
    data = to_bytes(array)
    assert data == b"".join(value.to_bytes(4, "little", signed=True) for value in values)
    assert from_bytes(data, len(values)).tolist() == values


def test_wire_parse_rejects_wrong_size_and_minimum_int32():
    """A payload of the wrong length or holding -2**31 is invalid."""
    with pytest.raises(FixedPointError, match="needs 8 bytes"):
        from_bytes(b"\x00" * 7, 2)
    with pytest.raises(FixedPointError, match="-2\\*\\*31"):
        from_bytes((-(2**31)).to_bytes(4, "little", signed=True), 1)


@given(
    st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=30),
    st.integers(1, 2**62),
)
def test_div_round_matches_half_even_rational_rounding(numerators, denominator):
    """The vector division equals exact rational rounding, ties to even."""
    result = div_round(np.array(numerators, dtype=np.int64), denominator)
    expected = [round(Fraction(value, denominator)) for value in numerators]
    assert result.tolist() == expected
    assert [div_round_int(value, denominator) for value in numerators] == expected


def test_div_round_rejects_bad_divisors():
    """Zero, negative and over-large divisors are errors."""
    for divisor in (0, -3, 2**62 + 1):
        with pytest.raises(FixedPointError):
            div_round(np.array([1], dtype=np.int64), divisor)


@given(st.integers(0, 2**200))
def test_isqrt_ceil_is_the_smallest_root(value):
    """isqrt_ceil(v) is the least r with r*r >= v."""
    root = isqrt_ceil(value)
    assert root * root >= value
    assert root == 0 or (root - 1) ** 2 < value


@given(
    st.lists(
        st.one_of(st.integers(-(2**52) + 1, 2**52 - 1), st.integers(-(2**62), 2**62)),
        min_size=1,
        max_size=30,
    ),
    st.one_of(st.integers(1, 4096), st.integers(1, 2**62)),
)
def test_div_round_float_and_integer_paths_agree_with_rationals(numerators, denominator):
    """Numerators below 2**52 take the float64 path, larger ones the integer path; both are exact,
    including ties such as (2k + 1) / 2 and near-ties one unit away."""
    near_ties = [denominator * k + denominator // 2 + delta for k in (-3, 0, 5) for delta in (-1, 0, 1)]
    values = [v for v in numerators + near_ties if abs(v) <= 2**62]
    result = div_round(np.array(values, dtype=np.int64), denominator)
    assert result.tolist() == [round(Fraction(value, denominator)) for value in values]
    small = [v for v in values if abs(v) < 2**52]
    hinted = div_round(np.array(small, dtype=np.int64), denominator, magnitude_max=2**52 - 1)
    assert hinted.tolist() == [round(Fraction(value, denominator)) for value in small]


_wire_rows = st.lists(
    st.lists(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31) + 1, -(2**31), 12345]), min_size=3, max_size=3).map(
        lambda values: np.array(values, dtype="<i4").tobytes()
    )
    | st.binary(max_size=16),
    min_size=1,
    max_size=4,
)


@given(_wire_rows)
def test_check_vector_and_stack_vectors_refuse_exactly_what_from_bytes_refuses(rows):
    """The copy-free check and the one-copy matrix agree with `from_bytes` row by row: the same
    verdict for every row, the same values when all rows are valid."""
    verdicts = []
    for data in rows:
        try:
            fixedpoint.from_bytes(data, 3)
            verdicts.append(True)
        except FixedPointError:
            verdicts.append(False)
        try:
            fixedpoint.check_vector(data, 3)
            assert verdicts[-1]
        except FixedPointError:
            assert not verdicts[-1]
    if all(verdicts):
        matrix = fixedpoint.stack_vectors(rows, 3)
        assert matrix.dtype == np.int32
        assert np.array_equal(matrix, np.stack([fixedpoint.from_bytes(data, 3) for data in rows]))
    else:
        with pytest.raises(FixedPointError, match=r"^row \d+: ") as refused:
            fixedpoint.stack_vectors(rows, 3)
        named = int(str(refused.value).split(":")[0].removeprefix("row "))
        assert not verdicts[named]  # the row named is one that from_bytes refuses
