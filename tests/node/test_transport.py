"""Transport limits that need no network: bounded send queues, injected link faults, and the
penalty limit that drops a misbehaving connection (over an in-memory stream)."""

from __future__ import annotations

import trio
import trio.testing

from qora_p2p.identity import Identity
from qora_p2p.node.channel import open_channel
from qora_p2p.node.transport import Transport, TransportLimits
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.testnet.faults import FaultInjector, LinkFaults


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
    transport.link_filter = FaultInjector(0, LinkFaults(blocked=frozenset({3})))
    transport.broadcast(b"hello")
    stats = transport.statistics()
    assert stats[3].queued_messages == 0 and stats[1].queued_messages == stats[2].queued_messages == 1
    assert transport.fault_dropped == 1


async def test_a_peer_sending_garbage_is_disconnected_after_the_penalty_limit():
    """Undecodable messages count against the connection; at penalties_max it is dropped, and
    nothing reaches the node."""
    identities = [Identity.from_seed(bytes([9, index]) * 16) for index in range(4)]
    delivered = []
    transport = _transport(TransportLimits(penalties_max=5))
    transport.on_message = lambda peer, message: delivered.append(message)
    members = frozenset(identity.public_key for identity in identities)
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        result = {}

        async def responder() -> None:
            result["channel"] = await open_channel(ours, identities[0], genesis_hash=transport.genesis.hash, members=members, initiator=False)

        nursery.start_soon(responder)
        peer_end = await open_channel(theirs, identities[1], genesis_hash=transport.genesis.hash, members=members, initiator=True, expected_peer=identities[0].public_key)
    async with trio.open_nursery() as nursery:

        async def garbage() -> None:
            try:
                for _ in range(20):
                    await peer_end.send(b"\xc1 not msgpack")
            except trio.BrokenResourceError:
                pass  # the member hung up on us: what the test expects

        nursery.start_soon(garbage)
        with trio.fail_after(10):
            dropped = await transport._serve(transport.peers[1], result["channel"])
        nursery.cancel_scope.cancel()
    assert dropped and delivered == []
    assert transport.statistics()[1].penalties >= 5 and not transport.statistics()[1].connected
