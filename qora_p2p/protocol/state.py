"""The agreed state of a network and the pure function that advances it by one round.

Theory of operation
-------------------
After round ``r`` every honest member holds the same `AgreedState`:

* ``round``: the last committed round (0 at genesis) and ``last_hash``, its round hash (at genesis,
  a hash of the genesis hash);
* ``model``: the global model as int64 fixed point (``frac_bits`` fractional bits). It starts as the
  seeded initial model, encoded, and each round adds the round's aggregate, exactly: no float ever
  touches agreed state;
* ``aggregate``: the last round's aggregate (int32), the centre of centered clipping and the
  reference direction of the reputation ledger;
* ``ledger``: the reputation ledger (`qora_p2p.protocol.ledger`), or None when the genesis disables it.

`compute_round` is the whole state transition: given the state, the round's input set (updates in
member order) and committed evidence, it aggregates with the genesis rule (reputation weights and
previous-aggregate centre when configured), adds the aggregate to the model, updates the ledger from
each input's deviation and alignment, and returns the new state with its digests. It is
deterministic: same inputs, same bytes, on every machine. ``model_digest`` covers the model and
the aggregate; ``ledger_digest`` the ledger; both go into the round's value and so into its hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from qora_p2p.aggregation import aggregate, inner_products
from qora_p2p.errors import FixedPointError, LocalProtocolError, MessageError
from qora_p2p.fixedpoint import from_bytes, stack_vectors, to_bytes
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.ledger import ALIGNED, NO_DIRECTION, OPPOSING, Ledger, Observation, apply_round

__all__ = [
    "AgreedState",
    "RoundResult",
    "chain_origin",
    "compute_round",
    "contributing_members",
    "eligible_members",
    "genesis_state",
    "snapshot_bytes",
    "state_from_snapshot",
]

MODEL_VALUE_MAX = 2**62  # the model accumulates int32 aggregates; this bound is never near


def chain_origin(genesis: Genesis) -> bytes:
    """``H[0]``: the hash every chain of this network starts from."""
    return hashlib.sha256(b"qora-p2p/chain/v1" + genesis.hash).digest()


@dataclass(frozen=True)
class AgreedState:
    """Everything honest members agree on after ``round``."""

    round: int
    last_hash: bytes
    model: npt.NDArray[np.int64]
    aggregate: npt.NDArray[np.int32]
    ledger: Ledger | None

    def model_digest(self) -> bytes:
        return _model_digest(self.model, self.aggregate)

    def ledger_digest(self) -> bytes:
        """Remembered after the first call: the ledger (frozen, of frozen standings) cannot change,
        and every member asks for it several times a round."""
        digest: bytes | None = self.__dict__.get("_ledger_digest")
        if digest is None:
            digest = hashlib.sha256(b"no ledger").digest() if self.ledger is None else self.ledger.digest()
            self.__dict__["_ledger_digest"] = digest  # not a field: equality and repr ignore it
        return digest

    def committed(self, round_hash: bytes) -> AgreedState:
        """This state as committed under ``round_hash`` (`compute_round` cannot know the hash: the
        hash covers the value, which covers this state's digests)."""
        return replace(self, last_hash=round_hash)


def _model_digest(model: npt.NDArray[np.int64], aggregate_vector: npt.NDArray[np.int32]) -> bytes:
    digest = hashlib.sha256(b"qora-p2p/model/v1")
    digest.update(model.astype("<i8", copy=False).tobytes())
    digest.update(aggregate_vector.astype("<i4", copy=False).tobytes())
    return digest.digest()


def genesis_state(genesis: Genesis, model: npt.NDArray[np.int64] | None = None) -> AgreedState:
    """The state before round 1.

    Args:
        model: the initial model in fixed point (`qora_p2p.learning.genesis_model.initial_model`);
            a synthetic genesis starts from zeros and needs none.

    Raises:
        LocalProtocolError: a trained model's genesis without its initial model, or one of the
            wrong length.
    """
    dimension = genesis.model.dimension
    if model is None:
        if genesis.model.kind != "synthetic":
            raise LocalProtocolError(f"a {genesis.model.kind} genesis needs its initial model (learning.genesis_model.initial_model)")
        model = np.zeros(dimension, dtype=np.int64)
    if model.shape != (dimension,) or model.dtype != np.int64:
        raise LocalProtocolError(f"the initial model must be int64 of shape ({dimension},), got {model.dtype} {model.shape}")
    ledger = None if genesis.ledger is None else Ledger.genesis(genesis.size, genesis.ledger)
    return AgreedState(0, chain_origin(genesis), model, np.zeros(dimension, dtype=np.int32), ledger)


def eligible_members(genesis: Genesis, state: AgreedState, round_number: int) -> tuple[int, ...]:
    """Members whose updates are aggregated in ``round_number`` (not banned)."""
    if state.ledger is None:
        return tuple(range(genesis.size))
    return state.ledger.eligible(round_number)


def contributing_members(genesis: Genesis, state: AgreedState) -> tuple[int, ...]:
    """Members whose updates a round may list: all but those proven to have equivocated. A member
    under a reputation ban still sends its update and counts towards the round's ``n - f`` inputs
    (it is not aggregated): with f members down, the rest must still make a round, whatever the
    ledger has banned."""
    if state.ledger is None:
        return tuple(range(genesis.size))
    return tuple(member for member, standing in enumerate(state.ledger.standings) if not standing.proven)


@dataclass(frozen=True)
class RoundResult:
    """The outcome of `compute_round`."""

    state: AgreedState
    selected: tuple[int, ...]
    deviation: tuple[int, ...]
    banned: tuple[int, ...]
    proven: tuple[int, ...]

    @property
    def model_digest(self) -> bytes:
        return self.state.model_digest()

    @property
    def ledger_digest(self) -> bytes:
        return self.state.ledger_digest()


def compute_round(
    genesis: Genesis,
    state: AgreedState,
    senders: Sequence[int],
    payloads: Sequence[bytes],
    culprits: Sequence[int] = (),
) -> RoundResult:
    """Advance ``state`` by one round.

    The rule aggregates the inputs of members eligible in the round (not banned); the others are
    listed but neither aggregated nor scored. With fewer than ``n - f`` eligible inputs (members
    down while others are banned) the round is a *null round*: the model and last aggregate stay,
    the ledger only applies evidence, ban expiries and bans, and the chain moves on (so bans expire).

    Args:
        senders: the input set's members, ascending (the canonical order is member order).
        payloads: their update payloads (little-endian int32, ``4 * P`` bytes each), same order.
        culprits: members proven to have equivocated by this round's committed evidence.

    Raises:
        LocalProtocolError: inputs the protocol should never produce (unsorted senders, wrong
            sizes); every value is validated before it gets here.
        AggregationError: the rule cannot run on these inputs (genesis validation prevents it).
    """
    if list(senders) != sorted(set(senders)) or len(senders) != len(payloads) or not senders:
        raise LocalProtocolError("compute_round needs distinct ascending senders, one payload each")
    round_number = state.round + 1
    dimension = genesis.model.dimension
    eligible = set(eligible_members(genesis, state, round_number))
    rows = [row for row, sender in enumerate(senders) if sender in eligible]
    if len(rows) < genesis.inputs_min:
        return _null_round(genesis, state, round_number, culprits)
    senders = [senders[row] for row in rows]
    matrix = stack_vectors([payloads[row] for row in rows], dimension)
    params = genesis.fixed_rule_params()
    if genesis.centered_on_previous:
        params["center"] = state.aggregate
    if genesis.weighted:
        assert state.ledger is not None and genesis.ledger is not None
        params["weights"] = state.ledger.weights(senders, genesis.ledger)
    member_keys = [genesis.members[sender].public_key for sender in senders]
    result = aggregate(genesis.rule, matrix, senders=member_keys, **params)
    model = state.model + result.vector
    if np.abs(model).max(initial=0) > MODEL_VALUE_MAX:
        raise LocalProtocolError("model left the int64 fixed-point range")
    ledger = state.ledger
    banned: tuple[int, ...] = ()
    proven: tuple[int, ...] = ()
    if ledger is not None:
        assert genesis.ledger is not None
        directions = _directions(matrix, state.aggregate, round_number)
        observations = [
            Observation(sender, int(result.deviation[row]), directions[row]) for row, sender in enumerate(senders)
        ]
        ledger, effects = apply_round(ledger, genesis.ledger, round_number, observations, culprits, ban_capacity=genesis.faulty)
        banned, proven = effects.banned, effects.proven
    # last_hash stays the previous hash until the core commits the value (`AgreedState.committed`).
    new_state = AgreedState(round_number, state.last_hash, model, result.vector, ledger)
    return RoundResult(
        new_state,
        tuple(senders[row] for row in result.selected),
        tuple(int(value) for value in result.deviation),
        banned,
        proven,
    )


def _directions(matrix: npt.NDArray[np.int32], previous: npt.NDArray[np.int32], round_number: int) -> list[int]:
    """Each row's direction against the previous round's aggregate (`qora_p2p.protocol.ledger`):
    the sign of the exact inner product, and none in round 1 or for a row that is the previous
    aggregate itself."""
    if round_number == 1:
        return [NO_DIRECTION] * len(matrix)
    directions = []
    for row, product in zip(matrix, inner_products(matrix, previous), strict=True):
        if product == 0 or np.array_equal(row, previous):
            directions.append(NO_DIRECTION)
        else:
            directions.append(ALIGNED if product > 0 else OPPOSING)
    return directions


def _null_round(genesis: Genesis, state: AgreedState, round_number: int, culprits: Sequence[int]) -> RoundResult:
    """A round with too few eligible inputs to aggregate robustly (see `compute_round`)."""
    ledger = state.ledger
    banned: tuple[int, ...] = ()
    proven: tuple[int, ...] = ()
    if ledger is not None:
        assert genesis.ledger is not None
        ledger, effects = apply_round(ledger, genesis.ledger, round_number, (), culprits, ban_capacity=genesis.faulty, scored=False)
        banned, proven = effects.banned, effects.proven
    new_state = AgreedState(round_number, state.last_hash, state.model, state.aggregate, ledger)
    return RoundResult(new_state, (), (), banned, proven)


def snapshot_bytes(state: AgreedState) -> tuple[bytes, bytes, bytes]:
    """(model, aggregate, ledger) bytes of a state, for catch-up snapshots."""
    ledger = b"" if state.ledger is None else state.ledger.encode()
    return state.model.astype("<i8").tobytes(), to_bytes(state.aggregate), ledger


def state_from_snapshot(
    genesis: Genesis, round_number: int, round_hash: bytes, model: bytes, aggregate_bytes: bytes, ledger: bytes
) -> AgreedState:
    """Rebuild a state from snapshot bytes (the caller checks its digests against a certified value).

    Raises:
        MessageError: bytes of the wrong size or a malformed ledger.
    """
    dimension = genesis.model.dimension
    if len(model) != 8 * dimension:
        raise MessageError(f"snapshot model has {len(model)} bytes, expected {8 * dimension}")
    try:
        vector = from_bytes(aggregate_bytes, dimension)
    except FixedPointError as error:
        raise MessageError(f"snapshot aggregate: {error}") from error
    decoded = None
    if genesis.ledger is not None:
        decoded = Ledger.decode(ledger, genesis.size)
    elif ledger:
        raise MessageError("snapshot carries a ledger but the genesis has none")
    values = np.frombuffer(model, dtype="<i8").astype(np.int64)
    return AgreedState(round_number, round_hash, values, vector, decoded)
