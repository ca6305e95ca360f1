"""What a node computes each round: its local update, honest or poisoned.

Theory of operation
-------------------
A `Workload` turns the agreed model (int64 fixed point) into this member's update (float64, a
model delta) and, on a test network, forges it with an attack of `qora_p2p.learning.attacks`:

* `SyntheticWorkload`: no data; the same persistent direction, per-round drift and member noise as
  the simulator (``qora_p2p.sim``), so protocol benchmarks need no training time;
* `LearningWorkload`: local SGD on this member's shard of a dataset (bundled or ``.npz``). Every
  member derives the same partition from ``(dataset, scheme, seed, n)`` and takes its own index's
  shard, so shards are disjoint without any coordination.

A production node only trains (`train`, then `payload`). On a test network the node's forge hook
(`qora_p2p.testnet.forging`) calls `forge`, which builds the same `RoundView` as the in-process
federation. Attacks that forge from the honest updates (`Attack.wants_view`: ALIE, IPM, mimic,
min-max...) see what a real attacker sees, the updates this member has received so far in the
round (``others``, its coalition's forgeries left out), for which the hook waits a bounded time
(``view_wait_ms``). Attacks that poison data poison the shard once, when the workload is built.

`train` and `forge` are CPU work for a worker thread; they keep their own random streams, seeded
from the member index and the workload seed, and are not part of the agreed state (nothing about an
update needs to be reproducible by other members, only checkable).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qora_p2p.errors import ConfigError, LearningError
from qora_p2p.fixedpoint import encode, to_bytes
from qora_p2p.learning.attacks import Attack, Backdoor, resolve_attack, round_view
from qora_p2p.learning.data import PARTITIONS, load_dataset, partition
from qora_p2p.learning.genesis_model import model_of
from qora_p2p.learning.synthetic import synthetic_update
from qora_p2p.learning.training import LocalTrainer, TrainingConfig, evaluate
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.state import AgreedState, eligible_members

__all__ = ["LearningWorkload", "SyntheticWorkload", "Workload", "WorkloadConfig", "build_workload"]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class WorkloadConfig:
    """A member's local settings (not part of the genesis).

    Attributes:
        dataset: ``digits``, ``breast_cancer`` or an ``.npz`` path (ignored for a synthetic model).
        partition, alpha, data_seed: how the training set is split across the n members.
        training: local SGD settings.
        attack: a learning attack: a registered name (``none`` for an honest member) with its
            parameters, or an `Attack` object (`qora_p2p.learning.attacks`).
        colluders: how many attackers the attack assumes (ALIE's z depends on it) when
            ``colluder_members`` is empty.
        colluder_members: the coalition's members (this one may be listed too): their updates
            are forgeries, never honest rows, and the forged rows are theirs (a test network's
            scenario runner knows them; empty: unknown).
        view_wait_ms: how long a view attack waits for other members' updates.
    """

    dataset: str = "digits"
    partition: str = "dirichlet"
    alpha: float = 0.5
    data_seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    attack: str | Attack = "none"
    attack_params: Mapping[str, Any] = field(default_factory=dict)
    colluders: int = 1
    colluder_members: tuple[int, ...] = ()
    view_wait_ms: int = 2_000

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise ConfigError(f"partition must be one of {', '.join(PARTITIONS)}, got {self.partition!r}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be positive, got {self.alpha}")
        if not 1 <= self.colluders <= 1024:
            raise ConfigError(f"colluders must be in 1..1024, got {self.colluders}")
        if len(self.colluder_members) > 1024 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in self.colluder_members):
            raise ConfigError(f"colluder_members must be at most 1024 member indices, got {self.colluder_members!r}")
        if not 0 <= self.view_wait_ms <= 600_000:
            raise ConfigError(f"view_wait_ms must be in 0..600000, got {self.view_wait_ms}")


class Workload:
    """Base: an honest or attacking member's update for each round."""

    def __init__(self, genesis: Genesis, member: int, config: WorkloadConfig) -> None:
        self.genesis, self.member, self.config = genesis, member, config
        self.scale = float(2**genesis.frac_bits)
        if any(k >= genesis.size for k in config.colluder_members):
            raise ConfigError(f"colluder_members {config.colluder_members!r} names a member beyond the genesis' {genesis.size}")
        try:
            self.attack: Attack = resolve_attack(config.attack, config.attack_params)
        except LearningError as error:
            raise ConfigError(str(error)) from error
        self.attack_rng = np.random.default_rng([config.data_seed, 4, member])

    @property
    def wants_view(self) -> bool:
        """Whether forging needs other members' updates of the round."""
        return self.attack.wants_view

    def params(self, model: npt.NDArray[np.int64]) -> Vector:
        return model.astype(np.float64) / self.scale

    def train(self, round_number: int, model: npt.NDArray[np.int64]) -> Vector:
        """This member's own update from the agreed ``model`` (poisoned data included)."""
        raise NotImplementedError

    def forge(self, own: Vector, others: Mapping[int, bytes], state: AgreedState) -> bytes:
        """The payload to sign: ``own`` itself, or the attack's forgery from ``own`` and ``others``
        (other members' payloads of the round as received, by sender) against the rule as the
        protocol runs it after the agreed ``state`` (`qora_p2p.learning.attacks.round_view`).

        The honest rows are the held updates of members the rule aggregates this round (not
        banned) and outside the coalition (``colluder_members``: their payloads are forgeries); the
        forged rows are the coalition's eligible members, each at its own weight, or ``colluders``
        copies of this member when the coalition is not known. With no honest update in hand, the
        one honest row is this member's own update."""
        if type(self.attack) is Attack:
            return self.payload(own)
        eligible = set(eligible_members(self.genesis, state, state.round + 1))
        coalition = set(self.config.colluder_members) | {self.member}
        senders = sorted(sender for sender in others if sender in eligible and sender not in coalition)
        rows = [np.frombuffer(others[sender], dtype="<i4").astype(np.float64) / self.scale for sender in senders]
        honest = np.stack(rows) if rows else own[None, :]
        if self.config.colluder_members:
            attackers = sorted(coalition & eligible | {self.member})
        else:
            attackers = [self.member] * self.config.colluders
        view = round_view(
            self.genesis,
            state,
            senders or [self.member],
            honest.reshape(-1, own.size),
            attackers,
            np.repeat(own[None, :], len(attackers), axis=0),
            self.attack_rng,
        )
        return self.payload(self.attack.forge(view)[attackers.index(self.member)])

    def payload(self, update: Vector) -> bytes:
        return to_bytes(encode(update, self.genesis.frac_bits).values)

    def evaluate(self, model: npt.NDArray[np.int64]) -> float | None:
        """Test accuracy of the agreed model, when the workload has test data."""
        return None

    def attack_success(self, model: npt.NDArray[np.int64]) -> float | None:
        """A backdoor attacker's measure of its own success on the agreed model (the share of
        triggered test samples of other classes classified as its target); None otherwise."""
        return None


class SyntheticWorkload(Workload):
    """The simulator's synthetic updates (see `qora_p2p.sim`), for protocol benchmarks."""

    def train(self, round_number: int, model: npt.NDArray[np.int64]) -> Vector:
        return synthetic_update(self.genesis.model.seed, round_number, self.member, self.genesis.model.dimension)


class LearningWorkload(Workload):
    """Local SGD on this member's shard of a dataset."""

    def __init__(self, genesis: Genesis, member: int, config: WorkloadConfig) -> None:
        super().__init__(genesis, member, config)
        spec = genesis.model
        try:
            self.dataset = load_dataset(config.dataset, seed=config.data_seed)
        except LearningError as error:
            raise ConfigError(f"dataset: {error}") from error
        if (self.dataset.features, self.dataset.classes) != (spec.features, spec.classes):
            raise ConfigError(
                f"dataset {config.dataset!r} has {self.dataset.features} features and {self.dataset.classes} classes; "
                f"the genesis model expects {spec.features} and {spec.classes}"
            )
        self.model = model_of(spec)
        try:
            shards = partition(self.dataset.train_labels, genesis.size, config.partition, seed=config.data_seed, alpha=config.alpha)
        except LearningError as error:
            raise ConfigError(f"partition: {error}") from error
        shard = shards[member]
        features, labels = self.dataset.train_features[shard], self.dataset.train_labels[shard]
        if self.attack.poisons_data:
            features, labels = self.attack.poison_data(features, labels, self.dataset.classes, np.random.default_rng([config.data_seed, 2, member]))
        self.trainer = LocalTrainer(self.model, features, labels, config.training, seed=[config.data_seed, 3, member])
        self.samples = int(labels.size)

    def train(self, round_number: int, model: npt.NDArray[np.int64]) -> Vector:
        return self.trainer.update(self.params(model))

    def evaluate(self, model: npt.NDArray[np.int64]) -> float | None:
        return evaluate(self.model, self.params(model), self.dataset.test_features, self.dataset.test_labels).accuracy

    def attack_success(self, model: npt.NDArray[np.int64]) -> float | None:
        if not isinstance(self.attack, Backdoor):
            return None
        features = self.attack.stamp(self.dataset.test_features)
        return self.attack.success(self.model.logits(self.params(model), features), self.dataset.test_labels)


def build_workload(genesis: Genesis, member: int, config: WorkloadConfig) -> Workload:
    """The workload the genesis model calls for.

    Raises:
        ConfigError: a dataset that does not fit the model, an unknown attack or partition.
    """
    if genesis.model.kind == "synthetic":
        return SyntheticWorkload(genesis, member, config)
    return LearningWorkload(genesis, member, config)
