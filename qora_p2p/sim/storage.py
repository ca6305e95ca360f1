"""What a simulated member keeps on disk, measured, and the bound it must stay under.

Theory of operation
-------------------
A member's store (`qora_p2p.node.store.Store`, on an in-memory database in the simulator) must not
grow with anything a peer controls: only with the rounds it committed. `MeasuredStore` is that
store with one reader added, `stored_bytes`, which sums the **logical bytes** of every table (the
length of every stored value; integer columns count 8 bytes, the state row's id too). The bound,
`storage_bound`, for a member that committed ``R`` rounds, with P the update length and n members:

==============  ===============================================================================
table           bound (bytes)
==============  ===============================================================================
meta            ``len(genesis TOML) + META_BYTES_MAX`` (schema, genesis hash, member key, names)
records         ``R * (8 + 32 + record_bytes_max)``: round, hash, the record itself, at most
                ``Limits.record_bytes_max`` (value with n inputs and full evidence, n signatures)
state           ``STATE_ROW_BYTES_MAX = 16 + 12 * P + ledger_bytes_max + 64``: model (8 P),
                aggregate (4 P), ledger, msgpack framing and the last hash
checkpoints     ``min(CHECKPOINTS_KEPT, R // CHECKPOINT_EVERY_ROUNDS)`` state rows
signed (guard)  only the round in progress: ``SLOT_BYTES_MAX + 4 P`` (our update and its
                payload) ``+ 3 * SLOT_BYTES_MAX * views``, with ``views = 2 + elapsed //
                precommit_timeout_ms``, elapsed measured from the moment the first honest member
                started that round: a view lasts at least one precommit timeout, and an honest
                member signs at most a proposal, a prevote and a precommit in each
==============  ===============================================================================

``SLOT_BYTES_MAX`` is one guard row: its kind (at most 9 characters), round and view (8 each) and
a 32-byte content. The checker (`qora_p2p.sim.checkers.Checkers.storage`) compares every table with
its bound and also requires that the guard holds slots of the round in progress only.
"""

from __future__ import annotations

from dataclasses import dataclass

from qora_p2p.node.store import CHECKPOINT_EVERY_ROUNDS, CHECKPOINTS_KEPT, Store
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.messages import DIGEST_BYTES, Limits

__all__ = ["MeasuredStore", "StoredBytes", "storage_bound"]

META_BYTES_MAX = 256  # four keys, the genesis hash, the member key, the schema number
SLOT_BYTES_MAX = len("precommit") + 8 + 8 + DIGEST_BYTES
STATE_FRAMING_BYTES = 64  # msgpack array and bin headers, round, last hash


_MEASURE = """SELECT
    (SELECT SUM(LENGTH(key) + LENGTH(value)) FROM meta),
    (SELECT SUM(8 + LENGTH(hash) + LENGTH(data)) FROM records),
    (SELECT SUM(16 + LENGTH(data)) FROM state),
    (SELECT SUM(8 + LENGTH(data)) FROM checkpoints),
    (SELECT SUM(LENGTH(kind) + 16 + LENGTH(content) + IFNULL(LENGTH(payload), 0)) FROM signed),
    (SELECT GROUP_CONCAT(round) FROM (SELECT DISTINCT round FROM signed))"""


@dataclass(frozen=True, slots=True)
class StoredBytes:
    """Logical bytes per table of one member's store, and the rounds its guard holds slots of."""

    meta: int
    records: int
    state: int
    checkpoints: int
    signed: int
    signed_rounds: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return self.meta + self.records + self.state + self.checkpoints + self.signed


def storage_bound(genesis: Genesis, rounds: int, views: int) -> StoredBytes:
    """The most a member that committed ``rounds`` rounds may store, with ``views`` views of the
    round in progress (see the module notes)."""
    limits = Limits(genesis.size, genesis.model.dimension)
    state_row = 16 + 3 * limits.payload_bytes + limits.ledger_bytes_max + STATE_FRAMING_BYTES
    return StoredBytes(
        meta=len(genesis.text.encode()) + META_BYTES_MAX,
        records=rounds * (8 + DIGEST_BYTES + limits.record_bytes_max),
        state=state_row,
        checkpoints=min(CHECKPOINTS_KEPT, rounds // CHECKPOINT_EVERY_ROUNDS) * state_row,
        signed=SLOT_BYTES_MAX + limits.payload_bytes + 3 * SLOT_BYTES_MAX * views,
    )


class MeasuredStore(Store):
    """The node's store, plus a measure of what it holds (the simulator's members use it)."""

    @classmethod
    def in_memory(cls, genesis: Genesis, public_key: bytes) -> MeasuredStore:
        return cls(None, genesis, public_key)

    def stored_bytes(self) -> StoredBytes:
        """Logical bytes of every table, read in one query (it runs after every signature)."""
        with self._lock:
            row = self._db.execute(_MEASURE).fetchone()
        *totals, rounds = row
        meta, records, state, checkpoints, signed = (int(value or 0) for value in totals)
        signed_rounds = tuple(sorted({int(number) for number in rounds.split(",")})) if rounds else ()
        return StoredBytes(meta, records, state, checkpoints, signed, signed_rounds)
