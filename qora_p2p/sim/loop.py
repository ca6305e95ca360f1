"""Deterministic simulator: N unmodified node cores, simulated links, faults and Byzantine members,
replayable from a seed.

Theory of operation
-------------------
A discrete-event loop with virtual time (milliseconds). Every source of nondeterminism is derived
from the seed: keys, link delays, drops, duplicates, fault schedules, synthetic updates, Byzantine
choices. Events are ordered by (time, order pushed), so a run is a pure function of its
`SimConfig`, and the **trace hash** (SHA-256 over every processed event) proves it: same seed, same
hash.

Each member is a `NodeCore` (the same class the TCP node drives) plus a simulated driver that
executes its effects: messages are encoded to bytes, carried over a link (delay, drop, duplicate;
reordering falls out of random delays), and decoded at the receiver, so codecs and size limits are
exercised as on the network; `SignedSlot`, `Commit` and `Installed` go to the member's durable
store, the node's own `Store` on an in-memory SQLite database, which survives a simulated crash (a
restarted member's core is built from `Store.restore`, as the Trio node's is); `Compute` runs
`compute_round` (results are shared between members through a cache keyed by the inputs, which
changes nothing but time: `qora_p2p.sim.rounds`); `Train` produces a synthetic update (a
persistent direction, a per-round drift and member noise, in fixed point).

Byzantine members run an honest core whose effects pass through a strategy (`STRATEGIES`):
equivocating updates, proposals and votes; invalid proposals; withheld votes; silence; junk bytes;
replays of old rounds; and the poisoned updates of `qora_p2p.learning.attacks`. Or an adversary
drives them (`qora_p2p.sim.adversary`): code that sees every honest message as it is sent and sends
any bytes at any time. Runs without one draw no extra randomness and process no extra events.

The checkers (`qora_p2p.sim.checkers`, which lists them) run at every commit, install and
signature; an exception that escapes a core is recorded as a violation (member, time, traceback),
never the end of the process; once a simulated second, without an event of its own, the loop asks
whether an honest member went too long without progress since the last fault; at the end, every
stored chain is verified and every honest member must have committed every round.
"""

from __future__ import annotations

import hashlib
import random
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from qora_p2p.errors import MessageError, QoraError
from qora_p2p.fixedpoint import encode as encode_fixed
from qora_p2p.fixedpoint import to_bytes
from qora_p2p.identity import CachingVerifier, Identity
from qora_p2p.learning.synthetic import synthetic_update
from qora_p2p.node.store import DoubleSignError
from qora_p2p.protocol.behaviour import PROTOCOL_BEHAVIOURS, Misbehaviour
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import (
    Broadcast,
    Commit,
    Compute,
    Event,
    Installed,
    Penalize,
    Raw,
    Send,
    SignedSlot,
    Train,
    execute,
)
from qora_p2p.protocol.genesis import MEMBERS_MAX, Member
from qora_p2p.protocol.messages import (
    Limits,
    Message,
    decode,
)
from qora_p2p.protocol.state import (
    AgreedState,
    genesis_state,
)
from qora_p2p.sim.adversaries import ADVERSARIES
from qora_p2p.sim.adversary import Adversary, Observed, World
from qora_p2p.sim.checkers import Checkers
from qora_p2p.sim.config import STRATEGIES, RoundStats, SimConfig, SimResult
from qora_p2p.sim.events import EventQueue, Trace
from qora_p2p.sim.faults import ALL_FAULT_PROFILES, FAULT_PROFILES, Fault, Links
from qora_p2p.sim.rounds import RoundCache
from qora_p2p.sim.storage import MeasuredStore

__all__ = ["FAULT_PROFILES", "STRATEGIES", "Fault", "Links", "RoundStats", "SimConfig", "SimResult", "Simulation", "run_simulation"]

DECODE_CACHE_MAX = 200_000  # decoded messages shared between receivers (bytes -> message)
CACHE_BYTES_MAX = 256 << 20  # and in bytes, for each of the two message caches (floods are full size)
VERIFY_CACHE_MAX = 1_000_000  # signature verdicts shared between members
TRAIN_MS = (40, 160)  # simulated local training time, uniform
COMPUTE_MS = 5  # simulated aggregation time
SIM_TIME_PER_ROUND_MS = 120_000  # a run that has not committed by rounds * this has lost liveness
STALL_CHECK_MS = 1_000  # how often the loop asks whether an honest member stalled past the bound


class _Node:
    """One simulated member: its core, its durable store (the real one, in memory) and its role."""

    def __init__(self, index: int, identity: Identity, store: MeasuredStore, strategy: str | None, misbehaviour: Misbehaviour | None) -> None:
        self.index, self.identity, self.store, self.strategy = index, identity, store, strategy
        self.misbehaviour = misbehaviour
        self.adversary: Adversary | None = None
        self.world: World | None = None  # the adversary's, when it has one
        self.driven = True  # the simulator drives its core (not: an adversary without one)
        self.core: NodeCore  # set by the simulation right after
        self.state: AgreedState  # the last committed state, as the checkers see it
        self.alive = True
        self.timer_at: int | None = None
        self.effects: _Effects  # set by the simulation right after


class _Effects:
    """One simulated member's driver: executes its core's effects (see `qora_p2p.protocol.effects`)."""

    def __init__(self, simulation: Simulation, node: _Node) -> None:
        self.simulation, self.node = simulation, node

    def raw(self, effect: Raw) -> None:
        self.simulation.messages["junk"] += 1
        self.simulation._transmit(self.node.index, effect.peer, effect.data)

    def send(self, effect: Send) -> None:
        simulation = self.simulation
        data = simulation._encode(effect.message)
        simulation.messages[type(effect.message).__name__] += 1
        simulation._transmit(self.node.index, effect.peer, data)
        self._sent(data)
        if simulation.observers:
            simulation._observe(self.node.index, (effect.peer,), effect.message, data)

    def broadcast(self, effect: Broadcast) -> None:
        simulation = self.simulation
        data = simulation._encode(effect.message)
        simulation.messages[type(effect.message).__name__] += simulation.config.nodes - 1
        simulation._transmit_all(self.node.index, simulation.hearing, data)
        self._sent(data)
        if simulation.observers:
            index = self.node.index
            simulation._observe(index, tuple(peer for peer in range(simulation.config.nodes) if peer != index), effect.message, data)

    def _sent(self, data: bytes) -> None:
        if self.node.misbehaviour is not None:
            self.node.misbehaviour.sent(data)

    def signed_slot(self, effect: SignedSlot) -> None:
        node = self.node
        refused = None
        try:
            node.store.sign(effect.slot, effect.content, effect.payload)
        except DoubleSignError as error:
            refused = str(error)
        self.simulation.checkers.signed(node.index, effect.slot, effect.content, refused)
        self.simulation._check_storage(node)

    def train(self, effect: Train) -> None:
        simulation = self.simulation
        low, high = TRAIN_MS
        simulation._push(simulation.now + simulation.rng.randint(low, high), "trained", (self.node.index, effect.round))

    def compute(self, effect: Compute) -> None:
        simulation = self.simulation
        simulation._push(simulation.now + COMPUTE_MS, "computed", (self.node.index, effect.request, simulation.round_cache.result(effect)))

    def commit(self, effect: Commit) -> None:
        self.simulation._committed(self.node, effect.record, effect.state, effect.result.banned + effect.result.proven)

    def installed(self, effect: Installed) -> None:
        node, simulation = self.node, self.simulation
        index = node.index
        node.store.install(list(effect.records), effect.state)
        if index not in simulation.byzantine and effect.state.round >= simulation.config.rounds > node.state.round:
            simulation.finished += 1
        waiting = node.state.round < simulation.config.rounds
        node.state = effect.state
        for record in effect.records:
            simulation.checkers.certificate(index, record)
            simulation.checkers.agreement(index, record.value.round, record.value.id(simulation.genesis.hash), None)
        simulation.checkers.honest_bans(index, effect.state)
        if waiting:
            simulation.checkers.progress(index, simulation.now)
        simulation._check_storage(node)

    def event(self, effect: Event) -> None:
        simulation = self.simulation
        simulation.events[effect.kind] += 1
        simulation.trace.add(f"e/{simulation.now}/{self.node.index}/{effect.kind}")
        if effect.kind == "round_started" and self.node.index not in simulation.byzantine:
            simulation.round_started.setdefault(effect.fields["round"], simulation.now)

    def penalize(self, effect: Penalize) -> None:
        self.simulation.penalties += 1


class Simulation:
    """A configured run; `run` executes it and returns a `SimResult`."""

    def __init__(self, config: SimConfig, on_round: Callable[[int, RoundStats], None] | None = None, adversaries: Mapping[int, Adversary] | None = None) -> None:
        """``adversaries`` drive Byzantine members by object (over `SimConfig.adversary`); such a
        run replays only with the same objects."""
        if not 1 <= config.nodes <= MEMBERS_MAX or not 0 <= config.byzantine < config.nodes:
            raise QoraError(f"need 1..{MEMBERS_MAX} nodes and 0..nodes-1 Byzantine, got {config.nodes}, {config.byzantine}")
        if config.faults not in ALL_FAULT_PROFILES:
            raise QoraError(f"unknown fault profile {config.faults!r}; known: {', '.join(ALL_FAULT_PROFILES)}")
        if config.strategy != "mixed" and config.strategy not in STRATEGIES:
            raise QoraError(f"unknown strategy {config.strategy!r}; known: mixed, {', '.join(STRATEGIES)}")
        if config.adversary not in ("", "mixed", *ADVERSARIES):
            raise QoraError(f"unknown adversary {config.adversary!r}; known: mixed, {', '.join(ADVERSARIES)}")
        if adversaries and not set(adversaries) <= set(config.byzantine_members):
            raise QoraError(f"adversaries drive Byzantine members only ({list(config.byzantine_members)}), not {sorted(adversaries)}")
        self.config = config
        self.on_round = on_round
        self.rng = random.Random(f"{config.seed}/network")
        self.identities = [Identity.from_seed(hashlib.sha256(f"qora-sim/{config.seed}/{i}".encode()).digest()) for i in range(config.nodes)]
        members = tuple(Member(f"sim-{i}", identity.public_key, "127.0.0.1", 10_000 + i) for i, identity in enumerate(self.identities))
        self.genesis = config.build_genesis(members)
        self.limits = Limits(config.nodes, config.dimension)
        self.byzantine = set(config.byzantine_members)
        self.links, self.faults = ALL_FAULT_PROFILES[config.faults](config, random.Random(f"{config.seed}/faults"))
        if config.schedule is not None:
            self.faults = sorted(config.schedule, key=lambda fault: fault.at_ms)
        self.partition: set[int] = set()
        self.queue = EventQueue()
        self.now = 0
        self.trace = Trace(f"qora-sim/{config}")
        self.decode_cache: dict[bytes, Message] = {}
        self.cache_bytes = {"decode": 0, "encode": 0}  # what each message cache holds, about (data and payload)
        self._verify = CachingVerifier(VERIFY_CACHE_MAX)
        self.round_cache = RoundCache(self.genesis)
        self.encode_cache: dict[int, tuple[Message, bytes]] = {}
        self.checkers = Checkers(self.genesis, self.byzantine, self._verify)
        self.checkers.stable_ms = max((fault.at_ms for fault in self.faults), default=0)
        self.violations = self.checkers.violations  # the run stops at the first one
        self.round_started: dict[int, int] = {}  # round -> when the first honest member started it
        self.round_stats: dict[int, RoundStats] = {}
        self.messages: Counter[str] = Counter()
        self.bytes_received: dict[int, int] = dict.fromkeys(range(config.nodes), 0)
        self.bytes_by_kind: Counter[str] = Counter()  # bytes received by honest members, per type
        self.bans: dict[int, list[int]] = {}
        self.penalties = 0
        self.events: Counter[str] = Counter()
        self.finished = 0  # honest members that committed every round
        self.commit_times: dict[int, list[tuple[int, int]]] = {}
        self.proven_at: dict[int, dict[int, int]] = {}
        state = genesis_state(self.genesis)
        self.nodes = []
        coalition: dict[Any, Any] = {}
        for index, identity in enumerate(self.identities):
            adversary = self._adversary(index, adversaries or {})
            strategy = config.strategy_of(index) if index in self.byzantine and adversary is None else None
            misbehaviour = None
            if strategy in PROTOCOL_BEHAVIOURS:
                misbehaviour = Misbehaviour(strategy, identity, self.genesis.hash, index, config.nodes, self.rng)
            node = _Node(index, identity, MeasuredStore.in_memory(self.genesis, identity.public_key), strategy, misbehaviour)
            node.state = state
            node.core = self._core(node, 0)
            node.effects = _Effects(self, node)
            if adversary is not None:
                rng = random.Random(f"{config.seed}/adversary/{index}")
                node.adversary, node.driven = adversary, adversary.runs_core
                node.world = World(self, index, self.identities, self.genesis, self.limits, config.byzantine_members, rng, coalition)
            self.nodes.append(node)
        self.observers = [node for node in self.nodes if node.adversary is not None and node.adversary.observes]
        # Members messages are carried to: all but adversaries without a core that ignore them.
        self.deaf = {node.index for node in self.nodes if node.adversary is not None and not node.driven and not getattr(node.adversary, "hears", True)}
        self.hearing = tuple(index for index in range(config.nodes) if index not in self.deaf)

    def _adversary(self, index: int, given: Mapping[int, Adversary]) -> Adversary | None:
        if index not in self.byzantine or index in given:
            return given.get(index)
        name = self.config.adversary_of(index)
        return ADVERSARIES[name]() if name else None

    # ------------------------------------------------------------------------ plumbing

    def _core(self, node: _Node, now: int) -> NodeCore:
        """A core started from the member's store, as the Trio node starts one after a crash."""
        return node.store.restore().core(self.genesis, node.identity, now, self._verify)

    def _push(self, at: int, kind: str, payload: Any) -> None:
        self.queue.push(at, kind, payload)

    def _encode(self, message: Message) -> bytes:
        cached = self.encode_cache.get(id(message))
        if cached is not None and cached[0] is message:
            return cached[1]
        data = message.encode()
        if len(self.encode_cache) > DECODE_CACHE_MAX or self.cache_bytes["encode"] > CACHE_BYTES_MAX:
            self.encode_cache.clear()
            self.cache_bytes["encode"] = 0
        self.encode_cache[id(message)] = (message, data)
        self.cache_bytes["encode"] += 3 * len(data)
        return data

    def _transmit(self, sender: int, receiver: int, data: bytes) -> None:
        if receiver not in self.deaf:
            self._transmit_all(sender, (receiver,), data)

    def _transmit_all(self, sender: int, receivers: Iterable[int], data: bytes) -> None:
        """``data`` from ``sender`` to each of ``receivers`` in order, through the links: every
        random draw of `_transmit` one receiver after another, in one loop (a broadcast is most of
        a run's transmissions)."""
        links, partition, random_draw, push = self.links, self.partition, self.rng.random, self.queue.push
        drop, duplicate = links.drop, links.duplicate
        low, high = links.delay_ms
        span = high - low + 1
        start = self.now + low
        inside = sender in partition
        for receiver in receivers:
            if receiver == sender or (partition and inside != (receiver in partition)):
                continue
            if drop and random_draw() < drop:
                continue
            twice = duplicate and random_draw() < duplicate  # drawn before the delays
            push(start + int(random_draw() * span), "deliver", (sender, receiver, data))
            if twice:
                push(start + int(random_draw() * span), "deliver", (sender, receiver, data))

    # ------------------------------------------------------------------------ effects

    def _run_effects(self, node: _Node) -> None:
        if not node.driven:
            return
        misbehaviour, adversary = node.misbehaviour, node.adversary
        for effect in node.core.drain():
            if adversary is not None:
                for chosen in self._call_adversary(node, adversary.outgoing, effect) or ():
                    execute(chosen, node.effects)
                continue
            for transformed in [effect] if misbehaviour is None else misbehaviour.apply(effect):
                execute(transformed, node.effects)
        deadline = node.core.next_deadline()
        if node.timer_at != deadline:
            node.timer_at = deadline
            self._push(deadline, "timer", (node.index, deadline))

    # ------------------------------------------------------------------------ adversaries

    def _call_adversary(self, node: _Node, call: Callable[..., Any], *arguments: Any) -> Any:
        """An adversary's method, with its world; its exception is a violation, not a crash."""
        try:
            return call(*arguments, node.world)
        except Exception:
            self.checkers.exception(node.index, self.now, f"{type(node.adversary).__name__}.{call.__name__}", traceback.format_exc(), adversary=True)
            return None

    def _observe(self, sender: int, receivers: tuple[int, ...], message: Message, data: bytes) -> None:
        if sender in self.byzantine:
            return
        seen = Observed(sender, receivers, message, data, self.now)
        for node in self.observers:
            if node.alive and node.adversary is not None:
                self._call_adversary(node, node.adversary.observe, seen)

    def adversary_send(self, member: int, receiver: int, data: bytes, delay_ms: int) -> None:
        self.messages["adversary"] += 1
        if delay_ms:
            self._push(self.now + delay_ms, "xmit", (member, receiver, data))
        else:
            self._transmit(member, receiver, data)

    def adversary_wake(self, member: int, at_ms: int, tag: str) -> None:
        self._push(at_ms, "wake", (member, tag))

    def adversary_core(self, member: int) -> NodeCore | None:
        node = self.nodes[member]
        return node.core if node.driven and node.adversary is not None else None

    def _check_storage(self, node: _Node) -> None:
        """An honest member's store against `qora_p2p.sim.storage`'s bound."""
        if node.index in self.byzantine:
            return
        rounds = node.state.round
        started = self.round_started.get(rounds + 1, self.now)
        views = 2 + (self.now - started) // self.genesis.timing.precommit_timeout_ms
        self.checkers.storage(node.index, node.store.stored_bytes(), rounds, views)

    # ------------------------------------------------------------------------ synthetic workload

    def _payload(self, member: int, round_number: int, strategy: str | None) -> bytes:
        vector = synthetic_update(self.config.seed, round_number, member, self.config.dimension)
        if strategy == "sign_flip":
            vector = -vector
        elif strategy == "scaling":
            vector = 10.0 * vector
        return to_bytes(encode_fixed(vector, self.genesis.frac_bits).values)

    # ------------------------------------------------------------------------ checkers

    def _committed(self, node: _Node, record: Any, state: AgreedState, banned: tuple[int, ...]) -> None:
        index = node.index
        value = record.value
        previous = node.state
        node.store.commit(record, state)
        node.state = state
        if index in self.byzantine:
            return
        self.checkers.committed(index, previous, record, state)
        if previous.round < self.config.rounds:  # a member that finished may wait for the others
            self.checkers.progress(index, self.now)
        self._check_storage(node)
        round_hash = value.id(self.genesis.hash)
        self.commit_times.setdefault(index, []).append((value.round, self.now))
        if state.ledger is not None:
            proven = self.proven_at.setdefault(index, {})
            for member, standing in enumerate(state.ledger.standings):
                if standing.proven and member not in proven:
                    proven[member] = value.round
        stats = self.round_stats.setdefault(value.round, RoundStats())
        if stats.committed_by == 0:
            stats.hash, stats.first_commit_ms = round_hash.hex()[:16], self.now
            self.bans[value.round] = list(banned)
        stats.committed_by += 1
        if value.round == self.config.rounds:
            self.finished += 1
        stats.views.append(record.view)
        stats.last_commit_ms = self.now
        honest_alive = sum(1 for other in self.nodes if other.index not in self.byzantine)
        if stats.committed_by == honest_alive and self.on_round is not None:
            self.on_round(value.round, stats)

    # ------------------------------------------------------------------------ the loop

    def _handle(self, kind: str, payload: Any) -> None:  # noqa: PLR0912 (one branch per event kind)
        if kind == "fault":
            self._fault(payload)
            return
        if kind == "xmit":
            if self.nodes[payload[0]].alive:
                self._transmit(*payload)
            return
        index = payload[1] if kind == "deliver" else payload[0]
        node = self.nodes[index]
        if not node.alive:
            return
        if kind == "timer":
            if payload[1] != node.timer_at:
                return
            node.timer_at = None
            node.core.handle_timer(self.now)
            if node.core.next_deadline() <= self.now:
                self.violations.append(f"core bug: member {index} has a deadline in the past after handle_timer at {self.now} ms")
        elif kind == "deliver":
            sender, _, data = payload
            self.bytes_received[index] += len(data)
            message = self.decode_cache.get(data)
            if message is None:
                try:
                    message = decode(data, self.limits)
                except MessageError:
                    self.penalties += 1
                    if node.adversary is not None:
                        self._call_adversary(node, node.adversary.delivered, sender, data, None)
                    return
                if len(self.decode_cache) >= DECODE_CACHE_MAX or self.cache_bytes["decode"] > CACHE_BYTES_MAX:
                    self.decode_cache.clear()
                    self.cache_bytes["decode"] = 0
                self.decode_cache[data] = message
                self.cache_bytes["decode"] += 3 * len(data)  # the bytes, the decoded copy, and what records and values keep packed
            if index not in self.byzantine:
                self.bytes_by_kind[type(message).__name__] += len(data)
            if node.adversary is not None:
                self._call_adversary(node, node.adversary.delivered, sender, data, message)
                if not node.driven:
                    return
            node.core.receive(sender, message, self.now)
        elif kind == "trained":
            _, round_number = payload
            node.core.submit_update(round_number, self._payload(index, round_number, node.strategy), self.now)
        elif kind == "computed":
            _, request, result = payload
            if isinstance(result, QoraError):
                node.core.compute_failed(request, str(result), self.now)
            else:
                node.core.computed(request, result, self.now)
        elif kind == "wake" and node.adversary is not None:
            self._call_adversary(node, node.adversary.wake, payload[1])
        self._run_effects(node)

    def _fault(self, fault: Fault) -> None:
        self.trace.add(f"f/{self.now}/{fault.kind}/{fault.members}")
        if fault.kind == "crash":
            for member in fault.members:
                self.nodes[member].alive = False
                self.nodes[member].timer_at = None
        elif fault.kind == "restart":
            for member in fault.members:
                node = self.nodes[member]
                node.alive = True
                if not node.driven:
                    continue
                node.core = self._core(node, self.now)
                self._run_effects(node)
                for peer in range(self.config.nodes):
                    self._transmit(member, peer, self._encode(node.core.hello()))
        elif fault.kind == "partition":
            self.partition = set(fault.members)
        elif fault.kind == "heal":
            self.partition = set()
            for node in self.nodes:
                if node.alive and node.driven:
                    for peer in range(self.config.nodes):
                        self._transmit(node.index, peer, self._encode(node.core.hello()))
        elif fault.kind == "calm":
            self.links = replace(self.links, drop=0.0, duplicate=0.0)

    def _done(self) -> bool:
        return self.finished >= self.config.nodes - len(self.byzantine)

    def run(self) -> SimResult:
        import time  # noqa: PLC0415 (wall time is reported, never used by the simulation)

        started = time.perf_counter()
        for fault in self.faults:
            self._push(fault.at_ms, "fault", fault)
        for node in self.nodes:
            self._run_effects(node)
        for node in self.nodes:
            if node.adversary is not None:
                self._call_adversary(node, node.adversary.start)
        limit = (self.config.rounds + 2) * SIM_TIME_PER_ROUND_MS
        stall_check = STALL_CHECK_MS
        trace = self.trace.add
        while self.queue and not self._done() and not self.violations:
            at, kind, payload = self.queue.pop()
            if at > limit:
                break
            if at >= stall_check:  # no event of its own: runs that never stall are unchanged
                stall_check = at + STALL_CHECK_MS
                waiting = [node.index for node in self.nodes if node.index not in self.byzantine and node.state.round < self.config.rounds]
                self.checkers.stalled(at, waiting)
            self.now = at
            if kind == "deliver":
                # CRC-32 identifies the bytes well enough for a trace and costs far less than SHA-256.
                trace(f"d/{at}/{payload[0]}/{payload[1]}/{zlib.crc32(payload[2])}")
            else:
                trace(f"{kind[0]}/{at}/{payload[0] if kind != 'fault' else ''}")
            try:
                self._handle(kind, payload)
            except Exception:
                member = None if kind == "fault" else payload[1] if kind == "deliver" else payload[0]
                self.checkers.exception(member, at, kind, traceback.format_exc())
        for node in self.nodes:
            self._check_stored(node)
            node.store.close()
        committed = {node.index: node.state.round for node in self.nodes}
        self.checkers.liveness(committed, self.config.rounds)
        return SimResult(
            self.config,
            committed,
            self.round_stats,
            self.violations,
            self.trace.hexdigest(),
            self.now,
            time.perf_counter() - started,
            self.messages,
            self.bytes_received,
            self.bytes_by_kind,
            self.bans,
            self.penalties,
            self.events,
            self.commit_times,
            self.proven_at,
        )

    def _check_stored(self, node: _Node) -> None:
        """At the end: an honest member's whole store, its chain and its size."""
        if node.index in self.byzantine:
            return
        try:
            self.checkers.stored(node.index, list(node.store.records()))
        except QoraError as error:
            self.violations.append(f"stored chain: member {node.index}'s store is unreadable: {error}")
        self._check_storage(node)


def run_simulation(config: SimConfig, on_round: Callable[[int, RoundStats], None] | None = None, adversaries: Mapping[int, Adversary] | None = None) -> SimResult:
    """Build and run one simulation."""
    return Simulation(config, on_round, adversaries).run()
