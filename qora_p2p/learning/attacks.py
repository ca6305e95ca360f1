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

The interface
-------------
An attack is an `Attack` object. ``forge(view)`` returns the (b, P) updates the b attackers send
(one per row of ``view.own``); with ``poisons_data = True``, ``poison_data(features, labels,
classes, rng)`` returns the training data an attacker uses instead of its shard; with
``reads_honest = True`` (the ``wants_view`` property), a test-network node waits a bounded time
for other members' updates before it forges. The `RoundView` is everything the coalition knows:
the honest rows and their own, the members behind each row, the round number, the rule in force
with its parameters and per-row reputation weights, the previous aggregate, every member's
reputation and a shared random stream; ``view.aggregate(forged)`` runs the rule exactly as the
protocol will. The federation and a test network's forging node build the view in one place
(`round_view`).

An object can be the ``attack`` of a `FederationConfig` or of a node's `WorkloadConfig`;
`register_attack` gives a class a name that configurations, node profiles and `build_attack`
accept, with options checked against the dataclass fields' types (ints, bools and strings stay
what they are)::

    @dataclass(frozen=True)
    class Nudge(Attack):
        strength: float = 1.0

        def forge(self, view: RoundView) -> Updates:  # push against last round's direction
            previous = np.zeros(view.own.shape[1]) if view.previous is None else view.previous
            return view.own - self.strength * previous

    register_attack("nudge", Nudge)
    run_federation(FederationConfig(byzantine=3, attack="nudge", attack_params={"strength": 2}))
    run_federation(FederationConfig(byzantine=3, attack=Nudge(strength=2.0)))

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
import re
from collections import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from statistics import NormalDist
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation import aggregate
from qora_p2p.errors import LearningError
from qora_p2p.fixedpoint import decode, encode
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.state import AgreedState, eligible_members

__all__ = ["ATTACKS", "Attack", "RoundView", "alie_z", "build_attack", "register_attack", "resolve_attack", "round_view", "rule_in_force"]

Updates = npt.NDArray[np.float64]
POWER_ITERATIONS = 50  # top principal direction of at most a few hundred updates converges well before
ALIE_GRID = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
IPM_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


@dataclass(frozen=True, slots=True)
class RoundView:
    """What the colluding attackers know when they forge this round's updates.

    Rows: the rule aggregates the ``honest`` rows followed by one forged row per row of ``own``;
    every per-row attribute (members, weights) follows that order.

    Attributes:
        honest: (h, P) the round's honest updates.
        own: (b, P) the updates the attackers computed on their own (possibly poisoned) data.
        members: n, attackers included: the members the rule aggregates this round.
        rule, rule_params: the aggregation in force (adaptive attacks run it): fixed-point
            parameters of `aggregate`, with ``center`` when the rule is centred on the previous
            aggregate (`rule_in_force`).
        frac_bits: the fixed-point format the updates travel in.
        rng: the attackers' shared random stream.
        honest_weights, own_weights: the Q16 reputation weights the rule gives each honest row
            and each forged row, when the rule is weighted; both None otherwise.
        round: the round being forged (1 for the first; 0 when the view was not made from a
            round, e.g. by hand).
        honest_members, attacker_members: the member index of each honest and each forged row
            (a node that does not know its colluders repeats its own index); by default the rows
            are numbered 0..h-1, then h..h+b-1.
        previous: the previous round's aggregate, decoded (zeros before round 1); None when not
            known.
        reputations: every member's reputation (Q16 integers, `qora_p2p.protocol.ledger.ONE` is
            1.0; index = member), None without a ledger.
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
    round: int = 0
    honest_members: tuple[int, ...] = ()
    attacker_members: tuple[int, ...] = ()
    previous: Updates | None = None
    reputations: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.honest.ndim != 2 or self.own.ndim != 2 or not len(self.honest):
            raise LearningError("a round view needs (h, P) honest and (b, P) own updates, h >= 1")
        if (self.honest_weights is None) != (self.own_weights is None):
            raise LearningError("a round view weighs both its honest and its forged rows, or neither")
        honest_mismatch = self.honest_weights is not None and len(self.honest_weights) != len(self.honest)
        if honest_mismatch or (self.own_weights is not None and len(self.own_weights) != len(self.own)):
            raise LearningError("a round view needs one weight per honest row and one per forged row")
        if not self.honest_members and not self.attacker_members:
            count = len(self.honest)
            object.__setattr__(self, "honest_members", tuple(range(count)))
            object.__setattr__(self, "attacker_members", tuple(range(count, count + len(self.own))))
        if len(self.honest_members) != len(self.honest) or len(self.attacker_members) != len(self.own):
            raise LearningError("a round view needs one member per honest row and one per forged row")
        if self.previous is not None and self.previous.shape != self.honest.shape[1:]:
            raise LearningError(f"a round view's previous aggregate has shape {self.previous.shape}, not ({self.honest.shape[1]},)")
        if self.round < 0:
            raise LearningError(f"a round view's round must be 0 or more, got {self.round}")

    def rule_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `aggregate` for the rows ``honest`` followed by the forged
        updates (one per row of ``own``), weights included."""
        arguments = dict(self.rule_params)
        if self.honest_weights is not None and self.own_weights is not None:
            arguments["weights"] = [*self.honest_weights, *self.own_weights]
        return arguments

    def aggregate(self, forged: Updates) -> Updates:
        """The rule's aggregate of the honest rows followed by ``forged`` (one row per row of
        ``own``), in fixed point as the protocol computes it, decoded."""
        if forged.shape != self.own.shape:
            raise LearningError(f"forged updates have shape {forged.shape}, the view's attackers send {self.own.shape}")
        updates = encode(np.concatenate([self.honest, forged]), self.frac_bits).values
        return decode(aggregate(self.rule, updates, **self.rule_arguments()).vector, self.frac_bits)


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
    when the rule is weighted, against the rule `rule_in_force`. The federation and a test
    network's forging node both build their views here.

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
    return RoundView(
        honest,
        own,
        inputs,
        genesis.rule,
        rule_in_force(genesis, state),
        genesis.frac_bits,
        rng,
        honest_weights,
        own_weights,
        round=state.round + 1,
        honest_members=tuple(honest_members),
        attacker_members=tuple(attacker_members),
        previous=decode(state.aggregate, genesis.frac_bits),
        reputations=None if state.ledger is None else tuple(standing.reputation for standing in state.ledger.standings),
    )


def rule_in_force(genesis: Genesis, state: AgreedState) -> dict[str, Any]:
    """The fixed-point parameters `compute_round` aggregates the round after ``state`` with, the
    previous aggregate as ``center`` when the genesis centres on it (weights apart: they are per
    input, see `RoundView`)."""
    params = genesis.fixed_rule_params()
    if genesis.centered_on_previous:
        params["center"] = state.aggregate
    return params


class Attack:
    """A Byzantine behaviour: the interface every attack implements (the base is the honest
    member, ``none``).

    An attack acts at one or both of two points. A data-poisoning attack sets ``poisons_data``
    and overrides `poison_data`, which runs once, before the attacker's first round, on its
    shard. A model-poisoning attack overrides `forge`, which runs every round with the round's
    `RoundView` and returns one update per row of ``view.own`` (the default sends them
    unchanged). An attack whose `forge` reads ``view.honest`` says so with ``wants_view``: a
    test-network node then waits (a bounded time) for other members' updates before forging.

    Pass an instance as ``attack`` of a `FederationConfig` or a node's `WorkloadConfig`, or
    register the class (`register_attack`) to build it by name from a configuration, a node
    profile or `build_attack`. A registered dataclass gets its options checked against its
    fields' types; any other class gets them as constructor keywords.
    """

    name: ClassVar[str] = "none"
    poisons_data: ClassVar[bool] = False
    reads_honest: ClassVar[bool] = False  # `forge` reads view.honest (see wants_view)

    @property
    def wants_view(self) -> bool:
        """Whether forging needs other members' updates of the round (``view.honest``)."""
        return self.reads_honest

    def poison_data(
        self, features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], classes: int, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """The training data the attacker uses (unchanged unless the attack poisons data)."""
        return features, labels

    def forge(self, view: RoundView) -> Updates:
        """The (b, P) updates the attackers send, one per row of ``view.own``."""
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

    def __post_init__(self) -> None:
        _check_non_negative(self.name, "std", self.std)

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

    def __post_init__(self) -> None:
        _check_non_negative(self.name, "scale", self.scale)

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


def _distance_after_aggregation(view: RoundView, forged: Updates) -> float:
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
        return max(candidates, key=lambda forged: _distance_after_aggregation(view, forged))


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
        return max(candidates, key=lambda forged: _distance_after_aggregation(view, forged))


ATTACKS: dict[str, type[Attack]] = {}  # the registry (`register_attack`), by name
ATTACK_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a profile key and a benchmark column


def register_attack(name: str, kind: type[Attack]) -> type[Attack]:
    """Make ``kind`` buildable by ``name`` (`build_attack`, configurations, node profiles) and
    return it. A class that does not set its own ``name`` takes this one.

    Raises:
        LearningError: a malformed name, a name registered to another class, or a class that is
            not an `Attack`.
    """
    if not ATTACK_NAME_PATTERN.fullmatch(name):
        raise LearningError(f"attack name {name!r} must match {ATTACK_NAME_PATTERN.pattern}")
    if not (isinstance(kind, type) and issubclass(kind, Attack)):
        raise LearningError(f"attack {name!r}: {kind!r} is not a subclass of Attack")
    if ATTACKS.get(name, kind) is not kind:
        raise LearningError(f"attack {name!r} is already registered to {ATTACKS[name].__qualname__}")
    if "name" not in vars(kind):
        kind.name = name
    ATTACKS[name] = kind
    return kind


for _kind in (Attack, SignFlip, Scaling, Gaussian, Zero, Random, LabelFlip, Backdoor, ALIE, IPM, Mimic, AdaptiveALIE, AdaptiveIPM):
    register_attack(_kind.name, _kind)


def build_attack(name: str, **params: Any) -> Attack:
    """The attack registered as ``name`` with its parameters (see the module table for defaults).

    Parameters keep their types: a field declared ``int``, ``bool`` or ``str`` takes only that
    type, ``float`` takes any finite number (as a float), ``tuple[float, ...]`` a non-empty list,
    ``X | None`` also None.

    Raises:
        LearningError: unknown attack or parameter, or a parameter of the wrong type or range.
    """
    if name not in ATTACKS:
        raise LearningError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    kind = ATTACKS[name]
    if not is_dataclass(kind):
        try:
            return kind(**params)
        except TypeError as error:
            raise LearningError(f"attack {name!r}: {error}") from error
    hints = get_type_hints(kind)
    accepted = {item.name for item in fields(kind) if item.init}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise LearningError(f"attack {name!r} takes no parameter {unknown[0]!r}; accepted: {sorted(accepted) or 'none'}")
    converted = {key: _option(name, key, hints[key], value) for key, value in params.items()}
    return kind(**converted)


def resolve_attack(attack: str | Attack, params: Mapping[str, Any] | None = None) -> Attack:
    """A configuration's attack: an `Attack` object as it is, or a registered name built with
    ``params``.

    Raises:
        LearningError: parameters given with an object (they belong to its constructor), or
            anything `build_attack` refuses.
    """
    if isinstance(attack, Attack):
        if params:
            raise LearningError(f"attack parameters {sorted(params)} go to the {type(attack).__name__} object's constructor, not attack_params")
        return attack
    if not isinstance(attack, str):
        raise LearningError(f"an attack is a registered name or an Attack object, got {type(attack).__name__}")
    return build_attack(attack, **dict(params or {}))


def _option(name: str, key: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the field type ``hint`` (and converted: int to float, list to
    tuple), or LearningError naming the attack and the parameter."""
    accepted, converted = _convert(hint, value)
    if not accepted:
        raise LearningError(f"attack {name!r}: {key!r} must be {_describe(hint)}, got {value!r}")
    return converted


_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda value: isinstance(value, bool), "true or false"),
    int: (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
    float: (lambda value: _is_number(value) and math.isfinite(value), "a finite number"),
    str: (lambda value: isinstance(value, str), "a string"),
    type(None): (lambda value: value is None, "none"),
}


def _convert(hint: Any, value: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits the type ``hint``, the value as the field holds it)."""
    origin, arguments = get_origin(hint), get_args(hint)
    if hint in _SCALARS:
        fits = _SCALARS[hint][0](value)
        return fits, float(value) if fits and hint is float else value
    if origin in (Union, UnionType):
        return next((result for result in (_convert(member, value) for member in arguments) if result[0]), (False, None))
    if origin is tuple:
        return _convert_items(arguments, value)
    if origin in (dict, abc.Mapping):
        fits = isinstance(value, Mapping) and all(isinstance(key, str) for key in value)
        return fits, dict(value) if fits else None
    if isinstance(hint, type) and hint is not Any:
        return isinstance(value, hint), value
    return True, value


def _convert_items(arguments: tuple[Any, ...], value: Any) -> tuple[bool, Any]:
    """A non-empty list or tuple for ``tuple[X, ...]`` or ``tuple[X, Y]``, as a tuple."""
    variadic = arguments[-1] is Ellipsis
    if not isinstance(value, list | tuple) or not value or (not variadic and len(value) != len(arguments)):
        return False, None
    items = [_convert(arguments[0] if variadic else member, item) for member, item in zip(arguments * len(value), value, strict=False)]
    return all(fits for fits, _ in items), tuple(item for _, item in items)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if hint in _SCALARS:
        return _SCALARS[hint][1]
    if origin in (Union, UnionType):
        return " or ".join(_describe(member) for member in get_args(hint))
    if origin is tuple:
        return f"a non-empty list of {_describe(get_args(hint)[0]).split(' ', 1)[-1]}s"
    if origin in (dict, abc.Mapping):
        return "a table of options"
    return getattr(hint, "__name__", str(hint))


def _check_non_negative(name: str, key: str, value: float) -> None:
    if value < 0:
        raise LearningError(f"attack {name!r}: {key!r} must be non-negative, got {value}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
