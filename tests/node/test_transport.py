"""Transport: bounded send queues, injected link faults, penalties; then whole transports on an
in-memory network under a virtual clock: silent links, keepalives, restarts, per-member penalties
and budgets that survive reconnects, and floods of the accept side."""

from __future__ import annotations

import errno
from collections import defaultdict

import pytest
import structlog
import structlog.testing
import trio
import trio.testing

from qora_p2p.errors import ChannelClosed
from qora_p2p.identity import Identity
from qora_p2p.node.channel import ChannelLimits, SecureChannel, open_channel
from qora_p2p.node.transport import (
    KEEPALIVE_INTERVAL_MS,
    LINK_DEAD_AFTER_MS,
    WAITING_LOG_INTERVAL_MS,
    Transport,
    TransportLimits,
)
from qora_p2p.protocol.genesis import Genesis, Member, ModelSpec
from qora_p2p.protocol.messages import Hello, Message
from qora_p2p.testnet.faults import FaultInjector, LinkFaults


def _transport(limits: TransportLimits) -> Transport:
    identities = [Identity.from_seed(bytes([9, index]) * 16) for index in range(4)]
    genesis = Genesis("transport-test", tuple(Member(f"m{i}", ident.public_key, "127.0.0.1", 9200 + i) for i, ident in enumerate(identities)), ModelSpec("synthetic", 16, 0), "median", {})
    return Transport(genesis, identities[0], lambda peer, message: None, lambda peer: None, limits=limits)


async def test_a_dead_peer_costs_bounded_memory_and_keeps_the_newest_messages():
    """Sending to a peer that never drains: the queue stops at its message limit, the oldest
    messages are the ones dropped, and the drops are counted."""
    transport = _transport(TransportLimits(send_queue_messages_max=100))
    for index in range(1_000):
        transport.send(1, index.to_bytes(4, "big") * 64)
    stats = transport.statistics()[1]
    assert stats.queued_messages == 100 and stats.dropped == 900
    assert transport.peers[1].queue[0] == (900).to_bytes(4, "big") * 64
    assert stats.queued_bytes == 100 * 256


async def test_queue_byte_limit_holds_with_large_messages():
    """The byte limit binds before the message limit when messages are large."""
    transport = _transport(TransportLimits(send_queue_bytes_min=1 << 20))
    assert transport.queue_bytes_max == 1 << 20
    for _ in range(50):
        transport.send(2, bytes(100_000))
    stats = transport.statistics()[2]
    assert stats.queued_bytes <= 1 << 20 and stats.queued_messages == 10 and stats.dropped == 40


async def test_blocked_peers_get_nothing():
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


# ---------------------------------------------------------------------------------------------
# Transports on an in-memory network, under a virtual clock (autojump_clock): links that go
# silent, restarts, floods. Waits are for a condition; elapsed times are virtual.

LOOPBACK = "127.0.0.1"
GARBAGE = b"\xc1 not msgpack"
HELLO = Hello(1, 1, bytes(32)).encode()


class Link:
    """One connection of the memory network; ``cut`` silences it like a pulled cable."""

    def __init__(self) -> None:
        self.cut = False


class LinkStream(trio.abc.Stream):
    """One end of an in-memory connection. Once its link is cut nothing more is delivered either
    way and nobody is told: no EOF, no error, no FIN when an end closes."""

    def __init__(self, inner: trio.abc.Stream, link: Link, address: str) -> None:
        self.inner, self.link, self.address = inner, link, address

    async def send_all(self, data) -> None:
        if self.link.cut:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None) -> bytes | bytearray:
        if not self.link.cut:
            data = await self.inner.receive_some(max_bytes)
            if not self.link.cut:
                return data
        await trio.sleep_forever()

    async def aclose(self) -> None:
        if self.link.cut:
            await trio.lowlevel.checkpoint()  # the FIN is lost too
        else:
            await self.inner.aclose()


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, network: MemoryNetwork, port: int, backlog: int) -> None:
        self.network, self.port = network, port
        self.backlog_send, self.backlog = trio.open_memory_channel[trio.abc.Stream](backlog)
        self.accepted_at: list[float] = []

    async def accept(self) -> trio.abc.Stream:
        stream = await self.backlog.receive()
        self.accepted_at.append(trio.current_time())
        return stream

    async def aclose(self) -> None:
        if self.network.listeners.get(self.port) is self:
            del self.network.listeners[self.port]
        self.backlog.close()
        await trio.lowlevel.checkpoint()


class MemoryNetwork:
    """Loopback addresses only: ``connect`` reaches whatever listens on a port of 127.0.0.1, from
    any 127.x.y.z source address, or is refused like a closed TCP port."""

    def __init__(self) -> None:
        self.listeners: dict[int, MemoryListener] = {}
        self.links: list[Link] = []

    def listen(self, port: int, backlog: int = 128) -> MemoryListener:
        listener = MemoryListener(self, port, backlog)
        self.listeners[port] = listener
        return listener

    async def connect(self, host: str, port: int, source: str = LOOPBACK) -> trio.abc.Stream:
        assert host == LOOPBACK and source.startswith("127.")
        await trio.lowlevel.checkpoint()
        listener = self.listeners.get(port)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connection to {host}:{port} refused")
        ours, theirs = trio.testing.memory_stream_pair()
        link = Link()
        try:
            listener.backlog_send.send_nowait(LinkStream(theirs, link, source))
        except trio.WouldBlock:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "backlog full") from None
        self.links.append(link)
        return LinkStream(ours, link, host)

    def cut_all(self) -> None:
        for link in self.links:
            link.cut = True


def address_of(stream):
    return stream.address


class Network:
    """Members of one genesis, each a Transport on the memory network, started and stopped at will.
    ``connected[(a, b)]`` lists the times member a's transport reported a channel to b."""

    def __init__(self, nursery: trio.Nursery, size: int, limits: TransportLimits | None = None) -> None:
        self.nursery, self.limits = nursery, limits or TransportLimits()
        self.identities = [Identity.from_seed(bytes([7, index]) * 16) for index in range(size)]
        members = tuple(Member(f"m{index}", identity.public_key, LOOPBACK, 9300 + index) for index, identity in enumerate(self.identities))
        self.genesis = Genesis("transport-links", members, ModelSpec("synthetic", 16, 0), "median", {})
        self.network = MemoryNetwork()
        self.transports: dict[int, Transport] = {}
        self.listeners: dict[int, MemoryListener] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.connected: defaultdict[tuple[int, int], list[float]] = defaultdict(list)
        self.delivered: defaultdict[int, list[tuple[int, Message]]] = defaultdict(list)
        self.hold: trio.Event | None = None  # while set and not fired, delivering a message blocks
        self.progress = trio.Event()

    def _signal(self) -> None:
        self.progress.set()
        self.progress = trio.Event()

    async def start(self, index: int) -> Transport:
        def on_connected(peer: int) -> None:
            self.connected[(index, peer)].append(trio.current_time())
            self._signal()

        async def on_message(peer: int, message: Message) -> None:
            self.delivered[index].append((peer, message))
            self._signal()
            if self.hold is not None:
                await self.hold.wait()

        transport = Transport(self.genesis, self.identities[index], on_message, on_connected, limits=self.limits, open_stream=self.network.connect)
        scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                listener = self.network.listen(self.genesis.members[index].port)
                self.listeners[index] = listener
                await transport.serve([listener], address_of, task_status=task_status)

        self.transports[index], self.scopes[index] = transport, scope
        await self.nursery.start(run)
        return transport

    def stop(self, index: int) -> None:
        self.scopes[index].cancel()

    async def until(self, condition, timeout_s: float = 120) -> None:
        """Wait for ``condition()``, checked at every connection and delivery (exact times)."""
        with trio.fail_after(timeout_s):
            while not condition():
                await self.progress.wait()

    async def poll(self, condition, timeout_s: float = 120) -> float:
        """Wait for ``condition()``, checked every 10 virtual ms; the time it first held."""
        with trio.fail_after(timeout_s):
            while not condition():
                await trio.sleep(0.01)
        return trio.current_time()

    def count(self, a: int, b: int) -> int:
        return len(self.connected[(a, b)])

    async def open_as(self, index: int, target: int, source: str = LOOPBACK) -> SecureChannel:
        """A hand-driven member ``index`` dialling ``target`` (for misbehaving on purpose)."""
        stream = await self.network.connect(LOOPBACK, self.genesis.members[target].port, source)
        return await open_channel(
            stream,
            self.identities[index],
            genesis_hash=self.genesis.hash,
            members=frozenset(identity.public_key for identity in self.identities),
            initiator=True,
            expected_peer=self.identities[target].public_key,
        )


async def closed_by_peer(channel: SecureChannel) -> bool:
    """Read (skipping keepalives) until the other end closes; True once it has."""
    try:
        while True:
            await channel.receive()
    except ChannelClosed:
        return True


async def test_a_silently_dropped_link_is_noticed_and_redialled(autojump_clock):
    """A link that stops delivering without closing (no FIN, no RST) is closed by the dialer
    within LINK_DEAD_AFTER_MS of the last keepalive it heard, and redialled at once; the new
    link carries messages again."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2)
        first, second = await net.start(0), await net.start(1)
        await net.until(lambda: net.count(0, 1) == net.count(1, 0) == 1)
        await trio.sleep(TransportLimits().connection_stable_ms / 1000)  # a connection that held
        cut = trio.current_time()
        net.network.cut_all()
        await net.until(lambda: net.count(0, 1) == net.count(1, 0) == 2)
        elapsed_s = trio.current_time() - cut
        assert (LINK_DEAD_AFTER_MS - KEEPALIVE_INTERVAL_MS) / 1000 <= elapsed_s <= LINK_DEAD_AFTER_MS / 1000
        assert first.statistics()[1].dead_links == 1
        first.send(1, HELLO)
        await net.until(lambda: len(net.delivered[1]) == 1)
        assert first.connected() == [1] and second.connected() == [0]
        nursery.cancel_scope.cancel()


async def test_an_idle_link_lives_on_keepalives_that_never_reach_the_node(autojump_clock):
    """A minute without messages: keepalives flow both ways every KEEPALIVE_INTERVAL_MS, the link
    is never declared dead, and the node receives exactly the one message sent, no keepalive."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2)
        first, second = await net.start(0), await net.start(1)
        await net.until(lambda: net.count(0, 1) == net.count(1, 0) == 1)
        first.send(1, HELLO)
        await net.until(lambda: len(net.delivered[1]) == 1)
        await trio.sleep(60)
        assert net.count(0, 1) == net.count(1, 0) == 1
        for transport, peer in ((first, 1), (second, 0)):
            stats = transport.statistics()[peer]
            assert stats.dead_links == 0 and stats.keepalives_received >= 60 * 1000 // KEEPALIVE_INTERVAL_MS - 2
        assert [peer for peer, _ in net.delivered[1]] == [0] and net.delivered[0] == []
        assert second.statistics()[0].messages_received == 1
        nursery.cancel_scope.cancel()


async def test_a_busy_node_does_not_declare_its_peers_dead(autojump_clock):
    """While the node takes 30 s over one message (the reader waits on it), the link is not
    judged: only time spent waiting for frames counts towards LINK_DEAD_AFTER_MS."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2)
        first, second = await net.start(0), await net.start(1)
        await net.until(lambda: net.count(0, 1) == net.count(1, 0) == 1)
        net.hold = trio.Event()
        first.send(1, HELLO)
        await trio.sleep(30)
        net.hold.set()
        await trio.sleep(30)
        assert net.count(0, 1) == net.count(1, 0) == 1
        assert first.statistics()[1].dead_links == second.statistics()[0].dead_links == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("restarted", [0, 1, 2])
async def test_a_restarted_member_is_reconnected_within_the_backoff_cap(autojump_clock, restarted):
    """Whatever its index (member 0 dials both others, 1 dials one, 2 is dialled by both), a
    member that was down long enough for every backoff to reach its cap has all its links back
    within backoff_max_ms of listening again, one connection per pair."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 3)
        for index in range(3):
            await net.start(index)
        pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
        await net.until(lambda: all(net.count(a, b) == 1 for a, b in pairs))
        net.stop(restarted)
        await trio.sleep(30)
        listening = trio.current_time()
        await net.start(restarted)
        mine = [(a, b) for a, b in pairs if restarted in (a, b)]
        await net.until(lambda: all(net.count(a, b) == 2 for a, b in mine))
        assert trio.current_time() - listening <= TransportLimits().backoff_max_ms / 1000
        for index in range(3):
            assert net.transports[index].connected() == [peer for peer in range(3) if peer != index]
        assert all(net.count(a, b) == 1 for a, b in pairs if restarted not in (a, b))
        nursery.cancel_scope.cancel()


async def test_a_penalised_member_that_reconnects_is_still_penalised(autojump_clock):
    """Penalties belong to the member, not the connection: once dropped it is refused for the
    cool-down, and after it one more violation drops it again, for twice as long."""
    limits = TransportLimits(penalties_max=4, penalty_window_ms=60_000, cooldown_initial_ms=5_000)
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2, limits)
        victim = await net.start(1)
        channel = await net.open_as(0, 1)
        for _ in range(4):
            await channel.send(GARBAGE)
        assert await closed_by_peer(channel)
        stats = victim.statistics()[0]
        assert stats.cooldowns == 1 and stats.cooldown_s == 5.0 and stats.penalties == 4

        channel = await net.open_as(0, 1)  # at once: the handshake completes, the channel is closed
        assert await closed_by_peer(channel)
        assert victim.statistics()[0].refused == 1 and victim.connected() == []

        await trio.sleep(victim.statistics()[0].cooldown_s)
        channel = await net.open_as(0, 1)
        await channel.send(GARBAGE)  # one violation is enough now, not four
        assert await closed_by_peer(channel)
        stats = victim.statistics()[0]
        assert stats.cooldowns == 2 and stats.cooldown_s == 10.0 and stats.penalties == 5
        assert net.delivered[1] == []
        nursery.cancel_scope.cancel()


async def test_the_message_budget_survives_a_reconnect(autojump_clock):
    """A member that spent its message burst gets no fresh one by reconnecting: what it sends on
    the new connection is over budget and dropped."""
    limits = TransportLimits(messages_burst=10, messages_per_second=0.01)
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2, limits)
        victim = await net.start(1)
        channel = await net.open_as(0, 1)
        for _ in range(10):
            await channel.send(HELLO)
        await net.until(lambda: len(net.delivered[1]) == 10)
        await channel.aclose()
        channel = await net.open_as(0, 1)
        for _ in range(5):
            await channel.send(HELLO)
        await net.poll(lambda: victim.statistics()[0].rate_limited == 5)
        assert len(net.delivered[1]) == 10 and victim.statistics()[0].connections == 2
        nursery.cancel_scope.cancel()


async def test_received_bytes_are_paced_per_member_not_dropped(autojump_clock):
    """A member sending large messages faster than its byte budget is read more slowly (TCP
    pushes back), not cut off: every message is still processed, no sooner than the budget
    allows, and the link is not judged dead while the reader pauses."""
    limits = TransportLimits(bytes_per_second_min=1, bytes_burst_min=1, penalties_max=1_000)
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2, limits)
        victim = await net.start(1)
        largest = victim.message_limits.message_bytes_max
        assert (victim.bytes_per_second, victim.bytes_burst) == (4 * largest, 8 * largest)
        channel = await net.open_as(0, 1)
        started = trio.current_time()
        count = 40

        async def flood() -> None:
            for _ in range(count):
                await channel.send(GARBAGE + bytes(largest - len(GARBAGE)))

        nursery.start_soon(flood)
        done = await net.poll(lambda: victim.statistics()[0].penalties == count)  # each one decoded
        stats = victim.statistics()[0]
        assert done - started >= (count * largest - victim.bytes_burst - largest) / victim.bytes_per_second
        assert stats.throttled > 0 and stats.dead_links == 0 and victim.connected() == [0]
        nursery.cancel_scope.cancel()


async def test_a_handshake_flood_is_bounded_per_address_and_in_total(autojump_clock):
    """Silent connections (slow-loris) from ten addresses: at most handshakes_per_address_max
    handshake at once per address (the rest are closed at once) and handshakes_max in all (the rest
    wait in the backlog); each is dropped after the handshake timeout, and the member that dials
    us, retrying meanwhile, is connected once the flood has drained."""
    limits = TransportLimits()
    timeout_s = ChannelLimits().handshake_timeout_ms / 1000
    per_address = 6
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2, limits)
        victim = await net.start(1)
        closed_at: dict[str, list[float]] = defaultdict(list)
        opened = trio.current_time()

        async def silent(stream: trio.abc.Stream, address: str) -> None:
            assert await stream.receive_some() == b""  # the member hangs up; nothing is ever sent
            closed_at[address].append(trio.current_time() - opened)

        addresses = [f"127.0.0.{2 + index}" for index in range(10)]
        for address in addresses:  # in the backlog address by address
            for _ in range(per_address):
                nursery.start_soon(silent, await net.network.connect(LOOPBACK, 9301, source=address), address)
        await trio.testing.wait_all_tasks_blocked()
        assert victim.accept_statistics().handshakes == limits.handshakes_max
        await net.start(0)
        waves = -(-len(addresses) * limits.handshakes_per_address_max // limits.handshakes_max)
        await net.until(lambda: victim.connected() == [0], timeout_s=(waves + 1) * timeout_s)
        await net.poll(lambda: sum(map(len, closed_at.values())) == len(addresses) * per_address)
        accepted = victim.accept_statistics()
        assert accepted.handshakes_peak == limits.handshakes_max and accepted.handshakes == 0
        assert accepted.address_peak == limits.handshakes_per_address_max and accepted.refused_address > 0
        assert closed_at["127.0.0.2"] == [0.0] * (per_address - limits.handshakes_per_address_max) + [timeout_s] * limits.handshakes_per_address_max
        assert all(moment <= waves * timeout_s for moments in closed_at.values() for moment in moments)
        nursery.cancel_scope.cancel()


async def test_accepting_pauses_after_a_burst(autojump_clock):
    """Past accepts_burst connections back to back, the listener takes at most
    accepts_per_second more a second, however many wait in its backlog."""
    limits = TransportLimits(accepts_burst=8, accepts_per_second=2.0)
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 2, limits)
        victim = await net.start(1)
        for index in range(40):
            stream = await net.network.connect(LOOPBACK, 9301, source=f"127.0.1.{index}")
            await stream.aclose()  # each handshake fails at once: only the accept budget binds
        listener = net.listeners[1]
        await net.poll(lambda: len(listener.accepted_at) == 40)
        times = listener.accepted_at
        assert times[7] - times[0] < 0.5 and times[39] - times[0] >= (40 - 8 - 1) / 2.0
        assert victim.accept_statistics().accept_pauses > 0
        nursery.cancel_scope.cancel()


async def test_one_connection_per_member(autojump_clock):
    """A second channel from a member that dials us replaces its first, which is closed; a channel
    from a member we dial (it must not dial us) is refused."""
    async with trio.open_nursery() as nursery:
        net = Network(nursery, 3)
        victim = await net.start(1)
        old = await net.open_as(0, 1)
        new = await net.open_as(0, 1)
        assert await closed_by_peer(old)
        await new.send(HELLO)
        await net.until(lambda: len(net.delivered[1]) == 1)
        assert victim.connected() == [0] and victim.statistics()[0].connections == 2
        wrong_way = await net.open_as(2, 1)
        assert await closed_by_peer(wrong_way)
        assert victim.statistics()[2].refused == 1 and victim.connected() == [0]
        nursery.cancel_scope.cancel()


async def test_a_node_alone_says_what_it_waits_for(autojump_clock):
    """With no peer connected, a line every WAITING_LOG_INTERVAL_MS names whom we dial (address
    and last error) and who should dial us; it stops once a peer connects."""
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            net = Network(nursery, 3)
            await net.start(1)
            await trio.sleep(3 * WAITING_LOG_INTERVAL_MS / 1000 + 0.5)
            await net.start(0)
            await net.until(lambda: net.count(1, 0) == 1)
            await trio.sleep(3 * WAITING_LOG_INTERVAL_MS / 1000)
            nursery.cancel_scope.cancel()
    waiting = [line for line in logs if line["event"] == "waiting_for_peers"]
    assert len(waiting) == 3
    assert waiting[0]["awaiting_dial_from"] == ["m0"] and list(waiting[0]["dialling"]) == ["m2"]
    assert "127.0.0.1:9302" in waiting[0]["dialling"]["m2"] and "refused" in waiting[0]["dialling"]["m2"]
