"""The durable store: the last-signed guard, atomic commits, restore, and refusal of foreign data."""

from __future__ import annotations

import numpy as np
import pytest

from qora_p2p.errors import LocalProtocolError
from qora_p2p.fixedpoint import to_bytes
from qora_p2p.identity import Identity
from qora_p2p.node.store import DATABASE_NAME, DoubleSignError, Store, StoreError
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.messages import Precommit, Record, Value
from qora_p2p.protocol.state import chain_origin, compute_round, genesis_state


def _network(members: int = 4, seed: int = 0) -> tuple[Genesis, list[Identity]]:
    identities = [Identity.from_seed(bytes([seed, index]) * 16) for index in range(members)]
    genesis = Genesis(
        f"store-test-{seed}",
        tuple(Member(f"m{index}", identity.public_key, "127.0.0.1", 9000 + index) for index, identity in enumerate(identities)),
        ModelSpec("synthetic", 8, 0),
        "trimmed_mean",
        {"trim": 1},
    )
    return genesis, identities


def _committed_round(genesis: Genesis, identities: list[Identity], state):
    payloads = [to_bytes(np.full(8, 100 * (index + 1), dtype=np.int32)) for index in range(genesis.size)]
    result = compute_round(genesis, state, tuple(range(genesis.size)), tuple(payloads), ())
    value = Value(state.round + 1, state.last_hash, tuple((index, bytes([index]) * 32) for index in range(genesis.size)), (), result.model_digest, result.ledger_digest)
    round_hash = value.id(genesis.hash)
    certificate = tuple(
        (voter, Precommit.create(identities[voter], genesis.hash, value.round, 0, round_hash, voter).signature) for voter in range(genesis.quorum)
    )
    return Record(value, 0, certificate), result.state.committed(round_hash)


def test_sign_guard_refuses_a_second_content_even_after_reopening(tmp_path):
    """A slot signed once can be re-recorded with the same content, never with another, across restarts."""
    genesis, identities = _network()
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        store.sign(("prevote", 1, 0), b"a" * 32)
        store.sign(("prevote", 1, 0), b"a" * 32)
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        with pytest.raises(DoubleSignError):
            store.sign(("prevote", 1, 0), b"b" * 32)
        restored = store.restore()
    assert restored.signed == {("prevote", 1, 0): b"a" * 32}


def test_commit_persists_record_and_state_and_drops_finished_slots(tmp_path):
    """After a commit and a reopen: the state and record are back, slots of the committed round are gone,
    slots and our payload of the next round are kept."""
    genesis, identities = _network()
    state = genesis_state(genesis)
    record, new_state = _committed_round(genesis, identities, state)
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        store.sign(("update", 1, 0), b"u" * 32, b"payload-1")
        store.sign(("update", 2, 0), b"v" * 32, b"payload-2")
        store.commit(record, new_state)
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        restored = store.restore()
        assert [stored for stored, _ in store.records()] == [record]
    assert restored.state.round == 1 and restored.state.last_hash == record.value.id(genesis.hash)
    assert restored.state.model_digest() == new_state.model_digest()
    assert restored.state.ledger_digest() == new_state.ledger_digest()
    assert restored.signed == {("update", 2, 0): b"v" * 32}
    assert restored.own_payload == b"payload-2"
    assert record.value.prev_hash == chain_origin(genesis)


def test_a_failed_commit_leaves_the_previous_round(tmp_path):
    """A commit whose state does not follow its record is refused and writes nothing."""
    genesis, identities = _network()
    record, _new_state = _committed_round(genesis, identities, genesis_state(genesis))
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        with pytest.raises(LocalProtocolError, match="does not follow"):
            store.commit(record, genesis_state(genesis))
        assert store.last_round() == 0 and list(store.records()) == []


def test_data_directory_of_another_network_or_member_is_refused(tmp_path):
    """A data directory belongs to one member of one network."""
    genesis, identities = _network()
    other, _ = _network(seed=1)
    Store(tmp_path, genesis, identities[0].public_key).close()
    with pytest.raises(StoreError, match="belongs to network"):
        Store(tmp_path, other, identities[0].public_key)
    with pytest.raises(StoreError, match="another member"):
        Store(tmp_path, genesis, identities[1].public_key)


def test_corrupt_database_is_a_store_error(tmp_path):
    """Garbage where the database should be gives a StoreError, not a crash."""
    genesis, identities = _network()
    (tmp_path / DATABASE_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        Store(tmp_path, genesis, identities[0].public_key)


def test_readonly_store_needs_an_existing_database(tmp_path):
    """inspect on an empty directory says there is no database."""
    genesis, identities = _network()
    with pytest.raises(StoreError, match="no node database"):
        Store(tmp_path, genesis, identities[0].public_key, readonly=True)
    assert not (tmp_path / DATABASE_NAME).exists()


def test_an_existing_empty_database_is_refused_not_taken_for_a_new_member(tmp_path):
    """A 0-byte node.sqlite3 (an emptied disk) would forget every signed slot: opening it is a
    StoreError that says what happened, and the file is left as it was."""
    genesis, identities = _network()
    (tmp_path / DATABASE_NAME).write_bytes(b"")
    with pytest.raises(StoreError, match="exists but is empty"):
        Store(tmp_path, genesis, identities[0].public_key)
    assert (tmp_path / DATABASE_NAME).stat().st_size == 0


def test_one_process_writes_a_data_directory(tmp_path):
    """While a store is open on a directory, another writer is refused; read-only inspect is not,
    and once the first is closed the directory can be opened again."""

    genesis, identities = _network()
    first = Store(tmp_path, genesis, identities[0].public_key)
    with pytest.raises(StoreError, match="in use by another process"):
        Store(tmp_path, genesis, identities[0].public_key)
    Store(tmp_path, genesis, identities[0].public_key, readonly=True).close()
    first.close()
    Store(tmp_path, genesis, identities[0].public_key).close()
