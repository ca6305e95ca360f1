"""The attacks of the first robust-learning papers and their adaptive variants (definitions and
sources: the table of `qora_p2p.learning.attacks`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from qora_p2p.errors import LearningError
from qora_p2p.learning.attacks.base import Attack, RoundView, Updates, check_non_negative

__all__ = [
    "ALIE",
    "IPM",
    "AdaptiveALIE",
    "AdaptiveIPM",
    "Backdoor",
    "Copy",
    "Gaussian",
    "LabelFlip",
    "Mimic",
    "NormSignFlip",
    "Random",
    "Scaling",
    "SignFlip",
    "Stale",
    "Zero",
    "alie_z",
    "distance_after_aggregation",
]

POWER_ITERATIONS = 50  # top principal direction of at most a few hundred updates converges well before
ALIE_GRID = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
IPM_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass(frozen=True)
class SignFlip(Attack):
    name: ClassVar[str] = "sign_flip"
    scale: float = 1.0

    def forge(self, view: RoundView) -> Updates:
        return -self.scale * view.own


@dataclass(frozen=True)
class NormSignFlip(Attack):
    """``-own`` rescaled to the median norm of the honest updates (a zero own update stays zero),
    so that a norm filter or clipping sees an ordinary update."""

    name: ClassVar[str] = "norm_sign_flip"
    reads_honest: ClassVar[bool] = True

    def forge(self, view: RoundView) -> Updates:
        target = float(np.median(np.linalg.norm(view.honest, axis=1)))
        norms = np.linalg.norm(view.own, axis=1, keepdims=True)
        scale: Updates = np.divide(target, norms, out=np.zeros_like(norms), where=norms > 0)
        return -scale * view.own


@dataclass(frozen=True)
class Scaling(Attack):
    name: ClassVar[str] = "scaling"
    factor: float = 10.0

    def forge(self, view: RoundView) -> Updates:
        return self.factor * view.own


@dataclass(frozen=True)
class Gaussian(Attack):
    name: ClassVar[str] = "gaussian"
    std: float = math.sqrt(200.0)

    def __post_init__(self) -> None:
        check_non_negative(self.name, "std", self.std)

    def forge(self, view: RoundView) -> Updates:
        return view.rng.normal(0.0, self.std, size=view.own.shape)


@dataclass(frozen=True)
class Zero(Attack):
    name: ClassVar[str] = "zero"

    def forge(self, view: RoundView) -> Updates:
        return np.zeros_like(view.own)


@dataclass(frozen=True)
class Stale(Attack):
    """Free riding: the previous round's aggregate sent as this round's update (zero before the
    first aggregate)."""

    name: ClassVar[str] = "stale"

    def forge(self, view: RoundView) -> Updates:
        previous = np.zeros(view.own.shape[1]) if view.previous is None else view.previous
        return np.tile(previous, (view.own.shape[0], 1))


@dataclass(frozen=True)
class Copy(Attack):
    """Free riding: each attacker sends a copy of an honest update drawn uniformly at random."""

    name: ClassVar[str] = "copy"
    reads_honest: ClassVar[bool] = True

    def forge(self, view: RoundView) -> Updates:
        chosen = view.rng.integers(0, view.honest.shape[0], size=view.own.shape[0])
        copies: Updates = view.honest[chosen].copy()
        return copies


@dataclass(frozen=True)
class Random(Attack):
    name: ClassVar[str] = "random"
    scale: float = 10.0

    def __post_init__(self) -> None:
        check_non_negative(self.name, "scale", self.scale)

    def forge(self, view: RoundView) -> Updates:
        return view.rng.uniform(-self.scale, self.scale, size=view.own.shape)


@dataclass(frozen=True)
class LabelFlip(Attack):
    name: ClassVar[str] = "label_flip"
    poisons_data: ClassVar[bool] = True

    def poison_data(self, features, labels, classes, rng):  # type: ignore[no-untyped-def]
        return features, (classes - 1 - labels).astype(np.int64)


@dataclass(frozen=True)
class Backdoor(Attack):
    """Trigger: the last ``trigger_size`` features set to ``trigger_value`` (on digits, a bar at
    the bottom right of the 8x8 image, at full intensity)."""

    name: ClassVar[str] = "backdoor"
    poisons_data: ClassVar[bool] = True
    target: int = 0
    fraction: float = 0.5
    boost: float = 1.0
    trigger_size: int = 4
    trigger_value: float = 1.0

    def __post_init__(self) -> None:
        if self.target < 0:
            raise LearningError(f"attack 'backdoor': 'target' must be a non-negative integer, got {self.target}")
        if not 0 < self.fraction <= 1:
            raise LearningError(f"attack 'backdoor': 'fraction' must be in (0, 1], got {self.fraction}")
        if self.trigger_size < 1:
            raise LearningError(f"attack 'backdoor': 'trigger_size' must be at least 1, got {self.trigger_size}")

    def stamp(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``features`` with the trigger applied (a copy)."""
        stamped = features.copy()
        stamped[:, -self.trigger_size :] = self.trigger_value
        return stamped

    def success(self, logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float:
        """Attack success from a model's ``logits`` on stamped test samples with true ``labels``:
        the share of samples not of the target class that the model assigns to the target."""
        others = labels != self.target
        return float((logits[others].argmax(axis=1) == self.target).mean()) if others.any() else 0.0

    def poison_data(self, features, labels, classes, rng):  # type: ignore[no-untyped-def]
        if not 0 <= self.target < classes:
            raise LearningError(f"backdoor target {self.target} is not a class (0..{classes - 1})")
        chosen = rng.permutation(labels.size)[: round(self.fraction * labels.size)]
        features, labels = features.copy(), labels.copy()
        features[chosen] = self.stamp(features[chosen])
        labels[chosen] = self.target
        return features, labels

    def forge(self, view: RoundView) -> Updates:
        return self.boost * view.own


def alie_z(members: int, attackers: int) -> float:
    """Baruch et al.'s ``z_max``: the largest shift that still leaves enough honest updates beyond it
    for the attackers' vector to pass as a median."""
    supporters = math.floor(members / 2 + 1) - attackers
    probability = (members - supporters) / members
    if not 0 < probability < 1:
        raise LearningError(f"ALIE's z is undefined for n={members}, b={attackers}")
    return NormalDist().inv_cdf(probability)


def _alie(view: RoundView, z: float) -> Updates:
    mean, spread = view.honest.mean(axis=0), view.honest.std(axis=0)
    return np.tile(mean + z * spread, (view.own.shape[0], 1))


def _ipm(view: RoundView, epsilon: float) -> Updates:
    return np.tile(-epsilon * view.honest.mean(axis=0), (view.own.shape[0], 1))


@dataclass(frozen=True)
class ALIE(Attack):
    """``z=None`` uses the paper's formula; a number fixes z."""

    name: ClassVar[str] = "alie"
    reads_honest: ClassVar[bool] = True
    z: float | None = None

    def forge(self, view: RoundView) -> Updates:
        z = alie_z(view.members, view.own.shape[0]) if self.z is None else self.z
        return _alie(view, z)


@dataclass(frozen=True)
class IPM(Attack):
    name: ClassVar[str] = "ipm"
    reads_honest: ClassVar[bool] = True
    epsilon: float = 0.1

    def forge(self, view: RoundView) -> Updates:
        return _ipm(view, self.epsilon)


@dataclass(frozen=True)
class Mimic(Attack):
    name: ClassVar[str] = "mimic"
    reads_honest: ClassVar[bool] = True

    def forge(self, view: RoundView) -> Updates:
        centred = view.honest - view.honest.mean(axis=0)
        direction = np.ones(centred.shape[1]) / math.sqrt(centred.shape[1])
        for _ in range(POWER_ITERATIONS):
            image = centred.T @ (centred @ direction)
            norm = float(np.linalg.norm(image))
            if norm == 0.0:
                break
            direction = image / norm
        chosen = int(np.argmax(np.abs(centred @ direction)))
        return np.tile(view.honest[chosen], (view.own.shape[0], 1))


def distance_after_aggregation(view: RoundView, forged: Updates) -> float:
    """How far the rule's aggregate of honest + forged updates lands from the honest mean."""
    return float(np.linalg.norm(view.aggregate(forged) - view.honest.mean(axis=0)))


@dataclass(frozen=True)
class AdaptiveALIE(Attack):
    """Line search of ALIE's z over ``grid`` against the actual rule."""

    name: ClassVar[str] = "adaptive_alie"
    reads_honest: ClassVar[bool] = True
    grid: tuple[float, ...] = ALIE_GRID

    def __post_init__(self) -> None:
        if not self.grid:
            raise LearningError(f"attack {self.name!r}: 'grid' must be a non-empty list of numbers")

    def forge(self, view: RoundView) -> Updates:
        candidates = [_alie(view, z) for z in self.grid]
        return max(candidates, key=lambda forged: distance_after_aggregation(view, forged))


@dataclass(frozen=True)
class AdaptiveIPM(Attack):
    """Line search of IPM's epsilon over ``grid`` against the actual rule."""

    name: ClassVar[str] = "adaptive_ipm"
    reads_honest: ClassVar[bool] = True
    grid: tuple[float, ...] = IPM_GRID

    def __post_init__(self) -> None:
        if not self.grid:
            raise LearningError(f"attack {self.name!r}: 'grid' must be a non-empty list of numbers")

    def forge(self, view: RoundView) -> Updates:
        candidates = [_ipm(view, epsilon) for epsilon in self.grid]
        return max(candidates, key=lambda forged: distance_after_aggregation(view, forged))
