"""The state transition: deterministic, exact, and catch-up snapshots that verify."""

import numpy as np
import pytest

from qora_p2p.errors import LocalProtocolError, MessageError
from qora_p2p.fixedpoint import encode, to_bytes
from qora_p2p.identity import Identity
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.ledger import LedgerParams
from qora_p2p.protocol.state import compute_round, genesis_state, snapshot_bytes, state_from_snapshot

MEMBERS = tuple(Member(f"m{i}", Identity.from_seed(bytes([i + 1]) * 32).public_key, "127.0.0.1", 7000 + i) for i in range(4))
GENESIS = Genesis("state-test", MEMBERS, ModelSpec("synthetic", 8), "centered_clipping", {"tau_scale": 1.0, "center": "previous"}, ledger=LedgerParams())


def payloads(scale=1.0, count=4, seed=0):
    rng = np.random.default_rng(seed)
    return [to_bytes(encode(scale * rng.normal(0, 0.01, 8), 16).values) for _ in range(count)]


def test_a_round_adds_the_aggregate_to_the_model_and_updates_the_ledger():
    """model' = model + aggregate (int64, exact). Round 1 has no previous aggregate, so no member
    has a direction and reputations stay; in round 2 updates along the previous aggregate earn the
    reward, one against it (not outlying) earns nothing, and one resending the previous aggregate
    earns nothing (a free rider)."""
    state = genesis_state(GENESIS)
    result = compute_round(GENESIS, state, [0, 1, 2, 3], payloads())
    assert result.state.round == 1 and result.state.ledger is not None
    assert (result.state.model == state.model + result.state.aggregate).all()
    initial = LedgerParams().initial
    assert [standing.reputation for standing in result.state.ledger.standings] == [initial] * 4
    assert result.model_digest != state.model_digest() and result.ledger_digest == state.ledger_digest()
    first = result.state.committed(b"\x01" * 32)
    previous = first.aggregate.astype(np.float64) / 2**16
    rng = np.random.default_rng(5)
    rows = [previous + rng.normal(0, 0.001, 8), previous + rng.normal(0, 0.001, 8), -previous]
    second = [to_bytes(encode(row, 16).values) for row in rows] + [to_bytes(first.aggregate)]
    after = compute_round(GENESIS, first, [0, 1, 2, 3], second)
    assert after.state.ledger is not None
    reward = LedgerParams().reward
    assert [standing.reputation for standing in after.state.ledger.standings] == [initial + reward, initial + reward, initial, initial]


def test_same_inputs_same_bytes():
    """Two computations of the same round give identical digests (the validator's recomputation)."""
    state = genesis_state(GENESIS)
    one = compute_round(GENESIS, state, [0, 1, 2, 3], payloads())
    two = compute_round(GENESIS, state, [0, 1, 2, 3], payloads())
    assert (one.model_digest, one.ledger_digest) == (two.model_digest, two.ledger_digest)


def test_evidence_bans_for_good_in_the_committing_round():
    """Culprits named by committed evidence are proven in the new ledger."""
    result = compute_round(GENESIS, genesis_state(GENESIS), [0, 1, 2, 3], payloads(), culprits=[3])
    assert result.state.ledger is not None
    assert result.proven == (3,) and result.state.ledger.standings[3].proven
    assert 3 not in result.state.ledger.eligible(2)


def test_unsorted_or_mismatched_inputs_are_bugs():
    """compute_round refuses inputs the protocol never produces."""
    with pytest.raises(LocalProtocolError):
        compute_round(GENESIS, genesis_state(GENESIS), [1, 0], payloads(count=2))
    with pytest.raises(LocalProtocolError):
        compute_round(GENESIS, genesis_state(GENESIS), [0, 1], payloads(count=3))


def test_snapshots_round_trip_and_reject_garbage():
    """A state rebuilt from its snapshot bytes has the same digests; malformed bytes are errors."""
    state = compute_round(GENESIS, genesis_state(GENESIS), [0, 1, 2, 3], payloads()).state.committed(b"h" * 32)
    model, aggregate_bytes, ledger = snapshot_bytes(state)
    rebuilt = state_from_snapshot(GENESIS, state.round, state.last_hash, model, aggregate_bytes, ledger)
    assert rebuilt.model_digest() == state.model_digest() and rebuilt.ledger_digest() == state.ledger_digest()
    with pytest.raises(MessageError):
        state_from_snapshot(GENESIS, 1, b"h" * 32, model[:-8], aggregate_bytes, ledger)
    with pytest.raises(MessageError):
        state_from_snapshot(GENESIS, 1, b"h" * 32, model, aggregate_bytes, ledger + b"\x00")


def test_a_remembered_ledger_digest_is_the_ledgers_and_each_state_has_its_own():
    state = genesis_state(GENESIS)
    after = compute_round(GENESIS, state, [0, 1, 2, 3], payloads(), [3]).state  # evidence bans member 3
    assert after.ledger is not None and state.ledger is not None and after.ledger != state.ledger
    for one in (state, after, after.committed(b"\x02" * 32)):
        assert one.ledger_digest() == one.ledger_digest() == (one.ledger.digest() if one.ledger else None)
    assert state.ledger_digest() != after.ledger_digest()
    assert "_ledger_digest" not in repr(state)
