"""Secure channel: handshake, framing, and every way a peer or a man in the middle can break them."""

import hashlib
import random

import nacl.bindings
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from qora_p2p.errors import (
    BadHandshake,
    BadSignature,
    ChannelClosed,
    ChannelError,
    DecryptionFailed,
    FrameTooLarge,
    FrameTruncated,
    HandshakeError,
    HandshakeTimeout,
    LocalProtocolError,
    MessageTooLarge,
    PeerMismatch,
    QoraError,
    RemoteProtocolError,
    UnknownPeer,
    WrongNetwork,
)
from qora_p2p.identity import Identity, verify
from qora_p2p.node import channel as channel_module
from qora_p2p.node.channel import (
    FINISH_BYTES,
    FRAME_COUNTER_MAX,
    HELLO_BYTES,
    INITIATOR_DOMAIN,
    KEEPALIVE_FRAME_BYTES,
    PROTOCOL_VERSION,
    REPLY_BYTES,
    RESPONDER_DOMAIN,
    SEND_FRAME_BYTES_MAX,
    ChannelLimits,
    SecureChannel,
    open_channel,
)

ALICE = Identity.from_seed(b"A" * 32)  # initiator
BOB = Identity.from_seed(b"B" * 32)  # responder
CAROL = Identity.from_seed(b"C" * 32)  # another member
MALLORY = Identity.from_seed(b"M" * 32)  # not a member
MEMBERS = frozenset({ALICE.public_key, BOB.public_key, CAROL.public_key})
GENESIS = hashlib.sha256(b"test network").digest()
SMALL = ChannelLimits(frame_bytes_max=64, message_bytes_max=4096, handshake_timeout_ms=5_000)
FRAME = ChannelLimits().frame_bytes_max
SEND_FRAME = SEND_FRAME_BYTES_MAX
HANDSHAKE_SECONDS = ChannelLimits().handshake_timeout_ms / 1000


# ---------------------------------------------------------------------------------------------
# Harness


async def read_exactly(stream, count):
    """``count`` bytes from ``stream``, or None if it ends first."""
    buffer = bytearray()
    while len(buffer) < count:
        data = await stream.receive_some(count - len(buffer))
        if not data:
            return None
        buffer += data
    return bytes(buffer)


async def read_frame(stream):
    """One raw frame (header + ciphertext) as the initiator wrote it."""
    header = await read_exactly(stream, 4)
    return header + await read_exactly(stream, int.from_bytes(header, "big"))


async def outcome(function):
    """The result of ``function()``, or the QoraError it raised (real bugs still propagate)."""
    try:
        return await function()
    except QoraError as error:
        return error


def initiate(stream, identity=ALICE, **options):
    options = {"genesis_hash": GENESIS, "members": MEMBERS, **options}
    return lambda: open_channel(stream, identity, initiator=True, **options)


def respond(stream, identity=BOB, **options):
    options = {"genesis_hash": GENESIS, "members": MEMBERS, **options}
    return lambda: open_channel(stream, identity, initiator=False, **options)


async def run_concurrently(*functions):
    """Run the functions in one nursery; return each one's outcome, in order."""
    results = [None] * len(functions)

    async def run(index, function):
        results[index] = await outcome(function)

    async with trio.open_nursery() as nursery:
        for index, function in enumerate(functions):
            nursery.start_soon(run, index, function)
    return results


class CountingStream(trio.abc.Stream):
    """Passes everything through and counts the bytes the channel has consumed."""

    def __init__(self, inner):
        self.inner = inner
        self.bytes_received = 0

    async def send_all(self, data):
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        data = await self.inner.receive_some(max_bytes)
        self.bytes_received += len(data)
        return data

    async def aclose(self):
        await self.inner.aclose()


class ManInTheMiddle:
    """Sits between the two ends. During the handshake it reads each message whole and passes it
    through a hook that may rewrite it; afterwards a test reads the initiator's raw frames from
    ``from_initiator`` and writes whatever it likes to the responder through ``to_responder``."""

    def __init__(self, hello=None, reply=None, finish=None):
        self.initiator_stream, self.from_initiator = trio.testing.memory_stream_pair()
        self.to_responder, self.responder_stream = trio.testing.memory_stream_pair()
        self.hooks = (hello, reply, finish)

    async def relay_handshake(self):
        steps = [
            (self.from_initiator, self.to_responder, HELLO_BYTES),
            (self.to_responder, self.from_initiator, REPLY_BYTES),
            (self.from_initiator, self.to_responder, FINISH_BYTES),
        ]
        for (source, target, size), hook in zip(steps, self.hooks, strict=True):
            data = await read_exactly(source, size)
            if data is None:  # one end gave up: pass the close on
                await self.from_initiator.aclose()
                await self.to_responder.aclose()
                return
            await target.send_all(hook(data) if hook else data)


async def tapped_channels(initiator_limits=ChannelLimits(), responder_limits=ChannelLimits()):
    """A real handshake through a passive man in the middle; returns both channels and the tap."""
    middle = ManInTheMiddle()
    counting = CountingStream(middle.responder_stream)
    sender, receiver, _ = await run_concurrently(
        initiate(middle.initiator_stream, limits=initiator_limits),
        respond(counting, limits=responder_limits),
        middle.relay_handshake,
    )
    assert isinstance(sender, SecureChannel) and isinstance(receiver, SecureChannel)
    return sender, receiver, middle, counting


async def channel_pair(pair_factory=trio.testing.memory_stream_pair, limits=ChannelLimits()):
    left, right = pair_factory()
    first, second = await run_concurrently(initiate(left, limits=limits), respond(right, limits=limits))
    assert isinstance(first, SecureChannel) and isinstance(second, SecureChannel)
    return first, second


async def transfer(sender, receiver, message):
    """Send and receive concurrently (lockstep streams need both) and return what arrived."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, message)
        return await receiver.receive()


def known_key_channel(stream, send_key, receive_key, limits=ChannelLimits()):
    """A channel with chosen keys and no handshake, to pin the frame format down byte by byte."""
    session = channel_module._Session(BOB.public_key, send_key, receive_key, 0, 0)
    return SecureChannel(stream, session, limits)


PAIRS = [trio.testing.memory_stream_pair, trio.testing.lockstep_stream_pair]


# ---------------------------------------------------------------------------------------------
# Handshake


@pytest.mark.parametrize("pair_factory", PAIRS)
async def test_handshake_succeeds_and_each_side_learns_the_other(pair_factory):
    """Both ends finish the handshake and each one's peer is the other's identity."""
    left, right = pair_factory()
    first, second = await run_concurrently(
        initiate(left, expected_peer=BOB.public_key), respond(right)
    )
    assert first.peer == BOB.public_key
    assert second.peer == ALICE.public_key
    assert first.statistics().wire_bytes_sent == HELLO_BYTES + FINISH_BYTES
    assert second.statistics().wire_bytes_sent == REPLY_BYTES


async def test_handshake_bytes_follow_the_documented_transcript():
    """HELLO's layout and both signatures match the documented transcript and domains."""
    seen = {}

    def keep(name):
        def hook(data):
            seen[name] = data
            return data

        return hook

    middle = ManInTheMiddle(hello=keep("hello"), reply=keep("reply"), finish=keep("finish"))
    await run_concurrently(
        initiate(middle.initiator_stream), respond(middle.responder_stream), middle.relay_handshake
    )
    hello, reply, finish = seen["hello"], seen["reply"], seen["finish"]
    assert hello[:5] == b"QORA" + bytes([PROTOCOL_VERSION]) and hello[5:37] == GENESIS and hello[37:69] == ALICE.public_key
    assert reply[:32] == BOB.public_key
    t1 = hello + reply[:64]
    verify(BOB.public_key, RESPONDER_DOMAIN, hashlib.sha256(t1).digest(), reply[64:])
    verify(ALICE.public_key, INITIATOR_DOMAIN, hashlib.sha256(t1 + reply[64:]).digest(), finish)


async def test_ephemeral_keys_are_fresh_per_connection():
    """Two handshakes between the same members use different ephemeral keys."""
    seen: list[bytes] = []

    def record(data: bytes) -> bytes:
        seen.append(data[69:])
        return data

    for _ in range(2):
        middle = ManInTheMiddle(hello=record)
        await run_concurrently(
            initiate(middle.initiator_stream), respond(middle.responder_stream), middle.relay_handshake
        )
    assert seen[0] != seen[1]


async def test_unknown_initiator_is_rejected():
    """A responder refuses an initiator whose key is not a member, before revealing anything."""
    left, right = trio.testing.memory_stream_pair()
    members = MEMBERS | {MALLORY.public_key}
    first, second = await run_concurrently(initiate(left, MALLORY, members=members), respond(right))
    assert isinstance(second, UnknownPeer) and MALLORY.public_key.hex() in str(second)
    assert isinstance(first, BadHandshake) and "after 0 of the 128 bytes of REPLY" in str(first)


async def test_connecting_to_ourselves_is_rejected():
    """A responder refuses an initiator that presents the responder's own key."""
    left, right = trio.testing.memory_stream_pair()
    _, second = await run_concurrently(initiate(left, BOB), respond(right, BOB))
    assert isinstance(second, UnknownPeer) and "our own key" in str(second)


async def test_initiator_expecting_another_member_gets_peer_mismatch():
    """Reaching a member other than the expected one is PeerMismatch, not a silent success."""
    left, right = trio.testing.memory_stream_pair()
    first, second = await run_concurrently(
        initiate(left, expected_peer=CAROL.public_key), respond(right)
    )
    assert isinstance(first, PeerMismatch) and CAROL.public_key.hex() in str(first)
    assert isinstance(second, BadHandshake)


async def test_responder_expecting_another_member_gets_peer_mismatch():
    """A responder can insist on a particular initiator too."""
    left, right = trio.testing.memory_stream_pair()
    _, second = await run_concurrently(initiate(left), respond(right, expected_peer=CAROL.public_key))
    assert isinstance(second, PeerMismatch)


async def test_wrong_genesis_is_wrong_network():
    """A peer from another network is refused by the responder with WrongNetwork."""
    left, right = trio.testing.memory_stream_pair()
    other = hashlib.sha256(b"another network").digest()
    first, second = await run_concurrently(initiate(left, genesis_hash=other), respond(right))
    assert isinstance(second, WrongNetwork) and other.hex() in str(second)
    assert isinstance(first, BadHandshake)


@pytest.mark.parametrize(
    ("hello", "problem"),
    [
        (lambda data: b"XORA" + data[4:], "starts with b'XORA'"),
        (lambda data: data[:4] + bytes([PROTOCOL_VERSION - 1]) + data[5:], f"protocol version {PROTOCOL_VERSION - 1}"),
        (lambda data: data[:4] + bytes([PROTOCOL_VERSION + 1]) + data[5:], f"protocol version {PROTOCOL_VERSION + 1}"),
        (lambda data: data[:69] + bytes(32), "low order"),
        (lambda data: data[:69] + (1).to_bytes(32, "little"), "low order"),
    ],
)
async def test_malformed_hello_is_bad_handshake(hello, problem):
    """Wrong magic, wrong version and a low-order ephemeral key are each BadHandshake."""
    middle = ManInTheMiddle(hello=hello)
    _, second, _ = await run_concurrently(
        initiate(middle.initiator_stream), respond(middle.responder_stream), middle.relay_handshake
    )
    assert isinstance(second, BadHandshake) and problem in str(second)


def _swap_identity(key):
    return lambda reply: key + reply[32:]


@pytest.mark.parametrize(
    ("swap_to", "expected_peer", "error"),
    [
        (CAROL.public_key, BOB.public_key, PeerMismatch),  # expected Bob: caught by identity
        (CAROL.public_key, None, BadSignature),  # any member will do: caught by the signature
        (MALLORY.public_key, None, UnknownPeer),  # not a member at all
    ],
)
async def test_attacker_swapping_responder_identity_is_caught(swap_to, expected_peer, error):
    """A man in the middle who replaces the responder's identity key in REPLY is caught."""
    middle = ManInTheMiddle(reply=_swap_identity(swap_to))
    first, second, _ = await run_concurrently(
        initiate(middle.initiator_stream, expected_peer=expected_peer),
        respond(middle.responder_stream),
        middle.relay_handshake,
    )
    assert isinstance(first, error)
    assert isinstance(second, BadHandshake)  # the initiator hung up before FINISH


async def test_attacker_swapping_responder_ephemeral_key_is_bad_signature():
    """Replacing the responder's ephemeral key in REPLY breaks the responder's signature."""
    attacker_public, _ = nacl.bindings.crypto_box_keypair()
    middle = ManInTheMiddle(reply=lambda reply: reply[:32] + attacker_public + reply[64:])
    first, second, _ = await run_concurrently(
        initiate(middle.initiator_stream), respond(middle.responder_stream), middle.relay_handshake
    )
    assert isinstance(first, BadSignature) and "responder" in str(first)
    assert isinstance(second, BadHandshake)


async def test_attacker_swapping_initiator_ephemeral_key_is_bad_signature():
    """Replacing the initiator's ephemeral key in HELLO breaks the transcript the responder signs."""
    attacker_public, _ = nacl.bindings.crypto_box_keypair()
    middle = ManInTheMiddle(hello=lambda hello: hello[:69] + attacker_public)
    first, _, _ = await run_concurrently(
        initiate(middle.initiator_stream), respond(middle.responder_stream), middle.relay_handshake
    )
    assert isinstance(first, BadSignature)


async def test_tampered_finish_is_bad_signature():
    """A FINISH signature with one bit flipped is refused by the responder."""
    middle = ManInTheMiddle(finish=lambda finish: bytes([finish[0] ^ 1]) + finish[1:])
    _, second, _ = await run_concurrently(
        initiate(middle.initiator_stream), respond(middle.responder_stream), middle.relay_handshake
    )
    assert isinstance(second, BadSignature) and "initiator" in str(second)


@pytest.mark.parametrize("initiator", [True, False])
@pytest.mark.parametrize("sent_bytes", [0, 100])
async def test_handshake_times_out_when_peer_stalls(autojump_clock, initiator, sent_bytes):
    """A peer that goes quiet mid-handshake costs exactly the timeout, then the stream is closed."""
    ours, theirs = trio.testing.memory_stream_pair()
    if sent_bytes:
        await theirs.send_all(bytes(sent_bytes))
    start = trio.current_time()
    with pytest.raises(HandshakeTimeout, match="did not finish within 5000 ms"):
        await (initiate(ours) if initiator else respond(ours))()
    assert trio.current_time() - start == pytest.approx(HANDSHAKE_SECONDS)
    received = bytearray()
    while data := await theirs.receive_some():  # ends: our side closed the stream
        received += data
    assert len(received) == (HELLO_BYTES if initiator else 0)


async def test_handshake_timeout_is_a_handshake_error(autojump_clock):
    """HandshakeTimeout is counted against the peer like every other handshake failure."""
    ours, _theirs = trio.testing.memory_stream_pair()
    limits = ChannelLimits(handshake_timeout_ms=250)
    with pytest.raises(HandshakeError) as raised:
        await respond(ours, limits=limits)()
    assert isinstance(raised.value, HandshakeTimeout) and isinstance(raised.value, RemoteProtocolError)
    assert "250 ms" in str(raised.value)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"genesis_hash": bytes(31)}, "genesis_hash"),
        ({"members": set(MEMBERS)}, "frozenset"),
        ({"members": MEMBERS | {b"short"}}, "32-byte key"),
        ({"members": frozenset({BOB.public_key, CAROL.public_key})}, "not in members"),
        ({"expected_peer": MALLORY.public_key}, "not another member"),
        ({"expected_peer": ALICE.public_key}, "not another member"),
        ({"limits": {"frame_bytes_max": 1}}, "ChannelLimits"),
    ],
)
async def test_open_channel_rejects_bad_arguments(options, problem):
    """Misusing open_channel is a LocalProtocolError, raised before any byte is sent."""
    left, right = trio.testing.memory_stream_pair()
    with pytest.raises(LocalProtocolError, match=problem):
        await initiate(left, **options)()
    await left.aclose()
    assert await right.receive_some() == b""


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"frame_bytes_max": 0}, "frame_bytes_max must be a positive int"),
        ({"message_bytes_max": -1}, "message_bytes_max must be a positive int"),
        ({"handshake_timeout_ms": True}, "handshake_timeout_ms must be a positive int"),
        ({"frame_bytes_max": 1.5}, "frame_bytes_max must be a positive int"),
        ({"frame_bytes_max": 2048, "message_bytes_max": 1024}, "exceeds message_bytes_max 1024"),
        ({"frame_bytes_max": (16 << 20) + 1, "message_bytes_max": 32 << 20}, "exceeds 16777216"),
    ],
)
def test_channel_limits_are_validated(fields, problem):
    """Inconsistent limits are refused when the limits are built."""
    with pytest.raises(LocalProtocolError, match=problem):
        ChannelLimits(**fields)


# ---------------------------------------------------------------------------------------------
# Messages


@pytest.mark.parametrize("pair_factory", PAIRS)
@pytest.mark.parametrize("size", [0, 1, SEND_FRAME, SEND_FRAME + 1, FRAME, FRAME + 1, 4 << 20])
async def test_messages_round_trip_in_both_directions(pair_factory, size):
    """Messages of 0, 1, one-frame, frame-boundary and 4 MiB sizes arrive intact both ways."""
    first, second = await channel_pair(pair_factory)
    message = random.Random(size).randbytes(size)
    assert await transfer(first, second, message) == message
    assert await transfer(second, first, message[::-1]) == message[::-1]
    frames = max(1, -(-size // SEND_FRAME))
    for sender, receiver in [(first, second), (second, first)]:
        sent, received = sender.statistics(), receiver.statistics()
        assert sent.frames_sent == received.frames_received == frames
        assert sent.message_bytes_sent == received.message_bytes_received == size
        assert sent.wire_bytes_sent == received.wire_bytes_received


async def test_bytearray_and_memoryview_messages_are_sent():
    """Any contiguous byte buffer can be sent; the receiver always gets bytes."""
    first, second = await channel_pair()
    for message in [bytearray(b"abc"), memoryview(b"xyzw")[1:]]:
        received = await transfer(first, second, message)
        assert type(received) is bytes and received == bytes(message)


async def test_many_messages_arrive_in_order_both_ways():
    """Hundreds of multi-frame messages sent both ways at once arrive whole and in order."""
    first, second = await channel_pair(limits=SMALL)
    generator = random.Random(7)
    messages = [generator.randbytes(generator.randrange(0, 300)) for _ in range(300)]
    received: dict[object, list[bytes]] = {first: [], second: []}

    async def send_all(channel):
        for message in messages:
            await channel.send(message)

    async def receive_all(channel):
        for _ in messages:
            received[channel].append(await channel.receive())

    async with trio.open_nursery() as nursery:
        for channel in (first, second):
            nursery.start_soon(send_all, channel)
            nursery.start_soon(receive_all, channel)
    assert received[first] == messages and received[second] == messages
    assert second.statistics().messages_received == len(messages)


async def test_concurrent_senders_never_interleave_messages():
    """Messages sent by several tasks at once arrive whole: sends are serialised per message."""
    first, second = await channel_pair(limits=SMALL)

    async def send_many(fill):
        for _ in range(10):
            await first.send(bytes([fill]) * 1000)  # 16 frames each

    async with trio.open_nursery() as nursery:
        for fill in range(4):
            nursery.start_soon(send_many, fill)
    for _ in range(40):
        message = await second.receive()
        assert message == message[:1] * 1000


async def test_sending_over_our_own_message_limit_is_a_local_error():
    """Sending more than our own message_bytes_max is our bug, not the peer's."""
    first, _ = await channel_pair(limits=SMALL)
    with pytest.raises(LocalProtocolError, match="message of 4097 bytes exceeds message_bytes_max 4096"):
        await first.send(bytes(4097))
    with pytest.raises(LocalProtocolError, match="must be bytes"):
        await first.send("text")
    await first.send(b"still usable")


async def test_frame_format_is_as_documented():
    """Frames are length | flag | AEAD(chunk) with length | flag as AD and nonce
    0000 | little-endian counter (checked against libsodium's independent implementation)."""
    ours, theirs = trio.testing.memory_stream_pair()
    key = bytes(range(32))
    channel = known_key_channel(ours, key, bytes(32), SMALL)
    await channel.send(b"x" * 100)  # two frames: 64 + 36 bytes
    wire = b""
    for counter, (flag, chunk) in enumerate([(b"\x00", b"x" * 64), (b"\x01", b"x" * 36)]):
        prefix = (len(chunk) + 17).to_bytes(4, "big") + flag
        nonce = bytes(4) + counter.to_bytes(8, "little")
        wire += prefix + nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(chunk, prefix, nonce, key)
    assert await read_exactly(theirs, len(wire)) == wire


async def test_receiver_accepts_frames_up_to_frame_bytes_max():
    """A peer may send frames as large as frame_bytes_max, larger than this sender's own frames."""
    ours, theirs = trio.testing.memory_stream_pair()
    key = bytes(range(32))
    channel = known_key_channel(ours, bytes(32), key)
    sealer = channel_module._FrameSealer(key)
    chunk = random.Random(1).randbytes(FRAME)
    await theirs.send_all(sealer.seal(chunk, final=False) + sealer.seal(chunk, final=True))
    assert await channel.receive() == chunk + chunk
    assert channel.statistics().frames_received == 2


def test_frame_counter_never_wraps():
    """The sealer refuses a frame after counter 2**64 - 1, and the opener does not accept one."""
    sealer = channel_module._FrameSealer(bytes(32), counter=FRAME_COUNTER_MAX)
    opener = channel_module._FrameOpener(bytes(32), counter=FRAME_COUNTER_MAX)
    frame = sealer.seal(b"last", final=True)
    assert opener.open(frame[:4], frame[4:]) == (b"\x01", b"last")
    with pytest.raises(LocalProtocolError, match="counter exhausted"):
        sealer.seal(b"one more", final=True)
    with pytest.raises(ChannelError, match="2\\*\\*64 frames"):
        opener.open(frame[:4], frame[4:])


def test_hkdf_matches_rfc_5869_test_case_1():
    """HKDF-SHA256 reproduces the RFC 5869 test vector."""
    okm = channel_module._hkdf_sha256(
        ikm=bytes([0x0B] * 22), salt=bytes(range(13)), info=bytes(range(0xF0, 0xFA)), length=42
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


@pytest.mark.parametrize(
    ("plaintext", "error", "problem"),
    [
        (b"\x03hello", ChannelError, "flag is 3"),
        (b"\x00", ChannelError, "empty chunk"),
        (b"\x02hello", ChannelError, "keepalive frame carries 5 bytes"),
    ],
)
async def test_invalid_authenticated_plaintext_is_a_channel_error(plaintext, error, problem):
    """An authenticated frame with a bad flag or an empty non-final chunk is still refused."""
    ours, theirs = trio.testing.memory_stream_pair()
    key = bytes(range(32))
    channel = known_key_channel(ours, bytes(32), key)
    prefix = (len(plaintext) + 16).to_bytes(4, "big") + plaintext[:1]
    nonce = bytes(12)
    await theirs.send_all(
        prefix + nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext[1:], prefix, nonce, key)
    )
    await theirs.aclose()
    with pytest.raises(error, match=problem):
        await channel.receive()


# ---------------------------------------------------------------------------------------------
# Keepalives


async def test_keepalives_are_frames_but_never_messages():
    """A keepalive between messages is skipped by receive and reported as None by
    receive_or_keepalive; both ends count it, and the messages around it arrive intact."""
    sender, receiver = await channel_pair()
    await sender.send(b"before")
    await sender.send_keepalive()
    await sender.send_keepalive()
    await sender.send(b"after")
    await sender.send_keepalive()
    assert await receiver.receive() == b"before"
    assert await receiver.receive() == b"after"  # the two keepalives in between are skipped
    assert await receiver.receive_or_keepalive() is None
    sent, received = sender.statistics(), receiver.statistics()
    assert sent.keepalives_sent == received.keepalives_received == 3
    assert sent.messages_sent == received.messages_received == 2
    assert sent.frames_sent == received.frames_received == 5
    assert received.message_bytes_received == len(b"before") + len(b"after")


async def test_keepalive_frame_format_is_as_documented():
    """A keepalive is length 17 | flag 2 | the tag of an empty chunk, under the next frame counter."""
    ours, theirs = trio.testing.memory_stream_pair()
    key = bytes(range(32))
    channel = known_key_channel(ours, key, bytes(32))
    await channel.send(b"x")
    await channel.send_keepalive()
    wire = b""
    for counter, (flag, chunk) in enumerate([(b"\x01", b"x"), (b"\x02", b"")]):
        prefix = (len(chunk) + 17).to_bytes(4, "big") + flag
        nonce = bytes(4) + counter.to_bytes(8, "little")
        wire += prefix + nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(chunk, prefix, nonce, key)
    assert len(wire) == 4 + 17 + 1 + KEEPALIVE_FRAME_BYTES
    assert await read_exactly(theirs, len(wire)) == wire


@pytest.mark.parametrize("attack", ["forged", "replayed", "tampered"])
async def test_keepalives_are_authenticated(attack):
    """A keepalive nobody sealed, a replayed one and a modified one all fail authentication, like
    any frame: someone on the path can neither fake liveness nor slip a frame in."""
    sender, receiver, middle, _ = await tapped_channels()
    await sender.send_keepalive()
    frame = await read_frame(middle.from_initiator)
    if attack == "forged":
        wire = frame[:5] + bytes(16)  # right header and flag, a made-up tag
    elif attack == "replayed":
        await middle.to_responder.send_all(frame)
        assert await receiver.receive_or_keepalive() is None  # the real one, once
        wire = frame
    else:
        wire = frame[:-1] + bytes([frame[-1] ^ 1])
    await middle.to_responder.send_all(wire)
    with pytest.raises(DecryptionFailed, match="fails authentication"):
        await receiver.receive_or_keepalive()


async def test_a_keepalive_inside_a_message_is_a_channel_error():
    """Senders only send keepalives between messages; one between two frames of a message is refused."""
    ours, theirs = trio.testing.memory_stream_pair()
    key = bytes(range(32))
    channel = known_key_channel(ours, bytes(32), key)
    sealer = channel_module._FrameSealer(key)
    first = sealer.seal(b"part", final=False)
    keepalive = sealer.seal_flagged(channel_module.FLAG_KEEPALIVE, b"")
    await theirs.send_all(first + keepalive + sealer.seal(b"rest", final=True))
    with pytest.raises(ChannelError, match="keepalive frame inside a message"):
        await channel.receive()


async def test_a_cancelled_receive_or_keepalive_loses_nothing():
    """Waiting for a keepalive under a deadline (the transport's dead-link check) and retrying
    after the deadline passes loses no part of a message that was arriving."""
    sender, receiver, middle, _ = await tapped_channels(SMALL, SMALL)
    await sender.send(b"y" * 200)  # 4 frames
    wire = await read_exactly(middle.from_initiator, 4 * 4 + 200 + 4 * 17)
    await middle.to_responder.send_all(wire[:100])
    with trio.move_on_after(1) as waited:
        await receiver.receive_or_keepalive()
    assert waited.cancelled_caught
    await middle.to_responder.send_all(wire[100:])
    assert await receiver.receive_or_keepalive() == b"y" * 200


# ---------------------------------------------------------------------------------------------
# Attacks on frames and closes


@pytest.mark.parametrize(
    "position",
    [3, 4, 5, 20, -1],  # last header byte, the flag, chunk, tag
)
async def test_tampered_frame_is_decryption_failed(position):
    """Changing any byte of a frame, header included, makes it fail authentication."""
    sender, receiver, middle, _ = await tapped_channels()
    await sender.send(b"0123456789" * 3)
    frame = bytearray(await read_frame(middle.from_initiator))
    if position == 3:
        frame[3] -= 1  # a shorter length: the receiver reads one byte less, under the wrong AAD
        frame = frame[:-1]
    else:
        frame[position] ^= 0x40
    await middle.to_responder.send_all(bytes(frame))
    with pytest.raises(DecryptionFailed, match=r"frame 0 .* fails authentication"):
        await receiver.receive()


async def test_replayed_frame_is_decryption_failed():
    """A frame delivered twice is accepted once; the replay fails authentication."""
    sender, receiver, middle, _ = await tapped_channels()
    await sender.send(b"pay alice 1")
    frame = await read_frame(middle.from_initiator)
    await middle.to_responder.send_all(frame + frame)
    assert await receiver.receive() == b"pay alice 1"
    with pytest.raises(DecryptionFailed, match="frame 1 "):
        await receiver.receive()


async def test_reordered_frames_are_decryption_failed():
    """Swapping two frames makes the first one delivered fail authentication."""
    sender, receiver, middle, _ = await tapped_channels()
    await sender.send(b"first")
    await sender.send(b"second")
    first = await read_frame(middle.from_initiator)
    second = await read_frame(middle.from_initiator)
    await middle.to_responder.send_all(second + first)
    with pytest.raises(DecryptionFailed, match="frame 0 "):
        await receiver.receive()


async def test_dropped_frame_is_decryption_failed():
    """Dropping a frame makes the next one fail authentication."""
    sender, receiver, middle, _ = await tapped_channels()
    await sender.send(b"first")
    await sender.send(b"second")
    await read_frame(middle.from_initiator)
    await middle.to_responder.send_all(await read_frame(middle.from_initiator))
    with pytest.raises(DecryptionFailed):
        await receiver.receive()


async def test_dropped_middle_frame_of_a_message_is_decryption_failed():
    """Dropping a frame inside a multi-frame message cannot shorten the message silently."""
    sender, receiver, middle, _ = await tapped_channels(SMALL, SMALL)
    await sender.send(bytes(200))  # 4 frames
    frames = [await read_frame(middle.from_initiator) for _ in range(4)]
    await middle.to_responder.send_all(frames[0] + frames[2] + frames[3])
    with pytest.raises(DecryptionFailed, match="frame 1 "):
        await receiver.receive()


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (2, "inside a frame header after 2 of 4 bytes"),
        (4, "inside a frame after 0 of its"),
        (-5, "inside a frame after"),
    ],
)
async def test_truncated_frame_then_eof_is_frame_truncated(cut, problem):
    """EOF in the middle of a frame is FrameTruncated, wherever it falls."""
    sender, receiver, middle, _ = await tapped_channels()
    await sender.send(b"a message that will be cut")
    frame = await read_frame(middle.from_initiator)
    await middle.to_responder.send_all(frame[:cut])
    await middle.to_responder.aclose()
    with pytest.raises(FrameTruncated, match=problem):
        await receiver.receive()


async def test_eof_between_frames_of_a_message_is_frame_truncated():
    """EOF after a non-final frame is FrameTruncated: a message is all or nothing."""
    sender, receiver, middle, _ = await tapped_channels(SMALL, SMALL)
    await sender.send(bytes(100))
    await middle.to_responder.send_all(await read_frame(middle.from_initiator))
    await middle.to_responder.aclose()
    with pytest.raises(FrameTruncated, match="inside a message after 1 frame"):
        await receiver.receive()


async def test_clean_close_is_channel_closed():
    """Closing at a message boundary is ChannelClosed, and stays so on every later receive."""
    first, second = await channel_pair()
    await first.send(b"last words")
    await first.aclose()
    assert await second.receive() == b"last words"
    for _ in range(2):
        with pytest.raises(ChannelClosed):
            await second.receive()
    assert not isinstance(ChannelClosed("x"), RemoteProtocolError)


async def test_oversized_length_prefix_is_refused_before_reading_the_body():
    """A length over frame_bytes_max + 17 is FrameTooLarge after reading only the 4-byte header."""
    _, receiver, middle, counting = await tapped_channels()
    consumed = counting.bytes_received
    assert consumed == HELLO_BYTES + FINISH_BYTES
    body = b"b" * 1000
    await middle.to_responder.send_all((9_000_000).to_bytes(4, "big") + body)
    await middle.to_responder.aclose()  # were the body read, this would end in EOF, not a hang
    with pytest.raises(FrameTooLarge, match="frame of 9000000 bytes exceeds frame_bytes_max 1048576"):
        await receiver.receive()
    assert counting.bytes_received == consumed + 4
    assert await counting.inner.receive_some() == body  # still unread


@pytest.mark.parametrize(("length", "problem"), [(FRAME + 18, "exceeds"), (16, "below the 17-byte")])
async def test_length_prefix_bounds(length, problem):
    """The largest allowed frame is frame_bytes_max + 17 and the smallest 17; one past either fails."""
    _, receiver, middle, _ = await tapped_channels()
    await middle.to_responder.send_all(length.to_bytes(4, "big"))
    await middle.to_responder.aclose()
    with pytest.raises(FrameTooLarge, match=problem):
        await receiver.receive()


async def test_message_over_receiver_limit_is_message_too_large():
    """A peer cannot make us buffer more than message_bytes_max: the frame that would cross it fails."""
    sending = ChannelLimits(frame_bytes_max=1024, message_bytes_max=1 << 20)
    receiving = ChannelLimits(frame_bytes_max=1024, message_bytes_max=4096)
    sender, receiver, middle, _ = await tapped_channels(sending, receiving)
    await sender.send(bytes(5000))  # frames of 1024 x 4 then 904
    for _ in range(5):
        await middle.to_responder.send_all(await read_frame(middle.from_initiator))
    problem = "message of at least 5000 bytes exceeds message_bytes_max 4096"
    with pytest.raises(MessageTooLarge, match=problem):
        await receiver.receive()
    assert receiver.statistics().frames_received == 5


async def test_failed_receive_breaks_the_channel():
    """After a receive error, later receives refuse with BrokenResourceError instead of guessing."""
    _, receiver, middle, _ = await tapped_channels()
    await middle.to_responder.send_all(bytes(4))
    await middle.to_responder.aclose()
    with pytest.raises(FrameTooLarge):
        await receiver.receive()
    with pytest.raises(trio.BrokenResourceError, match="earlier receive failed"):
        await receiver.receive()


async def test_cancelled_receive_loses_nothing(autojump_clock):
    """A receive cancelled half-way through a frame resumes where it stopped."""
    sender, receiver, middle, _ = await tapped_channels(SMALL, SMALL)
    await sender.send(b"m" * 100)  # two frames
    frames = await read_frame(middle.from_initiator) + await read_frame(middle.from_initiator)
    for piece in (frames[:2], frames[2:70], frames[70:90]):
        await middle.to_responder.send_all(piece)
        with trio.move_on_after(1) as scope:
            await receiver.receive()
        assert scope.cancelled_caught
    await middle.to_responder.send_all(frames[90:])
    assert await receiver.receive() == b"m" * 100


async def test_send_cancelled_mid_message_breaks_sending(autojump_clock):
    """A send cancelled part-way leaves a partial message on the wire, so later sends refuse."""
    first, _ = await channel_pair(trio.testing.lockstep_stream_pair)
    with trio.move_on_after(1) as scope:
        await first.send(bytes(3 << 20))  # nobody receives: blocks in the first frame
    assert scope.cancelled_caught
    with pytest.raises(trio.BrokenResourceError, match="earlier send failed"):
        await first.send(b"next")


async def test_two_receivers_at_once_is_busy():
    """Only one task may receive at a time."""
    first, second = await channel_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await second.receive()
        await first.send(b"release")


async def test_closed_channel_refuses_use():
    """After aclose, send and receive raise ClosedResourceError; aclose is idempotent."""
    first, _ = await channel_pair()
    async with first:
        pass
    await first.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await first.send(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await first.receive()


# ---------------------------------------------------------------------------------------------
# Fuzzing: a hostile peer can only ever cause the documented errors, and never a hang.


def run_with_mock_clock(function):
    """Run ``function`` under trio with a clock that jumps whenever every task is blocked."""
    return trio.run(function, clock=trio.testing.MockClock(autojump_threshold=0))


def _valid_hello():
    ephemeral, _ = nacl.bindings.crypto_box_keypair()
    return b"QORA" + bytes([PROTOCOL_VERSION]) + GENESIS + ALICE.public_key + ephemeral


def _expected_handshake_error(hello, mutated, trailing, close):
    """What the responder must raise for a mutated HELLO followed by ``trailing`` bytes."""
    if len(mutated) < HELLO_BYTES:
        return (BadHandshake,) if close else (HandshakeTimeout,)
    if mutated[:5] != hello[:5]:
        return (BadHandshake,)
    if mutated[5:37] != hello[5:37]:
        return (WrongNetwork,)
    if mutated[37:69] != hello[37:69]:
        return (UnknownPeer,)
    low_order = (BadHandshake,) if mutated[69:] != hello[69:] else ()
    if trailing >= FINISH_BYTES:
        return (BadSignature, *low_order)
    return ((BadHandshake,) if close else (HandshakeTimeout,)) + low_order


@settings(max_examples=150)
@given(
    data=st.binary(max_size=300),
    close=st.booleans(),
    role=st.sampled_from(["initiator", "responder"]),
)
def test_random_bytes_during_handshake_raise_only_handshake_errors(data, close, role):
    """Whatever a peer sends during the handshake, the result is a HandshakeError within the timeout."""

    async def main():
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(data)
        if close:
            await theirs.aclose()
        start = trio.current_time()
        with trio.fail_after(10 * HANDSHAKE_SECONDS):  # a hang would trip this, not the handshake
            with pytest.raises(HandshakeError):
                await (initiate(ours) if role == "initiator" else respond(ours))()
        assert trio.current_time() - start <= HANDSHAKE_SECONDS

    run_with_mock_clock(main)


@settings(max_examples=150)
@given(
    flips=st.lists(st.tuples(st.integers(0, HELLO_BYTES - 1), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, HELLO_BYTES - 1)),
    trailing=st.binary(max_size=80),
    close=st.booleans(),
)
def test_mutated_hello_raises_the_matching_handshake_error(flips, cut, trailing, close):
    """A damaged HELLO fails with the error its first damaged field calls for, and nothing else."""
    hello = _valid_hello()
    mutated = bytearray(hello)
    for position, mask in flips:
        mutated[position] ^= mask
    damaged = bytes(mutated if cut is None else mutated[:cut])
    sent_trailing = trailing if len(damaged) == HELLO_BYTES else b""
    expected = _expected_handshake_error(hello, damaged, len(sent_trailing), close)

    async def main():
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(damaged + sent_trailing)
        if close:
            await theirs.aclose()
        with trio.fail_after(10 * HANDSHAKE_SECONDS):
            with pytest.raises(HandshakeError) as raised:
                await respond(ours)()
        assert isinstance(raised.value, expected), (raised.value, expected)

    run_with_mock_clock(main)


LENGTH_PREFIXED = st.builds(
    lambda length, body: length.to_bytes(4, "big") + body,
    st.integers(0, 2**32 - 1) | st.integers(0, 200),
    st.binary(max_size=300),
)


@settings(max_examples=150)
@given(data=st.binary(max_size=300) | LENGTH_PREFIXED)
def test_random_bytes_after_handshake_raise_only_channel_errors(data):
    """Random bytes after a valid handshake end in a ChannelError or ChannelClosed, never a message."""

    async def main():
        _, receiver, middle, _ = await tapped_channels(SMALL, SMALL)
        await middle.to_responder.send_all(data)
        await middle.to_responder.aclose()
        with trio.fail_after(10):
            with pytest.raises((ChannelError, ChannelClosed)):
                await receiver.receive()

    run_with_mock_clock(main)


MESSAGES = [b"", b"short", bytes(range(200)), b"z" * 64]


@settings(max_examples=150)
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "delete", "duplicate"]),
            st.integers(0, 10_000),
            st.integers(1, 255),
        ),
        max_size=3,
    )
)
def test_mutated_frames_deliver_a_prefix_then_a_channel_error(edits):
    """An edited frame stream yields a prefix of the real messages, then ChannelError/ChannelClosed."""

    async def main():
        sender, receiver, middle, _ = await tapped_channels(SMALL, SMALL)
        for message in MESSAGES:
            await sender.send(message)
        frame_bytes = sender.statistics().wire_bytes_sent - HELLO_BYTES - FINISH_BYTES
        wire = bytearray(await read_exactly(middle.from_initiator, frame_bytes))
        for operation, position, value in edits:
            index = position % (len(wire) + 1)
            if operation == "flip" and index < len(wire):
                wire[index] ^= value
            elif operation == "cut":
                del wire[index:]
            elif operation == "insert":
                wire[index:index] = bytes([value]) * (value % 7 + 1)
            elif operation == "delete":
                del wire[index : index + value % 40 + 1]
            elif operation == "duplicate":
                wire[index:index] = wire[index : index + value]
        await middle.to_responder.send_all(bytes(wire))
        await middle.to_responder.aclose()
        delivered = []
        with trio.fail_after(10):
            with pytest.raises((ChannelError, ChannelClosed)):
                for _ in range(len(MESSAGES) + 1):
                    delivered.append(await receiver.receive())
        assert delivered == MESSAGES[: len(delivered)]

    run_with_mock_clock(main)
