"""Protocol messages: frozen dataclasses with one canonical msgpack encoding each.

Theory of operation
-------------------
Every message is a msgpack array ``[tag, field, ...]`` of integers, byte strings, booleans and
nested arrays; no maps, no floats, no strings. `decode` unpacks with explicit msgpack limits, checks
every field's type and range against `Limits` (derived from the genesis: members n, update length
P), then **re-encodes and rejects the frame unless the bytes are identical**, so each message has
exactly one encoding and its hash identifies it.

Signed messages sign canonical bytes under a domain that includes the genesis hash and the message
type (`domain`), so a signature for one network or one message type is worthless in another.
Updates sign the SHA-256 digest of their payload, so a large payload is hashed once.

A round's agreed value (`Value`) lists the round, the previous round hash, the input set (sender,
digest), committed evidence and the digests of the resulting model and ledger. Its **round hash**
(`Value.id`) is SHA-256 over the genesis hash and the value's canonical bytes; votes and
certificates are over that hash, so certifying it certifies everything the value says.

Size: every message type, its field checks and the one tag-to-type decode table live together
(h11's rule: one table in one place); split, each part would need the others' internals.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import msgpack

from qora_p2p.errors import MessageError, SignatureError
from qora_p2p.fixedpoint import check_vector
from qora_p2p.identity import Identity, verify

__all__ = [
    "DIGEST_BYTES",
    "MESSAGE_TYPES",
    "NIL",
    "Announce",
    "Evidence",
    "Fetch",
    "Hello",
    "Limits",
    "Message",
    "Precommit",
    "Prevote",
    "Proposal",
    "Record",
    "SignedHeader",
    "StateSnapshot",
    "SyncRequest",
    "SyncResponse",
    "Update",
    "Value",
    "decode",
    "domain",
    "encode",
]

DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
NIL = b""  # the nil value of a vote
PROTOCOL_VERSION = 1
ROUND_MAX = 2**62  # rounds and views are ints that msgpack and SQLite store natively
VIEW_MAX = 2**31
SYNC_RECORDS_MAX = 64  # records per sync response: bounds response size and verification work
FETCH_ITEMS_MAX = 1024  # one fetch names at most every member's update
LEDGER_BYTES_PER_MEMBER = 24  # upper bound of one ledger row in its msgpack encoding


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes derived from the genesis that bound every decoded message.

    Attributes:
        members: n.
        dimension: P, the update length; an update payload is exactly ``4 * P`` bytes.
        evidence_max: evidence items one value may carry.
    """

    members: int
    dimension: int
    evidence_max: int = 16

    @property
    def payload_bytes(self) -> int:
        return 4 * self.dimension

    @property
    def model_bytes(self) -> int:
        return 8 * self.dimension

    @property
    def ledger_bytes_max(self) -> int:
        return 16 + LEDGER_BYTES_PER_MEMBER * self.members

    @property
    def value_bytes_max(self) -> int:
        evidence = self.evidence_max * (64 + 2 * (2 * DIGEST_BYTES + SIGNATURE_BYTES + 32))
        return 128 + self.members * (DIGEST_BYTES + 8) + evidence

    @property
    def record_bytes_max(self) -> int:
        return self.value_bytes_max + 64 + self.members * (SIGNATURE_BYTES + 8)

    @property
    def snapshot_bytes_max(self) -> int:
        return self.model_bytes + self.payload_bytes + self.ledger_bytes_max + 64

    @property
    def message_bytes_max(self) -> int:
        """The largest valid message: a sync response with records and a state snapshot."""
        return 64 + SYNC_RECORDS_MAX * self.record_bytes_max + self.snapshot_bytes_max

    @property
    def served_bytes_per_window(self) -> int:
        """Bytes of updates and catch-up one member serves one peer per budget window: two full
        sync responses and every update of a round twice over (an honest peer needs at most one
        round's updates and one response to catch up), and at least 1 MiB. Small requests cannot
        be amplified beyond this."""
        return max(2**20, 2 * self.message_bytes_max + 2 * 2 * self.members * self.payload_bytes)


@functools.lru_cache(maxsize=64)  # a few networks and message kinds per process; asked per signature
def domain(genesis_hash: bytes, kind: str) -> bytes:
    """Signature domain: protocol version, network, message type."""
    return b"qora-p2p/v1/" + genesis_hash + b"/" + kind.encode()


CANONICAL_COPY_BYTES = 4096  # byte strings from this long are checked in place, not re-encoded
CANONICAL_WALK_BYTES = 64 << 10  # messages from this long are checked field by field (bench_decode.py)


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


_ARRAY_OF_3 = b"\x93"  # msgpack's header of an array of 3 (fixarray), as packb writes it
_ARRAY_OF_4 = b"\x94"


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MessageError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


def _bytes(value: Any, name: str, length: int | None = None, maximum: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise MessageError(f"{name} must be bytes, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise MessageError(f"{name} must be {length} bytes, got {len(value)}")
    if maximum is not None and len(value) > maximum:
        raise MessageError(f"{name} of {len(value)} bytes exceeds {maximum}")
    return value


def _list(value: Any, name: str, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise MessageError(f"{name} must be an array, got {type(value).__name__}")
    if len(value) > maximum:
        raise MessageError(f"{name} holds {len(value)} items, more than {maximum}")
    return value


def _pair(value: Any, name: str, limits: Limits) -> tuple[int, bytes]:
    items = _list(value, name, 2)
    if len(items) != 2:
        raise MessageError(f"{name} must be [member, digest]")
    return _int(items[0], f"{name}.member", 0, limits.members - 1), _bytes(items[1], f"{name}.digest", DIGEST_BYTES)


def _pairs(value: Any, name: str, limits: Limits, length: int, check: Callable[[Any, str], tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    """An array of [member, byte string of ``length``] pairs (value inputs, certificates). A valid
    pair is taken by a type check inline (a record holds hundreds; naming each for an error that
    does not come was most of decoding it); the first other item goes to ``check``, which raises
    the precise error, or returns the pair if the inline check was only stricter."""
    pairs = []
    top = limits.members - 1
    for index, item in enumerate(_list(value, name, limits.members)):
        if type(item) is list and len(item) == 2:
            member, data = item
            if type(member) is int and 0 <= member <= top and type(data) is bytes and len(data) == length:
                pairs.append((member, data))
                continue
        pairs.append(check(item, f"{name}[{index}]"))
    return tuple(pairs)


class Message:
    """Base of every message: canonical fields and the tag that names the type."""

    TAG: ClassVar[int]
    KIND: ClassVar[str]

    def fields(self) -> list[Any]:
        raise NotImplementedError

    def encode(self) -> bytes:
        return _pack([self.TAG, *self.fields()])


@dataclass(frozen=True, slots=True)
class SignedHeader:
    """The signed part of an update, proposal or vote, as evidence carries it.

    ``body`` is what was signed (the canonical signing body of the original message), so anyone
    holding the genesis and the signer's key can check it.
    """

    kind: str
    body: bytes
    signature: bytes

    def fields(self) -> list[Any]:
        return [self.kind.encode(), self.body, self.signature]


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message on a channel: where the sender is, so peers know who is behind."""

    TAG: ClassVar[int] = 1
    KIND: ClassVar[str] = "hello"
    version: int
    round: int
    last_hash: bytes

    def __post_init__(self) -> None:
        _int(self.version, "version", 1, 2**16)
        _int(self.round, "round", 1, ROUND_MAX)
        _bytes(self.last_hash, "last_hash", DIGEST_BYTES)

    def fields(self) -> list[Any]:
        return [self.version, self.round, self.last_hash]


@dataclass(frozen=True, slots=True)
class Update(Message):
    """A member's update for one round, on the chain ending in ``prev_hash``."""

    TAG: ClassVar[int] = 2
    KIND: ClassVar[str] = "update"
    round: int
    prev_hash: bytes
    sender: int
    payload: bytes
    signature: bytes
    # SHA-256 of the payload, taken once: the signature covers it, and every member looks updates
    # up by it several times (a 400 KB payload costs ~0.2 ms to hash).
    digest: bytes = field(init=False, repr=False, compare=False)
    signed: bytes = field(init=False, repr=False, compare=False)  # the signed body, packed once
    # The vector length the payload was last found valid for (`check_payload`); 0: not yet.
    checked_length: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        _int(self.round, "round", 1, ROUND_MAX)
        _bytes(self.prev_hash, "prev_hash", DIGEST_BYTES)
        _int(self.sender, "sender", 0, 2**16)
        _bytes(self.signature, "signature", SIGNATURE_BYTES)
        if not isinstance(self.payload, bytes):
            raise MessageError("payload must be bytes")
        object.__setattr__(self, "digest", hashlib.sha256(self.payload).digest())
        object.__setattr__(self, "signed", self.body(self.round, self.prev_hash, self.sender, self.digest))

    @staticmethod
    def body(round_number: int, prev_hash: bytes, sender: int, digest: bytes) -> bytes:
        return _pack([round_number, prev_hash, sender, digest])

    @classmethod
    def create(cls, identity: Identity, genesis_hash: bytes, round_number: int, prev_hash: bytes, sender: int, payload: bytes) -> Update:
        digest = hashlib.sha256(payload).digest()
        signature = identity.sign(domain(genesis_hash, cls.KIND), cls.body(round_number, prev_hash, sender, digest))
        return cls(round_number, prev_hash, sender, payload, signature)

    def header(self) -> SignedHeader:
        return SignedHeader(self.KIND, self.signed, self.signature)

    def check_payload(self, length: int) -> None:
        """`qora_p2p.fixedpoint.check_vector` of the payload, done once per update and length (a
        simulated network hands one decoded update to every member).

        Raises:
            FixedPointError: a payload the round transition could not decode.
        """
        if self.checked_length != length or not length:
            check_vector(self.payload, length)
            object.__setattr__(self, "checked_length", length)

    def verify(self, genesis_hash: bytes, public_key: bytes) -> None:
        verify(public_key, domain(genesis_hash, self.KIND), self.header().body, self.signature)

    def fields(self) -> list[Any]:
        return [self.round, self.prev_hash, self.sender, self.payload, self.signature]


@dataclass(frozen=True, slots=True)
class Announce(Message):
    """Which members' updates for ``round`` the sender holds (a bitmap, member 0 = bit 0)."""

    TAG: ClassVar[int] = 3
    KIND: ClassVar[str] = "announce"
    round: int
    holders: bytes

    def __post_init__(self) -> None:
        _int(self.round, "round", 1, ROUND_MAX)
        _bytes(self.holders, "holders", maximum=128)

    @classmethod
    def of(cls, round_number: int, members: Sequence[int], size: int) -> Announce:
        bitmap = bytearray((size + 7) // 8)
        for member in members:
            bitmap[member // 8] |= 1 << (member % 8)
        return cls(round_number, bytes(bitmap))

    def members(self) -> list[int]:
        return [index for index in range(8 * len(self.holders)) if self.holders[index // 8] >> (index % 8) & 1]

    def fields(self) -> list[Any]:
        return [self.round, self.holders]


@dataclass(frozen=True, slots=True)
class Fetch(Message):
    """A request for updates by (sender, digest); an empty digest asks for any update of that
    sender for the round (when a proposer knows who announced it but not its digest)."""

    TAG: ClassVar[int] = 4
    KIND: ClassVar[str] = "fetch"
    round: int
    wanted: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        _int(self.round, "round", 1, ROUND_MAX)
        if not self.wanted or len(self.wanted) > FETCH_ITEMS_MAX:
            raise MessageError(f"a fetch names 1..{FETCH_ITEMS_MAX} updates, got {len(self.wanted)}")

    def fields(self) -> list[Any]:
        return [self.round, [[member, digest] for member, digest in self.wanted]]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Proof that ``culprit`` signed two conflicting messages of one kind for one slot."""

    culprit: int
    first: SignedHeader
    second: SignedHeader

    def fields(self) -> list[Any]:
        return [self.culprit, self.first.fields(), self.second.fields()]


@dataclass(frozen=True, slots=True)
class Value:
    """What a round agrees on; ``id`` is the round hash."""

    round: int
    prev_hash: bytes
    inputs: tuple[tuple[int, bytes], ...]
    evidence: tuple[Evidence, ...]
    model_digest: bytes
    ledger_digest: bytes
    # The packed fields, once `id` needed them (every member hashes every value it sees, often
    # more than once; the fields are immutable).
    packed: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int(self.round, "value.round", 1, ROUND_MAX)
        _bytes(self.prev_hash, "value.prev_hash", DIGEST_BYTES)
        _bytes(self.model_digest, "value.model_digest", DIGEST_BYTES)
        _bytes(self.ledger_digest, "value.ledger_digest", DIGEST_BYTES)
        senders = [sender for sender, _ in self.inputs]
        if senders != sorted(set(senders)):
            raise MessageError("value.inputs must be sorted by sender with no repeats")

    def fields(self) -> list[Any]:
        return [
            self.round,
            self.prev_hash,
            [[sender, digest] for sender, digest in self.inputs],
            [item.fields() for item in self.evidence],
            self.model_digest,
            self.ledger_digest,
        ]

    def id(self, genesis_hash: bytes) -> bytes:
        """The round hash."""
        return hashlib.sha256(b"qora-p2p/round/v1" + genesis_hash + self.packed_fields()).digest()

    def packed_fields(self) -> bytes:
        """``_pack(self.fields())``, kept once made."""
        packed = self.packed
        if packed is None:
            packed = _pack(self.fields())
            object.__setattr__(self, "packed", packed)
        return packed


@dataclass(frozen=True, slots=True)
class Proposal(Message):
    """Tendermint's PROPOSAL: ``valid_view`` is -1 or the view the value was last locked in."""

    TAG: ClassVar[int] = 5
    KIND: ClassVar[str] = "proposal"
    round: int
    view: int
    valid_view: int
    proposer: int
    value: Value
    signature: bytes

    def __post_init__(self) -> None:
        _int(self.view, "view", 0, VIEW_MAX)
        _int(self.valid_view, "valid_view", -1, self.view - 1)
        _bytes(self.signature, "signature", SIGNATURE_BYTES)
        if self.value.round != self.round:
            raise MessageError("proposal round and value round differ")

    @staticmethod
    def body(round_number: int, view: int, valid_view: int, proposer: int, value_id: bytes) -> bytes:
        return _pack([round_number, view, valid_view, proposer, value_id])

    @classmethod
    def create(cls, identity: Identity, genesis_hash: bytes, view: int, valid_view: int, proposer: int, value: Value) -> Proposal:
        body = cls.body(value.round, view, valid_view, proposer, value.id(genesis_hash))
        return cls(value.round, view, valid_view, proposer, value, identity.sign(domain(genesis_hash, cls.KIND), body))

    def header(self, genesis_hash: bytes) -> SignedHeader:
        body = self.body(self.round, self.view, self.valid_view, self.proposer, self.value.id(genesis_hash))
        return SignedHeader(self.KIND, body, self.signature)

    def verify(self, genesis_hash: bytes, public_key: bytes) -> None:
        verify(public_key, domain(genesis_hash, self.KIND), self.header(genesis_hash).body, self.signature)

    def fields(self) -> list[Any]:
        return [self.round, self.view, self.valid_view, self.proposer, self.value.fields(), self.signature]


@dataclass(frozen=True, slots=True)
class _Vote(Message):
    round: int
    view: int
    value_id: bytes  # NIL for a nil vote
    voter: int
    signature: bytes
    # The signed body, packed once: every member checks a vote's signature, and a simulated
    # network of n members checks each vote n - 1 times.
    signed: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int(self.round, "round", 1, ROUND_MAX)
        _int(self.view, "view", 0, VIEW_MAX)
        if self.value_id != NIL:
            _bytes(self.value_id, "value_id", DIGEST_BYTES)
        _bytes(self.signature, "signature", SIGNATURE_BYTES)
        object.__setattr__(self, "signed", self.body(self.round, self.view, self.value_id, self.voter))

    @classmethod
    def body(cls, round_number: int, view: int, value_id: bytes, voter: int) -> bytes:
        return _pack([round_number, view, value_id, voter])

    @classmethod
    def create(cls, identity: Identity, genesis_hash: bytes, round_number: int, view: int, value_id: bytes, voter: int) -> Self:
        signature = identity.sign(domain(genesis_hash, cls.KIND), cls.body(round_number, view, value_id, voter))
        return cls(round_number, view, value_id, voter, signature)

    def header(self) -> SignedHeader:
        return SignedHeader(self.KIND, self.signed, self.signature)

    def verify(self, genesis_hash: bytes, public_key: bytes) -> None:
        verify(public_key, domain(genesis_hash, self.KIND), self.header().body, self.signature)

    def fields(self) -> list[Any]:
        return [self.round, self.view, self.value_id, self.voter, self.signature]


@dataclass(frozen=True, slots=True)
class Prevote(_Vote):
    TAG: ClassVar[int] = 6
    KIND: ClassVar[str] = "prevote"


@dataclass(frozen=True, slots=True)
class Precommit(_Vote):
    TAG: ClassVar[int] = 7
    KIND: ClassVar[str] = "precommit"


@dataclass(frozen=True, slots=True)
class Record(Message):
    """A committed round: its value and a commit certificate (a quorum of precommit signatures
    for the value's id in ``view``)."""

    TAG: ClassVar[int] = 8
    KIND: ClassVar[str] = "record"
    value: Value
    view: int
    certificate: tuple[tuple[int, bytes], ...]
    body: bytes | None = field(default=None, init=False, repr=False, compare=False)  # see `packed_body`

    def __post_init__(self) -> None:
        _int(self.view, "view", 0, VIEW_MAX)
        voters = [voter for voter, _ in self.certificate]
        if voters != sorted(set(voters)):
            raise MessageError("certificate signatures must be sorted by voter with no repeats")
        for voter, signature in self.certificate:
            if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
                _bytes(signature, f"certificate[{voter}]", SIGNATURE_BYTES)  # raises, naming it

    def packed_body(self) -> bytes:
        """The packed fields, one after another without the array header, kept once made: a
        member serves the same records to every peer that catches up (`SyncResponse`)."""
        body = self.body
        if body is None:
            body = self.value.packed_fields() + _pack(self.view) + _pack([[voter, signature] for voter, signature in self.certificate])
            object.__setattr__(self, "body", body)
        return body

    def encode(self) -> bytes:
        return _ARRAY_OF_4 + _pack(self.TAG) + self.packed_body()

    def verify(
        self,
        genesis_hash: bytes,
        keys: Sequence[bytes],
        quorum: int,
        verifier: Callable[[bytes, bytes, bytes, bytes], None] = verify,
    ) -> bytes:
        """Check the certificate with ``verifier`` (`qora_p2p.identity.verify` unless a caching
        one is given); return the round hash.

        Raises:
            MessageError: too few signers, or a signer outside the member list.
            SignatureError: a signature that does not verify.
        """
        if len(self.certificate) < quorum:
            raise MessageError(f"certificate has {len(self.certificate)} signatures, a quorum is {quorum}")
        value_id = self.value.id(genesis_hash)
        for voter, signature in self.certificate:
            if voter >= len(keys):
                raise MessageError(f"certificate names member {voter}, outside the genesis")
            body = Precommit.body(self.value.round, self.view, value_id, voter)
            verifier(keys[voter], domain(genesis_hash, Precommit.KIND), body, signature)
        return value_id

    def fields(self) -> list[Any]:
        return [self.value.fields(), self.view, [[voter, signature] for voter, signature in self.certificate]]


@dataclass(frozen=True, slots=True)
class SyncRequest(Message):
    """Ask for the records of rounds ``first .. first + count - 1`` and, optionally, the state."""

    TAG: ClassVar[int] = 9
    KIND: ClassVar[str] = "sync_request"
    first: int
    count: int
    want_state: bool

    def __post_init__(self) -> None:
        _int(self.first, "first", 1, ROUND_MAX)
        _int(self.count, "count", 0, SYNC_RECORDS_MAX)
        if not isinstance(self.want_state, bool):
            raise MessageError("want_state must be a boolean")

    def fields(self) -> list[Any]:
        return [self.first, self.count, self.want_state]


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """Agreed state after ``round``: model (int64 fixed point), last aggregate (int32), ledger."""

    round: int
    model: bytes
    aggregate: bytes
    ledger: bytes

    def fields(self) -> list[Any]:
        return [self.round, self.model, self.aggregate, self.ledger]


@dataclass(frozen=True, slots=True)
class SyncResponse(Message):
    TAG: ClassVar[int] = 10
    KIND: ClassVar[str] = "sync_response"
    records: tuple[Record, ...]
    state: StateSnapshot | None

    def __post_init__(self) -> None:
        if len(self.records) > SYNC_RECORDS_MAX:
            raise MessageError(f"a sync response carries at most {SYNC_RECORDS_MAX} records")

    def fields(self) -> list[Any]:
        return [[record.fields() for record in self.records], None if self.state is None else self.state.fields()]

    def encode(self) -> bytes:
        """The tag and fields packed, each record's from its kept body."""
        records = b"".join(_ARRAY_OF_3 + record.packed_body() for record in self.records)
        state = _pack(None if self.state is None else self.state.fields())
        header: bytes = msgpack.Packer().pack_array_header(len(self.records))
        return _ARRAY_OF_3 + _pack(self.TAG) + header + records + state


@dataclass(frozen=True, slots=True)
class EvidenceMessage(Message):
    """Gossip of one equivocation proof."""

    TAG: ClassVar[int] = 11
    KIND: ClassVar[str] = "evidence"
    evidence: Evidence

    def fields(self) -> list[Any]:
        return self.evidence.fields()


# ---------------------------------------------------------------------------------------------
# decoding


MESSAGE_TYPES: tuple[type[Message], ...] = (
    Hello,
    Update,
    Announce,
    Fetch,
    Proposal,
    Prevote,
    Precommit,
    Record,
    SyncRequest,
    SyncResponse,
    EvidenceMessage,
)  # every type `decode` can produce; the core's admission table must cover exactly these
assert len({kind.TAG for kind in MESSAGE_TYPES}) == len(MESSAGE_TYPES), "one tag per message type"


def _header(value: Any, name: str) -> SignedHeader:
    items = _list(value, name, 3)
    if len(items) != 3:
        raise MessageError(f"{name} must be [kind, body, signature]")
    kind = _bytes(items[0], f"{name}.kind", maximum=16)
    if kind not in (b"update", b"proposal", b"prevote", b"precommit"):
        raise MessageError(f"{name}.kind {kind!r} is not a signed message kind")
    return SignedHeader(kind.decode(), _bytes(items[1], f"{name}.body", maximum=256), _bytes(items[2], f"{name}.signature", SIGNATURE_BYTES))


def _evidence(value: Any, name: str, limits: Limits) -> Evidence:
    items = _list(value, name, 3)
    if len(items) != 3:
        raise MessageError(f"{name} must be [culprit, first, second]")
    culprit = _int(items[0], f"{name}.culprit", 0, limits.members - 1)
    return Evidence(culprit, _header(items[1], f"{name}.first"), _header(items[2], f"{name}.second"))


def _value(value: Any, limits: Limits) -> Value:
    items = _list(value, "value", 6)
    if len(items) != 6:
        raise MessageError("value must have 6 fields")
    inputs = _pairs(items[2], "value.inputs", limits, DIGEST_BYTES, lambda item, name: _pair(item, name, limits))
    evidence = tuple(_evidence(item, f"value.evidence[{index}]", limits) for index, item in enumerate(_list(items[3], "value.evidence", limits.evidence_max)))
    return Value(_int(items[0], "value.round", 1, ROUND_MAX), _bytes(items[1], "value.prev_hash", DIGEST_BYTES), inputs, evidence, items[4], items[5])


def _record(value: Any, limits: Limits) -> Record:
    items = _list(value, "record", 3)
    if len(items) != 3:
        raise MessageError("record must have 3 fields")

    def signature(item: Any, name: str) -> tuple[int, bytes]:
        pair = _list(item, name, 2)
        if len(pair) != 2:
            raise MessageError(f"{name} must be [voter, signature]")
        return _int(pair[0], "voter", 0, limits.members - 1), _bytes(pair[1], "signature", SIGNATURE_BYTES)

    certificate = _pairs(items[2], "record.certificate", limits, SIGNATURE_BYTES, signature)
    return Record(_value(items[0], limits), items[1], certificate)


def _expect(body: list[Any], count: int, kind: str) -> None:
    if len(body) != count:
        raise MessageError(f"{kind} must have {count} fields, got {len(body)}")


def _build(tag: int, body: list[Any], limits: Limits) -> Message:  # noqa: PLR0911, PLR0912 (one branch per type)
    if tag == Hello.TAG:
        _expect(body, 3, "hello")
        return Hello(*body)
    if tag == Update.TAG:
        _expect(body, 5, "update")
        _int(body[2], "sender", 0, limits.members - 1)
        _bytes(body[3], "payload", limits.payload_bytes)
        return Update(*body)
    if tag == Announce.TAG:
        _expect(body, 2, "announce")
        _bytes(body[1], "holders", (limits.members + 7) // 8)
        return Announce(*body)
    if tag == Fetch.TAG:
        _expect(body, 2, "fetch")
        wanted = []
        for index, item in enumerate(_list(body[1], "wanted", limits.members)):
            pair = _list(item, f"wanted[{index}]", 2)
            if len(pair) != 2:
                raise MessageError(f"wanted[{index}] must be [member, digest]")
            digest = _bytes(pair[1], f"wanted[{index}].digest", maximum=DIGEST_BYTES)
            if len(digest) not in (0, DIGEST_BYTES):
                raise MessageError(f"wanted[{index}].digest must be empty or {DIGEST_BYTES} bytes")
            wanted.append((_int(pair[0], f"wanted[{index}].member", 0, limits.members - 1), digest))
        return Fetch(body[0], tuple(wanted))
    if tag == Proposal.TAG:
        _expect(body, 6, "proposal")
        _int(body[3], "proposer", 0, limits.members - 1)
        return Proposal(_int(body[0], "round", 1, ROUND_MAX), body[1], body[2], body[3], _value(body[4], limits), body[5])
    if tag in (Prevote.TAG, Precommit.TAG):
        _expect(body, 5, "vote")
        _int(body[3], "voter", 0, limits.members - 1)
        return (Prevote if tag == Prevote.TAG else Precommit)(*body)
    if tag == Record.TAG:
        return _record(body, limits)
    if tag == SyncRequest.TAG:
        _expect(body, 3, "sync_request")
        return SyncRequest(*body)
    if tag == SyncResponse.TAG:
        _expect(body, 2, "sync_response")
        records = tuple(_record(item, limits) for item in _list(body[0], "records", SYNC_RECORDS_MAX))
        state = None
        if body[1] is not None:
            items = _list(body[1], "state", 4)
            _expect(items, 4, "state")
            state = StateSnapshot(
                _int(items[0], "state.round", 1, ROUND_MAX),
                _bytes(items[1], "state.model", limits.model_bytes),
                _bytes(items[2], "state.aggregate", limits.payload_bytes),
                _bytes(items[3], "state.ledger", maximum=limits.ledger_bytes_max),
            )
        return SyncResponse(records, state)
    if tag == EvidenceMessage.TAG:
        return EvidenceMessage(_evidence(body, "evidence", limits))
    raise MessageError(f"unknown message tag {tag}")


def decode(data: bytes, limits: Limits) -> Message:
    """Parse one message, enforcing ``limits`` and canonical encoding.

    Raises:
        MessageError: malformed, out of limits, unknown, or not canonically encoded.
    """
    if len(data) > limits.message_bytes_max:
        raise MessageError(f"message of {len(data)} bytes exceeds {limits.message_bytes_max}")
    try:
        raw = msgpack.unpackb(
            data,
            use_list=True,
            raw=False,
            strict_map_key=True,
            max_bin_len=limits.message_bytes_max,
            max_str_len=0,
            max_array_len=max(limits.members, SYNC_RECORDS_MAX, 16),
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, RecursionError) as error:
        raise MessageError(f"not a msgpack message: {error}") from error
    if not isinstance(raw, list) or not raw:
        raise MessageError("a message is a non-empty msgpack array")
    tag = _int(raw[0], "tag", 0, 255)
    try:
        message = _build(tag, raw[1:], limits)
    except TypeError as error:
        raise MessageError(f"malformed message (tag {tag}): {error}") from error
    if not _is_canonical(message, raw, data):
        raise MessageError(f"{message.KIND} is not canonically encoded")
    return message


def bin_header(length: int) -> bytes:
    """msgpack's shortest header for a byte string of ``length`` (bin 8, 16 or 32)."""
    if length < 1 << 8:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def _is_canonical(message: Message, raw: list[Any], data: bytes) -> bool:
    """Whether ``data`` is exactly ``message.encode()``, without copying its large byte strings.

    A message under `CANONICAL_WALK_BYTES`, and any sync response, is packed again and compared
    (a sync response from its records' kept bytes; it has no top-level byte string). Any other
    longer message is walked field by field against ``data``: small fields are packed and
    compared; a top-level byte string of at least `CANONICAL_COPY_BYTES` that is the very object the decoder
    read from ``data`` is checked by its header alone. Its content needs no comparison: every byte
    before it matched the canonical encoding of the fields before it, so the decoder read it from
    this position, and its bytes are those of ``data`` there (a 400 KB update payload would
    otherwise be packed again and compared, about 0.5 ms).
    """
    if len(data) < CANONICAL_WALK_BYTES or isinstance(message, SyncResponse):
        # Small: one pack is cheaper than the walk. A sync response joins its records' kept
        # bytes, and its state is nested, so the walk's in-place check never applied to it.
        return message.encode() == data
    items = [message.TAG, *message.fields()]
    view = memoryview(data)
    header = msgpack.Packer().pack_array_header(len(items))
    if view[: len(header)] != header:
        return False
    position = len(header)
    for index, item in enumerate(items):
        if isinstance(item, bytes) and len(item) >= CANONICAL_COPY_BYTES and index < len(raw) and raw[index] is item:
            encoded = bin_header(len(item))
            skip = len(item)
        else:
            encoded = _pack(item)
            skip = 0
        if view[position : position + len(encoded)] != encoded:
            return False
        position += len(encoded) + skip
    return position == len(data)


def encode(message: Message) -> bytes:
    return message.encode()


def verify_header(header: SignedHeader, genesis_hash: bytes, public_key: bytes) -> None:
    """Check an evidence header's signature.

    Raises:
        SignatureError: it does not verify.
    """
    verify(public_key, domain(genesis_hash, header.kind), header.body, header.signature)


def conflicting(first: SignedHeader, second: SignedHeader) -> bool:
    """Whether two signed headers by one signer prove equivocation: same kind and slot, different
    content. The slot is (round, prev_hash) for updates, (round, view) for proposals and votes."""
    if first.kind != second.kind or first.body == second.body:
        return False
    try:
        one, two = msgpack.unpackb(first.body), msgpack.unpackb(second.body)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return False
    if not isinstance(one, list) or not isinstance(two, list) or len(one) != len(two) or len(one) < 4:
        return False
    if first.kind == "update":
        return bool(one[0] == two[0] and one[1] == two[1] and one[2] == two[2] and one[3] != two[3])
    if first.kind == "proposal":
        return bool(one[0] == two[0] and one[1] == two[1] and one[3] == two[3] and one[4] != two[4])
    return bool(one[0] == two[0] and one[1] == two[1] and one[3] == two[3] and one[2] != two[2])


__all__ += ["EvidenceMessage", "SignatureError", "bin_header", "conflicting", "verify_header"]
