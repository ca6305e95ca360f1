"""Protocol messages: one canonical encoding each, strict limits, signatures bound to network,
type and content."""

import contextlib
import hashlib
import random
import re

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qora_p2p.errors import FixedPointError, MessageError, SignatureError
from qora_p2p.fixedpoint import to_bytes
from qora_p2p.identity import Identity
from qora_p2p.protocol.messages import (
    CANONICAL_WALK_BYTES,
    NIL,
    SYNC_RECORDS_MAX,
    Announce,
    Evidence,
    EvidenceMessage,
    Fetch,
    Hello,
    Limits,
    Precommit,
    Prevote,
    Proposal,
    Record,
    StateSnapshot,
    SyncRequest,
    SyncResponse,
    Update,
    Value,
    conflicting,
    decode,
    verify_header,
)

LIMITS = Limits(members=7, dimension=5, evidence_max=2)
GENESIS = hashlib.sha256(b"test genesis").digest()
OTHER_GENESIS = hashlib.sha256(b"another network").digest()
IDENTITIES = [Identity.from_seed(bytes([index + 1]) * 32) for index in range(LIMITS.members)]
KEYS = [identity.public_key for identity in IDENTITIES]

rounds = st.integers(1, 2**40)
views = st.integers(0, 2**20)
members = st.integers(0, LIMITS.members - 1)
digests = st.binary(min_size=32, max_size=32)
payloads = st.binary(min_size=LIMITS.payload_bytes, max_size=LIMITS.payload_bytes)


@st.composite
def values(draw, round_number=None):
    number = draw(rounds) if round_number is None else round_number
    senders = sorted(draw(st.sets(members, max_size=LIMITS.members)))
    inputs = tuple((sender, draw(digests)) for sender in senders)
    evidence = tuple(draw(st.lists(evidences(), max_size=LIMITS.evidence_max)))
    return Value(number, draw(digests), inputs, evidence, draw(digests), draw(digests))


@st.composite
def evidences(draw):
    culprit = draw(members)
    one = Prevote.create(IDENTITIES[culprit], GENESIS, 3, 0, draw(digests), culprit)
    two = Prevote.create(IDENTITIES[culprit], GENESIS, 3, 0, draw(digests), culprit)
    return Evidence(culprit, one.header(), two.header())


@st.composite
def records(draw):
    value = draw(values())
    voters = sorted(draw(st.sets(members, min_size=1)))
    view = draw(views)
    certificate = tuple(
        (voter, Precommit.create(IDENTITIES[voter], GENESIS, value.round, view, value.id(GENESIS), voter).signature) for voter in voters
    )
    return Record(value, view, certificate)


@st.composite
def messages(draw):  # noqa: PLR0911 (one branch per message type)
    kind = draw(st.sampled_from(["hello", "update", "announce", "fetch", "proposal", "prevote", "precommit", "record", "sync_request", "sync_response", "evidence"]))
    if kind == "hello":
        return Hello(1, draw(rounds), draw(digests))
    if kind == "update":
        sender = draw(members)
        return Update.create(IDENTITIES[sender], GENESIS, draw(rounds), draw(digests), sender, draw(payloads))
    if kind == "announce":
        return Announce.of(draw(rounds), sorted(draw(st.sets(members))), LIMITS.members)
    if kind == "fetch":
        wanted = tuple((member, draw(digests)) for member in sorted(draw(st.sets(members, min_size=1))))
        return Fetch(draw(rounds), wanted)
    if kind == "proposal":
        proposer, view = draw(members), draw(views)
        return Proposal.create(IDENTITIES[proposer], GENESIS, view, draw(st.integers(-1, view - 1)), proposer, draw(values()))
    if kind in ("prevote", "precommit"):
        voter = draw(members)
        vote = Prevote if kind == "prevote" else Precommit
        return vote.create(IDENTITIES[voter], GENESIS, draw(rounds), draw(views), draw(st.one_of(st.just(NIL), digests)), voter)
    if kind == "record":
        return draw(records())
    if kind == "sync_request":
        return SyncRequest(draw(rounds), draw(st.integers(0, SYNC_RECORDS_MAX)), draw(st.booleans()))
    if kind == "sync_response":
        state = draw(
            st.none()
            | st.builds(
                StateSnapshot,
                rounds,
                st.binary(min_size=LIMITS.model_bytes, max_size=LIMITS.model_bytes),
                payloads,
                st.binary(max_size=64),
            )
        )
        return SyncResponse(tuple(draw(st.lists(records(), max_size=3))), state)
    return EvidenceMessage(draw(evidences()))


@settings(max_examples=300)
@given(messages())
def test_every_message_round_trips_canonically(message):
    """decode(encode(m)) == m, and the encoding is the only one decode accepts."""
    data = message.encode()
    assert decode(data, LIMITS) == message
    assert decode(data, LIMITS).encode() == data


@given(messages(), st.data())
def test_non_canonical_encodings_are_rejected(message, data):
    """An integer packed wider than needed, or a map where an array belongs, is refused."""
    raw = msgpack.unpackb(message.encode())
    widened = b"\x90"[:0] + bytes([0xDC]) + len(raw).to_bytes(2, "big") + b"".join(msgpack.packb(item, use_bin_type=True) for item in raw)
    with pytest.raises(MessageError, match="canonical"):
        decode(widened, LIMITS)
    with pytest.raises(MessageError):
        decode(msgpack.packb({"tag": raw[0]}), LIMITS)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_message_errors(data):
    """Fuzzing the decoder with random bytes never raises anything but MessageError."""
    with contextlib.suppress(MessageError):
        decode(data, LIMITS)


@settings(max_examples=500)
@given(messages(), st.data())
def test_mutated_messages_raise_only_message_errors(message, data):
    """Flipping, truncating or extending a valid message gives a MessageError or a valid message."""
    raw = bytearray(message.encode())
    operation = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if operation == "flip":
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] ^= data.draw(st.integers(1, 255))
    elif operation == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = decode(bytes(raw), LIMITS)
    except MessageError:
        return
    assert decoded.encode() == bytes(raw)


def test_limits_are_enforced():
    """Payloads of the wrong size, members beyond n, oversized lists and messages are refused."""
    identity = IDENTITIES[0]
    short = Update.create(identity, GENESIS, 1, bytes(32), 0, bytes(LIMITS.payload_bytes - 4))
    with pytest.raises(MessageError, match="payload must be 20 bytes"):
        decode(short.encode(), LIMITS)
    outsider = Prevote.create(identity, GENESIS, 1, 0, NIL, 0).encode().replace(b"\x00\xc4@", b"\x07\xc4@")
    with pytest.raises(MessageError, match="voter"):
        decode(outsider, LIMITS)
    with pytest.raises(MessageError, match="exceeds"):
        decode(bytes(LIMITS.message_bytes_max + 1), LIMITS)
    with pytest.raises(MessageError, match="unknown message tag"):
        decode(msgpack.packb([99, 1]), LIMITS)


def test_signatures_bind_network_type_and_content():
    """A tampered signature, another network, another round or another type does not verify."""
    identity = IDENTITIES[2]
    update = Update.create(identity, GENESIS, 5, bytes(32), 2, bytes(LIMITS.payload_bytes))
    update.verify(GENESIS, identity.public_key)
    with pytest.raises(SignatureError):
        update.verify(OTHER_GENESIS, identity.public_key)
    with pytest.raises(SignatureError):
        Update(6, update.prev_hash, 2, update.payload, update.signature).verify(GENESIS, identity.public_key)
    with pytest.raises(SignatureError):
        Update(5, update.prev_hash, 2, b"\x01" + update.payload[1:], update.signature).verify(GENESIS, identity.public_key)
    tampered = bytes([update.signature[0] ^ 1]) + update.signature[1:]
    with pytest.raises(SignatureError):
        Update(5, update.prev_hash, 2, update.payload, tampered).verify(GENESIS, identity.public_key)
    with pytest.raises(SignatureError):
        update.verify(GENESIS, IDENTITIES[3].public_key)
    vote = Prevote.create(identity, GENESIS, 5, 0, bytes(32), 2)
    as_precommit = Precommit(vote.round, vote.view, vote.value_id, vote.voter, vote.signature)
    with pytest.raises(SignatureError):
        as_precommit.verify(GENESIS, identity.public_key)


def test_round_hash_covers_every_field_of_the_value():
    """Changing any part of a value changes its round hash; so does another genesis."""
    value = Value(3, bytes(32), ((0, bytes(32)), (2, b"\x01" * 32)), (), b"\x02" * 32, b"\x03" * 32)
    variants = [
        Value(4, value.prev_hash, value.inputs, (), value.model_digest, value.ledger_digest),
        Value(3, b"\x09" * 32, value.inputs, (), value.model_digest, value.ledger_digest),
        Value(3, bytes(32), value.inputs[:1], (), value.model_digest, value.ledger_digest),
        Value(3, bytes(32), value.inputs, (), b"\x04" * 32, value.ledger_digest),
        Value(3, bytes(32), value.inputs, (), value.model_digest, b"\x05" * 32),
    ]
    assert len({value.id(GENESIS), *(variant.id(GENESIS) for variant in variants)}) == 6
    assert value.id(GENESIS) != value.id(OTHER_GENESIS)
    with pytest.raises(MessageError, match="sorted"):
        Value(3, bytes(32), ((2, bytes(32)), (0, bytes(32))), (), bytes(32), bytes(32))


def test_records_verify_only_with_a_quorum_of_valid_precommits():
    """A certificate needs a quorum of distinct valid precommit signatures for the value's id."""
    value = Value(2, bytes(32), ((1, bytes(32)),), (), bytes(32), bytes(32))
    value_id = value.id(GENESIS)
    signatures = [(voter, Precommit.create(IDENTITIES[voter], GENESIS, 2, 1, value_id, voter).signature) for voter in range(5)]
    record = Record(value, 1, tuple(signatures))
    assert record.verify(GENESIS, KEYS, quorum=5) == value_id
    with pytest.raises(MessageError, match="quorum is 6"):
        record.verify(GENESIS, KEYS, quorum=6)
    forged = [*signatures[:4], (4, signatures[3][1])]
    with pytest.raises(SignatureError):
        Record(value, 1, tuple(forged)).verify(GENESIS, KEYS, quorum=5)
    with pytest.raises(SignatureError):
        Record(value, 0, tuple(signatures)).verify(GENESIS, KEYS, quorum=5)
    with pytest.raises(MessageError, match="sorted"):
        Record(value, 1, tuple(reversed(signatures)))


def test_equivocation_is_detected_from_signed_headers():
    """Two signed votes (or updates) for one slot with different content conflict; others do not."""
    identity = IDENTITIES[1]
    first = Prevote.create(identity, GENESIS, 4, 2, b"\x01" * 32, 1).header()
    second = Prevote.create(identity, GENESIS, 4, 2, b"\x02" * 32, 1).header()
    later = Prevote.create(identity, GENESIS, 4, 3, b"\x02" * 32, 1).header()
    assert conflicting(first, second) and not conflicting(first, later) and not conflicting(first, first)
    update_a = Update.create(identity, GENESIS, 4, bytes(32), 1, b"a" * 20).header()
    update_b = Update.create(identity, GENESIS, 4, bytes(32), 1, b"b" * 20).header()
    assert conflicting(update_a, update_b) and not conflicting(update_a, first)
    verify_header(first, GENESIS, identity.public_key)
    with pytest.raises(SignatureError):
        verify_header(first, GENESIS, IDENTITIES[0].public_key)


def test_announce_bitmap_round_trips():
    """Announce.of and members() are inverses."""
    announce = Announce.of(9, [0, 3, 6], LIMITS.members)
    assert announce.members() == [0, 3, 6] and announce.holders == bytes([0b01001001])


# Updates just over CANONICAL_WALK_BYTES with a payload still under bin 16's limit (so every field,
# the payload included, has a wider form): checked field by field, the payload in place.
BIG = Limits(members=7, dimension=16_380)


def _big_update(seed: int) -> Update:
    return Update.create(IDENTITIES[1], GENESIS, 3, b"p" * 32, 1, random.Random(seed).randbytes(BIG.payload_bytes))


def _widen(item: object) -> bytes:
    """``item`` packed one size wider than msgpack's shortest form (a non-canonical encoding)."""
    if isinstance(item, bytes):
        header = b"\xc5" + len(item).to_bytes(2, "big") if len(item) < 256 else b"\xc6" + len(item).to_bytes(4, "big")
        return header + item
    assert isinstance(item, int) and 0 <= item < 2**16
    return b"\xcd" + item.to_bytes(2, "big") if item < 256 else b"\xce" + item.to_bytes(4, "big")


@given(st.integers(0, 2**32), st.integers(0, 6))
def test_a_large_payload_is_checked_in_place_and_any_widened_field_is_refused(seed, widened):
    """A large update decodes without its payload packed again, and the check still refuses every
    field (the array header, the payload's header, the fields before and after it) written wider
    than the shortest form."""
    update = _big_update(seed)
    data = update.encode()
    assert len(data) >= CANONICAL_WALK_BYTES and len(update.payload) < 1 << 16
    assert decode(data, BIG) == update
    items = [Update.TAG, *update.fields()]
    array = b"\xdc\x00\x06" if widened == 0 else b"\x96"
    body = b"".join(_widen(item) if index == widened - 1 and widened else msgpack.packb(item, use_bin_type=True) for index, item in enumerate(items))
    with pytest.raises(MessageError, match="canonical"):
        decode(array + body, BIG)


@settings(max_examples=300)
@given(st.integers(0, 2**32), st.integers(0, 60), st.integers(0, 255))
def test_a_large_update_with_a_byte_changed_near_its_header_decodes_to_itself_or_fails(seed, offset, value):
    """Around the payload's header and the fields before it, any changed byte either still decodes
    to a message whose encoding is exactly the bytes received, or raises MessageError."""
    data = bytearray(_big_update(seed).encode())
    data[offset] = value
    try:
        message = decode(bytes(data), BIG)
    except MessageError:
        return
    assert message.encode() == bytes(data)


def test_an_updates_payload_check_is_remembered_only_when_it_passes():
    """`Update.check_payload` refuses what `check_vector` refuses, every time it is asked, and a
    payload found valid for one length is still checked for another."""
    identity = Identity.generate()
    bad = Update.create(identity, bytes(32), 1, bytes(32), 0, b"\x00\x00\x00\x80" + to_bytes(np.zeros(3, dtype=np.int32)))
    for _ in range(2):
        with pytest.raises(FixedPointError, match="-2\\*\\*31"):
            bad.check_payload(4)
    good = Update.create(identity, bytes(32), 1, bytes(32), 0, to_bytes(np.arange(4, dtype=np.int32)))
    good.check_payload(4)
    assert good.checked_length == 4
    with pytest.raises(FixedPointError, match="needs 12 bytes"):
        good.check_payload(3)
    good.check_payload(4)


@pytest.mark.parametrize(
    ("where", "bad", "named"),
    [
        ("inputs", [1, b"short"], "value.inputs[1].digest must be 32 bytes"),
        ("inputs", [True, bytes(32)], "value.inputs[1].member must be an integer"),
        ("inputs", [LIMITS.members, bytes(32)], "value.inputs[1].member must be an integer in 0..6"),
        ("inputs", [1, bytes(32), 0], "value.inputs[1] holds 3 items, more than 2"),
        ("certificate", [2, b"short"], "signature must be 64 bytes"),
        ("certificate", [-1, bytes(64)], "voter must be an integer in 0..6"),
        ("certificate", 5, "record.certificate[1] must be an array, got int"),
        ("certificate", [2], "record.certificate[1] must be [voter, signature]"),
    ],
)
def test_a_bad_pair_in_a_record_is_named_in_the_error(where, bad, named):
    """Pairs are checked inline; the first bad one still gets its precise error."""
    value = Value(4, bytes(32), ((0, bytes(32)), (2, bytes(32)), (3, bytes(32))), (), bytes(32), bytes(32))
    record = Record(value, 0, tuple((voter, bytes(64)) for voter in (0, 2, 3)))
    assert decode(record.encode(), LIMITS) == record
    raw = msgpack.unpackb(record.encode(), use_list=True)
    (raw[1][2] if where == "inputs" else raw[3])[1] = bad
    with pytest.raises(MessageError, match=re.escape(named)):
        decode(msgpack.packb(raw, use_bin_type=True), LIMITS)


@settings(max_examples=300)
@given(messages())
def test_every_encoding_is_the_msgpack_array_of_tag_and_fields(message):
    """Messages that splice kept bytes (records, sync responses) encode exactly as one pack of
    their fields would, and keep doing so once their kept bytes exist."""
    expected = msgpack.packb([message.TAG, *message.fields()], use_bin_type=True)
    assert message.encode() == expected
    assert message.encode() == expected
    assert decode(expected, LIMITS).encode() == expected


def test_a_large_sync_response_is_walked_against_its_kept_bytes_and_a_wide_field_is_refused():
    limits = Limits(members=7, dimension=20_000)
    value = Value(4, bytes(32), ((0, bytes(32)), (2, bytes(32))), (), bytes(32), bytes(32))
    records = tuple(Record(value, view, ((0, bytes(64)), (3, bytes(64)))) for view in (0, 1))
    state = StateSnapshot(4, bytes(limits.model_bytes), bytes(limits.payload_bytes), b"ledger")
    message = SyncResponse(records, state)
    data = message.encode()
    assert len(data) >= CANONICAL_WALK_BYTES and data == msgpack.packb([message.TAG, *message.fields()], use_bin_type=True)
    assert decode(data, limits) == message
    # The first record's view 0 written as uint8 (0xcc 0x00), not the positive fixint 0x00.
    body = records[0].packed_body()
    wide = body.replace(value.packed_fields() + b"\x00", value.packed_fields() + b"\xcc\x00", 1)
    assert wide != body
    forged = data.replace(b"\x93" + body, b"\x93" + wide, 1)
    assert len(forged) == len(data) + 1 and msgpack.unpackb(forged) == msgpack.unpackb(data)
    with pytest.raises(MessageError, match="not canonically encoded"):
        decode(forged, limits)
