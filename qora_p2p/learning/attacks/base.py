"""The attack interface: what the coalition sees each round (`RoundView`), what an attack is
(`Attack`), and the registry that builds attacks by name with typed options (`register_attack`,
`build_attack`). See `qora_p2p.learning.attacks` for the theory of operation."""

from __future__ import annotations

import math
import re
from collections import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation import aggregate
from qora_p2p.errors import LearningError
from qora_p2p.fixedpoint import decode, encode
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.state import AgreedState, eligible_members

__all__ = [
    "ATTACKS",
    "Attack",
    "RoundView",
    "Updates",
    "build_attack",
    "check_non_negative",
    "register_attack",
    "resolve_attack",
    "round_view",
    "rule_in_force",
]

Updates = npt.NDArray[np.float64]


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


def check_non_negative(name: str, key: str, value: float) -> None:
    if value < 0:
        raise LearningError(f"attack {name!r}: {key!r} must be non-negative, got {value}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
