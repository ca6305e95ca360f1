"""Transport limits that need no network: bounded send queues and injected link faults."""

from __future__ import annotations

from qora_p2p.genesis import Genesis, Member, ModelSpec
from qora_p2p.identity import Identity
from qora_p2p.transport import LinkFaults, Transport, TransportLimits


def _transport(limits: TransportLimits) -> Transport:
    identities = [Identity.from_seed(bytes([9, index]) * 16) for index in range(4)]
    genesis = Genesis("transport-test", tuple(Member(f"m{i}", ident.public_key, "127.0.0.1", 9200 + i) for i, ident in enumerate(identities)), ModelSpec("synthetic", 16, 0), "median", {})
    return Transport(genesis, identities[0], lambda peer, message: None, lambda peer: None, limits=limits)


def test_a_dead_peer_costs_bounded_memory_and_keeps_the_newest_messages():
    """Sending to a peer that never drains: the queue stops at its message limit, the oldest
    messages are the ones dropped, and the drops are counted."""
    transport = _transport(TransportLimits(send_queue_messages_max=100))
    for index in range(1_000):
        transport.send(1, index.to_bytes(4, "big") * 64)
    stats = transport.statistics()[1]
    assert stats.queued_messages == 100 and stats.dropped == 900
    assert transport.peers[1].queue[0] == (900).to_bytes(4, "big") * 64
    assert stats.queued_bytes == 100 * 256


def test_queue_byte_limit_holds_with_large_messages():
    """The byte limit binds before the message limit when messages are large."""
    transport = _transport(TransportLimits(send_queue_bytes_min=1 << 20))
    assert transport.queue_bytes_max == 1 << 20
    for _ in range(50):
        transport.send(2, bytes(100_000))
    stats = transport.statistics()[2]
    assert stats.queued_bytes <= 1 << 20 and stats.queued_messages == 10 and stats.dropped == 40


def test_blocked_peers_get_nothing():
    """An injected partition drops what we send to the blocked member, and only to it."""
    transport = _transport(TransportLimits())
    transport.faults = LinkFaults(blocked=frozenset({3}))
    transport.broadcast(b"hello")
    stats = transport.statistics()
    assert stats[3].queued_messages == 0 and stats[1].queued_messages == stats[2].queued_messages == 1
    assert transport.fault_dropped == 1
