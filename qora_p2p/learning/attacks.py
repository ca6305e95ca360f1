"""Byzantine behaviours from the robust-learning literature.

Theory of operation
-------------------
Attackers collude and are omniscient, as in the papers: each round they see every honest update
before sending theirs (a `RoundView`), and the adaptive ones know the aggregation rule as the
protocol runs it (`qora_p2p.protocol.state.compute_round`): the genesis rule's fixed-point
parameters, the previous round's aggregate as the centre when the genesis centres on it, and the
reputation weights of every input when the rule is weighted (`rule_in_force`). An attack acts at
one of two points:

* **data poisoning** changes the attacker's training data before it trains (label flipping,
  backdoor); its update is then computed honestly from the poisoned data;
* **model poisoning** replaces the update with a forged vector (everything else).

Definitions (updates are model deltas, i.e. minus a learning rate times a gradient; ``mu`` and
``sigma`` are the coordinate-wise mean and standard deviation of the round's honest updates, ``n``
the number of members and ``b`` the number of attackers):

==============  ==================================================================  ==========
attack          update sent                                                         source
==============  ==================================================================  ==========
sign_flip       ``-scale * own``                                  (scale 1)         Allouah et al. 2023
scaling         ``factor * own``                                  (factor 10)       Bagdasaryan et al. 2020
gaussian        ``N(0, std**2)`` per coordinate                   (std sqrt(200))   Blanchard et al. 2017
zero            ``0``                                                               ByzFL
random          ``U(-scale, scale)`` per coordinate               (scale 10)        ByzFL
label_flip      train on labels ``classes - 1 - y``                                  Allouah et al. 2023
backdoor        train with a trigger on ``fraction`` of samples, relabelled         Gu et al. 2017;
                ``target``; update times ``boost``    (target 0, fraction 0.5, 1)   Bagdasaryan et al.
alie            ``mu + z * sigma``; z from ``s = floor(n/2 + 1) - b``,               Baruch et al. 2019
                ``z = Phi^-1((n - s) / n)``, or a fixed ``z``
ipm             ``-epsilon * mu``                                 (epsilon 0.1)     Xie et al. 2019
mimic           a copy of the honest update farthest along the honest updates'      Karimireddy et al.
                top principal direction                                             2022
adaptive_alie   ALIE with the ``z`` from a grid that moves the rule's aggregate     Shejwalkar and
                farthest from ``mu`` (the attack runs the rule itself)              Houmansadr 2021
adaptive_ipm    IPM with ``epsilon`` chosen the same way                            (same)
==============  ==================================================================  ==========

ALIE's ``mu + z sigma`` on deltas is the paper's ``mu - z sigma`` on gradients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation import aggregate
from qora_p2p.errors import LearningError
from qora_p2p.fixedpoint import decode, encode
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.state import AgreedState, eligible_members

__all__ = ["ATTACKS", "Attack", "RoundView", "alie_z", "build_attack", "round_view", "rule_in_force"]

Updates = npt.NDArray[np.float64]
POWER_ITERATIONS = 50  # top principal direction of at most a few hundred updates converges well before
ALIE_GRID = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
IPM_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass(frozen=True, slots=True)
class RoundView:
    """What the colluding attackers know when they forge this round's updates.

    Attributes:
        honest: (h, P) the round's honest updates.
        own: (b, P) the updates the attackers computed on their own (possibly poisoned) data.
        members: n, attackers included.
        rule, rule_params: the aggregation in force (adaptive attacks run it): fixed-point
            parameters of `aggregate`, with ``center`` when the rule is centred on the previous
            aggregate (`rule_in_force`).
        frac_bits: the fixed-point format the updates travel in.
        rng: the attackers' shared random stream.
        honest_weights, own_weights: the Q16 reputation weights the rule gives each honest row
            and each forged row, when the rule is weighted; both None otherwise.
    """

    honest: Updates
    own: Updates
    members: int
    rule: str
    rule_params: Mapping[str, Any]
    frac_bits: int
    rng: np.random.Generator
    honest_weights: tuple[int, ...] | None = None
    own_weights: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.honest_weights is None) != (self.own_weights is None):
            raise LearningError("a round view weighs both its honest and its forged rows, or neither")
        honest_mismatch = self.honest_weights is not None and len(self.honest_weights) != len(self.honest)
        if honest_mismatch or (self.own_weights is not None and len(self.own_weights) != len(self.own)):
            raise LearningError("a round view needs one weight per honest row and one per forged row")

    def rule_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `aggregate` for the rows ``honest`` followed by the forged
        updates (one per row of ``own``), weights included."""
        arguments = dict(self.rule_params)
        if self.honest_weights is not None and self.own_weights is not None:
            arguments["weights"] = [*self.honest_weights, *self.own_weights]
        return arguments


def round_view(
    genesis: Genesis,
    state: AgreedState,
    honest_members: Sequence[int],
    honest: Updates,
    attacker_members: Sequence[int],
    own: Updates,
    rng: np.random.Generator,
) -> RoundView:
    """The view of the round after ``state``: rows ``honest`` sent by ``honest_members`` and rows
    ``own`` by ``attacker_members`` (in row order), each row at its own member's reputation weight
    when the rule is weighted, against the rule `rule_in_force`.

    Raises:
        LearningError: not one member per row.
    """
    if len(honest_members) != len(honest) or len(attacker_members) != len(own):
        raise LearningError("a round view needs one member per honest row and one per forged row")
    honest_weights = own_weights = None
    if genesis.weighted:
        assert state.ledger is not None and genesis.ledger is not None
        honest_weights = tuple(state.ledger.weights(honest_members, genesis.ledger))
        own_weights = tuple(state.ledger.weights(attacker_members, genesis.ledger))
    inputs = len(eligible_members(genesis, state, state.round + 1))  # ALIE's n: the members the rule aggregates
    return RoundView(honest, own, inputs, genesis.rule, rule_in_force(genesis, state), genesis.frac_bits, rng, honest_weights, own_weights)


def rule_in_force(genesis: Genesis, state: AgreedState) -> dict[str, Any]:
    """The fixed-point parameters `compute_round` aggregates the round after ``state`` with, the
    previous aggregate as ``center`` when the genesis centres on it (weights apart: they are per
    input, see `RoundView`)."""
    params = genesis.fixed_rule_params()
    if genesis.centered_on_previous:
        params["center"] = state.aggregate
    return params


@dataclass(frozen=True)
class Attack:
    """A Byzantine behaviour; subclasses override `poison_data` or `forge`."""

    name: ClassVar[str] = "none"
    poisons_data: ClassVar[bool] = False

    def poison_data(
        self, features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], classes: int, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """The training data the attacker uses (unchanged unless the attack poisons data)."""
        return features, labels

    def forge(self, view: RoundView) -> Updates:
        """The (b, P) updates the attackers send."""
        return view.own


@dataclass(frozen=True)
class SignFlip(Attack):
    name: ClassVar[str] = "sign_flip"
    scale: float = 1.0

    def forge(self, view: RoundView) -> Updates:
        return -self.scale * view.own


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

    def forge(self, view: RoundView) -> Updates:
        return view.rng.normal(0.0, self.std, size=view.own.shape)


@dataclass(frozen=True)
class Zero(Attack):
    name: ClassVar[str] = "zero"

    def forge(self, view: RoundView) -> Updates:
        return np.zeros_like(view.own)


@dataclass(frozen=True)
class Random(Attack):
    name: ClassVar[str] = "random"
    scale: float = 10.0

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

    def stamp(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``features`` with the trigger applied (a copy)."""
        stamped = features.copy()
        stamped[:, -self.trigger_size :] = self.trigger_value
        return stamped

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
    z: float | None = None

    def forge(self, view: RoundView) -> Updates:
        z = alie_z(view.members, view.own.shape[0]) if self.z is None else self.z
        return _alie(view, z)


@dataclass(frozen=True)
class IPM(Attack):
    name: ClassVar[str] = "ipm"
    epsilon: float = 0.1

    def forge(self, view: RoundView) -> Updates:
        return _ipm(view, self.epsilon)


@dataclass(frozen=True)
class Mimic(Attack):
    name: ClassVar[str] = "mimic"

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


def _distance_after_aggregation(view: RoundView, forged: Updates) -> float:
    """How far the rule's aggregate of honest + forged updates lands from the honest mean."""
    updates = encode(np.concatenate([view.honest, forged]), view.frac_bits).values
    result = aggregate(view.rule, updates, **view.rule_arguments())
    return float(np.linalg.norm(decode(result.vector, view.frac_bits) - view.honest.mean(axis=0)))


@dataclass(frozen=True)
class AdaptiveALIE(Attack):
    """Line search of ALIE's z over ``grid`` against the actual rule."""

    name: ClassVar[str] = "adaptive_alie"
    grid: tuple[float, ...] = ALIE_GRID

    def forge(self, view: RoundView) -> Updates:
        candidates = [_alie(view, z) for z in self.grid]
        return max(candidates, key=lambda forged: _distance_after_aggregation(view, forged))


@dataclass(frozen=True)
class AdaptiveIPM(Attack):
    """Line search of IPM's epsilon over ``grid`` against the actual rule."""

    name: ClassVar[str] = "adaptive_ipm"
    grid: tuple[float, ...] = IPM_GRID

    def forge(self, view: RoundView) -> Updates:
        candidates = [_ipm(view, epsilon) for epsilon in self.grid]
        return max(candidates, key=lambda forged: _distance_after_aggregation(view, forged))


ATTACKS: Mapping[str, type[Attack]] = {
    kind.name: kind
    for kind in (
        Attack,
        SignFlip,
        Scaling,
        Gaussian,
        Zero,
        Random,
        LabelFlip,
        Backdoor,
        ALIE,
        IPM,
        Mimic,
        AdaptiveALIE,
        AdaptiveIPM,
    )
}


def build_attack(name: str, **params: Any) -> Attack:
    """The attack called ``name`` with its parameters (see the module table for defaults).

    Raises:
        LearningError: unknown attack or parameter, or a parameter of the wrong type.
    """
    if name not in ATTACKS:
        raise LearningError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    kind = ATTACKS[name]
    accepted = {item.name: item for item in fields(kind)}
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise LearningError(f"attack {name!r} takes no parameter {unknown[0]!r}; accepted: {sorted(accepted) or 'none'}")
    converted: dict[str, Any] = {}
    for key, value in params.items():
        if key == "grid":
            if not isinstance(value, list | tuple) or not value or not all(_is_number(item) for item in value):
                raise LearningError(f"attack {name!r}: 'grid' must be a non-empty list of numbers")
            converted[key] = tuple(float(item) for item in value)
        elif key in ("target", "trigger_size"):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "trigger_size" else 0):
                raise LearningError(f"attack {name!r}: {key!r} must be a non-negative integer")
            converted[key] = value
        elif value is None and key == "z":
            converted[key] = None
        elif _is_number(value) and math.isfinite(value):
            converted[key] = float(value)
        else:
            raise LearningError(f"attack {name!r}: {key!r} must be a finite number, got {value!r}")
    if "fraction" in converted and not 0 < converted["fraction"] <= 1:
        raise LearningError(f"attack {name!r}: 'fraction' must be in (0, 1]")
    return kind(**converted)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
