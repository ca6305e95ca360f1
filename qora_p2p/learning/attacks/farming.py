"""Reputation farming: honest for a number of rounds, then another attack, so that a reputation
ledger has only good rounds to remember when the attack begins (the threat of DESIGN.md's
checklist; definitions in the table of `qora_p2p.learning.attacks`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from qora_p2p.errors import LearningError
from qora_p2p.learning.attacks.base import Attack, RoundView, Updates, resolve_attack

__all__ = ["ReputationFarming"]

FARMING_ROUNDS_MAX = 100_000  # the federation's round limit


@dataclass(frozen=True)
class ReputationFarming(Attack):
    """Sends its own honest update in rounds ``1..rounds``, then forges with ``inner`` (a
    registered name built with ``inner_params``, or an `Attack`). A view without a round number
    (``round = 0``, made by hand) is a farming round. The inner attack must be model poisoning:
    data is poisoned once, before the first round, which would spoil the farming rounds."""

    name: ClassVar[str] = "reputation_farming"
    rounds: int = 10
    inner: str | Attack = "alie"
    inner_params: Mapping[str, Any] = field(default_factory=dict)
    attack: Attack = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rounds <= FARMING_ROUNDS_MAX:
            raise LearningError(f"attack 'reputation_farming': 'rounds' must be in 0..{FARMING_ROUNDS_MAX}, got {self.rounds}")
        if isinstance(self.inner, ReputationFarming) or self.inner == self.name:
            raise LearningError("attack 'reputation_farming': the inner attack cannot farm itself")
        inner = resolve_attack(self.inner, self.inner_params)
        if inner.poisons_data:
            raise LearningError(f"attack 'reputation_farming': inner attack {inner.name!r} poisons data, which cannot wait for round {self.rounds + 1}")
        object.__setattr__(self, "attack", inner)

    @property
    def wants_view(self) -> bool:
        return self.attack.wants_view

    def forge(self, view: RoundView) -> Updates:
        if view.round <= self.rounds:
            return view.own
        return self.attack.forge(view)
