"""A fuzzer of the node core: unmodified `NodeCore`s of honest members on a network the fuzzer
owns, the fuzzer playing the other members, and the core's properties checked after every input.

Theory of operation
-------------------
A `Setup` names a genesis and which of its members are honest; the fuzzer holds the keys of the
rest (the Byzantine members). One `CoreFuzzer.step` is one input to one honest core, chosen with
one seeded ``random.Random`` (so a run is a prefix of every longer run of its seed) under a
`Profile` (calm, stormy or hostile):

* **deliver** an honest member's message to another (any order; ``drop`` loses one; a
  partition holds a member's messages back for a while), **connect** (a ``Hello`` on a new
  channel);
* **forge** a validly signed, arbitrary message of any type from a Byzantine member
  (`fuzz_forge.Forger`), or **answer** a request an honest core sent a Byzantine member; every forged
  message goes through ``decode(encode(...))`` first, so a core only ever sees what a channel can
  carry;
* **replay** an honest (or earlier forged) message from a Byzantine member;
* **garbage**: random or mutated frames through `messages.decode`, which may only raise
  `MessageError`; what decodes is delivered;
* **timer** at the core's deadline, before it, or late; **compute** a `Compute` effect with the
  real `compute_round` (or report a failure), in any order; **train**: `submit_update` after a
  `Train` effect, with edge fixed-point values; **restart** a member from what its driver made
  durable (`Durable`, the store's model).

Time is one clock for all members; it only moves forward, by nothing, a little, a timeout or hours.
The fuzzer never misuses the API (no message from a non-member or from the core itself, no
payload of the wrong size, no result that is not `compute_round`'s), so *any* exception out of a
core is a finding. After every input it checks (`CoreFuzzer.settle`): `drain` (which asserts the
core's invariants); every `Commit` and `Installed` record verifies with a quorum of distinct signers
and links to the member's chain; no slot is signed twice, and nothing the member signs leaves
before its `SignedSlot`; no member accuses an honest one; with at most f Byzantine members, honest
members agree on every round and never penalise each other; every table of the core is within the
bound in `table_bounds`; and `next_deadline()` is after the input's time (after a timer firing
always, after other inputs unless a timer was already overdue).

The honest members and their drivers are in `fuzz_members`, the bounds and known findings in
`fuzz_properties`, the Byzantine members in `fuzz_forge`, the codec mutations in `fuzz_frames`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from random import Random

import msgpack

from qora_p2p.errors import MessageError, QoraError, SignatureError
from qora_p2p.identity import CachingVerifier
from qora_p2p.protocol.core import NodeCore
from qora_p2p.protocol.effects import Commit, Installed, execute
from qora_p2p.protocol.messages import Fetch, Limits, Message, Record, SyncRequest, decode
from qora_p2p.protocol.state import contributing_members
from tests.protocol.fuzz_forge import NO_STEERING, ComputeCache, Forger, Knowledge, Steering, int32_vector
from tests.protocol.fuzz_frames import check_decode, mutate, mutate_structure
from tests.protocol.fuzz_members import VERIFY_CACHE_MAX, Honest, Setup
from tests.protocol.fuzz_properties import check, own_slot, table_bounds

__all__ = ["PROFILES", "CoreFuzzer", "Profile"]

INBOX_MAX = 512  # messages in flight to one member; more and the network loses the oldest
BACKLOG_HIGH = 64  # messages in flight to honest members above which delivering is preferred
TRAIL_MAX = 24  # inputs shown when a check fails


@dataclass(frozen=True)
class Profile:
    """How often each input kind is chosen; how far the clock moves between inputs ((chance, low
    ms, high ms) steps, else it stands still); the chance that a delivery takes the oldest message
    in flight (else the newest or any); and the chance that a timer waits while other work is
    pending (messages, computes, training), as on a network whose timeouts are long."""

    name: str
    weights: dict[str, float]
    ticks: tuple[tuple[float, int, int], ...]
    in_order: float
    patience: float
    partition: float  # chance per step that one honest member is cut off for a while


# A calm network makes progress round after round, so Byzantine inputs also land in late rounds and
# catch-up; a stormy one loses, reorders and restarts; a hostile one is mostly Byzantine traffic.
PROFILES = (
    Profile(
        "calm",
        {
            "deliver": 50,
            "forge": 8,
            "timer": 8,
            "computed": 16,
            "trained": 12,
            "replay": 2,
            "garbage": 1,
            "drop": 0.2,
            "connect": 0.5,
            "restart": 0.02,
        },
        ((0.25, 1, 50), (0.05, 50, 2_000), (0.002, 2_000, 40_000)),
        in_order=0.9,
        patience=0.95,
        partition=0.0005,
    ),
    Profile(
        "stormy",
        {
            "deliver": 34,
            "forge": 22,
            "timer": 12,
            "computed": 12,
            "trained": 8,
            "replay": 4,
            "garbage": 3,
            "drop": 1,
            "connect": 1,
            "restart": 0.1,
        },
        ((0.25, 1, 50), (0.15, 50, 2_000), (0.045, 2_000, 40_000), (0.005, 40_000, 10_000_000)),
        in_order=0.5,
        patience=0.3,
        partition=0.001,
    ),
    Profile(
        "hostile",
        {
            "deliver": 25,
            "forge": 40,
            "timer": 10,
            "computed": 10,
            "trained": 6,
            "replay": 8,
            "garbage": 6,
            "drop": 0.5,
            "connect": 0.5,
            "restart": 0.05,
        },
        ((0.3, 1, 50), (0.1, 50, 2_000), (0.02, 2_000, 40_000), (0.002, 40_000, 1_000_000)),
        in_order=0.7,
        patience=0.7,
        partition=0.0005,
    ),
)
PROFILE_NAMES = {profile.name: profile for profile in PROFILES}


# ---------------------------------------------------------------------------------- the fuzzer


class CoreFuzzer:
    """Honest cores of one `Setup`, driven by random inputs; see the module notes."""

    def __init__(
        self, setup: Setup, rng: Random, profile_name: str | None = None, steering: Steering = NO_STEERING
    ) -> None:
        self.setup, self.rng = setup, rng
        self.genesis = genesis = setup.genesis
        self.keys = [member.public_key for member in genesis.members]
        self.byzantine = tuple(index for index in range(genesis.size) if index not in setup.honest)
        assert self.byzantine and setup.honest, "the fuzzer plays at least one member and drives at least one core"
        self.safe = len(self.byzantine) <= genesis.faulty  # honest members must then agree
        self.limits = Limits(genesis.size, genesis.model.dimension)
        self.verifier = CachingVerifier(VERIFY_CACHE_MAX)
        self.compute = ComputeCache(genesis)
        self.knowledge = Knowledge(genesis)
        self.forger = Forger(genesis, setup.identities, self.byzantine, self.knowledge, rng, self.compute, steering)
        self.now = 0
        self.inputs = 0  # calls of a core's input methods
        self.decodes = 0  # frames through `decode`
        self.stats: Counter[str] = Counter()
        self.peaks: dict[str, int] = {"view": 0}  # the largest size of each table seen, and the highest view
        self.decided: dict[int, bytes] = {}  # round -> hash honest members hold (when safe)
        self.asks: deque[tuple[int, int, Message]] = deque(maxlen=16)  # (honest, Byzantine, request)
        self.trail: deque[tuple[str, int, object]] = deque(maxlen=TRAIL_MAX)
        self.steps = 0
        self.isolated: dict[int, int] = {}  # member -> step until which nothing is delivered to it
        self.profile = profile = (
            PROFILES[rng.randrange(len(PROFILES))] if profile_name is None else PROFILE_NAMES[profile_name]
        )
        self.actions = [(getattr(self, name), weight) for name, weight in profile.weights.items() if weight]
        self.total_weight = sum(weight for _, weight in self.actions)
        self.members: dict[int, Honest] = {}
        for index in setup.honest:
            member = self.members[index] = Honest(self, index)
            self.settle(member, None)

    def run(self, steps: int) -> None:
        for number in range(steps):
            try:
                self.step()
            except BaseException as error:
                error.add_note(self.report(number))
                raise

    def step(self) -> None:
        """One input: advance the clock, then try input kinds until one applies."""
        self.tick()
        self.steps += 1
        if len(self.members) > 1 and self.rng.random() < self.profile.partition:
            cut = self.rng.choice(sorted(self.members))  # nothing reaches it for a while: it falls behind
            self.isolated[cut] = self.steps + self.rng.randint(200, 3_000)
            self.stats["partition"] += 1
        backlog = sum(len(member.inbox) for member in self.members.values() if self.reachable(member))
        if backlog > BACKLOG_HIGH and self.rng.random() < 0.5 and self.deliver():
            return  # the network keeps up with what honest members send, so messages are not all stale
        for _ in range(8):
            if self.choose()():
                return
        self.timer(patient=False)  # nothing else applies: time passes

    def choose(self) -> Callable[[], bool]:
        point = self.rng.random() * self.total_weight
        for action, weight in self.actions:
            point -= weight
            if point < 0:
                return action
        return self.actions[-1][0]

    def report(self, number: int) -> str:
        lines = [
            f"setup {self.setup.name}, profile {self.profile.name}, step {number}, input {self.inputs}, "
            f"time {self.now} ms; last inputs:"
        ]
        for label, index, detail in self.trail:
            lines.append(f"  {label} -> member {index}: {repr(detail)[:400]}")
        return "\n".join(lines)

    def tick(self) -> None:
        roll = self.rng.random()
        for chance, low, high in self.profile.ticks:
            if roll < chance:
                self.now += self.rng.randint(low, high)
                return
            roll -= chance

    def pick(self, members: Sequence[Honest]) -> Honest:
        return members[self.rng.randrange(len(members))]

    # ------------------------------------------------------------------------------ one input

    def feed(
        self,
        member: Honest,
        label: str,
        call: Callable[[NodeCore], None],
        detail: object = None,
        fired: int | None = None,
    ) -> None:
        """Give one input to a member's core, then check everything."""
        core = member.core
        before = core.next_deadline()
        self.trail.append((label, member.index, detail))
        call(core)
        self.inputs += 1
        self.stats[label] += 1
        self.settle(member, before, fired)

    def settle(self, member: Honest, before: int | None, fired: int | None = None) -> None:
        core = member.core
        for effect in core.drain():
            execute(effect, member)
        peaks = self.peaks
        for table, size, bound in table_bounds(core):
            check(size <= bound, f"member {member.index}: {table} holds {size}, more than its bound {bound}")
            if size > peaks.get(table, -1):
                peaks[table] = size
        peaks["view"] = max(peaks["view"], core.round.agreement.consensus.view)
        check(
            core.state.round == member.durable.state.round,
            f"member {member.index}'s core moved to round {core.state.round} without persisting it",
        )
        deadline = core.next_deadline()
        if fired is not None:
            check(deadline > fired, f"member {member.index}: after a timer at {fired}, next_deadline() is {deadline}")
        elif before is None or before > self.now:
            check(
                deadline > self.now,
                f"member {member.index}: after an input at {self.now}, next_deadline() is {deadline} (was {before})",
            )

    # ------------------------------------------------------------------------------ inputs

    def reachable(self, member: Honest) -> bool:
        return self.isolated.get(member.index, 0) <= self.steps

    def busy(self, member: Honest) -> bool:
        """Whether a member has work in hand that a real network would do before a timeout."""
        return bool(member.computes or member.trains or (member.inbox and self.reachable(member)))

    def deliver(self) -> bool:
        waiting = [member for member in self.members.values() if member.inbox and self.reachable(member)]
        if not waiting:
            return False
        member = self.pick(waiting)
        roll = self.rng.random()
        index = (
            0
            if roll < self.profile.in_order
            else -1
            if roll < 0.5 + self.profile.in_order / 2
            else self.rng.randrange(len(member.inbox))
        )
        peer, message = member.inbox.pop(index)
        self.stats[f"delivered {type(message).__name__}"] += 1
        self.feed(member, "deliver", lambda core: core.receive(peer, message, self.now), message)
        return True

    def drop(self) -> bool:
        waiting = [member for member in self.members.values() if member.inbox]
        if not waiting:
            return False
        member = self.pick(waiting)
        member.inbox.pop(self.rng.randrange(len(member.inbox)))
        self.stats["dropped"] += 1
        return True

    def connect(self) -> bool:
        if len(self.members) < 2:
            return False
        source, target = self.rng.sample(sorted(self.members), 2)
        self.route(self.members[source], target, self.members[source].core.hello())
        return True

    def forge(self) -> bool:
        sender = self.rng.choice(self.byzantine)
        if self.asks and self.rng.random() < 0.35:
            index, sender, request = self.asks.popleft()
            member = self.members[index]
            made = self.answer(sender, member, request)
        else:
            member = self.pick(list(self.members.values()))
            try:
                made = self.forger.message(sender, member.core)
            except MessageError:
                made = None  # a field the constructor refuses: no codec could carry it either
        message = None if made is None else self.canonical(made)
        if message is None:
            self.stats["forged, not encodable"] += 1
            return True
        self.knowledge.forged.append(message)
        self.stats[f"forged {type(message).__name__}"] += 1
        self.feed(member, "forge", lambda core: core.receive(sender, message, self.now), message)
        return True

    def answer(self, sender: int, member: Honest, request: Message) -> Message | None:
        """What a Byzantine member answers a request an honest core sent it."""
        try:
            if isinstance(request, SyncRequest):
                return self.forger.message(sender, member.core, "sync_response")
            assert isinstance(request, Fetch)
            for wanted_sender, digest in request.wanted:
                held = self.knowledge.updates.get((request.round, member.core.state.last_hash), {}).get(
                    wanted_sender, {}
                )
                update = held.get(digest) or next(iter(held.values()), None)
                if update is not None:
                    return update
            return self.forger.message(sender, member.core, "update")
        except MessageError:
            return None

    def canonical(self, message: Message) -> Message | None:
        """``message`` as a peer's channel delivers it: encoded and decoded (None if refused)."""
        self.decodes += 1
        try:
            return decode(message.encode(), self.limits)
        except MessageError:
            return None

    def replay(self) -> bool:
        pool = self.knowledge.observed if self.rng.random() < 0.7 else self.knowledge.forged
        if not pool:
            return False
        message = pool[self.rng.randrange(len(pool))]
        sender = self.rng.choice(self.byzantine)
        member = self.pick(list(self.members.values()))
        self.feed(member, "replay", lambda core: core.receive(sender, message, self.now), message)
        return True

    def garbage(self) -> bool:
        data = self.garbage_frame()
        self.decodes += 1
        self.trail.append(("decode", -1, data.hex()))
        message = check_decode(data, self.limits)
        if message is None:
            self.stats["garbage refused"] += 1
            return True
        self.stats["garbage decoded"] += 1
        sender = self.rng.choice(self.byzantine)
        member = self.pick(list(self.members.values()))
        self.feed(member, "garbage", lambda core: core.receive(sender, message, self.now), message)
        return True

    def garbage_frame(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.15:
            return self.rng.randbytes(self.rng.randint(0, 80))
        if roll < 0.2:
            leaves: tuple[object, ...] = (0, -1, 2**62, b"\x00" * 32, [], None, True)
            fields = [self.rng.randint(0, 12), *(self.rng.choice(leaves) for _ in range(self.rng.randint(0, 6)))]
            packed: bytes = msgpack.packb(fields, use_bin_type=True)
            return packed
        pool = self.knowledge.observed if self.knowledge.observed and self.rng.random() < 0.5 else self.knowledge.forged
        if not pool:
            return self.rng.randbytes(self.rng.randint(0, 80))
        data = pool[self.rng.randrange(len(pool))].encode()
        return mutate_structure(self.rng, data) if roll < 0.6 else mutate(self.rng, data)

    def timer(self, patient: bool = True) -> bool:
        members = list(self.members.values())
        if patient and any(self.busy(member) for member in members) and self.rng.random() < self.profile.patience:
            return False
        member = (
            min(members, key=lambda member: member.core.next_deadline())
            if self.rng.random() < 0.5
            else self.pick(members)
        )
        deadline = member.core.next_deadline()
        roll = self.rng.random()
        if roll < 0.6:
            self.now = max(self.now, deadline)
        elif roll < 0.75:
            pass  # early: nothing is due yet, or only what is overdue
        elif roll < 0.9:
            self.now = max(self.now, deadline) + self.rng.randint(1, 5_000)
        else:
            self.now += self.rng.randint(0, 120_000)
        now = self.now
        self.feed(member, "timer", lambda core: core.handle_timer(now), now, fired=now)
        return True

    def computed(self) -> bool:
        waiting = [member for member in self.members.values() if member.computes]
        if not waiting:
            return False
        member = self.pick(waiting)
        effect = member.computes.pop(0 if self.rng.random() < 0.7 else self.rng.randrange(len(member.computes)))
        if self.rng.random() < 0.07:
            self.feed(
                member,
                "compute failed",
                lambda core: core.compute_failed(effect.request, "the transition failed", self.now),
                effect.request,
            )
            return True
        try:
            result = self.compute(effect.state, effect.senders, effect.payloads, effect.culprits)
        except QoraError as error:
            reason = str(error)
            self.feed(
                member, "compute refused", lambda core: core.compute_failed(effect.request, reason, self.now), reason
            )
            return True
        self.feed(member, "compute", lambda core: core.computed(effect.request, result, self.now), effect.request)
        return True

    def trained(self) -> bool:
        waiting = [member for member in self.members.values() if member.trains]
        if not waiting:
            return False
        member = self.pick(waiting)
        index = self.rng.randrange(len(member.trains))
        train = (
            member.trains[index] if self.rng.random() < 0.1 else member.trains.pop(index)
        )  # sometimes submitted twice
        payload = int32_vector(self.rng, self.genesis.model.dimension, refused=False)
        self.feed(
            member,
            "submit_update",
            lambda core: core.submit_update(train.round, payload, self.now),
            (train.round, payload.hex()),
        )
        return True

    def restart(self) -> bool:
        """A member's process dies and starts again from its store; work it had in hand is lost."""
        member = self.pick(list(self.members.values()))
        member.computes.clear()
        member.trains.clear()
        if self.rng.random() < 0.5:
            member.inbox.clear()
        self.trail.append(("restart", member.index, member.durable.state.round))
        member.core = member.durable.core(self.genesis, member.identity, self.now, self.verifier)
        self.stats["restart"] += 1
        self.settle(member, None)
        return True

    # ------------------------------------------------------------------------------ what cores emit

    def route(self, member: Honest, peer: int, message: Message) -> None:
        check(
            0 <= peer < self.genesis.size and peer != member.index,
            f"member {member.index} sent {type(message).__name__} to {peer}",
        )
        signed = own_slot(message, member.index, self.genesis.hash)
        if signed is not None:
            slot, content = signed
            check(
                member.slots.get(slot) == content,
                f"member {member.index} sent {type(message).__name__} for {slot} "
                "without signing that content for the slot first",
            )
        target = self.members.get(peer)
        if target is None:
            if isinstance(message, SyncRequest | Fetch):
                self.asks.append((member.index, peer, message))
            return
        if len(target.inbox) >= INBOX_MAX:
            target.inbox.pop(0)
            self.stats["lost"] += 1
        target.inbox.append((member.index, message))

    def committed(self, member: Honest, effect: Commit) -> None:
        record, state, previous = effect.record, effect.state, member.durable.state
        value = record.value
        value_id = self.certificate(member, record, "committed")
        check(
            value.round == previous.round + 1 and value.prev_hash == previous.last_hash,
            f"member {member.index} committed round {value.round} off its chain (at round {previous.round})",
        )
        check(
            state.round == value.round and state.last_hash == value_id,
            f"member {member.index}'s committed state does not follow its record",
        )
        check(
            (state.model_digest(), state.ledger_digest()) == (value.model_digest, value.ledger_digest),
            f"member {member.index} committed a state its record does not certify",
        )
        contributors = set(contributing_members(self.genesis, previous))  # banned members' updates count, unaggregated
        senders = [sender for sender, _ in value.inputs]
        check(
            len(senders) >= self.genesis.inputs_min and set(senders) <= contributors,
            f"member {member.index} committed round {value.round} with inputs {senders}",
        )
        self.agree(member, value.round, value_id)
        member.durable.install([record], state)
        member.forget_slots()
        self.knowledge.committed(record, state)
        self.stats["commit"] += 1

    def installed(self, member: Honest, effect: Installed) -> None:
        records, state, previous = effect.records, effect.state, member.durable.state
        check(bool(records) and state.round > previous.round, f"member {member.index} installed nothing new")
        for earlier, later in pairwise(records):
            linked = later.value.round == earlier.value.round + 1 and later.value.prev_hash == earlier.value.id(
                self.genesis.hash
            )
            check(
                linked,
                f"member {member.index} installed records {earlier.value.round}, {later.value.round} that do not link",
            )
        first, last = records[0].value, records[-1].value
        if first.round == previous.round + 1:
            check(
                first.prev_hash == previous.last_hash,
                f"member {member.index} installed round {first.round} off its chain",
            )
        last_id = last.id(self.genesis.hash)
        check(
            state.round == last.round and state.last_hash == last_id,
            f"member {member.index}'s installed state does not follow its last record",
        )
        check(
            (state.model_digest(), state.ledger_digest()) == (last.model_digest, last.ledger_digest),
            f"member {member.index} installed a state its record does not certify",
        )
        for record in records:
            self.agree(member, record.value.round, self.certificate(member, record, "installed"))
        member.durable.install(records, state)
        member.forget_slots()
        for record in records:
            self.knowledge.committed(record, state if record is records[-1] else None)
        self.stats["install"] += 1

    def certificate(self, member: Honest, record: Record, how: str) -> bytes:
        """A record a member persists must verify as every peer it is served to checks it."""
        try:
            return record.verify(self.genesis.hash, self.keys, self.genesis.quorum)
        except (MessageError, SignatureError) as error:
            raise AssertionError(
                f"member {member.index} {how} the record of round {record.value.round}, "
                f"whose certificate does not verify: {error}"
            ) from error

    def agree(self, member: Honest, round_number: int, round_hash: bytes) -> None:
        if self.safe:
            held = self.decided.setdefault(round_number, round_hash)
            check(
                held == round_hash,
                f"agreement: member {member.index} holds {round_hash.hex()[:16]} for round {round_number}, "
                f"another honest member {held.hex()[:16]}",
            )
