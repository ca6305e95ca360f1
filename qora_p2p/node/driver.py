"""The Trio node: the sans-IO core driven by real sockets, a real clock and a real disk.

Theory of operation
-------------------
One task owns the `NodeCore`. It waits for the next event (a message from the transport, a
trained update, a computed round) or for the core's next deadline, feeds it to the core, and
executes the effects in order:

* `SignedSlot`: written to SQLite (synchronous) *before* any later effect, so the signed message
  never leaves the process before the guard is on disk. A write the store cannot make (the disk is
  full: `DiskFull`; damage: `StoreDamaged`) is logged once and ends `run` with that error, before
  any later effect: a message whose signature is not on disk never leaves;
* `Commit` / `Installed`: the record and the new state in one transaction; a committed model is
  then scored on the test set by a reporter task (off the effect loop, so scoring never delays the
  next round's training), which writes the round's one ``round_committed`` line;
* `Send` / `Broadcast`: encoded once, queued on the transport (never blocks);
* `Train` / `Compute`: started as tasks that run the CPU work in a worker thread
  (``trio.to_thread``) and post the result back as an event; the core never waits on them.

A database that has never recorded a signature (a new member, or one whose damaged database was
moved aside) starts the core abstaining (`NodeCore`, "Abstaining"): the node cannot tell a first
start from a restart that lost its guard, so it signs nothing until it is past the round its peers
were in; in a new network, where every peer says round 1, it begins at once.

Every queue is bounded: the inbox (the transport awaits when it is full, pushing back on peers),
per-peer send queues (drop oldest), the models waiting to be scored, and the core's own buffers.

A production node runs nothing but this. A test network plugs into `NodeHooks`: an effect filter
(a Byzantine `Misbehaviour`), a message observer and a forge (poisoned updates), a link filter
(injected partitions and delays) and background tasks (`qora_p2p.testnet.plugins` builds them).

Shutdown: cancelling `run` (SIGINT/SIGTERM in the CLI) stops the loop between effects; a store
write in progress finishes first (worker threads are not abandoned), then connections close.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog
import trio

from qora_p2p.errors import DiskFull, QoraError, StoreError
from qora_p2p.identity import Identity
from qora_p2p.node.store import Store
from qora_p2p.node.transport import LinkFilter, Transport, TransportLimits
from qora_p2p.node.workload import Workload
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import (
    Broadcast,
    Commit,
    Compute,
    Effect,
    Event,
    Installed,
    Penalize,
    Raw,
    Send,
    SignedSlot,
    Train,
    execute,
)
from qora_p2p.protocol.genesis import Genesis
from qora_p2p.protocol.ledger import ONE
from qora_p2p.protocol.messages import Message, Record, SyncResponse
from qora_p2p.protocol.state import AgreedState, RoundResult, compute_round

__all__ = ["EffectFilter", "Forge", "Node", "NodeHooks", "NodeSettings", "RoundSummary"]

log = structlog.get_logger("qora.node")

INBOX_EVENTS_MAX = 1_024  # decoded messages and results waiting for the core
EVALUATIONS_QUEUED_MAX = 8  # committed models waiting to be scored; past it a round's line has no accuracy
LOGGED_EVENTS = frozenset(
    {"resumed", "equivocation", "invalid_value", "build_failed", "cannot_repropose", "refused_double_sign", "abstain_started", "abstain_ended"}
)
REPUTATIONS_LOGGED_MAX = 64  # members whose reputations go into the round line (larger networks: none)


@dataclass(frozen=True)
class NodeSettings:
    """Local settings of one node (not part of the genesis)."""

    data_dir: Path
    listen: tuple[str, int] | None = None  # default: our address in the genesis
    rounds: int | None = None  # stop after committing this many rounds (None: run until stopped)
    linger_s: float = 5.0  # after the last round, keep serving peers that catch up this long
    transport: TransportLimits = field(default_factory=TransportLimits)


class EffectFilter(Protocol):
    """Rewrites the core's effects before the node executes them (`qora_p2p.protocol.behaviour`)."""

    def apply(self, effect: Effect) -> list[Effect]: ...
    def sent(self, data: bytes) -> None: ...


class Forge(Protocol):
    """Replaces this member's trained update with the payload to sign (`qora_p2p.testnet.forging`)."""

    def begin(self, round_number: int, state: AgreedState) -> None: ...
    async def forge(self, round_number: int, update: npt.NDArray[np.float64], state: AgreedState) -> bytes: ...


@dataclass(frozen=True)
class NodeHooks:
    """Where a test network plugs into a node. A production node has none of them; a Byzantine test
    member gets its misbehaviour, forgery and link faults here (`qora_p2p.testnet.plugins`).

    Attributes:
        effect_filter: rewrites every effect of the core before it is executed.
        observe: sees every message delivered to the core, before the core does.
        forge: turns a trained update into the payload to sign.
        link_filter: the transport asks it whether to send, drop or delay each message.
        tasks: run beside the node for as long as it runs (e.g. a fault-file watcher).
        names: what is plugged in, for the node's start line.
    """

    effect_filter: EffectFilter | None = None
    observe: Callable[[int, Message], None] | None = None
    forge: Forge | None = None
    link_filter: LinkFilter | None = None
    tasks: tuple[Callable[[], Awaitable[None]], ...] = ()
    names: tuple[str, ...] = ()


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
    attack_success: float | None = None  # a backdoor attacker's own measure (`Workload.attack_success`)
    bytes_sent: int = 0  # totals over all peers since the node started, at commit
    bytes_received: int = 0
    cpu_s: float = 0.0  # process CPU time at commit


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
        hooks: test-network plug-ins (`NodeHooks`); none by default.
    """

    def __init__(
        self,
        genesis: Genesis,
        identity: Identity,
        workload: Workload,
        settings: NodeSettings,
        on_round: Callable[[RoundSummary], None] | None = None,
        hooks: NodeHooks = NodeHooks(),
    ) -> None:
        me = genesis.member_index(identity.public_key)
        if me is None:
            raise ValueError("identity is not a member of the genesis")
        self.genesis, self.identity, self.me = genesis, identity, me
        self.workload, self.settings, self.on_round = workload, settings, on_round
        self.log = log.bind(node=genesis.members[me].name)
        self.hooks = hooks
        self.store: Store | None = None
        self.core: NodeCore | None = None
        self.transport: Transport | None = None
        self.committed = 0
        self.done = trio.Event()
        self.timing = _Timing()
        self.unreported = 0  # committed rounds whose round_committed line waits for their evaluation
        self._reported = trio.Event()
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[Any, ...]](INBOX_EVENTS_MAX)
        self._evaluations_send, self._evaluations = trio.open_memory_channel[tuple[RoundSummary, Commit]](EVALUATIONS_QUEUED_MAX)
        self._clock_origin = 0.0
        self._nursery: trio.Nursery | None = None
        self._training = trio.Lock()
        self._effects = _Effects(self)

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
            self.core = restored.core(self.genesis, self.identity, now_ms=0, abstain=not restored.guarded)
            self.log.info(
                "node_started",
                member=self.me,
                round=restored.state.round + 1,
                resumed_slots=len(restored.signed),
                abstaining=self.core.abstaining,
                hooks=list(self.hooks.names),
            )
            self.transport = Transport(
                self.genesis, self.identity, self._deliver, self._connected, limits=self.settings.transport, link_filter=self.hooks.link_filter
            )
            member = self.genesis.members[self.me]
            host, port = self.settings.listen or (member.host, member.port)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                listening = await nursery.start(self.transport.run, host, port)
                self.log.info("listening", host=host, port=listening)
                task_status.started(listening)
                nursery.start_soon(self._finish_when_done, nursery)
                nursery.start_soon(self._report_rounds)
                for task in self.hooks.tasks:
                    nursery.start_soon(task)
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
        if self.hooks.observe is not None:
            self.hooks.observe(peer, message)
        await self._inbox_send.send(("message", peer, message))

    def _connected(self, peer: int) -> None:
        assert self.core is not None and self.transport is not None
        self.transport.send(peer, self.core.hello().encode())

    async def _finish_when_done(self, nursery: trio.Nursery) -> None:
        await self.done.wait()
        while self.unreported:  # the last rounds' lines are still being evaluated
            await self._reported.wait()
        await trio.sleep(self.settings.linger_s)
        self.log.info("node_finished", rounds=self.committed)
        nursery.cancel_scope.cancel()

    async def _drive(self) -> None:
        core = self.core
        assert core is not None
        while True:
            deadline_ms = core.next_deadline()
            event = None
            with trio.move_on_at(self._clock_origin + deadline_ms / 1000):
                event = await self._inbox.receive()
            now = self.now_ms()
            if event is None:
                core.handle_timer(now)
            else:
                self._dispatch(event, now)
            await self._execute()

    def _dispatch(self, event: tuple[Any, ...], now: int) -> None:
        core = self.core
        assert core is not None
        kind = event[0]
        if kind == "message":
            core.receive(event[1], event[2], now)
        elif kind == "trained":
            _, round_number, payload = event
            if round_number == core.round.number:
                self.timing.trained = trio.current_time()
            core.submit_update(round_number, payload, now)
        elif kind == "computed":
            _, request, result, seconds = event
            self.timing.compute_s += seconds
            if isinstance(result, QoraError):
                self.log.warning("compute_failed", request=request, error=str(result))
                core.compute_failed(request, str(result), now)
            else:
                core.computed(request, result, now)
        else:
            raise AssertionError(f"unknown inbox event {kind!r}")  # only this class posts to the inbox

    # ------------------------------------------------------------------------------- effects out

    async def _execute(self) -> None:
        core = self.core
        assert core is not None
        for effect in core.drain():
            if self.done.is_set() and not _serves_others(effect):
                continue  # past --rounds: no new round, only help for members catching up
            effect_filter = self.hooks.effect_filter
            for item in [effect] if effect_filter is None else effect_filter.apply(effect):
                await execute(item, self._effects)

    def _sent(self, data: bytes) -> None:
        if self.hooks.effect_filter is not None:
            self.hooks.effect_filter.sent(data)

    async def _train(self, effect: Train) -> None:
        # One training at a time; a round that ended while waiting (we caught up past it) is skipped.
        core = self.core
        assert core is not None
        forge = self.hooks.forge
        async with self._training:
            if core.round.number != effect.round:
                return
            state = core.state  # what this round trains on (the Train effect came with its model)
            if forge is not None:
                forge.begin(effect.round, state)
            update = await trio.to_thread.run_sync(self.workload.train, effect.round, effect.model)
        if forge is not None:
            payload = await forge.forge(effect.round, update, state)
        else:
            payload = await trio.to_thread.run_sync(self.workload.payload, update)
        await self._inbox_send.send(("trained", effect.round, payload))

    async def _compute(self, effect: Compute) -> None:
        def work() -> tuple[RoundResult | QoraError, float]:
            started = time.perf_counter()
            result: RoundResult | QoraError
            try:
                result = compute_round(self.genesis, effect.state, effect.senders, effect.payloads, effect.culprits)
            except QoraError as error:  # inputs the transition refuses: an invalid value, never a crash
                result = error
            return result, time.perf_counter() - started

        result, seconds = await trio.to_thread.run_sync(work)
        await self._inbox_send.send(("computed", effect.request, result, seconds))

    async def _committed(self, commit: Commit) -> None:
        """Account for a committed round; its log line follows once the model is evaluated."""
        now = trio.current_time()
        timing = self.timing
        record = commit.record
        statistics = self.transport.statistics().values() if self.transport else ()
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
            accuracy=None,
            bytes_sent=sum(peer.bytes_sent for peer in statistics),
            bytes_received=sum(peer.bytes_received for peer in statistics),
            cpu_s=round(time.process_time(), 3),
        )
        self.committed = record.value.round
        self.timing = _Timing(started=now)
        try:
            self._evaluations_send.send_nowait((summary, commit))
            self.unreported += 1
        except trio.WouldBlock:
            self._report(summary, commit)  # evaluation is behind: this round's line goes out unscored
        self._check_done()

    async def _report_rounds(self) -> None:
        """Score each committed model on the test set off the effect loop (it must not delay the
        next round's training), then write the round's line, in commit order."""
        async for summary, commit in self._evaluations:
            accuracy, success = await trio.to_thread.run_sync(self._scores, commit.state.model)
            self._report(replace(summary, accuracy=accuracy, attack_success=success), commit)
            self.unreported -= 1
            self._reported.set()
            self._reported = trio.Event()

    def _scores(self, model: npt.NDArray[np.int64]) -> tuple[float | None, float | None]:
        accuracy, success = self.workload.evaluate(model), self.workload.attack_success(model)
        return (None if accuracy is None else round(accuracy, 4)), (None if success is None else round(success, 4))

    def _report(self, summary: RoundSummary, commit: Commit) -> None:
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
            attack_success=summary.attack_success,
            reputation=reputations,
            bytes_sent=summary.bytes_sent,
            bytes_received=summary.bytes_received,
            cpu_s=summary.cpu_s,
        )
        if self.on_round is not None:
            self.on_round(summary)

    def _check_done(self) -> None:
        if self.settings.rounds is not None and self.committed >= self.settings.rounds:
            self.done.set()


class _Effects:
    """The Trio node's side of every effect (see `qora_p2p.protocol.effects`): each method returns a
    coroutine, awaited in order, so a `SignedSlot` is on disk before anything after it leaves."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def send(self, effect: Send) -> None:
        data = effect.message.encode()
        self._transport().send(effect.peer, data)
        self.node._sent(data)

    async def broadcast(self, effect: Broadcast) -> None:
        data = effect.message.encode()
        self._transport().broadcast(data)
        self.node._sent(data)

    async def raw(self, effect: Raw) -> None:
        self._transport().send(effect.peer, effect.data)

    async def signed_slot(self, effect: SignedSlot) -> None:
        await self._write(self._store().sign, effect.slot, effect.content, effect.payload)

    async def train(self, effect: Train) -> None:
        self._nursery().start_soon(self.node._train, effect)

    async def compute(self, effect: Compute) -> None:
        self._nursery().start_soon(self.node._compute, effect)

    async def commit(self, effect: Commit) -> None:
        await self._write(self._store().commit, effect.record, effect.state)
        await self.node._committed(effect)

    async def installed(self, effect: Installed) -> None:
        node = self.node
        await self._write(self._store().install, list(effect.records), effect.state)
        node.committed = effect.state.round
        node.log.info("caught_up", round=effect.state.round, records=len(effect.records))
        node._check_done()

    async def event(self, effect: Event) -> None:
        if effect.kind in LOGGED_EVENTS:
            self.node.log.info(effect.kind, **effect.fields)

    async def penalize(self, effect: Penalize) -> None:
        self._transport().penalize(effect.peer, effect.reason)

    async def _write(self, write: Callable[..., None], *args: Any) -> None:
        """A store write in a worker thread. One the store cannot make stops the node: the error
        ends `run` (and the CLI exits with its code), after one line saying why."""
        try:
            await trio.to_thread.run_sync(write, *args)
        except StoreError as error:
            self.node.log.error("disk_full" if isinstance(error, DiskFull) else "store_failed", error=str(error), stopping=True)
            raise

    def _transport(self) -> Transport:
        assert self.node.transport is not None, "effects run only while the node runs"
        return self.node.transport

    def _store(self) -> Store:
        assert self.node.store is not None, "effects run only while the node runs"
        return self.node.store

    def _nursery(self) -> trio.Nursery:
        assert self.node._nursery is not None, "effects run only while the node runs"
        return self.node._nursery


def _serves_others(effect: Effect) -> bool:
    """Effects a node that has finished its rounds still executes while it lingers."""
    if isinstance(effect, Send):
        return isinstance(effect.message, Record | SyncResponse)
    return isinstance(effect, Commit | Installed | Event | Penalize)
