"""Connections between members over TCP: dialing, accepting, bounded queues, rate limits.

Theory of operation
-------------------
Every pair of members keeps one encrypted channel (`qora_p2p.node.channel`). The member with the lower
index dials, the higher one accepts, so two members never race to open two connections; a dialer
retries with capped exponential backoff for as long as the node runs. An accepted channel from a
member that already has one replaces it (the peer restarted).

Sending never blocks the protocol: `send` puts bytes on the peer's queue, bounded by a message
count and a byte total; when full the *oldest* queued message is dropped (gossip repairs losses,
and newer messages are worth more), so a slow or dead peer costs a bounded amount of memory. One
writer task per connection drains the queue.

Receiving: one reader task per connection decodes each message (bounded by the genesis-derived
`Limits`), charges it to the peer's token bucket (``messages_per_second``), and hands it to the
node through a bounded channel: when the node is busy the reader waits, and TCP pushes back on the
peer. Malformed messages, rate overruns and the core's `Penalize` effects count against the peer;
past ``penalties_max`` on one connection it is closed (and the peer may reconnect after a pause).

Accepting is bounded too: at most ``handshakes_max`` handshakes at once (each within the channel's
handshake timeout, against slow-loris) and ``handshakes_per_address_max`` from one address;
authenticated channels are bounded by the membership (one per member).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import structlog
import trio

from qora_p2p.errors import (
    ChannelClosed,
    HandshakeError,
    LocalProtocolError,
    MessageError,
    RemoteProtocolError,
)
from qora_p2p.identity import Identity
from qora_p2p.node.channel import ChannelLimits, SecureChannel, open_channel
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.messages import Limits, Message, decode

__all__ = ["LinkFilter", "PeerStatistics", "Transport", "TransportLimits"]

DELAYED_MESSAGES_MAX = 4_096  # messages held back by a link filter's delay, all peers together

log = structlog.get_logger("qora.transport")


@dataclass(frozen=True, slots=True)
class TransportLimits:
    send_queue_messages_max: int = 4096  # per peer: a round's gossip is far below this
    send_queue_bytes_min: int = 32 << 20  # per peer; raised to hold 16 largest messages if P is large
    messages_per_second: float = 2_000.0  # per peer, sustained; votes and gossip of n = 1024 fit
    messages_burst: int = 8_192  # per peer, the bucket's depth (a sync burst, a round's votes)
    penalties_max: int = 32  # per connection, then it is closed
    handshakes_max: int = 64  # concurrent inbound handshakes, all addresses together
    handshakes_per_address_max: int = 8  # unauthenticated inbound connections from one IP address
    connect_timeout_ms: int = 5_000
    backoff_initial_ms: int = 100
    backoff_max_ms: int = 5_000
    reconnect_pause_ms: int = 2_000  # after we dropped a misbehaving connection
    inbox_messages_max: int = 1_024  # decoded messages waiting for the node, all peers together

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise LocalProtocolError(f"TransportLimits.{name} must be positive, got {value!r}")
        if self.backoff_initial_ms > self.backoff_max_ms:
            raise LocalProtocolError("TransportLimits.backoff_initial_ms exceeds backoff_max_ms")


class LinkFilter(Protocol):
    """A hook for test networks (`qora_p2p.testnet.faults`): per message, whether it goes out, and
    whether and when a received one is delivered. A production transport has none."""

    def outgoing(self, peer: int) -> bool:
        """Whether to send a message to ``peer`` now (False drops it)."""
        ...

    def incoming(self, peer: int) -> float | None:
        """None to drop a message from ``peer``, else seconds to hold it before delivery (0: now)."""
        ...


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
    penalties: int
    rate_limited: int




class _Peer:
    def __init__(self, index: int, key: bytes, host: str, port: int) -> None:
        self.index, self.key, self.host, self.port = index, key, host, port
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.queue_peak_bytes = 0
        self.wakeup = trio.Event()
        self.channel: SecureChannel | None = None
        self.scope: trio.CancelScope | None = None  # the connection's tasks
        self.connections = 0
        self.messages_sent = self.messages_received = self.bytes_sent = self.bytes_received = 0
        self.dropped = self.penalties_total = self.rate_limited = 0
        self.penalties = 0  # on the current connection
        self.tokens = 0.0
        self.tokens_at = 0.0


class Transport:
    """All of one member's connections.

    Args:
        genesis, identity: the network and us.
        on_message: ``async (peer, message)`` for every decoded message (backpressure by awaiting).
        on_connected: ``(peer)`` once a channel to ``peer`` is up (the node sends its hello).
        limits: see `TransportLimits`.
        channel_limits: frame and handshake limits (message size is raised to the genesis maximum).
        link_filter: test networks only: drops or delays messages (`LinkFilter`).
    """

    def __init__(
        self,
        genesis: Genesis,
        identity: Identity,
        on_message: Callable[[int, Message], Any],
        on_connected: Callable[[int], None],
        *,
        limits: TransportLimits = TransportLimits(),
        channel_limits: ChannelLimits | None = None,
        link_filter: LinkFilter | None = None,
    ) -> None:
        me = genesis.member_index(identity.public_key)
        if me is None:
            raise LocalProtocolError("identity is not a member of the genesis")
        self.genesis, self.identity, self.me = genesis, identity, me
        self.limits = limits
        self.message_limits = Limits(genesis.size, genesis.model.dimension)
        largest = self.message_limits.message_bytes_max
        base = channel_limits or ChannelLimits()
        self.channel_limits = ChannelLimits(
            frame_bytes_max=min(base.frame_bytes_max, largest),
            message_bytes_max=largest,
            handshake_timeout_ms=base.handshake_timeout_ms,
        )
        self.queue_bytes_max = max(limits.send_queue_bytes_min, 16 * (4 * genesis.model.dimension + 1024))
        self.members = frozenset(member.public_key for member in genesis.members)
        self.peers = {
            index: _Peer(index, member.public_key, member.host, member.port)
            for index, member in enumerate(genesis.members)
            if index != me
        }
        self.by_key = {peer.key: peer for peer in self.peers.values()}
        self.on_message, self.on_connected = on_message, on_connected
        self.handshakes = 0
        self.per_address: dict[str, int] = {}
        self.refused = 0
        self._nursery: trio.Nursery | None = None
        self.listen_port: int | None = None
        self.link_filter = link_filter
        self.delayed = 0
        self.fault_dropped = 0

    # ------------------------------------------------------------------------------- running

    async def run(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` and dial the members we dial, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            listeners = await nursery.start(partial(trio.serve_tcp, self._accept, port, host=host))
            self.listen_port = listeners[0].socket.getsockname()[1]
            for peer in self.peers.values():
                if peer.index > self.me:
                    nursery.start_soon(self._dial_forever, peer)
            task_status.started(self.listen_port)

    def send(self, peer_index: int, data: bytes) -> None:
        """Queue ``data`` for ``peer_index``; drops the oldest queued message when the queue is full."""
        peer = self.peers[peer_index]
        if self.link_filter is not None and not self.link_filter.outgoing(peer_index):
            self.fault_dropped += 1
            return
        peer.queue.append(data)
        peer.queued_bytes += len(data)
        while len(peer.queue) > self.limits.send_queue_messages_max or peer.queued_bytes > self.queue_bytes_max:
            peer.queued_bytes -= len(peer.queue.popleft())
            peer.dropped += 1
        peer.queue_peak_bytes = max(peer.queue_peak_bytes, peer.queued_bytes)
        peer.wakeup.set()

    def broadcast(self, data: bytes) -> None:
        for index in self.peers:
            self.send(index, data)

    def penalize(self, peer_index: int, reason: str) -> None:
        """Count a protocol violation against the peer's connection; close it past the limit."""
        peer = self.peers.get(peer_index)
        if peer is None:
            return
        peer.penalties += 1
        peer.penalties_total += 1
        if peer.penalties == 1:
            log.warning("peer_penalized", peer=peer_index, reason=reason)
        if peer.penalties >= self.limits.penalties_max and peer.scope is not None:
            log.warning("peer_disconnected", peer=peer_index, reason=f"{peer.penalties} violations", last=reason)
            peer.scope.cancel()

    def connected(self) -> list[int]:
        return sorted(index for index, peer in self.peers.items() if peer.channel is not None)

    def statistics(self) -> dict[int, PeerStatistics]:
        return {
            index: PeerStatistics(
                peer.channel is not None,
                peer.connections,
                peer.messages_sent,
                peer.messages_received,
                peer.bytes_sent,
                peer.bytes_received,
                len(peer.queue),
                peer.queued_bytes,
                peer.queue_peak_bytes,
                peer.dropped,
                peer.penalties_total,
                peer.rate_limited,
            )
            for index, peer in self.peers.items()
        }

    # ------------------------------------------------------------------------------- dialing

    async def _handshake(self, stream: trio.SocketStream, dialed: bytes | None) -> SecureChannel:
        """The channel handshake: as initiator towards ``dialed``, or as responder to any member."""
        return await open_channel(
            stream,
            self.identity,
            genesis_hash=self.genesis.hash,
            members=self.members,
            initiator=dialed is not None,
            expected_peer=dialed,
            limits=self.channel_limits,
        )

    async def _dial_forever(self, peer: _Peer) -> None:
        backoff = self.limits.backoff_initial_ms
        while True:
            started = trio.current_time()
            try:
                with trio.fail_after(self.limits.connect_timeout_ms / 1000):
                    stream = await trio.open_tcp_stream(peer.host, peer.port)
                channel = await self._handshake(stream, peer.key)
            except (OSError, trio.TooSlowError, HandshakeError) as error:
                if backoff >= self.limits.backoff_max_ms:
                    log.debug("dial_failed", peer=peer.index, error=str(error))
            else:
                backoff = self.limits.backoff_initial_ms
                dropped = await self._serve(peer, channel)
                if dropped:
                    await trio.sleep(self.limits.reconnect_pause_ms / 1000)
                if trio.current_time() - started > self.limits.backoff_max_ms / 1000:
                    continue  # a connection that lived a while: redial at once
            await trio.sleep(backoff / 1000)
            backoff = min(self.limits.backoff_max_ms, backoff * 2)

    # ------------------------------------------------------------------------------- accepting

    async def _accept(self, stream: trio.SocketStream) -> None:
        try:
            address = str(stream.socket.getpeername()[0])
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        if self.handshakes >= self.limits.handshakes_max or self.per_address.get(address, 0) >= self.limits.handshakes_per_address_max:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... refusal
                log.warning("connection_refused", address=address, handshakes=self.handshakes, refused=self.refused)
            await trio.aclose_forcefully(stream)
            return
        self.handshakes += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        try:
            channel = await self._handshake(stream, None)
        except HandshakeError as error:
            log.info("handshake_refused", address=address, error=str(error))
            return
        finally:
            # Only unauthenticated connections count against an address: once a handshake
            # succeeds the channel belongs to a member (at most one each), and members may share
            # an address (one machine, NAT).
            self.handshakes -= 1
            remaining = self.per_address[address] - 1
            if remaining:
                self.per_address[address] = remaining
            else:
                del self.per_address[address]
        peer = self.by_key[channel.peer]
        if peer.scope is not None:
            peer.scope.cancel()  # the peer reconnected: the old connection is dead to it
        await self._serve(peer, channel)

    # ------------------------------------------------------------------------------- a connection

    async def _serve(self, peer: _Peer, channel: SecureChannel) -> bool:
        """Run one established connection until it ends; True if we dropped it for misbehaviour."""
        scope = trio.CancelScope()
        peer.scope, peer.channel, peer.penalties = scope, channel, 0
        peer.connections += 1
        peer.tokens, peer.tokens_at = float(self.limits.messages_burst), trio.current_time()
        log.info("peer_connected", peer=peer.index, connections=peer.connections)
        reason = "closed"
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, peer, channel)
                    self.on_connected(peer.index)
                    reason = await self._reader(peer, channel, nursery)
                    nursery.cancel_scope.cancel()
        finally:
            if peer.scope is scope:
                peer.scope, peer.channel = None, None
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(channel)
        dropped = peer.penalties >= self.limits.penalties_max
        log.info("peer_gone", peer=peer.index, reason="dropped for violations" if dropped else reason)
        return dropped

    async def _writer(self, peer: _Peer, channel: SecureChannel) -> None:
        try:
            while True:
                while not peer.queue:
                    peer.wakeup = trio.Event()
                    await peer.wakeup.wait()
                data = peer.queue.popleft()
                peer.queued_bytes -= len(data)
                await channel.send(data)
                peer.messages_sent += 1
                peer.bytes_sent += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if peer.scope is not None:
                peer.scope.cancel()

    async def _filtered_delivery(self, link_filter: LinkFilter, peer: _Peer, message: Message, nursery: trio.Nursery) -> bool:
        """Apply the link filter to a received message; True if it is to be delivered now."""
        delay_s = link_filter.incoming(peer.index)
        if delay_s is None:
            self.fault_dropped += 1
            return False
        if not delay_s:
            return True
        if self.delayed >= DELAYED_MESSAGES_MAX:
            self.fault_dropped += 1
            return False
        self.delayed += 1

        async def later() -> None:
            try:
                await trio.sleep(delay_s)
                await self.on_message(peer.index, message)
            finally:
                self.delayed -= 1

        nursery.start_soon(later)
        return False

    async def _reader(self, peer: _Peer, channel: SecureChannel, nursery: trio.Nursery) -> str:
        limits = self.limits
        while True:
            try:
                data = await channel.receive()
            except ChannelClosed:
                return "peer closed the connection"
            except RemoteProtocolError as error:
                self.penalize(peer.index, f"channel: {error}")
                return f"channel error: {error}"
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                return f"connection lost: {error}"
            peer.messages_received += 1
            peer.bytes_received += len(data)
            now = trio.current_time()
            peer.tokens = min(float(limits.messages_burst), peer.tokens + (now - peer.tokens_at) * limits.messages_per_second)
            peer.tokens_at = now
            if peer.tokens < 1:
                peer.rate_limited += 1
                if peer.rate_limited % 1000 == 1:
                    self.penalize(peer.index, f"over {limits.messages_per_second:g} messages per second")
                continue
            peer.tokens -= 1
            try:
                message = decode(data, self.message_limits)
            except MessageError as error:
                self.penalize(peer.index, f"undecodable message: {error}")
                if peer.penalties >= limits.penalties_max:
                    return "too many violations"
                continue
            if self.link_filter is not None and not await self._filtered_delivery(self.link_filter, peer, message, nursery):
                continue
            await self.on_message(peer.index, message)
            if peer.penalties >= limits.penalties_max:
                return "too many violations"

