"""An in-process federation: R rounds of N members (honest and Byzantine) through `aggregate`.

Theory of operation
-------------------
No networking: every member's local training, the colluding attackers' forgeries, the fixed-point
encoding and the exact aggregation run in one process, round after round, exactly as the network
node runs them (it reuses `LocalTrainer`, the attacks and `aggregate`). This is the tool for
experiments (``benchmarks/bench_robustness.py``) and for tests.

One round:

1. every member trains from the global parameters and computes its update (`LocalTrainer`);
2. the attackers see the honest updates and replace theirs (`Attack.forge`);
3. all updates are encoded in fixed point and aggregated with the rule, members in canonical order;
4. ``global += server_learning_rate * decode(aggregate)``, then the test set is scored;
5. with a reputation ledger (`qora_p2p.protocol.ledger`), every included member's deviation and whether its
   update opposes the previous round's aggregate update the ledger; banned members sit out the following rounds,
   and rules that take weights weigh members by reputation.

Which members are Byzantine is drawn from the seed. Rule parameters are given in model units
(`qora_p2p.aggregation.to_fixed_params`); ``center = "previous"`` gives centered clipping the
previous round's aggregate as its centre.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation import RULES, aggregate, inner_products, to_fixed_params, validate
from qora_p2p.errors import LearningError
from qora_p2p.fixedpoint import FRAC_BITS_DEFAULT, decode, encode
from qora_p2p.learning.attacks import Attack, Backdoor, RoundView, build_attack
from qora_p2p.learning.data import Dataset, load_dataset, partition
from qora_p2p.learning.models import Model, build_model
from qora_p2p.learning.training import LocalTrainer, TrainingConfig, evaluate
from qora_p2p.protocol.ledger import Ledger, LedgerParams, Observation, apply_round

__all__ = ["FederationConfig", "FederationResult", "RoundRecord", "run_federation"]

ROUNDS_MAX = 100_000
MEMBERS_MAX = 1024


@dataclass(frozen=True)
class FederationConfig:
    """Everything that determines a federation run (with ``seed``, everything)."""

    dataset: str = "digits"
    model: str = "logistic"
    hidden: tuple[int, ...] = (32,)
    members: int = 10
    byzantine: int = 0
    attack: str = "none"
    attack_params: Mapping[str, Any] = field(default_factory=dict)
    partition: str = "dirichlet"
    alpha: float = 0.5
    rule: str = "fedavg"
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    rounds: int = 30
    training: TrainingConfig = TrainingConfig()
    server_learning_rate: float = 1.0
    frac_bits: int = FRAC_BITS_DEFAULT
    ledger: LedgerParams | None = None
    reputation_weights: bool = True
    ban_capacity: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.members <= MEMBERS_MAX:
            raise LearningError(f"members must be in 1..{MEMBERS_MAX}, got {self.members}")
        if not 0 <= self.byzantine < self.members:
            raise LearningError(f"byzantine must be in 0..members-1, got {self.byzantine}")
        if not 1 <= self.rounds <= ROUNDS_MAX:
            raise LearningError(f"rounds must be in 1..{ROUNDS_MAX}, got {self.rounds}")
        if not 0 < self.server_learning_rate <= 10:
            raise LearningError(f"server_learning_rate must be in (0, 10], got {self.server_learning_rate}")
        if self.ban_capacity is not None and not 0 <= self.ban_capacity < self.members:
            raise LearningError(f"ban_capacity must be in 0..members-1, got {self.ban_capacity}")

    @property
    def tolerated(self) -> int:
        """Members that may be banned at once: ``ban_capacity``, else the BFT bound (n - 1) // 3."""
        return (self.members - 1) // 3 if self.ban_capacity is None else self.ban_capacity


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """The global model after one round, scored on the held-out test set.

    Attributes:
        attack_success: for a backdoor, the share of triggered non-target test samples classified as
            the target; None otherwise.
        byzantine_selected: how many attackers were among the inputs the rule used.
        saturated: update values that hit the fixed-point bound this round.
        banned: members excluded from the next round (ledger runs only).
        reputation: every member's Q16 reputation after the round (ledger runs only).
    """

    round: int
    accuracy: float
    loss: float
    attack_success: float | None
    byzantine_selected: int
    saturated: int
    banned: tuple[int, ...] = ()
    reputation: tuple[int, ...] = ()


@dataclass(frozen=True)
class FederationResult:
    config: FederationConfig
    byzantine: tuple[int, ...]
    records: tuple[RoundRecord, ...]
    parameters: npt.NDArray[np.float64]

    @property
    def final_accuracy(self) -> float:
        return self.records[-1].accuracy


def _attack_success(model: Model, params: npt.NDArray[np.float64], dataset: Dataset, attack: Backdoor) -> float:
    others = dataset.test_labels != attack.target
    stamped = attack.stamp(dataset.test_features[others])
    return float((model.logits(params, stamped).argmax(axis=1) == attack.target).mean())


def _trainers(
    config: FederationConfig, dataset: Dataset, model: Model, byzantine: set[int], attack: Attack
) -> list[LocalTrainer]:
    shards = partition(dataset.train_labels, config.members, config.partition, seed=config.seed, alpha=config.alpha)
    trainers = []
    for member, shard in enumerate(shards):
        features, labels = dataset.train_features[shard], dataset.train_labels[shard]
        if member in byzantine and attack.poisons_data:
            poison_rng = np.random.default_rng([config.seed, 2, member])
            features, labels = attack.poison_data(features, labels, dataset.classes, poison_rng)
        trainers.append(LocalTrainer(model, features, labels, config.training, seed=[config.seed, 3, member]))
    return trainers


def run_federation(
    config: FederationConfig,
    *,
    model: Model | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FederationResult:
    """Run ``config.rounds`` rounds; ``on_round`` sees each record as it is made.

    Args:
        model: your own model (any `Model`, e.g. a `TorchModel`); replaces ``config.model``.

    Raises:
        LearningError: an invalid dataset, model, partition or attack setting.
        AggregationError: a rule that cannot run on this many members with these parameters.
    """
    dataset = load_dataset(config.dataset, seed=config.seed)
    if model is None:
        model = build_model(config.model, dataset.features, dataset.classes, config.hidden)
    attack = build_attack(config.attack, **dict(config.attack_params))
    selection = np.random.default_rng([config.seed, 1])
    byzantine = {int(k) for k in selection.choice(config.members, size=config.byzantine, replace=False)}
    trainers = _trainers(config, dataset, model, byzantine, attack)
    rule_params = to_fixed_params(config.rule, config.rule_params, config.frac_bits)
    previous_center = isinstance(rule_params.get("center"), str)
    if previous_center and rule_params["center"] != "previous":
        raise LearningError(f"rule parameter 'center' must be 'previous' or a vector, got {rule_params['center']!r}")
    if previous_center:
        del rule_params["center"]
    ledger = None if config.ledger is None else Ledger.genesis(config.members, config.ledger)
    weighted = ledger is not None and config.reputation_weights and RULES[config.rule.removeprefix("nnm+")].weighted
    # With a ledger up to `tolerated` members may be banned, so the rule must run on that few.
    smallest = config.members - (config.tolerated if ledger is not None else 0)
    validate(config.rule, smallest, model.layout.dimension, weighted=weighted, **rule_params)
    attack_rng = np.random.default_rng([config.seed, 4])
    params = model.initial(config.seed)
    center = np.zeros(model.layout.dimension, dtype=np.int32)
    records = []
    for round_number in range(1, config.rounds + 1):
        active = list(range(config.members)) if ledger is None else list(ledger.eligible(round_number))
        honest = [k for k in active if k not in byzantine]
        attackers = [k for k in active if k in byzantine]
        updates = np.stack([trainers[k].update(params) for k in active])
        arguments = dict(rule_params, center=center) if previous_center else dict(rule_params)
        if weighted:
            assert ledger is not None and config.ledger is not None
            arguments["weights"] = ledger.weights(active, config.ledger)
        positions = {member: row for row, member in enumerate(active)}
        if attackers:
            honest_rows = [positions[k] for k in honest]
            attacker_rows = [positions[k] for k in attackers]
            view = RoundView(
                updates[honest_rows], updates[attacker_rows], len(active), config.rule, arguments, config.frac_bits, attack_rng
            )
            updates[attacker_rows] = attack.forge(view)
        encoded = encode(updates, config.frac_bits)
        senders = [member.to_bytes(2, "big") for member in active]
        result = aggregate(config.rule, encoded.values, senders=senders, **arguments)
        previous, center = center, result.vector
        params = params + config.server_learning_rate * decode(result.vector, config.frac_bits)
        banned: tuple[int, ...] = ()
        if ledger is not None:
            assert config.ledger is not None
            # Against the previous round's aggregate: the member's own update cannot have shaped it,
            # and colluders cannot steer it within this round. Nothing opposes in round 1.
            opposing = (
                [False] * len(active)
                if round_number == 1
                else [value < 0 for value in inner_products(encoded.values, previous)]
            )
            observations = [
                Observation(member, int(result.deviation[row]), opposing[row]) for row, member in enumerate(active)
            ]
            ledger, _ = apply_round(ledger, config.ledger, round_number, observations, ban_capacity=config.tolerated)
            banned = tuple(k for k in range(config.members) if k not in ledger.eligible(round_number + 1))
        scores = evaluate(model, params, dataset.test_features, dataset.test_labels)
        record = RoundRecord(
            round_number,
            scores.accuracy,
            scores.loss,
            _attack_success(model, params, dataset, attack) if isinstance(attack, Backdoor) else None,
            sum(1 for row in result.selected if active[row] in byzantine),
            encoded.saturated,
            banned,
            () if ledger is None else tuple(standing.reputation for standing in ledger.standings),
        )
        records.append(record)
        if on_round is not None:
            on_round(record)
    return FederationResult(config, tuple(sorted(byzantine)), tuple(records), params)
