"""A mutually authenticated, encrypted message channel between two members, over any Trio stream.

Theory of operation
-------------------
A network is named by its 32-byte genesis hash and its members by their Ed25519 public keys. Two
members open a channel with a three-message handshake (signed ephemeral Diffie-Hellman, as in SIGMA
and TLS 1.3), then exchange length-prefixed AEAD frames.

Handshake. Every message has a fixed size and is read with exact, bounded reads::

    HELLO  (101) initiator -> responder  "QORA" | version | genesis hash | identity | ephemeral
    REPLY  (128) responder -> initiator  identity | ephemeral | signature over sha256(t1)
    FINISH  (64) initiator -> responder  signature over sha256(t1 | responder signature)

``t1 = HELLO | responder identity | responder ephemeral``, so each signature binds the genesis hash,
both identities and both fresh ephemeral keys: a man in the middle who swaps any of them breaks a
signature, a HELLO or FINISH replayed from another connection meets a fresh ephemeral key it cannot
sign for, and a peer of another network fails the genesis check before anything is signed. Each
side checks the other's identity against ``members`` (and ``expected_peer``) before trusting
anything else it sent. Identities travel in clear: the channel hides message contents, not who
talks to whom.

Keys. The X25519 product of the two ephemeral keys (an all-zero product means a low-order key and
is rejected) is fed to HKDF-SHA256 with ``salt = sha256(t1 | both signatures)`` to derive one key
per direction. Ephemeral secrets live only for the handshake, so recorded traffic stays secret
even if identity keys leak later (forward secrecy).

Frames. ``length (4, big-endian) | flag (1) | ChaCha20-Poly1305(chunk)`` (RFC 8439 AEAD, from the
``cryptography`` package, about three times faster here than PyNaCl's) with ``length | flag`` as
associated data (the flag is authenticated, not secret) and the nonce ``0000 | counter (8,
little-endian)``. Each direction's counter starts
at 0 and the receiver only ever tries the next one, so a replayed, reordered, dropped, truncated
or modified frame fails authentication (`DecryptionFailed`). The receiver checks the length
against ``frame_bytes_max`` before reading the body (no read reaches past the next 4-byte header),
so a peer can make it hold at most one frame plus the message being reassembled (at most
``message_bytes_max``). A message is a run of non-final frames (flag 0, never empty) ended by one
final frame (flag 1); the empty message is one empty final frame. Senders cut messages into 120 KiB
chunks (see ``SEND_FRAME_BYTES_MAX`` for why), receivers accept up to ``frame_bytes_max``.

Keepalives. A keepalive is one empty frame with flag 2, sent only between messages
(`SecureChannel.send_keepalive`). It is sealed and counted like any other frame, so it is
authenticated, ordered and cannot be forged, replayed or injected by anyone on the path; it is
never a message: `SecureChannel.receive` skips it, and `SecureChannel.receive_or_keepalive` reports
it as None to a caller that tracks liveness or charges every frame to the peer. When to send one
and when a silent link counts as dead is the caller's business (`qora_p2p.node.transport`).

Closing. EOF at a message boundary is a clean close (`ChannelClosed`); EOF anywhere else is
`FrameTruncated`. There is no authenticated close message, so an attacker who cuts the connection
can drop whole trailing messages but never deliver part of one: a message is all or nothing.

Errors. What a peer sends wrong is a `RemoteProtocolError` (a `HandshakeError` or a
`ChannelError`): count it against the peer and drop the connection. Misusing the API is a
`LocalProtocolError`. A failed handshake closes the stream. After a receive or send fails (or a
send is cancelled mid-message) that direction is broken and further calls raise
`trio.BrokenResourceError`; a cancelled receive loses nothing and can simply be retried.

Size: the handshake, the key schedule and the framing share one transcript and one set of limits;
split, each would have to expose its secrets and counters to the others.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import NoReturn

import nacl.bindings
import nacl.exceptions
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from qora_p2p.errors import (
    BadHandshake,
    BadSignature,
    ChannelClosed,
    ChannelError,
    DecryptionFailed,
    FrameTooLarge,
    FrameTruncated,
    HandshakeTimeout,
    LocalProtocolError,
    MessageTooLarge,
    PeerMismatch,
    SignatureError,
    UnknownPeer,
    WrongNetwork,
)
from qora_p2p.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, public_key_hex, verify

__all__ = [
    "PROTOCOL_MAGIC",
    "PROTOCOL_VERSION",
    "ChannelLimits",
    "ChannelStatistics",
    "SecureChannel",
    "open_channel",
]

PROTOCOL_MAGIC = b"QORA"
PROTOCOL_VERSION = 2  # bump on any change to the handshake or the frame format (2: keepalive frames)
GENESIS_HASH_BYTES = 32  # SHA-256 of the network's genesis document
EPHEMERAL_KEY_BYTES = 32  # X25519 public key
HELLO_BYTES = len(PROTOCOL_MAGIC) + 1 + GENESIS_HASH_BYTES + PUBLIC_KEY_BYTES + EPHEMERAL_KEY_BYTES
REPLY_BYTES = PUBLIC_KEY_BYTES + EPHEMERAL_KEY_BYTES + SIGNATURE_BYTES
FINISH_BYTES = SIGNATURE_BYTES
RESPONDER_DOMAIN = b"qora-p2p/handshake/v1/responder"
INITIATOR_DOMAIN = b"qora-p2p/handshake/v1/initiator"
INITIATOR_TO_RESPONDER_INFO = b"qora-p2p/channel/v1/initiator->responder"
RESPONDER_TO_INITIATOR_INFO = b"qora-p2p/channel/v1/responder->initiator"
SESSION_KEY_BYTES = 32  # ChaCha20-Poly1305 key
FRAME_HEADER_BYTES = 4  # big-endian ciphertext length
TAG_BYTES = 16  # Poly1305 tag
FLAG_BYTES = 1  # 0 = more frames follow, 1 = final frame of the message, 2 = keepalive
FRAME_OVERHEAD_BYTES = FLAG_BYTES + TAG_BYTES  # ciphertext length minus chunk length
FRAME_BYTES_LIMIT = 16 << 20  # cap on frame_bytes_max: a frame is held whole until authenticated
# The sender cuts messages into chunks of at most this, even when frame_bytes_max allows more.
# The AEAD allocates a fresh output buffer on every call; glibc serves allocations over 128 KiB with
# mmap and hands them back on free, so every large frame pays a page fault per 4 KiB of every buffer.
# 120 KiB frames keep every buffer (ciphertext, received piece, header + body) below the threshold:
# measured end to end, 1.1-1.4 GB/s against 0.65-0.8 GB/s with 1 MiB frames.
SEND_FRAME_BYTES_MAX = 120 << 10
FRAME_COUNTER_MAX = 2**64 - 1  # the nonce holds 8 counter bytes; a counter is never reused
NONCE_PREFIX = bytes(4)  # the 12-byte IETF nonce is this prefix + the 8-byte counter
FLAG_MORE = b"\x00"
FLAG_FINAL = b"\x01"
FLAG_KEEPALIVE = b"\x02"
KEEPALIVE_FRAME_BYTES = FRAME_HEADER_BYTES + FRAME_OVERHEAD_BYTES  # on the wire: an empty chunk

assert HELLO_BYTES == 101 and REPLY_BYTES == 128 and FINISH_BYTES == 64
assert FRAME_BYTES_LIMIT + FRAME_OVERHEAD_BYTES < 1 << (8 * FRAME_HEADER_BYTES)
assert SEND_FRAME_BYTES_MAX + 2 * FRAME_HEADER_BYTES + FRAME_OVERHEAD_BYTES + 64 < 128 << 10
assert TAG_BYTES == nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
assert SESSION_KEY_BYTES == nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES
assert len(NONCE_PREFIX) + 8 == nacl.bindings.crypto_aead_chacha20poly1305_ietf_NPUBBYTES


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """Size and time limits of a channel; both ends of a network should use the same values."""

    frame_bytes_max: int = 1 << 20  # largest plaintext chunk accepted per frame: bounds the buffering
    message_bytes_max: int = 8 << 20  # a 2M-parameter int32 update; what one peer can make us hold
    handshake_timeout_ms: int = 5_000  # a silent or slow peer cannot hold a connection slot longer

    def __post_init__(self) -> None:
        for name in ("frame_bytes_max", "message_bytes_max", "handshake_timeout_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LocalProtocolError(f"ChannelLimits.{name} must be a positive int, got {value!r}")
        if self.frame_bytes_max > FRAME_BYTES_LIMIT:
            raise LocalProtocolError(
                f"ChannelLimits.frame_bytes_max {self.frame_bytes_max} exceeds {FRAME_BYTES_LIMIT}"
            )
        if self.frame_bytes_max > self.message_bytes_max:
            raise LocalProtocolError(
                f"ChannelLimits.frame_bytes_max {self.frame_bytes_max} exceeds "
                f"message_bytes_max {self.message_bytes_max}"
            )


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """Counters of one channel. Wire bytes are every byte on the stream, handshake included."""

    messages_sent: int
    messages_received: int
    frames_sent: int
    frames_received: int
    keepalives_sent: int
    keepalives_received: int
    message_bytes_sent: int
    message_bytes_received: int
    wire_bytes_sent: int
    wire_bytes_received: int


# ---------------------------------------------------------------------------------------------
# Handshake: pure helpers, then the two drivers.


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) with SHA-256: extract, then expand to ``length`` bytes."""
    assert 0 < length <= 255 * hashlib.sha256().digest_size
    prk = hmac.digest(salt, ikm, "sha256")
    output = b""
    block = b""
    counter = 1
    while len(output) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        output += block
        counter += 1
    return output[:length]


def _check_peer(
    peer: bytes, own: bytes, members: frozenset[bytes], expected_peer: bytes | None, role: str
) -> None:
    """The peer's claimed identity must be another member (the one we expect, if any)."""
    if peer == own:
        raise UnknownPeer(f"{role} presents our own key {public_key_hex(peer)}: a reflected handshake")
    if peer not in members:
        raise UnknownPeer(f"{role} key {public_key_hex(peer)} is not a member of this network")
    if expected_peer is not None and peer != expected_peer:
        raise PeerMismatch(
            f"expected {role} {public_key_hex(expected_peer)}, got member {public_key_hex(peer)}"
        )


def _verify_handshake(peer: bytes, domain: bytes, digest: bytes, signature: bytes, role: str) -> None:
    try:
        verify(peer, domain, digest, signature)
    except SignatureError as error:
        raise BadSignature(f"{role} handshake signature is invalid: {error}") from None


def _shared_secret(ephemeral_secret: bytes, peer_ephemeral: bytes) -> bytes:
    try:
        shared = nacl.bindings.crypto_scalarmult(ephemeral_secret, peer_ephemeral)
    except nacl.exceptions.CryptoError:  # libsodium refuses an all-zero product
        shared = bytes(len(ephemeral_secret))
    if not any(shared):
        raise BadHandshake(
            f"peer ephemeral key {peer_ephemeral.hex()} has low order (all-zero shared secret)"
        )
    return shared


@dataclass(frozen=True, slots=True)
class _Session:
    peer: bytes
    send_key: bytes
    receive_key: bytes
    wire_bytes_sent: int
    wire_bytes_received: int


def _session(
    *, initiator: bool, peer: bytes, shared: bytes, transcript: bytes, signatures: bytes
) -> _Session:
    salt = _sha256(transcript + signatures)
    forward = _hkdf_sha256(shared, salt, INITIATOR_TO_RESPONDER_INFO, SESSION_KEY_BYTES)
    backward = _hkdf_sha256(shared, salt, RESPONDER_TO_INITIATOR_INFO, SESSION_KEY_BYTES)
    assert forward != backward
    initiator_bytes = HELLO_BYTES + FINISH_BYTES  # what the initiator wrote during the handshake
    responder_bytes = REPLY_BYTES
    if initiator:
        return _Session(peer, forward, backward, initiator_bytes, responder_bytes)
    return _Session(peer, backward, forward, responder_bytes, initiator_bytes)


async def _receive_exactly(stream: trio.abc.ReceiveStream, count: int, what: str) -> bytes:
    """Exactly ``count`` handshake bytes; at most ``count`` reads, each asking only for what is missing."""
    buffer = bytearray()
    while len(buffer) < count:
        wanted = count - len(buffer)
        data = await stream.receive_some(wanted)
        assert len(data) <= wanted  # trio's Stream contract
        if not data:
            raise BadHandshake(
                f"peer closed the connection after {len(buffer)} of the {count} bytes of {what}"
            )
        buffer += data
    return bytes(buffer)


async def _initiate(
    stream: trio.abc.Stream,
    identity: Identity,
    genesis_hash: bytes,
    members: frozenset[bytes],
    expected_peer: bytes | None,
) -> _Session:
    ephemeral_public, ephemeral_secret = nacl.bindings.crypto_box_keypair()
    hello = (
        PROTOCOL_MAGIC
        + bytes([PROTOCOL_VERSION])
        + genesis_hash
        + identity.public_key
        + ephemeral_public
    )
    assert len(hello) == HELLO_BYTES
    await stream.send_all(hello)
    reply = await _receive_exactly(stream, REPLY_BYTES, "REPLY")
    peer = reply[:PUBLIC_KEY_BYTES]
    peer_ephemeral = reply[PUBLIC_KEY_BYTES : PUBLIC_KEY_BYTES + EPHEMERAL_KEY_BYTES]
    peer_signature = reply[PUBLIC_KEY_BYTES + EPHEMERAL_KEY_BYTES :]
    _check_peer(peer, identity.public_key, members, expected_peer, "responder")
    transcript = hello + peer + peer_ephemeral
    _verify_handshake(peer, RESPONDER_DOMAIN, _sha256(transcript), peer_signature, "responder")
    shared = _shared_secret(ephemeral_secret, peer_ephemeral)
    signature = identity.sign(INITIATOR_DOMAIN, _sha256(transcript + peer_signature))
    await stream.send_all(signature)
    return _session(
        initiator=True,
        peer=peer,
        shared=shared,
        transcript=transcript,
        signatures=peer_signature + signature,
    )


def _check_hello(hello: bytes, genesis_hash: bytes) -> None:
    magic = hello[: len(PROTOCOL_MAGIC)]
    if magic != PROTOCOL_MAGIC:
        raise BadHandshake(f"HELLO starts with {magic!r}, expected {PROTOCOL_MAGIC!r}")
    version = hello[len(PROTOCOL_MAGIC)]
    if version != PROTOCOL_VERSION:
        raise BadHandshake(f"HELLO has protocol version {version}, expected {PROTOCOL_VERSION}")
    start = len(PROTOCOL_MAGIC) + 1
    theirs = hello[start : start + GENESIS_HASH_BYTES]
    if theirs != genesis_hash:
        raise WrongNetwork(f"peer is in network {theirs.hex()}, we are in {genesis_hash.hex()}")


async def _respond(
    stream: trio.abc.Stream,
    identity: Identity,
    genesis_hash: bytes,
    members: frozenset[bytes],
    expected_peer: bytes | None,
) -> _Session:
    hello = await _receive_exactly(stream, HELLO_BYTES, "HELLO")
    _check_hello(hello, genesis_hash)
    start = len(PROTOCOL_MAGIC) + 1 + GENESIS_HASH_BYTES
    peer = hello[start : start + PUBLIC_KEY_BYTES]
    peer_ephemeral = hello[start + PUBLIC_KEY_BYTES :]
    _check_peer(peer, identity.public_key, members, expected_peer, "initiator")
    ephemeral_public, ephemeral_secret = nacl.bindings.crypto_box_keypair()
    shared = _shared_secret(ephemeral_secret, peer_ephemeral)
    transcript = hello + identity.public_key + ephemeral_public
    signature = identity.sign(RESPONDER_DOMAIN, _sha256(transcript))
    await stream.send_all(identity.public_key + ephemeral_public + signature)
    finish = await _receive_exactly(stream, FINISH_BYTES, "FINISH")
    _verify_handshake(peer, INITIATOR_DOMAIN, _sha256(transcript + signature), finish, "initiator")
    return _session(
        initiator=False,
        peer=peer,
        shared=shared,
        transcript=transcript,
        signatures=signature + finish,
    )


def _check_open_arguments(
    identity: Identity,
    genesis_hash: bytes,
    members: frozenset[bytes],
    expected_peer: bytes | None,
    limits: ChannelLimits,
    initiator: bool,
) -> None:
    if not isinstance(identity, Identity):
        raise LocalProtocolError(f"identity must be an Identity, got {type(identity).__name__}")
    if not isinstance(genesis_hash, bytes) or len(genesis_hash) != GENESIS_HASH_BYTES:
        raise LocalProtocolError(f"genesis_hash must be {GENESIS_HASH_BYTES} bytes, got {genesis_hash!r}")
    if not isinstance(members, frozenset):
        raise LocalProtocolError(f"members must be a frozenset, got {type(members).__name__}")
    for member in members:
        if not isinstance(member, bytes) or len(member) != PUBLIC_KEY_BYTES:
            raise LocalProtocolError(f"every member must be a {PUBLIC_KEY_BYTES}-byte key, got {member!r}")
    if identity.public_key not in members:
        raise LocalProtocolError(f"our own key {public_key_hex(identity.public_key)} is not in members")
    if expected_peer is not None and (expected_peer not in members or expected_peer == identity.public_key):
        raise LocalProtocolError(f"expected_peer {expected_peer!r} is not another member")
    if not isinstance(limits, ChannelLimits):
        raise LocalProtocolError(f"limits must be ChannelLimits, got {type(limits).__name__}")
    if not isinstance(initiator, bool):
        raise LocalProtocolError(f"initiator must be a bool, got {type(initiator).__name__}")


async def open_channel(
    stream: trio.abc.Stream,
    identity: Identity,
    *,
    genesis_hash: bytes,
    members: frozenset[bytes],
    initiator: bool,
    expected_peer: bytes | None = None,
    limits: ChannelLimits = ChannelLimits(),
) -> SecureChannel:
    """Run the handshake on ``stream`` and return the established channel.

    Args:
        stream: a fresh byte stream to the peer (a TCP connection, say); the channel owns it after.
        identity: our long-term identity; its public key must be in ``members``.
        genesis_hash: the 32-byte name of the network; the peer must present the same.
        members: public keys of every member, ours included.
        initiator: True on the connecting side (sends HELLO), False on the accepting side.
        expected_peer: the member we mean to talk to; any other member is rejected.
        limits: frame, message and handshake limits.

    Returns:
        A `SecureChannel` whose ``peer`` is the authenticated peer key.

    Raises:
        HandshakeError: the peer misbehaved or is not who it should be (a subclass says how),
            including `HandshakeTimeout` after ``limits.handshake_timeout_ms`` and `BadHandshake`
            when the peer closes or breaks the connection. The stream is closed.
        LocalProtocolError: invalid arguments.
    """
    _check_open_arguments(identity, genesis_hash, members, expected_peer, limits, initiator)
    run = _initiate if initiator else _respond
    try:
        with trio.fail_after(limits.handshake_timeout_ms / 1000):
            session = await run(stream, identity, genesis_hash, members, expected_peer)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        role = "initiator" if initiator else "responder"
        raise HandshakeTimeout(
            f"handshake as {role} did not finish within {limits.handshake_timeout_ms} ms"
        ) from None
    except trio.BrokenResourceError as error:
        await trio.aclose_forcefully(stream)  # the peer hung up or reset: same as EOF here
        raise BadHandshake(f"connection broke during the handshake: {error}") from error
    except BaseException:
        await trio.aclose_forcefully(stream)  # a half-done handshake leaves the stream unusable
        raise
    return SecureChannel(stream, session, limits)


# ---------------------------------------------------------------------------------------------
# Frames: pure sealing and opening, then the channel that drives them.


def _nonce(counter: int) -> bytes:
    return NONCE_PREFIX + counter.to_bytes(8, "little")


class _FrameSealer:
    """Turns chunks into frames for one direction; owns that direction's frame counter."""

    __slots__ = ("_cipher", "_counter")

    def __init__(self, key: bytes, counter: int = 0) -> None:
        assert len(key) == SESSION_KEY_BYTES and 0 <= counter
        self._cipher = ChaCha20Poly1305(key)
        self._counter = counter

    def seal(self, chunk: bytes | memoryview, final: bool) -> bytes:
        """``header | flag | ciphertext`` of one frame of a message, carrying ``chunk``."""
        return self.seal_flagged(FLAG_FINAL if final else FLAG_MORE, chunk)

    def seal_flagged(self, flag: bytes, chunk: bytes | memoryview) -> bytes:
        """``header | flag | ciphertext`` of one frame with the given flag (a keepalive: 2, empty).

        The flag travels in clear but is authenticated as associated data with the header, so the
        chunk is encrypted straight from the caller's buffer, with no copy to prepend the flag.
        """
        assert flag in (FLAG_MORE, FLAG_FINAL, FLAG_KEEPALIVE)
        if self._counter > FRAME_COUNTER_MAX:
            raise LocalProtocolError("frame counter exhausted after 2**64 frames; open a new channel")
        prefix = (FLAG_BYTES + len(chunk) + TAG_BYTES).to_bytes(FRAME_HEADER_BYTES, "big") + flag
        ciphertext = self._cipher.encrypt(_nonce(self._counter), chunk, prefix)
        self._counter += 1
        return prefix + ciphertext


class _FrameOpener:
    """Authenticates and decrypts frames of one direction, in counter order only."""

    __slots__ = ("_cipher", "_counter")

    def __init__(self, key: bytes, counter: int = 0) -> None:
        assert len(key) == SESSION_KEY_BYTES and 0 <= counter
        self._cipher = ChaCha20Poly1305(key)
        self._counter = counter

    def open(self, header: bytes, body: bytes | bytearray) -> tuple[bytes, bytes]:
        """The flag and the chunk of the next frame (``body`` is flag + ciphertext).

        Raises:
            DecryptionFailed: the frame is not the next one this direction's sender sealed.
        """
        if self._counter > FRAME_COUNTER_MAX:
            raise ChannelError("peer sent more than 2**64 frames on one channel")
        flag = bytes(body[:FLAG_BYTES])
        try:
            chunk = self._cipher.decrypt(_nonce(self._counter), memoryview(body)[FLAG_BYTES:], header + flag)
        except InvalidTag:
            raise DecryptionFailed(
                f"frame {self._counter} of {len(body)} bytes fails authentication "
                "(tampered, replayed, reordered or preceded by a dropped frame)"
            ) from None
        self._counter += 1
        return flag, chunk


def _frame_length(header: bytes, limits: ChannelLimits) -> int:
    """The ciphertext length a header announces, checked before any of the body is read."""
    length = int.from_bytes(header, "big")
    if length > limits.frame_bytes_max + FRAME_OVERHEAD_BYTES:
        raise FrameTooLarge(
            f"frame of {length} bytes exceeds frame_bytes_max {limits.frame_bytes_max} "
            f"(+{FRAME_OVERHEAD_BYTES} bytes of overhead)"
        )
    if length < FRAME_OVERHEAD_BYTES:
        raise FrameTooLarge(f"frame of {length} bytes is below the {FRAME_OVERHEAD_BYTES}-byte minimum")
    return length


def _message_view(message: object) -> memoryview:
    if not isinstance(message, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"a message must be bytes, got {type(message).__name__}")
    try:
        return memoryview(message).cast("B")
    except TypeError as error:
        raise LocalProtocolError(f"a message must be a contiguous byte buffer: {error}") from None


class SecureChannel(trio.abc.AsyncResource):
    """An established channel: whole messages in, whole messages out, in order, authenticated.

    Create with `open_channel`. One task receives at a time; any number may send (sends are
    serialised whole, so messages never interleave).
    """

    def __init__(self, stream: trio.abc.Stream, session: _Session, limits: ChannelLimits) -> None:
        self._stream = stream
        self._peer = session.peer
        self._limits = limits
        self._sealer = _FrameSealer(session.send_key)
        self._opener = _FrameOpener(session.receive_key)
        self._send_lock = trio.StrictFIFOLock()
        self._closed = False
        self._send_failure: BaseException | None = None
        self._receive_failure: BaseException | None = None
        self._receiving = False
        self._peer_closed = False
        # Receive progress lives here, not in locals, so a cancelled receive() loses nothing.
        self._header = bytearray()  # the next frame's header, as far as it has arrived
        self._body_header: bytes | None = None  # header of the frame whose body is being read
        self._body_length = 0
        self._body_parts: list[bytes | bytearray | memoryview] = []
        self._body_filled = 0
        self._message_parts: list[bytes] = []
        self._message_filled = 0
        self._messages_sent = 0
        self._messages_received = 0
        self._frames_sent = 0
        self._frames_received = 0
        self._keepalives_sent = 0
        self._keepalives_received = 0
        self._message_bytes_sent = 0
        self._message_bytes_received = 0
        self._wire_bytes_sent = session.wire_bytes_sent
        self._wire_bytes_received = session.wire_bytes_received

    @property
    def peer(self) -> bytes:
        """The authenticated public key of the other end."""
        return self._peer

    def statistics(self) -> ChannelStatistics:
        """A snapshot of this channel's counters."""
        return ChannelStatistics(
            messages_sent=self._messages_sent,
            messages_received=self._messages_received,
            frames_sent=self._frames_sent,
            frames_received=self._frames_received,
            keepalives_sent=self._keepalives_sent,
            keepalives_received=self._keepalives_received,
            message_bytes_sent=self._message_bytes_sent,
            message_bytes_received=self._message_bytes_received,
            wire_bytes_sent=self._wire_bytes_sent,
            wire_bytes_received=self._wire_bytes_received,
        )

    async def send(self, message: bytes | bytearray | memoryview) -> None:
        """Send one whole message, split into frames of ``min(frame_bytes_max, 120 KiB)`` bytes.

        Raises:
            LocalProtocolError: not bytes, or over ``message_bytes_max``.
            trio.ClosedResourceError: the channel was closed by us.
            trio.BrokenResourceError: an earlier send failed or was cancelled part-way, so the
                peer may hold part of a message; the channel can no longer send.
        """
        view = _message_view(message)
        size = view.nbytes
        if size > self._limits.message_bytes_max:
            raise LocalProtocolError(
                f"message of {size} bytes exceeds message_bytes_max {self._limits.message_bytes_max}"
            )
        step = min(self._limits.frame_bytes_max, SEND_FRAME_BYTES_MAX)
        frames = max(1, -(-size // step))
        async with self._send_lock:
            self._check_can_send()
            try:
                for index in range(frames):
                    chunk = view[index * step : (index + 1) * step]
                    frame = self._sealer.seal(chunk, final=index == frames - 1)
                    await self._stream.send_all(frame)
                    self._frames_sent += 1
                    self._wire_bytes_sent += len(frame)
            except BaseException as error:
                self._send_failure = error
                raise
        self._messages_sent += 1
        self._message_bytes_sent += size

    async def send_keepalive(self) -> None:
        """Send one keepalive frame, between two messages (sends are serialised whole).

        Raises:
            trio.ClosedResourceError, trio.BrokenResourceError: as `send`.
        """
        async with self._send_lock:
            self._check_can_send()
            try:
                frame = self._sealer.seal_flagged(FLAG_KEEPALIVE, b"")
                await self._stream.send_all(frame)
            except BaseException as error:
                self._send_failure = error
                raise
        assert len(frame) == KEEPALIVE_FRAME_BYTES
        self._frames_sent += 1
        self._keepalives_sent += 1
        self._wire_bytes_sent += len(frame)

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("channel is closed")
        if self._send_failure is not None:
            raise trio.BrokenResourceError(
                f"channel cannot send after an earlier send failed: {self._send_failure!r}"
            ) from self._send_failure

    async def receive(self) -> bytes:
        """Receive the next whole message, skipping keepalives.

        Raises:
            ChannelClosed: the peer closed the connection cleanly (raised again on every later call).
            ChannelError: the peer sent something invalid (a subclass says what).
            trio.BusyResourceError: another task is receiving.
            trio.ClosedResourceError: the channel was closed by us.
            trio.BrokenResourceError: an earlier receive failed.
        """
        # Not bounded by frames: a peer may send keepalives for ever. A caller that must charge
        # every frame to the peer (the transport does) calls receive_or_keepalive instead.
        while True:
            message = await self.receive_or_keepalive()
            if message is not None:
                return message

    async def receive_or_keepalive(self) -> bytes | None:
        """The next whole message, or None when a keepalive frame arrives first.

        Raises:
            As `receive`; a keepalive inside a message or carrying bytes is a `ChannelError`.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this channel")
        if self._closed:
            raise trio.ClosedResourceError("channel is closed")
        if self._peer_closed:
            raise ChannelClosed("peer closed the channel")
        if self._receive_failure is not None:
            raise trio.BrokenResourceError(
                f"channel cannot receive after an earlier receive failed: {self._receive_failure!r}"
            ) from self._receive_failure
        self._receiving = True
        try:
            # Bounded: every pass takes one frame, and a message has at most message_bytes_max + 1
            # frames because non-final frames are never empty; a keepalive ends the call.
            while True:
                flag, chunk = await self._receive_frame()
                if flag == FLAG_KEEPALIVE:
                    self._absorb_keepalive(chunk)
                    return None
                message = self._absorb(flag, chunk)
                if message is not None:
                    return message
        except ChannelClosed:
            self._peer_closed = True
            raise
        except trio.Cancelled:
            raise  # nothing consumed is lost: the partial frame and message stay in self
        except BaseException as error:
            self._receive_failure = error
            raise
        finally:
            self._receiving = False

    async def _receive_frame(self) -> tuple[bytes, bytes]:
        """The next frame's flag and chunk; resumable after cancellation at any await.

        No read reaches past the next frame's 4-byte header, so every frame's length is checked
        before any of its body is read. Asking for a body and the next header together halves the
        number of reads (each a trip through trio's scheduler) while frames are flowing.
        """
        if self._body_header is None:
            while len(self._header) < FRAME_HEADER_BYTES:
                data = await self._stream.receive_some(FRAME_HEADER_BYTES - len(self._header))
                if not data:
                    self._end_of_stream()
                self._header += data
            header = bytes(self._header)
            self._body_length = _frame_length(header, self._limits)
            self._body_header = header
            self._header = bytearray()
        length = self._body_length
        while self._body_filled < length:
            wanted = length - self._body_filled
            data = await self._stream.receive_some(wanted + FRAME_HEADER_BYTES)
            assert len(data) <= wanted + FRAME_HEADER_BYTES  # trio's Stream contract
            if not data:
                raise FrameTruncated(
                    f"stream ended inside a frame after {self._body_filled} of its {length} bytes"
                )
            part: bytes | bytearray | memoryview = data
            if len(data) > wanted:
                self._header += data[wanted:]  # all or part of the next frame's header
                part = memoryview(data)[:wanted]
            self._body_parts.append(part)
            self._body_filled += len(part)
        parts = self._body_parts
        body = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        header = self._body_header
        self._body_header = None
        self._body_length = 0
        self._body_parts = []
        self._body_filled = 0
        flag, chunk = self._opener.open(header, body)
        self._frames_received += 1
        self._wire_bytes_received += FRAME_HEADER_BYTES + length
        return flag, chunk

    def _end_of_stream(self) -> NoReturn:
        if self._header:
            raise FrameTruncated(
                f"stream ended inside a frame header after {len(self._header)} of "
                f"{FRAME_HEADER_BYTES} bytes"
            )
        if self._message_parts:
            raise FrameTruncated(
                f"stream ended inside a message after {len(self._message_parts)} frame(s) "
                f"and {self._message_filled} bytes, before its final frame"
            )
        raise ChannelClosed("peer closed the channel")

    def _absorb_keepalive(self, chunk: bytes) -> None:
        if chunk:
            raise ChannelError(f"keepalive frame carries {len(chunk)} bytes, expected none")
        if self._message_parts:
            raise ChannelError(
                f"keepalive frame inside a message, after {len(self._message_parts)} of its frames"
            )
        self._keepalives_received += 1

    def _absorb(self, flag: bytes, chunk: bytes) -> bytes | None:
        """Add one frame to the message being reassembled; the whole message once it is complete."""
        if flag not in (FLAG_MORE, FLAG_FINAL):
            raise ChannelError(f"frame flag is {flag[0]}, expected 0 (more), 1 (final) or 2 (keepalive)")
        if flag == FLAG_MORE and not chunk:
            raise ChannelError("non-final frame with an empty chunk")
        total = self._message_filled + len(chunk)
        if total > self._limits.message_bytes_max:
            raise MessageTooLarge(
                f"message of at least {total} bytes exceeds message_bytes_max "
                f"{self._limits.message_bytes_max}"
            )
        self._message_parts.append(chunk)
        self._message_filled = total
        if flag == FLAG_MORE:
            return None
        message = b"".join(self._message_parts)
        assert len(message) == total
        self._message_parts = []
        self._message_filled = 0
        self._messages_received += 1
        self._message_bytes_received += total
        return message

    async def aclose(self) -> None:
        """Close the channel and its stream (idempotent). The peer sees a clean close."""
        self._closed = True
        await self._stream.aclose()
