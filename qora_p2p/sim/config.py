"""A simulation's configuration and result: what a run does follows from `SimConfig` alone.

`SimConfig` is frozen and printable; its text starts the trace hash, so fields added after the
trace hashes were pinned join the text only when they differ from their defaults.
"""

from __future__ import annotations

import random
import shlex
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from qora_p2p.errors import ConfigError
from qora_p2p.protocol.behaviour import PROTOCOL_BEHAVIOURS
from qora_p2p.protocol.genesis import (
    Genesis,
    Member,
    Timing,
    apply_settings,
    default_rule_params,
    genesis_from_fragment,
)
from qora_p2p.schema import dump as dump_settings
from qora_p2p.sim.adversaries import ADVERSARY_NAMES
from qora_p2p.sim.faults import Fault

__all__ = ["STRATEGIES", "RoundStats", "SimConfig", "SimResult", "replay_command"]

STRATEGIES = (*PROTOCOL_BEHAVIOURS, "sign_flip", "scaling")


@dataclass(frozen=True)
class SimConfig:
    """One simulation: everything it does follows from these values."""

    nodes: int = 7
    byzantine: int = 0
    rounds: int = 5
    seed: int = 0
    dimension: int = 100
    faults: str = "none"
    strategy: str = "mixed"  # one of STRATEGIES, or "mixed" (cycle through them)
    rule: str = "centered_clipping"
    rule_params: tuple[tuple[str, Any], ...] = (("tau_scale", 1.0), ("center", "previous"))
    ledger: bool = True
    schedule: tuple[Fault, ...] | None = None  # explicit faults instead of the profile's
    timing: Timing = field(default_factory=lambda: Timing(round_timeout_ms=5_000, collect_timeout_ms=100, propose_timeout_ms=500, prevote_timeout_ms=300, precommit_timeout_ms=300, timeout_delta_ms=200, timeout_cap_ms=5_000))
    # Genesis parameters as PATH=VALUE (``reputation.opposing_penalty=0.05``), applied in order over
    # the fields above and read by the genesis schema; the model stays synthetic of `dimension`.
    genesis_settings: tuple[str, ...] = ()
    # Byzantine members driven by an adversary of `qora_p2p.sim.adversaries.ADVERSARIES` ("mixed":
    # cycle through them) instead of `strategy`; empty: `strategy` decides. Out of the repr, which
    # stays the text older configurations' traces start from; `__str__` shows it when set.
    adversary: str = field(default="", repr=False)

    def __str__(self) -> str:
        # The trace hash starts from this text. It is the dataclass repr of the fields that predate
        # `genesis_settings`; it and `adversary` join only when not empty, so every configuration
        # made before them keeps its pinned trace hash.
        later = ("genesis_settings", "adversary")
        legacy = ", ".join(f"{item.name}={getattr(self, item.name)!r}" for item in fields(self) if item.name not in later)
        settings = f", genesis_settings={self.genesis_settings!r}" if self.genesis_settings else ""
        adversary = f", adversary={self.adversary!r}" if self.adversary else ""
        return f"{type(self).__qualname__}({legacy}{settings}{adversary})"

    def build_genesis(self, members: tuple[Member, ...]) -> Genesis:
        """The run's genesis for ``members``: the fields above as a genesis fragment, then
        `genesis_settings`, read by the genesis schema.

        Raises:
            ConfigError: an invalid parameter (named by its path), or a setting of the model.
        """
        fragment: dict[str, Any] = {
            "model": {"kind": "synthetic", "dimension": self.dimension, "seed": self.seed},
            # parameters equal to the rule's defaults are left to the schema, so that a setting of
            # aggregation.rule brings the new rule's defaults rather than the old rule's
            "aggregation": {"rule": self.rule, **({} if dict(self.rule_params) == default_rule_params(self.rule) else dict(self.rule_params))},
            "reputation": {} if self.ledger else {"enabled": False},
            "timing": dump_settings(self.timing),
        }
        for text in self.genesis_settings:
            if text.strip().startswith("model."):
                raise ConfigError(f"{text}: the simulator's updates are synthetic, of length dimension (qora-sim --model-dim)")
        fragment = apply_settings(fragment, self.genesis_settings)
        return genesis_from_fragment(fragment, f"sim-{self.seed}", members, "qora-sim genesis")

    @property
    def byzantine_members(self) -> tuple[int, ...]:
        """Byzantine members are drawn from the seed."""
        rng = random.Random(f"{self.seed}/byzantine")
        return tuple(sorted(rng.sample(range(self.nodes), self.byzantine)))

    def strategy_of(self, member: int) -> str:
        if self.strategy != "mixed":
            return self.strategy
        return STRATEGIES[self.byzantine_members.index(member) % len(STRATEGIES)]

    def adversary_of(self, member: int) -> str:
        """The adversary a Byzantine member runs ("" when `strategy` drives it)."""
        if self.adversary != "mixed":
            return self.adversary
        return ADVERSARY_NAMES[self.byzantine_members.index(member) % len(ADVERSARY_NAMES)]


@dataclass
class RoundStats:
    committed_by: int = 0
    hash: str = ""
    views: list[int] = field(default_factory=list)
    first_commit_ms: int = 0
    last_commit_ms: int = 0


@dataclass
class SimResult:
    config: SimConfig
    committed: dict[int, int]  # member -> rounds committed
    rounds: dict[int, RoundStats]
    violations: list[str]
    trace_hash: str
    sim_ms: int
    wall_s: float
    messages: Counter[str]
    bytes_received: dict[int, int]  # member -> bytes received
    bytes_by_kind: Counter[str]  # bytes received by honest members, per message type
    bans: dict[int, list[int]]  # round -> members banned or proven at its commit (first honest view)
    penalties: int
    events: Counter[str]
    commit_times: dict[int, list[tuple[int, int]]]  # honest member -> (round, sim ms) per commit
    proven_at: dict[int, dict[int, int]]  # honest member -> culprit -> round its proof committed

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def safe(self) -> bool:
        """No safety violation (liveness failures aside)."""
        return not any(not violation.startswith("liveness") for violation in self.violations)


def replay_command(config: SimConfig) -> str:
    """The ``qora-sim`` command that replays ``config`` (a run the CLI can express: the rule's
    default parameters, no explicit schedule, default timing)."""
    return (
        f"qora-sim --nodes {config.nodes} --byzantine {config.byzantine} --rounds {config.rounds} --seed {config.seed} "
        f"--model-dim {config.dimension} --faults {config.faults} --strategy {config.strategy} --rule {config.rule}"
        + (f" --adversary {config.adversary}" if config.adversary else "")
        + (" --no-ledger" if not config.ledger else "")
        + "".join(f" --set {shlex.quote(text)}" for text in config.genesis_settings)
    )
