"""Per-member budgets, penalties and backoff as pure counters over explicit time, and the limits
that configure them."""

import pytest

from qora_p2p.errors import LocalProtocolError
from qora_p2p.identity import Identity
from qora_p2p.node.peers import Backoff, Penalties, TokenBucket, TransportLimits
from qora_p2p.node.transport import LINK_DEAD_AFTER_MS, Transport
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec


def test_a_token_bucket_allows_its_burst_then_its_rate():
    """Full at first; empty after the burst; refilled at the rate, never above the burst."""
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.4) and bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at the burst


def test_a_token_bucket_in_debt_says_how_long_to_wait():
    """`charge` may overdraw; `wait_s` is the time until the debt is paid, then zero."""
    bucket = TokenBucket(rate_per_s=100.0, burst=50)
    bucket.charge(0.0, 250)
    assert bucket.wait_s(0.0) == pytest.approx(2.0)
    assert bucket.wait_s(1.0) == pytest.approx(1.0)
    assert bucket.wait_s(2.0) == 0.0
    assert bucket.wait_s(2.0, 10) == pytest.approx(0.1)


def test_a_clock_going_backwards_mints_no_tokens():
    """A time earlier than the last one seen changes nothing (no negative refill, no double one)."""
    bucket = TokenBucket(rate_per_s=1.0, burst=2)
    assert bucket.take(10.0) and bucket.take(10.0)
    assert not bucket.take(5.0) and not bucket.take(10.5) and bucket.take(11.0)


def _penalties() -> Penalties:
    return Penalties(threshold=4, window_s=60.0, cooldown_initial_s=5.0, cooldown_max_s=40.0, memory_s=600.0)


def test_threshold_violations_in_one_window_start_a_cool_down_spread_ones_do_not():
    """Four violations at once cross the threshold; four spread over more than a window do not."""
    burst = _penalties()
    assert [burst.add(0.0) for _ in range(4)] == [False, False, False, True]
    assert burst.cooling_down(4.9) and not burst.cooling_down(5.0)
    spread = _penalties()
    assert not any(spread.add(20.0 * step) for step in range(12))
    assert spread.cooldowns == 0 and spread.total == 12


def test_cool_downs_double_up_to_the_cap_and_are_forgotten_after_memory():
    """Each new crossing doubles the cool-down (5, 10, 20, 40, 40 s); after memory_s without one,
    the next starts again at the first."""
    penalties = _penalties()
    now, lengths = 0.0, []
    for _ in range(5):
        while not penalties.add(now):
            now += 0.001
        lengths.append(round(penalties.cooldown_s(now), 6))
        now = penalties.until
    assert lengths == [5.0, 10.0, 20.0, 40.0, 40.0]
    now += 601.0
    while not penalties.add(now):
        now += 0.001
    assert penalties.cooldown_s(now) == 5.0 and penalties.cooldowns == 6


def test_violations_during_a_cool_down_neither_extend_it_nor_pile_up():
    """Late violations during a cool-down are counted but change neither its end nor the score."""
    penalties = _penalties()
    for _ in range(4):
        penalties.add(0.0)
    until = penalties.until
    for _ in range(100):
        assert not penalties.add(1.0)
    assert penalties.until == until and penalties.current(1.0) <= 4 and penalties.total == 104


def test_backoff_doubles_to_its_cap_and_resets():
    backoff = Backoff(initial_s=0.25, max_s=1.0)
    assert [backoff.next_s() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_s() == 0.25


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"backoff_initial_ms": 2_000, "backoff_max_ms": 1_000}, "backoff_initial_ms exceeds backoff_max_ms"),
        ({"cooldown_initial_ms": 600_000}, "cooldown_initial_ms exceeds cooldown_max_ms"),
        ({"handshakes_per_address_max": 17}, "handshakes_per_address_max exceeds handshakes_max"),
        ({"penalties_max": 0}, "penalties_max must be positive"),
    ],
)
def test_transport_limits_refuse_inconsistent_values(changes, problem):
    with pytest.raises(LocalProtocolError, match=problem):
        TransportLimits(**changes)


def test_a_transport_refuses_a_backoff_that_outlasts_a_dead_link():
    """A redial must come within one more dead-link interval: backoff_max_ms below LINK_DEAD_AFTER_MS."""
    identities = [Identity.from_seed(bytes([5, index]) * 16) for index in range(2)]
    genesis = Genesis("limits", tuple(Member(f"m{i}", ident.public_key, "127.0.0.1", 9400 + i) for i, ident in enumerate(identities)), ModelSpec("synthetic", 16, 0), "median", {})
    limits = TransportLimits(backoff_max_ms=LINK_DEAD_AFTER_MS, connection_stable_ms=LINK_DEAD_AFTER_MS)
    with pytest.raises(LocalProtocolError, match="backoff_max_ms must be below LINK_DEAD_AFTER_MS"):
        Transport(genesis, identities[0], lambda peer, message: None, lambda peer: None, limits=limits)
