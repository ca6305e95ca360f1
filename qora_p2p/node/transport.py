"""Connections between members over TCP: dialing, accepting, liveness, bounded queues, rate limits.

Theory of operation
-------------------
Every pair of members keeps one encrypted channel (`qora_p2p.node.channel`). The member with the
lower index dials, the higher one accepts: two members never race to open two connections. A
dialer retries with a short, capped backoff (`TransportLimits.backoff_initial_ms` doubling up to
``backoff_max_ms``), redials at once when a connection that held for ``connection_stable_ms``
ends, and starts the backoff over then; so a restarted member, whatever its index, is connected
again within ``backoff_max_ms`` of listening. An accepted channel from a member that already has
one replaces it (the peer restarted, or found the link dead).

Liveness. A link can die silently (a cable pulled, a NAT entry dropped: no FIN, no RST). A
connection that has sent nothing for `KEEPALIVE_INTERVAL_MS` sends a keepalive frame (inside the
encrypted channel, authenticated like any frame, never passed to the node), and a reader that has
waited `LINK_DEAD_AFTER_MS` with no frame arriving closes the connection; the dialer redials. Only
time spent waiting counts: a reader held up by a busy node gives the link a fresh interval when it
reads again. A node with no peer connected says what it waits for every `WAITING_LOG_INTERVAL_MS`.

Sending never blocks the protocol: `send` puts bytes on the peer's queue, bounded by a message
count and a byte total; when full the *oldest* queued message is dropped (gossip repairs losses,
and newer messages are worth more), so a slow or dead peer costs a bounded amount of memory. One
writer task per connection drains the queue.

Receiving: one reader task per connection decodes each message (bounded by the genesis-derived
`Limits`), charges it to the peer's token bucket (``messages_per_second``), and hands it to the
node through a bounded channel: when the node is busy the reader waits, and TCP pushes back on the
peer. Keepalives spend tokens like messages. Malformed messages, rate overruns and the core's `Penalize` effects count against the peer;
past ``penalties_max`` on one connection it is closed (and the peer may reconnect after a pause).

Accepting is bounded too: at most ``handshakes_max`` handshakes at once (each within the channel's
handshake timeout, against slow-loris) and ``handshakes_per_address_max`` from one address;
authenticated channels are bounded by the membership (one per member).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
from qora_p2p.node.peers import Backoff
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.messages import Limits, Message, decode

__all__ = [
    "KEEPALIVE_INTERVAL_MS",
    "LINK_DEAD_AFTER_MS",
    "WAITING_LOG_INTERVAL_MS",
    "LinkFilter",
    "PeerStatistics",
    "Transport",
    "TransportLimits",
]

# Liveness is a property of the network, not of one node's settings: both ends of a link must
# agree on it (a peer that keeps quiet longer than we wait would be cut off), so these are
# constants, not limits a node may set.
KEEPALIVE_INTERVAL_MS = 2_000  # a connection that has sent nothing this long sends a keepalive
LINK_DEAD_AFTER_MS = 8_000  # a reader that waited this long and got no frame closes the link
WAITING_LOG_INTERVAL_MS = 15_000  # a node with no peer connected says what it waits for this often
WAITING_LOGGED_PEERS_MAX = 16  # members named in that line (the rest are counted)
# Three keepalives in a row may go missing and a fourth be half an interval late (a stalled
# sender, a loaded machine) before a healthy link is declared dead.
assert LINK_DEAD_AFTER_MS >= 3 * KEEPALIVE_INTERVAL_MS + KEEPALIVE_INTERVAL_MS // 2
assert WAITING_LOG_INTERVAL_MS > LINK_DEAD_AFTER_MS  # a dead link is noticed before anyone waits on it

DELAYED_MESSAGES_MAX = 4_096  # messages held back by a link filter's delay, all peers together

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]
AddressOf = Callable[[trio.abc.Stream], str | None]

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
    backoff_initial_ms: int = 250  # the first redial after a failed one
    backoff_max_ms: int = 1_000  # the longest wait between redials: a restarted peer is found this fast
    connection_stable_ms: int = 10_000  # a connection that lived this long resets the backoff
    reconnect_pause_ms: int = 2_000  # after we dropped a misbehaving connection
    inbox_messages_max: int = 1_024  # decoded messages waiting for the node, all peers together

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise LocalProtocolError(f"TransportLimits.{name} must be positive, got {value!r}")
        if self.backoff_initial_ms > self.backoff_max_ms:
            raise LocalProtocolError("TransportLimits.backoff_initial_ms exceeds backoff_max_ms")
        if self.backoff_max_ms > self.connection_stable_ms:
            raise LocalProtocolError("TransportLimits.backoff_max_ms exceeds connection_stable_ms")
        if self.backoff_max_ms >= LINK_DEAD_AFTER_MS:  # a dead link is redialled within one more interval
            raise LocalProtocolError(f"TransportLimits.backoff_max_ms must be below LINK_DEAD_AFTER_MS {LINK_DEAD_AFTER_MS}")


class LinkFilter(Protocol):
    """A hook for test networks (`qora_p2p.testnet.faults`): per message, whether it goes out, and
    whether and when a received one is delivered. A production transport has none. Keepalives are
    not messages: a filtered link stays up."""

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
    dead_links: int  # connections closed because nothing arrived in time
    keepalives_sent: int
    keepalives_received: int


class _Peer:
    def __init__(self, index: int, name: str, key: bytes, address: tuple[str, int], limits: TransportLimits) -> None:
        self.index, self.name, self.key = index, name, key
        self.host, self.port = address
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
        self.dead_links = self.keepalives_sent = self.keepalives_received = 0
        self.backoff = Backoff(limits.backoff_initial_ms / 1000, limits.backoff_max_ms / 1000)
        self.dial_attempts = 0
        self.dial_error: str | None = None  # of the last failed dial


class _LinkDead(Exception):
    """Nothing arrived on a connection for LINK_DEAD_AFTER_MS while its reader waited."""


def _socket_address(stream: trio.abc.Stream) -> str | None:
    """The remote IP address of a TCP stream; None if there is none (it already hung up)."""
    if not isinstance(stream, trio.SocketStream):
        raise LocalProtocolError(f"a listener handed us a {type(stream).__name__}; pass address_of for it")
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return None


class Transport:
    """All of one member's connections.

    Args:
        genesis, identity: the network and us.
        on_message: ``async (peer, message)`` for every decoded message (backpressure by awaiting).
        on_connected: ``(peer)`` once a channel to ``peer`` is up (the node sends its hello).
        limits: see `TransportLimits`.
        channel_limits: frame and handshake limits (message size is raised to the genesis maximum).
        link_filter: test networks only: drops or delays messages (`LinkFilter`).
        open_stream: ``async (host, port) -> stream`` to dial with (`trio.open_tcp_stream`; tests
            pass an in-memory network).
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
        open_stream: OpenStream = trio.open_tcp_stream,
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
            index: _Peer(index, member.name, member.public_key, (member.host, member.port), limits)
            for index, member in enumerate(genesis.members)
            if index != me
        }
        self.by_key = {peer.key: peer for peer in self.peers.values()}
        self.on_message, self.on_connected = on_message, on_connected
        self.open_stream = open_stream
        self.handshakes = 0
        self.per_address: dict[str, int] = {}
        self.refused = 0
        self.listen_port: int | None = None
        self.link_filter = link_filter
        self.delayed = 0
        self.fault_dropped = 0
        self.log = log.bind(member=me)

    # ------------------------------------------------------------------------------- running

    async def run(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` and dial the members we dial, until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.listen_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.serve, listeners)
            task_status.started(self.listen_port)

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        address_of: AddressOf = _socket_address,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on ``listeners`` (closed on exit) and dial the members we dial, until cancelled.

        ``address_of`` names the remote address of an accepted stream (the per-address limit).
        """

        async def accept(stream: trio.abc.Stream) -> None:
            await self._accept(stream, address_of(stream))

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, accept, list(listeners))
            for peer in self.peers.values():
                if peer.index > self.me:
                    nursery.start_soon(self._dial_forever, peer)
            nursery.start_soon(self._log_while_alone)
            task_status.started()

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
            self.log.warning("peer_penalized", peer=peer_index, reason=reason)
        if peer.penalties >= self.limits.penalties_max and peer.scope is not None:
            self.log.warning("peer_disconnected", peer=peer_index, reason=f"{peer.penalties} violations", last=reason)
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
                peer.dead_links,
                peer.keepalives_sent,
                peer.keepalives_received,
            )
            for index, peer in self.peers.items()
        }

    async def _log_while_alone(self) -> None:
        """Every WAITING_LOG_INTERVAL_MS with no peer connected, say whom we wait for and why."""
        while True:
            await trio.sleep(WAITING_LOG_INTERVAL_MS / 1000)
            if not self.peers or self.connected():
                continue
            named = WAITING_LOGGED_PEERS_MAX
            dialled = [peer for peer in self.peers.values() if peer.index > self.me]
            dialling = {peer.name: f"{peer.host}:{peer.port}, {peer.dial_attempts} attempts, last: {peer.dial_error or 'connected, then closed'}" for peer in dialled[:named]}
            awaiting = [peer.name for peer in self.peers.values() if peer.index < self.me]
            self.log.info(
                "waiting_for_peers",
                listening=self.listen_port,
                dialling=dialling,
                dialling_others=max(0, len(dialled) - named),
                awaiting_dial_from=awaiting[:named],
                awaiting_others=max(0, len(awaiting) - named),
            )

    # ------------------------------------------------------------------------------- dialing

    async def _handshake(self, stream: trio.abc.Stream, dialed: bytes | None) -> SecureChannel:
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
        while True:
            started = trio.current_time()
            peer.dial_attempts += 1
            try:
                with trio.fail_after(self.limits.connect_timeout_ms / 1000):
                    stream = await self.open_stream(peer.host, peer.port)
                channel = await self._handshake(stream, peer.key)
            except (OSError, trio.TooSlowError, HandshakeError) as error:
                peer.dial_error = str(error) or type(error).__name__
                self.log.debug("dial_failed", peer=peer.index, error=peer.dial_error)
            else:
                peer.dial_error = None
                dropped = await self._serve(peer, channel)
                if dropped:
                    await trio.sleep(self.limits.reconnect_pause_ms / 1000)
                elif trio.current_time() - started >= self.limits.connection_stable_ms / 1000:
                    peer.backoff.reset()
                    continue  # a connection that held: redial at once (the peer restarted, or the link died)
            await trio.sleep(peer.backoff.next_s())

    # ------------------------------------------------------------------------------- accepting

    async def _accept(self, stream: trio.abc.Stream, address: str | None) -> None:
        if address is None:
            await trio.aclose_forcefully(stream)
            return
        if self.handshakes >= self.limits.handshakes_max or self.per_address.get(address, 0) >= self.limits.handshakes_per_address_max:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... refusal
                self.log.warning("connection_refused", address=address, handshakes=self.handshakes, refused=self.refused)
            await trio.aclose_forcefully(stream)
            return
        self.handshakes += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        try:
            channel = await self._handshake(stream, None)
        except HandshakeError as error:
            self.log.info("handshake_refused", address=address, error=str(error))
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
        self.log.info("peer_connected", peer=peer.index, connections=peer.connections)
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
        self.log.info("peer_gone", peer=peer.index, reason="dropped for violations" if dropped else reason)
        return dropped

    async def _writer(self, peer: _Peer, channel: SecureChannel) -> None:
        try:
            while True:
                while not peer.queue:
                    peer.wakeup = trio.Event()
                    with trio.move_on_after(KEEPALIVE_INTERVAL_MS / 1000) as idle:
                        await peer.wakeup.wait()
                    if idle.cancelled_caught and not peer.queue:
                        await channel.send_keepalive()
                        peer.keepalives_sent += 1
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

    async def _receive_live(self, channel: SecureChannel) -> bytes | None:
        """The next message (or None: a keepalive), or `_LinkDead` once LINK_DEAD_AFTER_MS pass
        with no frame at all; a frame of a message still arriving counts as life."""
        frames = channel.statistics().frames_received
        heard = trio.current_time()
        while True:
            with trio.move_on_at(heard + LINK_DEAD_AFTER_MS / 1000):
                return await channel.receive_or_keepalive()  # resumable: a cancelled receive loses nothing
            seen = channel.statistics().frames_received
            if seen == frames:
                raise _LinkDead(f"nothing received for {LINK_DEAD_AFTER_MS} ms")
            frames, heard = seen, trio.current_time()

    async def _reader(self, peer: _Peer, channel: SecureChannel, nursery: trio.Nursery) -> str:  # noqa: PLR0912 (one branch per way a frame or a connection ends)
        limits = self.limits
        while True:
            try:
                data = await self._receive_live(channel)
            except _LinkDead as error:
                peer.dead_links += 1
                return f"link dead: {error}"
            except ChannelClosed:
                return "peer closed the connection"
            except RemoteProtocolError as error:
                self.penalize(peer.index, f"channel: {error}")
                return f"channel error: {error}"
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                return f"connection lost: {error}"
            if data is None:
                peer.keepalives_received += 1
            else:
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
            if data is None:
                continue
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

