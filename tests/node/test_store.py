"""The durable store: the last-signed guard, atomic commits, restore, refusal of foreign data, and
damage that is noticed (checksums, SQLite's own check) instead of used."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qora_p2p.errors import DiskFull, LocalProtocolError
from qora_p2p.fixedpoint import to_bytes
from qora_p2p.identity import Identity
from qora_p2p.node import store as store_module
from qora_p2p.node.store import (
    DATABASE_NAME,
    PAGE_BYTES,
    ROW_DIGEST_BYTES,
    DoubleSignError,
    Store,
    StoreDamaged,
    StoreError,
    _row_digest,
    open_genesis_of,
)
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec, dump_genesis
from qora_p2p.protocol.messages import Precommit, Record, Value
from qora_p2p.protocol.state import chain_origin, compute_round, genesis_state, snapshot_bytes


def _network(members: int = 4, seed: int = 0, dimension: int = 8) -> tuple[Genesis, list[Identity]]:
    identities = [Identity.from_seed(bytes([seed, index]) * 16) for index in range(members)]
    genesis = Genesis(
        f"store-test-{seed}",
        tuple(Member(f"m{index}", identity.public_key, "127.0.0.1", 9000 + index) for index, identity in enumerate(identities)),
        ModelSpec("synthetic", dimension, 0),
        "trimmed_mean",
        {"trim": 1},
    )
    return genesis, identities


def _committed_round(genesis: Genesis, identities: list[Identity], state):
    payloads = [to_bytes(np.full(genesis.model.dimension, 100 * (index + 1), dtype=np.int32)) for index in range(genesis.size)]
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


# ------------------------------------------------------------------------------------- damage


def _flip(path: Path, needle: bytes) -> None:
    """Flip one bit in the middle of every copy of ``needle`` in the file (bit rot under SQLite,
    which keeps no checksums of its own: the file stays a valid database)."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, "the bytes to damage are in the database file"
    while at >= 0:
        data[at + len(needle) // 2] ^= 0x10
        at = data.find(needle, at + 1)
    path.write_bytes(bytes(data))


def _one_round(tmp_path: Path):
    """A closed database holding one committed round, a signed slot of the next, and the genesis."""
    genesis, identities = _network()
    record, state = _committed_round(genesis, identities, genesis_state(genesis))
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        store.commit(record, state)
        store.sign(("update", 2, 0), b"u" * 32, b"payload-of-round-2")
    return genesis, identities, record, state


def _refused(tmp_path: Path, genesis: Genesis, key: bytes, names: str) -> None:
    """Opening to write and inspecting both refuse with StoreDamaged naming the damage and the way back."""
    with pytest.raises(StoreDamaged, match=names) as opened:
        Store(tmp_path, genesis, key)
    assert "To recover: stop the node, move" in str(opened.value) and "this member's key" in str(opened.value)
    with pytest.raises(StoreDamaged, match=names), Store(tmp_path, genesis, key, readonly=True) as store:
        store.verify()


def test_a_bit_flip_in_a_stored_record_is_refused_as_damage(tmp_path):
    """A flipped bit inside a committed record (which would still decode, and be served to peers)
    is refused when the store opens, naming the record and the recovery path."""
    genesis, identities, record, _ = _one_round(tmp_path)
    _flip(tmp_path / DATABASE_NAME, record.encode())
    _refused(tmp_path, genesis, identities[0].public_key, "record of round 1 does not match its checksum")


def test_a_bit_flip_in_the_stored_state_is_refused_as_damage(tmp_path):
    """A flipped bit in the stored model (a model that silently differs from the agreed one) is damage."""
    genesis, identities, _, state = _one_round(tmp_path)
    _flip(tmp_path / DATABASE_NAME, snapshot_bytes(state)[0])
    _refused(tmp_path, genesis, identities[0].public_key, r"the state \(round 1\) does not match its checksum")


def test_a_bit_flip_in_a_signed_slot_is_refused_as_damage(tmp_path):
    """The last-signed guard itself is checked: a flipped payload would re-send another update."""
    genesis, identities, _, _ = _one_round(tmp_path)
    _flip(tmp_path / DATABASE_NAME, b"payload-of-round-2")
    _refused(tmp_path, genesis, identities[0].public_key, r"signed slot \('update', 2, 0\) does not match")


@pytest.mark.parametrize("row", ["genesis", "genesis_hash"])
def test_a_bit_flip_in_the_stored_genesis_is_damage_not_another_network(tmp_path, row):
    """A flipped bit in the genesis text or hash reads as damage (before, a flipped hash said the
    directory belonged to another network), for the node and for inspect, which has no key."""
    genesis, identities, _, _ = _one_round(tmp_path)
    _flip(tmp_path / DATABASE_NAME, dump_genesis(genesis).encode() if row == "genesis" else genesis.hash)
    _refused(tmp_path, genesis, identities[0].public_key, f"meta '{row}' does not match its checksum")
    with pytest.raises(StoreDamaged, match=f"meta '{row}'"):
        open_genesis_of(tmp_path)


def test_a_damaged_file_header_is_refused_as_damage(tmp_path):
    """Bytes of the SQLite header overwritten: SQLite cannot read the file; a StoreDamaged with the
    recovery path, never a traceback."""
    genesis, identities, _, _ = _one_round(tmp_path)
    path = tmp_path / DATABASE_NAME
    data = bytearray(path.read_bytes())
    data[0:6] = b"SQLitX"
    path.write_bytes(bytes(data))
    _refused(tmp_path, genesis, identities[0].public_key, "SQLite cannot read it")
    with pytest.raises(StoreDamaged, match="SQLite cannot read it"):
        open_genesis_of(tmp_path)


def test_a_broken_table_page_is_found_by_sqlites_own_check(tmp_path):
    """The records table's page overwritten with garbage: SQLite's structure check names it."""
    genesis, identities, _, _ = _one_round(tmp_path)
    path = tmp_path / DATABASE_NAME
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'records'").fetchone()
    db.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * page_size : root * page_size] = bytes([0xA5]) * page_size
    path.write_bytes(bytes(data))
    _refused(tmp_path, genesis, identities[0].public_key, "SQLite")


def test_a_database_of_the_schema_without_checksums_is_refused_with_the_way_forward(tmp_path):
    """A schema 1 database (rows without checksums) is refused, saying what to do."""
    genesis, identities = _network()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', 1)")
    db.close()
    with pytest.raises(StoreError, match=r"older qora-p2p \(schema 1.*start the node again with this member's key"):
        Store(tmp_path, genesis, identities[0].public_key)


def test_an_undamaged_database_verifies_and_reads_back(tmp_path):
    """The checks pass on what the store wrote itself (the damage tests above are not vacuous)."""
    genesis, identities, record, state = _one_round(tmp_path)
    with Store(tmp_path, genesis, identities[0].public_key, readonly=True) as store:
        store.verify()
        records, restored, _ = store.chain()
    assert [stored for stored, _ in records] == [record] and restored.model_digest() == state.model_digest()
    assert open_genesis_of(tmp_path) == (genesis, identities[0].public_key)


def _page_size(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    return int(size)


def test_a_new_database_has_large_pages_and_an_old_one_keeps_its_own(tmp_path, monkeypatch):
    """New databases use 64 KiB pages (a model is a few writes, not hundreds); a database made with
    SQLite's default 4 KiB pages opens, commits and reads back as before, and keeps its page size."""
    genesis, identities, _, _ = _one_round(tmp_path / "new")
    assert _page_size(tmp_path / "new") == PAGE_BYTES == 65536
    monkeypatch.setattr(store_module, "PAGE_BYTES", 4096)
    old = tmp_path / "old"
    _, _, record, state = _one_round(old)
    monkeypatch.setattr(store_module, "PAGE_BYTES", 65536)
    assert _page_size(old) == 4096
    next_record, next_state = _committed_round(genesis, identities, state)
    with Store(old, genesis, identities[0].public_key) as store:
        store.commit(next_record, next_state)
    with Store(old, genesis, identities[0].public_key, readonly=True) as store:
        store.verify()
        records, restored, _ = store.chain()
    assert [stored for stored, _ in records] == [record, next_record]
    assert restored.model_digest() == next_state.model_digest()
    assert _page_size(old) == 4096


# ------------------------------------------------------------------------------------- full disk

BIG = 40_000  # a model whose payload and state need pages of their own (160 KB: over two 64 KiB pages)


def _full(store: Store) -> None:
    """No page beyond those the database has (SQLite's own limit: a disk with no room left)."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_while_signing_records_nothing_and_raises_disk_full(tmp_path):
    """SQLITE_FULL while recording a slot: DiskFull, nothing recorded, the database intact and
    usable once there is room again."""
    genesis, identities = _network(dimension=BIG)
    payload = bytes(4 * BIG)
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        _full(store)
        with pytest.raises(DiskFull, match=r"the disk is full .* while recording signed slot .*rolled back"):
            store.sign(("update", 1, 0), b"u" * 32, payload)
        assert store.restore().signed == {}
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        store.verify()
        assert store.restore().signed == {}
        store.sign(("update", 1, 0), b"u" * 32, payload)
        assert store.restore().own_payload == payload


def test_a_full_disk_while_committing_leaves_the_previous_round(tmp_path):
    """SQLITE_FULL while writing a round: DiskFull, and the database still holds the round before
    (no record without its state, nothing half-written), with its signed slots."""
    genesis, identities = _network(dimension=BIG)
    record, state = _committed_round(genesis, identities, genesis_state(genesis))
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        store.sign(("precommit", 1, 0), b"p" * 32)
        _full(store)
        with pytest.raises(DiskFull, match="while writing round 1"):
            store.commit(record, state)
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        store.verify()
        restored = store.restore()
        assert store.last_round() == 0 and list(store.records()) == []
        assert restored.signed == {("precommit", 1, 0): b"p" * 32}
        store.commit(record, state)
        assert store.last_round() == 1


def test_a_database_is_guarded_once_it_has_recorded_a_signature(tmp_path):
    """A new database (or one whose slots were all pruned before any was recorded) is not guarded;
    once a slot is recorded it is, across reopening and after the slot is pruned at a commit."""
    genesis, identities = _network()
    record, state = _committed_round(genesis, identities, genesis_state(genesis))
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        assert not store.restore().guarded
        store.commit(record, state)
        assert not store.restore().guarded, "caught up, but nothing signed in this database"
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        assert not store.restore().guarded
        store.sign(("update", 2, 0), b"u" * 32, b"payload")
        assert store.restore().guarded
    with Store(tmp_path, genesis, identities[0].public_key) as store:
        second, after_second = _committed_round(genesis, identities, state)
        store.commit(second, after_second)  # prunes the slot of round 2
        restored = store.restore()
        assert restored.signed == {} and restored.guarded


@given(
    st.sampled_from(["signed", "state", "records", "meta"]),
    st.lists(st.one_of(st.integers(-(2**63), 2**64 - 1), st.none(), st.text(max_size=8), st.binary(max_size=300), st.integers(0, 70_000).map(lambda size: bytes(range(256)) * (size // 256))), max_size=5),
)
def test_a_row_digest_is_blake2b_of_the_packed_row_however_it_is_fed(table, fields):
    """Hashing a row piece by piece (large byte strings in place) gives the digest of the packed
    row, so stores written before keep verifying."""
    packed = msgpack.packb([table, *fields], use_bin_type=True)
    assert _row_digest(table, fields) == hashlib.blake2b(packed, digest_size=ROW_DIGEST_BYTES, person=b"qora-store-row").digest()
