"""Frames for fuzzing the codec: byte-level and structural mutations of valid frames, and the
property `messages.decode` must keep on any bytes (a canonical message, or MessageError)."""

from __future__ import annotations

from random import Random
from typing import Any

import msgpack

from qora_p2p.errors import MessageError
from qora_p2p.protocol.messages import Limits, Message, decode

__all__ = ["check_decode", "mutate", "mutate_structure"]

# Interesting bytes for mutating msgpack frames: type markers and boundaries.
MSGPACK_MARKERS = bytes.fromhex("00017f808f909fa0bfc0c1c2c3c4c5c6c7cacbcccdcecfd0d1d2d3d4d8d9dcdddedfe0ff")


def check_decode(data: bytes, limits: Limits) -> Message | None:
    """Decode ``data``: a message, or None if refused. Anything but MessageError is a finding."""
    try:
        message = decode(data, limits)
    except MessageError:
        return None
    except Exception as error:
        error.add_note(f"decode raised {type(error).__name__} on {data.hex()}")
        raise
    if message.encode() != data:
        raise AssertionError(f"decode accepted a frame its message does not re-encode to: {data.hex()}")
    return message


def mutate(rng: Random, data: bytes) -> bytes:
    """One to four byte-level mutations of a frame."""
    frame = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        position = rng.randrange(len(frame) + 1)
        if roll < 0.25 and frame:
            frame[min(position, len(frame) - 1)] ^= 1 << rng.randrange(8)
        elif roll < 0.5 and frame:
            frame[min(position, len(frame) - 1)] = rng.choice(MSGPACK_MARKERS)
        elif roll < 0.65:
            frame[position:position] = rng.randbytes(rng.randint(1, 9))
        elif roll < 0.8:
            del frame[position : position + rng.randint(1, 9)]
        elif roll < 0.9:
            del frame[position:]
        else:
            start = rng.randrange(len(frame) + 1)
            frame[position:position] = frame[start : start + rng.randint(1, 16)]
    return bytes(frame)


def mutate_structure(rng: Random, data: bytes) -> bytes:
    """A frame with one decoded leaf changed and packed again (valid msgpack, wrong content)."""
    tree = msgpack.unpackb(data, raw=False)
    path: list[tuple[list[Any], int]] = []
    node: Any = tree
    while isinstance(node, list) and node and rng.random() < 0.8:
        index = rng.randrange(len(node))
        path.append((node, index))
        node = node[index]
    if not path:
        return data
    parent, index = path[-1]
    roll = rng.random()
    if roll < 0.1:
        del parent[index]
    elif roll < 0.2:
        parent.insert(index, parent[index])
    else:
        parent[index] = replacement(rng, parent[index])
    packed: bytes = msgpack.packb(tree, use_bin_type=rng.random() < 0.9)
    return packed


def replacement(rng: Random, leaf: Any) -> Any:
    roll = rng.random()
    if isinstance(leaf, bool) or roll < 0.1:
        return rng.choice((None, True, False, 0, -1, b"", [], 2**63, -(2**63), 1.5))
    if isinstance(leaf, int):
        return rng.choice((leaf + 1, leaf - 1, -leaf, leaf + 2**32, 2**62, 2**62 + 1, 2**31, -(2**31), 0, -1))
    if isinstance(leaf, bytes):
        return rng.choice((leaf[:-1], leaf + b"\x00", bytes(len(leaf)), rng.randbytes(len(leaf)), b""))
    return rng.choice((None, 0, b"", [leaf]))
