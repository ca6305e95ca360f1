"""Attacks that solve for their forgery against the honest updates or the rule: min-max and
min-sum (Shejwalkar and Houmansadr 2021), Fang et al.'s full-knowledge attacks on trimmed mean,
median and Krum (2020), and ALIE/IPM with the factor found by ByzFL's line maximisation. Definitions and
sources: the table of `qora_p2p.learning.attacks`.

Updates are model deltas (minus a learning rate times a gradient). Where a paper perturbs
gradients, the same forgery on deltas is stated in delta terms: a perturbation along ``-mu``
(unit vector, sign) keeps its sign, one along the gradients' ``-sigma`` is ``+sigma`` on deltas.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qora_p2p.errors import LearningError
from qora_p2p.learning.attacks.base import Attack, RoundView, Updates
from qora_p2p.learning.attacks.classic import distance_after_aggregation

__all__ = ["PERTURBATIONS", "Fang", "FangKrum", "MinMax", "MinSum", "OptimalALIE", "OptimalIPM", "line_maximise", "perturbation"]

PERTURBATIONS = ("unit", "std", "sign")  # min-max/min-sum directions: -mu/||mu||, +sigma (deltas), -sign(mu)
GAMMA_STEPS_MAX = 200  # binary-search halvings: gamma_init / 2**200 is below any float tolerance
LINE_EVALUATIONS_MAX = 1000  # rule evaluations of one line maximisation (each aggregates every row)


def perturbation(honest: Updates, kind: str) -> Updates:
    """The direction min-max and min-sum push the honest mean along (delta space):
    ``unit`` = ``-mu / ||mu||``, ``std`` = ``sigma`` (the paper's ``-sigma`` on gradients),
    ``sign`` = ``-sign(mu)``; zero where ``mu`` is zero.

    Raises:
        LearningError: an unknown kind.
    """
    mean: Updates = honest.mean(axis=0)
    if kind == "unit":
        norm = float(np.linalg.norm(mean))
        return -mean / norm if norm > 0 else np.zeros_like(mean)
    if kind == "std":
        spread: Updates = honest.std(axis=0)
        return spread
    if kind == "sign":
        signs: Updates = -np.sign(mean)
        return signs
    raise LearningError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got {kind!r}")


def _squared_distances(left: Updates, right: Updates) -> Updates:
    """(len(left), len(right)) squared Euclidean distances."""
    squared = (left**2).sum(axis=1)[:, None] + (right**2).sum(axis=1)[None, :] - 2.0 * left @ right.T
    clipped: Updates = np.maximum(squared, 0.0)  # rounding may leave a tiny negative
    return clipped


def _largest_gamma(accepts: Callable[[float], bool], gamma_init: float, tolerance: float) -> float:
    """The paper's search (Shejwalkar and Houmansadr 2021, Algorithm 1): start at ``gamma_init``,
    step up after an accepted gamma and down after a refused one, halving the step (from
    ``gamma_init / 2``) until the last accepted and the current gamma are ``tolerance`` apart.
    Returns the last accepted gamma (0 when none is)."""
    gamma, step, accepted = gamma_init, gamma_init / 2, 0.0
    for _ in range(GAMMA_STEPS_MAX):
        if abs(accepted - gamma) <= tolerance:
            break
        if accepts(gamma):
            accepted, gamma = gamma, gamma + step
        else:
            gamma -= step
        step /= 2
    return accepted


@dataclass(frozen=True)
class _MinMaxFamily(Attack):
    reads_honest: ClassVar[bool] = True
    perturbation: str = "unit"
    gamma_init: float = 10.0
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        if self.perturbation not in PERTURBATIONS:
            raise LearningError(f"attack {self.name!r}: 'perturbation' must be one of {', '.join(PERTURBATIONS)}, got {self.perturbation!r}")
        if not self.gamma_init > 0 or not self.tolerance > 0:
            raise LearningError(f"attack {self.name!r}: 'gamma_init' and 'tolerance' must be positive")

    def accepts(self, honest: Updates, forged: Updates) -> bool:
        raise NotImplementedError

    def forge(self, view: RoundView) -> Updates:
        mean, direction = view.honest.mean(axis=0), perturbation(view.honest, self.perturbation)
        gamma = _largest_gamma(lambda gamma: self.accepts(view.honest, mean + gamma * direction), self.gamma_init, self.tolerance)
        return np.tile(mean + gamma * direction, (view.own.shape[0], 1))


@dataclass(frozen=True)
class MinMax(_MinMaxFamily):
    """``mu + gamma * p``, gamma the largest for which the forgery's farthest honest update is no
    farther than the two farthest-apart honest updates are from each other."""

    name: ClassVar[str] = "min_max"

    def accepts(self, honest: Updates, forged: Updates) -> bool:
        reach = _squared_distances(forged[None, :], honest).max()
        return bool(reach <= _squared_distances(honest, honest).max())


@dataclass(frozen=True)
class MinSum(_MinMaxFamily):
    """``mu + gamma * p``, gamma the largest for which the forgery's sum of squared distances to
    the honest updates is no more than the largest such sum of an honest update."""

    name: ClassVar[str] = "min_sum"

    def accepts(self, honest: Updates, forged: Updates) -> bool:
        total = _squared_distances(forged[None, :], honest).sum()
        return bool(total <= _squared_distances(honest, honest).sum(axis=1).max())


@dataclass(frozen=True)
class Fang(Attack):
    """Fang et al.'s full-knowledge attack on trimmed mean and median, on updates: per coordinate,
    against the honest mean's sign ``s``, each attacker sends a value drawn uniformly just beyond
    the honest extreme on the other side: for ``s >= 0`` in ``[min / spread, min]`` when the
    honest minimum is positive, else ``[spread * min, min]``; for ``s < 0`` in ``[max, spread *
    max]`` when the maximum is positive, else ``[max, max / spread]`` (the paper's ``b`` is
    ``spread``)."""

    name: ClassVar[str] = "fang"
    reads_honest: ClassVar[bool] = True
    spread: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spread) and self.spread > 1):
            raise LearningError(f"attack 'fang': 'spread' must be a number above 1, got {self.spread}")

    def bounds(self, honest: Updates) -> tuple[Updates, Updates]:
        """Per coordinate, the (low, high) interval the forged values are drawn from."""
        rising = honest.mean(axis=0) >= 0
        smallest, largest = honest.min(axis=0), honest.max(axis=0)
        below = np.where(smallest > 0, smallest / self.spread, smallest * self.spread)
        above = np.where(largest > 0, largest * self.spread, largest / self.spread)
        return np.where(rising, below, largest), np.where(rising, smallest, above)

    def forge(self, view: RoundView) -> Updates:
        low, high = self.bounds(view.honest)
        return view.rng.uniform(low, high, size=view.own.shape)


@dataclass(frozen=True)
class FangKrum(Attack):
    """Fang et al.'s full-knowledge attack on Krum, on updates: the first attacker sends
    ``mu - lam * sign(mu)``, the others the same within ``epsilon`` (uniform per coordinate), so
    that Krum, which picks the update closest to its neighbours, picks the crafted one. ``lam``
    starts at the paper's upper bound, ``(1 / ((m - 2c - 1) sqrt(d))) min_i sum_{l in G_i}
    ||w_l - w_i|| + max_i ||w_i - mu|| / sqrt(d)`` over honest ``w_i`` with ``G_i`` their
    ``m - c - 2`` nearest honest neighbours (the first term only when ``m - 2c - 1 > 0``), and is
    halved until the rule in force returns one of the forged updates, or it falls below
    ``threshold``; the paper's ``mu`` is the before-attack aggregate, here the honest mean."""

    name: ClassVar[str] = "fang_krum"
    reads_honest: ClassVar[bool] = True
    epsilon: float = 1e-4
    threshold: float = 1e-4  # above the 2**-16 resolution updates travel in, so "picked" is never a rounding tie

    def __post_init__(self) -> None:
        for field_name in ("epsilon", "threshold"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value > 0):
                raise LearningError(f"attack 'fang_krum': {field_name!r} must be a positive number, got {value}")

    def upper_bound(self, honest: Updates, attackers: int) -> float:
        """The paper's starting ``lam`` for ``attackers`` attackers among ``len(honest) + attackers``."""
        count, dimension = honest.shape
        members = count + attackers
        mean = honest.mean(axis=0)
        bound = float(np.linalg.norm(honest - mean, axis=1).max()) / math.sqrt(dimension)
        neighbours = members - attackers - 2
        if members - 2 * attackers - 1 > 0 and 0 < neighbours < count:
            pairwise = np.linalg.norm(honest[:, None, :] - honest[None, :, :], axis=2)
            nearest = np.sort(pairwise, axis=1)[:, 1 : neighbours + 1].sum(axis=1)
            bound += float(nearest.min()) / ((members - 2 * attackers - 1) * math.sqrt(dimension))
        return bound

    def forge(self, view: RoundView) -> Updates:
        direction = np.sign(view.honest.mean(axis=0))
        mean = view.honest.mean(axis=0)
        attackers = len(view.own)
        lam = self.upper_bound(view.honest, attackers)
        noise = view.rng.uniform(-self.epsilon, self.epsilon, size=(attackers - 1, mean.size))
        resolution = 2.0 ** -view.frac_bits
        while True:
            crafted = mean - lam * direction
            forged: Updates = np.vstack([crafted, crafted + noise])
            if lam < self.threshold or np.abs(forged - view.aggregate(forged)).max(axis=1).min() <= 2 * resolution:
                return forged  # the rule returned one of the forged updates
            lam /= 2


def line_maximise(objective: Callable[[float], float], start: float, step: float, ratio: float, evaluations: int) -> float:
    """ByzFL's best-effort arg-max of ``objective`` along a line, in at most ``evaluations``
    calls. Expansion: from ``start``, step forward, doubling the step while the objective grows;
    the first step that does not improve ends it and shrinks the step by ``ratio``. Contraction:
    try one step forward and one back from the best point so far, then shrink the step by
    ``ratio``, until the evaluations are spent. Returns the best point evaluated.

    Raises:
        LearningError: ``evaluations`` outside 1..LINE_EVALUATIONS_MAX, a zero step or a ratio
            outside (0.5, 1).
    """
    if not 1 <= evaluations <= LINE_EVALUATIONS_MAX or step == 0 or not 0.5 < ratio < 1:
        raise LearningError(f"line_maximise needs 1..{LINE_EVALUATIONS_MAX} evaluations, a non-zero step and a ratio in (0.5, 1)")
    best, best_value = start, objective(start)
    left = evaluations - 1
    while left > 0:  # expansion
        candidate = best + step
        value, left = objective(candidate), left - 1
        if value > best_value:
            best, best_value, step = candidate, value, step * 2
        else:
            step *= ratio
            break
    while left > 0:  # contraction
        for candidate in (best + step, best - step)[: min(left, 2)]:
            value, left = objective(candidate), left - 1
            if value > best_value:
                best, best_value = candidate, value
                break
        step *= ratio
    return best


@dataclass(frozen=True)
class _LineSearched(Attack):
    reads_honest: ClassVar[bool] = True
    evaluations: int = 20
    start: float = 0.0
    step: float = 10.0
    ratio: float = 0.8

    def __post_init__(self) -> None:
        if not 1 <= self.evaluations <= LINE_EVALUATIONS_MAX or self.step == 0 or not 0.5 < self.ratio < 1:
            raise LearningError(f"attack {self.name!r}: 'evaluations' must be in 1..{LINE_EVALUATIONS_MAX}, 'step' non-zero, 'ratio' in (0.5, 1)")

    def candidate(self, view: RoundView, factor: float) -> Updates:
        raise NotImplementedError

    def factor(self, view: RoundView) -> float:
        """The factor the line maximisation settles on for this round."""
        return line_maximise(
            lambda factor: distance_after_aggregation(view, self.candidate(view, factor)), self.start, self.step, self.ratio, self.evaluations
        )

    def forge(self, view: RoundView) -> Updates:
        return self.candidate(view, self.factor(view))


@dataclass(frozen=True)
class OptimalALIE(_LineSearched):
    """ALIE's ``mu + z * sigma`` with the z `line_maximise` finds that moves the rule's aggregate
    farthest from ``mu``."""

    name: ClassVar[str] = "optimal_alie"

    def candidate(self, view: RoundView, factor: float) -> Updates:
        mean, spread = view.honest.mean(axis=0), view.honest.std(axis=0)
        return np.tile(mean + factor * spread, (view.own.shape[0], 1))


@dataclass(frozen=True)
class OptimalIPM(_LineSearched):
    """IPM's ``-epsilon * mu`` with the epsilon `line_maximise` finds the same way."""

    name: ClassVar[str] = "optimal_ipm"

    def candidate(self, view: RoundView, factor: float) -> Updates:
        return np.tile(-factor * view.honest.mean(axis=0), (view.own.shape[0], 1))
