"""The project's error types.

Two families matter to a running node (h11's split): an error that means *we* misused an API is a bug
and must surface; an error caused by bad input (a config file, the CLI, a peer's bytes, a caller's
arguments) is an operating error with a message that names the problem. Every error the project raises
on purpose derives from `QoraError`, so a caller can catch all of them without catching real bugs.
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "BadHandshake",
    "BadSignature",
    "ChannelClosed",
    "ChannelError",
    "ConfigError",
    "DecryptionFailed",
    "DiskFull",
    "FixedPointError",
    "FrameTooLarge",
    "FrameTruncated",
    "HandshakeError",
    "HandshakeTimeout",
    "KeyFileError",
    "KeyFormatError",
    "LearningError",
    "LocalProtocolError",
    "MessageError",
    "MessageTooLarge",
    "PeerMismatch",
    "QoraError",
    "RemoteProtocolError",
    "SignatureError",
    "StoreDamaged",
    "StoreError",
    "UnknownPeer",
    "WrongNetwork",
]


class QoraError(Exception):
    """Base of every error qora-p2p raises on purpose."""


class FixedPointError(QoraError, ValueError):
    """A value cannot be encoded in, or decoded from, the fixed-point wire format."""


class AggregationError(QoraError, ValueError):
    """`aggregate` was given input it cannot use, or a rule's precondition does not hold."""


class ConfigError(QoraError, ValueError):
    """A configuration (file, CLI option, parameter) is invalid; the message names the field."""


class LearningError(ConfigError):
    """A model, dataset, partition, training or attack setting cannot be used."""


class RemoteProtocolError(QoraError):
    """A peer sent something invalid; counted against that peer, never a crash."""


class LocalProtocolError(QoraError):
    """We misused an API (bad argument, wrong call order): a bug in the calling code."""


class SignatureError(RemoteProtocolError):
    """A signature does not verify: wrong length, invalid public key, or forged or corrupt bytes."""


class KeyFormatError(QoraError, ValueError):
    """A key is malformed: public key text that is not 64 lowercase hex characters of a valid
    Ed25519 point, or a seed that is not 32 bytes."""


class KeyFileError(QoraError):
    """A key file cannot be written or read: missing, unreadable, malformed, or too permissive."""


class HandshakeError(RemoteProtocolError):
    """A channel handshake failed because of what the peer sent (or did not send in time)."""


class BadHandshake(HandshakeError):
    """The handshake bytes are malformed: wrong magic or version, EOF, or an unusable ephemeral key."""


class WrongNetwork(HandshakeError):
    """The peer belongs to another network: its genesis hash differs from ours."""


class UnknownPeer(HandshakeError):
    """The peer's identity key is not a member of the network (or is our own key)."""


class PeerMismatch(HandshakeError):
    """The peer is a member, but not the one we meant to connect to."""


class BadSignature(HandshakeError):
    """The peer's handshake signature does not verify over the transcript."""


class HandshakeTimeout(HandshakeError):
    """The handshake did not finish within its time limit."""


class ChannelError(RemoteProtocolError):
    """An established channel received bytes that break the framing or fail authentication."""


class FrameTooLarge(ChannelError):
    """A frame's length prefix is outside the allowed range; its body is never read."""


class MessageTooLarge(ChannelError):
    """A reassembled message would exceed the receiver's message size limit."""


class FrameTruncated(ChannelError):
    """The stream ended inside a frame or inside a multi-frame message."""


class DecryptionFailed(ChannelError):
    """A frame fails authentication: tampered, replayed, reordered, or dropped frames all end here."""


class ChannelClosed(QoraError):
    """The peer closed the channel cleanly, at a message boundary."""


class MessageError(RemoteProtocolError):
    """A protocol message is malformed, out of limits, or not canonically encoded."""


class StoreError(QoraError):
    """A node's data directory cannot be used: another network or member, another schema, in use by
    another process, unreadable."""


class StoreDamaged(StoreError):
    """The node's database is damaged: a stored row does not match its checksum, or SQLite cannot
    read the file. Nothing is repaired in place; the message names the recovery path."""


class DiskFull(StoreError):
    """A write to the node's database failed for lack of space (SQLITE_FULL, ENOSPC). The
    transaction was rolled back: what was durable before stays durable, nothing half-written."""
