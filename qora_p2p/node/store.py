"""A node's durable state: one SQLite database under the data directory.

Theory of operation
-------------------
The database holds what a node must never lose or contradict:

* ``meta``: the genesis (its TOML text and hash) and this node's public key. A data directory
  belongs to one member of one network; opening it for another is a `StoreError`;
* ``records``: every committed round's record (value and commit certificate), in order;
* ``state``: the agreed state after the last committed round (model, last aggregate, ledger), and
  ``checkpoints``: a copy every ``checkpoint_every`` rounds (the newest ``checkpoints_kept``);
* ``signed``: the last-signed guard, one row per (kind, round, view) slot this node signed, with
  our update's payload so a restart re-sends the very same update.

One process writes a data directory: it holds an exclusive lock on ``node.lock`` while the store is
open (a second node on the same directory is refused; read-only inspect takes no lock). An
existing but empty database (an emptied disk, a restored empty volume) is refused rather than
taken for a new member, which would forget what this member signed.

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when ``commit``
returns; every method is one transaction. A commit writes the record and the new state together,
so a crash leaves either the old round or the new one, never half. `sign` refuses a second,
different content for a slot (`DoubleSignError`), which is what makes "never sign twice" hold
across SIGKILL: the core emits the slot, the driver calls `sign`, and only then does the signed
message leave the process.

The simulator runs this very store on an in-memory database (`Store.in_memory`), so the
last-signed lifecycle (written before the signed message leaves, pruned at commit, restored at
start) is one piece of code under both drivers.

Threads: the node calls these methods from a worker thread (``trio.to_thread``), one at a time;
the connection is opened with ``check_same_thread=False`` for that reason and a lock serialises use.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgpack

from qora_p2p.errors import ConfigError, LocalProtocolError, MessageError, QoraError
from qora_p2p.identity import Identity, verify
from qora_p2p.learning.genesis_model import initial_model
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.genesis import Genesis, dump_genesis, parse_genesis
from qora_p2p.protocol.messages import Limits, Record, decode
from qora_p2p.protocol.state import (
    AgreedState,
    genesis_state,
    snapshot_bytes,
    state_from_snapshot,
)

__all__ = ["DoubleSignError", "Restored", "Store", "StoreError", "open_genesis_of"]

SCHEMA_VERSION = 1
DATABASE_NAME = "node.sqlite3"
LOCK_NAME = "node.lock"  # held (flock) by the one process that writes the data directory
CHECKPOINT_EVERY_ROUNDS = 10  # a full model copy every this many rounds, to inspect or roll back by hand
CHECKPOINTS_KEPT = 5  # older checkpoints are deleted: disk use stays bounded by this many models
RECORDS_RESTORED_MAX = 256  # records handed back to the core at start (it serves catch-up from them)
BUSY_TIMEOUT_S = 30.0  # another process holding the database (inspect) waits at most this long
MEMORY = ":memory:"  # SQLite's name for a database that lives in this process only

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (round INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), round INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (round INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed (
    kind TEXT NOT NULL, round INTEGER NOT NULL, view INTEGER NOT NULL,
    content BLOB NOT NULL, payload BLOB,
    PRIMARY KEY (kind, round, view)
);
"""


Verifier = Callable[[bytes, bytes, bytes, bytes], None]  # (key, domain, body, signature), raises if bad


class StoreError(QoraError):
    """The data directory cannot be used: another network or member, a newer schema, corruption."""


class DoubleSignError(LocalProtocolError):
    """Asked to sign a second, different content for a slot already signed: refused."""


@dataclass(frozen=True)
class Restored:
    """What a restarting node gets back."""

    state: AgreedState
    signed: dict[tuple[str, int, int], bytes]  # slots of the round in progress
    own_payload: bytes | None  # our signed update of the round in progress, if any
    records: list[Record]  # the newest committed records

    def core(self, genesis: Genesis, identity: Identity, now_ms: int, verifier: Verifier = verify) -> NodeCore:
        """The protocol core that resumes from this durable state (both drivers start one so)."""
        return NodeCore(
            genesis,
            identity,
            state=self.state,
            now_ms=now_ms,
            signed=self.signed,
            own_payload=self.own_payload,
            records=self.records,
            verifier=verifier,
        )


def _encode_state(state: AgreedState) -> bytes:
    model, aggregate, ledger = snapshot_bytes(state)
    packed: bytes = msgpack.packb([state.round, state.last_hash, model, aggregate, ledger], use_bin_type=True)
    return packed


def _decode_state(genesis: Genesis, data: bytes) -> AgreedState:
    try:
        round_number, last_hash, model, aggregate, ledger = msgpack.unpackb(data, raw=False)
        return state_from_snapshot(genesis, round_number, last_hash, model, aggregate, ledger)
    except (ValueError, TypeError, MessageError, msgpack.UnpackException) as error:
        raise StoreError(f"stored state is unreadable: {error}") from error


class Store:
    """The durable state of one member in ``directory``. Use as a context manager or `close`.

    Raises:
        StoreError: the directory belongs to another network or member, or is unreadable.
    """

    def __init__(self, directory: str | Path | None, genesis: Genesis, public_key: bytes, *, readonly: bool = False) -> None:
        self.directory = Path(directory) if directory is not None else Path(MEMORY)
        self.genesis = genesis
        self.limits = Limits(genesis.size, genesis.model.dimension)
        self._lock = threading.Lock()
        path = self.directory / DATABASE_NAME
        if readonly and (directory is None or not path.exists()):
            raise StoreError(f"no node database at {path}")
        self._owner: IO[bytes] | None = None  # the data directory's lock file, held while open
        try:
            if readonly:
                # Read-only readers (inspect) never block the running node: WAL lets both proceed.
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            else:
                if directory is None:
                    self._db = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
                else:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self._owner = _own(self.directory)
                    if path.exists() and path.stat().st_size == 0:
                        raise StoreError(
                            f"{path} exists but is empty (an emptied disk or a restored empty volume?): starting from it "
                            "would forget what this member signed. Restore the database from a copy; delete it only if "
                            "this member has never run in this network"
                        )
                    self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            self._claim(genesis, public_key, readonly)
        except BaseException as error:
            if hasattr(self, "_db"):
                self._db.close()
            self._release()
            if isinstance(error, sqlite3.DatabaseError):
                raise StoreError(f"{path}: {error}") from error
            if isinstance(error, OSError):
                raise StoreError(f"{self.directory}: {error.strerror or error}") from error
            raise

    @classmethod
    def in_memory(cls, genesis: Genesis, public_key: bytes) -> Store:
        """The same store on an in-memory database (gone when closed): the simulator's members keep
        their durable state in it, so simulated crashes exercise the real slot lifecycle."""
        return cls(None, genesis, public_key)

    def _claim(self, genesis: Genesis, public_key: bytes, readonly: bool) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta and not readonly:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema", SCHEMA_VERSION),
                        ("genesis_hash", genesis.hash),
                        ("genesis", dump_genesis(genesis).encode()),
                        ("member", public_key),
                    ],
                )
            return
        if meta.get("schema") != SCHEMA_VERSION:
            raise StoreError(f"{self.directory}: schema {meta.get('schema')!r}, this version reads {SCHEMA_VERSION}")
        if meta.get("genesis_hash") != genesis.hash:
            raise StoreError(
                f"{self.directory} belongs to network {bytes(meta.get('genesis_hash', b'')).hex()[:16]}, "
                f"not {genesis.hash.hex()[:16]} (use another --data-dir)"
            )
        if meta.get("member") != public_key:
            raise StoreError(f"{self.directory} belongs to another member's key (use that key or another --data-dir)")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._release()

    def _release(self) -> None:
        if self._owner is not None:
            self._owner.close()  # closing the file drops the lock
            self._owner = None

    # ------------------------------------------------------------------------------- writes

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def sign(self, slot: tuple[str, int, int], content: bytes, payload: bytes | None = None) -> None:
        """Record that we signed ``content`` for ``slot``; durable on return.

        Raises:
            DoubleSignError: the slot already holds a different content.
        """
        kind, round_number, view = slot
        with self._lock, self._transaction():
            row = self._db.execute("SELECT content FROM signed WHERE kind = ? AND round = ? AND view = ?", slot).fetchone()
            if row is not None:
                if row[0] != content:
                    raise DoubleSignError(f"slot {slot} is already signed for another content")
                return
            self._db.execute(
                "INSERT INTO signed (kind, round, view, content, payload) VALUES (?, ?, ?, ?, ?)",
                (kind, round_number, view, content, payload),
            )

    def commit(self, record: Record, state: AgreedState) -> None:
        """Persist a committed round: its record and the new state, atomically."""
        self.install([record], state)

    def install(self, records: Sequence[Record], state: AgreedState) -> None:
        """Persist records and the state after the last of them, atomically (commit or catch-up)."""
        if records and records[-1].value.round != state.round:
            raise LocalProtocolError(f"state of round {state.round} does not follow record {records[-1].value.round}")
        data = _encode_state(state)
        with self._lock, self._transaction():
            for record in records:
                round_hash = record.value.id(self.genesis.hash)
                self._db.execute(
                    "INSERT OR REPLACE INTO records (round, hash, data) VALUES (?, ?, ?)",
                    (record.value.round, round_hash, record.encode()),
                )
            self._db.execute("INSERT OR REPLACE INTO state (id, round, data) VALUES (0, ?, ?)", (state.round, data))
            if state.round % CHECKPOINT_EVERY_ROUNDS == 0:
                self._db.execute("INSERT OR REPLACE INTO checkpoints (round, data) VALUES (?, ?)", (state.round, data))
                self._db.execute(
                    "DELETE FROM checkpoints WHERE round NOT IN (SELECT round FROM checkpoints ORDER BY round DESC LIMIT ?)",
                    (CHECKPOINTS_KEPT,),
                )
            # Slots of finished rounds can never be signed again (the core is past them).
            self._db.execute("DELETE FROM signed WHERE round <= ?", (state.round,))

    # ------------------------------------------------------------------------------- reads

    def restore(self) -> Restored:
        """The state, signed slots, own payload and newest records to start a core from."""
        with self._lock:
            row = self._db.execute("SELECT data FROM state WHERE id = 0").fetchone()
            state = genesis_state(self.genesis, initial_model(self.genesis)) if row is None else _decode_state(self.genesis, row[0])
            current = state.round + 1
            signed: dict[tuple[str, int, int], bytes] = {}
            own_payload = None
            for kind, round_number, view, content, payload in self._db.execute(
                "SELECT kind, round, view, content, payload FROM signed WHERE round = ?", (current,)
            ):
                signed[(kind, round_number, view)] = content
                if kind == "update" and payload is not None:
                    own_payload = payload
            rows = self._db.execute("SELECT data FROM records ORDER BY round DESC LIMIT ?", (RECORDS_RESTORED_MAX,)).fetchall()
        records = [self._decode_record(data) for (data,) in reversed(rows)]
        return Restored(state, signed, own_payload, records)

    def last_round(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(round) FROM state").fetchone()
        return int(row[0] or 0)

    def records(self, first: int = 1) -> Iterator[tuple[Record, bytes]]:
        """Committed records from round ``first`` on, with their stored hashes, in order."""
        with self._lock:
            rows = self._db.execute("SELECT data, hash FROM records WHERE round >= ? ORDER BY round", (first,)).fetchall()
        for data, round_hash in rows:
            yield self._decode_record(data), round_hash

    def chain(self) -> tuple[list[tuple[Record, bytes]], AgreedState, list[int]]:
        """Every record with its stored hash, the state and the checkpoint rounds, read in one
        transaction (a consistent snapshot even while the node commits)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                rows = self._db.execute("SELECT data, hash FROM records ORDER BY round").fetchall()
                state_row = self._db.execute("SELECT data FROM state WHERE id = 0").fetchone()
                checkpoints = [row[0] for row in self._db.execute("SELECT round FROM checkpoints ORDER BY round")]
            finally:
                self._db.execute("COMMIT")
        state = genesis_state(self.genesis, initial_model(self.genesis)) if state_row is None else _decode_state(self.genesis, state_row[0])
        return [(self._decode_record(data), bytes(round_hash)) for data, round_hash in rows], state, checkpoints

    def state(self) -> AgreedState:
        return self.restore().state

    def checkpoints(self) -> list[int]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT round FROM checkpoints ORDER BY round")]

    def _decode_record(self, data: bytes) -> Record:
        try:
            record = decode(data, self.limits)
        except MessageError as error:
            raise StoreError(f"stored record is unreadable: {error}") from error
        if not isinstance(record, Record):
            raise StoreError(f"stored record decodes to a {type(record).__name__}")
        return record


def _own(directory: Path) -> IO[bytes]:
    """Lock ``directory`` for this process (released when the returned file is closed).

    Raises:
        StoreError: another process (a second node on the same data directory) holds it.
    """
    handle = open(directory / LOCK_NAME, "ab")  # noqa: SIM115 (held open for the store's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(f"{directory} is in use by another process (one node per data directory)") from None
    return handle


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def open_genesis_of(directory: str | Path) -> tuple[Genesis, bytes]:
    """The genesis a data directory was created for and its member's public key (for
    ``qora-node inspect``, which has no key file).

    Raises:
        StoreError: no node database there, or it is unreadable.
    """
    path = Path(directory) / DATABASE_NAME
    if not path.exists():
        raise StoreError(f"no node database at {path}")
    import tomllib  # noqa: PLC0415

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path}: {error}") from error
    if "genesis" not in meta or "member" not in meta:
        raise StoreError(f"{path} holds no genesis")
    try:
        genesis = parse_genesis(tomllib.loads(bytes(meta["genesis"]).decode()), str(path))
    except (ConfigError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise StoreError(f"{path}: stored genesis is unreadable: {error}") from error
    return genesis, bytes(meta["member"])
