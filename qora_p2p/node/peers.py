"""What the transport remembers about a member across its connections: limits, budgets, penalties.

Theory of operation
-------------------
The transport keys everything here by member index, the identity the channel handshake proved,
never by connection: a member that reconnects finds its budgets as it left them, its penalties
still counted and its cool-down still running. Each structure is a pure counter over time; time is
an argument (seconds on the Trio clock), so tests drive them with plain numbers.

* `TokenBucket`: a sustained rate with a burst. `take` spends whole tokens and refuses when there
  are too few (messages, accepted connections); `charge` spends what an item cost after the fact
  and may go into debt, and `wait_s` says how long until the debt is paid. The reader charges
  received bytes and waits out the debt before it reads again, so an attacker's large messages
  slow its own connection down (TCP pushes back) and cost us at most one message beyond the budget.
* `Penalties`: a leaky score. Each violation adds one, and the score drains at ``threshold`` per
  ``window_s``, so ``threshold`` violations in one window cross it (fewer, spread out, never do).
  Crossing starts a cool-down: the member is disconnected, not redialled and not accepted until
  it ends. The cool-down doubles with each crossing up to ``cooldown_max_s``; a member that has
  not crossed for ``memory_s`` starts over at ``cooldown_initial_s``.
* `Backoff`: redial delays, doubling from ``initial_s`` up to ``max_s``; reset once a connection held.

`PeerState` holds one member's structures, its queue and counters, and its live connection (at
most one); `TransportLimits` sets them all.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import trio

from qora_p2p.errors import LocalProtocolError
from qora_p2p.node.channel import SecureChannel

__all__ = ["Backoff", "Connection", "PeerState", "PeerStatistics", "Penalties", "TokenBucket", "TransportLimits"]

DOUBLINGS_MAX = 64  # a cool-down or backoff doubles at most this often (no float overflow)


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` held; starts full."""

    __slots__ = ("at", "burst", "rate_per_s", "tokens")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if not (rate_per_s > 0 and burst >= 1):
            raise LocalProtocolError(f"a token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s, self.burst = float(rate_per_s), float(burst)
        self.tokens = self.burst
        self.at: float | None = None  # when tokens were last brought up to date

    def _refill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_s)
        if self.at is None or now > self.at:
            self.at = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if there are that many; False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def charge(self, now: float, amount: float) -> None:
        """Spend ``amount`` whatever is left: the bucket may go into debt."""
        self._refill(now)
        self.tokens -= amount

    def wait_s(self, now: float, amount: float = 0.0) -> float:
        """Seconds until the bucket holds ``amount`` tokens (0.0: it does now)."""
        self._refill(now)
        missing = amount - self.tokens
        return missing / self.rate_per_s if missing > 0 else 0.0


class Penalties:
    """One member's violations: a leaky score, and the cool-downs it has earned."""

    __slots__ = ("at", "cooldown_initial_s", "cooldown_max_s", "cooldowns", "last_cooldown", "memory_s", "score", "strikes", "threshold", "total", "until", "window_s")

    def __init__(self, threshold: int, window_s: float, cooldown_initial_s: float, cooldown_max_s: float, memory_s: float) -> None:
        if not (threshold >= 1 and window_s > 0 and 0 < cooldown_initial_s <= cooldown_max_s <= memory_s):
            raise LocalProtocolError("penalties need threshold >= 1, window_s > 0 and 0 < cooldown_initial_s <= cooldown_max_s <= memory_s")
        self.threshold, self.window_s = threshold, float(window_s)
        self.cooldown_initial_s, self.cooldown_max_s, self.memory_s = float(cooldown_initial_s), float(cooldown_max_s), float(memory_s)
        self.score = 0.0
        self.at: float | None = None
        self.total = 0  # violations ever counted
        self.cooldowns = 0  # cool-downs ever started
        self.strikes = 0  # cool-downs since the member last went memory_s without one
        self.last_cooldown = -math.inf
        self.until = -math.inf  # end of the current or last cool-down

    def _drain(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.score = max(0.0, self.score - (now - self.at) * self.threshold / self.window_s)
        if self.at is None or now > self.at:
            self.at = now

    def current(self, now: float) -> float:
        """The score now (``threshold`` or more starts a cool-down)."""
        self._drain(now)
        return self.score

    def add(self, now: float) -> bool:
        """Count one violation; True if it starts a cool-down (the caller disconnects the member).

        The score never rises above ``threshold``: violations counted during a cool-down (late
        messages the core still judges) neither lengthen it nor pile up for later.
        """
        self._drain(now)
        self.total += 1
        self.score = min(float(self.threshold), self.score + 1)
        if self.cooling_down(now) or self.score < self.threshold:
            return False
        if now - self.last_cooldown > self.memory_s:
            self.strikes = 0
        self.until = now + min(self.cooldown_max_s, self.cooldown_initial_s * 2.0 ** min(self.strikes, DOUBLINGS_MAX))
        self.strikes += 1
        self.cooldowns += 1
        self.last_cooldown = now
        return True

    def cooling_down(self, now: float) -> bool:
        return now < self.until

    def cooldown_s(self, now: float) -> float:
        """Seconds left of the current cool-down (0.0: none)."""
        return max(0.0, self.until - now)


class Backoff:
    """Delays between redials: ``initial_s``, doubling, at most ``max_s``."""

    __slots__ = ("delay_s", "initial_s", "max_s")

    def __init__(self, initial_s: float, max_s: float) -> None:
        if not 0 < initial_s <= max_s:
            raise LocalProtocolError(f"a backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s, self.max_s = float(initial_s), float(max_s)
        self.delay_s = self.initial_s

    def next_s(self) -> float:
        """The delay before the next attempt; the one after it doubles, up to the cap."""
        delay = self.delay_s
        self.delay_s = min(self.max_s, delay * 2)
        return delay

    def reset(self) -> None:
        self.delay_s = self.initial_s


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Per-peer and per-listener limits of the transport, each per time window where it can be."""

    send_queue_messages_max: int = 4096  # per peer: a round's gossip is far below this
    send_queue_bytes_min: int = 32 << 20  # per peer; raised to hold 16 largest messages if P is large
    messages_per_second: float = 2_000.0  # per peer, sustained, keepalives included; votes and gossip of n = 1024 fit
    messages_burst: int = 8_192  # per peer, the bucket's depth (a sync burst, a round's votes)
    bytes_per_second_min: int = 32 << 20  # per peer, sustained; raised to 4 largest messages a second
    bytes_burst_min: int = 64 << 20  # per peer; raised to 8 largest messages (a round's updates and a catch-up)
    penalties_max: int = 32  # per peer within penalty_window_ms, then it is disconnected and cooled down
    penalty_window_ms: int = 60_000  # the score drains by penalties_max over this long
    cooldown_initial_ms: int = 5_000  # a peer's first cool-down; each further one doubles it
    cooldown_max_ms: int = 300_000  # so a persistent offender costs us one handshake every few minutes
    cooldown_memory_ms: int = 3_600_000  # a peer not cooled down for this long starts over at the first
    connections_per_minute: float = 6.0  # per member that dials us, sustained: restarts and dead links
    connections_burst: int = 8  # per member that dials us: a few restarts in a row
    handshakes_max: int = 16  # unauthenticated inbound handshakes at once, all addresses together
    handshakes_per_address_max: int = 4  # unauthenticated inbound handshakes from one IP address
    accepts_per_second: float = 16.0  # connections taken from the listen backlog, sustained
    accepts_burst: int = 64  # connections accepted back to back before accepting pauses
    connect_timeout_ms: int = 5_000
    backoff_initial_ms: int = 250  # the first redial after a failed one
    backoff_max_ms: int = 1_000  # the longest wait between redials: a restarted peer is found this fast
    connection_stable_ms: int = 10_000  # a connection that lived this long resets the backoff
    inbox_messages_max: int = 1_024  # decoded messages waiting for the node, all peers together

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise LocalProtocolError(f"TransportLimits.{name} must be positive, got {value!r}")
        ordered = [
            ("backoff_initial_ms", "backoff_max_ms"),
            ("backoff_max_ms", "connection_stable_ms"),
            ("cooldown_initial_ms", "cooldown_max_ms"),
            ("cooldown_max_ms", "cooldown_memory_ms"),
            ("handshakes_per_address_max", "handshakes_max"),
        ]
        for low, high in ordered:
            if getattr(self, low) > getattr(self, high):
                raise LocalProtocolError(f"TransportLimits.{low} exceeds {high}")


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    connected: bool
    connections: int
    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    queued_messages: int
    queued_bytes: int
    queue_peak_bytes: int
    dropped: int
    penalties: int  # every violation ever counted
    rate_limited: int
    penalty_score: float  # now; penalties_max starts a cool-down
    cooldowns: int  # times disconnected for violations
    cooldown_s: float  # left of the current cool-down
    refused: int  # authenticated channels from this member we closed (cool-down, role, rate)
    dead_links: int  # connections closed because nothing arrived in time
    keepalives_sent: int
    keepalives_received: int
    throttled: int  # times the reader paused for the byte budget


class Connection:
    """One established channel to a member, the scope of its tasks, and why it ended."""

    def __init__(self, channel: SecureChannel) -> None:
        self.channel = channel
        self.scope = trio.CancelScope()
        self.reason: str | None = None  # set by whoever ends it from outside its reader


class PeerState:
    """Everything the transport keeps about one other member, across its connections."""

    def __init__(self, index: int, name: str, key: bytes, address: tuple[str, int], limits: TransportLimits, bytes_budget: TokenBucket) -> None:
        self.index, self.name, self.key = index, name, key
        self.host, self.port = address
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.queue_peak_bytes = 0
        self.wakeup = trio.Event()
        self.connection: Connection | None = None  # at most one
        self.connections = 0
        self.messages_sent = self.messages_received = self.bytes_sent = self.bytes_received = 0
        self.dropped = self.rate_limited = self.refused = self.dead_links = self.throttled = 0
        self.keepalives_sent = self.keepalives_received = 0
        self.messages = TokenBucket(limits.messages_per_second, limits.messages_burst)
        self.bytes = bytes_budget
        self.arrivals = TokenBucket(limits.connections_per_minute / 60, limits.connections_burst)
        self.penalties = Penalties(
            limits.penalties_max,
            limits.penalty_window_ms / 1000,
            limits.cooldown_initial_ms / 1000,
            limits.cooldown_max_ms / 1000,
            limits.cooldown_memory_ms / 1000,
        )
        self.backoff = Backoff(limits.backoff_initial_ms / 1000, limits.backoff_max_ms / 1000)
        self.dial_attempts = 0
        self.dial_error: str | None = None  # of the last failed dial

    @property
    def channel(self) -> SecureChannel | None:
        return None if self.connection is None else self.connection.channel

    def statistics(self, now: float) -> PeerStatistics:
        return PeerStatistics(
            connected=self.connection is not None,
            connections=self.connections,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            queued_messages=len(self.queue),
            queued_bytes=self.queued_bytes,
            queue_peak_bytes=self.queue_peak_bytes,
            dropped=self.dropped,
            penalties=self.penalties.total,
            rate_limited=self.rate_limited,
            penalty_score=round(self.penalties.current(now), 3),
            cooldowns=self.penalties.cooldowns,
            cooldown_s=round(self.penalties.cooldown_s(now), 3),
            refused=self.refused,
            dead_links=self.dead_links,
            keepalives_sent=self.keepalives_sent,
            keepalives_received=self.keepalives_received,
            throttled=self.throttled,
        )
