"""A node's durable state: one SQLite database under the data directory.

Theory of operation
-------------------
The database holds what a node must never lose or contradict:

* ``meta``: the genesis (its TOML text and hash) and this node's public key. A data directory
  belongs to one member of one network; opening it for another is a `StoreError`. Once this
  database has recorded a signature, ``meta`` also says so (``first_signed``): from then on its
  guard covers everything this member signs, and `Restored.guarded` is true;
* ``records``: every committed round's record (value and commit certificate), in order;
* ``state``: the agreed state after the last committed round (model, last aggregate, ledger), and
  ``checkpoints``: a copy every ``checkpoint_every`` rounds (the newest ``checkpoints_kept``);
* ``signed``: the last-signed guard, one row per (kind, round, view) slot this node signed, with
  our update's payload so a restart re-sends the very same update.

One process writes a data directory: it holds an exclusive lock on ``node.lock`` while the store is
open (a second node on the same directory is refused; read-only inspect takes no lock). An
existing but empty database (an emptied disk, a restored empty volume) is refused rather than
taken for a new member, which would forget what this member signed.

Damage is noticed, never used: every row carries a BLAKE2b checksum of its table and contents
(schema 2), checked whenever the row is read, and opening a database to write runs SQLite's
``quick_check`` and checks every row (time linear in the database, like the check itself). A row
that does not match, a file SQLite cannot read or a structure it finds broken is a
`StoreDamaged` that names the damaged rows and the way back: move the database aside and start
again with the member's key (a new database: the node recovers the chain from its peers and, no
longer knowing what it signed, abstains from signing until the network is past the round it may
have signed in; see "Abstaining" in `qora_p2p.protocol.core`). Nothing is repaired in place.

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when ``commit``
returns; every method is one transaction. A commit writes the record and the new state together,
so a crash leaves either the old round or the new one, never half. `sign` refuses a second,
different content for a slot (`DoubleSignError`), which is what makes "never sign twice" hold
across SIGKILL: the core emits the slot, the driver calls `sign`, and only then does the signed
message leave the process. A write the disk has no room for (SQLITE_FULL, ENOSPC) is rolled back
and raised as `DiskFull`: the database keeps what it held, and the driver stops before the message
whose signature could not be recorded leaves.

The simulator runs this very store on an in-memory database (`Store.in_memory`), so the
last-signed lifecycle (written before the signed message leaves, pruned at commit, restored at
start) is one piece of code under both drivers.

Threads: the node calls these methods from a worker thread (``trio.to_thread``), one at a time;
the connection is opened with ``check_same_thread=False`` for that reason and a lock serialises use.

Size: the schema, each table's writes, the reads that verify them and the row checksum change
together (a column added is a write, a check and a restore), so they stay in one module.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack

from qora_p2p.errors import ConfigError, DiskFull, LocalProtocolError, MessageError, StoreDamaged, StoreError
from qora_p2p.identity import Identity, verify
from qora_p2p.learning.genesis_model import initial_model
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.genesis import Genesis, dump_genesis, parse_genesis
from qora_p2p.protocol.messages import Limits, Record, bin_header, decode
from qora_p2p.protocol.state import AgreedState, genesis_state, snapshot_bytes, state_from_snapshot

__all__ = ["DiskFull", "DoubleSignError", "Restored", "Store", "StoreDamaged", "StoreError", "open_genesis_of"]

SCHEMA_VERSION = 2  # 2: every row carries a checksum (schema 1 had none and is refused)
DATABASE_NAME = "node.sqlite3"
LOCK_NAME = "node.lock"  # held (flock) by the one process that writes the data directory
CHECKPOINT_EVERY_ROUNDS = 10  # a full model copy every this many rounds, to inspect or roll back by hand
CHECKPOINTS_KEPT = 5  # older checkpoints are deleted: disk use stays bounded by this many models
RECORDS_RESTORED_MAX = 256  # records handed back to the core at start (it serves catch-up from them)
BUSY_TIMEOUT_S = 30.0  # another process holding the database (inspect) waits at most this long
# A new database's page size (SQLite's largest). Models and updates are blobs of hundreds of
# kilobytes, written every round: 4 KiB pages cost one write call each (about 440 per fsync at
# P = 100K); 64 KiB pages cut that sixteenfold. An existing database keeps the size it was made with.
PAGE_BYTES = 65536
WAL_AUTOCHECKPOINT_PAGES = 256  # 16 MiB of WAL with 64 KiB pages (SQLite's default is 1000 pages)
MEMORY = ":memory:"  # SQLite's name for a database that lives in this process only
ROW_DIGEST_BYTES = 32  # BLAKE2b-256: a random bit flip goes unnoticed with probability 2**-256
ROW_PIECE_BYTES = 4096  # byte strings from this long are hashed in place (`_row_digest`)
DAMAGE_LISTED_MAX = 8  # damaged rows (or SQLite findings) named in one error; the rest are counted
FIRST_SIGNED = "first_signed"  # meta key: the round of the first slot this database recorded

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL, digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (round INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL, digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 0), round INTEGER NOT NULL, data BLOB NOT NULL, digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (round INTEGER PRIMARY KEY, data BLOB NOT NULL, digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed (
    kind TEXT NOT NULL, round INTEGER NOT NULL, view INTEGER NOT NULL,
    content BLOB NOT NULL, payload BLOB, digest BLOB NOT NULL,
    PRIMARY KEY (kind, round, view)
);
"""

# Every table and the columns its row checksum covers, in order (``digest`` is the last column).
_COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "records": ("round", "hash", "data"),
    "state": ("id", "round", "data"),
    "checkpoints": ("round", "data"),
    "signed": ("kind", "round", "view", "content", "payload"),
}
_META_KEYS = ("schema", "genesis_hash", "genesis", "member")  # written when the database is created

# SQLite's primary result codes that say the store cannot be used now, as opposed to a bug in a
# statement (those propagate as they are).
_UNUSABLE = frozenset(
    {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
)


Verifier = Callable[[bytes, bytes, bytes, bytes], None]  # (key, domain, body, signature), raises if bad


class DoubleSignError(LocalProtocolError):
    """Asked to sign a second, different content for a slot already signed: refused."""


@dataclass(frozen=True)
class Restored:
    """What a restarting node gets back."""

    state: AgreedState
    signed: dict[tuple[str, int, int], bytes]  # slots of the round in progress
    own_payload: bytes | None  # our signed update of the round in progress, if any
    records: list[Record]  # the newest committed records
    guarded: bool = True  # this database has recorded a signature: its guard covers what we sign

    def core(self, genesis: Genesis, identity: Identity, now_ms: int, verifier: Verifier = verify, *, abstain: bool = False) -> NodeCore:
        """The protocol core that resumes from this durable state (both drivers start one so);
        ``abstain``: see `NodeCore` (the Trio node passes ``not guarded``)."""
        return NodeCore(
            genesis,
            identity,
            state=self.state,
            now_ms=now_ms,
            signed=self.signed,
            own_payload=self.own_payload,
            records=self.records,
            verifier=verifier,
            abstain=abstain,
        )


def _row_digest(table: str, fields: Sequence[Any]) -> bytes:
    """BLAKE2b of the row packed as msgpack ``[table, *fields]``, fed to the hash piece by piece: a
    large byte string (a state of 1.2 MB, a signed update's payload) goes in as its header and
    itself, never copied into a packed row first. The digest is that of the packed row."""
    digest = hashlib.blake2b(digest_size=ROW_DIGEST_BYTES, person=b"qora-store-row")
    items = [table, *fields]
    digest.update(msgpack.Packer().pack_array_header(len(items)))
    for item in items:
        if isinstance(item, bytes) and len(item) >= ROW_PIECE_BYTES:
            digest.update(bin_header(len(item)))
            digest.update(item)
        else:
            digest.update(msgpack.packb(item, use_bin_type=True))
    return digest.digest()


def _select(table: str, tail: str = "") -> str:
    return f"SELECT {', '.join(_COLUMNS[table])}, digest FROM {table} {tail}"


def _row_name(table: str, fields: Sequence[Any]) -> str:
    """How an operator finds the row (as stored: a damaged key shows as it reads)."""
    if table == "meta":
        return f"meta {fields[0]!r}"
    if table == "state":
        return f"the state (round {fields[1]!r})"
    if table == "signed":
        return f"signed slot ({fields[0]!r}, {fields[1]!r}, {fields[2]!r})"
    return f"{table[:-1]} of round {fields[0]!r}"


def _recovery(path: Path) -> str:
    return (
        f"To recover: stop the node, move {path} (and any {path.name}-wal and {path.name}-shm beside it) out of "
        f"{path.parent}, and start the node again with this member's key. It starts from a new database, fetches "
        "the committed chain from its peers, and signs nothing until the network has committed past the round its "
        "peers were in (it no longer knows what it signed before). Keep the damaged file for inspection"
    )


def _damaged(path: Path, problems: Sequence[str]) -> StoreDamaged:
    listed = "; ".join(problems[:DAMAGE_LISTED_MAX])
    more = f" (and {len(problems) - DAMAGE_LISTED_MAX} more)" if len(problems) > DAMAGE_LISTED_MAX else ""
    return StoreDamaged(f"{path} is damaged: {listed}{more}. Nothing in it was changed. {_recovery(path)}")


def _disk_full(path: Path, doing: str, detail: str) -> DiskFull:
    return DiskFull(
        f"{path}: the disk is full ({detail}) while {doing}. The write was rolled back: the database holds what it "
        "held before, and the node sends nothing whose signature is not on disk. Free space on that disk and start "
        "the node again with the same arguments: it resumes from its last durable state"
    )


def _classified(error: sqlite3.Error | OSError, path: Path, doing: str) -> StoreError | None:
    """The `StoreError` an operating failure of the database stands for; None for a bug."""
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return _disk_full(path, doing, error.strerror or "ENOSPC")
        return StoreError(f"{path}: {error.strerror or error} while {doing}")
    code = getattr(error, "sqlite_errorcode", -1) & 0xFF  # the primary code of an extended one
    if code == sqlite3.SQLITE_FULL:
        return _disk_full(path, doing, str(error))
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return _damaged(path, [f"SQLite cannot read it ({error})"])
    if code in _UNUSABLE:
        return StoreError(f"{path}: {error} while {doing}")
    return None


def _read_meta(db: sqlite3.Connection, path: Path) -> dict[str, Any]:
    """The ``meta`` rows, each checked against its checksum (empty for a new database).

    Raises:
        StoreError: not a node database, or one of another schema.
        StoreDamaged: a row that does not match its checksum, or a missing one.
    """
    try:
        rows = db.execute(_select("meta")).fetchall()
    except sqlite3.OperationalError as error:
        if "no such column" in str(error):
            raise StoreError(
                f"{path} was written by an older qora-p2p (schema 1, rows without checksums); this version reads schema "
                f"{SCHEMA_VERSION} only. Move it aside and start the node again with this member's key (a new database)"
            ) from error
        if "no such table" in str(error):
            raise StoreError(f"{path} is not a qora-p2p node database (it has no meta table)") from error
        raise
    meta: dict[str, Any] = {}
    problems = []
    for key, value, digest in rows:
        if digest != _row_digest("meta", (key, value)):
            problems.append(f"{_row_name('meta', (key,))} does not match its checksum")
        meta[key] = value
    if rows:
        problems += [f"meta {key!r} is missing" for key in _META_KEYS if key not in meta]
    if problems:
        raise _damaged(path, problems)
    return meta


class Store:
    """The durable state of one member in ``directory``. Use as a context manager or `close`.

    A writable store checks the whole database when it opens (`verify`); a read-only one (inspect,
    a test network polling `last_round`) checks ``meta`` and, on every read, the rows it reads.

    Raises:
        StoreError: the directory belongs to another network or member, another schema, or is
            unusable; `StoreDamaged` if the database is damaged; `DiskFull` if it cannot be created.
    """

    def __init__(self, directory: str | Path | None, genesis: Genesis, public_key: bytes, *, readonly: bool = False) -> None:
        self.directory = Path(directory) if directory is not None else Path(MEMORY)
        self.genesis = genesis
        self.limits = Limits(genesis.size, genesis.model.dimension)
        self._lock = threading.Lock()
        self.path = path = self.directory / DATABASE_NAME
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
                    existing = path.exists()
                    if existing and path.stat().st_size == 0:
                        raise StoreError(
                            f"{path} exists but is empty (an emptied disk or a restored empty volume?): starting from it "
                            "would forget what this member signed. Restore the database from a copy; delete it only if "
                            "this member has never run in this network"
                        )
                    self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
                    self._configure(existing)
                self._db.executescript(_SCHEMA)
            self._claim(genesis, public_key, readonly)
            if not readonly:
                self._check_rows()
        except BaseException as error:
            if hasattr(self, "_db"):
                self._db.close()
            self._release()
            if isinstance(error, sqlite3.Error | OSError):
                known = _classified(error, path, "opening the database")
                if known is not None:
                    raise known from error
            raise

    def _configure(self, existing: bool) -> None:
        if existing:
            self._check_structure()  # before anything below could write to a damaged file
        else:
            self._db.execute(f"PRAGMA page_size={PAGE_BYTES}")  # before the first table exists
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self._db.execute("PRAGMA synchronous=FULL")

    @classmethod
    def in_memory(cls, genesis: Genesis, public_key: bytes) -> Store:
        """The same store on an in-memory database (gone when closed): the simulator's members keep
        their durable state in it, so simulated crashes exercise the real slot lifecycle."""
        return cls(None, genesis, public_key)

    def _claim(self, genesis: Genesis, public_key: bytes, readonly: bool) -> None:
        meta = _read_meta(self._db, self.path)
        if not meta and not readonly:
            with self._transaction():
                for row in [
                    ("schema", SCHEMA_VERSION),
                    ("genesis_hash", genesis.hash),
                    ("genesis", dump_genesis(genesis).encode()),
                    ("member", public_key),
                ]:
                    self._insert("INSERT", "meta", row)
            return
        if not meta:
            raise StoreError(f"{self.path} holds no genesis (a database whose creation never finished)")
        if meta["schema"] != SCHEMA_VERSION:
            raise StoreError(f"{self.directory}: schema {meta['schema']!r}, this version reads {SCHEMA_VERSION}")
        if meta["genesis_hash"] != genesis.hash:
            raise StoreError(
                f"{self.directory} belongs to network {bytes(meta['genesis_hash']).hex()[:16]}, "
                f"not {genesis.hash.hex()[:16]} (use another --data-dir)"
            )
        if meta["member"] != public_key:
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

    @contextmanager
    def _using(self, doing: str) -> Iterator[None]:
        """Hold the connection for one operation; its operating failures become `StoreError`s."""
        with self._lock:
            try:
                yield
            except (sqlite3.Error, OSError) as error:
                known = _classified(error, self.path, doing)
                if known is None:
                    raise
                raise known from error

    # ------------------------------------------------------------------------------- checks

    def verify(self) -> None:
        """Check the whole database: SQLite's own structure check, then every row's checksum.

        Raises:
            StoreDamaged: naming what is damaged (and how to recover).
        """
        with self._using("checking the database"):
            self._check_structure()
            self._check_rows()

    def _check_structure(self) -> None:
        findings = [str(line) for (line,) in self._db.execute(f"PRAGMA quick_check({DAMAGE_LISTED_MAX + 1})")]
        if findings != ["ok"]:
            raise _damaged(self.path, [f"SQLite finds: {finding}" for finding in findings])

    def _check_rows(self) -> None:
        problems = []
        for table in _COLUMNS:
            for *fields, digest in self._db.execute(_select(table)):
                if digest != _row_digest(table, fields):
                    problems.append(f"{_row_name(table, fields)} does not match its checksum")
        if problems:
            raise _damaged(self.path, problems)

    def _read(self, table: str, tail: str = "", parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``table`` (without their checksums), each checked against its checksum."""
        rows = []
        for *fields, digest in self._db.execute(_select(table, tail), parameters):
            if digest != _row_digest(table, fields):
                raise _damaged(self.path, [f"{_row_name(table, fields)} does not match its checksum"])
            rows.append(tuple(fields))
        return rows

    # ------------------------------------------------------------------------------- writes

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _insert(self, verb: str, table: str, fields: Sequence[Any]) -> None:
        columns = _COLUMNS[table]
        assert len(fields) == len(columns), f"a {table} row has {len(columns)} columns"
        marks = ", ".join("?" * (len(columns) + 1))
        self._db.execute(f"{verb} INTO {table} ({', '.join(columns)}, digest) VALUES ({marks})", (*fields, _row_digest(table, fields)))

    def sign(self, slot: tuple[str, int, int], content: bytes, payload: bytes | None = None) -> None:
        """Record that we signed ``content`` for ``slot``; durable on return.

        Raises:
            DoubleSignError: the slot already holds a different content.
            DiskFull: no room to record it (nothing recorded: the signed message must not leave).
            StoreDamaged: the slot's stored row does not match its checksum.
        """
        kind, round_number, view = slot
        with self._using(f"recording signed slot {slot}"), self._transaction():
            rows = self._read("signed", "WHERE kind = ? AND round = ? AND view = ?", slot)
            if rows:
                if rows[0][3] != content:
                    raise DoubleSignError(f"slot {slot} is already signed for another content")
                return
            self._insert("INSERT", "signed", (kind, round_number, view, content, payload))
            self._insert("INSERT OR IGNORE", "meta", (FIRST_SIGNED, round_number))

    def commit(self, record: Record, state: AgreedState) -> None:
        """Persist a committed round: its record and the new state, atomically."""
        self.install([record], state)

    def install(self, records: Sequence[Record], state: AgreedState) -> None:
        """Persist records and the state after the last of them, atomically (commit or catch-up).

        Raises:
            DiskFull: no room for them (nothing written).
        """
        if records and records[-1].value.round != state.round:
            raise LocalProtocolError(f"state of round {state.round} does not follow record {records[-1].value.round}")
        data = _encode_state(state)
        with self._using(f"writing round {state.round}"), self._transaction():
            for record in records:
                round_hash = record.value.id(self.genesis.hash)
                self._insert("INSERT OR REPLACE", "records", (record.value.round, round_hash, record.encode()))
            self._insert("INSERT OR REPLACE", "state", (0, state.round, data))
            if state.round % CHECKPOINT_EVERY_ROUNDS == 0:
                self._insert("INSERT OR REPLACE", "checkpoints", (state.round, data))
                self._db.execute(
                    "DELETE FROM checkpoints WHERE round NOT IN (SELECT round FROM checkpoints ORDER BY round DESC LIMIT ?)",
                    (CHECKPOINTS_KEPT,),
                )
            # Slots of finished rounds can never be signed again (the core is past them).
            self._db.execute("DELETE FROM signed WHERE round <= ?", (state.round,))

    # ------------------------------------------------------------------------------- reads

    def restore(self) -> Restored:
        """The state, signed slots, own payload and newest records to start a core from.

        Raises:
            StoreDamaged: a row read does not match its checksum, or does not decode.
        """
        with self._using("reading the durable state"):
            states = self._read("state", "WHERE id = 0")
            state = genesis_state(self.genesis, initial_model(self.genesis)) if not states else self._decode_state(states[0])
            current = state.round + 1
            signed: dict[tuple[str, int, int], bytes] = {}
            own_payload = None
            for kind, round_number, view, content, payload in self._read("signed", "WHERE round = ?", (current,)):
                signed[(kind, round_number, view)] = content
                if kind == "update" and payload is not None:
                    own_payload = payload
            guarded = bool(self._read("meta", "WHERE key = ?", (FIRST_SIGNED,)))
            rows = self._read("records", "ORDER BY round DESC LIMIT ?", (RECORDS_RESTORED_MAX,))
        records = [self._decode_record(data) for _, _, data in reversed(rows)]
        return Restored(state, signed, own_payload, records, guarded)

    def last_round(self) -> int:
        """The last committed round, for polling (unchecked: it reads no row's contents)."""
        with self._using("reading the last round"):
            row = self._db.execute("SELECT MAX(round) FROM state").fetchone()
        return int(row[0] or 0)

    def records(self, first: int = 1) -> Iterator[tuple[Record, bytes]]:
        """Committed records from round ``first`` on, with their stored hashes, in order."""
        with self._using("reading records"):
            rows = self._read("records", "WHERE round >= ? ORDER BY round", (first,))
        for _, round_hash, data in rows:
            yield self._decode_record(data), round_hash

    def chain(self) -> tuple[list[tuple[Record, bytes]], AgreedState, list[int]]:
        """Every record with its stored hash, the state and the checkpoint rounds, read in one
        transaction (a consistent snapshot even while the node commits)."""
        with self._using("reading the chain"):
            self._db.execute("BEGIN")
            try:
                rows = self._read("records", "ORDER BY round")
                states = self._read("state", "WHERE id = 0")
                checkpoints = [row[0] for row in self._db.execute("SELECT round FROM checkpoints ORDER BY round")]
            finally:
                self._db.execute("COMMIT")
        state = genesis_state(self.genesis, initial_model(self.genesis)) if not states else self._decode_state(states[0])
        return [(self._decode_record(data), bytes(round_hash)) for _, round_hash, data in rows], state, checkpoints

    def state(self) -> AgreedState:
        return self.restore().state

    def checkpoints(self) -> list[int]:
        with self._using("reading checkpoints"):
            return [row[0] for row in self._db.execute("SELECT round FROM checkpoints ORDER BY round")]

    def _decode_state(self, row: tuple[Any, ...]) -> AgreedState:
        _, round_column, data = row
        try:
            round_number, last_hash, model, aggregate, ledger = msgpack.unpackb(data, raw=False)
            state = state_from_snapshot(self.genesis, round_number, last_hash, model, aggregate, ledger)
        except (ValueError, TypeError, MessageError, msgpack.UnpackException) as error:
            raise _damaged(self.path, [f"the stored state does not decode ({error})"]) from error
        if state.round != round_column:
            raise _damaged(self.path, [f"the stored state is of round {state.round}, its row says {round_column}"])
        return state

    def _decode_record(self, data: bytes) -> Record:
        try:
            record = decode(data, self.limits)
        except MessageError as error:
            raise _damaged(self.path, [f"a stored record does not decode ({error})"]) from error
        if not isinstance(record, Record):
            raise _damaged(self.path, [f"a stored record decodes to a {type(record).__name__}"])
        return record


def _encode_state(state: AgreedState) -> bytes:
    model, aggregate, ledger = snapshot_bytes(state)
    packed: bytes = msgpack.packb([state.round, state.last_hash, model, aggregate, ledger], use_bin_type=True)
    return packed


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
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on an exception (or a failed COMMIT:
    SQLite leaves the transaction open when COMMIT fails for lack of space)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (it can, on SQLITE_FULL).
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")


def open_genesis_of(directory: str | Path) -> tuple[Genesis, bytes]:
    """The genesis a data directory was created for and its member's public key (for
    ``qora-node inspect``, which has no key file).

    Raises:
        StoreError: no node database there, or it is unreadable; `StoreDamaged` if damaged.
    """
    path = Path(directory) / DATABASE_NAME
    if not path.exists():
        raise StoreError(f"no node database at {path}")
    import tomllib  # noqa: PLC0415

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            meta = _read_meta(db, path)
        finally:
            db.close()
    except sqlite3.Error as error:
        known = _classified(error, path, "reading the genesis")
        if known is None:
            raise
        raise known from error
    if not meta:
        raise StoreError(f"{path} holds no genesis")
    if meta["schema"] != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema {meta['schema']!r}, this version reads {SCHEMA_VERSION}")
    try:
        genesis = parse_genesis(tomllib.loads(bytes(meta["genesis"]).decode()), str(path))
    except (ConfigError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise _damaged(path, [f"the stored genesis does not parse ({error})"]) from error
    if genesis.hash != meta["genesis_hash"]:
        raise _damaged(path, ["the stored genesis does not hash to the stored genesis hash"])
    return genesis, bytes(meta["member"])
