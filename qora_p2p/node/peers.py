"""What the transport remembers about a member across its connections: budgets, penalties, backoff.

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
"""

from __future__ import annotations

import math

from qora_p2p.errors import LocalProtocolError

__all__ = ["Backoff", "Penalties", "TokenBucket"]

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
