"""The simulator's event queue: events in (time, push order), popped in O(1) within a millisecond;
and the trace, the digest of every processed event.

One FIFO per millisecond that has events, and a heap of those milliseconds. Under a flood a run
holds millions of pending deliveries; one heap of every event spent a fifth of such a run on
heap operations (py-spy), while the number of distinct pending milliseconds stays small (links
delay by at most a few hundred). An event pushed for a time earlier than the one being drained
is popped next, as a heap of (time, sequence) would pop it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from typing import Any


class EventQueue:
    """Pending ``(kind, payload)`` events by virtual time (milliseconds)."""

    __slots__ = ("_buckets", "_times")

    def __init__(self) -> None:
        self._buckets: dict[int, deque[tuple[str, Any]]] = {}
        self._times: list[int] = []  # a heap of the keys of _buckets

    def __bool__(self) -> bool:
        return bool(self._times)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def push(self, at: int, kind: str, payload: Any) -> None:
        bucket = self._buckets.get(at)
        if bucket is None:
            self._buckets[at] = bucket = deque()
            heapq.heappush(self._times, at)
        bucket.append((kind, payload))

    def pop(self) -> tuple[int, str, Any]:
        """The earliest event, and among events of one time the first pushed (the queue is not empty)."""
        at = self._times[0]
        bucket = self._buckets[at]
        kind, payload = bucket.popleft()
        if not bucket:
            del self._buckets[at]
            heapq.heappop(self._times)
        return at, kind, payload


TRACE_BATCH = 4096  # event texts joined into one SHA-256 update


class Trace:
    """SHA-256 over the UTF-8 text of every processed event, in order. The texts are hashed in
    batches: the digest is the one an update per event would give (hashing is streaming), for a
    fraction of the calls (a large run processes tens of millions of events)."""

    __slots__ = ("_digest", "_pending")

    def __init__(self, start: str) -> None:
        self._digest = hashlib.sha256(start.encode())
        self._pending: list[str] = []

    def add(self, text: str) -> None:
        pending = self._pending
        pending.append(text)
        if len(pending) >= TRACE_BATCH:
            self._flush()

    def _flush(self) -> None:
        self._digest.update("".join(self._pending).encode())
        self._pending.clear()

    def hexdigest(self) -> str:
        self._flush()
        return self._digest.hexdigest()
