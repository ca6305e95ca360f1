"""An in-process federation: R rounds of N members (honest and Byzantine) through the protocol's
round transition.

Theory of operation
-------------------
No networking and no agreement: every member's local training, the colluding attackers'
forgeries and the protocol's round transition (`qora_p2p.protocol.state.compute_round`) run in
one process, round after round. The federation builds the `Genesis` a network of these members
would share and starts from its state (`genesis_state`), so what it measures is the protocol's
own aggregation, model and ledger, not a copy of them. This is the tool for experiments
(``benchmarks/bench_robustness.py``) and for tests.

The genesis: member ``k`` is ``member-k`` with an Ed25519 key drawn from the seed (the keys break
the rule's ties, as on a network); the model spec is the configured model's (a custom ``model=``
has no genesis description: its genesis says ``synthetic`` of the same dimension, which the round
transition never looks at, and starts from that model's own initial parameters); the rule and its
parameters, ``frac_bits`` and the ledger parameters come from the configuration.

One round ``r``:

1. the inputs are the members eligible in round ``r`` (all of them without a ledger; the ledger's
   bans otherwise), in member order, as the protocol's input set is;
2. each of them trains from the agreed model, decoded from its int64 fixed point (`LocalTrainer`);
3. the attackers among them see the honest updates and the rule as the protocol runs it (the
   genesis parameters, the previous aggregate as centre, the reputation weights) and replace
   theirs (`Attack.forge`);
4. every update is encoded (int32 payloads) and `compute_round` advances the agreed state: the
   aggregate, ``model += aggregate`` exactly, the ledger update and bans (at most the network's
   ``f = (n - 1) // 3`` at once);
5. the state is committed under the round hash a network would commit it under (no evidence, every
   eligible member's update included), and the decoded model is scored on the test set.

Which members are Byzantine is drawn from the seed. Rule parameters are given in model units
(`qora_p2p.aggregation.to_fixed_params`); ``center = "previous"`` gives centered clipping the
previous round's aggregate as its centre.

One difference from a genesis file remains: the loader refuses a rule that cannot run on
``n - f`` inputs, because a network round may hold only that many. Here every eligible member's
update arrives, so a rule only has to run on every member (``n - f`` with a ledger, which may ban
f); the benchmark's Krum with ``f = 3`` on 10 members runs here and would be refused in a genesis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation import validate
from qora_p2p.errors import LearningError
from qora_p2p.fixedpoint import FRAC_BITS_DEFAULT, encode, to_bytes
from qora_p2p.identity import Identity
from qora_p2p.learning.attacks import Attack, Backdoor, resolve_attack, round_view
from qora_p2p.learning.data import Dataset, load_dataset, partition
from qora_p2p.learning.genesis_model import initial_model
from qora_p2p.learning.models import Model, build_model
from qora_p2p.learning.training import LocalTrainer, TrainingConfig, evaluate
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.ledger import LedgerParams
from qora_p2p.protocol.messages import Value
from qora_p2p.protocol.state import (
    AgreedState,
    compute_round,
    eligible_members,
    genesis_state,
)

__all__ = ["FederationConfig", "FederationResult", "RoundRecord", "federation_genesis", "run_federation"]

ROUNDS_MAX = 100_000
MEMBERS_MAX = 1024  # the genesis' member limit
MEMBER_PORT_BASE = 20_000  # members need distinct addresses in a genesis; nothing listens on them


@dataclass(frozen=True)
class FederationConfig:
    """Everything that determines a federation run (with ``seed``, everything).

    ``attack`` is a registered name (`qora_p2p.learning.attacks.ATTACKS`, built with
    ``attack_params``) or an `Attack` object, used as it is (``attack_params`` then stays empty).

    Three fields describe what the protocol does not have and accept only the protocol's value:

    * ``server_learning_rate`` must be 1.0: the agreed model is ``model + aggregate``, exactly, in
      int64 fixed point; a server step would be a different round transition;
    * ``reputation_weights`` must stay True when the rule takes weights and a ledger is on: the
      protocol always weighs such a rule by reputation (`Genesis.weighted`);
    * ``ban_capacity`` must be None or f = (members - 1) // 3: the ledger never bans more than the
      network's f at once, so that a ban never uses up the crash budget.
    """

    dataset: str = "digits"
    model: str = "logistic"
    hidden: tuple[int, ...] = (32,)
    members: int = 10
    byzantine: int = 0
    attack: str | Attack = "none"
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
        if not 0 <= self.seed < 2**63:
            raise LearningError(f"seed must be in 0..2**63-1 (a genesis model seed), got {self.seed}")
        if self.server_learning_rate != 1.0:
            raise LearningError(
                f"server_learning_rate must be 1.0 (the protocol adds the aggregate to the model), got {self.server_learning_rate}"
            )
        if self.ban_capacity is not None and self.ban_capacity != self.tolerated:
            raise LearningError(
                f"ban_capacity must be the network's f = {self.tolerated} (or None), got {self.ban_capacity}: "
                "the protocol's ledger bans at most f members at once"
            )

    @property
    def tolerated(self) -> int:
        """Members that may be banned at once: the BFT bound f = (n - 1) // 3."""
        return (self.members - 1) // 3


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """The agreed model after one round, scored on the held-out test set.

    Attributes:
        attack_success: for a backdoor, the share of triggered non-target test samples classified as
            the target; None otherwise.
        byzantine_selected: how many attackers were among the inputs the rule used.
        saturated: update values that hit the fixed-point bound this round.
        banned: members excluded from the next round (ledger runs only).
        reputation: every member's Q16 reputation after the round (ledger runs only).
        inputs: the round's input set (members, ascending).
        model_digest, ledger_digest, round_hash: the committed state's digests and round hash, as a
            network committing the same inputs would have them.
    """

    round: int
    accuracy: float
    loss: float
    attack_success: float | None
    byzantine_selected: int
    saturated: int
    banned: tuple[int, ...] = ()
    reputation: tuple[int, ...] = ()
    inputs: tuple[int, ...] = ()
    model_digest: bytes = b""
    ledger_digest: bytes = b""
    round_hash: bytes = b""


@dataclass(frozen=True)
class FederationResult:
    """A run: ``parameters`` is the final agreed model decoded (``state.model / 2**frac_bits``)."""

    config: FederationConfig
    byzantine: tuple[int, ...]
    records: tuple[RoundRecord, ...]
    parameters: npt.NDArray[np.float64]
    genesis: Genesis
    state: AgreedState

    @property
    def final_accuracy(self) -> float:
        return self.records[-1].accuracy


def _attack_success(model: Model, params: npt.NDArray[np.float64], dataset: Dataset, attack: Backdoor) -> float:
    return attack.success(model.logits(params, attack.stamp(dataset.test_features)), dataset.test_labels)


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


def _member_identity(seed: int, member: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"qora-p2p/federation/v1" + seed.to_bytes(8, "big") + member.to_bytes(2, "big")).digest())


def federation_genesis(config: FederationConfig, spec: ModelSpec) -> Genesis:
    """The genesis of the network ``config`` describes, for a model ``spec`` (`run_federation`).

    Raises:
        LearningError: rule parameters a genesis cannot hold (``center`` other than "previous",
            values that are not numbers or strings).
    """
    for key, value in config.rule_params.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise LearningError(f"rule parameter {key!r} must be a number or a string, got {type(value).__name__}")
    if config.rule_params.get("center", "previous") != "previous":
        raise LearningError(f"rule parameter 'center' must be 'previous' or absent (zero), got {config.rule_params['center']!r}")
    members = tuple(
        Member(f"member-{k}", _member_identity(config.seed, k).public_key, "127.0.0.1", MEMBER_PORT_BASE + k)
        for k in range(config.members)
    )
    genesis = Genesis(f"federation-{config.seed}", members, spec, config.rule, dict(config.rule_params), config.frac_bits, config.ledger)
    if genesis.weighted and not config.reputation_weights:
        raise LearningError(f"{config.rule} with a ledger is reputation-weighted in the protocol; reputation_weights=False does not exist there")
    # Without a ledger every member is an input each round; with one, up to f may be banned.
    smallest = genesis.size - (genesis.faulty if genesis.ledger is not None else 0)
    validate(genesis.rule, smallest, spec.dimension, weighted=genesis.weighted, **genesis.fixed_rule_params())
    return genesis


def _start(config: FederationConfig, model: Model | None, dataset: Dataset) -> tuple[Model, Genesis, AgreedState]:
    if model is None:
        model = build_model(config.model, dataset.features, dataset.classes, config.hidden)
        hidden = config.hidden if config.model == "mlp" else ()
        spec = ModelSpec(config.model, model.layout.dimension, config.seed, dataset.features, dataset.classes, hidden)
        genesis = federation_genesis(config, spec)
        return model, genesis, genesis_state(genesis, initial_model(genesis))
    genesis = federation_genesis(config, ModelSpec("synthetic", model.layout.dimension, config.seed))
    initial = encode(model.initial(config.seed), genesis.frac_bits).values.astype(np.int64)
    return model, genesis, genesis_state(genesis, initial)


def _forge(
    genesis: Genesis,
    state: AgreedState,
    inputs: tuple[int, ...],
    updates: npt.NDArray[np.float64],
    byzantine: set[int],
    attack: Attack,
    rng: np.random.Generator,
) -> None:
    """Replace the attackers' rows of ``updates`` (one per member of ``inputs``) by their forgeries, in place."""
    honest = [row for row, member in enumerate(inputs) if member not in byzantine]
    attackers = [row for row, member in enumerate(inputs) if member in byzantine]
    view = round_view(
        genesis, state, [inputs[row] for row in honest], updates[honest], [inputs[row] for row in attackers], updates[attackers], rng
    )
    updates[attackers] = attack.forge(view)


def run_federation(
    config: FederationConfig,
    *,
    model: Model | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FederationResult:
    """Run ``config.rounds`` rounds of the protocol's round transition; ``on_round`` sees each
    record as it is made.

    Args:
        model: your own model (any `Model`, e.g. a `TorchModel`); replaces ``config.model``.

    Raises:
        LearningError: an invalid dataset, model, partition, attack or rule setting.
        AggregationError: a rule that cannot run on this many members with these parameters.
    """
    dataset = load_dataset(config.dataset, seed=config.seed)
    model, genesis, state = _start(config, model, dataset)
    attack = resolve_attack(config.attack, config.attack_params)
    selection = np.random.default_rng([config.seed, 1])
    byzantine = {int(k) for k in selection.choice(config.members, size=config.byzantine, replace=False)}
    trainers = _trainers(config, dataset, model, byzantine, attack)
    attack_rng = np.random.default_rng([config.seed, 4])
    genesis_hash, scale = genesis.hash, float(2**genesis.frac_bits)
    params = state.model.astype(np.float64) / scale
    records = []
    for round_number in range(1, config.rounds + 1):
        inputs = eligible_members(genesis, state, round_number)
        updates = np.stack([trainers[k].update(params) for k in inputs])
        if any(k in byzantine for k in inputs):
            _forge(genesis, state, inputs, updates, byzantine, attack, attack_rng)
        encoded = encode(updates, genesis.frac_bits)
        payloads = [to_bytes(row) for row in encoded.values]
        result = compute_round(genesis, state, inputs, payloads)
        digests = tuple((k, hashlib.sha256(payload).digest()) for k, payload in zip(inputs, payloads, strict=True))
        value = Value(round_number, state.last_hash, digests, (), result.model_digest, result.ledger_digest)
        state = result.state.committed(value.id(genesis_hash))
        params = state.model.astype(np.float64) / scale
        ledger = state.ledger
        scores = evaluate(model, params, dataset.test_features, dataset.test_labels)
        record = RoundRecord(
            round_number,
            scores.accuracy,
            scores.loss,
            _attack_success(model, params, dataset, attack) if isinstance(attack, Backdoor) else None,
            sum(1 for member in result.selected if member in byzantine),
            encoded.saturated,
            () if ledger is None else tuple(k for k in range(genesis.size) if not ledger.standings[k].eligible(round_number + 1)),
            () if ledger is None else tuple(standing.reputation for standing in ledger.standings),
            inputs,
            result.model_digest,
            result.ledger_digest,
            state.last_hash,
        )
        records.append(record)
        if on_round is not None:
            on_round(record)
    return FederationResult(config, tuple(sorted(byzantine)), tuple(records), params, genesis, state)
