"""Connections between members over TCP: dialing, accepting, liveness, bounded queues, budgets.

Theory of operation
-------------------
Every pair of members keeps one encrypted channel (`qora_p2p.node.channel`). The member with the
lower index dials, the higher one accepts: two members never race to open two connections. A
dialer retries with a short, capped backoff (`TransportLimits.backoff_initial_ms` doubling up to
``backoff_max_ms``), redials at once when a connection that held for ``connection_stable_ms``
ends, and starts the backoff over then; so a restarted member, whatever its index, is connected
again within ``backoff_max_ms`` of listening. At most one live connection per member: a new
authenticated channel from a member that dials us replaces the old one (it redials only after
it gave up on it: it restarted or found the link dead); one from a member we dial is refused.

Liveness. A link can die silently (a cable pulled, a NAT entry dropped: no FIN, no RST). A
connection that has sent nothing for `KEEPALIVE_INTERVAL_MS` sends a keepalive frame (inside the
encrypted channel, authenticated like any frame, never passed to the node), and a reader that has
waited `LINK_DEAD_AFTER_MS` with no frame arriving closes the connection; the dialer redials. Only
time spent waiting counts: a reader held up by a busy node, or paused by the byte budget, gives
the link a fresh interval when it reads again. A node with no peer connected says what it waits
for every `WAITING_LOG_INTERVAL_MS`.

Sending never blocks the protocol: `send` puts bytes on the peer's queue, bounded by a message
count and a byte total; when full the *oldest* queued message is dropped (gossip repairs losses,
and newer messages are worth more), so a slow or dead peer costs a bounded amount of memory. One
writer task per connection drains the queue.

Receiving: one reader task per connection decodes each message (bounded by the genesis-derived
`Limits`) and hands it to the node through a bounded channel: when the node is busy the reader
waits, and TCP pushes back on the peer. Budgets and penalties belong to the member (its index,
the identity the handshake proved), not to the connection, so reconnecting resets none of them
(`qora_p2p.node.peers`): every message and keepalive spends a token of the member's message
bucket (over it: dropped, and a penalty per thousand), every received byte is charged to its byte
bucket (over it: the reader pauses until the debt is paid, so a member controls how large its
messages are but not how many bytes a second we decode). Malformed messages, rate overruns,
reconnecting too often and the core's `Penalize` effects count against the member; past
``penalties_max`` within ``penalty_window_ms`` it is disconnected and neither redialled nor
accepted for a cool-down that doubles each time, up to ``cooldown_max_ms``.

Accepting is bounded too: connections are taken from the listen backlog at most
``accepts_per_second`` (after a burst of ``accepts_burst`` accepting pauses, and the kernel's
backlog holds or refuses the rest), at most ``handshakes_max`` unauthenticated handshakes run at
once (accepting pauses while they all do) and ``handshakes_per_address_max`` from one address
(more are closed at once), each within the channel's handshake timeout (against slow-loris).
Authenticated channels are bounded by the membership (one per member) and by each member's
``connections_per_minute``.
"""

from __future__ import annotations

import errno
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
from qora_p2p.node.channel import KEEPALIVE_FRAME_BYTES, ChannelLimits, SecureChannel, open_channel
from qora_p2p.node.peers import Connection, PeerState, PeerStatistics, TokenBucket, TransportLimits
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.messages import Limits, Message, decode

__all__ = [
    "KEEPALIVE_INTERVAL_MS",
    "LINK_DEAD_AFTER_MS",
    "WAITING_LOG_INTERVAL_MS",
    "AcceptStatistics",
    "LinkFilter",
    "PeerStatistics",  # defined with the per-member state (qora_p2p.node.peers), part of this API
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
assert TransportLimits().backoff_max_ms < LINK_DEAD_AFTER_MS  # Transport checks the limits it is given

DELAYED_MESSAGES_MAX = 4_096  # messages held back by a link filter's delay, all peers together
ACCEPT_RETRY_MS = 100  # out of file descriptors or buffers: wait this long before accepting again
# Errors of accept() that mean "no resources now" rather than a broken listener (as trio.serve_listeners).
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

OpenStream = Callable[[str, int], Awaitable[trio.abc.Stream]]
AddressOf = Callable[[trio.abc.Stream], str | None]

log = structlog.get_logger("qora.transport")


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
class AcceptStatistics:
    handshakes: int  # unauthenticated handshakes running now
    handshakes_peak: int
    address_peak: int  # the most unauthenticated handshakes one address ever had at once
    refused_address: int  # connections closed at once: too many handshakes from their address
    accept_pauses: int  # times accepting paused for the accept budget


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
        if limits.backoff_max_ms >= LINK_DEAD_AFTER_MS:  # a dead link is redialled within one more interval
            raise LocalProtocolError(f"TransportLimits.backoff_max_ms must be below LINK_DEAD_AFTER_MS {LINK_DEAD_AFTER_MS}")
        self.queue_bytes_max = max(limits.send_queue_bytes_min, 16 * (4 * genesis.model.dimension + 1024))
        self.bytes_per_second = max(limits.bytes_per_second_min, 4 * largest)
        self.bytes_burst = max(limits.bytes_burst_min, 8 * largest)
        self.members = frozenset(member.public_key for member in genesis.members)
        self.peers = {
            index: PeerState(index, member.name, member.public_key, (member.host, member.port), limits, TokenBucket(self.bytes_per_second, self.bytes_burst))
            for index, member in enumerate(genesis.members)
            if index != me
        }
        self.by_key = {peer.key: peer for peer in self.peers.values()}
        self.on_message, self.on_connected = on_message, on_connected
        self.open_stream = open_stream
        self.handshake_slots = trio.CapacityLimiter(limits.handshakes_max)  # one held while we accept
        self.handshakes = self.handshakes_peak = self.address_peak = 0
        self.per_address: dict[str, int] = {}
        self.refused = 0
        self.accepts = TokenBucket(limits.accepts_per_second, limits.accepts_burst)
        self.accept_pauses = 0
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
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, address_of, nursery)
                for peer in self.peers.values():
                    if peer.index > self.me:
                        nursery.start_soon(self._dial_forever, peer)
                nursery.start_soon(self._log_while_alone)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)

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
        """Count a violation against the member; past the limit, disconnect it for a cool-down."""
        peer = self.peers.get(peer_index)
        if peer is None:
            return
        now = trio.current_time()
        if peer.penalties.current(now) < 1 and not peer.penalties.cooling_down(now):
            self.log.warning("peer_penalized", peer=peer_index, reason=reason)
        if peer.penalties.add(now):
            cooldown = round(peer.penalties.cooldown_s(now), 1)
            self.log.warning("peer_cooled_down", peer=peer_index, cooldown_s=cooldown, cooldowns=peer.penalties.cooldowns, last=reason)
            self._disconnect(peer, f"{self.limits.penalties_max} violations in {self.limits.penalty_window_ms} ms")

    def connected(self) -> list[int]:
        return sorted(index for index, peer in self.peers.items() if peer.connection is not None)

    def statistics(self) -> dict[int, PeerStatistics]:
        now = trio.current_time()
        return {index: peer.statistics(now) for index, peer in self.peers.items()}

    def accept_statistics(self) -> AcceptStatistics:
        return AcceptStatistics(self.handshakes, self.handshakes_peak, self.address_peak, self.refused, self.accept_pauses)

    def _disconnect(self, peer: PeerState, reason: str) -> None:
        connection = peer.connection
        if connection is not None:
            connection.reason = connection.reason or reason
            connection.scope.cancel()

    async def _log_while_alone(self) -> None:
        """Every WAITING_LOG_INTERVAL_MS with no peer connected, say whom we wait for and why."""
        while True:
            await trio.sleep(WAITING_LOG_INTERVAL_MS / 1000)
            if not self.peers or self.connected():
                continue
            now, named = trio.current_time(), WAITING_LOGGED_PEERS_MAX
            dialled = [peer for peer in self.peers.values() if peer.index > self.me]
            dialling = {peer.name: f"{peer.host}:{peer.port}, {peer.dial_attempts} attempts, last: {peer.dial_error or 'connected, then closed'}" for peer in dialled[:named]}
            awaiting = [peer.name for peer in self.peers.values() if peer.index < self.me]
            cooling = {peer.name: round(peer.penalties.cooldown_s(now), 1) for peer in self.peers.values() if peer.penalties.cooling_down(now)}
            self.log.info(
                "waiting_for_peers",
                listening=self.listen_port,
                dialling=dialling,
                dialling_others=max(0, len(dialled) - named),
                awaiting_dial_from=awaiting[:named],
                awaiting_others=max(0, len(awaiting) - named),
                cooling_down_s=dict(list(cooling.items())[:named]),
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

    async def _dial_forever(self, peer: PeerState) -> None:
        while True:
            cooldown_s = peer.penalties.cooldown_s(trio.current_time())
            if cooldown_s:
                await trio.sleep(cooldown_s)  # we dropped it for violations: not before this ends
                continue
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
                await self._serve(peer, channel)
                if trio.current_time() - started >= self.limits.connection_stable_ms / 1000:
                    peer.backoff.reset()
                    continue  # a connection that held: redial at once (the peer restarted, or the link died)
            await trio.sleep(peer.backoff.next_s())

    # ------------------------------------------------------------------------------- accepting

    async def _accept_loop(self, listener: trio.abc.Listener[trio.abc.Stream], address_of: AddressOf, nursery: trio.Nursery) -> None:
        """Take connections from ``listener`` within the accept budget and the handshake slots."""
        while True:
            pause_s = self.accepts.wait_s(trio.current_time(), 1.0)
            if pause_s:
                self.accept_pauses += 1  # a burst used the budget up; the kernel's backlog holds the rest
                await trio.sleep(pause_s)
                continue
            slot = object()
            await self.handshake_slots.acquire_on_behalf_of(slot)  # all slots busy: accepting pauses
            try:
                stream = await listener.accept()
            except OSError as error:
                self.handshake_slots.release_on_behalf_of(slot)
                if error.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                self.log.error("accept_failed", error=str(error))
                await trio.sleep(ACCEPT_RETRY_MS / 1000)
                continue
            except BaseException:
                self.handshake_slots.release_on_behalf_of(slot)
                raise
            taken = self.accepts.take(trio.current_time())
            assert taken  # the budget held a token before we waited for the slot; it only grows
            nursery.start_soon(self._accept, stream, address_of(stream), slot)

    async def _accept(self, stream: trio.abc.Stream, address: str | None, slot: object) -> None:
        """Authenticate one inbound connection (holding a handshake slot), then serve it."""
        try:
            channel = await self._authenticate(stream, address)
        finally:
            self.handshake_slots.release_on_behalf_of(slot)
        if channel is None:
            return
        peer = self.by_key[channel.peer]
        refusal = self._refusal(peer)
        if refusal is not None:
            peer.refused += 1
            if peer.refused & (peer.refused - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... refusal
                self.log.info("member_refused", peer=peer.index, reason=refusal, refused=peer.refused)
            await trio.aclose_forcefully(channel)
            return
        self._disconnect(peer, "replaced by a new connection from the peer")
        await self._serve(peer, channel)

    async def _authenticate(self, stream: trio.abc.Stream, address: str | None) -> SecureChannel | None:
        """The responder's handshake within the per-address limit; None if refused or failed."""
        if address is None or self.per_address.get(address, 0) >= self.limits.handshakes_per_address_max:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... refusal
                self.log.warning("connection_refused", address=address, handshakes=self.per_address.get(address or "", 0), refused=self.refused)
            await trio.aclose_forcefully(stream)
            return None
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.address_peak = max(self.address_peak, self.per_address[address])
        self.handshakes += 1
        self.handshakes_peak = max(self.handshakes_peak, self.handshakes)
        try:
            return await self._handshake(stream, None)
        except HandshakeError as error:
            self.log.info("handshake_refused", address=address, error=str(error))
            return None
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

    def _refusal(self, peer: PeerState) -> str | None:
        """Why an authenticated inbound channel from ``peer`` is closed at once; None to serve it."""
        now = trio.current_time()
        if peer.index > self.me:
            return "we dial this member; it must not dial us"
        if peer.penalties.cooling_down(now):
            return f"cooling down for {peer.penalties.cooldown_s(now):.1f} s after {self.limits.penalties_max} violations"
        if not peer.arrivals.take(now):
            self.penalize(peer.index, f"reconnects more than {self.limits.connections_per_minute:g} times a minute")
            return "reconnecting too often"
        return None

    # ------------------------------------------------------------------------------- a connection

    async def _serve(self, peer: PeerState, channel: SecureChannel) -> bool:
        """Run one established connection until it ends; True if it ended in a cool-down."""
        connection = Connection(channel)
        peer.connection = connection
        peer.connections += 1
        self.log.info("peer_connected", peer=peer.index, connections=peer.connections)
        reason = "closed"
        try:
            with connection.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, peer, connection)
                    self.on_connected(peer.index)
                    reason = await self._reader(peer, channel, nursery)
                    nursery.cancel_scope.cancel()
        finally:
            if peer.connection is connection:
                peer.connection = None
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(channel)
        cooling = peer.penalties.cooling_down(trio.current_time())
        self.log.info("peer_gone", peer=peer.index, reason=connection.reason or reason, cooldown=cooling)
        return cooling

    async def _writer(self, peer: PeerState, connection: Connection) -> None:
        channel = connection.channel
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            connection.reason = connection.reason or f"send failed: {error}"
            connection.scope.cancel()

    async def _filtered_delivery(self, link_filter: LinkFilter, peer: PeerState, message: Message, nursery: trio.Nursery) -> bool:
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

    async def _reader(self, peer: PeerState, channel: SecureChannel, nursery: trio.Nursery) -> str:
        limits = self.limits
        while True:
            debt_s = peer.bytes.wait_s(trio.current_time())
            if debt_s:
                peer.throttled += 1  # over the byte budget: read nothing until it is paid
                await trio.sleep(debt_s)
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
            now = trio.current_time()
            peer.bytes.charge(now, KEEPALIVE_FRAME_BYTES if data is None else len(data))
            if data is None:
                peer.keepalives_received += 1
            else:
                peer.messages_received += 1
                peer.bytes_received += len(data)
            if not peer.messages.take(now):
                peer.rate_limited += 1
                if peer.rate_limited % 1000 == 1:
                    self.penalize(peer.index, f"over {limits.messages_per_second:g} messages per second")
            elif data is not None:
                await self._deliver(peer, data, nursery)
            if peer.penalties.cooling_down(trio.current_time()):
                return "too many violations"

    async def _deliver(self, peer: PeerState, data: bytes, nursery: trio.Nursery) -> None:
        try:
            message = decode(data, self.message_limits)
        except MessageError as error:
            self.penalize(peer.index, f"undecodable message: {error}")
            return
        if self.link_filter is not None and not await self._filtered_delivery(self.link_filter, peer, message, nursery):
            return
        await self.on_message(peer.index, message)

