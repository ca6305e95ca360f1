"""Fixed-point wire format of model vectors, and the integer rounding rules used everywhere.

Theory of operation
-------------------
Every honest peer must compute the same aggregate bit for bit, on any CPU, from inputs in any order.
Floating point cannot promise that (summation order, fused multiply-add, -0.0, NaN payloads), so
vectors travel and are aggregated as integers:

* A real value ``v`` is stored as the int32 ``round_half_even(v * 2**F)`` with ``F`` fractional bits
  (Q16.16 by default; 8..24 allowed). ``v * 2**F`` is an exact float64 product (a power-of-two scale),
  so the only rounding is the one documented here, and numpy's ``rint`` is IEEE round-half-to-even on
  every platform.
* Saturation is symmetric: values beyond ``+-VALUE_MAX`` (= 2**31 - 1) become ``+-VALUE_MAX``. The
  int32 ``-2**31`` is never produced, and the wire decoder rejects it, so negation never overflows.
* NaN and infinity are not numbers a model can agree on: encoding them is an error.

Rounding rules (one per operation; aggregation and the ledger use only these):

* ``div_round``: integer division by a positive integer, rounding to nearest, ties to even.
* ``isqrt_ceil``: the smallest integer ``r`` with ``r * r >= value``; ``math.isqrt`` is the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from qora_p2p.errors import FixedPointError

__all__ = [
    "FRAC_BITS_DEFAULT",
    "FRAC_BITS_MAX",
    "FRAC_BITS_MIN",
    "VALUE_MAX",
    "Encoded",
    "decode",
    "div_round",
    "div_round_int",
    "encode",
    "from_bytes",
    "isqrt_ceil",
    "to_bytes",
    "to_fixed",
]

FRAC_BITS_MIN = 8  # coarser than 1/256 cannot represent typical learning-rate-sized steps
FRAC_BITS_MAX = 24  # finer leaves under 8 integer bits: updates of magnitude >= 128 would saturate
FRAC_BITS_DEFAULT = 16  # Q16.16: range +-32768, resolution 1.5e-5
VALUE_MAX = 2**31 - 1  # symmetric saturation bound; -2**31 is not a valid encoded value
SATURATION_INPUT_BOUND = 2.0**32  # every |value| above this saturates, whatever F is
DIVISOR_MAX = 2**62  # div_round doubles the remainder, which must stay below 2**63
FLOAT_DIVISION_EXACT_MAX = 2**52  # below this, float64 division + rint rounds exactly (div_round)

WIRE_DTYPE = np.dtype("<i4")  # little-endian int32 on every machine


class Encoded(NamedTuple):
    """Result of `encode`: the int32 values and how many of them saturated."""

    values: npt.NDArray[np.int32]
    saturated: int


def _check_frac_bits(frac_bits: int) -> None:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int | np.integer):
        raise FixedPointError(f"frac_bits must be an integer, got {type(frac_bits).__name__}")
    if not FRAC_BITS_MIN <= frac_bits <= FRAC_BITS_MAX:
        raise FixedPointError(
            f"frac_bits must be in {FRAC_BITS_MIN}..{FRAC_BITS_MAX}, got {frac_bits}"
        )


def encode(array: npt.ArrayLike, frac_bits: int = FRAC_BITS_DEFAULT) -> Encoded:
    """Encode real values as fixed-point int32.

    Args:
        array: real values of any shape (float or integer dtype).
        frac_bits: number of fractional bits ``F``.

    Returns:
        ``Encoded(values, saturated)``: int32 array of the input's shape, rounded half to even and
        saturated to ``+-VALUE_MAX``; ``saturated`` counts the values that hit the bound.

    Raises:
        FixedPointError: ``frac_bits`` out of range, a non-real dtype, or a NaN or infinite value.
    """
    _check_frac_bits(frac_bits)
    source = np.asarray(array)
    if source.dtype.kind not in "fiub":
        raise FixedPointError(f"cannot encode values of dtype {source.dtype}: real numbers only")
    # Integers above 2**53 round in this conversion, but every such value saturates anyway
    # (F >= 8 puts the saturation point below 2**23), so the result is still exact.
    values = source.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite.ravel())
        raise FixedPointError(
            f"cannot encode {bad.size} non-finite value(s) (NaN or infinity); "
            f"first at flat index {int(bad[0])}"
        )
    # Anything beyond 2**32 saturates at any F; clipping first keeps ldexp (an exact power-of-two
    # scale) far from float64 overflow.
    bounded = np.clip(values, -SATURATION_INPUT_BOUND, SATURATION_INPUT_BOUND)
    scaled = np.rint(np.ldexp(bounded, frac_bits))
    saturated = int(np.count_nonzero(np.abs(scaled) > VALUE_MAX))
    np.clip(scaled, -VALUE_MAX, VALUE_MAX, out=scaled)
    return Encoded(scaled.astype(np.int32), saturated)


def decode(values: npt.ArrayLike, frac_bits: int = FRAC_BITS_DEFAULT) -> npt.NDArray[np.float64]:
    """Decode fixed-point integers to float64 (exact: every int32 / 2**F is a float64).

    Raises:
        FixedPointError: ``frac_bits`` out of range or a non-integer dtype.
    """
    _check_frac_bits(frac_bits)
    source = np.asarray(values)
    if source.dtype.kind not in "iu":
        raise FixedPointError(f"cannot decode values of dtype {source.dtype}: integers only")
    return np.ldexp(source.astype(np.float64), -frac_bits)


def to_fixed(value: float, frac_bits: int = FRAC_BITS_DEFAULT) -> int:
    """Encode one real parameter (a clipping radius, say) as a fixed-point Python int.

    Unlike `encode`, a value that would saturate is an error: a parameter must be representable.

    Raises:
        FixedPointError: non-finite, out of range, or ``frac_bits`` out of range.
    """
    encoded = encode(np.array([value], dtype=np.float64), frac_bits)
    if encoded.saturated:
        raise FixedPointError(
            f"{value!r} does not fit the fixed-point range +-{VALUE_MAX / 2**frac_bits:g} "
            f"with {frac_bits} fractional bits"
        )
    return int(encoded.values[0])


def to_bytes(values: npt.NDArray[np.int32]) -> bytes:
    """Serialise an int32 vector to its wire bytes (little-endian int32)."""
    if values.dtype != np.int32 or values.ndim != 1:
        raise FixedPointError(f"expected a 1-D int32 vector, got {values.ndim}-D {values.dtype}")
    return values.astype(WIRE_DTYPE, copy=False).tobytes()


def from_bytes(data: bytes, length: int) -> npt.NDArray[np.int32]:
    """Parse wire bytes into an int32 vector of exactly ``length`` values.

    Raises:
        FixedPointError: wrong byte count, or the value -2**31, which `encode` never produces.
    """
    if len(data) != 4 * length:
        raise FixedPointError(f"vector of {length} values needs {4 * length} bytes, got {len(data)}")
    values = np.frombuffer(data, dtype=WIRE_DTYPE).astype(np.int32)
    if length and int(values.min()) < -VALUE_MAX:
        raise FixedPointError("vector holds -2**31, which is outside the symmetric range")
    return values


def check_vector(data: bytes, length: int) -> None:
    """Raise exactly what `from_bytes` would for ``data``, without making the vector (no copy).

    Raises:
        FixedPointError: wrong byte count, or the value -2**31.
    """
    if len(data) != 4 * length:
        raise FixedPointError(f"vector of {length} values needs {4 * length} bytes, got {len(data)}")
    if length and int(np.frombuffer(data, dtype=WIRE_DTYPE).min()) < -VALUE_MAX:
        raise FixedPointError("vector holds -2**31, which is outside the symmetric range")


def stack_vectors(rows: Sequence[bytes], length: int) -> npt.NDArray[np.int32]:
    """The rows' wire bytes as one ``len(rows) x length`` int32 matrix, each byte copied once
    (`from_bytes` per row and then `np.stack` copy every value twice).

    Raises:
        FixedPointError: a row `from_bytes` refuses (the error names one such row).
    """
    matrix = np.empty((len(rows), length), dtype=np.int32)
    for index, data in enumerate(rows):
        if len(data) != 4 * length:
            raise FixedPointError(f"row {index}: vector of {length} values needs {4 * length} bytes, got {len(data)}")
        matrix[index] = np.frombuffer(data, dtype=WIRE_DTYPE)
    if matrix.size and int(matrix.min()) < -VALUE_MAX:
        first = int(np.flatnonzero((matrix < -VALUE_MAX).any(axis=1))[0])
        raise FixedPointError(f"row {first}: vector holds -2**31, which is outside the symmetric range")
    return matrix


def _check_divisor(denominator: int) -> None:
    if not 0 < denominator <= DIVISOR_MAX:
        raise FixedPointError(f"divisor must be in 1..2**62, got {denominator}")


def div_round(
    numerator: npt.NDArray[np.int64],
    denominator: int | npt.NDArray[np.int64],
    *,
    magnitude_max: int | None = None,
) -> npt.NDArray[np.int64]:
    """Elementwise ``numerator / denominator`` rounded to nearest, ties to even, exactly.

    Two exact paths. When every ``|numerator| < 2**52``, float64 division then ``rint`` is exact:
    the numerator and divisor convert exactly, IEEE-754 division is correctly rounded (error at most
    ``|q| * 2**-53 < 1 / (2d)``), and a true quotient is either a half-integer (then exactly
    representable and rounded to even by ``rint``) or at least ``1 / (2d)`` away from one, so the
    error can never carry it across. Otherwise floor division and the remainder decide in int64.

    Args:
        numerator: int64 array.
        denominator: positive integer (or int64 array broadcasting against ``numerator``), at most
            2**62 so that twice a remainder fits in int64.
        magnitude_max: a bound the caller guarantees on ``|numerator|``; saves a scan for the
            float64 path's precondition.
    """
    if isinstance(denominator, np.ndarray):
        if denominator.size and (int(denominator.min()) <= 0 or int(denominator.max()) > DIVISOR_MAX):
            raise FixedPointError("divisors must be in 1..2**62")
        divisor: int | npt.NDArray[np.int64] = denominator.astype(np.int64, copy=False)
    else:
        _check_divisor(int(denominator))
        divisor = int(denominator)
        if divisor == 1:
            return numerator.astype(np.int64, copy=True)
    values = numerator.astype(np.int64, copy=False)
    if magnitude_max is None and values.size:
        magnitude_max = max(int(values.max()), -int(values.min()))
    if (magnitude_max or 0) < FLOAT_DIVISION_EXACT_MAX:
        rounded = np.rint(values.astype(np.float64) / divisor)
        return rounded.astype(np.int64)
    quotient = values // divisor
    remainder = values - quotient * divisor  # 0 <= remainder < divisor
    twice = remainder << 1
    round_up = (twice > divisor) | ((twice == divisor) & ((quotient & 1) == 1))
    quotient += round_up
    return quotient


def div_round_int(numerator: int, denominator: int) -> int:
    """`div_round` for Python integers of any size (the reference the vector version must match)."""
    if denominator <= 0:
        raise FixedPointError(f"divisor must be positive, got {denominator}")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def isqrt_ceil(value: int) -> int:
    """The smallest non-negative integer ``r`` with ``r * r >= value`` (value >= 0)."""
    if value < 0:
        raise FixedPointError(f"square root of a negative value {value}")
    root = math.isqrt(value)
    return root if root * root == value else root + 1
