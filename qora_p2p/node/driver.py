"""The Trio node: the sans-IO core driven by real sockets, a real clock and a real disk.

Theory of operation
-------------------
One task owns the `NodeCore`. It waits for the next event (a message from the transport, a
trained update, a computed round) or for the core's next deadline, feeds it to the core, and
executes the effects in order:

* `SignedSlot`: written to SQLite (synchronous) *before* any later effect, so the signed message
  never leaves the process before the guard is on disk;
* `Commit` / `Installed`: the record and the new state in one transaction, then one log line;
* `Send` / `Broadcast`: encoded once, queued on the transport (never blocks);
* `Train` / `Compute`: started as tasks that run the CPU work in a worker thread
  (``trio.to_thread``) and post the result back as an event; the core never waits on them.

Every queue is bounded: the inbox (the transport awaits when it is full, pushing back on peers),
per-peer send queues (drop oldest), and the core's own buffers. A Byzantine test member runs the
same node with a `Misbehaviour` filter on its effects and a poisoned `Workload`.

Shutdown: cancelling `run` (SIGINT/SIGTERM in the CLI) stops the loop between effects; a store
write in progress finishes first (worker threads are not abandoned), then connections close.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import trio

from qora_p2p.protocol.behaviour import Misbehaviour, Raw
from qora_p2p.protocol.core import (
    Broadcast,
    Commit,
    Compute,
    Event,
    Installed,
    NodeCore,
    Penalize,
    Send,
    SignedSlot,
    Train,
)
from qora_p2p.errors import ConfigError
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.identity import Identity
from qora_p2p.protocol.ledger import ONE
from qora_p2p.protocol.messages import Message, Record, SyncResponse
from qora_p2p.protocol.state import RoundResult, compute_round
from qora_p2p.node.store import Store
from qora_p2p.node.transport import LinkFaults, Transport, TransportLimits
from qora_p2p.node.workload import Workload

__all__ = ["Node", "NodeSettings", "RoundSummary"]

log = structlog.get_logger("qora.node")

INBOX_EVENTS_MAX = 1_024  # decoded messages and results waiting for the core
FAULT_POLL_S = 0.1  # how often a test node looks at its fault file
FAULT_FILE_BYTES_MAX = 64 << 10
LOGGED_EVENTS = frozenset({"resumed", "equivocation", "invalid_value", "cannot_repropose", "refused_double_sign"})
REPUTATIONS_LOGGED_MAX = 64  # members whose reputations go into the round line (larger networks: none)


@dataclass(frozen=True)
class NodeSettings:
    """Local settings of one node (not part of the genesis)."""

    data_dir: Path
    listen: tuple[str, int] | None = None  # default: our address in the genesis
    rounds: int | None = None  # stop after committing this many rounds (None: run until stopped)
    linger_s: float = 5.0  # after the last round, keep serving peers that catch up this long
    behaviour: str | None = None  # a protocol misbehaviour (test networks only)
    behaviour_seed: int = 0
    fault_file: Path | None = None  # JSON link faults to apply, re-read when it changes (test networks)
    transport: TransportLimits = field(default_factory=TransportLimits)


@dataclass(frozen=True)
class RoundSummary:
    """One committed round, as logged."""

    round: int
    hash: str
    inputs: int
    view: int
    train_ms: float
    agree_ms: float  # own update sent -> commit
    compute_ms: float  # aggregation and verification of values, summed over the round
    total_ms: float  # round start -> commit
    banned: list[int]
    accuracy: float | None


@dataclass
class _Timing:
    started: float = 0.0
    trained: float | None = None
    compute_s: float = 0.0


class Node:
    """One member. Create, then ``await run()``.

    Args:
        genesis, identity: the network and this member's key.
        workload: what this member trains (and how it attacks, on a test network).
        settings: local settings.
        on_round: called with each `RoundSummary` (tests, scenario drivers).
    """

    def __init__(
        self,
        genesis: Genesis,
        identity: Identity,
        workload: Workload,
        settings: NodeSettings,
        on_round: Callable[[RoundSummary], None] | None = None,
    ) -> None:
        me = genesis.member_index(identity.public_key)
        if me is None:
            raise ValueError("identity is not a member of the genesis")
        self.genesis, self.identity, self.me = genesis, identity, me
        self.workload, self.settings, self.on_round = workload, settings, on_round
        self.log = log.bind(node=genesis.members[me].name)
        self.misbehaviour = (
            Misbehaviour(settings.behaviour, identity, genesis.hash, me, genesis.size, random.Random(settings.behaviour_seed))
            if settings.behaviour
            else None
        )
        self.store: Store | None = None
        self.core: NodeCore | None = None
        self.transport: Transport | None = None
        self.committed = 0
        self.done = trio.Event()
        self.timing = _Timing()
        self.forge: tuple[int, np.ndarray, float] | None = None  # (round, own update, deadline) of a view attack
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[str, Any]](INBOX_EVENTS_MAX)
        self._clock_origin = 0.0
        self._nursery: trio.Nursery | None = None
        self._training = trio.Lock()

    # ------------------------------------------------------------------------------- public

    def now_ms(self) -> int:
        return int((trio.current_time() - self._clock_origin) * 1000)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, or until ``settings.rounds`` are committed and the linger is over.
        ``task_status`` gets the listening port once the node listens."""
        self._clock_origin = trio.current_time()
        self.timing = _Timing(started=self._clock_origin)
        store = await trio.to_thread.run_sync(Store, self.settings.data_dir, self.genesis, self.identity.public_key)
        self.store = store
        try:
            restored = await trio.to_thread.run_sync(store.restore)
            self.committed = restored.state.round
            self.core = NodeCore(
                self.genesis,
                self.identity,
                state=restored.state,
                now_ms=0,
                signed=restored.signed,
                own_payload=restored.own_payload,
                records=restored.records,
            )
            self.log.info(
                "node_started",
                member=self.me,
                round=restored.state.round + 1,
                resumed_slots=len(restored.signed),
                behaviour=self.settings.behaviour,
                attack=self.workload.config.attack,
            )
            self.transport = Transport(self.genesis, self.identity, self._deliver, self._connected, limits=self.settings.transport)
            member = self.genesis.members[self.me]
            host, port = self.settings.listen or (member.host, member.port)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                listening = await nursery.start(self.transport.run, host, port)
                self.log.info("listening", host=host, port=listening)
                task_status.started(listening)
                nursery.start_soon(self._finish_when_done, nursery)
                if self.settings.fault_file is not None:
                    nursery.start_soon(self._watch_faults, self.settings.fault_file)
                await self._execute()
                await self._drive()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(store.close)

    def log_status(self) -> None:
        """One ``status`` line: the core's round state and the transport's peers."""
        if self.core is None or self.transport is None:
            return
        peers = self.transport.statistics()
        self.log.info(
            "status",
            **self.core.status(),
            connected=self.transport.connected(),
            queued=sum(peer.queued_messages for peer in peers.values()),
            dropped=sum(peer.dropped for peer in peers.values()),
            penalties={index: peer.penalties for index, peer in peers.items() if peer.penalties},
        )

    # ------------------------------------------------------------------------------- events in

    async def _deliver(self, peer: int, message: Message) -> None:
        await self._inbox_send.send(("message", peer, message))

    def _connected(self, peer: int) -> None:
        assert self.core is not None and self.transport is not None
        self.transport.send(peer, self.core.hello().encode())

    async def _finish_when_done(self, nursery: trio.Nursery) -> None:
        await self.done.wait()
        await trio.sleep(self.settings.linger_s)
        self.log.info("node_finished", rounds=self.committed)
        nursery.cancel_scope.cancel()

    async def _watch_faults(self, path: Path) -> None:
        """Apply the link faults in ``path`` whenever it changes (a scenario runner writes it)."""
        seen: float | None = None
        while True:
            try:
                changed = path.stat().st_mtime_ns
            except FileNotFoundError:
                changed = None
            if changed != seen:
                seen = changed
                faults = LinkFaults()
                if changed is not None:
                    try:
                        faults = read_fault_file(path, self.genesis.size)
                    except ConfigError as error:
                        self.log.warning("fault_file_invalid", error=str(error))
                        faults = None
                if faults is not None and self.transport is not None and faults != self.transport.faults:
                    self.transport.faults = faults
                    self.log.info("link_faults", blocked=sorted(faults.blocked), delay_ms=faults.delay_ms, drop=faults.drop)
            await trio.sleep(FAULT_POLL_S)

    async def _drive(self) -> None:
        core = self.core
        assert core is not None
        while True:
            deadline_ms = core.next_deadline()
            if self.forge is not None:
                deadline_ms = min(deadline_ms, int(self.forge[2]))
            event = None
            with trio.move_on_at(self._clock_origin + deadline_ms / 1000):
                event = await self._inbox.receive()
            now = self.now_ms()
            if event is None:
                core.handle_timer(now)
            else:
                self._dispatch(event, now)
            self._maybe_forge(now)
            await self._execute()

    def _dispatch(self, event: tuple[Any, ...], now: int) -> None:
        core = self.core
        assert core is not None
        kind = event[0]
        if kind == "message":
            core.receive(event[1], event[2], now)
        elif kind == "trained":
            _, round_number, update = event
            if not self.workload.wants_view:
                self._submit(round_number, self._payload(update, round_number), now)
            else:
                self.forge = (round_number, update, now + self.workload.config.view_wait_ms)
        elif kind == "computed":
            _, request, result, seconds = event
            self.timing.compute_s += seconds
            core.computed(request, result, now)

    def _payload(self, update: np.ndarray, round_number: int) -> bytes:
        assert self.core is not None
        return self.workload.forge(update, self.core.payloads_held(round_number), self.core.state)

    def _submit(self, round_number: int, payload: bytes, now: int) -> None:
        assert self.core is not None
        if round_number == self.core.round.number:
            self.timing.trained = trio.current_time()
        self.core.submit_update(round_number, payload, now)

    def _maybe_forge(self, now: int) -> None:
        """A view attack forges once it holds enough others' updates, or at its deadline."""
        if self.forge is None or self.core is None:
            return
        round_number, update, deadline = self.forge
        if round_number != self.core.round.number:
            self.forge = None
            return
        wanted = self.genesis.size - self.genesis.faulty - 1
        if now >= deadline or len(self.core.payloads_held(round_number)) >= wanted:
            self.forge = None
            self._submit(round_number, self._payload(update, round_number), now)

    # ------------------------------------------------------------------------------- effects out

    async def _execute(self) -> None:
        core, transport, store = self.core, self.transport, self.store
        assert core is not None and transport is not None and store is not None and self._nursery is not None
        for effect in core.drain():
            if self.done.is_set() and not _serves_others(effect):
                continue  # past --rounds: no new round, only help for members catching up
            for item in [effect] if self.misbehaviour is None else self.misbehaviour.apply(effect):
                if isinstance(item, Send):
                    data = item.message.encode()
                    transport.send(item.peer, data)
                    self._sent(data)
                elif isinstance(item, Broadcast):
                    data = item.message.encode()
                    transport.broadcast(data)
                    self._sent(data)
                elif isinstance(item, Raw):
                    transport.send(item.peer, item.data)
                elif isinstance(item, SignedSlot):
                    await trio.to_thread.run_sync(store.sign, item.slot, item.content, item.payload)
                elif isinstance(item, Train):
                    self._nursery.start_soon(self._train, item)
                elif isinstance(item, Compute):
                    self._nursery.start_soon(self._compute, item)
                elif isinstance(item, Commit):
                    await trio.to_thread.run_sync(store.commit, item.record, item.state)
                    await self._committed(item)
                elif isinstance(item, Installed):
                    await trio.to_thread.run_sync(store.install, list(item.records), item.state)
                    self.committed = item.state.round
                    self.log.info("caught_up", round=item.state.round, records=len(item.records))
                    self._check_done()
                elif isinstance(item, Event):
                    if item.kind in LOGGED_EVENTS:
                        self.log.info(item.kind, **item.fields)
                elif isinstance(item, Penalize):
                    transport.penalize(item.peer, item.reason)

    def _sent(self, data: bytes) -> None:
        if self.misbehaviour is not None:
            self.misbehaviour.sent(data)

    async def _train(self, effect: Train) -> None:
        # One training at a time; a round that ended while waiting (we caught up past it) is skipped.
        async with self._training:
            if self.core is None or self.core.round.number != effect.round:
                return
            update = await trio.to_thread.run_sync(self.workload.train, effect.round, effect.model)
        await self._inbox_send.send(("trained", effect.round, update))

    async def _compute(self, effect: Compute) -> None:
        def work() -> tuple[RoundResult, float]:
            started = time.perf_counter()
            result = compute_round(self.genesis, effect.state, effect.senders, effect.payloads, effect.culprits)
            return result, time.perf_counter() - started

        result, seconds = await trio.to_thread.run_sync(work)
        await self._inbox_send.send(("computed", effect.request, result, seconds))

    async def _committed(self, commit: Commit) -> None:
        now = trio.current_time()
        timing = self.timing
        record = commit.record
        accuracy = await trio.to_thread.run_sync(self.workload.evaluate, commit.state.model)
        summary = RoundSummary(
            round=record.value.round,
            hash=record.value.id(self.genesis.hash).hex(),
            inputs=len(record.value.inputs),
            view=record.view,
            train_ms=round(((timing.trained or now) - timing.started) * 1000, 1),
            agree_ms=round((now - (timing.trained or now)) * 1000, 1),
            compute_ms=round(timing.compute_s * 1000, 1),
            total_ms=round((now - timing.started) * 1000, 1),
            banned=sorted(set(commit.result.banned) | set(commit.result.proven)),
            accuracy=None if accuracy is None else round(accuracy, 4),
        )
        self.committed = record.value.round
        self.timing = _Timing(started=now)
        ledger = commit.state.ledger
        reputations = None
        if ledger is not None and self.genesis.size <= REPUTATIONS_LOGGED_MAX:
            reputations = [round(standing.reputation / ONE, 4) for standing in ledger.standings]
        self.log.info(
            "round_committed",
            round=summary.round,
            hash=summary.hash[:16],
            inputs=summary.inputs,
            view=summary.view,
            train_ms=summary.train_ms,
            agree_ms=summary.agree_ms,
            compute_ms=summary.compute_ms,
            total_ms=summary.total_ms,
            banned=summary.banned,
            accuracy=summary.accuracy,
            reputation=reputations,
            bytes_sent=sum(peer.bytes_sent for peer in self.transport.statistics().values()) if self.transport else 0,
            bytes_received=sum(peer.bytes_received for peer in self.transport.statistics().values()) if self.transport else 0,
            cpu_s=round(time.process_time(), 3),
        )
        if self.on_round is not None:
            self.on_round(summary)
        self._check_done()

    def _check_done(self) -> None:
        if self.settings.rounds is not None and self.committed >= self.settings.rounds:
            self.done.set()


def _serves_others(effect: object) -> bool:
    """Effects a node that has finished its rounds still executes while it lingers."""
    if isinstance(effect, Send):
        return isinstance(effect.message, Record | SyncResponse)
    return isinstance(effect, Commit | Installed | Event | Penalize)


def read_fault_file(path: Path, members: int) -> LinkFaults:
    """``{"blocked": [member indices], "delay_ms": int, "drop": float}`` (every key optional).

    Raises:
        ConfigError: unreadable, not JSON, or a value out of range.
    """
    try:
        data = path.read_bytes()[: FAULT_FILE_BYTES_MAX + 1]
        document = json.loads(data) if data.strip() else {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"fault file {path}: {error}") from error
    if len(data) > FAULT_FILE_BYTES_MAX or not isinstance(document, dict):
        raise ConfigError(f"fault file {path}: expected a small JSON object")
    unknown = set(document) - {"blocked", "delay_ms", "drop"}
    if unknown:
        raise ConfigError(f"fault file {path}: unknown key {sorted(unknown)[0]!r}")
    blocked = document.get("blocked", [])
    if not isinstance(blocked, list) or not all(isinstance(item, int) and not isinstance(item, bool) and 0 <= item < members for item in blocked):
        raise ConfigError(f"fault file {path}: blocked must be a list of member indices")
    delay, drop = document.get("delay_ms", 0), document.get("drop", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int) or isinstance(drop, bool) or not isinstance(drop, int | float):
        raise ConfigError(f"fault file {path}: delay_ms must be an integer and drop a number")
    return LinkFaults(frozenset(blocked), delay, float(drop))
