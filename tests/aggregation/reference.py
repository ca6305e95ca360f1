"""Plain Python big-integer reference of every aggregation rule, written from the documented
definitions with no numpy, no chunking, no limbs and no shortcuts. Slow, obviously right.

Rows are lists of Python ints; ``rank[i]`` is row i's canonical position. Rounding of a rational
uses Python's ``round(Fraction)``, which rounds half to even: the documented rule.
"""

from __future__ import annotations

import math
from fractions import Fraction

Row = list[int]


def mean(values: list[int], weights: list[int] | None = None) -> int:
    if weights is None:
        weights = [1] * len(values)
    return round(Fraction(sum(w * v for w, v in zip(weights, values, strict=True)), sum(weights)))


def sq_distance(left: Row, right: Row) -> int:
    return sum((a - b) ** 2 for a, b in zip(left, right, strict=True))


def columns(rows: list[Row]) -> list[list[int]]:
    return [list(column) for column in zip(*rows, strict=True)]


def fedavg(rows: list[Row], weights: list[int] | None = None) -> tuple[Row, list[int]]:
    return [mean(column, weights) for column in columns(rows)], list(range(len(rows)))


def trimmed_mean(rows: list[Row], trim: int) -> tuple[Row, list[int]]:
    count = len(rows)
    result = [mean(sorted(column)[trim : count - trim]) for column in columns(rows)]
    return result, list(range(count))


def median(rows: list[Row]) -> tuple[Row, list[int]]:
    count = len(rows)
    result = []
    for column in columns(rows):
        ordered = sorted(column)
        if count % 2:
            result.append(ordered[count // 2])
        else:
            result.append(mean([ordered[count // 2 - 1], ordered[count // 2]]))
    return result, list(range(count))


def krum_scores(rows: list[Row], members: list[int], neighbours: int) -> dict[int, int]:
    scores = {}
    for i in members:
        distances = sorted(sq_distance(rows[i], rows[j]) for j in members if j != i)
        scores[i] = sum(distances[:neighbours])
    return scores


def best(members: list[int], scores: dict[int, int], rank: list[int]) -> list[int]:
    return sorted(members, key=lambda i: (scores[i], rank[i]))


def krum(rows: list[Row], rank: list[int], f: int) -> tuple[Row, list[int]]:
    members = list(range(len(rows)))
    winner = best(members, krum_scores(rows, members, len(rows) - f - 2), rank)[0]
    return list(rows[winner]), [winner]


def multi_krum(
    rows: list[Row], rank: list[int], f: int, m: int, weights: list[int] | None = None
) -> tuple[Row, list[int]]:
    members = list(range(len(rows)))
    chosen = sorted(best(members, krum_scores(rows, members, len(rows) - f - 2), rank)[:m])
    chosen_weights = None if weights is None else [weights[i] for i in chosen]
    return fedavg([rows[i] for i in chosen], chosen_weights)[0], chosen


def bulyan_select(rows: list[Row], rank: list[int], f: int) -> list[int]:
    remaining = list(range(len(rows)))
    chosen: list[int] = []
    while len(chosen) < len(rows) - 2 * f:
        size = len(remaining)
        neighbours = min(size - 1, max(size - f - 2, 1))
        pick = best(remaining, krum_scores(rows, remaining, neighbours), rank)[0]
        chosen.append(pick)
        remaining.remove(pick)
    return sorted(chosen)


def closest_to_median(rows: list[Row], f: int) -> Row:
    theta = len(rows)
    beta = theta - 2 * f
    result = []
    for column in columns(rows):
        ordered = sorted(column)
        twice_median = ordered[(theta - 1) // 2] + ordered[theta // 2]

        def key(start: int, ordered: list[int] = ordered, twice_median: int = twice_median) -> tuple[int, int, int]:
            cost = sum(abs(2 * value - twice_median) for value in ordered[start : start + beta])
            return (cost, abs(start - f), start)

        start = min(range(2 * f + 1), key=key)
        result.append(mean(ordered[start : start + beta]))
    return result


def bulyan(rows: list[Row], rank: list[int], f: int) -> tuple[Row, list[int]]:
    chosen = bulyan_select(rows, rank, f)
    return closest_to_median([rows[i] for i in chosen], f), chosen


def centered_clipping(
    rows: list[Row],
    tau: int | None,
    iterations: int,
    center: Row | None,
    weights: list[int] | None = None,
    tau_scale: int | None = None,
    clamp: int = 0,
) -> tuple[Row, list[int]]:
    count = len(rows)
    weights = weights or [1] * count
    current = list(center) if center is not None else [0] * len(rows[0])
    for _ in range(iterations):
        if tau_scale is not None:
            distances = sorted(math.isqrt(sq_distance(row, current)) for row in rows)
            tau = max(1, min(2**31 - 1, tau_scale * distances[(count - 1) // 2] // 2**16))
        assert tau is not None, "a fixed tau or a tau_scale"
        steps = []
        for row in rows:
            difference = [x - v for x, v in zip(row, current, strict=True)]
            norm_squared = sum(d * d for d in difference)
            if norm_squared > tau * tau:
                radius = math.isqrt(norm_squared)
                radius += radius * radius < norm_squared
                difference = [round(Fraction(d * tau, radius)) for d in difference]
            steps.append(difference)
        current = [v + mean(list(column), weights) for v, column in zip(current, zip(*steps, strict=True), strict=True)]
    rank = min(clamp, (count - 1) // 2)
    if rank:
        columns = [sorted(column) for column in zip(*rows, strict=True)]
        current = [min(max(v, column[rank]), column[count - 1 - rank]) for v, column in zip(current, columns, strict=True)]
    return current, list(range(count))


def mix_nearest(rows: list[Row], rank: list[int], f: int) -> list[Row]:
    count = len(rows)
    mixed = []
    for i in range(count):
        order = sorted(range(count), key=lambda j: (sq_distance(rows[i], rows[j]), rank[j]))
        mixed.append([mean(list(column)) for column in zip(*(rows[j] for j in order[: count - f]), strict=True)])
    return mixed


def deviation(rows: list[Row], result: Row) -> list[int]:
    return [math.isqrt(sq_distance(row, result)) for row in rows]


def run(  # noqa: PLR0911 (one branch per rule, as in the dispatch it mirrors)
    rule: str, rows: list[Row], rank: list[int], weights: list[int] | None, params: dict
) -> tuple[Row, list[int]]:
    """Dispatch by rule name, mirroring `qora_p2p.aggregation.aggregate`."""
    if rule.startswith("nnm+"):
        inner = dict(params)
        f = inner["f"]
        if rule != "nnm+krum" and rule != "nnm+multi_krum" and rule != "nnm+bulyan":
            inner.pop("f")
        return run(rule[4:], mix_nearest(rows, rank, f), rank, weights, inner)
    if rule == "fedavg":
        return fedavg(rows, weights)
    if rule == "trimmed_mean":
        return trimmed_mean(rows, params["trim"])
    if rule == "median":
        return median(rows)
    if rule == "krum":
        return krum(rows, rank, params["f"])
    if rule == "multi_krum":
        return multi_krum(rows, rank, params["f"], params.get("m", len(rows) - params["f"]), weights)
    if rule == "bulyan":
        return bulyan(rows, rank, params["f"])
    if rule == "centered_clipping":
        center = params.get("center")
        return centered_clipping(
            rows,
            params.get("tau"),
            params.get("iterations", 1),
            None if center is None else [int(v) for v in center],
            weights,
            params.get("tau_scale"),
            params.get("clamp", 0),
        )
    raise ValueError(rule)
